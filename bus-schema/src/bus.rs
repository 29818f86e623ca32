//! Typed publish, request and subscribe over NATS: the only way components put messages on the
//! bus, so every message is encoded by the codec and sent on a subject of its own type.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::{Stream, StreamExt};

use crate::codec::{self, CodecError};
use crate::envelope::{Envelope, Message, Request, Sender};
use crate::messages::{
    AppDestroyed, BuildCompleted, BuildFailed, DrainRecord, FormationChanged, ReleaseCreated,
};
use crate::subjects::{Filter, Namespace, Subject};

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("publishing to {subject}: {reason}")]
    Publish { subject: String, reason: String },
    #[error("request to {subject}: {reason}")]
    Request { subject: String, reason: String },
    #[error("subscribing to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("reply to a message that asked for none")]
    NoReplySubject,
}

/// A connection to the bus in one namespace, with the identity used on everything it sends.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    ns: Namespace,
    sender: Sender,
}

/// A message received on a subscription, decoded.
#[derive(Debug)]
pub struct Incoming<M> {
    pub subject: String,
    pub envelope: Envelope<M>,
    reply: Option<async_nats::Subject>,
}

impl Bus {
    pub fn new(client: async_nats::Client, ns: Namespace, sender: Sender) -> Self {
        let jetstream = jetstream::new(client.clone());
        Self { client, jetstream, ns, sender }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// Wraps a body in an envelope from this bus's sender.
    pub fn envelope<M: Message>(&self, body: M) -> Envelope<M> {
        Envelope::new(self.sender.clone(), body)
    }

    /// Publishes on a core subject (at most once: for lines, events and heartbeats).
    pub async fn publish<M: Message>(
        &self,
        subject: &Subject<M>,
        envelope: &Envelope<M>,
    ) -> Result<(), BusError> {
        let bytes = codec::encode(envelope)?;
        self.publish_bytes(subject.to_nats(), bytes.into()).await
    }

    /// Publishes into JetStream and waits for the stream to store it (at least once). The
    /// envelope id is the `Nats-Msg-Id`, so a retry inside the duplicate window is stored once.
    pub async fn publish_durable<M: Message>(
        &self,
        subject: &Subject<M>,
        envelope: &Envelope<M>,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        let bytes = codec::encode(envelope)?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.id.to_string().as_str());
        let err = |e: &dyn std::fmt::Display| BusError::Publish {
            subject: subject.to_string(),
            reason: e.to_string(),
        };
        let ack = self
            .jetstream
            .publish_with_headers(subject.to_nats(), headers, bytes.into())
            .await
            .map_err(|e| err(&e))?;
        ack.await.map_err(|e| err(&e))
    }

    /// Sends a request and waits for its typed reply.
    pub async fn request<R: Request>(
        &self,
        subject: &Subject<R>,
        envelope: &Envelope<R>,
        timeout: Duration,
    ) -> Result<Envelope<R::Reply>, BusError> {
        let bytes = codec::encode(envelope)?;
        let err = |reason: String| BusError::Request { subject: subject.to_string(), reason };
        let reply = tokio::time::timeout(timeout, self.client.request(subject.to_nats(), bytes.into()))
            .await
            .map_err(|_| err(format!("no reply within {timeout:?}")))?
            .map_err(|e| err(e.to_string()))?;
        Ok(codec::decode::<R::Reply>(&reply.payload)?)
    }

    /// Answers a request received on a subscription.
    pub async fn reply<R: Request>(&self, to: &Incoming<R>, body: R::Reply) -> Result<(), BusError> {
        let subject = to.reply.clone().ok_or(BusError::NoReplySubject)?;
        let envelope = self.envelope(body).with_trace(to.envelope.trace_id.clone());
        let bytes = codec::encode(&envelope)?;
        self.publish_bytes(subject, bytes.into()).await
    }

    /// Subscribes to a subject or filter. Each item is a decoded message, or the subject and the
    /// reason a message could not be decoded (the caller counts and logs it; it never panics).
    pub async fn subscribe<M: Message>(
        &self,
        filter: &Filter<M>,
    ) -> Result<impl Stream<Item = Result<Incoming<M>, (String, CodecError)>> + Unpin + Send + use<M>, BusError>
    {
        Ok(self.subscribe_live(filter.as_str(), None).await?.map(decode_incoming::<M>))
    }

    /// Like [`Bus::subscribe`], in a queue group: each message goes to one member of the group.
    pub async fn queue_subscribe<M: Message>(
        &self,
        filter: &Filter<M>,
        group: &str,
    ) -> Result<impl Stream<Item = Result<Incoming<M>, (String, CodecError)>> + Unpin + Send + use<M>, BusError>
    {
        Ok(self.subscribe_live(filter.as_str(), Some(group)).await?.map(decode_incoming::<M>))
    }

    /// Subscribes to one concrete subject (a request subject such as an agent's start command).
    pub async fn subscribe_subject<M: Message>(
        &self,
        subject: &Subject<M>,
    ) -> Result<impl Stream<Item = Result<Incoming<M>, (String, CodecError)>> + Unpin + Send + use<M>, BusError>
    {
        Ok(self.subscribe_live(subject.as_str(), None).await?.map(decode_incoming::<M>))
    }

    /// Publishes bytes already encoded on a core subject; the one place publish errors are worded.
    async fn publish_bytes(
        &self,
        subject: async_nats::Subject,
        payload: bytes::Bytes,
    ) -> Result<(), BusError> {
        self.client
            .publish(subject.clone(), payload)
            .await
            .map_err(|e| BusError::Publish { subject: subject.to_string(), reason: e.to_string() })
    }

    /// Subscribes to `subject` (a concrete subject or a filter), in a queue group when given
    /// one, and returns only once the subscription is live (see [`Bus::round_trip`]).
    async fn subscribe_live(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<async_nats::Subscriber, BusError> {
        let subscribed = match group {
            None => self.client.subscribe(subject.to_owned()).await,
            Some(group) => self.client.queue_subscribe(subject.to_owned(), group.to_owned()).await,
        };
        let sub = subscribed
            .map_err(|e| BusError::Subscribe { subject: subject.to_owned(), reason: e.to_string() })?;
        self.round_trip(subject).await?;
        Ok(sub)
    }

    /// Waits until the server has processed everything this connection sent so far. Flushing
    /// only empties our write buffer; a message sent to ourselves and received back proves the
    /// server has registered earlier subscriptions, so a subscription returned by this type is
    /// live: a message another client publishes afterwards reaches it.
    pub async fn round_trip(&self, context: &str) -> Result<(), BusError> {
        let err = |reason: String| BusError::Subscribe { subject: context.to_owned(), reason };
        let inbox = self.client.new_inbox();
        let mut echo = self.client.subscribe(inbox.clone()).await.map_err(|e| err(e.to_string()))?;
        self.client.publish(inbox, bytes::Bytes::new()).await.map_err(|e| err(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(err("connection closed".into())),
            Err(_) => Err(err("server did not confirm the subscription within 10s".into())),
        }
    }

    /// Subscribes to an app's public drain stream (JSON records), as any log consumer would.
    pub async fn subscribe_drain(
        &self,
        subject: &Subject<DrainRecord>,
    ) -> Result<impl Stream<Item = Result<DrainRecord, CodecError>> + Unpin + Send + use<>, BusError> {
        Ok(self.subscribe_live(subject.as_str(), None).await?.map(|msg| DrainRecord::from_json(&msg.payload)))
    }

    /// Publishes one record on an app's public drain stream, as JSON.
    pub async fn publish_drain(
        &self,
        subject: &Subject<DrainRecord>,
        record: &DrainRecord,
    ) -> Result<(), BusError> {
        self.publish_bytes(subject.to_nats(), record.to_json().into()).await
    }
}

fn decode_incoming<M: Message>(msg: async_nats::Message) -> Result<Incoming<M>, (String, CodecError)> {
    let subject = msg.subject.to_string();
    match codec::decode::<M>(&msg.payload) {
        Ok(envelope) => Ok(Incoming { subject, envelope, reply: msg.reply }),
        Err(e) => Err((subject, e)),
    }
}

/// Decodes a message pulled from a JetStream consumer. The caller acks it after handling.
pub fn decode_jetstream<M: Message>(msg: &jetstream::Message) -> Result<Envelope<M>, CodecError> {
    codec::decode::<M>(&msg.payload)
}

/// A message of a JetStream stream that carries several kinds: an enum with a variant per kind,
/// and a `decode` that picks the variant from the header. Any other kind is refused, naming the
/// first as the one expected.
macro_rules! stream_message {
    (
        $(#[$doc:meta])*
        $name:ident { $first:ident($first_message:ty) $(, $variant:ident($message:ty))* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $first(Envelope<$first_message>),
            $($variant(Envelope<$message>),)*
        }

        impl $name {
            pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                match codec::peek_kind(bytes)? {
                    k if k == <$first_message>::KIND as u16 => Ok(Self::$first(codec::decode(bytes)?)),
                    $(k if k == <$message>::KIND as u16 => Ok(Self::$variant(codec::decode(bytes)?)),)*
                    found => Err(CodecError::WrongKind { expected: <$first_message>::KIND, found }),
                }
            }
        }
    };
}

stream_message! {
    /// A message of the desired-state stream, which carries three kinds.
    DesiredChange {
        Release(ReleaseCreated),
        Formation(FormationChanged),
        Destroyed(AppDestroyed),
    }
}

stream_message! {
    /// A message of the builds stream: a build completed or failed.
    BuildOutcome { Completed(BuildCompleted), Failed(BuildFailed) }
}
