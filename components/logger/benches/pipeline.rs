//! Logger throughput: lines published on the bus (as agents publish them) → the app's public
//! drain stream, read by a NATS subscriber, at rising rates. For each rate it prints lines
//! sent, received, lost, and the latency from publish to receipt (p50/p99), next to the same
//! numbers for NATS alone (publish → subscribe on one subject, no logger): the peer that bounds
//! what any logger on this server could do. Every run is bounded: 2 s per rate.
//!
//! Needs the test services (`./compose/services up`). Run: `cargo bench -p logger --bench pipeline`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bus_schema::messages::{DrainRecord, LogLine, LogSource, Stream};
use bus_schema::names::{AppName, ProcessType};
use bus_schema::{Bus, Component, Namespace, Sender, Timestamp};
use futures::StreamExt;
use service_kit::testing::TestServices;
use service_kit::{EtcdConfig, NatsConfig, Shutdown};

// On to 300k/s (issue #17): where the logger first loses lines, next to what NATS alone carries.
const RATES: [u64; 8] = [10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000];
const SECONDS: u64 = 2;

#[derive(Debug)]
struct Run {
    sent: u64,
    received: u64,
    p50_ms: f64,
    p99_ms: f64,
}

fn now_nanos() -> i64 {
    Timestamp::now().0
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

/// Publishes `rate` lines/s for SECONDS in 1 ms ticks with `publish`, while `receive` collects
/// latencies; returns what arrived within a second after the last publish.
async fn drive<P, Fut>(rate: u64, mut publish: P, latencies: tokio::sync::mpsc::UnboundedReceiver<i64>) -> Run
where
    P: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut latencies = latencies;
    let total = rate * SECONDS;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(total) {
            publish(sent).await;
            sent += 1;
        }
    }
    let mut got = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(1);
    while (got.len() as u64) < total {
        match tokio::time::timeout_at(deadline.into(), latencies.recv()).await {
            Ok(Some(l)) => got.push(l),
            _ => break,
        }
    }
    got.sort_unstable();
    Run { sent, received: got.len() as u64, p50_ms: percentile(&got, 0.5), p99_ms: percentile(&got, 0.99) }
}

fn line(app: &AppName, seq: u64) -> LogLine {
    LogLine {
        app: app.clone(),
        time: Timestamp::now(),
        source: LogSource::App { process_type: ProcessType::parse("web").unwrap(), index: 1 },
        stream: Stream::Stdout,
        node: None,
        seq,
        message: format!("10.0.0.1 - - \"GET /items/{seq} HTTP/1.1\" 200 512 \"-\" \"bench\""),
    }
}

#[tokio::main]
async fn main() {
    let services = TestServices::get();
    println!(
        "logger pipeline bench: publish → drain stream subscriber, {SECONDS} s per rate, NATS at {}",
        services.nats_url
    );
    println!(
        "{:>9} | {:>22} {:>9} {:>9} | {:>22} {:>9} {:>9}",
        "rate/s", "logger recv/sent", "p50 ms", "p99 ms", "nats-only recv/sent", "p50 ms", "p99 ms"
    );
    let mut first_loss = None;
    for rate in RATES {
        // A fresh namespace and logger per rate, so one rate's backlog cannot spill into the next.
        let ns = Namespace::unique_for_test("lbench");
        let data = tempfile::tempdir().unwrap();
        let config = logger::LoggerConfig {
            data_dir: data.path().to_owned(),
            instance: "bench".into(),
            nats: NatsConfig {
                url: services.nats_url.clone(),
                namespace: ns.root().to_owned(),
                ..Default::default()
            },
            etcd: EtcdConfig {
                endpoints: services.etcd_endpoints.clone(),
                prefix: format!("/lbench{}", uuid::Uuid::new_v4().simple()),
                ..Default::default()
            },
            log: Default::default(),
            ..Default::default()
        };
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let logger = tokio::spawn(async move { logger::run(config, ops, s).await.unwrap() });
        let client = async_nats::connect(&services.nats_url).await.unwrap();
        let bus = Bus::new(
            client.clone(),
            ns.clone(),
            Sender { component: Component::Test, instance: "bench".into() },
        );
        let app = AppName::parse("bench").unwrap();
        // Wait until the logger answers, so its subscriptions are live.
        loop {
            let q = bus_schema::messages::LogQuery {
                app: app.clone(),
                lines: 1,
                since: None,
                process: None,
                contains: None,
            };
            if bus.request(&ns.log_query(), &bus.envelope(q), Duration::from_millis(500)).await.is_ok() {
                break;
            }
        }

        // Logger path.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut drain = bus.subscribe_drain(&ns.drain(&app)).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(async move {
            while let Some(Ok(record)) = drain.next().await {
                let record: DrainRecord = record;
                if let Some(t) = Timestamp::parse_rfc3339(&record.time) {
                    let _ = tx.send(now_nanos() - t.0);
                }
            }
        });
        let subject = ns.log_lines(&app);
        let logger_run = drive(
            rate,
            |seq| {
                let bus = bus.clone();
                let subject = subject.clone();
                let line = line(&app, seq);
                async move { bus.publish(&subject, &bus.envelope(line)).await.unwrap() }
            },
            rx,
        )
        .await;
        reader.abort();

        // NATS alone: the same encoded lines on one subject, straight to a subscriber.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let raw_subject = format!("{}.benchraw", ns.root());
        let mut sub = client.subscribe(raw_subject.clone()).await.unwrap();
        bus.round_trip("bench").await.unwrap();
        let raw_reader = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Ok(env) = bus_schema::codec::decode::<LogLine>(&msg.payload) {
                    let _ = tx.send(now_nanos() - env.body.time.0);
                }
            }
        });
        let nats_run = drive(
            rate,
            |seq| {
                let client = client.clone();
                let subject = raw_subject.clone();
                let bytes = bus_schema::codec::encode(&bus.envelope(line(&app, seq))).unwrap();
                async move { client.publish(subject, bytes.into()).await.unwrap() }
            },
            rx,
        )
        .await;
        raw_reader.abort();
        stop.store(true, Ordering::Relaxed);
        shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), logger).await;

        println!(
            "{:>9} | {:>22} {:>9.2} {:>9.2} | {:>22} {:>9.2} {:>9.2}",
            rate,
            format!("{}/{}", logger_run.received, logger_run.sent),
            logger_run.p50_ms,
            logger_run.p99_ms,
            format!("{}/{}", nats_run.received, nats_run.sent),
            nats_run.p50_ms,
            nats_run.p99_ms
        );
        if logger_run.received < logger_run.sent && first_loss.is_none() {
            first_loss = Some(rate);
        }
    }
    match first_loss {
        Some(rate) => println!("lines were first lost at {rate} lines/s"),
        None => println!("no line lost at any rate up to {} lines/s", RATES[RATES.len() - 1]),
    }
}
