//! `/v1/auth/*` and `/v1/users/`: registration, login, passwords, tokens, log credentials.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller_api::{
    CancelRequest, Endpoint, LogCredentials, LoginRequest, PasswdRequest, RegenerateTokenRequest,
    RegisterRequest, TokenResponse, User,
};
use deadpool_postgres::GenericClient;
use warp::Reply as _;
use warp::http::StatusCode;

use super::error::{ApiError, unless_taken};
use super::{Answer, Body, Listing, Paging, json, no_content, parse_body, ts};
use crate::config::RegistrationMode;
use crate::ctx::{AuthUser, Ctx};
use crate::model::validate;
use crate::model::{auth, log_credentials, login_lockouts};

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

/// Register a user. A registration with the operator's one-time admin code makes the first
/// administrator; without it nobody becomes one by registering.
#[utoipa::path(post, path = "/v1/auth/register/", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, description = "Registered", body = User),
        (status = 429, description = "Too many wrong admin codes from this address; retry after `Retry-After` seconds",
            body = controller_api::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait")))),
    security(()))]
pub async fn register(ctx: Arc<Ctx>, authz: Option<String>, client: Option<IpAddr>, body: Body) -> Answer {
    let req: RegisterRequest = parse_body(body?)?;
    validate::username(&req.username)?;
    validate::password(&req.password)?;
    if req.email.len() > 254 || req.first_name.len() > 150 || req.last_name.len() > 150 {
        return Err(ApiError::Invalid("email, first or last name is too long".into()));
    }
    // The admin code can be guessed like a password: wrong ones count against the address.
    let with_code = match &req.admin_code {
        None => false,
        Some(given) => {
            let now = Instant::now();
            if let Some(wait) = client.and_then(|a| ctx.logins.address_locked(a, now)) {
                return Ok(too_many_attempts(wait));
            }
            let shared_keys: Vec<Vec<u8>> = client.map(login_lockouts::address).into_iter().collect();
            if let Some(wait) = login_lockouts::wait(&ctx.pool, &shared_keys).await? {
                return Ok(too_many_attempts(wait));
            }
            let expected = ctx.config.admin_code.as_deref().filter(|c| !c.trim().is_empty());
            if !expected.is_some_and(|expected| auth::same_secret(given, expected)) {
                if let Some(addr) = client {
                    ctx.logins.address_failed(addr, now);
                    login_lockouts::failed(
                        &ctx.pool,
                        &login_lockouts::address(addr),
                        ctx.config.login_max_failures_per_address,
                        Duration::from_secs(ctx.config.login_lockout_secs),
                    )
                    .await?;
                }
                return Err(ApiError::Forbidden("wrong admin code".into()));
            }
            true
        }
    };
    let hash = auth::hash_password(req.password.clone()).await?;
    // Resolve who is asking before taking the lock: admin-only registration needs it.
    let caller = match authz {
        Some(h) => ctx.authenticate(Some(h)).await.ok(),
        None => None,
    };
    let mut db = ctx.pool.get().await?;
    let tx = db.transaction().await?;
    // Serialises registrations so that the admin code makes exactly one administrator.
    tx.execute("SELECT pg_advisory_xact_lock(7415003)", &[]).await?;
    if with_code {
        let admin_exists: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM users WHERE is_superuser) AS admin", &[])
            .await?
            .try_get("admin")?;
        if admin_exists {
            return Err(ApiError::Forbidden(
                "the admin code has been used: an administrator exists, ask them instead".into(),
            ));
        }
    } else {
        match ctx.settings.registration_mode() {
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
            &[&req.username, &req.email, &req.first_name, &req.last_name, &hash, &with_code],
        )
        .await;
    let row = unless_taken(inserted, || format!("a user named '{}' already exists", req.username))?;
    let out = user_row(&row)?;
    tx.commit().await?;
    tracing::info!(user = %req.username, admin = with_code, "user registered");
    Ok(json(StatusCode::CREATED, &out))
}

/// 429 with `Retry-After`: a login (or admin code) may be tried again in `wait`.
fn too_many_attempts(wait: Duration) -> warp::reply::Response {
    // Whole seconds, rounded up: retrying at the announced time must not be too early.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let body = controller_api::ErrorBody {
        detail: format!("too many failed attempts: try again in {secs} seconds"),
    };
    warp::reply::with_header(json(StatusCode::TOO_MANY_REQUESTS, &body), "retry-after", secs.to_string())
        .into_response()
}

/// The client's address: the last `X-Forwarded-For` entry if there is one (the router, the
/// platform's edge, appends the address it was reached from and replaces whatever the client
/// sent), else the connection's peer.
pub fn client_address(forwarded_for: Option<&str>, peer: Option<SocketAddr>) -> Option<IpAddr> {
    let forwarded = forwarded_for.and_then(|v| v.rsplit(',').next()).map(str::trim).and_then(|last| {
        last.parse::<IpAddr>().ok().or_else(|| last.parse::<SocketAddr>().ok().map(|s| s.ip()))
    });
    forwarded.or(peer.map(|p| p.ip()))
}

/// Log in: exchange a username and password for a new API token. Failed logins are throttled
/// per username and per client address.
#[utoipa::path(post, path = "/v1/auth/login/", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "Logged in", body = TokenResponse),
        (status = 429, description = "Too many failed logins for this user or address; retry after `Retry-After` seconds",
            body = controller_api::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait")))),
    security(()))]
pub async fn login(ctx: Arc<Ctx>, client: Option<IpAddr>, body: Body) -> Answer {
    let req: LoginRequest = parse_body(body?)?;
    let now = Instant::now();
    // Even the right password waits out a lockout: otherwise guessing would go on, only
    // reading the answers differently.
    let attempt = match ctx.logins.begin(&req.username, client, now) {
        Ok(attempt) => attempt,
        Err(wait) => return Ok(too_many_attempts(wait)),
    };
    // The lockouts every controller shares: the guesser's last request may have reached another.
    let user_key = login_lockouts::user_key(&req.username);
    let address_key = client.map(login_lockouts::address);
    let shared_keys: Vec<Vec<u8>> = std::iter::once(user_key.clone()).chain(address_key.clone()).collect();
    if let Some(wait) = login_lockouts::wait(&ctx.pool, &shared_keys).await? {
        return Ok(too_many_attempts(wait));
    }
    let db = ctx.pool.get().await?;
    let row =
        db.query_opt("SELECT id, password_hash FROM users WHERE username = $1", &[&req.username]).await?;
    let (id, stored) = match row {
        Some(row) => (Some(row.try_get::<_, i64>("id")?), Some(row.try_get::<_, String>("password_hash")?)),
        None => (None, None),
    };
    // An unknown user costs one argon2 verification too, so the time does not tell who exists.
    let verified = auth::verify_login(req.password, stored).await;
    let id = match id {
        Some(id) if verified => id,
        _ => {
            attempt.failed(Instant::now());
            let lockout = Duration::from_secs(ctx.config.login_lockout_secs);
            login_lockouts::failed(&ctx.pool, &user_key, ctx.config.login_max_failures, lockout).await?;
            if let Some(key) = &address_key {
                login_lockouts::failed(&ctx.pool, key, ctx.config.login_max_failures_per_address, lockout)
                    .await?;
            }
            return Err(ApiError::Unauthorized("wrong username or password".into()));
        }
    };
    attempt.succeeded();
    login_lockouts::reset(&ctx.pool, &user_key).await?;
    let token = auth::new_token();
    // The user's expired tokens can go: nothing accepts them any more.
    db.execute("DELETE FROM tokens WHERE user_id = $1 AND created < $2", &[&id, &ctx.token_cutoff()]).await?;
    db.execute("INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)", &[&auth::token_hash(&token), &id])
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

/// Change a password (yours, or any user's as an administrator). Every other session of the
/// user ends: all of their tokens but the one asking (all of them when an administrator
/// changes someone else's), and their log credentials.
#[utoipa::path(post, path = "/v1/auth/passwd/", tag = "auth", request_body = PasswdRequest,
    responses((status = 204, description = "Changed")))]
pub async fn passwd(ctx: Arc<Ctx>, user: AuthUser, req: PasswdRequest) -> Answer {
    validate::password(&req.new_password)?;
    let mut client = ctx.pool.get().await?;
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
    // The token asking survives only a change of its own user's password.
    let keep: &[u8] = match &user.token_hash {
        Some(own) if target == user.id => own,
        _ => &[],
    };
    let tx = client.transaction().await?;
    tx.execute("UPDATE users SET password_hash = $1 WHERE id = $2", &[&hash, &target]).await?;
    let ended =
        tx.execute("DELETE FROM tokens WHERE user_id = $1 AND token_hash <> $2", &[&target, &keep]).await?;
    log_credentials::revoke(&tx, target).await?;
    tx.commit().await?;
    tracing::info!(user_id = target, by = %user.username, sessions_ended = ended, "password changed");
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
    // Their tokens and log credentials go with them (ON DELETE CASCADE).
    client.execute("DELETE FROM users WHERE id = $1", &[&id]).await?;
    Ok(no_content())
}

/// Issue a new token (ending the old ones, and the log credentials issued with them): yours,
/// another user's, or everyone's (admins).
#[utoipa::path(post, path = "/v1/auth/tokens/", tag = "auth", request_body = RegenerateTokenRequest,
    responses((status = 200, description = "New token; with `all`, yours", body = TokenResponse)))]
pub async fn regenerate(ctx: Arc<Ctx>, user: AuthUser, req: RegenerateTokenRequest) -> Answer {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let target = if req.all {
        user.require_admin()?;
        tx.execute("DELETE FROM tokens", &[]).await?;
        tx.execute("DELETE FROM log_credentials", &[]).await?;
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
        log_credentials::revoke(&tx, target).await?;
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

/// Issue your credentials for reading logs straight from NATS, replacing any you had: a NATS
/// user name, a password shown only now, and the drain subjects of the apps you may read. Each
/// connection is granted the apps you may read when it connects, for `expires_in` seconds.
#[utoipa::path(post, path = "/v1/auth/log-credentials/", tag = "auth",
    responses((status = 201, description = "Issued; the password is not shown again", body = LogCredentials)))]
pub async fn log_credentials_issue(ctx: Arc<Ctx>, user: AuthUser) -> Answer {
    let client = ctx.pool.get().await?;
    let issued = log_credentials::issue(&client, &ctx.ns, user.id, &user.username, user.is_superuser).await?;
    tracing::info!(user = %user.username, apps = issued.subjects.len(), "log credentials issued");
    let out = LogCredentials {
        username: issued.nats_user,
        password: issued.password,
        subjects: issued.subjects,
        expires_in: ctx.config.log_credentials.grant_secs,
    };
    Ok(json(StatusCode::CREATED, &out))
}

/// Revoke your log credentials: new connections with them are refused (answers 204 when you had
/// none, too).
#[utoipa::path(delete, path = "/v1/auth/log-credentials/", tag = "auth",
    responses((status = 204, description = "Revoked")))]
pub async fn log_credentials_revoke(ctx: Arc<Ctx>, user: AuthUser) -> Answer {
    let client = ctx.pool.get().await?;
    if log_credentials::revoke(&client, user.id).await? {
        tracing::info!(user = %user.username, "log credentials revoked");
    }
    Ok(no_content())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_last_forwarded_address_else_the_peer() {
        let peer: Option<SocketAddr> = Some("10.0.0.5:4711".parse().unwrap());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client_address(None, peer), ip("10.0.0.5"));
        assert_eq!(client_address(Some("198.51.100.7"), peer), ip("198.51.100.7"));
        // What a client sent comes first; the router appends what it saw.
        assert_eq!(client_address(Some("1.2.3.4, 198.51.100.7"), peer), ip("198.51.100.7"));
        assert_eq!(client_address(Some("1.2.3.4,2001:db8::1"), peer), ip("2001:db8::1"));
        assert_eq!(client_address(Some("198.51.100.7:5555"), peer), ip("198.51.100.7"));
        assert_eq!(client_address(Some("1.2.3.4, garbage"), peer), ip("10.0.0.5"));
        assert_eq!(client_address(Some("garbage"), None), None);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let resp = too_many_attempts(Duration::from_millis(1500));
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(too_many_attempts(Duration::from_secs(30)).headers()["retry-after"], "30");
    }
}
