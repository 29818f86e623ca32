//! One push after SSH has let it in: the hook's request over the Unix socket, the one-build-
//! per-app lock, the build, its announcement on the bus, and the wait for the release and its
//! rollout. The pusher sees every line as it happens; the hook's exit code decides whether git
//! takes the push.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_schema::messages::{BuildCompleted, BuildFailed, BuildRequested, Stream};
use bus_schema::{AppName, MessageId};
use controller_api::{DeployPhase, HookPush};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedMutexGuard, mpsc};
use tracing::Instrument;
use uuid::Uuid;

use crate::Builder;
use crate::build::{self, Job, Output};
use crate::git;
use crate::hook::{HookFrame, HookRequest, MAX_REQUEST, RefUpdate};
use crate::metrics::Outcome;

/// A push that SSH authorised, waiting for its hook.
#[derive(Debug)]
pub struct PushContext {
    pub app: AppName,
    pub user: String,
    /// The app's settings from the controller (config, URL).
    pub settings: HookPush,
    pub repo: PathBuf,
    /// The app's build lock, held from the start of this push's build until its
    /// `git receive-pack` exits: the next push of the app then sees the branch as this one left it.
    pub lock: tokio::sync::Mutex<Option<OwnedMutexGuard<()>>>,
    /// Cancelled when the pusher hangs up: the build is abandoned (its containers removed).
    pub abandoned: tokio_util::sync::CancellationToken,
}

const ZERO: &str = "0000000000000000000000000000000000000000";

/// Serves the hooks' requests until shutdown.
pub async fn serve_hooks(builder: Arc<Builder>, listener: UnixListener) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a hook connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = builder.shutdown.cancelled() => return,
        };
        let b = builder.clone();
        builder.shutdown.spawn(async move { connection(b, stream).await });
    }
}

async fn connection(builder: Arc<Builder>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    let request = match (&mut read).take(MAX_REQUEST as u64).read_until(b'\n', &mut line).await {
        Ok(_) => serde_json::from_slice::<HookRequest>(&line).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<HookFrame>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write.write_all(&frame.to_line()).await.is_err() {
                // The hook is gone; keep draining so senders never block.
                continue;
            }
            if matches!(frame, HookFrame::Exit(_)) {
                let _ = write.flush().await;
                return;
            }
        }
    });
    let code = match request {
        Err(error) => {
            tracing::warn!(%error, "malformed hook request");
            let _ = tx.send(HookFrame::Out(format!(
                "!     the builder could not read the hook's request: {error}\n"
            )));
            1
        }
        Ok(request) => {
            // The hook sends nothing after its request: the socket closing means the pusher
            // went away (git was killed), and the build is abandoned.
            let mut rest = Vec::new();
            tokio::select! {
                code = handle(&builder, request, &tx) => code,
                _ = read.read_to_end(&mut rest) => {
                    tracing::info!("the pusher went away; abandoning the build");
                    1
                }
            }
        }
    };
    let _ = tx.send(HookFrame::Exit(code));
    drop(tx);
    let _ = writer.await;
}

fn refuse(tx: &mpsc::UnboundedSender<HookFrame>, text: &str) -> i32 {
    for line in text.lines() {
        let _ = tx.send(HookFrame::Out(format!("!     {line}\n")));
    }
    1
}

async fn handle(builder: &Builder, req: HookRequest, tx: &mpsc::UnboundedSender<HookFrame>) -> i32 {
    let Some(push) = builder.push(&req.token) else {
        return refuse(tx, "this push is not one the builder let in; push again");
    };
    tokio::select! {
        code = handle_push(builder, &push, req, tx) => code,
        _ = push.abandoned.cancelled() => {
            tracing::info!(app = %push.app, "the pusher hung up; abandoning the build");
            1
        }
    }
}

async fn handle_push(
    builder: &Builder,
    push: &PushContext,
    req: HookRequest,
    tx: &mpsc::UnboundedSender<HookFrame>,
) -> i32 {
    if !req.quarantine.is_inside(&push.repo) {
        return refuse(tx, "git reported objects outside the app's repository; push refused");
    }
    let update = match req.updates.as_slice() {
        [] => return 0,
        [one] => one.clone(),
        _ => return refuse(tx, "push one branch at a time: `git push deis main`"),
    };
    let branch = update.name.strip_prefix("refs/heads/").unwrap_or(&update.name).to_owned();
    if update.name != "refs/heads/main" && update.name != "refs/heads/master" {
        return refuse(
            tx,
            &format!(
                "Deis builds the main (or master) branch, not {}: `git push deis {branch}:main`",
                update.name
            ),
        );
    }
    if update.new == ZERO || update.new.bytes().all(|b| b == b'0') {
        return refuse(
            tx,
            &format!("deleting {branch} is not supported: the app keeps running its last release"),
        );
    }
    if !git::is_sha(&update.new) || !(git::is_sha(&update.old) || update.old.bytes().all(|b| b == b'0')) {
        return refuse(tx, "git sent a malformed ref update");
    }

    // One build per app at a time; a second push says so and waits its turn.
    let lock = builder.app_lock(&push.app);
    let guard = match lock.clone().try_lock_owned() {
        Ok(g) => g,
        Err(_) => {
            let _ = tx.send(HookFrame::Out(format!(
                "-----> Another push to {} is being built; waiting for it to finish...\n",
                push.app
            )));
            lock.lock_owned().await
        }
    };
    // The branch may have moved while this push waited: building it would release a commit
    // that git then refuses to record.
    let expected = (!update.old.bytes().all(|b| b == b'0')).then(|| update.old.clone());
    match git::branch_head(&builder.config.git, &push.repo, &update.name).await {
        Ok(head) if head == expected => {}
        Ok(head) => {
            let now = head.as_deref().map_or("nothing", |h| h.get(..8).unwrap_or(h)).to_owned();
            return refuse(
                tx,
                &format!(
                    "{branch} moved to {now} while this push waited: another push landed first.\nFetch, merge or rebase, and push again."
                ),
            );
        }
        Err(e) => return refuse(tx, &e.to_string()),
    }
    *push.lock.lock().await = Some(guard);

    let build_id = Uuid::now_v7();
    let span = tracing::info_span!("build", app = %push.app, build_id = %build_id, user = %push.user);
    build_and_release(builder, push, &update, &req.quarantine, build_id, tx).instrument(span).await
}

async fn build_and_release(
    builder: &Builder,
    push: &PushContext,
    update: &RefUpdate,
    quarantine: &git::Quarantine,
    build_id: Uuid,
    tx: &mpsc::UnboundedSender<HookFrame>,
) -> i32 {
    let started = Instant::now();
    let bus = &builder.bus;
    if bus.client().connection_state() != async_nats::connection::State::Connected {
        // Nothing could announce the build or stream its lines: say so now rather than build an
        // image no release would ever use (or wait on a publish until the bus comes).
        tracing::warn!("push refused: the bus is not reachable");
        return refuse(
            tx,
            "The platform's message bus is not reachable right now, so the build could not be announced. Nothing was changed; push again in a moment.",
        );
    }
    let ns = bus.namespace();
    let out = Output::new(push.app.clone(), build_id, bus.clone(), tx.clone());
    let sha = update.new.clone();
    let requested =
        BuildRequested { app: push.app.clone(), build_id, git_sha: sha.clone(), user: push.user.clone() };
    if let Err(error) = bus.publish(&ns.build_requested(&push.app), &bus.envelope(requested)).await {
        tracing::warn!(%error, "build-requested event not published");
    }
    tracing::info!(sha = %sha, "build started");
    out.say(&format!("-----> Building {} at {} (build {build_id})", push.app, &sha[..8])).await;

    let tree = match git::archive(
        &builder.config.git,
        &push.repo,
        &sha,
        quarantine,
        builder.config.max_archive_bytes(),
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            out.line(Stream::Stderr, &format!("!     {e}")).await;
            return out_fail(builder, push, build_id, &sha, &e.to_string(), tx).await;
        }
    };
    let job =
        Job { app: push.app.clone(), build_id, sha: sha.clone(), config: push.settings.config.clone(), tree };
    let built = match build::build(&builder.docker, &builder.config, &job, &out).await {
        Ok(b) => b,
        Err(reason) => {
            out.line(Stream::Stderr, &format!("!     {reason}")).await;
            return out_fail(builder, push, build_id, &sha, &reason, tx).await;
        }
    };
    builder.metrics.observe_build(Outcome::Built, built.took);
    tracing::info!(image = %built.image, took_ms = built.took.as_millis() as u64, "image pushed");
    out.say(&format!("-----> Built and pushed in {:.1}s", built.took.as_secs_f64())).await;

    let completed = BuildCompleted {
        app: push.app.clone(),
        build_id,
        git_sha: sha.clone(),
        user: push.user.clone(),
        kind: built.kind,
        image: built.image.clone(),
        procfile: built.procfile.clone(),
    };
    let envelope = bus.envelope(completed).with_id(MessageId(build_id));
    if let Err(error) = bus.publish_durable(&ns.build_completed(&push.app), &envelope).await {
        out.line(Stream::Stderr, &format!("!     the build could not be announced: {error}")).await;
        return 1;
    }
    let code = wait_for_release(builder, push, build_id, &out).await;
    tracing::info!(code, took_ms = started.elapsed().as_millis() as u64, "push finished");
    code
}

async fn out_fail(
    builder: &Builder,
    push: &PushContext,
    build_id: Uuid,
    sha: &str,
    reason: &str,
    tx: &mpsc::UnboundedSender<HookFrame>,
) -> i32 {
    builder.metrics.observe_build(Outcome::Failed, Duration::ZERO);
    tracing::info!(%reason, "build failed");
    let failed = BuildFailed {
        app: push.app.clone(),
        build_id,
        git_sha: sha.to_owned(),
        user: push.user.clone(),
        reason: reason.to_owned(),
    };
    let bus = &builder.bus;
    let envelope = bus.envelope(failed).with_id(MessageId(build_id));
    if let Err(error) = bus.publish_durable(&bus.namespace().build_failed(&push.app), &envelope).await {
        tracing::warn!(%error, "build-failed event not published");
    }
    refuse(tx, "Build failed: the push was not accepted.")
}

/// Waits for the controller to release the build and the scheduler to report it healthy.
async fn wait_for_release(builder: &Builder, push: &PushContext, build_id: Uuid, out: &Output) -> i32 {
    out.say("-----> Launching...").await;
    let deadline = Instant::now() + Duration::from_secs(builder.config.release_timeout_secs);
    let mut release = None;
    let mut last = String::from("no answer from the controller yet");
    loop {
        match builder.controller.hook_build_status(push.app.as_str(), build_id).await {
            Ok(status) => {
                if let (None, Some(v)) = (release, status.release) {
                    release = Some(v);
                    out.say(&format!("       release v{v} created")).await;
                }
                if let Some(v) = release {
                    match &status.deploy {
                        Some(d) if d.version == v && d.state == DeployPhase::Deployed => {
                            out.say(&format!("       done, {}:v{v} deployed to Deis", push.app)).await;
                            out.say(&format!("\n       {}\n", status.url)).await;
                            return 0;
                        }
                        Some(d) if d.version == v && d.state == DeployPhase::Failed => {
                            let reason = d.reason.as_deref().unwrap_or("no reason given");
                            let serving =
                                d.serving.map(|s| format!("; v{s} is still serving")).unwrap_or_default();
                            out.line(
                                Stream::Stderr,
                                &format!("!     release v{v} failed to start: {reason}{serving}"),
                            )
                            .await;
                            return 1;
                        }
                        Some(d) if d.version > v => {
                            out.say(&format!("       done, v{v} (already followed by v{})", d.version)).await;
                            out.say(&format!("\n       {}\n", status.url)).await;
                            return 0;
                        }
                        Some(d) => last = format!("v{} is {}", d.version, d.state),
                        None => {
                            last =
                                status.deploy_unknown.clone().unwrap_or_else(|| "not rolled out yet".into());
                        }
                    }
                }
            }
            Err(e) if e.is_not_found() => {
                out.line(Stream::Stderr, &format!("!     {e}")).await;
                return 1;
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            let secs = builder.config.release_timeout_secs;
            let text = match release {
                None => format!(
                    "the controller made no release of this build within {secs}s ({last}); see `deis releases`"
                ),
                Some(v) => format!("release v{v} was not healthy within {secs}s ({last}); see `deis ps`"),
            };
            out.line(Stream::Stderr, &format!("!     {text}")).await;
            return 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
