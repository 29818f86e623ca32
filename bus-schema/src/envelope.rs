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

/// Declares [`Kind`] from one table, so the enum, [`Kind::ALL`] and [`Kind::name`] cannot drift
/// apart when a message is added.
macro_rules! kinds {
    ($($kind:ident = $number:literal => $name:literal,)*) => {
        /// Every message type on the bus, with its fixed wire number. Numbers are never reused: a
        /// removed message keeps its number retired.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Kind {
            $($kind = $number,)*
        }

        impl Kind {
            /// Every kind, for tests that must cover them all.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            /// A stable snake_case name (golden file names, metrics labels).
            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$kind => $name,)*
                }
            }
        }
    };
}

kinds! {
    BuildRequested = 1 => "build_requested",
    BuildLogLine = 2 => "build_log_line",
    BuildCompleted = 3 => "build_completed",
    BuildFailed = 4 => "build_failed",
    ReleaseCreated = 10 => "release_created",
    FormationChanged = 11 => "formation_changed",
    AppDestroyed = 12 => "app_destroyed",
    DesiredStateRequest = 13 => "desired_state_request",
    DesiredStateSnapshot = 14 => "desired_state_snapshot",
    AppStatusRequest = 15 => "app_status_request",
    AppStatus = 16 => "app_status",
    RestartRequest = 17 => "restart_request",
    RestartReply = 18 => "restart_reply",
    RunRequest = 50 => "run_request",
    RunReply = 51 => "run_reply",
    RunOneOff = 52 => "run_one_off",
    RunExited = 53 => "run_exited",
    StartContainer = 20 => "start_container",
    StartContainerReply = 21 => "start_container_reply",
    StopContainer = 22 => "stop_container",
    StopContainerReply = 23 => "stop_container_reply",
    ContainerEvent = 30 => "container_event",
    NodeHeartbeat = 31 => "node_heartbeat",
    NodeInventory = 32 => "node_inventory",
    LogLine = 40 => "log_line",
    ControllerEvent = 41 => "controller_event",
    LogQuery = 42 => "log_query",
    LogQueryReply = 43 => "log_query_reply",
    DesiredStatePageRequest = 60 => "desired_state_page_request",
    DesiredStatePage = 61 => "desired_state_page",
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
