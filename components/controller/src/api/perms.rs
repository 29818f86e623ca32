//! `/v1/apps/{app}/perms/` and `/v1/admin/perms/`: sharing apps, and making administrators.

use std::sync::Arc;

use controller_api::{AdminPerm, AppPerms, Endpoint, PermCreateRequest};
use warp::http::StatusCode;

use super::error::ApiError;
use super::{Answer, Body, Listing, Paging, json, no_content, parse_body};
use crate::ctx::{Access, AuthUser, Ctx, app_for};

/// Users an app is shared with.
#[utoipa::path(get, path = "/v1/apps/{app}/perms/", tag = "perms", params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "Users", body = AppPerms)))]
pub async fn list(ctx: Arc<Ctx>, app: String, user: AuthUser) -> Answer {
    let (client, app) = ctx.app_to_read(&user, &app).await?;
    let rows = client
        .query(
            "SELECT u.username FROM perms p JOIN users u ON u.id = p.user_id WHERE p.app_id = $1 ORDER BY u.username",
            &[&app.id],
        )
        .await?;
    let users = rows.iter().map(|r| r.try_get("username")).collect::<Result<_, _>>()?;
    Ok(json(StatusCode::OK, &AppPerms { users }))
}

/// Share an app with a user (owner or administrators).
#[utoipa::path(post, path = "/v1/apps/{app}/perms/", tag = "perms", request_body = PermCreateRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 201, description = "Shared")))]
pub async fn create(ctx: Arc<Ctx>, app: String, user: AuthUser, req: PermCreateRequest) -> Answer {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Own, false).await?;
    let target = super::auth::user_id(&tx, &req.username).await?;
    if target == app.owner_id {
        return Err(ApiError::Conflict(format!("{} owns {} already", req.username, app.name)));
    }
    let n = tx
        .execute(
            "INSERT INTO perms (app_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&app.id, &target],
        )
        .await?;
    if n == 0 {
        return Err(ApiError::Conflict(format!("{} is shared with {} already", app.name, req.username)));
    }
    let message = format!("{} shared {} with {}", user.username, app.name, req.username);
    ctx.commit_with_event(tx, &app.name, &user.username, "perms", message).await?;
    Ok(json(StatusCode::CREATED, &serde_json::json!({})))
}

/// Stop sharing an app with a user.
#[utoipa::path(delete, path = "/v1/apps/{app}/perms/{username}", tag = "perms",
    params(("app" = String, Path, description = "App name"), ("username" = String, Path, description = "User")),
    responses((status = 204, description = "No longer shared")))]
pub async fn delete(ctx: Arc<Ctx>, app: String, username: String, user: AuthUser) -> Answer {
    let username = super::decode_segment(&username)?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Own, false).await?;
    let target = super::auth::user_id(&tx, &username).await?;
    let n = tx.execute("DELETE FROM perms WHERE app_id = $1 AND user_id = $2", &[&app.id, &target]).await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("{username}'s permission on {}", app.name)));
    }
    let message = format!("{} unshared {} with {username}", user.username, app.name);
    ctx.commit_with_event(tx, &app.name, &user.username, "perms", message).await?;
    Ok(no_content())
}

/// Administrators (administrators only).
#[utoipa::path(get, path = "/v1/admin/perms/", tag = "perms", params(Paging),
    responses((status = 200, description = "Administrators", body = controller_api::Page<AdminPerm>)))]
pub async fn admins(ctx: Arc<Ctx>, user: AuthUser, paging: Paging) -> Answer {
    user.require_admin()?;
    let client = ctx.pool.get().await?;
    let listing =
        Listing { columns: "username", from: "users WHERE is_superuser", order: "username", params: &[] };
    listing
        .page(&client, &paging, &Endpoint::Admins.path(&[]), |r| {
            Ok(AdminPerm { username: r.try_get("username")?, is_superuser: true })
        })
        .await
}

/// Make a user an administrator.
#[utoipa::path(post, path = "/v1/admin/perms/", tag = "perms", request_body = PermCreateRequest,
    responses((status = 201, description = "Granted")))]
pub async fn admin_create(ctx: Arc<Ctx>, user: AuthUser, body: Body) -> Answer {
    user.require_admin()?;
    let req: PermCreateRequest = parse_body(body?)?;
    let client = ctx.pool.get().await?;
    let n =
        client.execute("UPDATE users SET is_superuser = TRUE WHERE username = $1", &[&req.username]).await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("user '{}'", req.username)));
    }
    Ok(json(StatusCode::CREATED, &serde_json::json!({})))
}

/// Take a user's administrator rights away. The last administrator stays.
#[utoipa::path(delete, path = "/v1/admin/perms/{username}", tag = "perms",
    params(("username" = String, Path, description = "User")),
    responses((status = 204, description = "Revoked")))]
pub async fn admin_delete(ctx: Arc<Ctx>, username: String, user: AuthUser) -> Answer {
    user.require_admin()?;
    let username = super::decode_segment(&username)?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE", &[]).await?;
    let admins: i64 = tx
        .query_one("SELECT count(*) AS count FROM users WHERE is_superuser", &[])
        .await?
        .try_get("count")?;
    let is_admin = tx
        .query_opt("SELECT is_superuser FROM users WHERE username = $1", &[&username])
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user '{username}'")))?
        .try_get::<_, bool>("is_superuser")?;
    if !is_admin {
        return Err(ApiError::not_found(format!("administrator '{username}'")));
    }
    if admins <= 1 {
        return Err(ApiError::Conflict("the last administrator cannot be removed".into()));
    }
    tx.execute("UPDATE users SET is_superuser = FALSE WHERE username = $1", &[&username]).await?;
    tx.commit().await?;
    Ok(no_content())
}
