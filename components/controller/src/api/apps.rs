//! `/v1/apps/`: create, list, inspect, transfer and destroy apps.

use std::sync::Arc;

use bus_schema::messages::AppDestroyed;
use controller_api::{App, AppCreateRequest, AppTransferRequest, Endpoint};
use rand::seq::IndexedRandom;
use warp::http::StatusCode;

use super::error::{ApiError, unless_taken};
use super::{Answer, Listing, Paging, json, no_content, ts};
use crate::ctx::{Access, AuthUser, Ctx, app_for};
use crate::model::releases::{self, ConfigData};
use crate::model::{outbox, validate};

/// The columns [`app_row`] reads, for `apps a JOIN users u ON u.id = a.owner_id`.
const APP_COLUMNS: &str = "a.uuid, a.name, u.username AS owner, a.structure, a.created, a.updated";

fn app_row(ctx: &Ctx, row: &tokio_postgres::Row) -> Result<App, tokio_postgres::Error> {
    let name: String = row.try_get("name")?;
    Ok(App {
        uuid: row.try_get("uuid")?,
        url: ctx.app_url(&name),
        id: name,
        owner: row.try_get("owner")?,
        structure: serde_json::from_value(row.try_get("structure")?).unwrap_or_default(),
        created: ts(row.try_get("created")?),
        updated: ts(row.try_get("updated")?),
    })
}

pub async fn load(
    ctx: &Ctx,
    client: &impl deadpool_postgres::GenericClient,
    name: &str,
) -> Result<App, ApiError> {
    let row = client
        .query_one(
            &format!("SELECT {APP_COLUMNS} FROM apps a JOIN users u ON u.id = a.owner_id WHERE a.name = $1"),
            &[&name],
        )
        .await?;
    Ok(app_row(ctx, &row)?)
}

/// Apps you own or that are shared with you (all apps, for administrators).
#[utoipa::path(get, path = "/v1/apps/", tag = "apps", params(Paging),
    responses((status = 200, description = "Apps", body = controller_api::Page<App>)))]
pub async fn list(ctx: Arc<Ctx>, user: AuthUser, paging: Paging) -> Answer {
    let client = ctx.pool.get().await?;
    let listing = Listing {
        columns: APP_COLUMNS,
        from: "apps a JOIN users u ON u.id = a.owner_id WHERE ($1 OR a.owner_id = $2
               OR EXISTS (SELECT 1 FROM perms p WHERE p.app_id = a.id AND p.user_id = $2))",
        order: "a.name",
        params: &[&user.is_superuser, &user.id],
    };
    listing.page(&client, &paging, &Endpoint::Apps.path(&[]), |r| app_row(&ctx, r)).await
}

/// Create an app, with its release v1. A name is generated when none is given.
#[utoipa::path(post, path = "/v1/apps/", tag = "apps", request_body = AppCreateRequest,
    responses((status = 201, description = "Created", body = App)))]
pub async fn create(ctx: Arc<Ctx>, user: AuthUser, req: AppCreateRequest) -> Answer {
    let name = match &req.id {
        Some(name) => validate::app_name(name)?,
        None => validate::app_name(&generate_name())?,
    };
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let inserted = tx
        .query_one(
            "INSERT INTO apps (uuid, name, owner_id) VALUES ($1, $2, $3) RETURNING id",
            &[&uuid::Uuid::now_v7(), &name.as_str(), &user.id],
        )
        .await;
    let row = unless_taken(inserted, || format!("an app named '{name}' already exists"))?;
    let app_id: i64 = row.try_get("id")?;
    let app = app_for(&tx, &user, name.as_str(), Access::Own, true).await?;
    let config = releases::insert_config(&tx, app_id, &user.username, &ConfigData::default()).await?;
    releases::create(
        &ctx,
        &tx,
        &app,
        &user.username,
        None,
        config,
        format!("{} created initial release", user.username),
    )
    .await?;
    let out = load(&ctx, &tx, name.as_str()).await?;
    tx.commit().await?;
    ctx.relay_wake.notify_one();
    // The routers learn the app exists (404 for names that are not apps, 503 for this one).
    ctx.domains_wake.notify_one();
    tracing::info!(app = %name, user = %user.username, "app created");
    Ok(json(StatusCode::CREATED, &out))
}

/// One app.
#[utoipa::path(get, path = "/v1/apps/{app}/", tag = "apps", params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "The app", body = App)))]
pub async fn info(ctx: Arc<Ctx>, app: String, user: AuthUser) -> Answer {
    let (client, _) = ctx.app_to_read(&user, &app).await?;
    Ok(json(StatusCode::OK, &load(&ctx, &client, &app).await?))
}

/// Destroy an app: its containers, routes, releases, domains and config go.
#[utoipa::path(delete, path = "/v1/apps/{app}/", tag = "apps", params(("app" = String, Path, description = "App name")),
    responses((status = 204, description = "Destroyed")))]
pub async fn destroy(ctx: Arc<Ctx>, app: String, user: AuthUser) -> Answer {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let row = app_for(&tx, &user, &app, Access::Own, true).await?;
    tx.execute("DELETE FROM apps WHERE id = $1", &[&row.id]).await?;
    let name = validate::app_name(&row.name)?;
    outbox::enqueue(&tx, &ctx.sender, AppDestroyed { app: name, destroyed_by: user.username.clone() })
        .await?;
    let message = format!("{} destroyed {}", user.username, row.name);
    ctx.commit_with_event(tx, &row.name, &user.username, "destroy", message).await?;
    ctx.domains_wake.notify_one();
    tracing::info!(app = %row.name, user = %user.username, "app destroyed");
    Ok(super::settle::mark(no_content(), super::settle::Settle::Gone { app: row.name.clone() }))
}

/// Give an app to another user.
#[utoipa::path(post, path = "/v1/apps/{app}/", tag = "apps", request_body = AppTransferRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "Transferred", body = App)))]
pub async fn transfer(ctx: Arc<Ctx>, app: String, user: AuthUser, req: AppTransferRequest) -> Answer {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let row = app_for(&tx, &user, &app, Access::Own, true).await?;
    let new_owner = super::auth::user_id(&tx, &req.owner).await?;
    tx.execute("UPDATE apps SET owner_id = $1, updated = now() WHERE id = $2", &[&new_owner, &row.id])
        .await?;
    // The new owner needs no separate permission.
    tx.execute("DELETE FROM perms WHERE app_id = $1 AND user_id = $2", &[&row.id, &new_owner]).await?;
    let out = load(&ctx, &tx, &row.name).await?;
    let message = format!("{} transferred {} to {}", user.username, row.name, req.owner);
    ctx.commit_with_event(tx, &row.name, &user.username, "transfer", message).await?;
    Ok(json(StatusCode::OK, &out))
}

/// Heroku-style names: `adjective-noun-1234`.
fn generate_name() -> String {
    const ADJECTIVES: &[&str] = &[
        "amber", "brave", "calm", "dapper", "eager", "fancy", "gentle", "hidden", "icy", "jolly", "keen",
        "lively", "mellow", "nimble", "orange", "proud", "quiet", "rapid", "sunny", "tidy", "upbeat",
        "vivid", "wise", "young", "zesty",
    ];
    const NOUNS: &[&str] = &[
        "anchor", "badger", "canyon", "dolphin", "ember", "falcon", "glacier", "harbor", "island", "jungle",
        "kettle", "lagoon", "meadow", "nebula", "orchard", "pebble", "quartz", "river", "summit", "tundra",
        "unicorn", "valley", "walrus", "yeti", "zephyr",
    ];
    let mut rng = rand::rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or("calm");
    let noun = NOUNS.choose(&mut rng).copied().unwrap_or("river");
    format!("{adjective}-{noun}-{}", rand::random_range(1000..10000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_names_are_valid_app_names() {
        for _ in 0..100 {
            crate::model::validate::app_name(&super::generate_name()).unwrap();
        }
    }
}
