//! The outbox: events are written in the transaction of the change they describe, and the relay
//! publishes them afterwards. A crash between commit and publish only delays an event; a crash
//! between publish and marking it published repeats it with the same message id, which
//! JetStream's duplicate window and the consumers drop.

use std::sync::Arc;
use std::time::Duration;

use bus_schema::codec;
use bus_schema::messages::{AppDestroyed, ControllerEvent, FormationChanged, ReleaseCreated};
use bus_schema::{Bus, Envelope, Kind, Message, MessageId, Sender};
use deadpool_postgres::Transaction;
use service_kit::{Backoff, Shutdown};

use crate::ctx::Ctx;
use crate::model::Error;

/// Writes an event into the outbox inside the caller's transaction.
pub async fn enqueue<M: Message>(tx: &Transaction<'_>, sender: &Sender, body: M) -> Result<MessageId, Error> {
    let id = MessageId::new();
    let envelope = Envelope::new(sender.clone(), body).with_id(id);
    let payload = codec::encode(&envelope)?;
    tx.execute(
        "INSERT INTO outbox (id, kind, payload) VALUES ($1, $2, $3)",
        &[&id.0, &(M::KIND as i16), &payload],
    )
    .await?;
    Ok(id)
}

/// Writes a human-readable line for the app's log stream ("alice scaled web=3").
pub async fn event(
    tx: &Transaction<'_>,
    sender: &Sender,
    app: &str,
    actor: &str,
    action: &str,
    message: String,
) -> Result<(), Error> {
    let app = crate::model::validate::app_name(app)?;
    enqueue(tx, sender, ControllerEvent { app, actor: actor.to_owned(), action: action.to_owned(), message })
        .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Db(String),
    #[error("publishing: {0}")]
    Publish(#[from] bus_schema::BusError),
    #[error("outbox row {id} holds an undecodable {kind} event: {source}")]
    Corrupt { id: uuid::Uuid, kind: i16, source: bus_schema::CodecError },
    /// The bus will never take this event (too large for its payload limit, say): retrying it
    /// would block every event after it.
    #[error("{0}")]
    Unpublishable(String),
}

impl From<tokio_postgres::Error> for RelayError {
    fn from(e: tokio_postgres::Error) -> Self {
        RelayError::Db(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for RelayError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RelayError::Db(e.to_string())
    }
}

/// Publishes outbox events until shutdown: at once when woken after a commit, and every second
/// to pick up what another instance or an earlier run left.
pub async fn relay(ctx: Arc<Ctx>, bus: Bus, shutdown: Shutdown) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut last_cleanup = std::time::Instant::now();
    let mut streams_ready = false;
    loop {
        // Durable events need their stream; the relay declares it rather than wait for a
        // consumer to (the scheduler may start later than the controller).
        if !streams_ready {
            streams_ready = ensure_streams(&ctx, &bus).await;
        }
        match publish_pending(&ctx, &bus).await {
            Ok(n) if n > 0 => {
                backoff.reset();
                continue;
            }
            Ok(_) => backoff.reset(),
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, "outbox relay failed; retrying");
                streams_ready = false;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        }
        if last_cleanup.elapsed() > Duration::from_secs(600) {
            last_cleanup = std::time::Instant::now();
            if let Ok(client) = ctx.pool.get().await {
                // Published events are kept a day, for debugging; then they go.
                // Set-aside ones stay a week, for operators to look into.
                let _ = client
                    .execute(
                        "DELETE FROM outbox WHERE published < now() - interval '1 day'
                         AND (set_aside IS NULL OR published < now() - interval '7 days')",
                        &[],
                    )
                    .await;
            }
        }
        tokio::select! {
            _ = ctx.relay_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn ensure_streams(ctx: &Ctx, bus: &Bus) -> bool {
    let mut ok = true;
    for id in bus_schema::streams::StreamId::ALL {
        let spec = bus.namespace().stream(id);
        if let Err(error) =
            bus_schema::streams::ensure_stream(bus.jetstream(), &spec, &ctx.config.nats.stream_options())
                .await
        {
            tracing::warn!(%error, "cannot declare a stream yet");
            ok = false;
        }
    }
    ok
}

/// Publishes one batch of pending events in order. Returns how many went out.
async fn publish_pending(ctx: &Ctx, bus: &Bus) -> Result<usize, RelayError> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    // One relay at a time across all controllers keeps events in commit order.
    let leader: bool =
        tx.query_one("SELECT pg_try_advisory_xact_lock(7415002) AS leader", &[]).await?.try_get("leader")?;
    if !leader {
        return Ok(0);
    }
    let rows = tx
        .query("SELECT id, kind, payload FROM outbox WHERE published IS NULL ORDER BY seq LIMIT 100", &[])
        .await?;
    // Every row is read before any is published: a row that cannot be read fails the batch
    // before anything goes out, rather than after events that would then not be marked.
    let pending_rows = rows
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<_, uuid::Uuid>("id")?,
                row.try_get::<_, i16>("kind")?,
                row.try_get::<_, Vec<u8>>("payload")?,
            ))
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let mut done = Vec::with_capacity(pending_rows.len());
    for (id, kind, payload) in pending_rows {
        match publish_one(bus, kind, &payload).await {
            Ok(()) => done.push(id),
            Err(RelayError::Corrupt { id: _, kind, source }) => {
                // A row this build cannot decode would block the outbox forever: set it aside.
                tracing::error!(%id, kind, %source, "dropping undecodable outbox event");
                ctx.metrics.bad_bus_messages.inc();
                done.push(id);
            }
            Err(RelayError::Unpublishable(reason)) => {
                // Likewise an event the bus will never take; the rows after it, other apps'
                // among them, go on.
                set_aside(ctx, &tx, id, kind, &payload, &reason).await?;
            }
            Err(e) => {
                // Mark what went out so far; the rest is retried.
                mark(&tx, &done).await?;
                tx.commit().await?;
                return Err(e);
            }
        }
    }
    mark(&tx, &done).await?;
    let pending: i64 = tx
        .query_one("SELECT count(*) AS pending FROM outbox WHERE published IS NULL", &[])
        .await?
        .try_get("pending")?;
    tx.commit().await?;
    ctx.metrics.events_published.inc_by(done.len() as u64);
    ctx.metrics.outbox_pending.set(pending);
    Ok(done.len())
}

async fn mark(tx: &Transaction<'_>, ids: &[uuid::Uuid]) -> Result<(), RelayError> {
    if !ids.is_empty() {
        tx.execute("UPDATE outbox SET published = now() WHERE id = ANY($1)", &[&ids]).await?;
    }
    Ok(())
}

/// Marks an event the bus will never take as set aside (skipped from now on), counts it, and
/// tells its app's log stream, in the relay's transaction.
async fn set_aside(
    ctx: &Ctx,
    tx: &Transaction<'_>,
    id: uuid::Uuid,
    kind: i16,
    payload: &[u8],
    reason: &str,
) -> Result<(), RelayError> {
    let what = describe(kind, payload);
    tracing::error!(%id, kind, app = ?what.as_ref().map(|w| &w.0), %reason, "outbox event set aside: it cannot be published");
    tx.execute("UPDATE outbox SET published = now(), set_aside = $2 WHERE id = $1", &[&id, &reason]).await?;
    ctx.metrics.events_set_aside.inc();
    if let Some((app, what)) = what {
        let message = format!("{what} could not be sent to the platform and was set aside: {reason}");
        let notice = ControllerEvent { app, actor: "deis".to_owned(), action: "error".to_owned(), message };
        enqueue(tx, &ctx.sender, notice).await.map_err(|e| RelayError::Db(e.to_string()))?;
    }
    Ok(())
}

/// The app an outbox event is about, and what it is in words.
fn describe(kind: i16, payload: &[u8]) -> Option<(bus_schema::AppName, String)> {
    match kind {
        k if k == Kind::ReleaseCreated as i16 => {
            let env: Envelope<ReleaseCreated> = codec::decode(payload).ok()?;
            let v = env.body.release.version;
            Some((env.body.release.app, format!("release v{v} (it will not run)")))
        }
        k if k == Kind::FormationChanged as i16 => {
            let env: Envelope<FormationChanged> = codec::decode(payload).ok()?;
            Some((env.body.app, "a scale change".to_owned()))
        }
        k if k == Kind::AppDestroyed as i16 => {
            let env: Envelope<AppDestroyed> = codec::decode(payload).ok()?;
            Some((env.body.app, "the app's destruction".to_owned()))
        }
        k if k == Kind::ControllerEvent as i16 => {
            let env: Envelope<ControllerEvent> = codec::decode(payload).ok()?;
            Some((env.body.app, format!("a log event ({})", env.body.action)))
        }
        _ => None,
    }
}

/// Whether a publish error can never go away for the same event: the payload is over the
/// server's limit (async-nats checks it before sending) or the stream refuses its size.
fn permanent(error: &bus_schema::BusError) -> bool {
    match error {
        bus_schema::BusError::Codec(_) => true,
        bus_schema::BusError::Publish { reason, .. } => {
            let reason = reason.to_ascii_lowercase();
            reason.contains("exceed") && (reason.contains("payload") || reason.contains("size"))
        }
        _ => false,
    }
}

async fn publish_one(bus: &Bus, kind: i16, payload: &[u8]) -> Result<(), RelayError> {
    let ns = bus.namespace();
    let corrupt = |source| RelayError::Corrupt { id: uuid::Uuid::nil(), kind, source };
    // What goes out is this payload re-encoded (the same bytes) plus a message-id header; over
    // the server's limit it can never go, and is not even tried.
    let max = bus.client().server_info().max_payload;
    if max > 0 && payload.len() + 256 > max {
        return Err(RelayError::Unpublishable(format!(
            "the event is {} bytes; the bus takes at most {max}",
            payload.len()
        )));
    }
    let classify = |e: bus_schema::BusError| {
        if permanent(&e) { RelayError::Unpublishable(e.to_string()) } else { RelayError::Publish(e) }
    };
    match kind {
        k if k == Kind::ReleaseCreated as i16 => {
            let env: Envelope<ReleaseCreated> = codec::decode(payload).map_err(corrupt)?;
            bus.publish_durable(&ns.release_created(&env.body.release.app), &env).await.map_err(classify)?;
        }
        k if k == Kind::FormationChanged as i16 => {
            let env: Envelope<FormationChanged> = codec::decode(payload).map_err(corrupt)?;
            bus.publish_durable(&ns.formation_changed(&env.body.app), &env).await.map_err(classify)?;
        }
        k if k == Kind::AppDestroyed as i16 => {
            let env: Envelope<AppDestroyed> = codec::decode(payload).map_err(corrupt)?;
            bus.publish_durable(&ns.app_destroyed(&env.body.app), &env).await.map_err(classify)?;
        }
        k if k == Kind::ControllerEvent as i16 => {
            let env: Envelope<ControllerEvent> = codec::decode(payload).map_err(corrupt)?;
            bus.publish(&ns.controller_events(&env.body.app), &env).await.map_err(classify)?;
        }
        other => {
            return Err(corrupt(bus_schema::CodecError::WrongKind {
                expected: Kind::ControllerEvent,
                found: other as u16,
            }));
        }
    }
    Ok(())
}
