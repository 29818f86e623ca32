//! What every request handler shares: the pool, the config, the bus namespace, and the checks
//! of who may do what.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Failed logins, to slow down guessing passwords.
    pub logins: LoginThrottle,
    /// The platform settings from etcd (the domain, the registration mode), over the config.
    pub settings: Arc<crate::platform_settings::PlatformSettings>,
}

impl Ctx {
    pub fn new(pool: Pool, config: ControllerConfig, ns: Namespace, metrics: Metrics) -> Self {
        let instance = config.advertise.clone();
        let logins = LoginThrottle::new(&config);
        let settings = Arc::new(crate::platform_settings::PlatformSettings::new(&config));
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
            logins,
            settings,
        }
    }

    /// Resolves the `Authorization` header to a user. A token older than `token_ttl_secs` is
    /// refused: a token that leaked stops working on its own.
    pub async fn authenticate(&self, header: Option<String>) -> Result<AuthUser, Error> {
        let token = auth::parse_authorization(header.as_deref())?;
        let hash = auth::token_hash(token);
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {AUTH_USER_COLUMNS}, t.created FROM tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = $1"
                ),
                &[&hash],
            )
            .await?;
        let row =
            row.ok_or_else(|| Error::Unauthorized("invalid token: log in again with `deis login`".into()))?;
        let created: time::OffsetDateTime = row.try_get("created")?;
        if created < self.token_cutoff() {
            return Err(Error::Unauthorized(
                "your session has expired: log in again with `deis login`".into(),
            ));
        }
        let mut user = AuthUser::from_row(&row)?;
        user.token_hash = Some(hash);
        Ok(user)
    }

    /// Tokens made before this have expired.
    pub fn token_cutoff(&self) -> time::OffsetDateTime {
        // Capped at a century, so that a huge setting means "never" instead of an overflow.
        let ttl = self.config.token_ttl_secs.min(100 * 365 * 24 * 3600);
        let ttl = time::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
        time::OffsetDateTime::now_utc().checked_sub(ttl).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
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
        format!("{app}.{}", self.settings.domain())
    }
}

/// Most usernames and most client addresses whose failed logins are remembered, each.
const LOGIN_THROTTLE_CAPACITY: usize = 10_000;

/// Failed logins, per username and per client address. A success forgets the user's failures
/// but not the address's: an account of their own must not let an attacker go on guessing
/// other users' passwords from the same address.
#[derive(Debug)]
pub struct LoginThrottle {
    users: auth::Throttle<[u8; 32]>,
    addresses: auth::Throttle<IpAddr>,
}

impl LoginThrottle {
    pub fn new(config: &ControllerConfig) -> Self {
        let lockout = Duration::from_secs(config.login_lockout_secs);
        Self {
            users: auth::Throttle::new(config.login_max_failures, lockout, LOGIN_THROTTLE_CAPACITY),
            addresses: auth::Throttle::new(
                config.login_max_failures_per_address,
                lockout,
                LOGIN_THROTTLE_CAPACITY,
            ),
        }
    }

    /// Begins a login as `username` from `addr`, unless either is locked out (or has as many
    /// logins being checked as it may still fail): then how long to wait.
    pub fn begin(
        &self,
        username: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Result<LoginAttempt<'_>, Duration> {
        let user = auth::login_key(username);
        self.users.begin(&user, now)?;
        let address = addr.map(auth::address_key);
        if let Some(a) = &address
            && let Err(wait) = self.addresses.begin(a, now)
        {
            self.users.finish(&user, false, now);
            return Err(wait);
        }
        // The name is the caller's text: cut short for the log.
        let name = username.chars().take(64).collect();
        Ok(LoginAttempt { throttle: self, user, address, name, finished: false })
    }

    /// How long a guessable attempt from `addr` (a login, an admin code) must wait.
    pub fn address_locked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        self.addresses.locked(&auth::address_key(addr), now)
    }

    /// Records a failed guessable attempt from `addr`.
    pub fn address_failed(&self, addr: IpAddr, now: Instant) {
        if let Some(lockout) = self.addresses.fail(&auth::address_key(addr), now) {
            tracing::warn!(%addr, ?lockout, "too many failed attempts: address locked out");
        }
    }
}

/// A login being checked: it counts against its user's and its address's limits until it is
/// known to have failed or succeeded (an attempt dropped unfinished, by an error, counts as
/// neither).
#[derive(Debug)]
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    user: [u8; 32],
    address: Option<IpAddr>,
    name: String,
    finished: bool,
}

impl LoginAttempt<'_> {
    /// The password was wrong (or the user unknown).
    pub fn failed(mut self, now: Instant) {
        self.finished = true;
        if let Some(lockout) = self.throttle.users.finish(&self.user, true, now) {
            tracing::warn!(user = ?self.name, ?lockout, "too many failed logins: user locked out");
        }
        if let Some(address) = &self.address
            && let Some(lockout) = self.throttle.addresses.finish(address, true, now)
        {
            tracing::warn!(%address, ?lockout, "too many failed logins: address locked out");
        }
    }

    /// The password was right: the user's failures are forgotten, the address's are kept (an
    /// account of one's own must not let one go on guessing others' passwords).
    pub fn succeeded(mut self) {
        self.finished = true;
        self.throttle.users.reset(&self.user);
        self.finish_address();
    }

    fn finish_address(&self) {
        if let Some(address) = &self.address {
            self.throttle.addresses.finish(address, false, Instant::now());
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.throttle.users.finish(&self.user, false, Instant::now());
            self.finish_address();
        }
    }
}

/// The user a request acts as.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub username: String,
    pub is_superuser: bool,
    /// The hash of the token the request came with (none when not authenticated by a token),
    /// so that ending a user's sessions can spare the one asking.
    pub token_hash: Option<Vec<u8>>,
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
            token_hash: None,
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
    /// Told apart from an earlier app of the same name (the builder drops such an app's
    /// repository).
    pub uuid: uuid::Uuid,
    pub name: String,
    pub owner_id: i64,
    pub owner: String,
}

/// The columns [`AppRow::from_row`] reads, for a query on `apps a JOIN users u ON u.id = a.owner_id`.
pub const APP_ROW_COLUMNS: &str = "a.id, a.uuid, a.name, a.owner_id, u.username AS owner";

impl AppRow {
    /// Reads a row of [`APP_ROW_COLUMNS`] (`id`, `uuid`, `name`, `owner_id`, `owner`).
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            uuid: row.try_get("uuid")?,
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
