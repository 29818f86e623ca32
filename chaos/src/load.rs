//! The load generator: GETs through the front door at a fixed rate per app, bounded in count and
//! time, each on a new connection (as many independent clients would), recording every outcome.
//!
//! A GET whose connection closes or resets before any byte of an answer is retried once on a new
//! connection, as browsers and HTTP libraries do for idempotent requests (RFC 9110 §9.2.2); the
//! retry is counted and reported. A timeout is never retried: it is a failed request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One app under load.
#[derive(Debug, Clone)]
pub struct Target {
    pub app: String,
    /// The Host header that names the app at the front door.
    pub host: String,
}

/// What to send, and the bounds.
#[derive(Debug, Clone)]
pub struct Plan {
    pub front: SocketAddr,
    pub targets: Vec<Target>,
    /// Requests per second, per target.
    pub rate: u32,
    /// The load stops at whichever bound comes first.
    pub max_duration: Duration,
    pub max_requests_per_target: u64,
    /// Per request, the retry included.
    pub timeout: Duration,
    /// Goes into every path (`/chaos/<tag>/<seq>`), so the app's log lines can be matched back.
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// Any other status.
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// No answer: the connection failed (after the one retry, where one was allowed).
    Error(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub target: usize,
    pub seq: u64,
    /// When the request was sent, since the load started.
    pub sent: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    /// The container that answered (the app says so in its body).
    pub container: Option<String>,
    pub retried: bool,
}

impl Sample {
    pub fn failed(&self) -> bool {
        self.outcome != Outcome::Ok
    }
}

/// A running load; `stop` ends it and returns every sample.
#[derive(Debug)]
pub struct Load {
    stop: CancellationToken,
    started: Instant,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Load {
    pub fn start(plan: Plan) -> Self {
        let stop = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(run(Arc::new(plan), started, stop.clone()));
        Self { stop, started, task }
    }

    /// The instant the load started: the zero of every sample's `sent`.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

async fn run(plan: Arc<Plan>, started: Instant, stop: CancellationToken) -> Vec<Sample> {
    let mut tasks = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / f64::from(plan.rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = started + plan.max_duration;
    let mut seq = 0u64;
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline.into()) => break,
            _ = tick.tick() => {}
        }
        if seq >= plan.max_requests_per_target {
            break;
        }
        for target in 0..plan.targets.len() {
            let plan = plan.clone();
            tasks.spawn(async move { one(&plan, target, seq, started).await });
        }
        seq += 1;
        // Collect what finished, so a long run does not hold every task.
        while let Some(done) = tasks.try_join_next() {
            if let Ok(sample) = done {
                samples.push(sample);
            }
        }
    }
    // Every request has its own timeout: waiting for the rest is bounded.
    while let Some(done) = tasks.join_next().await {
        if let Ok(sample) = done {
            samples.push(sample);
        }
    }
    samples.sort_by_key(|s| (s.sent, s.target));
    samples
}

async fn one(plan: &Plan, target: usize, seq: u64, started: Instant) -> Sample {
    let t = &plan.targets[target];
    let sent = started.elapsed();
    let begun = Instant::now();
    let path = format!("/chaos/{}/{}", plan.tag, seq);
    let attempt = async {
        match get(plan.front, &t.host, &path).await {
            Err(Failure::BeforeAnswer(_)) => (get(plan.front, &t.host, &path).await, true),
            other => (other, false),
        }
    };
    let (outcome, container, retried) = match tokio::time::timeout(plan.timeout, attempt).await {
        Err(_) => (Outcome::Timeout, None, false),
        Ok((Ok((status, body)), retried)) => {
            let container = container_of(&body);
            let outcome = if (200..300).contains(&status) { Outcome::Ok } else { Outcome::Status(status) };
            (outcome, container, retried)
        }
        Ok((Err(e), retried)) => (Outcome::Error(e.to_string()), None, retried),
    };
    Sample { target, seq, sent, latency: begun.elapsed(), outcome, container, retried }
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Nothing of an answer arrived: safe to send a GET again.
    #[error("{0}")]
    BeforeAnswer(String),
    #[error("{0}")]
    DuringAnswer(String),
}

async fn get(front: SocketAddr, host: &str, path: &str) -> Result<(u16, String), Failure> {
    let before = |e: &dyn std::fmt::Display| Failure::BeforeAnswer(e.to_string());
    let stream = TcpStream::connect(front).await.map_err(|e| before(&format!("connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| before(&format!("handshake: {e}")))?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "close")
        .header(hyper::header::USER_AGENT, "deis-chaos")
        .body(Empty::<Bytes>::new())
        .map_err(|e| before(&e))?;
    let response = sender.send_request(request).await.map_err(|e| before(&e))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| Failure::DuringAnswer(format!("reading the body: {e}")))?
        .to_bytes();
    conn.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `chaos <app> <release> <container>` → the container.
fn container_of(body: &str) -> Option<String> {
    let mut words = body.split_whitespace();
    (words.next()? == "chaos").then_some(())?;
    words.nth(2).map(str::to_owned)
}

/// One app's share of a load, summed up.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    pub app: String,
    pub total: u64,
    pub failed: u64,
    pub retried: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Failures by kind (`timeout`, `status 502`, the error's text).
    pub failures: BTreeMap<String, u64>,
    /// When the first and the last failed request were sent, since the load started.
    pub first_failure_s: Option<f64>,
    pub last_failure_s: Option<f64>,
}

pub fn stats(targets: &[Target], samples: &[Sample]) -> Vec<Stats> {
    targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.target == i).collect();
            let mut latencies: Vec<Duration> = mine.iter().map(|s| s.latency).collect();
            latencies.sort();
            let mut out = Stats {
                app: t.app.clone(),
                total: mine.len() as u64,
                failed: mine.iter().filter(|s| s.failed()).count() as u64,
                retried: mine.iter().filter(|s| s.retried).count() as u64,
                p50_ms: ms(percentile(&latencies, 0.50)),
                p99_ms: ms(percentile(&latencies, 0.99)),
                max_ms: ms(latencies.last().copied().unwrap_or_default()),
                ..Default::default()
            };
            for s in mine.iter().filter(|s| s.failed()) {
                let kind = match &s.outcome {
                    Outcome::Timeout => "timeout".to_owned(),
                    Outcome::Status(code) => format!("status {code}"),
                    Outcome::Error(e) => e.clone(),
                    Outcome::Ok => continue,
                };
                *out.failures.entry(kind).or_default() += 1;
                let at = s.sent.as_secs_f64();
                out.first_failure_s.get_or_insert(at);
                out.last_failure_s = Some(at);
            }
            out
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
    }

    #[test]
    fn the_container_is_read_from_the_body() {
        assert_eq!(container_of("chaos one v3 1a2b3c\n").as_deref(), Some("1a2b3c"));
        assert_eq!(container_of("hello from x"), None);
        assert_eq!(container_of("chaos one"), None);
    }

    /// A real server on loopback that answers 200 to even requests and 503 to odd ones, and
    /// closes the connection without an answer the first time it sees every fourth request: the
    /// counts must come out exactly, retries included.
    #[tokio::test]
    async fn load_counts_answers_failures_and_retries() {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use std::collections::HashSet;
        use std::sync::Mutex;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = listener.local_addr().unwrap();
        let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { break };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let seq: u64 = req.uri().path().rsplit('/').next().unwrap().parse().unwrap();
                            if seq % 4 == 1 && seen.lock().unwrap().insert(seq) {
                                // An error from the service closes the connection unanswered.
                                return Err("dropped");
                            }
                            let status = if seq.is_multiple_of(2) { 200 } else { 503 };
                            Ok(hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(Bytes::from("chaos a v1 c1\n")))
                                .unwrap())
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        let targets = vec![Target { app: "a".into(), host: "a.deis.local".into() }];
        let load = Load::start(Plan {
            front,
            targets: targets.clone(),
            rate: 200,
            max_duration: Duration::from_secs(10),
            max_requests_per_target: 40,
            timeout: Duration::from_secs(5),
            tag: "t".into(),
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let samples = load.stop().await;
        server.abort();
        assert_eq!(samples.len(), 40);
        let s = &stats(&targets, &samples)[0];
        assert_eq!(s.total, 40);
        assert_eq!(s.failed, 20, "{s:?}");
        assert_eq!(s.failures.get("status 503"), Some(&20), "{s:?}");
        assert_eq!(s.retried, 10, "{s:?}");
        assert!(samples.iter().filter(|s| !s.failed()).all(|s| s.container.as_deref() == Some("c1")));
    }
}
