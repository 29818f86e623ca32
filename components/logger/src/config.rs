//! The logger's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use service_kit::{EtcdConfig, LogConfig, NatsConfig};

use crate::drains::DrainSettings;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggerConfig {
    /// Where each app's history is kept (`<data_dir>/apps/<app>/<segment>.log`).
    pub data_dir: PathBuf,
    /// `/healthz` and `/metrics`.
    pub listen_ops: String,
    /// This instance's name among the loggers (defaults to the host name). Apps are shared out
    /// among the live instances by this name, so it must be stable across restarts.
    pub instance: String,
    pub retention: Retention,
    /// Lines longer than this many bytes are cut, with a marker saying how much was cut.
    pub max_line_bytes: usize,
    /// Lines queued per app before that app's new lines are dropped (and counted), so one app
    /// flooding its output cannot hold up the others.
    pub app_queue_lines: usize,
    /// Lines of apps another instance forwards that this one keeps in memory (per app, the
    /// newest this many, received within `takeover_replay_secs`), to send if that instance dies
    /// and this one takes the app over: its death is known only when its lease runs out, and
    /// what came meanwhile would otherwise never reach the drains. 0 turns it off.
    pub takeover_replay_lines: usize,
    pub takeover_replay_secs: u64,
    /// A live node (in etcd) whose agent this instance has not heard on the bus for this long
    /// makes it give up its share of the forwarding until it hears every node again (within half
    /// of this): after a partition heals, etcd may answer before the bus carries lines again.
    /// The agents publish their inventory every 2 s.
    pub node_silence_ms: u64,
    pub drains: DrainSettings,
    pub nats: NatsConfig,
    pub etcd: EtcdConfig,
    pub log: LogConfig,
}

/// How much history each app keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// A segment file is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// The oldest segments of an app go once its history is larger than this.
    pub max_bytes_per_app: u64,
    /// Segments whose newest line is older than this go.
    pub max_age_hours: u64,
}

impl Default for Retention {
    fn default() -> Self {
        // 64 MiB is some 300,000 typical lines per app: 200 times Heroku's 1,500.
        Self { segment_bytes: 4 * 1024 * 1024, max_bytes_per_app: 64 * 1024 * 1024, max_age_hours: 7 * 24 }
    }
}

impl Default for LoggerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/deis/logger"),
            listen_ops: "0.0.0.0:9093".to_owned(),
            instance: default_instance(),
            retention: Retention::default(),
            max_line_bytes: 10 * 1024,
            app_queue_lines: 16 * 1024,
            // The etcd lease's 10 s, plus an election and a margin.
            takeover_replay_lines: 10_000,
            takeover_replay_secs: 15,
            node_silence_ms: 6_000,
            drains: DrainSettings::default(),
            nats: NatsConfig::default(),
            etcd: EtcdConfig::default(),
            log: LogConfig::default(),
        }
    }
}

fn default_instance() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "logger".to_owned())
}
