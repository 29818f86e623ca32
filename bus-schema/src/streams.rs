//! JetStream streams and durable consumers, declared once. Components create or bind them only
//! through [`ensure_stream`] and [`ensure_consumer`], so a stream's subjects, limits and
//! duplicate window cannot differ between components.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::subjects::Namespace;

/// The streams of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamId {
    /// Build outcomes (completed, failed): the controller turns them into releases.
    Builds,
    /// Changes of desired state (releases, formations, destroyed apps): the scheduler acts on
    /// them; others (router, logger) may follow too.
    Desired,
}

impl StreamId {
    pub const ALL: [StreamId; 2] = [StreamId::Builds, StreamId::Desired];
}

/// The durable consumers of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsumerId {
    /// The controller records builds and creates releases.
    ControllerBuilds,
    /// The scheduler's leader follows every desired-state change.
    Scheduler,
    /// The logger drops history and drains of destroyed apps.
    LoggerDesired,
    /// The builder removes destroyed apps' repositories, build caches and images.
    BuilderDesired,
}

/// A stream's declaration.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub id: StreamId,
    pub name: String,
    pub subjects: Vec<String>,
    /// Kept this long, then dropped: long enough for a consumer to come back from an outage.
    pub max_age: Duration,
    pub max_bytes: i64,
    /// Publishes with the same `Nats-Msg-Id` inside this window are stored once.
    pub duplicate_window: Duration,
}

/// A durable pull consumer's declaration.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub id: ConsumerId,
    pub stream: StreamId,
    pub durable_name: String,
    /// A message not acked within this time is delivered again.
    pub ack_wait: Duration,
    /// How many messages may be in flight unacked.
    pub max_ack_pending: i64,
}

impl Namespace {
    fn stream_name(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.root().to_uppercase().replace('-', "_"))
    }

    pub fn stream(&self, id: StreamId) -> StreamSpec {
        // What differs between the streams; the duplicate window is the same for all.
        let (suffix, subjects, max_age_days, max_bytes_mib) = match id {
            StreamId::Builds => (
                "BUILDS",
                vec![self.all_builds_completed().to_string(), self.all_builds_failed().to_string()],
                7,
                256,
            ),
            StreamId::Desired => (
                "DESIRED",
                vec![
                    self.all_releases_created().to_string(),
                    self.all_formations_changed().to_string(),
                    self.all_apps_destroyed().to_string(),
                ],
                30,
                512,
            ),
        };
        StreamSpec {
            id,
            name: self.stream_name(suffix),
            subjects,
            max_age: Duration::from_secs(max_age_days * 24 * 3600),
            max_bytes: max_bytes_mib * 1024 * 1024,
            duplicate_window: Duration::from_secs(10 * 60),
        }
    }

    pub fn consumer(&self, id: ConsumerId) -> ConsumerSpec {
        let (stream, name) = match id {
            ConsumerId::ControllerBuilds => (StreamId::Builds, "controller-builds"),
            ConsumerId::Scheduler => (StreamId::Desired, "scheduler"),
            ConsumerId::LoggerDesired => (StreamId::Desired, "logger"),
            ConsumerId::BuilderDesired => (StreamId::Desired, "builder"),
        };
        // The scheduler acks as soon as a change is applied in memory; a short ack wait means a
        // change pulled by a leader that died is redelivered to the next leader within seconds.
        let ack_wait = match id {
            ConsumerId::Scheduler => Duration::from_secs(5),
            _ => Duration::from_secs(30),
        };
        ConsumerSpec { id, stream, durable_name: name.to_owned(), ack_wait, max_ack_pending: 1024 }
    }
}

/// How this deployment sizes its streams: replicas (1 on one server, 3 in the cluster) and,
/// optionally, a smaller byte cap than the declaration's (tests share one server and its disk:
/// JetStream reserves each stream's cap up front).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    pub replicas: usize,
    pub max_bytes: Option<i64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self { replicas: 1, max_bytes: None }
    }
}

impl StreamOptions {
    /// Small streams for tests, so hundreds of test namespaces fit on one server.
    pub fn for_tests() -> Self {
        Self { replicas: 1, max_bytes: Some(8 * 1024 * 1024) }
    }
}

/// Why a stream or consumer could not be created or bound.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("creating JetStream stream {name}: {reason}")]
    Stream { name: String, reason: String },
    #[error("creating JetStream consumer {name} on {stream}: {reason}")]
    Consumer { name: String, stream: String, reason: String },
}

/// Creates the stream, or updates it to this declaration if it exists.
pub async fn ensure_stream(
    js: &jetstream::Context,
    spec: &StreamSpec,
    options: &StreamOptions,
) -> Result<stream::Stream, StreamError> {
    let config = stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: spec.max_age,
        max_bytes: options.max_bytes.unwrap_or(spec.max_bytes),
        duplicate_window: spec.duplicate_window,
        num_replicas: options.replicas.max(1),
        ..Default::default()
    };
    let err =
        |e: &dyn std::fmt::Display| StreamError::Stream { name: spec.name.clone(), reason: e.to_string() };
    match js.get_stream(&spec.name).await {
        Ok(_) => {
            js.update_stream(config).await.map_err(|e| err(&e))?;
            js.get_stream(&spec.name).await.map_err(|e| err(&e))
        }
        Err(_) => js.get_or_create_stream(config).await.map_err(|e| err(&e)),
    }
}

/// Creates the stream of a consumer and the durable consumer itself, or binds them.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    ns: &Namespace,
    spec: &ConsumerSpec,
    options: &StreamOptions,
) -> Result<consumer::PullConsumer, StreamError> {
    let stream_spec = ns.stream(spec.stream);
    let stream = ensure_stream(js, &stream_spec, options).await?;
    let config = consumer::pull::Config {
        durable_name: Some(spec.durable_name.clone()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        max_ack_pending: spec.max_ack_pending,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    stream.get_or_create_consumer(&spec.durable_name, config).await.map_err(|e| StreamError::Consumer {
        name: spec.durable_name.clone(),
        stream: stream_spec.name.clone(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_subject_is_one_of_ours_and_streams_do_not_overlap() {
        let ns = Namespace::default();
        let mut seen = Vec::new();
        for id in StreamId::ALL {
            let spec = ns.stream(id);
            assert!(spec.name.starts_with("DEIS_"), "{}", spec.name);
            for s in spec.subjects {
                assert!(s.starts_with("deis."), "{s}");
                assert!(!seen.contains(&s), "{s} in two streams");
                seen.push(s);
            }
        }
    }

    #[test]
    fn test_namespaces_get_their_own_streams() {
        let a = Namespace::unique_for_test("a");
        assert_ne!(a.stream(StreamId::Desired).name, Namespace::default().stream(StreamId::Desired).name);
    }
}
