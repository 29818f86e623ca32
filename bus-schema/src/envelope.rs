//! The versioned envelope around every message, and the traits tying message types together.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// Identifies one message for de-duplication: JetStream's `Nats-Msg-Id`, and the key consumers
/// remember to drop a redelivery. Producers that may send the same fact twice (the controller's
/// outbox relay after a crash) reuse the same id, so the copy is dropped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// A fresh, time-ordered id (UUID v7).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

/// A point in time as nanoseconds since the Unix epoch (UTC): compact on the wire, total order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self(nanos)
    }

    /// The time as RFC 3339 in UTC with microseconds (`2026-11-27T10:00:00.123456Z`), as log
    /// lines and the JSON drain stream print it.
    pub fn to_rfc3339(self) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        t.format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
    }

    /// Parses RFC 3339 (any offset).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos()).ok().map(Self)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

/// The platform component that sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Component {
    Controller,
    Builder,
    Scheduler,
    Agent,
    Router,
    Logger,
    Deisctl,
    Cli,
    Test,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Controller => "controller",
            Component::Builder => "builder",
            Component::Scheduler => "scheduler",
            Component::Agent => "agent",
            Component::Router => "router",
            Component::Logger => "logger",
            Component::Deisctl => "deisctl",
            Component::Cli => "cli",
            Component::Test => "test",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every message type on the bus, with its fixed wire number. Numbers are never reused: a
/// removed message keeps its number retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Kind {
    BuildRequested = 1,
    BuildLogLine = 2,
    BuildCompleted = 3,
    BuildFailed = 4,
    ReleaseCreated = 10,
    FormationChanged = 11,
    AppDestroyed = 12,
    DesiredStateRequest = 13,
    DesiredStateSnapshot = 14,
    AppStatusRequest = 15,
    AppStatus = 16,
    RestartRequest = 17,
    RestartReply = 18,
    RunRequest = 50,
    RunReply = 51,
    RunOneOff = 52,
    RunExited = 53,
    StartContainer = 20,
    StartContainerReply = 21,
    StopContainer = 22,
    StopContainerReply = 23,
    ContainerEvent = 30,
    NodeHeartbeat = 31,
    NodeInventory = 32,
    LogLine = 40,
    ControllerEvent = 41,
    LogQuery = 42,
    LogQueryReply = 43,
}

impl Kind {
    /// Every kind, for tests that must cover them all.
    pub const ALL: &'static [Kind] = &[
        Kind::BuildRequested,
        Kind::BuildLogLine,
        Kind::BuildCompleted,
        Kind::BuildFailed,
        Kind::ReleaseCreated,
        Kind::FormationChanged,
        Kind::AppDestroyed,
        Kind::DesiredStateRequest,
        Kind::DesiredStateSnapshot,
        Kind::AppStatusRequest,
        Kind::AppStatus,
        Kind::RestartRequest,
        Kind::RestartReply,
        Kind::RunRequest,
        Kind::RunReply,
        Kind::StartContainer,
        Kind::StartContainerReply,
        Kind::StopContainer,
        Kind::StopContainerReply,
        Kind::RunOneOff,
        Kind::RunExited,
        Kind::ContainerEvent,
        Kind::NodeHeartbeat,
        Kind::NodeInventory,
        Kind::LogLine,
        Kind::ControllerEvent,
        Kind::LogQuery,
        Kind::LogQueryReply,
    ];

    /// A stable snake_case name (golden file names, metrics labels).
    pub fn name(self) -> &'static str {
        match self {
            Kind::BuildRequested => "build_requested",
            Kind::BuildLogLine => "build_log_line",
            Kind::BuildCompleted => "build_completed",
            Kind::BuildFailed => "build_failed",
            Kind::ReleaseCreated => "release_created",
            Kind::FormationChanged => "formation_changed",
            Kind::AppDestroyed => "app_destroyed",
            Kind::DesiredStateRequest => "desired_state_request",
            Kind::DesiredStateSnapshot => "desired_state_snapshot",
            Kind::AppStatusRequest => "app_status_request",
            Kind::AppStatus => "app_status",
            Kind::RestartRequest => "restart_request",
            Kind::RestartReply => "restart_reply",
            Kind::RunRequest => "run_request",
            Kind::RunReply => "run_reply",
            Kind::RunOneOff => "run_one_off",
            Kind::RunExited => "run_exited",
            Kind::StartContainer => "start_container",
            Kind::StartContainerReply => "start_container_reply",
            Kind::StopContainer => "stop_container",
            Kind::StopContainerReply => "stop_container_reply",
            Kind::ContainerEvent => "container_event",
            Kind::NodeHeartbeat => "node_heartbeat",
            Kind::NodeInventory => "node_inventory",
            Kind::LogLine => "log_line",
            Kind::ControllerEvent => "controller_event",
            Kind::LogQuery => "log_query",
            Kind::LogQueryReply => "log_query_reply",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A message body that can travel on the bus.
pub trait Message: Serialize + DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The wire number written in the header, checked on decode.
    const KIND: Kind;
}

/// A message sent with request/reply. The reply type is named here so the two cannot drift.
pub trait Request: Message {
    type Reply: Message;
}

/// Who sent a message, and which instance of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub component: Component,
    /// The instance (host name, node id or a random id) so duplicates can be traced to a sender.
    pub instance: String,
}

/// The envelope every message travels in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<M> {
    /// For de-duplication (see [`MessageId`]).
    pub id: MessageId,
    /// When the sender created the message.
    pub time: Timestamp,
    pub sender: Sender,
    /// Carries one deploy's or request's trace across components; empty when there is none.
    pub trace_id: String,
    pub body: M,
}

impl<M: Message> Envelope<M> {
    /// Wraps a body with a fresh id and the current time.
    pub fn new(sender: Sender, body: M) -> Self {
        Self { id: MessageId::new(), time: Timestamp::now(), sender, trace_id: String::new(), body }
    }

    /// Sets the id, for producers that must keep a fact's id stable across retries.
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = id;
        self
    }

    pub fn with_trace(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = trace_id.into();
        self
    }
}
