//! deisctl's configuration: where etcd is, and which cluster's containers are its parts.

use serde::{Deserialize, Serialize};
use service_kit::{EtcdConfig, LogConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeisctlConfig {
    /// The cluster's compose project: its parts are the containers labelled
    /// `com.docker.compose.project=<cluster>` and `io.deis.component=<component>`.
    pub cluster: String,
    /// How often `announce` probes each part, in milliseconds.
    pub probe_interval_ms: u64,
    /// How long one probe may take, in milliseconds.
    pub probe_timeout_ms: u64,
    pub etcd: EtcdConfig,
    pub log: LogConfig,
}

impl Default for DeisctlConfig {
    fn default() -> Self {
        Self {
            cluster: "deis".to_owned(),
            probe_interval_ms: 1000,
            probe_timeout_ms: 2000,
            // Short: a host that stops is shown down within seconds.
            etcd: EtcdConfig { lease_ttl_secs: 4, ..EtcdConfig::default() },
            log: LogConfig { filter: "warn".to_owned(), ..LogConfig::default() },
        }
    }
}
