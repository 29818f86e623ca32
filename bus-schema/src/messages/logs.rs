use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::envelope::Timestamp;
use crate::messages::Stream;
use crate::names::{AppName, NodeId, ProcessType};

/// Where a line of an app's log stream came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogSource {
    /// One of the app's containers (`web.1`).
    App { process_type: ProcessType, index: u32 },
    /// A one-off `deis run` container.
    Run { index: u32 },
    /// The router's access line for a request to the app.
    Router,
    /// The controller's own events ("release v3 created by alice").
    Controller,
    /// Build output.
    Builder,
    /// The scheduler's words about a rollout ("release v3 failed: health check timed out").
    Scheduler,
    /// The logger's own notices about the stream ("1200 lines dropped: the app logs faster
    /// than its history can be written").
    Logger,
}

impl LogSource {
    /// The kind of source as the drain stream names it.
    pub fn kind(&self) -> &'static str {
        match self {
            LogSource::App { .. } => "app",
            LogSource::Run { .. } => "run",
            LogSource::Router => "router",
            LogSource::Controller => "controller",
            LogSource::Builder => "builder",
            LogSource::Scheduler => "scheduler",
            LogSource::Logger => "logger",
        }
    }
}

/// The tag printed in brackets: `web.1`, `run.3`, `deis-router`, `deis-controller`, `deis-builder`.
impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogSource::App { process_type, index } => write!(f, "{process_type}.{index}"),
            LogSource::Run { index } => write!(f, "run.{index}"),
            LogSource::Router => f.write_str("deis-router"),
            LogSource::Controller => f.write_str("deis-controller"),
            LogSource::Builder => f.write_str("deis-builder"),
            LogSource::Scheduler => f.write_str("deis-scheduler"),
            LogSource::Logger => f.write_str("deis-logger"),
        }
    }
}

/// One line of an app's log stream, as the agent, router or controller publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub app: AppName,
    pub time: Timestamp,
    pub source: LogSource,
    pub stream: Stream,
    /// The node the line came from, when it came from a container.
    pub node: Option<NodeId>,
    /// Position of the line in its container's output, so the logger can keep order.
    pub seq: u64,
    pub message: String,
}

message!(LogLine);

impl LogLine {
    /// The line as `deis logs` prints it: `2026-11-27T10:00:00.000000Z myapp[web.1]: message`.
    pub fn display(&self) -> String {
        format!("{} {}[{}]: {}", self.time.to_rfc3339(), self.app, self.source, self.message)
    }
}

/// A question to the loggers about an app's history: the last `lines` lines that pass every
/// filter, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    pub app: AppName,
    /// At most this many lines (the logger caps it, see [`LogQuery::MAX_LINES`]).
    pub lines: u32,
    /// Only lines at or after this time.
    pub since: Option<Timestamp>,
    /// Only lines whose process tag is this (`web.1`) or whose process type is this (`web`),
    /// or whose source kind is this (`router`, `controller`, `builder` …).
    pub process: Option<String>,
    /// Only lines containing this text (plain, case-sensitive).
    pub contains: Option<String>,
}

impl LogQuery {
    /// The most lines one answer holds, so a reply stays well under the bus's message size.
    pub const MAX_LINES: u32 = 10_000;

    /// Whether a line passes the query's filters (the line count is applied by the caller).
    pub fn matches(&self, line: &LogLine) -> bool {
        if let Some(since) = self.since
            && line.time < since
        {
            return false;
        }
        let process_type = match &line.source {
            LogSource::App { process_type, .. } => Some(process_type.as_str()),
            _ => None,
        };
        self.matches_parts(&line.source.to_string(), process_type, line.source.kind(), &line.message)
    }

    /// The process and text filters applied to a record of the public drain stream (a live
    /// follow: the count and `since` do not apply to lines that have not happened yet).
    pub fn matches_record(&self, record: &DrainRecord) -> bool {
        let process_type =
            (record.source == "app").then(|| record.process.rsplit_once('.').map_or("", |(t, _)| t));
        self.matches_parts(&record.process, process_type, &record.source, &record.message)
    }

    /// `process` names the tag (`web.1`), the process type (`web`) or the source kind
    /// (`router`); `contains` is plain text.
    fn matches_parts(&self, tag: &str, process_type: Option<&str>, kind: &str, message: &str) -> bool {
        if let Some(process) = &self.process
            && tag != process
            && process_type != Some(process.as_str())
            && kind != process
        {
            return false;
        }
        self.contains.as_ref().is_none_or(|text| message.contains(text.as_str()))
    }
}

message!(LogQuery => LogQueryReply);

/// The lines a logger holds for a query, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQueryReply {
    pub lines: Vec<LogLine>,
    /// Set when the logger could not read all of its history (a damaged segment, say).
    pub error: Option<String>,
}

message!(LogQueryReply);

/// What the controller did, for the app's log stream and audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerEvent {
    pub app: AppName,
    /// The user who acted.
    pub actor: String,
    /// A short machine-readable verb: `release`, `scale`, `config`, `domain`, `destroy` …
    pub action: String,
    /// The human line: "alice scaled web=3".
    pub message: String,
}

message!(ControllerEvent);

/// One record of the public per-app drain stream: JSON, so a consumer in any language can read
/// it with any NATS client. Its format is documented in bus-schema's README; new fields may be
/// added, existing ones never change meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// Format version of this record; 1 today.
    pub v: u32,
    pub app: String,
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    /// `app`, `run`, `router`, `controller` or `builder`.
    pub source: String,
    /// The bracketed tag: `web.1`, `run.1`, `deis-router` …
    pub process: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The node the line came from, or null.
    pub node: Option<String>,
    pub message: String,
}

impl DrainRecord {
    pub const VERSION: u32 = 1;

    pub fn from_line(line: &LogLine) -> Self {
        Self {
            v: Self::VERSION,
            app: line.app.to_string(),
            time: line.time.to_rfc3339(),
            source: line.source.kind().to_owned(),
            process: line.source.to_string(),
            stream: line.stream.as_str().to_owned(),
            node: line.node.as_ref().map(ToString::to_string),
            message: line.message.clone(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}
