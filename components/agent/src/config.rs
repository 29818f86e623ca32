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
    /// The port an app listens on inside its container (`$PORT`) when neither `PORT` in its
    /// config nor its image's exposed TCP port names one (see `port.rs`).
    pub app_port: u16,
    /// How often containers are health-checked, in milliseconds.
    pub health_interval_ms: u64,
    /// Consecutive failed checks before a healthy container is taken out of the routes.
    pub health_failures: u32,
    /// How often the inventory is published, in milliseconds.
    pub inventory_interval_ms: u64,
    /// What every container this agent starts may do (see [`Confinement`]).
    pub confinement: Confinement,
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
            confinement: Confinement::default(),
            nats: NatsConfig::default(),
            etcd: EtcdConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// The least privilege every app container (web, workers, `deis run` one-offs) runs with. The
/// defaults are the platform's policy; README and ARCHITECTURE describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Confinement {
    /// The Docker network app containers are put on: a bridge with inter-container
    /// communication off, so one app cannot reach another's container directly (only through the
    /// routers, at the node's published ports). Created by the agent when missing; an existing
    /// one that lets containers talk to each other is refused.
    pub network: String,
    /// That network's Linux bridge: the node's firewall (compose/cluster/files/node-entry) names
    /// it to keep apps off the node and the cluster network. At most 15 characters.
    pub bridge: String,
    /// Processes and threads one container may have, so a fork bomb stays in its container.
    pub pids_limit: i64,
    /// Memory limit of a container whose app sets none, in MiB. The scheduler counts such a
    /// container as 256 MiB when it places it (its `DEFAULT_MEMORY_MB`), so the default matches:
    /// a node is never promised more memory than its containers may take.
    pub default_memory_mb: u64,
    /// The user (`uid:gid`) a container runs as when its image declares none, or root. The
    /// stack's `app` user; buildpack apps and the sample apps declare it themselves. Empty lets
    /// such images run as root (still without the dropped capabilities).
    pub default_user: String,
    /// The only capabilities kept; every other is dropped (NET_RAW, MKNOD, SYS_CHROOT,
    /// AUDIT_WRITE, SETFCAP, SETPCAP among Docker's defaults). They matter only to a process
    /// running as root (none by default, see `default_user`): what an entrypoint needs to own
    /// its files and step down to another user. `no-new-privileges` means no process gains any.
    pub capabilities: Vec<String>,
}

impl Default for Confinement {
    fn default() -> Self {
        Self {
            network: "deis-apps".to_owned(),
            bridge: "deis-apps".to_owned(),
            pids_limit: 512,
            default_memory_mb: 256,
            default_user: "1000:1000".to_owned(),
            capabilities: ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}
