//! `/v1/apps/{app}/containers/` and `/deploy/`: what runs, asked of the scheduler's leader over
//! the bus (the scheduler, not Postgres, knows actual state).

use std::sync::Arc;
use std::time::Duration;

use bus_schema::messages::{AppStatus, AppStatusRequest, DeployState};
use controller_api::{Container, DeployStatus, RestartRequest, RestartResponse};
use warp::http::StatusCode;
use warp::reply::Response;

use super::{Body, Paging, Query, json, parse_body};
use crate::ctx::{Access, Ctx, app_for};
use crate::error::ApiError;
use crate::validate;

async fn ask(ctx: &Ctx, app: &str) -> Result<AppStatus, ApiError> {
    let bus = ctx.bus.get().ok_or_else(|| {
        ApiError::Unavailable("the controller is not connected to the bus yet; retry".into())
    })?;
    let request = bus.envelope(AppStatusRequest { app: validate::app_name(app)? });
    let reply = bus
        .request(&bus.namespace().app_status(), &request, Duration::from_secs(3))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the scheduler did not answer: {e}")))?;
    Ok(reply.body)
}

/// The app's containers and their state.
#[utoipa::path(get, path = "/v1/apps/{app}/containers/", tag = "apps", params(("app" = String, Path, description = "App name"), Paging),
    responses((status = 200, description = "Containers", body = controller_api::Page<Container>)))]
pub async fn containers(
    ctx: Arc<Ctx>,
    app: String,
    authz: Option<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let user = ctx.authenticate(authz).await?;
    let paging = Paging::from_query(&query)?;
    {
        let client = ctx.pool.get().await?;
        app_for(&client, &user, &app, Access::Use, false).await?;
    }
    let status = ask(&ctx, &app).await?;
    let all: Vec<Container> = status
        .containers
        .into_iter()
        .map(|c| Container {
            app: app.clone(),
            release: format!("v{}", c.key.version),
            process_type: c.key.process_type.to_string(),
            num: c.key.index,
            state: c.state,
            node: c.node.to_string(),
            started: c.since.to_rfc3339(),
        })
        .collect();
    let count = i64::try_from(all.len()).unwrap_or(0);
    let page: Vec<Container> = all
        .into_iter()
        .skip(usize::try_from(paging.offset).unwrap_or(0))
        .take(usize::try_from(paging.limit).unwrap_or(100))
        .collect();
    Ok(json(StatusCode::OK, &paging.page(&format!("/v1/apps/{app}/containers/"), count, page)))
}

/// How the newest release is rolling out (null before the first deploy).
#[utoipa::path(get, path = "/v1/apps/{app}/deploy/", tag = "apps", params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "The rollout", body = Option<DeployStatus>)))]
pub async fn deploy(ctx: Arc<Ctx>, app: String, authz: Option<String>) -> Result<Response, ApiError> {
    let user = ctx.authenticate(authz).await?;
    {
        let client = ctx.pool.get().await?;
        app_for(&client, &user, &app, Access::Use, false).await?;
    }
    let status = ask(&ctx, &app).await?;
    let out = status.deploy.map(|d| match d {
        DeployState::Deploying { version } => {
            DeployStatus { version, state: "deploying".into(), serving: None, reason: None }
        }
        DeployState::Deployed { version } => {
            DeployStatus { version, state: "deployed".into(), serving: None, reason: None }
        }
        DeployState::Failed { version, serving, reason } => {
            DeployStatus { version, state: "failed".into(), serving, reason: Some(reason) }
        }
    });
    Ok(json(StatusCode::OK, &out))
}

/// Restart containers one at a time, so the others keep serving (`deis ps:restart`).
#[utoipa::path(post, path = "/v1/apps/{app}/containers/restart/", tag = "apps", request_body = RestartRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "How many will restart", body = RestartResponse)))]
pub async fn restart(
    ctx: Arc<Ctx>,
    app: String,
    authz: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let user = ctx.authenticate(authz).await?;
    let body = body?;
    let req: RestartRequest = if body.is_empty() { RestartRequest::default() } else { parse_body(body)? };
    let process_type = req.process_type.as_deref().map(validate::process_type).transpose()?;
    if req.num.is_some() && process_type.is_none() {
        return Err(ApiError::Invalid("a container number needs its type, like web.2".into()));
    }
    {
        let client = ctx.pool.get().await?;
        app_for(&client, &user, &app, Access::Use, false).await?;
    }
    let bus = ctx.bus.get().ok_or_else(|| {
        ApiError::Unavailable("the controller is not connected to the bus yet; retry".into())
    })?;
    let request = bus.envelope(bus_schema::messages::RestartRequest {
        app: validate::app_name(&app)?,
        process_type,
        index: req.num,
    });
    let reply = bus
        .request(&bus.namespace().restart(), &request, Duration::from_secs(3))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the scheduler did not answer: {e}")))?;
    if reply.body.restarting == 0 {
        return Err(ApiError::NotFound(format!("{app} has no running container like that to restart")));
    }
    tracing::info!(%app, user = %user.username, restarting = reply.body.restarting, "restart requested");
    Ok(json(StatusCode::OK, &RestartResponse { restarting: reply.body.restarting }))
}
