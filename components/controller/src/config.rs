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
    /// Only an admin (sending their token) may register users; the first user always may.
    AdminOnly,
    /// Nobody but the first user.
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
    pub nats: NatsConfig,
    pub etcd: EtcdConfig,
    pub log: LogConfig,
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
            nats: NatsConfig::default(),
            etcd: EtcdConfig::default(),
            log: LogConfig::default(),
        }
    }
}
