//! `/v1/apps/{app}/domains/`: custom domains, unique across the platform.

use std::sync::Arc;

use controller_api::{Domain, DomainCreateRequest, Endpoint};
use warp::http::StatusCode;

use super::error::{ApiError, unless_taken};
use super::{Answer, Listing, Paging, json, no_content, ts};
use crate::ctx::{Access, AuthUser, Ctx, app_for};
use crate::model::validate;

/// The app's custom domains.
#[utoipa::path(get, path = "/v1/apps/{app}/domains/", tag = "domains", params(("app" = String, Path, description = "App name"), Paging),
    responses((status = 200, description = "Domains", body = controller_api::Page<Domain>)))]
pub async fn list(ctx: Arc<Ctx>, app: String, user: AuthUser, paging: Paging) -> Answer {
    let (client, app) = ctx.app_to_read(&user, &app).await?;
    let listing = Listing {
        columns: "owner, domain, created",
        from: "domains WHERE app_id = $1",
        order: "domain",
        params: &[&app.id],
    };
    let path = Endpoint::Domains.path(&[&app.name]);
    listing
        .page(&client, &paging, &path, |r| {
            let created = ts(r.try_get("created")?);
            Ok(Domain {
                owner: r.try_get("owner")?,
                app: app.name.clone(),
                domain: r.try_get("domain")?,
                created: created.clone(),
                updated: created,
            })
        })
        .await
}

/// Add a custom domain. The router sends its traffic to the app.
#[utoipa::path(post, path = "/v1/apps/{app}/domains/", tag = "domains", request_body = DomainCreateRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 201, description = "Added", body = Domain)))]
pub async fn add(ctx: Arc<Ctx>, app: String, user: AuthUser, req: DomainCreateRequest) -> Answer {
    // The platform domain as the routers see it now (etcd's setting), and the configured one.
    let domain = validate::domain(&req.domain, &ctx.settings.platform_domains())?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Use, false).await?;
    let inserted = tx
        .query_one(
            "INSERT INTO domains (app_id, owner, domain) VALUES ($1, $2, $3) RETURNING created",
            &[&app.id, &user.username, &domain],
        )
        .await;
    let row = unless_taken(inserted, || format!("domain {domain} is already in use"))?;
    let created = ts(row.try_get("created")?);
    let message = format!("{} added domain {domain}", user.username);
    super::commit_synced(tx, &ctx, &app.name, &user.username, "domain", message).await?;
    let out =
        Domain { owner: user.username, app: app.name, domain, created: created.clone(), updated: created };
    Ok(json(StatusCode::CREATED, &out))
}

/// Remove a custom domain.
#[utoipa::path(delete, path = "/v1/apps/{app}/domains/{domain}", tag = "domains",
    params(("app" = String, Path, description = "App name"), ("domain" = String, Path, description = "The domain")),
    responses((status = 204, description = "Removed")))]
pub async fn remove(ctx: Arc<Ctx>, app: String, domain: String, user: AuthUser) -> Answer {
    let domain = domain.to_ascii_lowercase();
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Use, false).await?;
    let n = tx.execute("DELETE FROM domains WHERE app_id = $1 AND domain = $2", &[&app.id, &domain]).await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("domain {domain} of {}", app.name)));
    }
    let message = format!("{} removed domain {domain}", user.username);
    super::commit_synced(tx, &ctx, &app.name, &user.username, "domain", message).await?;
    Ok(no_content())
}
