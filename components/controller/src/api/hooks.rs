//! `/v1/hooks/`: what only the builder may ask (Deis v1's builder hooks): who owns an SSH key,
//! whether a user may push to an app (and the app's build settings), and what became of a build.
//! The builder authenticates with its own secret in `X-Deis-Builder-Auth`, compared in constant
//! time; a user's token opens none of these.

use std::sync::Arc;
use std::time::Duration;

use bus_schema::messages::AppStatusRequest;
use controller_api::{DeployStatus, HookBuildStatus, HookKeyOwner, HookPush, HookPushRequest};
use sha2::{Digest, Sha256};
use warp::http::StatusCode;

use super::error::ApiError;
use super::{Answer, Body, json, parse_body};
use crate::ctx::{AUTH_USER_COLUMNS, Access, AuthUser, Ctx, app_for};
use crate::model::Error;
use crate::model::{releases, validate};

/// Checks the builder's secret. Both sides are hashed first, so the comparison takes the same
/// time whatever the guess and whatever its length.
fn authenticate_builder(ctx: &Ctx, header: Option<String>) -> Result<(), ApiError> {
    let Some(expected) = ctx.config.builder_key.as_deref().filter(|k| !k.is_empty()) else {
        return Err(ApiError::Forbidden(
            "builder hooks are off: the controller has no builder_key configured".into(),
        ));
    };
    let given = header.ok_or_else(|| {
        ApiError::Unauthorized("builder hooks need the builder's secret in X-Deis-Builder-Auth".into())
    })?;
    let (a, b) = (Sha256::digest(expected.as_bytes()), Sha256::digest(given.trim().as_bytes()));
    let differ = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if differ == 0 {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong builder secret in X-Deis-Builder-Auth".into()))
    }
}

fn app_url(ctx: &Ctx, app: &str) -> String {
    format!("http://{}", ctx.app_url(app))
}

/// Who registered the SSH key with this fingerprint.
#[utoipa::path(get, path = "/v1/hooks/key/{fingerprint}", tag = "hooks", security(("builder" = [])),
    params(("fingerprint" = String, Path, description = "The key's SHA256 fingerprint (`SHA256:…`), percent-encoded")),
    responses((status = 200, description = "The key's owner", body = HookKeyOwner)))]
pub async fn key_owner(ctx: Arc<Ctx>, fingerprint: String, auth: Option<String>) -> Answer {
    authenticate_builder(&ctx, auth)?;
    let client = ctx.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT u.username, k.name AS key_id, k.fingerprint FROM keys k JOIN users u ON u.id = k.user_id
             WHERE k.fingerprint = $1",
            &[&fingerprint],
        )
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no user has registered the key {fingerprint}; add it with `deis keys:add`"
            ))
        })?;
    Ok(json(
        StatusCode::OK,
        &HookKeyOwner {
            username: row.try_get("username")?,
            key_id: row.try_get("key_id")?,
            fingerprint: row.try_get("fingerprint")?,
        },
    ))
}

/// May this user push to this app? If so, the app's build settings.
#[utoipa::path(post, path = "/v1/hooks/push/", tag = "hooks", security(("builder" = [])), request_body = HookPushRequest,
    responses((status = 200, description = "Allowed, with the app's settings", body = HookPush)))]
pub async fn push(ctx: Arc<Ctx>, auth: Option<String>, body: Body) -> Answer {
    authenticate_builder(&ctx, auth)?;
    let req: HookPushRequest = parse_body(body?)?;
    validate::app_name(&req.app)?;
    let client = ctx.pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {AUTH_USER_COLUMNS} FROM users u WHERE u.username = $1"),
            &[&req.username],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user '{}'", req.username)))?;
    let user = AuthUser::from_row(&row)?;
    let app = app_for(&client, &user, &req.app, Access::Use, false).await.map_err(|e| match e {
        Error::Forbidden(_) => {
            ApiError::Forbidden(format!("{} does not have permission to push to {}", user.username, req.app))
        }
        other => other.into(),
    })?;
    let release = releases::latest(&client, app.id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("app {} has no release", app.name)))?;
    let config = releases::load_config(&client, release.config).await?;
    Ok(json(
        StatusCode::OK,
        &HookPush {
            url: app_url(&ctx, &app.name),
            app_uuid: Some(app.uuid),
            app: app.name,
            username: user.username,
            config: config.values,
        },
    ))
}

/// What became of a build: the release made from it, and the app's rollout.
#[utoipa::path(get, path = "/v1/hooks/apps/{app}/builds/{build}/", tag = "hooks", security(("builder" = [])),
    params(("app" = String, Path, description = "App name"), ("build" = String, Path, description = "The build's uuid")),
    responses((status = 200, description = "The build's release and rollout", body = HookBuildStatus)))]
pub async fn build_status(ctx: Arc<Ctx>, app: String, build: String, auth: Option<String>) -> Answer {
    authenticate_builder(&ctx, auth)?;
    let build = uuid::Uuid::parse_str(&build)
        .map_err(|_| ApiError::NotFound(format!("build '{build}' not found: builds are uuids")))?;
    let name = validate::app_name(&app)?;
    let client = ctx.pool.get().await?;
    let app_id: i64 = client
        .query_opt("SELECT id FROM apps WHERE name = $1", &[&app])
        .await?
        .ok_or_else(|| ApiError::not_found(format!("app '{app}'")))?
        .try_get("id")?;
    let release: Option<i32> = client
        .query_opt(
            "SELECT version FROM releases WHERE app_id = $1 AND build_uuid = $2 ORDER BY version LIMIT 1",
            &[&app_id, &build],
        )
        .await?
        .map(|r| r.try_get("version"))
        .transpose()?;
    drop(client);
    let mut status = HookBuildStatus {
        build,
        release: release.and_then(|v| u32::try_from(v).ok()),
        deploy: None,
        deploy_unknown: None,
        url: app_url(&ctx, &app),
    };
    if status.release.is_some() {
        match ask_scheduler(&ctx, name).await {
            Ok(deploy) => status.deploy = deploy,
            Err(reason) => status.deploy_unknown = Some(reason),
        }
    }
    Ok(json(StatusCode::OK, &status))
}

/// The app's rollout, from the scheduler's leader (it, not Postgres, knows what runs).
async fn ask_scheduler(ctx: &Ctx, app: bus_schema::AppName) -> Result<Option<DeployStatus>, String> {
    let bus = ctx.bus.get().ok_or("the controller is not connected to the bus yet")?;
    let subject = bus.namespace().app_status();
    let reply = bus
        .request(&subject, &bus.envelope(AppStatusRequest { app }), Duration::from_secs(3))
        .await
        .map_err(|e| format!("the scheduler did not answer: {e}"))?;
    Ok(reply.body.deploy.map(crate::model::deploy_status))
}
