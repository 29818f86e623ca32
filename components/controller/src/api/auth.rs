//! `/v1/auth/*` and `/v1/users/`: registration, login, passwords, tokens.

use std::sync::Arc;

use controller_api::{
    CancelRequest, Endpoint, LoginRequest, PasswdRequest, RegenerateTokenRequest, RegisterRequest,
    TokenResponse, User,
};
use deadpool_postgres::GenericClient;
use warp::http::StatusCode;

use super::error::{ApiError, unless_taken};
use super::{Answer, Body, Listing, Paging, json, no_content, parse_body, ts};
use crate::config::RegistrationMode;
use crate::ctx::{AuthUser, Ctx};
use crate::model::auth;
use crate::model::validate;

const USER_COLUMNS: &str = "username, email, first_name, last_name, is_superuser, date_joined";

/// Reads a row of [`USER_COLUMNS`].
fn user_row(row: &tokio_postgres::Row) -> Result<User, tokio_postgres::Error> {
    Ok(User {
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        is_superuser: row.try_get("is_superuser")?,
        date_joined: ts(row.try_get("date_joined")?),
    })
}

/// Register a user. The first user becomes an administrator.
#[utoipa::path(post, path = "/v1/auth/register/", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, description = "Registered", body = User)), security(()))]
pub async fn register(ctx: Arc<Ctx>, authz: Option<String>, body: Body) -> Answer {
    let req: RegisterRequest = parse_body(body?)?;
    validate::username(&req.username)?;
    validate::password(&req.password)?;
    if req.email.len() > 254 || req.first_name.len() > 150 || req.last_name.len() > 150 {
        return Err(ApiError::Invalid("email, first or last name is too long".into()));
    }
    let hash = auth::hash_password(req.password.clone()).await?;
    // Resolve who is asking before taking the lock: admin-only registration needs it.
    let caller = match authz {
        Some(h) => ctx.authenticate(Some(h)).await.ok(),
        None => None,
    };
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    // Serialises registrations so exactly one user can be "the first".
    tx.execute("SELECT pg_advisory_xact_lock(7415003)", &[]).await?;
    let first: bool =
        tx.query_one("SELECT NOT EXISTS (SELECT 1 FROM users) AS first", &[]).await?.try_get("first")?;
    if !first {
        match ctx.config.registration_mode {
            RegistrationMode::Open => {}
            RegistrationMode::AdminOnly if caller.as_ref().is_some_and(|c| c.is_superuser) => {}
            RegistrationMode::AdminOnly => {
                return Err(ApiError::Forbidden("registration is limited to administrators".into()));
            }
            RegistrationMode::Disabled => return Err(ApiError::Forbidden("registration is disabled".into())),
        }
    }
    let inserted = tx
        .query_one(
            &format!(
                "INSERT INTO users (username, email, first_name, last_name, password_hash, is_superuser)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}"
            ),
            &[&req.username, &req.email, &req.first_name, &req.last_name, &hash, &first],
        )
        .await;
    let row = unless_taken(inserted, || format!("a user named '{}' already exists", req.username))?;
    let out = user_row(&row)?;
    tx.commit().await?;
    tracing::info!(user = %req.username, admin = first, "user registered");
    Ok(json(StatusCode::CREATED, &out))
}

/// Log in: exchange a username and password for the user's API token.
#[utoipa::path(post, path = "/v1/auth/login/", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "Logged in", body = TokenResponse)), security(()))]
pub async fn login(ctx: Arc<Ctx>, body: Body) -> Answer {
    let req: LoginRequest = parse_body(body?)?;
    let client = ctx.pool.get().await?;
    let row =
        client.query_opt("SELECT id, password_hash FROM users WHERE username = $1", &[&req.username]).await?;
    let bad = || ApiError::Unauthorized("wrong username or password".into());
    let row = row.ok_or_else(bad)?;
    let (id, hash): (i64, String) = (row.try_get("id")?, row.try_get("password_hash")?);
    if !auth::verify_password(req.password, hash).await {
        return Err(bad());
    }
    let token = auth::new_token();
    client
        .execute(
            "INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)",
            &[&auth::token_hash(&token), &id],
        )
        .await?;
    Ok(json(StatusCode::OK, &TokenResponse { token }))
}

/// The user the token belongs to.
#[utoipa::path(get, path = "/v1/auth/whoami/", tag = "auth", responses((status = 200, description = "You", body = User)))]
pub async fn whoami(ctx: Arc<Ctx>, user: AuthUser) -> Answer {
    let client = ctx.pool.get().await?;
    let row =
        client.query_one(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), &[&user.id]).await?;
    Ok(json(StatusCode::OK, &user_row(&row)?))
}

/// Change a password (yours, or any user's as an administrator). Other sessions' tokens end.
#[utoipa::path(post, path = "/v1/auth/passwd/", tag = "auth", request_body = PasswdRequest,
    responses((status = 204, description = "Changed")))]
pub async fn passwd(ctx: Arc<Ctx>, user: AuthUser, req: PasswdRequest) -> Answer {
    validate::password(&req.new_password)?;
    let client = ctx.pool.get().await?;
    let target = match &req.username {
        Some(name) if name != &user.username => {
            user.require_admin()?;
            client
                .query_opt("SELECT id FROM users WHERE username = $1", &[name])
                .await?
                .ok_or_else(|| ApiError::not_found(format!("user '{name}'")))?
                .try_get::<_, i64>("id")?
        }
        _ => {
            let current = req
                .password
                .clone()
                .ok_or_else(|| ApiError::Invalid("the current password is required".into()))?;
            let hash: String = client
                .query_one("SELECT password_hash FROM users WHERE id = $1", &[&user.id])
                .await?
                .try_get("password_hash")?;
            if !auth::verify_password(current, hash).await {
                return Err(ApiError::Unauthorized("the current password is wrong".into()));
            }
            user.id
        }
    };
    let hash = auth::hash_password(req.new_password).await?;
    client.execute("UPDATE users SET password_hash = $1 WHERE id = $2", &[&hash, &target]).await?;
    Ok(no_content())
}

/// The API's root: 401 without a token (what Deis v1 clients check before `register` and
/// `login`), the API version with one.
pub async fn api_root(ctx: Arc<Ctx>, authz: Option<String>) -> Answer {
    if authz.is_none() {
        return Err(ApiError::Unauthorized("Authentication credentials were not provided.".into()));
    }
    let user = ctx.authenticate(authz).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "api_version": super::DEIS_API_VERSION, "username": user.username }),
    ))
}

/// Remove an account (yours, or any user's as an administrator). Refused while it owns apps.
/// Deis v1 clients send it as DELETE, this project's as POST; both are served.
#[utoipa::path(post, path = "/v1/auth/cancel/", tag = "auth", request_body = CancelRequest,
    responses((status = 204, description = "Removed")))]
pub async fn cancel(ctx: Arc<Ctx>, user: AuthUser, req: CancelRequest) -> Answer {
    let client = ctx.pool.get().await?;
    let (id, name) = match req.username {
        Some(name) if name != user.username => {
            user.require_admin()?;
            let id: i64 = client
                .query_opt("SELECT id FROM users WHERE username = $1", &[&name])
                .await?
                .ok_or_else(|| ApiError::not_found(format!("user '{name}'")))?
                .try_get("id")?;
            (id, name)
        }
        _ => (user.id, user.username.clone()),
    };
    let apps: i64 = client
        .query_one("SELECT count(*) AS count FROM apps WHERE owner_id = $1", &[&id])
        .await?
        .try_get("count")?;
    if apps > 0 {
        return Err(ApiError::Conflict(format!(
            "'{name}' still owns {apps} app(s): transfer or destroy them first"
        )));
    }
    client.execute("DELETE FROM users WHERE id = $1", &[&id]).await?;
    Ok(no_content())
}

/// Issue a new token (ending the old ones): yours, another user's, or everyone's (admins).
#[utoipa::path(post, path = "/v1/auth/tokens/", tag = "auth", request_body = RegenerateTokenRequest,
    responses((status = 200, description = "New token; with `all`, yours", body = TokenResponse)))]
pub async fn regenerate(ctx: Arc<Ctx>, user: AuthUser, req: RegenerateTokenRequest) -> Answer {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let target = if req.all {
        user.require_admin()?;
        tx.execute("DELETE FROM tokens", &[]).await?;
        user.id
    } else {
        let target = match &req.username {
            Some(name) if name != &user.username => {
                user.require_admin()?;
                tx.query_opt("SELECT id FROM users WHERE username = $1", &[name])
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("user '{name}'")))?
                    .try_get::<_, i64>("id")?
            }
            _ => user.id,
        };
        tx.execute("DELETE FROM tokens WHERE user_id = $1", &[&target]).await?;
        target
    };
    let token = auth::new_token();
    tx.execute(
        "INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)",
        &[&auth::token_hash(&token), &target],
    )
    .await?;
    tx.commit().await?;
    Ok(json(StatusCode::OK, &TokenResponse { token }))
}

/// Every user (administrators only).
#[utoipa::path(get, path = "/v1/users/", tag = "users", params(Paging),
    responses((status = 200, description = "Users", body = controller_api::Page<User>)))]
pub async fn users(ctx: Arc<Ctx>, user: AuthUser, paging: Paging) -> Answer {
    user.require_admin()?;
    let client = ctx.pool.get().await?;
    let listing = Listing { columns: USER_COLUMNS, from: "users", order: "username", params: &[] };
    listing.page(&client, &paging, &Endpoint::Users.path(&[]), user_row).await
}

/// Loads a user's id by name.
pub async fn user_id<C: GenericClient>(client: &C, name: &str) -> Result<i64, ApiError> {
    Ok(client
        .query_opt("SELECT id FROM users WHERE username = $1", &[&name])
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user '{name}'")))?
        .try_get("id")?)
}
