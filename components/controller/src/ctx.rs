//! What every request handler shares: the pool, the config, the bus namespace, and the checks
//! of who may do what.

use std::sync::Arc;

use bus_schema::{Component, Namespace, Sender};
use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::Notify;

use crate::config::ControllerConfig;
use crate::metrics::Metrics;
use crate::model::Error;
use crate::model::auth;

/// Shared state of one controller instance.
#[derive(Debug)]
pub struct Ctx {
    pub pool: Pool,
    pub config: ControllerConfig,
    pub ns: Namespace,
    /// Who the controller's events say they come from.
    pub sender: Sender,
    /// Woken after a commit that wrote to the outbox, so events go out at once.
    pub relay_wake: Arc<Notify>,
    pub metrics: Metrics,
    /// For the registry's HTTP API.
    pub http: reqwest::Client,
    /// Woken after a change to domains, so the routers learn of it at once.
    pub domains_wake: Arc<Notify>,
    /// The bus, once connected (requests to the scheduler use it).
    pub bus: std::sync::OnceLock<bus_schema::Bus>,
}

impl Ctx {
    pub fn new(pool: Pool, config: ControllerConfig, ns: Namespace, metrics: Metrics) -> Self {
        let instance = config.advertise.clone();
        Self {
            pool,
            config,
            ns,
            sender: Sender { component: Component::Controller, instance },
            relay_wake: Arc::new(Notify::new()),
            metrics,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            bus: std::sync::OnceLock::new(),
            domains_wake: Arc::new(Notify::new()),
        }
    }

    /// Resolves the `Authorization` header to a user.
    pub async fn authenticate(&self, header: Option<String>) -> Result<AuthUser, Error> {
        let token = auth::parse_authorization(header.as_deref())?;
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {AUTH_USER_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = $1"
                ),
                &[&auth::token_hash(token)],
            )
            .await?;
        let row =
            row.ok_or_else(|| Error::Unauthorized("invalid token: log in again with `deis login`".into()))?;
        Ok(AuthUser::from_row(&row)?)
    }

    /// A connection, and the app `name` that `user` may use: what every read of an app's
    /// resources starts with.
    pub async fn app_to_read(
        &self,
        user: &AuthUser,
        name: &str,
    ) -> Result<(deadpool_postgres::Object, AppRow), Error> {
        let client = self.pool.get().await?;
        let app = app_for(&client, user, name, Access::Use, false).await?;
        Ok((client, app))
    }

    /// Checks that `user` may use the app `name`, holding no connection afterwards (for handlers
    /// that then wait on the bus).
    pub async fn check_app_access(&self, user: &AuthUser, name: &str) -> Result<(), Error> {
        self.app_to_read(user, name).await.map(drop)
    }

    /// Commits a change with its event for the app's log stream (written to the outbox in the
    /// same transaction), then wakes the outbox relay so the event goes out at once.
    pub async fn commit_with_event(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        app: &str,
        actor: &str,
        action: &str,
        message: String,
    ) -> Result<(), Error> {
        crate::model::outbox::event(&tx, &self.sender, app, actor, action, message).await?;
        tx.commit().await?;
        self.relay_wake.notify_one();
        Ok(())
    }

    pub fn app_url(&self, app: &str) -> String {
        format!("{app}.{}", self.config.platform_domain)
    }
}

/// The user a request acts as.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub username: String,
    pub is_superuser: bool,
}

/// The columns [`AuthUser::from_row`] reads, for a query on `users u`.
pub const AUTH_USER_COLUMNS: &str = "u.id, u.username, u.is_superuser";

impl AuthUser {
    /// Reads a row of [`AUTH_USER_COLUMNS`] (`id`, `username`, `is_superuser`).
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            is_superuser: row.try_get("is_superuser")?,
        })
    }

    pub fn require_admin(&self) -> Result<(), Error> {
        if self.is_superuser {
            Ok(())
        } else {
            Err(Error::Forbidden("only administrators may do this".into()))
        }
    }
}

/// An app as the handlers need it.
#[derive(Debug, Clone)]
pub struct AppRow {
    pub id: i64,
    pub name: String,
    pub owner_id: i64,
    pub owner: String,
}

/// The columns [`AppRow::from_row`] reads, for a query on `apps a JOIN users u ON u.id = a.owner_id`.
pub const APP_ROW_COLUMNS: &str = "a.id, a.name, a.owner_id, u.username AS owner";

impl AppRow {
    /// Reads a row of [`APP_ROW_COLUMNS`] (`id`, `name`, `owner_id`, `owner`).
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            owner_id: row.try_get("owner_id")?,
            owner: row.try_get("owner")?,
        })
    }
}

/// How much access a user needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Owner, a user the app is shared with, or an admin.
    Use,
    /// Owner or admin: sharing, transferring, destroying.
    Own,
}

/// Loads an app and checks the user's access. An app the user may not see at all is reported
/// as forbidden (it exists; names are global, so hiding it would only confuse `apps:create`).
pub async fn app_for<C: GenericClient>(
    client: &C,
    user: &AuthUser,
    name: &str,
    access: Access,
    lock: bool,
) -> Result<AppRow, Error> {
    let lock = if lock { " FOR UPDATE OF a" } else { "" };
    let sql = format!(
        "SELECT {APP_ROW_COLUMNS} FROM apps a JOIN users u ON u.id = a.owner_id WHERE a.name = $1{lock}"
    );
    let row =
        client.query_opt(&sql, &[&name]).await?.ok_or_else(|| Error::not_found(format!("app '{name}'")))?;
    let app = AppRow::from_row(&row)?;
    if user.is_superuser || app.owner_id == user.id {
        return Ok(app);
    }
    if access == Access::Use {
        let shared = client
            .query_opt("SELECT 1 FROM perms WHERE app_id = $1 AND user_id = $2", &[&app.id, &user.id])
            .await?
            .is_some();
        if shared {
            return Ok(app);
        }
    }
    Err(Error::Forbidden(format!(
        "you do not have permission to {} app '{name}'",
        match access {
            Access::Use => "use",
            Access::Own => "manage",
        }
    )))
}
