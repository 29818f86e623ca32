//! From the bus to history, drains and the public drain stream. One dispatcher reads every line
//! and hands it to its app's task through a bounded queue; a full queue drops that app's new
//! lines (counted, then announced in the app's stream) instead of slowing the dispatcher, so an
//! app flooding its output cannot starve the others. Each app task appends batches to the app's
//! history and, on the one instance that owns the app, publishes them as JSON on the app's
//! public drain subject and hands them to the app's drains. The other instances keep the app's
//! newest lines for a few seconds: one that takes the app over from an instance that died sends
//! them first, so lines forwarding missed while the dead instance's lease ran out still reach
//! the drains (at least once: a drain may see some of them twice).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bus_schema::Bus;
use bus_schema::messages::{DrainRecord, LogLine};
use bus_schema::names::AppName;
use service_kit::Shutdown;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::LoggerConfig;
use crate::drains::{Drain, DrainShared, DrainUrl};
use crate::metrics::Metrics;
use crate::ownership::Ownership;
use crate::store::{self, AppLog};

/// Each app's drains as etcd lists them: drain id → URL.
pub type DrainTable = HashMap<AppName, BTreeMap<String, DrainUrl>>;

/// What every app task shares.
#[derive(Debug)]
pub struct Shared {
    pub config: LoggerConfig,
    pub bus: Bus,
    pub ownership: Ownership,
    pub drains: Arc<ArcSwap<DrainTable>>,
    pub drain_shared: DrainShared,
    pub metrics: Metrics,
    pub shutdown: Shutdown,
}

struct AppHandle {
    tx: mpsc::Sender<LogLine>,
    dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// Owned by the dispatcher task: no locks on the hot path.
pub struct Dispatcher {
    shared: Arc<Shared>,
    apps: HashMap<AppName, AppHandle>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("apps", &self.apps.len()).finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, apps: HashMap::new() }
    }

    /// Takes one line: cuts it if overlong and queues it for its app without waiting.
    pub fn ingest(&mut self, mut line: LogLine) {
        self.shared.metrics.lines_in.inc();
        cut_overlong(&mut line, self.shared.config.max_line_bytes);
        let handle = match self.apps.get(&line.app) {
            Some(handle) if !handle.tx.is_closed() => handle,
            _ => {
                let handle = self.spawn_app(line.app.clone());
                self.apps.insert(line.app.clone(), handle);
                &self.apps[&line.app]
            }
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = handle.tx.try_send(line) {
            handle.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.lines_dropped.inc();
        }
    }

    fn spawn_app(&self, app: AppName) -> AppHandle {
        let (tx, rx) = mpsc::channel(self.shared.config.app_queue_lines.max(16));
        let dropped = Arc::new(AtomicU64::new(0));
        let span = tracing::info_span!("app", %app);
        let task = tokio::spawn(app_task(app, rx, dropped.clone(), self.shared.clone()).instrument(span));
        AppHandle { tx, dropped, task }
    }

    /// The app was destroyed: its task finishes what it holds, then its history goes.
    pub async fn remove(&mut self, app: &AppName) {
        if let Some(handle) = self.apps.remove(app) {
            drop(handle.tx);
            let _ = handle.task.await;
        }
        let root = self.shared.config.data_dir.clone();
        let app = app.clone();
        let result = tokio::task::spawn_blocking(move || store::remove_app(&root, &app).map(|()| app)).await;
        match result {
            Ok(Ok(app)) => tracing::info!(%app, "app destroyed: its history and drains are gone"),
            Ok(Err(error)) => tracing::warn!(%error, "removing a destroyed app's history failed"),
            Err(error) => tracing::warn!(%error, "removing a destroyed app's history panicked"),
        }
    }

    /// Lets every app task finish what is queued (shutdown).
    pub async fn close(self) {
        for (_, handle) in self.apps {
            drop(handle.tx);
            let _ = handle.task.await;
        }
    }
}

/// Cuts a message longer than `max` bytes at a character boundary and says how much went.
pub fn cut_overlong(line: &mut LogLine, max: usize) {
    if line.message.len() <= max {
        return;
    }
    let mut end = max;
    while !line.message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = line.message.len() - end;
    line.message.truncate(end);
    line.message.push_str(&format!(" … [cut {cut} bytes]"));
}

fn notice(app: &AppName, lost: u64) -> LogLine {
    let message = format!(
        "Error L10 (output buffer overflow): {lost} lines dropped: the app logged faster than the \
         logger could take its lines"
    );
    crate::logger_notice(app, message)
}

async fn app_task(
    app: AppName,
    mut rx: mpsc::Receiver<LogLine>,
    dropped: Arc<AtomicU64>,
    shared: Arc<Shared>,
) {
    let root: PathBuf = shared.config.data_dir.clone();
    let mut log = match AppLog::open(&root, &app, shared.config.retention.clone()) {
        Ok(log) => Some(log),
        Err(error) => {
            // Forwarding goes on without history rather than stopping the app's stream.
            tracing::error!(%app, %error, "cannot open the app's history; forwarding only");
            None
        }
    };
    let subject = shared.bus.namespace().drain(&app);
    let mut drains: BTreeMap<String, (DrainUrl, Drain)> = BTreeMap::new();
    let mut batch = Vec::with_capacity(1024);
    let mut held = Held::new(
        shared.config.takeover_replay_lines,
        Duration::from_secs(shared.config.takeover_replay_secs),
    );
    // `None` until the first batch: an instance that starts owning an app has nothing to resend.
    let mut owned_before: Option<bool> = None;
    loop {
        if rx.recv_many(&mut batch, 1024).await == 0 {
            break;
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push(notice(&app, lost));
        }
        if let Some(log) = log.as_mut() {
            // Appends of a batch to the page cache take microseconds; no need to leave the task.
            if let Err(error) = log.append(&batch) {
                shared.metrics.store_errors.inc();
                tracing::warn!(%app, %error, "appending to the app's history failed");
            }
        }
        let owned = shared.ownership.owns(&app);
        reconcile_drains(&app, owned, &shared, &mut drains);
        let now = Instant::now();
        if owned {
            // Another instance forwarded this app until now, and it has left: for all we know
            // it died some seconds before its lease ran out.
            let resend = if owned_before == Some(false) { held.take(now) } else { Vec::new() };
            held.clear();
            if !resend.is_empty() {
                tracing::info!(%app, lines = resend.len(), "took the app over: resending its recent lines");
                shared.metrics.lines_resent.inc_by(resend.len() as u64);
            }
            for line in resend.iter().chain(batch.iter()) {
                if let Err(error) = shared.bus.publish_drain(&subject, &DrainRecord::from_line(line)).await {
                    shared.metrics.publish_errors.inc();
                    tracing::debug!(%app, %error, "publishing on the drain stream failed");
                }
                for (_, drain) in drains.values() {
                    drain.send(line);
                }
            }
            shared.metrics.lines_forwarded.inc_by((resend.len() + batch.len()) as u64);
            batch.clear();
        } else {
            held.keep(now, batch.drain(..));
        }
        owned_before = Some(owned);
    }
    for (_, (_, drain)) in std::mem::take(&mut drains) {
        drain.stop().await;
    }
}

/// An app's newest lines on an instance that does not forward it: at most `cap` of them,
/// received within `window`.
struct Held {
    lines: VecDeque<(Instant, LogLine)>,
    cap: usize,
    window: Duration,
}

impl Held {
    fn new(cap: usize, window: Duration) -> Self {
        Self { lines: VecDeque::new(), cap, window }
    }

    fn keep(&mut self, now: Instant, lines: impl Iterator<Item = LogLine>) {
        if self.cap == 0 {
            return;
        }
        for line in lines {
            if self.lines.len() == self.cap {
                self.lines.pop_front();
            }
            self.lines.push_back((now, line));
        }
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        while self.lines.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.window) {
            self.lines.pop_front();
        }
    }

    /// The lines still within the window, oldest first; nothing is kept.
    fn take(&mut self, now: Instant) -> Vec<LogLine> {
        self.prune(now);
        self.lines.drain(..).map(|(_, line)| line).collect()
    }

    fn clear(&mut self) {
        self.lines.clear();
    }
}

/// Makes the running drains equal what etcd lists for the app, or none when another instance
/// owns it.
fn reconcile_drains(
    app: &AppName,
    owned: bool,
    shared: &Shared,
    running: &mut BTreeMap<String, (DrainUrl, Drain)>,
) {
    let table = shared.drains.load();
    let empty = BTreeMap::new();
    let wanted = if owned { table.get(app).unwrap_or(&empty) } else { &empty };
    let stale: Vec<String> = running
        .iter()
        .filter(|(id, (url, _))| wanted.get(*id) != Some(url))
        .map(|(id, _)| id.clone())
        .collect();
    for id in stale {
        if let Some((url, drain)) = running.remove(&id) {
            tracing::info!(%app, drain = %id, %url, "drain stopped");
            // A drain whose receiver is down may take seconds to give up; the app's lines
            // must not wait for it.
            tokio::spawn(drain.stop());
        }
    }
    for (id, url) in wanted {
        if !running.contains_key(id) {
            tracing::info!(%app, drain = %id, %url, "drain started");
            let drain = Drain::spawn(
                app.clone(),
                id.clone(),
                url.clone(),
                shared.drain_shared.clone(),
                &shared.shutdown,
            );
            running.insert(id.clone(), (url.clone(), drain));
        }
    }
}

#[cfg(test)]
mod tests {
    use bus_schema::Timestamp;
    use bus_schema::messages::{LogSource, Stream};

    use super::*;

    fn numbered(n: u64) -> LogLine {
        LogLine {
            app: AppName::parse("a").unwrap(),
            time: Timestamp(0),
            source: LogSource::Router,
            stream: Stream::Stdout,
            node: None,
            seq: n,
            message: format!("line {n}"),
        }
    }

    #[test]
    fn held_lines_are_the_newest_within_the_window_and_are_taken_once() {
        let t0 = Instant::now();
        let mut held = Held::new(3, Duration::from_secs(10));
        held.keep(t0, (0..2).map(numbered));
        held.keep(t0 + Duration::from_secs(8), (2..4).map(numbered));
        // The cap keeps the newest three.
        let seqs = |v: Vec<LogLine>| v.iter().map(|l| l.seq).collect::<Vec<_>>();
        assert_eq!(seqs(held.take(t0 + Duration::from_secs(9))), [1, 2, 3]);
        assert!(held.take(t0 + Duration::from_secs(9)).is_empty(), "taken once");
        held.keep(t0, (0..2).map(numbered));
        held.keep(t0 + Duration::from_secs(8), (2..3).map(numbered));
        // Past the window the older ones go.
        assert_eq!(seqs(held.take(t0 + Duration::from_secs(12))), [2]);
        let mut off = Held::new(0, Duration::from_secs(10));
        off.keep(t0, (0..2).map(numbered));
        assert!(off.take(t0).is_empty(), "0 turns it off");
    }

    #[test]
    fn overlong_lines_are_cut_on_a_character_boundary_with_a_marker() {
        let mut line = LogLine {
            app: AppName::parse("a").unwrap(),
            time: Timestamp(0),
            source: LogSource::Router,
            stream: Stream::Stdout,
            node: None,
            seq: 0,
            message: "é".repeat(10),
        };
        cut_overlong(&mut line, 5);
        assert_eq!(line.message, "éé … [cut 16 bytes]");
        let mut short = line.clone();
        short.message = "ok".into();
        cut_overlong(&mut short, 5);
        assert_eq!(short.message, "ok");
    }
}
