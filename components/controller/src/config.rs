//! The controller's configuration.

use serde::{Deserialize, Serialize};
use service_kit::{EtcdConfig, LogConfig, NatsConfig};

/// Who may register new users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Anyone may register.
    #[default]
    Open,
    /// Only an admin (sending their token) may register users; a registration with the admin
    /// code always may.
    AdminOnly,
    /// Nobody, but a registration with the admin code.
    Disabled,
}

/// Everything the controller is told at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// Address of the HTTP API.
    pub listen: String,
    /// Postgres connection string (`postgres://user:pass@host:port/db`).
    pub database_url: String,
    /// Most connections to Postgres at once.
    pub database_pool_size: usize,
    /// The platform domain: apps answer at `<app>.<domain>`.
    pub platform_domain: String,
    /// The platform registry (`host:port`), where builds' images must be.
    pub registry: String,
    pub registration_mode: RegistrationMode,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Whether this instance publishes the outbox. Every instance may; they share the work.
    pub relay_enabled: bool,
    /// Whether to consume build outcomes from the bus and make releases.
    pub consume_builds: bool,
    /// Whether to use etcd: register this instance, and publish custom domains for the routers
    /// (off in tests that run without etcd).
    pub register_in_etcd: bool,
    /// The address others reach this instance at, written to its etcd registration.
    pub advertise: String,
    /// The secret the builder sends in `X-Deis-Builder-Auth` to use `/v1/hooks/` (the same
    /// value as the builder's `builder_key`). While unset, the hooks refuse every request.
    pub builder_key: Option<String>,
    /// How long a change (config, rollback, pull, scale, destroy) may hold its answer until it
    /// runs, for clients that do not ask for the answer at once (Deis v1's waited). Below the
    /// routers' request timeout (60 s), which would otherwise answer 504 for a change that was
    /// made; a slower deploy is answered when this runs out, the change accepted.
    pub settle_secs: u64,
    /// Most bytes of apps' desired state in one page of the scheduler's snapshot (the bus
    /// carries 8 MB at most; a page holds at least one app, which quotas keep far smaller).
    pub snapshot_page_bytes: usize,
    // --- sessions ---
    /// How long an API token is valid after its login, in seconds (30 days by default). An
    /// older token is refused with 401; the user logs in again.
    pub token_ttl_secs: u64,
    /// The one-time code that makes its registration an administrator, while no administrator
    /// exists (the operator sets it, e.g. `compose/up` prints a random one). Unset or empty:
    /// nobody becomes an administrator by registering.
    pub admin_code: Option<String>,
    /// Failed logins allowed per username before it is locked out for a while.
    pub login_max_failures: u32,
    /// Failed logins allowed per client address before it is locked out for a while (higher
    /// than per user: several people may share one address).
    pub login_max_failures_per_address: u32,
    /// The first lockout after too many failed logins, in seconds; it doubles with every further
    /// failure after a lockout, up to an hour.
    pub login_lockout_secs: u64,
    // --- end of sessions ---
    // --- quotas and the ops listener ---
    /// Where to serve `/metrics` (and `/healthz`): an operations address on the cluster network,
    /// never the API listener the routers publish. None: no metrics are served.
    pub listen_ops: Option<String>,
    /// What one app or user may use.
    pub quotas: Quotas,
    // --- end of quotas ---
    /// Users' own credentials for reading their apps' log streams on NATS.
    pub log_credentials: LogCredentials,
    pub nats: NatsConfig,
    pub etcd: EtcdConfig,
    pub log: LogConfig,
}

/// What one app or user may use, so no tenant can take the platform's shared resources (the
/// bus's message size, the scheduler's nodes). Each refusal names its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Largest config value, in bytes.
    pub config_value_bytes: usize,
    /// Largest config of an app (keys and values of its environment, limits and tags), in
    /// bytes. Every release carries it whole on the bus (8 MB payload limit in the cluster).
    pub config_bytes_per_app: usize,
    /// Most process types in an app's Procfile.
    pub process_types_per_app: usize,
    /// Most containers of one app, all process types together.
    pub containers_per_app: u32,
    /// Most containers of all apps one user owns.
    pub containers_per_user: u32,
}

/// Log consumers' NATS credentials (`deis logs:credentials`): the NATS servers ask the
/// controller about a user they do not know (auth callout) and get a grant signed with this key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogCredentials {
    /// The seed of the NATS account key (`deisctl nkey`) whose public half the NATS servers name
    /// as their callout's issuer. Unset or empty: the controller answers no callout (credentials
    /// can still be issued, but NATS lets nobody in with them).
    pub issuer_seed: Option<String>,
    /// The NATS account the log consumers are placed in: where the drain subjects are
    /// (`DEIS` in the cluster, `$G` on a server without accounts).
    pub account: String,
    /// How long one grant lasts, in seconds: the server then disconnects the client, which
    /// reconnects and is checked again, so a revoked credential or a lost app stops within it.
    pub grant_secs: u64,
}

impl Default for LogCredentials {
    fn default() -> Self {
        Self { issuer_seed: None, account: "$G".to_owned(), grant_secs: 600 }
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            config_value_bytes: 32 * 1024,
            config_bytes_per_app: 256 * 1024,
            process_types_per_app: 32,
            containers_per_app: 50,
            containers_per_user: 200,
        }
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8000".to_owned(),
            database_url: "postgres://deis@127.0.0.1:5432/deis".to_owned(),
            database_pool_size: 16,
            platform_domain: "deis.local".to_owned(),
            registry: "127.0.0.1:5000".to_owned(),
            registration_mode: RegistrationMode::Open,
            max_body_bytes: 1024 * 1024,
            relay_enabled: true,
            consume_builds: true,
            register_in_etcd: true,
            advertise: "127.0.0.1:8000".to_owned(),
            builder_key: None,
            settle_secs: 50,
            snapshot_page_bytes: 1024 * 1024,
            token_ttl_secs: 30 * 24 * 3600,
            admin_code: None,
            login_max_failures: 5,
            login_max_failures_per_address: 20,
            login_lockout_secs: 30,
            listen_ops: None,
            quotas: Quotas::default(),
            log_credentials: LogCredentials::default(),
            nats: NatsConfig::default(),
            etcd: EtcdConfig::default(),
            log: LogConfig::default(),
        }
    }
}
