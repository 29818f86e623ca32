//! The agent against the real Docker engine, NATS and etcd: it starts a `deis/stack` web
//! container, checks it, publishes its route and logs, stops it, and adopts running containers
//! after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use agent::AgentConfig;
use bus_schema::discovery::{Keys, RouteRecord};
use bus_schema::messages::*;
use bus_schema::{AppName, Component, Namespace, ProcessType, Sender};
use futures::StreamExt;
use service_kit::testing::{TestServices, eventually};
use service_kit::{EtcdConfig, NatsConfig, Shutdown};

/// One test's namespace, etcd keys and container names, and the node its agent runs as.
struct Setup {
    ns: Namespace,
    prefix: String,
    keys: Keys,
    node: bus_schema::NodeId,
}

impl Setup {
    fn new(test: &str) -> Self {
        let ns = Namespace::unique_for_test(test);
        let prefix = format!("deis-test-{}-", ns.root());
        let keys = Keys::new(&format!("/{}", ns.root()));
        Self { ns, prefix, keys, node: bus_schema::NodeId::parse("node1").unwrap() }
    }

    fn agent_config(&self) -> AgentConfig {
        let services = TestServices::get();
        AgentConfig {
            node_id: self.node.to_string(),
            container_prefix: self.prefix.clone(),
            lease_ttl_secs: 2,
            health_interval_ms: 300,
            inventory_interval_ms: 500,
            nats: NatsConfig {
                url: services.nats_url.clone(),
                namespace: self.ns.root().to_owned(),
                ..Default::default()
            },
            etcd: EtcdConfig {
                endpoints: services.etcd_endpoints.clone(),
                prefix: self.keys.prefix().to_owned(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn spawn_agent(&self) -> (Shutdown, tokio::task::JoinHandle<()>) {
        let shutdown = Shutdown::new();
        let config = self.agent_config();
        let s = shutdown.clone();
        let task = tokio::spawn(async move { agent::run(config, s).await.unwrap() });
        (shutdown, task)
    }

    async fn bus(&self) -> bus_schema::Bus {
        let config = NatsConfig {
            url: TestServices::get().nats_url,
            namespace: self.ns.root().to_owned(),
            ..Default::default()
        };
        service_kit::nats::connect_bus(
            &config,
            Sender { component: Component::Test, instance: "t".into() },
            &Shutdown::new(),
        )
        .await
        .unwrap()
    }

    async fn etcd(&self) -> etcd_client::Client {
        etcd_client::Client::connect(TestServices::get().etcd_endpoints, None).await.unwrap()
    }

    /// The first of the app's routes, once it has one.
    async fn a_route(
        &self,
        etcd: &etcd_client::Client,
        app: &AppName,
        what: &str,
        patience: Duration,
    ) -> RouteRecord {
        eventually(what, patience, || {
            let mut etcd = etcd.clone();
            async move { routes(&mut etcd, &self.keys, app).await.into_iter().next() }
        })
        .await
    }

    /// Asks the test's agent to start `cmd`, again until it answers: a new agent takes a moment
    /// to subscribe.
    async fn start_once_listening(&self, bus: &bus_schema::Bus, cmd: &StartContainer) -> StartContainerReply {
        let reply = eventually("the agent answers", Duration::from_secs(10), || async {
            bus.request(&self.ns.agent_start(&self.node), &bus.envelope(cmd.clone()), Duration::from_secs(60))
                .await
                .ok()
        })
        .await;
        reply.body
    }

    /// Removes every container this test created, whatever happened.
    async fn cleanup(&self) {
        let docker = service_kit::docker::connect().await.unwrap();
        let all = docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .unwrap();
        for c in all {
            if c.names.unwrap_or_default().iter().any(|n| n.trim_start_matches('/').starts_with(&self.prefix))
            {
                let _ = docker
                    .remove_container(
                        &c.id.unwrap_or_default(),
                        Some(bollard::query_parameters::RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
            }
        }
    }
}

/// Removes the test's containers even when the test panics before its own cleanup.
impl Drop for Setup {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name={}", self.prefix)])
            .output();
        if let Ok(out) = listed {
            let ids: Vec<String> =
                String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker").arg("rm").arg("-f").args(&ids).output();
            }
        }
    }
}

async fn routes(etcd: &mut etcd_client::Client, keys: &Keys, app: &AppName) -> Vec<RouteRecord> {
    let resp =
        etcd.get(keys.app_routes(app), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    resp.kvs().iter().map(|kv| serde_json::from_slice(kv.value()).unwrap()).collect()
}

fn web_container(app: &AppName, version: u32, index: u32, command: &str) -> StartContainer {
    StartContainer {
        key: ContainerKey { app: app.clone(), version, process_type: ProcessType::web(), index },
        image: "deis/stack".into(),
        command: command.into(),
        env: BTreeMap::from([("GREETING".into(), "hi".into())]),
        limits: Limits { memory_mb: Some(128), cpu_shares: None },
        health: None,
    }
}

const SERVE: &str = "echo serving on $PORT; exec python3 -u -m http.server $PORT";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_checks_routes_logs_and_stops_a_container() {
    let setup = Setup::new("agentrun");
    let (shutdown, task) = setup.spawn_agent();
    let bus = setup.bus().await;
    let mut lines = bus.subscribe(&setup.ns.all_log_lines()).await.unwrap();
    let mut events = bus.subscribe(&setup.ns.all_container_events()).await.unwrap();
    let app = AppName::parse("hello").unwrap();
    let mut etcd = setup.etcd().await;

    // The node registers itself under its lease.
    eventually("the node registers", Duration::from_secs(10), || {
        let mut etcd = etcd.clone();
        let key = setup.keys.node(&setup.node);
        async move { etcd.get(key, None).await.ok().filter(|r| !r.kvs().is_empty()).map(|_| ()) }
    })
    .await;

    let cmd = web_container(&app, 1, 1, SERVE);
    let reply = setup.start_once_listening(&bus, &cmd).await;
    let StartContainerReply::Started { host_port: Some(port), .. } = reply else { panic!("{reply:?}") };
    // Starting the same container again is a no-op that answers the same.
    let again = bus
        .request(&setup.ns.agent_start(&setup.node), &bus.envelope(cmd.clone()), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(again.body, StartContainerReply::Started { host_port: Some(p), .. } if p == port));

    let route =
        setup.a_route(&etcd, &app, "the healthy container gets a route", Duration::from_secs(20)).await;
    assert_eq!(route.address, format!("127.0.0.1:{port}"));
    let body = reqwest::get(format!("http://{}/", route.address)).await.unwrap();
    assert_eq!(body.status(), 200, "the route leads to the app");

    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines.next().await.unwrap().unwrap();
            if line.envelope.body.message.contains("serving on 5000") {
                return line.envelope.body;
            }
        }
    })
    .await
    .expect("the container's output reaches the bus");
    assert_eq!(first.source, LogSource::App { process_type: ProcessType::web(), index: 1 });
    let healthy = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.next().await.unwrap().unwrap();
            if e.envelope.body.kind == ContainerEventKind::Healthy {
                return e.envelope.body;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(healthy.key, cmd.key);

    let stopped = bus
        .request(
            &setup.ns.agent_stop(&setup.node),
            &bus.envelope(StopContainer { key: cmd.key.clone(), grace_secs: 2 }),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(stopped.body, StopContainerReply::Stopped);
    assert!(routes(&mut etcd, &setup.keys, &app).await.is_empty(), "a stopped container has no route");
    let docker = service_kit::docker::connect().await.unwrap();
    let name = format!("{}node1.hello.v1.web.1", setup.prefix);
    assert!(docker.inspect_container(&name, None).await.is_err(), "the container is gone");

    shutdown.trigger();
    task.await.unwrap();
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_running_containers() {
    let setup = Setup::new("agentadopt");
    let (shutdown, task) = setup.spawn_agent();
    let bus = setup.bus().await;
    let app = AppName::parse("kept").unwrap();
    let etcd = setup.etcd().await;

    let cmd = web_container(&app, 4, 2, SERVE);
    let reply = setup.start_once_listening(&bus, &cmd).await;
    let StartContainerReply::Started { container_id, .. } = reply else { panic!() };
    setup.a_route(&etcd, &app, "a route", Duration::from_secs(20)).await;

    // The agent goes away; its container does not.
    shutdown.trigger();
    task.await.unwrap();
    let (shutdown, task) = setup.spawn_agent();
    let mut inventories = bus.subscribe(&setup.ns.all_node_inventories()).await.unwrap();
    let adopted = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let inv = inventories.next().await.unwrap().unwrap().envelope.body;
            if let Some(c) = inv.containers.iter().find(|c| c.key == cmd.key && c.healthy) {
                return c.clone();
            }
        }
    })
    .await
    .expect("the new agent reports the adopted container healthy");
    assert_eq!(adopted.container_id, container_id, "adopted, not restarted");
    assert!(adopted.running);
    // Its route lives under the new agent's lease.
    let route = setup.a_route(&etcd, &app, "the route is still there", Duration::from_secs(10)).await;
    assert_eq!(route.version, 4);

    shutdown.trigger();
    task.await.unwrap();
    setup.cleanup().await;
}
