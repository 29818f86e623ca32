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

/// Runs `python3 -c code` inside a container (as `user`, or the container's own); its output and
/// whether it succeeded.
fn exec_python(container: &str, user: Option<&str>, code: &str) -> (bool, String) {
    let mut cmd = std::process::Command::new("docker");
    cmd.arg("exec");
    if let Some(user) = user {
        cmd.args(["--user", user]);
    }
    let out = cmd.args([container, "python3", "-c", code]).output().expect("docker exec runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Python that connects to `ip:port` and says whether it could.
fn connect_probe(ip: &str, port: u16) -> String {
    format!(
        "import socket\ns = socket.socket()\ns.settimeout(3)\ntry:\n    s.connect(('{ip}', {port}))\n    \
         print('reached')\nexcept OSError as e:\n    print('blocked', e)\n"
    )
}

/// What an app container must be: on the app network, unprivileged, limited.
fn assert_confined(info: &bollard::models::ContainerInspectResponse, memory_mb: i64) {
    let confinement = agent::config::Confinement::default();
    let name = info.name.clone().unwrap_or_default();
    let host = info.host_config.clone().unwrap();
    assert_eq!(
        host.network_mode.as_deref(),
        Some(confinement.network.as_str()),
        "{name}: on the app network"
    );
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]), "{name}: every capability dropped");
    let kept = host.cap_add.unwrap_or_default();
    assert!(!kept.iter().any(|c| c.contains("NET_RAW")), "{name}: NET_RAW is not given back: {kept:?}");
    assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_owned()]), "{name}");
    assert_eq!(host.pids_limit, Some(confinement.pids_limit), "{name}: a pids limit");
    assert_eq!(host.memory, Some(memory_mb * 1024 * 1024), "{name}: a memory limit");
    let user = info.config.as_ref().and_then(|c| c.user.clone());
    assert_eq!(
        user.as_deref(),
        Some(confinement.default_user.as_str()),
        "{name}: deis/stack runs unprivileged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_confined_and_cannot_reach_each_other() {
    let setup = Setup::new("agentisolate");
    let (shutdown, task) = setup.spawn_agent();
    let bus = setup.bus().await;
    let etcd = setup.etcd().await;
    let docker = service_kit::docker::connect().await.unwrap();
    let alpha = AppName::parse("alpha").unwrap();
    let beta = AppName::parse("beta").unwrap();

    let alpha_cmd = web_container(&alpha, 1, 1, SERVE);
    // Beta sets no memory limit: it gets the default one.
    let beta_cmd = StartContainer { limits: Limits::default(), ..web_container(&beta, 1, 1, SERVE) };
    for cmd in [&alpha_cmd, &beta_cmd] {
        let reply = setup.start_once_listening(&bus, cmd).await;
        assert!(matches!(reply, StartContainerReply::Started { .. }), "{reply:?}");
    }
    // Both answer (the agent reaches them on their own addresses): they are up and listening.
    setup.a_route(&etcd, &alpha, "alpha is healthy", Duration::from_secs(20)).await;
    setup.a_route(&etcd, &beta, "beta is healthy", Duration::from_secs(20)).await;

    let alpha_name = format!("{}node1.alpha.v1.web.1", setup.prefix);
    let beta_name = format!("{}node1.beta.v1.web.1", setup.prefix);
    let alpha_info = docker.inspect_container(&alpha_name, None).await.unwrap();
    let beta_info = docker.inspect_container(&beta_name, None).await.unwrap();
    assert_confined(&alpha_info, 128);
    assert_confined(
        &beta_info,
        i64::try_from(agent::config::Confinement::default().default_memory_mb).unwrap(),
    );

    let ip = |info: &bollard::models::ContainerInspectResponse| {
        let networks = info.network_settings.as_ref().and_then(|n| n.networks.clone()).unwrap_or_default();
        let network = agent::config::Confinement::default().network;
        networks.get(&network).and_then(|e| e.ip_address.clone()).filter(|ip| !ip.is_empty()).unwrap()
    };
    let (alpha_ip, beta_ip) = (ip(&alpha_info), ip(&beta_info));
    // The probe itself works: alpha reaches its own server.
    let (_, own) = exec_python(&alpha_name, None, &connect_probe(&alpha_ip, 5000));
    assert!(own.starts_with("reached"), "alpha reaches itself: {own}");
    // Alpha cannot reach beta's container directly, nor beta alpha's.
    let (_, across) = exec_python(&alpha_name, None, &connect_probe(&beta_ip, 5000));
    assert!(across.starts_with("blocked"), "alpha must not reach beta at {beta_ip}: {across}");
    let (_, back) = exec_python(&beta_name, None, &connect_probe(&alpha_ip, 5000));
    assert!(back.starts_with("blocked"), "beta must not reach alpha at {alpha_ip}: {back}");

    // No raw sockets, not even for root inside the container: NET_RAW is not in its bounding set.
    let raw =
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\nprint('raw')";
    let (opened, out) = exec_python(&alpha_name, Some("0"), raw);
    assert!(!opened && out.contains("PermissionError"), "a raw socket must be refused: {out}");
    let bounding = "print([l for l in open('/proc/self/status') if l.startswith('CapBnd')][0].split()[1])";
    let (_, out) = exec_python(&alpha_name, None, bounding);
    let caps = u64::from_str_radix(out.trim(), 16).unwrap();
    const CAP_NET_RAW: u32 = 13;
    assert_eq!(caps & (1 << CAP_NET_RAW), 0, "NET_RAW is not in the bounding set {caps:#x}");
    let (_, uid) = exec_python(&alpha_name, None, "import os; print(os.getuid())");
    assert_eq!(uid.trim(), "1000", "the app runs unprivileged");

    // A one-off (`deis run`) is confined the same way.
    let run = RunOneOff {
        app: alpha.clone(),
        run_id: uuid::Uuid::new_v4(),
        version: 1,
        image: "deis/stack".into(),
        command: "sleep 60".into(),
        env: BTreeMap::new(),
        limits: Limits::default(),
    };
    let reply = bus
        .request(&setup.ns.agent_run(&setup.node), &bus.envelope(run), Duration::from_secs(60))
        .await
        .unwrap();
    let StartContainerReply::Started { container_id: one_off, .. } = reply.body else {
        panic!("{:?}", reply.body)
    };
    let one_off_info = docker.inspect_container(&one_off, None).await.unwrap();
    assert_confined(
        &one_off_info,
        i64::try_from(agent::config::Confinement::default().default_memory_mb).unwrap(),
    );
    let (_, from_run) = exec_python(&one_off, None, &connect_probe(&beta_ip, 5000));
    assert!(from_run.starts_with("blocked"), "a one-off must not reach beta at {beta_ip}: {from_run}");

    shutdown.trigger();
    task.await.unwrap();
    setup.cleanup().await;
}

/// Images a test builds, removed when it ends however it ends. Made before the test's [`Setup`],
/// so it is dropped after it: the containers go first, then their images.
struct TestImages(Vec<String>);

impl TestImages {
    /// Builds `dockerfile` (no context) as `tag`, through the CLI with an argument list.
    fn build(&mut self, tag: &str, dockerfile: &str) {
        use std::io::Write as _;
        self.0.push(tag.to_owned());
        let mut child = std::process::Command::new("docker")
            .args(["build", "--quiet", "--tag", tag, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker build runs");
        child.stdin.take().unwrap().write_all(dockerfile.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "building {tag}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for TestImages {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::process::Command::new("docker").args(["rmi", "--force"]).args(&self.0).output();
        }
    }
}

/// The HTTP status `url` answers with, if it answers.
async fn http_status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    client.get(url).send().await.ok().map(|r| r.status().as_u16())
}

/// A web container's inside port as the engine has it: its `PORT`, its label, the container
/// port its host port is published for, and its own address on the app network.
async fn container_port(docker: &bollard::Docker, name: &str) -> (String, String, Vec<String>, String) {
    let info = docker.inspect_container(name, None).await.unwrap();
    let config = info.config.clone().unwrap();
    let env = config.env.unwrap_or_default();
    let port_env = env.iter().filter_map(|e| e.strip_prefix("PORT=")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(port_env.len(), 1, "{name}: one PORT, not {env:?}");
    let label = config.labels.unwrap_or_default().get(agent::port::LABEL).cloned().unwrap_or_default();
    let settings = info.network_settings.unwrap();
    let published: Vec<String> = settings
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, bindings)| bindings.as_ref().is_some_and(|b| !b.is_empty()))
        .map(|(port, _)| port)
        .collect();
    let network = agent::config::Confinement::default().network;
    let ip = settings.networks.unwrap_or_default().get(&network).and_then(|e| e.ip_address.clone()).unwrap();
    (port_env[0].clone(), label, published, ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_images_exposed_port_is_the_apps_unless_its_config_says_otherwise() {
    let mut images = TestImages(Vec::new());
    let setup = Setup::new("agentport");
    // A Dockerfile app: its own command serves on $PORT. UDP 53 is lower, but not for HTTP.
    let serve = "CMD echo serving on $PORT; exec python3 -u -m http.server \"$PORT\"\n";
    let exposed = format!("{}exposed:latest", setup.prefix);
    images.build(&exposed, &format!("FROM deis/stack\nEXPOSE 53/udp 8080 8000\n{serve}"));
    let plain = format!("{}plain:latest", setup.prefix);
    images.build(&plain, &format!("FROM deis/stack\n{serve}"));

    let (shutdown, task) = setup.spawn_agent();
    let bus = setup.bus().await;
    let etcd = setup.etcd().await;
    let docker = service_kit::docker::connect().await.unwrap();
    let start = |app: &str, image: &str, env: &[(&str, &str)]| StartContainer {
        image: image.to_owned(),
        command: String::new(),
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..web_container(&AppName::parse(app).unwrap(), 1, 1, "")
    };
    let cases = [
        ("exposed", start("exposed", &exposed, &[]), "8000"),
        ("override", start("override", &exposed, &[("PORT", "9000")]), "9000"),
        ("plain", start("plain", &plain, &[]), "5000"),
        // A PORT that is no port is ignored: the image's port.
        ("badport", start("badport", &exposed, &[("PORT", "http")]), "8000"),
    ];
    let mut host_ports = BTreeMap::new();
    for (app, cmd, want) in &cases {
        let reply = setup.start_once_listening(&bus, cmd).await;
        let StartContainerReply::Started { host_port: Some(host_port), .. } = reply else {
            panic!("{app}: {reply:?}")
        };
        host_ports.insert(*app, host_port);
        let app_name = cmd.key.app.clone();
        // The agent checks the app on its own port: the route comes only once it answers there.
        let route =
            setup.a_route(&etcd, &app_name, &format!("{app} is healthy"), Duration::from_secs(30)).await;
        assert_eq!(route.address, format!("127.0.0.1:{host_port}"), "{app}");
        let name = format!("{}node1.{app}.v1.web.1", setup.prefix);
        let (port_env, label, published, ip) = container_port(&docker, &name).await;
        assert_eq!(port_env, *want, "{app}: PORT");
        assert_eq!(label, *want, "{app}: the port is recorded on the container");
        assert_eq!(published, vec![format!("{want}/tcp")], "{app}: the app's port is the one published");
        assert_eq!(http_status(&format!("http://{ip}:{want}/")).await, Some(200), "{app} answers on {want}");
        assert_eq!(http_status(&format!("http://{}/", route.address)).await, Some(200), "{app}'s route");
    }

    // A restarted agent reads each container's port from the container: it finds the host port
    // published for it and checks the app there (with 5000 it would find neither).
    shutdown.trigger();
    task.await.unwrap();
    let (shutdown, task) = setup.spawn_agent();
    let mut inventories = bus.subscribe(&setup.ns.all_node_inventories()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let inv = inventories.next().await.unwrap().unwrap().envelope.body;
            let adopted = cases.iter().all(|(app, cmd, _)| {
                inv.containers
                    .iter()
                    .any(|c| c.key == cmd.key && c.healthy && c.host_port == host_ports.get(app).copied())
            });
            if adopted {
                return;
            }
        }
    })
    .await
    .expect("the new agent reports every container healthy, with its host port");

    shutdown.trigger();
    task.await.unwrap();
    setup.cleanup().await;
}
