//! The typed bus against a real NATS server with JetStream: publish/subscribe, request/reply,
//! durable publish with de-duplication, and stream/consumer declaration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::messages::*;
use bus_schema::streams::{ConsumerId, ensure_consumer};
use bus_schema::{AppName, Component, DesiredChange, MessageId, Namespace, ProcessType, Sender};
use futures::StreamExt;
use service_kit::testing::TestServices;
use service_kit::{NatsConfig, Shutdown};

async fn bus(ns: &Namespace, component: Component) -> bus_schema::Bus {
    let config = NatsConfig {
        url: TestServices::get().nats_url,
        namespace: ns.root().to_owned(),
        ..Default::default()
    };
    service_kit::nats::connect_bus(&config, Sender { component, instance: "t".into() }, &Shutdown::new())
        .await
        .unwrap()
}

fn app() -> AppName {
    AppName::parse("shop").unwrap()
}

#[tokio::test]
async fn typed_publish_subscribe_and_request_reply() {
    let ns = Namespace::unique_for_test("pubsub");
    let agent = bus(&ns, Component::Agent).await;
    let scheduler = bus(&ns, Component::Scheduler).await;
    let node = bus_schema::NodeId::parse("node1").unwrap();

    // The agent answers start commands on its own subject.
    let mut commands = agent.subscribe_subject(&ns.agent_start(&node)).await.unwrap();
    let responder = agent.clone();
    tokio::spawn(async move {
        while let Some(cmd) = commands.next().await {
            let cmd = cmd.expect("a well-formed start command");
            let reply = StartContainerReply::Started {
                container_id: format!("c-{}", cmd.envelope.body.key.index),
                host_port: Some(1),
            };
            responder.reply(&cmd, reply).await.unwrap();
        }
    });

    let key = ContainerKey { app: app(), version: 2, process_type: ProcessType::web(), index: 3 };
    let cmd = StartContainer {
        key,
        image: "i".into(),
        command: String::new(),
        env: BTreeMap::new(),
        limits: Limits::default(),
        health: None,
    };
    let reply = scheduler
        .request(
            &ns.agent_start(&node),
            &scheduler.envelope(cmd).with_trace("trace-1"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(reply.body, StartContainerReply::Started { container_id: "c-3".into(), host_port: Some(1) });
    assert_eq!(reply.trace_id, "trace-1");
    assert_eq!(reply.sender.component, Component::Agent);

    // Garbage on a typed subscription is reported, not a panic, and later messages still flow.
    let mut lines = scheduler.subscribe(&ns.all_log_lines()).await.unwrap();
    agent.client().publish(ns.log_lines(&app()).as_str().to_owned(), "garbage".into()).await.unwrap();
    let line = LogLine {
        app: app(),
        time: bus_schema::Timestamp::now(),
        source: LogSource::Router,
        stream: Stream::Stdout,
        node: None,
        seq: 1,
        message: "hi".into(),
    };
    agent.publish(&ns.log_lines(&app()), &agent.envelope(line.clone())).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next()).await.unwrap().unwrap();
    assert!(first.is_err(), "garbage must decode to an error");
    let second = tokio::time::timeout(Duration::from_secs(5), lines.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.envelope.body, line);
}

#[tokio::test]
async fn durable_publishes_are_deduplicated_by_message_id_and_survive_for_a_late_consumer() {
    let ns = Namespace::unique_for_test("durable");
    let controller = bus(&ns, Component::Controller).await;
    let spec = ns.consumer(ConsumerId::Scheduler);
    // Declaring twice is harmless.
    ensure_consumer(controller.jetstream(), &ns, &spec, &bus_schema::streams::StreamOptions::for_tests())
        .await
        .unwrap();
    let consumer =
        ensure_consumer(controller.jetstream(), &ns, &spec, &bus_schema::streams::StreamOptions::for_tests())
            .await
            .unwrap();

    let change = FormationChanged {
        app: app(),
        formation: BTreeMap::from([(ProcessType::web(), 3)]),
        generation: 1,
        changed_by: "alice".into(),
    };
    let id = MessageId::new();
    let envelope = controller.envelope(change.clone()).with_id(id);
    // The outbox relay may publish the same row twice after a crash: stored once.
    let first = controller.publish_durable(&ns.formation_changed(&app()), &envelope).await.unwrap();
    let second = controller.publish_durable(&ns.formation_changed(&app()), &envelope).await.unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    let destroyed = controller.envelope(AppDestroyed { app: app(), destroyed_by: "alice".into() });
    controller.publish_durable(&ns.app_destroyed(&app()), &destroyed).await.unwrap();

    let mut messages =
        consumer.fetch().max_messages(10).expires(Duration::from_secs(2)).messages().await.unwrap();
    let mut seen = Vec::new();
    while let Some(msg) = messages.next().await {
        let msg = msg.unwrap();
        seen.push(DesiredChange::decode(&msg.payload).unwrap());
        msg.ack().await.unwrap();
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(matches!(&seen[0], DesiredChange::Formation(e) if e.id == id && e.body == change));
    assert!(matches!(&seen[1], DesiredChange::Destroyed(_)));

    controller
        .jetstream()
        .delete_stream(ns.stream(bus_schema::streams::StreamId::Desired).name)
        .await
        .unwrap();
}

/// A nats-server of the test's own (the platform's pinned build), killed when dropped.
struct OwnNats(std::process::Child);

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_own_nats(port: u16) -> OwnNats {
    use std::process::{Command, Stdio};
    let binary = std::env::var_os("DEIS_TEST_NATS_SERVER").map_or_else(
        || {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose/nats-server");
            let out = Command::new(&script).stderr(Stdio::inherit()).output().unwrap();
            assert!(out.status.success(), "{} failed", script.display());
            std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        },
        std::path::PathBuf::from,
    );
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    OwnNats(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_had_to_connect_elsewhere_moves_back_to_its_first_server() {
    let shared = TestServices::get().nats_url;
    let home_port = service_kit::testing::free_port();
    let home = format!("127.0.0.1:{home_port}");
    let config = NatsConfig {
        // Its own member first, as a cluster part lists it; it is not up yet.
        url: format!("nats://{home},{shared}"),
        namespace: Namespace::unique_for_test("home").root().to_owned(),
        ..Default::default()
    };
    let shutdown = Shutdown::new();
    let client = service_kit::nats::connect(&config, "home-test", &shutdown).await.unwrap();
    let away = client.server_info().server_id;
    assert_ne!(
        service_kit::nats::server_id(&home).await,
        Some(away.clone()),
        "connected to the first server?"
    );

    let _own = start_own_nats(home_port);
    let home_id =
        service_kit::testing::eventually("the first server answers", Duration::from_secs(20), || async {
            service_kit::nats::server_id(&home).await
        })
        .await;
    service_kit::testing::eventually(
        "the client is back on its first server",
        service_kit::nats::HOME_CHECK * 4,
        || async { (client.server_info().server_id == home_id).then_some(()) },
    )
    .await;
    // And it works there.
    let mut sub = client.subscribe("home.check").await.unwrap();
    client.publish("home.check", "here".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
    assert_eq!(&msg.payload[..], b"here");
    shutdown.trigger();
}
