//! The scheduler's configuration.

use serde::{Deserialize, Serialize};
use service_kit::{EtcdConfig, LogConfig, NatsConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// This instance's name in the election (host name by default).
    pub instance: String,
    /// Lease TTL of the leadership, in seconds: how long a dead leader blocks a standby.
    pub leader_ttl_secs: u64,
    /// How long a new release may take to become healthy before it is rolled back, in seconds.
    pub deploy_timeout_secs: u64,
    /// How often the reconcile loop runs without a trigger, in milliseconds.
    pub reconcile_interval_ms: u64,
    /// How long a new leader listens to inventories before it acts, in milliseconds: long enough
    /// for every agent to report once, so nothing running is started twice.
    pub settle_ms: u64,
    /// SIGTERM-to-SIGKILL grace when stopping containers, in seconds.
    pub stop_grace_secs: u32,
    /// How long an agent may take to answer a start (image pulls included), in seconds.
    pub command_timeout_secs: u64,
    /// Where to serve `/healthz` and `/metrics` (none by default; the cluster's announcer probes
    /// it).
    pub listen_ops: Option<String>,
    pub nats: NatsConfig,
    pub etcd: EtcdConfig,
    pub log: LogConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            instance: std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".to_owned()),
            leader_ttl_secs: 3,
            deploy_timeout_secs: 120,
            reconcile_interval_ms: 1000,
            settle_ms: 3000,
            stop_grace_secs: 10,
            command_timeout_secs: 300,
            listen_ops: None,
            nats: NatsConfig::default(),
            etcd: EtcdConfig::default(),
            log: LogConfig::default(),
        }
    }
}
