//! Log drains: each app's lines sent on to receivers its owner names with `deis drains:add`,
//! over syslog (RFC 5424, octet-counted, TCP or TLS) or HTTPS (Logplex frames). Every drain is
//! one task with a bounded buffer, so a slow or absent receiver costs memory up to a limit and
//! never holds up the pipeline; what does not fit is counted and reported in the stream itself.

mod buffer;
mod format;
mod http;
mod syslog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bus_schema::messages::LogLine;
use bus_schema::names::AppName;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use self::format::rfc5424;
use buffer::{Buffer, Entry, Pushed};
pub use bus_schema::drain_url::{DrainUrl, DrainUrlError};

/// How long a stopped drain may go on delivering what it still holds.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The first retry delay after a failure; later ones double up to `retry_max_secs`.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Logplex's own limit on messages in one frame.
const LOGPLEX_MAX_BATCH: usize = 1000;

/// Settings of every drain (part of the logger's config, section `drains`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainSettings {
    /// Lines each drain holds while its receiver is slow or down; past this, lines are dropped
    /// and counted.
    pub buffer_lines: usize,
    /// Most lines in one HTTPS batch (and one syslog write); Logplex allows at most 1000.
    pub batch_lines: usize,
    /// HTTPS: how long to wait for a batch to fill before sending what there is.
    pub batch_wait_ms: u64,
    /// TCP connect plus TLS handshake (syslog), or TCP connect (HTTPS), in milliseconds.
    pub connect_timeout_ms: u64,
    /// The longest delay between retries of a failing drain.
    pub retry_max_secs: u64,
    /// PEM roots trusted besides webpki-roots (tests, private CAs).
    pub extra_ca_file: Option<PathBuf>,
    /// The RFC 5424 HOSTNAME field of every message.
    pub hostname: String,
    /// Where drains may connect: loopback, link-local, private and the platform's networks are
    /// refused (checked on the address actually connected to) unless allowed here.
    pub outbound: service_kit::OutboundPolicy,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            buffer_lines: 10_000,
            batch_lines: 500,
            batch_wait_ms: 200,
            connect_timeout_ms: 5_000,
            retry_max_secs: 30,
            extra_ca_file: None,
            hostname: "deis".to_owned(),
            outbound: service_kit::OutboundPolicy::default(),
        }
    }
}

impl DrainSettings {
    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    fn backoff(&self) -> service_kit::Backoff {
        let max = Duration::from_secs(self.retry_max_secs).max(RETRY_INITIAL);
        service_kit::Backoff::new(RETRY_INITIAL, max)
    }

    fn batch_lines(&self) -> usize {
        self.batch_lines.clamp(1, LOGPLEX_MAX_BATCH)
    }
}

/// Why the drains' shared parts could not be built (a config error: the logger does not start).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("cannot read the drains' extra CA file {path}: {source}")]
    CaFile { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("the drains' extra CA file {path} holds no certificate")]
    CaFileEmpty { path: PathBuf },
    #[error("a certificate in the drains' extra CA file {path} is not usable as a root: {source}")]
    CaCert { path: PathBuf, source: rustls::Error },
    #[error("building the drains' TLS config: {0}")]
    Tls(#[from] rustls::Error),
    #[error("building the drains' HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("the drains' outbound policy: {0}")]
    Outbound(#[from] service_kit::OutboundError),
}

/// What every drain shares, built once from [`DrainSettings`]: the TLS config with its roots
/// and an HTTP client (its connection pool is shared too). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DrainShared {
    settings: Arc<DrainSettings>,
    tls: Arc<rustls::ClientConfig>,
    http: reqwest::Client,
    /// Every drain connection goes through it (syslog at connect, HTTP in the client's resolver).
    outbound: service_kit::Outbound,
}

impl DrainShared {
    pub fn new(settings: &DrainSettings) -> Result<DrainShared, DrainError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &settings.extra_ca_file {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|source| DrainError::CaFile { path: path.clone(), source })?;
            if certs.is_empty() {
                return Err(DrainError::CaFileEmpty { path: path.clone() });
            }
            for cert in certs {
                roots.add(cert).map_err(|source| DrainError::CaCert { path: path.clone(), source })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http_tls = tls.clone();
        http_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let outbound = service_kit::Outbound::new(&settings.outbound)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(http_tls)
            .connect_timeout(settings.connect_timeout())
            .timeout(http::REQUEST_TIMEOUT)
            .user_agent(http::USER_AGENT);
        // A drain URL names its receiver; a redirect elsewhere is not followed with the logs
        // (0 redirects), and every name is resolved through the outbound check.
        let http = outbound.http_client(client, 0).build().map_err(DrainError::Http)?;
        Ok(DrainShared { settings: Arc::new(settings.clone()), tls: Arc::new(tls), http, outbound })
    }

    pub fn settings(&self) -> &DrainSettings {
        &self.settings
    }
}

/// A drain's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Lines handed to the receiver (written to the syslog connection, or in a batch answered 2xx).
    pub delivered: u64,
    /// Lines dropped because the buffer was full (or still buffered when a stopped drain gave up).
    pub dropped: u64,
    /// Lines waiting in the buffer.
    pub buffered: u64,
}

/// What the drain's task and its handle share.
struct Inner {
    app: AppName,
    id: String,
    url: DrainUrl,
    buffer: Buffer,
    /// Woken on each new line.
    wake: Notify,
    /// Cancelled when the drain is stopped or the logger shuts down.
    stop: CancellationToken,
}

impl Inner {
    /// The next entries to deliver, up to `max`, still in the buffer. With `linger`, waits that
    /// long after the first entry arrives for the batch to fill. `None` once stopping with
    /// nothing left.
    async fn next_batch(&self, max: usize, linger: Option<Duration>) -> Option<Vec<Entry>> {
        let mut send_at: Option<tokio::time::Instant> = None;
        loop {
            let stopping = self.stop.is_cancelled();
            let waiting = self.buffer.len();
            if waiting == 0 {
                if stopping {
                    return None;
                }
                send_at = None;
            } else {
                let due = match (linger, send_at) {
                    (None, _) => true,
                    (Some(_), Some(at)) => tokio::time::Instant::now() >= at,
                    (Some(linger), None) => {
                        send_at = Some(tokio::time::Instant::now() + linger);
                        linger.is_zero()
                    }
                };
                if due || stopping || waiting >= max {
                    let batch = self.buffer.peek(max);
                    if !batch.is_empty() {
                        return Some(batch);
                    }
                }
            }
            let linger_over = async {
                match send_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.stop.cancelled(), if !stopping => {}
                _ = linger_over => {}
            }
        }
    }
}

/// A running drain: a task owning a bounded buffer and a connection with backoff.
pub struct Drain {
    inner: Arc<Inner>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("app", &self.inner.app)
            .field("id", &self.inner.id)
            .field("url", &format_args!("{}", self.inner.url))
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drain {
    /// Starts the drain's task. `shared` is built once by the logger from DrainSettings
    /// (the TLS config with roots, an HTTP client ...), cheap to clone.
    pub fn spawn(
        app: AppName,
        id: String,
        url: DrainUrl,
        shared: DrainShared,
        shutdown: &service_kit::Shutdown,
    ) -> Drain {
        let inner = Arc::new(Inner {
            buffer: Buffer::new(app.clone(), shared.settings.buffer_lines),
            app,
            id,
            url,
            wake: Notify::new(),
            stop: shutdown.token().child_token(),
        });
        let span = tracing::info_span!(
            "drain",
            app = %inner.app,
            drain = %inner.id,
            url = %inner.url,
        );
        let task = shutdown.spawn(run(inner.clone(), shared).instrument(span));
        Drain { inner, task: Some(task) }
    }

    /// Queues one line; never blocks, never fails: when the buffer is full the line is counted as
    /// dropped, and when the drain delivers again it first sends one notice line saying how many
    /// ("Error L10 (output buffer overflow): N messages dropped since <time>.").
    pub fn send(&self, line: &LogLine) {
        match self.inner.buffer.push(line) {
            Pushed::Queued => self.inner.wake.notify_one(),
            Pushed::DroppedFirst => tracing::warn!(
                app = %self.inner.app,
                drain = %self.inner.id,
                url = %self.inner.url,
                "drain buffer full: dropping lines until the receiver catches up"
            ),
            Pushed::Dropped => {}
        }
    }

    pub fn stats(&self) -> DrainStats {
        self.inner.buffer.stats()
    }

    /// Stops the task (used when the drain is removed); lines still buffered are given up to
    /// ~2 s to go out.
    pub async fn stop(mut self) {
        self.inner.stop.cancel();
        if let Some(task) = self.task.take() {
            // The task bounds itself by STOP_GRACE; the margin only covers a task that is slow to
            // notice, and aborting then is safe: it holds nothing that needs closing cleanly.
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_GRACE + Duration::from_secs(1), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Drain {
    /// A drain dropped without `stop` still stops (with the same grace) rather than running on.
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

/// The drain's task: delivers until stopped, then for at most [`STOP_GRACE`].
async fn run(inner: Arc<Inner>, shared: DrainShared) {
    tracing::debug!("drain running");
    let deliver = async {
        match &inner.url {
            DrainUrl::Syslog { host, port } => syslog::run(&inner, &shared, host, *port, false).await,
            DrainUrl::SyslogTls { host, port } => syslog::run(&inner, &shared, host, *port, true).await,
            DrainUrl::Http(url) => http::run(&inner, &shared, url).await,
        }
    };
    let grace_over = async {
        inner.stop.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        () = deliver => tracing::debug!(stats = ?inner.buffer.stats(), "drain stopped"),
        () = grace_over => {
            let (lines, gap) = inner.buffer.abandon();
            tracing::warn!(
                lines,
                already_dropped = gap,
                "drain stopped before its receiver took every buffered line; those are given up"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use bus_schema::envelope::Timestamp;
    use bus_schema::messages::{LogSource, Stream};
    use bus_schema::names::ProcessType;

    use super::*;

    fn inner(capacity: usize) -> Inner {
        let app = AppName::parse("myapp").unwrap();
        Inner {
            buffer: Buffer::new(app.clone(), capacity),
            app,
            id: "d1".into(),
            url: DrainUrl::parse("syslog://127.0.0.1:514").unwrap(),
            wake: Notify::new(),
            stop: CancellationToken::new(),
        }
    }

    fn push(inner: &Inner, n: u64) {
        let line = LogLine {
            app: inner.app.clone(),
            time: Timestamp::now(),
            source: LogSource::App { process_type: ProcessType::parse("web").unwrap(), index: 1 },
            stream: Stream::Stdout,
            node: None,
            seq: n,
            message: format!("line {n}"),
        };
        inner.buffer.push(&line);
        inner.wake.notify_one();
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_waits_for_the_linger_and_a_full_one_does_not() {
        let inner = inner(100);
        let linger = Duration::from_millis(200);
        push(&inner, 0);
        let start = tokio::time::Instant::now();
        let batch = inner.next_batch(3, Some(linger)).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert!(start.elapsed() >= linger);

        let start = tokio::time::Instant::now();
        for n in 1..=4 {
            push(&inner, n);
        }
        let batch = inner.next_batch(3, Some(linger)).await.unwrap();
        // Still the same first line: nothing was removed yet.
        assert_eq!(batch.iter().map(|e| e.line.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        inner.buffer.remove_delivered(3);

        // Lines arriving while the batch lingers join it.
        let filler = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            push(&inner, 5);
        };
        let (batch, ()) = tokio::join!(inner.next_batch(3, Some(linger)), filler);
        assert_eq!(batch.unwrap().iter().map(|e| e.line.seq).collect::<Vec<_>>(), [3, 4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn once_stopped_what_is_left_goes_at_once_and_then_nothing() {
        let inner = inner(100);
        push(&inner, 0);
        inner.stop.cancel();
        let start = tokio::time::Instant::now();
        let batch = inner.next_batch(10, Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        inner.buffer.remove_delivered(1);
        assert!(inner.next_batch(10, None).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_drain_wakes_on_a_line_or_on_stop() {
        let inner = Arc::new(inner(100));
        let waiter = tokio::spawn({
            let inner = inner.clone();
            async move { inner.next_batch(10, None).await.map(|b| b.len()) }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        push(&inner, 0);
        assert_eq!(waiter.await.unwrap(), Some(1));
        inner.buffer.remove_delivered(1);

        let waiter = tokio::spawn({
            let inner = inner.clone();
            async move { inner.next_batch(10, None).await.map(|b| b.len()) }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        inner.stop.cancel();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
