//! Service tests of the logger against the real NATS and etcd on loopback: lines in, history
//! out; history across a restart; the live drain stream; drains configured in etcd; two
//! instances sharing the forwarding; a flooding app; a destroyed app; a nats-py subscriber; a
//! logger started before NATS and etcd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_schema::messages::{AppDestroyed, DrainRecord, LogLine, LogQuery, LogSource, Stream};
use bus_schema::names::{AppName, NodeId, ProcessType};
use bus_schema::{Bus, Component, Namespace, Sender, Timestamp};
use futures::StreamExt;
use logger::LoggerConfig;
use service_kit::testing::{LateService, TestServices, eventually};
use service_kit::{EtcdConfig, NatsConfig, Shutdown};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;

const PATIENCE: Duration = Duration::from_secs(20);

struct Rig {
    namespace: String,
    prefix: String,
    bus: Bus,
    etcd: etcd_client::Client,
}

impl Rig {
    async fn new(test: &str) -> Self {
        let services = TestServices::get();
        let ns = Namespace::unique_for_test(test);
        let client = async_nats::connect(&services.nats_url).await.unwrap();
        let bus = Bus::new(client, ns.clone(), Sender { component: Component::Test, instance: test.into() });
        let etcd = etcd_client::Client::connect(&services.etcd_endpoints, None).await.unwrap();
        let prefix = format!("/t{}", uuid::Uuid::new_v4().simple());
        Self { namespace: ns.root().to_owned(), prefix, bus, etcd }
    }

    /// A rig with one logger, `l1`, running on a data directory of its own (kept until the
    /// directory is dropped): where most tests start.
    async fn with_one_logger(test: &str) -> (Self, tempfile::TempDir, Running) {
        let rig = Self::new(test).await;
        let data = tempfile::tempdir().unwrap();
        let logger = rig.start(rig.config("l1", data.path())).await;
        (rig, data, logger)
    }

    fn config(&self, instance: &str, data: &Path) -> LoggerConfig {
        let services = TestServices::get();
        LoggerConfig {
            data_dir: data.to_owned(),
            instance: instance.to_owned(),
            nats: NatsConfig {
                url: services.nats_url,
                namespace: self.namespace.clone(),
                ..Default::default()
            },
            etcd: EtcdConfig {
                endpoints: services.etcd_endpoints,
                prefix: self.prefix.clone(),
                lease_ttl_secs: 2,
                ..Default::default()
            },
            // The drains' receivers here are on loopback, refused unless the operator allows it.
            drains: logger::drains::DrainSettings {
                outbound: service_kit::OutboundPolicy { denied: vec![], allowed: vec!["127.0.0.0/8".into()] },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Starts a logger and waits until it answers queries (its subscriptions are live then).
    async fn start(&self, config: LoggerConfig) -> Running {
        let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops_addr = ops.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let task = tokio::spawn(async move { logger::run(config, ops, s).await.unwrap() });
        let probe = AppName::parse("probe").unwrap();
        eventually("the logger answers queries", PATIENCE, || async {
            self.query(&probe, 1).await.map(|_| ())
        })
        .await;
        Running { shutdown, task, ops_addr }
    }

    async fn publish(&self, line: LogLine) {
        let subject = self.bus.namespace().log_lines(&line.app);
        self.bus.publish(&subject, &self.bus.envelope(line)).await.unwrap();
    }

    async fn query_with(&self, query: LogQuery) -> Option<Vec<LogLine>> {
        let subject = self.bus.namespace().log_query();
        let reply =
            self.bus.request(&subject, &self.bus.envelope(query), Duration::from_secs(2)).await.ok()?.body;
        assert_eq!(reply.error, None);
        Some(reply.lines)
    }

    async fn query(&self, app: &AppName, lines: u32) -> Option<Vec<LogLine>> {
        self.query_with(LogQuery { app: app.clone(), lines, since: None, process: None, contains: None })
            .await
    }

    async fn put_drain(&self, app: &AppName, id: &str, url: &str) {
        let keys = bus_schema::discovery::Keys::new(&self.prefix);
        let value = serde_json::json!({ "url": url }).to_string();
        self.etcd.clone().put(keys.drain(app, id), value, None).await.unwrap();
    }
}

struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    ops_addr: std::net::SocketAddr,
}

impl Running {
    async fn stop(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.shutdown.wait(Duration::from_secs(5)).await;
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.ops_addr)).await.ok()?.text().await.ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

fn app(name: &str) -> AppName {
    AppName::parse(name).unwrap()
}

fn line(app_name: &AppName, process: &str, index: u32, seq: u64, message: String) -> LogLine {
    LogLine {
        app: app_name.clone(),
        time: Timestamp::now(),
        source: LogSource::App { process_type: ProcessType::parse(process).unwrap(), index },
        stream: Stream::Stdout,
        node: Some(NodeId::parse("node1").unwrap()),
        seq,
        message,
    }
}

/// A TCP syslog receiver that records the MSG part of each octet-counted frame.
async fn syslog_receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut len = Vec::new();
                    if reader.read_until(b' ', &mut len).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Ok(n) = std::str::from_utf8(&len[..len.len() - 1]).unwrap_or("x").parse::<usize>()
                    else {
                        return;
                    };
                    let mut frame = vec![0; n];
                    if reader.read_exact(&mut frame).await.is_err() {
                        return;
                    }
                    let frame = String::from_utf8_lossy(&frame).into_owned();
                    // HEADER is seven space-separated fields; SD is "-": MSG follows.
                    let msg = frame.splitn(8, ' ').nth(7).unwrap_or_default().to_owned();
                    sink.lock().unwrap().push(msg);
                }
            });
        }
    });
    (port, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_come_back_from_history_in_order_per_container_and_filtered() {
    let (rig, _data, logger) = Rig::with_one_logger("logorder").await;
    let shop = app("shop");
    for seq in 0..300u64 {
        rig.publish(line(&shop, "web", 1, seq, format!("web1 {seq}"))).await;
        rig.publish(line(&shop, "worker", 2, seq, format!("worker2 {seq}"))).await;
    }
    let all = eventually("600 lines in history", PATIENCE, || async {
        rig.query(&shop, 1000).await.filter(|l| l.len() == 600)
    })
    .await;
    for tag in ["web.1", "worker.2"] {
        let seqs: Vec<u64> = all.iter().filter(|l| l.source.to_string() == tag).map(|l| l.seq).collect();
        assert_eq!(seqs, (0..300).collect::<Vec<_>>(), "{tag} in order");
    }
    let last = rig.query(&shop, 10).await.unwrap();
    assert_eq!(last.len(), 10);
    assert_eq!(last.last().unwrap().message, "worker2 299");
    let web = rig
        .query_with(LogQuery {
            app: shop.clone(),
            lines: 1000,
            since: None,
            process: Some("web".into()),
            contains: None,
        })
        .await
        .unwrap();
    assert_eq!(web.len(), 300);
    let text = rig
        .query_with(LogQuery {
            app: shop.clone(),
            lines: 1000,
            since: None,
            process: None,
            contains: Some("worker2 29".into()),
        })
        .await
        .unwrap();
    assert_eq!(text.len(), 11, "worker2 29 and 290..299");
    let since = all[500].time;
    let recent = rig
        .query_with(LogQuery {
            app: shop.clone(),
            lines: 1000,
            since: Some(since),
            process: None,
            contains: None,
        })
        .await
        .unwrap();
    assert!(recent.len() >= 100 && recent.len() < 600, "{} lines since the 500th", recent.len());
    // Overlong lines are cut with a marker.
    rig.publish(line(&shop, "web", 1, 300, "x".repeat(50_000))).await;
    let cut = eventually("the long line stored", PATIENCE, || async {
        rig.query(&shop, 1).await.and_then(|l| l.into_iter().find(|l| l.seq == 300))
    })
    .await;
    assert!(
        cut.message.len() < 11_000 && cut.message.ends_with("[cut 39760 bytes]"),
        "{}",
        &cut.message[10_200..]
    );
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_and_controller_events_join_the_stream() {
    let rig = Rig::new("logrestart").await;
    let data = tempfile::tempdir().unwrap();
    let shop = app("shop");
    let logger = rig.start(rig.config("l1", data.path())).await;
    for seq in 0..50u64 {
        rig.publish(line(&shop, "web", 1, seq, format!("before {seq}"))).await;
    }
    let event = bus_schema::messages::ControllerEvent {
        app: shop.clone(),
        actor: "alice".into(),
        action: "release".into(),
        message: "alice created release v3".into(),
    };
    rig.bus.publish(&rig.bus.namespace().controller_events(&shop), &rig.bus.envelope(event)).await.unwrap();
    eventually("51 lines stored", PATIENCE, || async {
        rig.query(&shop, 100).await.filter(|l| l.len() == 51)
    })
    .await;
    logger.stop().await;

    let logger = rig.start(rig.config("l1", data.path())).await;
    rig.publish(line(&shop, "web", 1, 50, "after".into())).await;
    let lines = eventually("52 lines after the restart", PATIENCE, || async {
        rig.query(&shop, 100).await.filter(|l| l.len() == 52)
    })
    .await;
    // The event comes on its own subject, so it may land anywhere among the app's lines.
    let (events, app_lines): (Vec<&LogLine>, Vec<&LogLine>) =
        lines.iter().partition(|l| l.source == LogSource::Controller);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].display().split_once(' ').unwrap().1,
        "shop[deis-controller]: alice created release v3"
    );
    let mut expected: Vec<String> = (0..50).map(|n| format!("before {n}")).collect();
    expected.push("after".into());
    assert_eq!(app_lines.iter().map(|l| l.message.clone()).collect::<Vec<_>>(), expected);
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_drain_stream_carries_each_line_as_json_promptly() {
    let (rig, _data, logger) = Rig::with_one_logger("logfollow").await;
    let shop = app("shop");
    let mut follow = rig.bus.client().subscribe(rig.bus.namespace().drain(&shop).to_nats()).await.unwrap();
    rig.bus.round_trip("follow").await.unwrap();
    rig.publish(line(&shop, "web", 3, 7, "hello drain".into())).await;
    let msg =
        tokio::time::timeout(Duration::from_secs(1), follow.next()).await.expect("within a second").unwrap();
    let record = DrainRecord::from_json(&msg.payload).unwrap();
    assert_eq!(record.app, "shop");
    assert_eq!(record.process, "web.3");
    assert_eq!(record.source, "app");
    assert_eq!(record.message, "hello drain");
    assert_eq!(record.node.as_deref(), Some("node1"));
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_set_in_etcd_receives_the_apps_lines_and_stops_when_removed() {
    let (rig, _data, logger) = Rig::with_one_logger("logdrain").await;
    let shop = app("shop");
    let (port, got) = syslog_receiver().await;
    rig.put_drain(&shop, "d1", &format!("syslog://127.0.0.1:{port}")).await;
    // The drain starts with the app's next batch once the logger has read etcd.
    let mut seq = 0;
    eventually("the drain receives lines", PATIENCE, || {
        seq += 1;
        let line = line(&shop, "web", 1, seq, format!("probe {seq}"));
        async {
            rig.publish(line).await;
            (!got.lock().unwrap().is_empty()).then_some(())
        }
    })
    .await;
    for n in 0..100 {
        rig.publish(line(&shop, "web", 1, 1000 + n, format!("real {n}"))).await;
    }
    eventually("100 lines drained", PATIENCE, || async {
        (got.lock().unwrap().iter().filter(|m| m.starts_with("real ")).count() == 100).then_some(())
    })
    .await;
    let real: Vec<String> = got.lock().unwrap().iter().filter(|m| m.starts_with("real ")).cloned().collect();
    assert_eq!(real, (0..100).map(|n| format!("real {n}")).collect::<Vec<_>>());

    let keys = bus_schema::discovery::Keys::new(&rig.prefix);
    rig.etcd.clone().delete(keys.drain(&shop, "d1"), None).await.unwrap();
    // Once removed, a marker line followed by more lines must not arrive. Wait until lines
    // stop arriving (the removal took effect), then check nothing newer comes.
    let mut n = 0;
    let (rig_ref, got_ref) = (&rig, &got);
    eventually("the drain stops", PATIENCE, || {
        n += 1;
        let line = line(&shop, "web", 1, 5000 + n, format!("after removal {n}"));
        let before = got.lock().unwrap().len();
        let (rig, got) = (rig_ref, got_ref);
        async move {
            rig.publish(line).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            (got.lock().unwrap().len() == before).then_some(())
        }
    })
    .await;
    let count = got.lock().unwrap().len();
    rig.publish(line(&shop, "web", 1, 9999, "never drained".into())).await;
    eventually("the line is in history", PATIENCE, || async {
        rig.query(&shop, 1).await.filter(|l| l.first().is_some_and(|l| l.seq == 9999))
    })
    .await;
    assert_eq!(got.lock().unwrap().len(), count, "a removed drain received a line");
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_forwarding_and_no_drain_gets_a_line_twice() {
    let rig = Rig::new("logpair").await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = rig.start(rig.config("la", d1.path())).await;
    let b = rig.start(rig.config("lb", d2.path())).await;
    for running in [&a, &b] {
        eventually("each instance sees both", PATIENCE, || async {
            running.metric("deis_logger_members").await.filter(|&m| m == 2.0)
        })
        .await;
    }
    let apps: Vec<AppName> = (0..6).map(|i| app(&format!("app{i}"))).collect();
    let mut receivers = HashMap::new();
    for a in &apps {
        let (port, got) = syslog_receiver().await;
        rig.put_drain(a, "d", &format!("syslog://127.0.0.1:{port}")).await;
        receivers.insert(a.clone(), got);
    }
    // Wait until every drain is running: each gets a probe.
    let mut seq = 0;
    eventually("every drain receives probes", PATIENCE, || {
        seq += 1;
        let lines: Vec<LogLine> =
            apps.iter().map(|a| line(a, "web", 1, seq, format!("probe {seq}"))).collect();
        let (rig, receivers) = (&rig, &receivers);
        async move {
            for l in lines {
                rig.publish(l).await;
            }
            receivers.values().all(|r| !r.lock().unwrap().is_empty()).then_some(())
        }
    })
    .await;
    for n in 0..200u64 {
        for a in &apps {
            rig.publish(line(a, "web", 1, 10_000 + n, format!("line {n}"))).await;
        }
    }
    for (a, got) in &receivers {
        eventually("200 lines in each drain", PATIENCE, || async {
            (got.lock().unwrap().iter().filter(|m| m.starts_with("line ")).count() >= 200).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lines: Vec<String> =
            got.lock().unwrap().iter().filter(|m| m.starts_with("line ")).cloned().collect();
        assert_eq!(
            lines,
            (0..200).map(|n| format!("line {n}")).collect::<Vec<_>>(),
            "{a}: once each, in order"
        );
    }
    // Both instances hold every app's history.
    let forwarded_a = a.metric("deis_logger_lines_forwarded_total").await.unwrap_or(0.0);
    let forwarded_b = b.metric("deis_logger_lines_forwarded_total").await.unwrap_or(0.0);
    assert!(forwarded_a > 0.0 && forwarded_b > 0.0, "both forward some apps: {forwarded_a} {forwarded_b}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_app_loses_only_its_own_lines_and_is_told_how_many() {
    let rig = Rig::new("logflood").await;
    let data = tempfile::tempdir().unwrap();
    let config = LoggerConfig { app_queue_lines: 16, ..rig.config("l1", data.path()) };
    let logger = rig.start(config).await;
    let (noisy, quiet) = (app("noisy"), app("quiet"));
    let total = 20_000u64;
    for seq in 0..total {
        rig.publish(line(&noisy, "web", 1, seq, format!("flood {seq}"))).await;
        if seq % 100 == 0 {
            rig.publish(line(&quiet, "web", 1, seq / 100, format!("quiet {}", seq / 100))).await;
        }
    }
    let quiet_lines = eventually("the quiet app's 200 lines", PATIENCE, || async {
        rig.query(&quiet, 1000).await.filter(|l| l.len() == 200)
    })
    .await;
    assert!(quiet_lines.iter().enumerate().all(|(i, l)| l.seq == i as u64));
    // Every noisy line is either stored or counted in a drop notice: nothing vanishes unsaid.
    eventually("every noisy line accounted for", PATIENCE, || async {
        let lines = rig.query(&noisy, 10_000).await?;
        let stored = lines.iter().filter(|l| l.message.starts_with("flood ")).count() as u64;
        let dropped: u64 = lines
            .iter()
            .filter(|l| l.source == LogSource::Logger)
            .filter_map(|l| l.message.split(": ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .sum();
        // The query is capped at 10,000 lines; count the rest through the metric.
        let in_total = logger.metric("deis_logger_lines_in_total").await? as u64;
        let dropped_metric = logger.metric("deis_logger_lines_dropped_total").await? as u64;
        println!("stored (newest 10k) {stored}, notices {dropped}, dropped {dropped_metric}, in {in_total}");
        (in_total == total + 200 && dropped == dropped_metric).then_some(())
    })
    .await;
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_app_loses_its_history() {
    let (rig, data, logger) = Rig::with_one_logger("logdestroy").await;
    let shop = app("shop");
    rig.publish(line(&shop, "web", 1, 1, "soon gone".into())).await;
    eventually("stored", PATIENCE, || async { rig.query(&shop, 10).await.filter(|l| l.len() == 1) }).await;
    let ns = rig.bus.namespace();
    rig.bus
        .publish(
            &ns.app_destroyed(&shop),
            &rig.bus.envelope(AppDestroyed { app: shop.clone(), destroyed_by: "alice".into() }),
        )
        .await
        .unwrap();
    eventually("history gone", PATIENCE, || async { rig.query(&shop, 10).await.filter(|l| l.is_empty()) })
        .await;
    assert!(!data.path().join("apps/shop").exists());
    logger.stop().await;
}

fn tools_python() -> PathBuf {
    let venv = std::env::var_os("DEIS_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/deis-tools/venv"));
    let python = venv.join("bin/python");
    let ok =
        std::process::Command::new(&python).args(["-c", "import nats"]).status().is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with nats-py is missing: run compose/test (it installs the test tools)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_py_subscriber_reads_the_json_drain_stream() {
    let python = tools_python();
    let (rig, _data, logger) = Rig::with_one_logger("logpy").await;
    let shop = app("shop");
    let subject = rig.bus.namespace().drain(&shop).as_str().to_owned();
    // A consumer as a user would write it: subscribe, print each record's fields, stop after 3.
    let script = r#"
import asyncio, json, sys
import nats

async def main():
    nc = await nats.connect(sys.argv[1])
    done = asyncio.get_running_loop().create_future()
    seen = []
    async def on_msg(msg):
        rec = json.loads(msg.data)
        seen.append(rec)
        print(f"{rec['v']} {rec['app']} {rec['process']} {rec['stream']} {rec['message']}", flush=True)
        if len(seen) == 3 and not done.done():
            done.set_result(True)
    await nc.subscribe(sys.argv[2], cb=on_msg)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.wait_for(done, 20)
    await nc.drain()

asyncio.run(main())
"#;
    let mut child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(TestServices::get().nats_url)
        .arg(&subject)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(PATIENCE, stdout.next_line()).await.unwrap().unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));
    for (i, process) in ["web", "worker", "web"].iter().enumerate() {
        let mut l = line(&shop, process, 1, i as u64, format!("py line {i}"));
        if i == 1 {
            l.stream = Stream::Stderr;
        }
        rig.publish(l).await;
    }
    let mut got = Vec::new();
    while let Ok(Some(l)) = tokio::time::timeout(PATIENCE, stdout.next_line()).await.unwrap() {
        got.push(l);
    }
    assert_eq!(
        got,
        vec![
            "1 shop web.1 stdout py line 0",
            "1 shop worker.1 stderr py line 1",
            "1 shop web.1 stdout py line 2"
        ]
    );
    assert!(child.wait().await.unwrap().success());
    logger.stop().await;
}

/// Started before NATS and etcd (a logger restarted while they are down, or booted first): once
/// they come it takes lines, answers queries and forwards to a drain set in etcd; when NATS goes
/// away and comes back it takes lines again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logger_started_before_nats_and_etcd_works_once_they_come_and_after_nats_returns() {
    let rig = Rig::new("loglate").await;
    let services = TestServices::get();
    let nats = LateService::new(services.nats_url.trim_start_matches("nats://")).await;
    let etcd = LateService::new(services.etcd_endpoints[0].trim_start_matches("http://")).await;
    let data = tempfile::tempdir().unwrap();
    let mut config = rig.config("l1", data.path());
    config.nats.url = nats.url("nats");
    config.etcd.endpoints = vec![etcd.url("http")];
    let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move { logger::run(config, ops, s).await.unwrap() });
    // Long enough for its first attempts at both to fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!task.is_finished(), "the logger waits for what it needs instead of exiting");
    nats.open();
    etcd.open();

    let late = app("late");
    eventually("the logger answers once NATS comes", PATIENCE, || rig.query(&late, 1)).await;
    let (port, got) = syslog_receiver().await;
    rig.put_drain(&late, "d1", &format!("syslog://127.0.0.1:{port}")).await;
    let mut seq = 0;
    eventually("a line reaches history and the drain set in etcd", PATIENCE, || {
        seq += 1;
        let message = format!("came late {seq}");
        let line = line(&late, "web", 1, seq, message.clone());
        let (got, late, rig) = (got.clone(), late.clone(), &rig);
        async move {
            rig.publish(line).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let in_history = rig.query(&late, 1).await?.first().is_some_and(|l| l.message == message);
            (in_history && got.lock().unwrap().iter().any(|m| m.starts_with("came late"))).then_some(())
        }
    })
    .await;

    // NATS goes away (every connection cut) and comes back.
    nats.close();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.open();
    eventually("lines are taken again after NATS returns", PATIENCE, || {
        seq += 1;
        let message = format!("after the outage {seq}");
        let line = line(&late, "web", 1, seq, message.clone());
        let (late, rig) = (late.clone(), &rig);
        async move {
            rig.publish(line).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            rig.query(&late, 1).await?.first().is_some_and(|l| l.message == message).then_some(())
        }
    })
    .await;
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// An instance that kept an app's lines without forwarding them (another instance owned the app)
/// and then takes the app over, because the owner is gone, first sends those lines: what came
/// while a dead owner's lease ran out still reaches the drain stream, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_an_app_over_resends_what_its_gone_owner_may_have_missed() {
    use logger::drains::DrainShared;
    use logger::metrics::Metrics;
    use logger::ownership::{Ownership, owner};
    use logger::pipeline::{Dispatcher, DrainTable, Shared};

    let rig = Rig::new("takeover").await;
    let data = tempfile::tempdir().unwrap();
    let config = rig.config("me", data.path());
    let shop = app("shop");
    // A peer that owns the app while both are live.
    let peer = (0..1000)
        .map(|i| format!("peer{i}"))
        .find(|p| owner(&[p.clone(), "me".to_owned()], &shop) == Some(p.as_str()))
        .unwrap();
    let ownership = Ownership::new("me");
    ownership.set_members(vec![peer.clone(), "me".to_owned()]);
    let shutdown = Shutdown::new();
    let shared = Arc::new(Shared {
        config: config.clone(),
        bus: rig.bus.clone(),
        ownership: ownership.clone(),
        drains: Arc::new(arc_swap::ArcSwap::from_pointee(DrainTable::new())),
        drain_shared: DrainShared::new(&config.drains).unwrap(),
        metrics: Metrics::default(),
        shutdown: shutdown.clone(),
    });
    let mut follow = rig.bus.client().subscribe(rig.bus.namespace().drain(&shop).to_nats()).await.unwrap();
    rig.bus.round_trip("follow").await.unwrap();
    let mut dispatcher = Dispatcher::new(shared.clone());
    for n in 0..50u64 {
        dispatcher.ingest(line(&shop, "web", 1, n, format!("missed {n}")));
    }
    // Handled (in the history) but, the peer owning the app, not forwarded.
    let query = LogQuery { app: shop.clone(), lines: 100, since: None, process: None, contains: None };
    eventually("the 50 lines in the history", PATIENCE, || {
        let (root, query) = (config.data_dir.clone(), query.clone());
        async move {
            logger::store::read(&root, &query.app, &query, 1 << 20)
                .ok()
                .filter(|h| h.lines.len() == 50)
                .map(|_| ())
        }
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), follow.next()).await.is_err(),
        "nothing forwarded while the peer owns the app"
    );
    // The peer's lease ran out: this instance owns the app now.
    ownership.set_members(vec!["me".to_owned()]);
    dispatcher.ingest(line(&shop, "web", 1, 50, "after".to_owned()));
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("after") {
        let msg =
            tokio::time::timeout(PATIENCE, follow.next()).await.expect("lines on the drain stream").unwrap();
        got.push(DrainRecord::from_json(&msg.payload).unwrap().message);
    }
    let mut want: Vec<String> = (0..50).map(|n| format!("missed {n}")).collect();
    want.push("after".to_owned());
    assert_eq!(got, want);
    assert_eq!(shared.metrics.lines_resent.get(), 50);
    dispatcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logger_takes_a_share_only_while_it_hears_every_live_node() {
    use bus_schema::messages::NodeInventory;
    use std::sync::atomic::{AtomicBool, Ordering};

    let rig = Rig::new("reach").await;
    let keys = bus_schema::discovery::Keys::new(&rig.prefix);
    let node = NodeId::parse("n1").unwrap();
    // A live node whose agent says nothing yet (as after a partition heals: etcd is back, the
    // bus is not).
    rig.etcd.clone().put(keys.node(&node), "{}", None).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = rig.config("l1", data.path());
    config.node_silence_ms = 2_000;
    let logger = rig.start(config).await;
    let registered = || async {
        let resp = rig.etcd.clone().get(keys.component("logger", "l1"), None).await.unwrap();
        !resp.kvs().is_empty()
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!registered().await, "registered without hearing the live node");
    assert_eq!(logger.metric("deis_logger_reachable").await, Some(0.0));

    // The agent speaks: its inventory every 300 ms.
    let speaking = Arc::new(AtomicBool::new(true));
    let agent = {
        let (bus, node, speaking) = (rig.bus.clone(), node.clone(), speaking.clone());
        tokio::spawn(async move {
            let subject = bus.namespace().node_inventory(&node);
            // Bounded: a minute at most.
            for _ in 0..200 {
                if speaking.load(Ordering::Relaxed) {
                    let inventory = NodeInventory { node: node.clone(), containers: Vec::new() };
                    let _ = bus.publish(&subject, &bus.envelope(inventory)).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    eventually("registered once it hears the node", PATIENCE, || async { registered().await.then_some(()) })
        .await;
    assert_eq!(logger.metric("deis_logger_reachable").await, Some(1.0));

    // The agent falls silent while its node stays live in etcd: the logger leaves.
    speaking.store(false, Ordering::Relaxed);
    eventually("gone once the node is silent", PATIENCE, || async { (!registered().await).then_some(()) })
        .await;
    // The node's lease runs out: nothing is left unheard, so the logger comes back.
    rig.etcd.clone().delete(keys.node(&node), None).await.unwrap();
    eventually("back once the silent node is gone", PATIENCE, || async { registered().await.then_some(()) })
        .await;
    agent.abort();
    logger.stop().await;
}
