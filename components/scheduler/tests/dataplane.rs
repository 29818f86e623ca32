//! The data plane for real: a controller (Postgres, NATS), two agents with their own node ids on
//! the real Docker engine, and schedulers, all on loopback. Apps are driven through the
//! controller's API, as `deis` would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent::AgentConfig;
use bus_schema::discovery::{Keys, RouteRecord};
use bus_schema::messages::{AppStatusRequest, DeployState};
use bus_schema::{AppName, Namespace};
use controller::testing::TestController;
use controller_api::{BuildCreateRequest, Client};
use scheduler::SchedulerConfig;
use service_kit::testing::{LateService, TestServices, eventually};
use service_kit::{EtcdConfig, NatsConfig, Shutdown};

/// A web server that answers with its release, so a test can tell which release serves.
const SERVE: &str = "mkdir -p /tmp/www && echo \"release $DEIS_RELEASE\" > /tmp/www/index.html && exec python3 -u -m http.server $PORT -d /tmp/www";

struct Plane {
    ctl: TestController,
    admin: Client,
    ns: Namespace,
    keys: Keys,
    prefix: String,
    agents: BTreeMap<String, (Shutdown, tokio::task::JoinHandle<()>)>,
    schedulers: Vec<(Shutdown, tokio::task::JoinHandle<()>)>,
    etcd: etcd_client::Client,
    docker: bollard::Docker,
    tags: Vec<String>,
    _cleanup: Cleanup,
}

impl Plane {
    async fn start(test: &str) -> Self {
        let ctl = TestController::start(test).await;
        // An administrator: the images deployed here are in repositories named for the test, not
        // for the app, which only an administrator may deploy.
        let admin = ctl.admin("admin").await;
        let ns = ctl.ns.clone();
        let prefix = format!("deis-test-{}-", ns.root());
        let keys = Keys::new(&format!("/{}", ns.root()));
        let etcd = etcd_client::Client::connect(TestServices::get().etcd_endpoints, None).await.unwrap();
        let docker = service_kit::docker::connect().await.unwrap();
        let _cleanup = Cleanup { prefix: prefix.clone() };
        Self {
            ctl,
            admin,
            ns,
            keys,
            prefix,
            agents: BTreeMap::new(),
            schedulers: Vec::new(),
            etcd,
            docker,
            tags: Vec::new(),
            _cleanup,
        }
    }

    /// A plane with agents on node1 and node2 and one scheduler: where most tests run.
    async fn with_two_nodes(test: &str) -> Self {
        let mut plane = Self::start(test).await;
        plane.start_agent("node1");
        plane.start_agent("node2");
        plane.start_scheduler("sched-a");
        plane
    }

    fn nats(&self) -> NatsConfig {
        NatsConfig {
            url: TestServices::get().nats_url,
            namespace: self.ns.root().to_owned(),
            stream_max_mb: Some(8),
            ..Default::default()
        }
    }

    fn etcd_config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: TestServices::get().etcd_endpoints,
            prefix: self.keys.prefix().to_owned(),
            ..Default::default()
        }
    }

    fn start_agent(&mut self, node: &str) {
        self.start_agent_via(node, self.nats(), self.etcd_config());
    }

    /// An agent reaching NATS and etcd where told (a `LateService`, say).
    fn start_agent_via(&mut self, node: &str, nats: NatsConfig, etcd: EtcdConfig) {
        let config = AgentConfig {
            nats,
            etcd,
            node_id: node.to_owned(),
            container_prefix: self.prefix.clone(),
            memory_mb: 4096,
            lease_ttl_secs: 2,
            health_interval_ms: 300,
            inventory_interval_ms: 500,
            ..Default::default()
        };
        let running = spawn_until_shutdown(|s| async move { agent::run(config, s).await.unwrap() });
        self.agents.insert(node.to_owned(), running);
    }

    async fn stop_agent(&mut self, node: &str) {
        let (shutdown, task) = self.agents.remove(node).unwrap();
        shutdown.trigger();
        task.await.unwrap();
    }

    /// A scheduler reaching NATS and etcd where told.
    fn start_scheduler_via(&mut self, instance: &str, nats: NatsConfig, etcd: EtcdConfig) {
        let config = SchedulerConfig {
            nats,
            etcd,
            instance: instance.to_owned(),
            leader_ttl_secs: 2,
            deploy_timeout_secs: 10,
            reconcile_interval_ms: 500,
            settle_ms: 1500,
            stop_grace_secs: 2,
            command_timeout_secs: 60,
            ..Default::default()
        };
        self.schedulers
            .push(spawn_until_shutdown(|s| async move { scheduler::run(config, s).await.unwrap() }));
    }

    fn start_scheduler(&mut self, instance: &str) {
        self.start_scheduler_via(instance, self.nats(), self.etcd_config());
    }

    /// Deploys a build of `deis/stack` running `web`: the image is tagged locally (what the
    /// agents run) and announced to the registry (what the controller checks).
    async fn deploy(&mut self, app: &str, tag: &str, web: &str) {
        let registry = TestServices::get().registry;
        let repo = format!("{registry}/{}-{app}", self.ns.root());
        self.docker
            .tag_image(
                "deis/stack",
                Some(bollard::query_parameters::TagImageOptions {
                    repo: Some(repo.clone()),
                    tag: Some(tag.to_owned()),
                }),
            )
            .await
            .unwrap();
        self.tags.push(format!("{repo}:{tag}"));
        service_kit::testing::push_tiny_image(
            &registry,
            repo.trim_start_matches(&format!("{registry}/")),
            tag,
        )
        .await;
        self.admin
            .build_create(
                app,
                &BuildCreateRequest {
                    image: format!("{repo}:{tag}"),
                    procfile: BTreeMap::from([("web".into(), web.into())]),
                },
            )
            .await
            .unwrap();
    }

    /// Creates `app`, deploys a build of it that serves its release and runs `replicas` web
    /// containers of it; returns their routes once every one is routed.
    async fn serve(&mut self, app: &str, replicas: usize) -> Vec<RouteRecord> {
        self.admin.app_create(Some(app)).await.unwrap();
        self.deploy(app, "v1", SERVE).await;
        // The first deploy runs one; scaling is only asked for more.
        if replicas != 1 {
            let web = u32::try_from(replicas).unwrap();
            self.admin.scale(app, &BTreeMap::from([("web".into(), web)])).await.unwrap();
        }
        let what = format!("{replicas} routes of {app}");
        self.wait_routes(app, &what, Duration::from_secs(60), |r| r.len() == replicas).await
    }

    async fn routes(&self, app: &str) -> Vec<RouteRecord> {
        let app = AppName::parse(app).unwrap();
        let mut etcd = self.etcd.clone();
        let resp = etcd
            .get(self.keys.app_routes(&app), Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        resp.kvs().iter().map(|kv| serde_json::from_slice(kv.value()).unwrap()).collect()
    }

    /// Every container running on the engine, this test's or not.
    async fn running(&self) -> Vec<bollard::models::ContainerSummary> {
        self.docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: false,
                ..Default::default()
            }))
            .await
            .unwrap()
    }

    /// Names of this test's containers of an app that run on the engine.
    async fn containers(&self, app: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .running()
            .await
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_owned())
            .filter(|n| n.starts_with(&self.prefix) && n.contains(&format!(".{app}.v")))
            .collect();
        names.sort();
        names
    }

    async fn container_ids(&self, app: &str) -> Vec<String> {
        self.running()
            .await
            .into_iter()
            .filter(|c| {
                c.names.iter().flatten().any(|n| {
                    n.trim_start_matches('/').starts_with(&self.prefix) && n.contains(&format!(".{app}.v"))
                })
            })
            .filter_map(|c| c.id)
            .collect()
    }

    async fn wait_routes(
        &self,
        app: &str,
        what: &str,
        patience: Duration,
        ok: impl Fn(&[RouteRecord]) -> bool,
    ) -> Vec<RouteRecord> {
        let start = Instant::now();
        loop {
            let routes = self.routes(app).await;
            if ok(&routes) {
                return routes;
            }
            assert!(start.elapsed() < patience, "{what}: not true after {patience:?}; routes: {routes:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Posts to the API as a Deis v1 client does (none of this project's client's headers) and
    /// reads the JSON answer.
    async fn post_v1(&self, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", self.ctl.url))
            .header("Authorization", format!("token {}", self.admin.token().unwrap()));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    async fn stop(mut self) {
        for (shutdown, task) in self.schedulers.drain(..) {
            shutdown.trigger();
            let _ = task.await;
        }
        let nodes: Vec<String> = self.agents.keys().cloned().collect();
        for node in nodes {
            self.stop_agent(&node).await;
        }
        for tag in &self.tags {
            let _ = self
                .docker
                .remove_image(tag, None::<bollard::query_parameters::RemoveImageOptions>, None)
                .await;
        }
        self.ctl.stop().await;
    }
}

/// Runs a component (its `run(config, shutdown)`) on a task, with a shutdown of its own for the
/// test to stop it by.
fn spawn_until_shutdown<F>(run: impl FnOnce(Shutdown) -> F) -> (Shutdown, tokio::task::JoinHandle<()>)
where
    F: Future<Output = ()> + Send + 'static,
{
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(shutdown.clone()));
    (shutdown, task)
}

/// Whatever happens in a test, no container of it outlives it.
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name={}", self.prefix)])
            .output()
        {
            let ids: Vec<String> =
                String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker").arg("rm").arg("-f").args(&ids).output();
            }
        }
    }
}

async fn get(address: &str) -> Option<String> {
    let resp = reqwest::Client::new()
        .get(format!("http://{address}/"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_scales_out_scales_in_and_a_failing_release_leaves_the_old_one_serving() {
    let mut plane = Plane::with_two_nodes("rollout").await;
    let routes = plane.serve("web3", 3).await;
    let nodes: std::collections::BTreeSet<String> = routes.iter().map(|r| r.node.to_string()).collect();
    assert_eq!(nodes.len(), 2, "replicas spread over both nodes: {routes:?}");
    assert_eq!(plane.containers("web3").await.len(), 3);
    for r in &routes {
        assert_eq!(get(&r.address).await.as_deref(), Some("release v2\n"));
    }
    // `deis ps` through the controller, which asks the scheduler.
    let ps = eventually("deis ps shows three containers up", Duration::from_secs(10), || async {
        let c = plane.admin.containers("web3").await.ok()?;
        (c.len() == 3 && c.iter().all(|c| c.state == "up" && c.release == "v2")).then_some(c)
    })
    .await;
    assert_eq!(ps.iter().map(|c| c.num).collect::<Vec<_>>(), vec![1, 2, 3]);

    // `deis ps:restart web`: every container is replaced, one at a time, so two keep serving.
    let before = plane.container_ids("web3").await;
    let reply = plane
        .admin
        .restart("web3", &controller_api::RestartRequest { process_type: Some("web".into()), num: None })
        .await
        .unwrap();
    assert_eq!(reply.iter().map(|c| c.num).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(reply.iter().all(|c| c.process_type == "web" && c.release == "v2"), "{reply:?}");
    let start = Instant::now();
    let mut fewest_routes = usize::MAX;
    loop {
        fewest_routes = fewest_routes.min(plane.routes("web3").await.len());
        let now = plane.container_ids("web3").await;
        if now.len() == 3
            && now.iter().all(|id| !before.contains(id))
            && plane.routes("web3").await.len() == 3
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "restart did not finish: {before:?} -> {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fewest_routes >= 2, "a rolling restart keeps the others serving (saw {fewest_routes} routes)");
    println!("rolling restart of 3 containers took {:?}", start.elapsed());

    // Deis v1 clients restart one container by path and read the list of what restarts.
    let v1 = plane.post_v1("/v1/apps/web3/containers/web/2/restart/", None).await;
    let restarted = v1.as_array().unwrap_or_else(|| panic!("a list: {v1}"));
    assert_eq!(restarted.len(), 1, "{v1}");
    assert_eq!(
        (&restarted[0]["type"], &restarted[0]["num"]),
        (&serde_json::json!("web"), &serde_json::json!(2))
    );

    // `deis run`: a one-off in the current release, its output streamed, its status returned.
    let mut seen = Vec::new();
    let exit = plane
        .admin
        .run("web3", "echo hello from $DEIS_APP $DEIS_RELEASE; echo oops >&2; exit 3", |e| {
            seen.push(e.clone())
        })
        .await
        .unwrap();
    assert_eq!(exit, Some(3));
    assert!(
        seen.contains(&controller_api::RunEvent::Line {
            line: "hello from web3 v2".into(),
            stream: "stdout".into()
        }),
        "{seen:?}"
    );
    assert!(
        seen.contains(&controller_api::RunEvent::Line { line: "oops".into(), stream: "stderr".into() }),
        "{seen:?}"
    );
    // A Deis v1 client asks without `Accept: application/x-ndjson` and wants `[exit_code, output]`.
    let v1 = plane
        .post_v1("/v1/apps/web3/run", Some(serde_json::json!({ "command": "echo v1 says hi; exit 4" })))
        .await;
    assert_eq!(v1, serde_json::json!([4, "v1 says hi\n"]));
    eventually("the one-off container is removed", Duration::from_secs(10), || async {
        let names = plane.containers("web3").await;
        (!names.iter().any(|n| n.contains(".run."))).then_some(())
    })
    .await;

    plane.admin.scale("web3", &BTreeMap::from([("web".into(), 1)])).await.unwrap();
    plane.wait_routes("web3", "scaled to one route", Duration::from_secs(30), |r| r.len() == 1).await;
    eventually("two containers removed", Duration::from_secs(30), || async {
        (plane.containers("web3").await.len() == 1).then_some(())
    })
    .await;

    // A release whose web process never listens: v2 keeps serving, v3 is reported failed.
    plane.deploy("web3", "broken", "exec sleep 600").await;
    let bus = plane.ctl.bus().await;
    let status = eventually("the rollout of v3 fails", Duration::from_secs(40), || {
        let bus = bus.clone();
        let ns = plane.ns.clone();
        async move {
            let req = bus.envelope(AppStatusRequest { app: AppName::parse("web3").unwrap() });
            let status = bus.request(&ns.app_status(), &req, Duration::from_secs(2)).await.ok()?.body;
            matches!(status.deploy, Some(DeployState::Failed { .. })).then_some(status)
        }
    })
    .await;
    assert!(
        matches!(status.deploy, Some(DeployState::Failed { version: 3, serving: Some(2), .. })),
        "{status:?}"
    );
    let routes = plane.routes("web3").await;
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].version, 2);
    assert_eq!(get(&routes[0].address).await.as_deref(), Some("release v2\n"));
    eventually("the failed release's container is gone", Duration::from_secs(30), || async {
        let names = plane.containers("web3").await;
        (names.len() == 1 && names[0].contains(".v2.")).then_some(())
    })
    .await;
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_node_is_replaced_within_seconds_and_its_return_does_not_overshoot() {
    let mut plane = Plane::with_two_nodes("nodeloss").await;
    let routes = plane.serve("sturdy", 2).await;
    assert_ne!(routes[0].node, routes[1].node, "one replica per node");

    // node1's agent stops keeping its lease alive: to the cluster the node is gone.
    let lost = Instant::now();
    plane.stop_agent("node1").await;
    plane
        .wait_routes("sturdy", "both replicas serve from node2", Duration::from_secs(10), |r| {
            r.len() == 2 && r.iter().all(|r| r.node.as_str() == "node2")
        })
        .await;
    println!(
        "node loss: both replicas routed on the surviving node {:?} after the agent stopped",
        lost.elapsed()
    );

    // The node comes back with its old container still running: it is told to stop it.
    plane.start_agent("node1");
    eventually("no more containers than asked once things settle", Duration::from_secs(30), || async {
        let names = plane.containers("sturdy").await;
        (names.len() == 2 && names.iter().all(|n| n.contains("node2."))).then_some(())
    })
    .await;
    assert_eq!(plane.routes("sturdy").await.len(), 2);
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_scheduler_takes_over_without_duplicating_or_losing_containers() {
    let mut plane = Plane::with_two_nodes("handover").await;
    plane.serve("ha", 2).await;
    plane.start_scheduler("sched-b");
    let before = plane.containers("ha").await;

    // The leader dies without a word: its lease must run out before the standby takes over.
    let (_, leader) = plane.schedulers.remove(0);
    leader.abort();
    let died = Instant::now();
    plane.admin.scale("ha", &BTreeMap::from([("web".into(), 3)])).await.unwrap();
    plane
        .wait_routes("ha", "the new leader scales to three", Duration::from_secs(30), |r| r.len() == 3)
        .await;
    println!("leader handover: the standby acted on a scale {:?} after the leader died", died.elapsed());
    let after = plane.containers("ha").await;
    assert_eq!(after.len(), 3, "{after:?}");
    for name in &before {
        assert!(after.contains(name), "{name} was replaced instead of kept: {after:?}");
    }
    plane.stop().await;
}

/// The bug found from outside: minutes after a deploy (here past its 10 s deploy timeout), a
/// killed container or a scale was taken for a failed deploy and every container was stopped.
/// Both are reconciliation: the killed container comes back, the scale is carried out, and the app
/// keeps at least one route all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_after_a_deploy_a_killed_container_comes_back_and_a_scale_runs_without_an_outage() {
    let mut plane = Plane::with_two_nodes("dayafter").await;
    plane.serve("steady", 2).await;
    // Well past the deploy timeout (10 s here).
    tokio::time::sleep(Duration::from_secs(15)).await;

    let ids = plane.container_ids("steady").await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    let killed = Instant::now();
    plane
        .docker
        .kill_container(&ids[0], None::<bollard::query_parameters::KillContainerOptions>)
        .await
        .unwrap();
    let mut fewest = usize::MAX;
    loop {
        let routes = plane.routes("steady").await;
        fewest = fewest.min(routes.len());
        let running = plane.container_ids("steady").await;
        if routes.len() == 2 && running.len() == 2 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the killed container was not replaced: routes {routes:?}, running {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("a killed container was back and routed after {:?}", killed.elapsed());
    assert!(fewest >= 1, "the other container kept serving (fewest routes seen: {fewest})");

    plane.admin.scale("steady", &BTreeMap::from([("web".into(), 3)])).await.unwrap();
    let start = Instant::now();
    loop {
        let routes = plane.routes("steady").await;
        fewest = fewest.min(routes.len());
        if routes.len() == 3 {
            for r in &routes {
                assert_eq!(get(&r.address).await.as_deref(), Some("release v2\n"));
            }
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "scale to 3 not carried out: {routes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fewest >= 1, "the app kept a route all along (fewest seen: {fewest})");
    // Still deployed, never failed.
    let bus = plane.ctl.bus().await;
    let req = bus.envelope(AppStatusRequest { app: AppName::parse("steady").unwrap() });
    let status = bus.request(&plane.ns.app_status(), &req, Duration::from_secs(5)).await.unwrap().body;
    assert_eq!(status.deploy, Some(DeployState::Deployed { version: 2 }), "{status:?}");
    plane.stop().await;
}

/// An agent and a scheduler started before NATS and etcd (a node booting first, or both restarted
/// while the bus and etcd are down): once those come, an app deploys and serves; after NATS goes
/// away (every connection cut) and comes back, a scale still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_and_a_scheduler_started_before_nats_and_etcd_deploy_once_they_come() {
    let mut plane = Plane::start("startfirst").await;
    let services = TestServices::get();
    let nats = LateService::new(services.nats_url.trim_start_matches("nats://")).await;
    let etcd = LateService::new(services.etcd_endpoints[0].trim_start_matches("http://")).await;
    let late_nats = NatsConfig { url: nats.url("nats"), ..plane.nats() };
    let late_etcd = EtcdConfig { endpoints: vec![etcd.url("http")], ..plane.etcd_config() };
    plane.start_agent_via("node1", late_nats.clone(), late_etcd.clone());
    plane.start_scheduler_via("sched-a", late_nats, late_etcd);
    // Long enough for their first attempts at both to fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agents = plane.agents.iter().map(|(node, t)| (node.as_str(), t));
    for (what, (_, task)) in agents.chain(plane.schedulers.iter().map(|t| ("scheduler", t))) {
        assert!(!task.is_finished(), "{what} waits for NATS and etcd instead of exiting");
    }
    nats.open();
    etcd.open();

    let routes = plane.serve("early", 1).await;
    assert_eq!(get(&routes[0].address).await.as_deref(), Some("release v2\n"));

    nats.close();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.open();
    plane.admin.scale("early", &BTreeMap::from([("web".into(), 2)])).await.unwrap();
    plane
        .wait_routes("early", "the scale after NATS returned runs", Duration::from_secs(60), |r| r.len() == 2)
        .await;
    plane.stop().await;
}

/// Deis v1 clients read a change's effect right after its answer: without `Prefer:
/// respond-async` (which this project's client sends), `config:set` answers once the new release
/// serves, `scale` once its containers are up and `destroy` once they are gone, so the next
/// request already sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v1_client_gets_its_answer_once_the_change_runs() {
    let mut plane = Plane::start("settle").await;
    plane.start_agent("node1");
    plane.start_scheduler("sched-a");
    plane.serve("waits", 1).await;
    let http = reqwest::Client::new();
    let token = format!("token {}", plane.admin.token().unwrap());
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}/v1/apps/waits/{path}/", plane.ctl.url))
            .header("Authorization", token.clone())
            .json(&body)
            .send()
    };

    let asked = Instant::now();
    let resp = post("config", serde_json::json!({"values": {"GREETING": "hi"}})).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    println!("config:set answered after {:?}", asked.elapsed());
    let routes = plane.routes("waits").await;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(get(&routes[0].address).await.as_deref(), Some("release v3\n"), "the new release serves");

    let resp = post("scale", serde_json::json!({"web": 2})).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let routes = plane.routes("waits").await;
    assert_eq!(routes.len(), 2, "both containers are up when the scale answers: {routes:?}");

    let resp = http
        .delete(format!("{}/v1/apps/waits/", plane.ctl.url))
        .header("Authorization", token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(plane.containers("waits").await, Vec::<String>::new(), "destroy answers once nothing runs");
    plane.stop().await;
}
