//! The agent's configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use service_kit::{EtcdConfig, LogConfig, NatsConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's id: a DNS label, unique in the cluster.
    pub node_id: String,
    /// The address routers reach this node's published ports at.
    pub address: String,
    /// Where the agent itself reaches published ports for health checks (the engine's host).
    pub health_host: String,
    /// Memory this node offers to apps, in MB; 0 takes the engine's total.
    pub memory_mb: u64,
    /// CPUs this node offers; 0 takes the engine's count.
    pub cpus: u32,
    /// Labels that `deis tags:set` matches against.
    pub labels: BTreeMap<String, String>,
    /// Lease TTL of the node's registration (and its routes), in seconds: how fast a dead node
    /// is noticed. Kept short: the scheduler replaces containers when it runs out.
    pub lease_ttl_secs: i64,
    /// Every container this agent creates is named with this prefix (tests use a per-run one).
    pub container_prefix: String,
    /// The port apps listen on inside their container (`$PORT`).
    pub app_port: u16,
    /// How often containers are health-checked, in milliseconds.
    pub health_interval_ms: u64,
    /// Consecutive failed checks before a healthy container is taken out of the routes.
    pub health_failures: u32,
    /// How often the inventory is published, in milliseconds.
    pub inventory_interval_ms: u64,
    pub nats: NatsConfig,
    pub etcd: EtcdConfig,
    pub log: LogConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node_id: "node1".to_owned(),
            address: "127.0.0.1".to_owned(),
            health_host: "127.0.0.1".to_owned(),
            memory_mb: 0,
            cpus: 0,
            labels: BTreeMap::new(),
            lease_ttl_secs: 3,
            container_prefix: "deis-".to_owned(),
            app_port: 5000,
            health_interval_ms: 1000,
            health_failures: 3,
            inventory_interval_ms: 2000,
            nats: NatsConfig::default(),
            etcd: EtcdConfig::default(),
            log: LogConfig::default(),
        }
    }
}
