//! deisctl against the real services: the announcer and `status` on the loopback etcd (each test
//! under a prefix of its own), settings round trips, and parts found, stopped, started and read
//! on the real Docker engine (containers named `deis-test-*`, removed even when a test fails).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use bus_schema::NodeId;
use bus_schema::discovery::Keys;
use deisctl::DeisctlConfig;
use deisctl::announce::{self, Watched};
use deisctl::parts::{Parts, Target};
use deisctl::status::{self, State};
use service_kit::testing::{TestServices, eventually, free_port};
use service_kit::{EtcdConfig, Shutdown};

fn config(test: &str) -> DeisctlConfig {
    let services = TestServices::get();
    DeisctlConfig {
        probe_interval_ms: 100,
        probe_timeout_ms: 500,
        etcd: EtcdConfig {
            endpoints: services.etcd_endpoints,
            prefix: format!("/deis-test-{test}-{}", uuid::Uuid::new_v4().simple()),
            lease_ttl_secs: 2,
            ..EtcdConfig::default()
        },
        ..DeisctlConfig::default()
    }
}

async fn etcd(config: &DeisctlConfig) -> etcd_client::Client {
    etcd_client::Client::connect(&config.etcd.endpoints, None).await.unwrap()
}

async fn rows(config: &DeisctlConfig) -> Vec<status::Row> {
    let mut etcd = etcd(config).await;
    let observed = status::read(&mut etcd, &Keys::new(&config.etcd.prefix), 0).await.unwrap();
    status::rows(&observed)
}

fn state_of(rows: &[status::Row], part: &str) -> Option<(State, String)> {
    rows.iter().find(|r| r.part == part).map(|r| (r.state, r.detail.clone()))
}

#[tokio::test]
async fn announced_parts_are_healthy_unhealthy_then_down_when_the_announcer_stops() {
    let config = config("announce");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let node = NodeId::parse("node1").unwrap();
    let watched = vec![
        Watched::parse(&format!("web=tcp:127.0.0.1:{port}"), Some(&node)).unwrap(),
        Watched::parse(&format!("gone=tcp:127.0.0.1:{}", free_port()), Some(&node)).unwrap(),
        Watched::parse("agent=key:nodes/node1", Some(&node)).unwrap(),
    ];
    let shutdown = Shutdown::new();
    let task = tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move { announce::run(&config, Some(node), watched, shutdown).await }
    });

    let patience = Duration::from_secs(10);
    eventually("web healthy, gone and agent unhealthy", patience, || async {
        let rows = rows(&config).await;
        let web = state_of(&rows, "web@node1")?;
        let gone = state_of(&rows, "gone@node1")?;
        let agent = state_of(&rows, "agent@node1")?;
        (web.0 == State::Healthy
            && gone.0 == State::Unhealthy
            && gone.1.contains("refused")
            && agent.0 == State::Unhealthy
            && agent.1.contains("nodes/node1 is missing"))
        .then_some(())
    })
    .await;

    // The agent's node key appears: the key probe follows it.
    let mut client = etcd(&config).await;
    client.put(format!("{}/nodes/node1", config.etcd.prefix), "{}", None).await.unwrap();
    eventually("agent healthy once its node key exists", patience, || async {
        (state_of(&rows(&config).await, "agent@node1")?.0 == State::Healthy).then_some(())
    })
    .await;

    drop(listener);
    eventually("web unhealthy once it stops listening", patience, || async {
        (state_of(&rows(&config).await, "web@node1")?.0 == State::Unhealthy).then_some(())
    })
    .await;

    // A stopped announcer revokes its lease: its parts are down at once, and still listed.
    shutdown.trigger();
    tokio::time::timeout(patience, task).await.unwrap().unwrap();
    let rows = rows(&config).await;
    for part in ["web@node1", "gone@node1", "agent@node1"] {
        assert_eq!(state_of(&rows, part).map(|s| s.0), Some(State::Down), "{part}: {rows:?}");
    }
    client
        .delete(config.etcd.prefix.clone(), Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
}

#[tokio::test]
async fn settings_round_trip_and_replace_each_other() {
    let config = config("settings");
    let keys = Keys::new(&config.etcd.prefix);
    let mut client = etcd(&config).await;
    let set = ["domain=Apps.Example.com", "https_only=yes"]
        .iter()
        .map(|a| deisctl::settings::parse_assignment(a).unwrap())
        .collect::<Vec<_>>();
    deisctl::settings::set(&mut client, &keys, &set).await.unwrap();
    deisctl::settings::set(
        &mut client,
        &keys,
        &[deisctl::settings::parse_assignment("https_only=off").unwrap()],
    )
    .await
    .unwrap();
    let all = deisctl::settings::get_all(&mut client, &keys).await.unwrap();
    assert_eq!(all.get("domain").map(String::as_str), Some("apps.example.com"));
    assert_eq!(all.get("https_only").map(String::as_str), Some("false"));
    // What the routers read is exactly what was written.
    let raw = client.get(keys.setting("domain"), None).await.unwrap();
    assert_eq!(raw.kvs()[0].value(), b"apps.example.com");
    client
        .delete(config.etcd.prefix.clone(), Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
}

/// Removes the test's containers however the test ends.
struct Cleanup(bollard::Docker, Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (docker, names) = (self.0.clone(), self.1.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for name in names {
                    let options = RemoveContainerOptions { force: true, ..Default::default() };
                    let _ = docker.remove_container(&name, Some(options)).await;
                }
            });
        });
        let _ = done.join();
    }
}

#[tokio::test]
async fn parts_are_found_by_label_and_a_node_is_stopped_with_everything_on_it() {
    let docker = service_kit::docker::connect().await.unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let project = format!("deis-test-{}", &run[..12]);
    let mut cleanup = Cleanup(docker.clone(), Vec::new());
    let mut create = async |component: &str, node: &str| {
        let name = format!("{project}-{component}-{node}");
        let labels = HashMap::from([
            (deisctl::parts::LABEL_PROJECT.to_owned(), project.clone()),
            (deisctl::parts::LABEL_COMPONENT.to_owned(), component.to_owned()),
            (deisctl::parts::LABEL_INSTANCE.to_owned(), node.to_owned()),
            (deisctl::parts::LABEL_NODE.to_owned(), node.to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some("deis/base".to_owned()),
            cmd: Some(vec![
                "sh".into(),
                "-c".into(),
                format!("echo {component} on {node} started; exec sleep infinity"),
            ]),
            labels: Some(labels),
            stop_signal: Some("SIGKILL".into()),
            ..Default::default()
        };
        cleanup.1.push(name.clone());
        docker
            .create_container(
                Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }),
                body,
            )
            .await
            .expect("deis/base must exist: run compose/images");
    };
    create("node", "node1").await;
    create("router", "node1").await;
    create("node", "node2").await;
    create("router", "node2").await;

    let parts = Parts::new(docker.clone(), &project);
    let quiet = |_: &str| {};
    parts.start(&Target::Platform, quiet).await.unwrap();
    let all = parts.list().await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|c| c.running()), "{all:?}");

    parts.stop(&Target::parse("node2").unwrap(), quiet).await.unwrap();
    let all = parts.list().await.unwrap();
    let running: Vec<String> = all.iter().filter(|c| c.running()).map(|c| c.part()).collect();
    assert_eq!(running, ["node1", "router@node1"]);

    parts.start(&Target::parse("node2").unwrap(), quiet).await.unwrap();
    assert!(parts.list().await.unwrap().iter().all(|c| c.running()));

    // A container just started may not have run its `echo` yet (CI once read node2's log before
    // it had), and its first run may have been killed before it did: read until both lines are in.
    let router = Target::parse("router").unwrap();
    let wanted = ["router@node1| router on node1 started", "router@node2| router on node2 started"];
    eventually("both routers' start lines in their logs", Duration::from_secs(10), || async {
        let mut lines = Vec::new();
        parts
            .logs(&router, Some(10), false, |part, line| lines.push(format!("{part}| {line}")))
            .await
            .unwrap();
        wanted.iter().all(|w| lines.iter().any(|l| l == w)).then_some(())
    })
    .await;

    let unknown = parts.stop(&Target::parse("builder").unwrap(), quiet).await.unwrap_err().to_string();
    assert!(unknown.contains("router@node2"), "{unknown}");
}
