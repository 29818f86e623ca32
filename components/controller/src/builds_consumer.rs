//! Consumes build outcomes from the builder (JetStream, durable, at least once) and turns each
//! completed build into a release. Idempotent on the build id, so a redelivery changes nothing.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::pull;
use bus_schema::messages::{BuildCompleted, BuildFailed, BuildKind};
use bus_schema::streams::{ConsumerId, ConsumerSpec, ensure_consumer};
use bus_schema::{BuildOutcome, Bus};
use futures::StreamExt;
use service_kit::{Backoff, Shutdown};

use crate::ctx::{APP_ROW_COLUMNS, AppRow, Ctx};
use crate::model::Error;
use crate::model::builds::{NewBuild, record_build};

pub async fn run(ctx: Arc<Ctx>, bus: Bus, shutdown: Shutdown) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let spec = bus.namespace().consumer(ConsumerId::ControllerBuilds);
    loop {
        let mut messages = match pull(&ctx, &bus, &spec).await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "cannot pull build outcomes yet");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        backoff.reset();
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => return,
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(error)) => {
                    tracing::warn!(%error, "build consumer stream error; rebinding");
                    break;
                }
                None => break,
            };
            let outcome = match BuildOutcome::decode(&msg.payload) {
                Ok(o) => o,
                Err(error) => {
                    // A message nobody can decode would be redelivered forever: count it and drop it.
                    tracing::error!(subject = %msg.subject, %error, "dropping malformed build outcome");
                    ctx.metrics.bad_bus_messages.inc();
                    let _ = msg.ack().await;
                    continue;
                }
            };
            let result = match outcome {
                BuildOutcome::Completed(env) => completed(&ctx, env.body).await,
                BuildOutcome::Failed(env) => failed(&ctx, env.body).await,
            };
            match result {
                Ok(()) => {
                    ctx.metrics.builds_consumed.inc();
                    let _ = msg.ack().await;
                }
                Err(error) if error.is_permanent() => {
                    tracing::warn!(%error, "build outcome refused; dropping it");
                    let _ = msg.ack().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "handling a build outcome failed; it will be redelivered");
                    let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
                }
            }
        }
    }
}

/// Binds the durable consumer of build outcomes and opens its message stream.
async fn pull(ctx: &Ctx, bus: &Bus, spec: &ConsumerSpec) -> Result<pull::Stream, String> {
    let options = ctx.config.nats.stream_options();
    let consumer = ensure_consumer(bus.jetstream(), bus.namespace(), spec, &options)
        .await
        .map_err(|e| format!("binding the consumer: {e}"))?;
    consumer.messages().await.map_err(|e| format!("opening its stream: {e}"))
}

async fn lock_app(tx: &deadpool_postgres::Transaction<'_>, name: &str) -> Result<AppRow, Error> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {APP_ROW_COLUMNS} FROM apps a JOIN users u ON u.id = a.owner_id
                 WHERE a.name = $1 FOR UPDATE OF a"
            ),
            &[&name],
        )
        .await?
        .ok_or_else(|| Error::not_found(format!("app '{name}'")))?;
    Ok(AppRow::from_row(&row)?)
}

// `instrument`, not a span entered by hand: a guard held across `.await` would lend the span to
// whatever else runs on the thread meanwhile.
#[tracing::instrument(name = "build_completed", skip_all, fields(app = %build.app, build_id = %build.build_id))]
async fn completed(ctx: &Ctx, build: BuildCompleted) -> Result<(), Error> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = lock_app(&tx, build.app.as_str()).await?;
    let new = NewBuild {
        uuid: build.build_id,
        owner: build.user.clone(),
        image: build.image.clone(),
        sha: build.git_sha.clone(),
        procfile: build.procfile.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        kind: match build.kind {
            BuildKind::Buildpack => "buildpack",
            BuildKind::Dockerfile => "dockerfile",
            BuildKind::Image => "image",
        },
    };
    let release = match record_build(ctx, &tx, &app, &new).await {
        Ok(release) => release,
        // Refused for good (a Procfile over the quota, say): the push is told in the app's log
        // as a failed build, and the outcome is done with rather than redelivered forever.
        Err(Error::Invalid(reason)) => {
            drop(tx);
            tracing::warn!(%reason, "build refused");
            return refused(ctx, &build, &reason).await;
        }
        Err(e) => return Err(e),
    };
    tx.commit().await?;
    ctx.relay_wake.notify_one();
    match release {
        Some(r) => tracing::info!(release = r.version, "build released"),
        None => tracing::info!("build seen before; nothing to do"),
    }
    Ok(())
}

/// Records a completed build the model refused, as a failed build in the app's log stream.
async fn refused(ctx: &Ctx, build: &BuildCompleted, reason: &str) -> Result<(), Error> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    lock_app(&tx, build.app.as_str()).await?;
    let sha = format!("{:.8}", build.git_sha);
    let message = format!("build of {sha} by {} failed: it was refused: {reason}", build.user);
    ctx.commit_with_event(tx, build.app.as_str(), &build.user, "build", message).await?;
    ctx.metrics.builds_refused.inc();
    Ok(())
}

#[tracing::instrument(name = "build_failed", skip_all, fields(app = %build.app, build_id = %build.build_id))]
async fn failed(ctx: &Ctx, build: BuildFailed) -> Result<(), Error> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    lock_app(&tx, build.app.as_str()).await?;
    let sha = format!("{:.8}", build.git_sha);
    let message = format!("build of {sha} by {} failed: {}", build.user, build.reason);
    ctx.commit_with_event(tx, build.app.as_str(), &build.user, "build", message).await?;
    Ok(())
}
