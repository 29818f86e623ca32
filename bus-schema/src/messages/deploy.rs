use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{AppName, ProcessType};

/// Resource limits of one process type (`deis limits:set`). `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_mb: Option<u64>,
    /// Relative CPU weight (Docker's CPU shares; 1024 is one share).
    pub cpu_shares: Option<u64>,
}

/// Everything the scheduler needs to run a release, so it never has to read Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    pub app: AppName,
    /// v1, v2, … without gaps per app.
    pub version: u32,
    /// The image to run; empty for v1, which has no build yet.
    pub image: String,
    /// Process types and their commands; an empty command runs the image's own entry point.
    pub processes: BTreeMap<ProcessType, String>,
    /// The app's config, given to containers as environment variables.
    pub config: BTreeMap<String, String>,
    pub limits: BTreeMap<ProcessType, Limits>,
    /// Node labels the app's containers must run on (`deis tags:set`).
    pub tags: BTreeMap<String, String>,
}

/// A release was created (new build, config change or rollback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCreated {
    pub release: ReleaseSpec,
    /// The human summary ("alice set FOO, BAR").
    pub summary: String,
    pub created_by: String,
}

message!(ReleaseCreated);

/// The number of containers wanted per process type changed (`deis scale`). Carries the whole
/// formation, not a delta, so applying it twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationChanged {
    pub app: AppName,
    pub formation: BTreeMap<ProcessType, u32>,
    /// Bumped by the controller on every change, so an older formation never overwrites a newer one.
    pub generation: u64,
    pub changed_by: String,
}

message!(FormationChanged);

/// An app was destroyed: its containers, routes and drains go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDestroyed {
    pub app: AppName,
    pub destroyed_by: String,
}

message!(AppDestroyed);

/// Scheduler → controller: everything that should run, so a new scheduler leader can start from
/// the truth in Postgres rather than from whatever events it happens to replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStateRequest {}

message!(DesiredStateRequest => DesiredStateSnapshot);

/// One app's desired state: its current release and formation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDesired {
    pub release: ReleaseSpec,
    pub formation: BTreeMap<ProcessType, u32>,
    pub generation: u64,
}

/// Controller → scheduler: every app's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStateSnapshot {
    pub apps: Vec<AppDesired>,
}

message!(DesiredStateSnapshot);

/// Scheduler → controller: one page of the desired state, the apps whose names sort after
/// `after` (from the first with `None`). A whole snapshot in one reply stops fitting the bus's
/// payload limit once apps carry large configs; pages are cut by size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStatePageRequest {
    pub after: Option<AppName>,
}

message!(DesiredStatePageRequest => DesiredStatePage);

/// Controller → scheduler: apps in name order, and the name to ask after for the next page
/// (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStatePage {
    pub apps: Vec<AppDesired>,
    pub next: Option<AppName>,
}

message!(DesiredStatePage);

/// Controller → scheduler: what runs of an app now (`deis ps`, `deis releases:info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatusRequest {
    pub app: AppName,
}

message!(AppStatusRequest => AppStatus);

/// How a release's rollout went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployState {
    /// New containers are starting; the previous release still serves.
    Deploying { version: u32 },
    /// Every process type of this release runs as asked.
    Deployed { version: u32 },
    /// The release never became healthy within the deploy timeout; `serving` still runs.
    Failed { version: u32, serving: Option<u32>, reason: String },
}

/// One container as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerView {
    pub key: crate::messages::ContainerKey,
    pub node: crate::names::NodeId,
    /// `starting`, `up`, `unhealthy`, `crashed`.
    pub state: String,
    pub since: crate::envelope::Timestamp,
}

/// Scheduler → controller: an app's containers and its latest rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    pub app: AppName,
    pub containers: Vec<ContainerView>,
    pub deploy: Option<DeployState>,
}

message!(AppStatus);

/// Controller → scheduler: restart an app's containers (`deis ps:restart`), one at a time so the
/// others keep serving. Narrowed to a process type, and to one container of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRequest {
    pub app: AppName,
    pub process_type: Option<ProcessType>,
    pub index: Option<u32>,
}

message!(RestartRequest => RestartReply);

/// Scheduler → controller: how many containers will be restarted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartReply {
    pub restarting: u32,
}

message!(RestartReply);

/// Controller → scheduler: run a one-off command in the app's current release (`deis run`).
/// Its output comes on the run's own subjects (`runs.<id>.output`, `runs.<id>.exit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub app: AppName,
    pub run_id: uuid::Uuid,
    /// A shell line, run by the app's own shell inside its container.
    pub command: String,
    pub user: String,
}

message!(RunRequest => RunReply);

/// Scheduler → controller: where the one-off runs, or why it cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunReply {
    Started { node: crate::names::NodeId },
    Failed { reason: String },
}

message!(RunReply);
