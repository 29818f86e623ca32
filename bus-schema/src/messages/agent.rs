use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::envelope::Timestamp;
use crate::messages::Limits;
use crate::names::{AppName, NodeId, ProcessType};

/// What an HTTP health check looks like (Deis v1's `HEALTHCHECK_*` config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Path to GET, e.g. `/healthz`; the container is healthy when it answers 2xx or 3xx.
    pub path: String,
    pub timeout_ms: u32,
    pub initial_delay_ms: u32,
}

/// The identity of one container of an app: unique in the cluster, and what makes starting it
/// idempotent (an agent that already runs it replies with the running one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerKey {
    pub app: AppName,
    pub version: u32,
    pub process_type: ProcessType,
    /// 1-based, as in `web.1`.
    pub index: u32,
}

/// Scheduler → agent: start this container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartContainer {
    pub key: ContainerKey,
    pub image: String,
    /// Command to run; empty runs the image's entry point.
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// Only for `web`: how to decide the container may receive traffic.
    pub health: Option<HealthCheck>,
}

message!(StartContainer => StartContainerReply);

/// Agent → scheduler: the outcome of a start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartContainerReply {
    /// Running (or already was): the engine's container id and the host port it listens on.
    Started { container_id: String, host_port: Option<u16> },
    /// Could not start; the reason is for people (image missing, out of memory …).
    Failed { reason: String },
}

message!(StartContainerReply);

/// Scheduler → agent: stop this container (SIGTERM, then SIGKILL after the grace period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopContainer {
    pub key: ContainerKey,
    pub grace_secs: u32,
}

message!(StopContainer => StopContainerReply);

/// Agent → scheduler: the outcome of a stop. Stopping a container that is not there succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopContainerReply {
    Stopped,
    Failed { reason: String },
}

message!(StopContainerReply);

/// What happened to a container; each kind has its own subject so subscribers can filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerEventKind {
    Created,
    Healthy,
    Unhealthy,
    Exited,
}

impl ContainerEventKind {
    pub const ALL: [ContainerEventKind; 4] = [
        ContainerEventKind::Created,
        ContainerEventKind::Healthy,
        ContainerEventKind::Unhealthy,
        ContainerEventKind::Exited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerEventKind::Created => "created",
            ContainerEventKind::Healthy => "healthy",
            ContainerEventKind::Unhealthy => "unhealthy",
            ContainerEventKind::Exited => "exited",
        }
    }
}

/// Agent → everyone: a container changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvent {
    pub node: NodeId,
    pub key: ContainerKey,
    pub kind: ContainerEventKind,
    pub container_id: String,
    /// Exit code for `Exited`, when known.
    pub exit_code: Option<i64>,
    /// Why, for `Unhealthy` and `Exited` (e.g. "health check: connection refused").
    pub detail: String,
}

message!(ContainerEvent);

/// What a node can hold, and what it already holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub memory_mb: u64,
    pub cpus: u32,
}

/// Agent → scheduler: the node is alive (liveness itself lives in etcd; this carries load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub node: NodeId,
    /// The address routers use to reach this node's published ports.
    pub address: String,
    pub capacity: Capacity,
    pub allocated: Capacity,
    pub labels: BTreeMap<String, String>,
    pub containers: u32,
}

message!(NodeHeartbeat);

/// The state of one container as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub key: ContainerKey,
    pub container_id: String,
    pub healthy: bool,
    pub running: bool,
    pub host_port: Option<u16>,
    pub started_at: Timestamp,
}

/// Agent → scheduler: every container the node runs, sent periodically and on request, so the
/// scheduler can rebuild actual state after it restarts or a node comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInventory {
    pub node: NodeId,
    pub containers: Vec<ContainerStatus>,
}

message!(NodeInventory);

/// Scheduler → agent: run a one-off container to completion, streaming its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOneOff {
    pub app: AppName,
    pub run_id: uuid::Uuid,
    /// The release it runs, for the container's environment.
    pub version: u32,
    pub image: String,
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
}

// Replies `Started` once the container runs (its host port is always `None`).
message!(RunOneOff => StartContainerReply);

/// Agent → whoever follows the run: the one-off ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunExited {
    pub run_id: uuid::Uuid,
    /// The command's exit status; `None` when it could not be read (the container vanished).
    pub exit_code: Option<i64>,
}

message!(RunExited);
