//! `/v1/apps/{app}/domains/`: custom domains, unique across the platform.

use std::sync::Arc;

use controller_api::{Domain, DomainCreateRequest};
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use super::{Body, Paging, Query, json, no_content, parse_body, ts};
use crate::ctx::{Access, Ctx, app_for};
use crate::model::is_unique_violation;
use crate::model::validate;

/// The app's custom domains.
#[utoipa::path(get, path = "/v1/apps/{app}/domains/", tag = "domains", params(("app" = String, Path, description = "App name"), Paging),
    responses((status = 200, description = "Domains", body = controller_api::Page<Domain>)))]
pub async fn list(
    ctx: Arc<Ctx>,
    app: String,
    authz: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let user = ctx.authenticate(authz).await?;
    let paging = Paging::from_query(&query)?;
    let client = ctx.pool.get().await?;
    let app = app_for(&client, &user, &app, Access::Use, false).await?;
    let count: i64 = client
        .query_one("SELECT count(*) AS count FROM domains WHERE app_id = $1", &[&app.id])
        .await?
        .try_get("count")?;
    let rows = client
        .query(
            "SELECT owner, domain, created FROM domains WHERE app_id = $1 ORDER BY domain LIMIT $2 OFFSET $3",
            &[&app.id, &paging.limit, &paging.offset],
        )
        .await?;
    let out = rows
        .iter()
        .map(|r| {
            let created = ts(r.try_get("created")?);
            Ok(Domain {
                owner: r.try_get("owner")?,
                app: app.name.clone(),
                domain: r.try_get("domain")?,
                created: created.clone(),
                updated: created,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    Ok(json(StatusCode::OK, &paging.page(&format!("/v1/apps/{}/domains/", app.name), count, out)))
}

/// Add a custom domain. The router sends its traffic to the app.
#[utoipa::path(post, path = "/v1/apps/{app}/domains/", tag = "domains", request_body = DomainCreateRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 201, description = "Added", body = Domain)))]
pub async fn add(
    ctx: Arc<Ctx>,
    app: String,
    authz: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let user = ctx.authenticate(authz).await?;
    let req: DomainCreateRequest = parse_body(body?)?;
    let domain = validate::domain(&req.domain, &ctx.config.platform_domain)?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Use, false).await?;
    let inserted = tx
        .query_one(
            "INSERT INTO domains (app_id, owner, domain) VALUES ($1, $2, $3) RETURNING created",
            &[&app.id, &user.username, &domain],
        )
        .await;
    let created = match inserted {
        Ok(row) => ts(row.try_get("created")?),
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::Conflict(format!("domain {domain} is already in use")));
        }
        Err(e) => return Err(e.into()),
    };
    super::commit_synced(
        tx,
        &ctx,
        &app.name,
        &user.username,
        "domain",
        format!("{} added domain {domain}", user.username),
    )
    .await?;
    let out =
        Domain { owner: user.username, app: app.name, domain, created: created.clone(), updated: created };
    Ok(json(StatusCode::CREATED, &out))
}

/// Remove a custom domain.
#[utoipa::path(delete, path = "/v1/apps/{app}/domains/{domain}", tag = "domains",
    params(("app" = String, Path, description = "App name"), ("domain" = String, Path, description = "The domain")),
    responses((status = 204, description = "Removed")))]
pub async fn remove(
    ctx: Arc<Ctx>,
    app: String,
    domain: String,
    authz: Option<String>,
) -> Result<Response, ApiError> {
    let user = ctx.authenticate(authz).await?;
    let domain = domain.to_ascii_lowercase();
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Use, false).await?;
    let n = tx.execute("DELETE FROM domains WHERE app_id = $1 AND domain = $2", &[&app.id, &domain]).await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("domain {domain} of {}", app.name)));
    }
    super::commit_synced(
        tx,
        &ctx,
        &app.name,
        &user.username,
        "domain",
        format!("{} removed domain {domain}", user.username),
    )
    .await?;
    Ok(no_content())
}
