//! The platform's bus contract: the only place that names NATS subjects, defines wire messages,
//! encodes them, and declares JetStream streams and consumers.
//!
//! Components depend on this crate and never format a subject or touch bincode themselves:
//! - [`subjects::Namespace`] builds every subject, typed by the message it carries;
//! - [`messages`] holds the message bodies (schema version 1);
//! - [`envelope::Envelope`] wraps each body with its id, time, sender and trace id;
//! - [`codec`] turns envelopes into bytes and back, refusing anything malformed;
//! - [`streams`] declares the JetStream streams and durable consumers;
//! - [`bus::Bus`] publishes, requests and subscribes with all of the above.

pub mod bus;
pub mod codec;
pub mod discovery;
pub mod drain_url;
pub mod envelope;
pub mod labels;
pub mod messages;
pub mod names;
pub mod streams;
pub mod subjects;

pub use bus::{BuildOutcome, Bus, BusError, DesiredChange, Incoming};
pub use codec::{CodecError, SCHEMA_VERSION};
pub use envelope::{Component, Envelope, Kind, Message, MessageId, Request, Sender, Timestamp};
pub use names::{AppName, NameError, NodeId, ProcessType};
pub use subjects::{Filter, Namespace, Subject};
