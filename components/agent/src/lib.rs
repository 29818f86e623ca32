//! The agent on every Docker host (Deis v1's publisher and logspout in one): it runs the
//! containers the scheduler asks for, checks their health, publishes a route for each healthy web
//! container under the node's etcd lease, follows their output onto the bus, and reports what
//! runs. A restarted agent adopts the containers it finds, without restarting them.

pub mod config;
pub mod engine;
pub mod port;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_schema::discovery::{Keys, NodeRecord, RouteRecord};
use bus_schema::messages::{
    ContainerEvent, ContainerEventKind, ContainerKey, ContainerStatus, HealthCheck, NodeInventory, RunOneOff,
    StartContainer, StartContainerReply, StopContainer, StopContainerReply,
};
use bus_schema::{AppName, Bus, CodecError, Component, Incoming, NodeId, Request, Sender, Timestamp};
use futures::StreamExt;
use service_kit::etcd::RegistrationState;
use service_kit::{Registration, RegistrationHandle, Shutdown};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use config::AgentConfig;
use engine::{Engine, Found};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("bad node id: {0}")]
    NodeId(#[from] bus_schema::NameError),
    #[error(transparent)]
    Docker(#[from] service_kit::docker::DockerError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Nats(#[from] service_kit::nats::NatsError),
    #[error(transparent)]
    Etcd(#[from] service_kit::etcd::EtcdError),
    #[error(transparent)]
    Bus(#[from] bus_schema::BusError),
}

/// A container this agent runs, with the tasks that watch it.
#[derive(Debug)]
struct Tracked {
    name: String,
    id: String,
    /// The port the app listens on inside the container (see [`port`]).
    port: u16,
    host_port: Option<u16>,
    ip: Option<String>,
    healthy: bool,
    health: Option<HealthCheck>,
    /// Cancels the health follower of this container.
    watchers: CancellationToken,
    /// Cancels the log follower. Stopping a container does not: the follower reads the output
    /// to its end (the last lines, and what the app writes while it shuts down), then says so on
    /// `logs_done`; only then is the container removed.
    log_stop: CancellationToken,
    logs_done: tokio::sync::watch::Receiver<bool>,
}

pub(crate) struct Inner {
    config: AgentConfig,
    node: NodeId,
    engine: Engine,
    bus: Bus,
    etcd: etcd_client::Client,
    keys: Keys,
    lease: tokio::sync::watch::Receiver<RegistrationState>,
    tracked: Mutex<HashMap<ContainerKey, Tracked>>,
    /// Serialises commands per container, so a duplicated start cannot create it twice.
    key_locks: Mutex<HashMap<ContainerKey, Arc<tokio::sync::Mutex<()>>>>,
    http: reqwest::Client,
    shutdown: Shutdown,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("node", &self.node).finish_non_exhaustive()
    }
}

/// Runs the agent until shutdown. Containers keep running after the agent stops; the node's
/// lease is left to expire rather than revoked, so a quick restart does not move anything.
pub async fn run(config: AgentConfig, shutdown: Shutdown) -> Result<(), AgentError> {
    let (inner, registration) = connect(config, &shutdown).await?;
    adopt(&inner).await?;
    serve(&inner, &shutdown).await?;
    inner.stop_watching();
    registration.abandon().await;
    tracing::info!(node = %inner.node, "agent stopped; containers left running");
    Ok(())
}

/// Connects to the engine, the bus and etcd, and registers the node.
async fn connect(
    config: AgentConfig,
    shutdown: &Shutdown,
) -> Result<(Arc<Inner>, RegistrationHandle), AgentError> {
    let node = NodeId::parse(&config.node_id)?;
    let docker = service_kit::docker::connect().await?;
    let (memory_mb, cpus) = capacity(&docker, &config).await;
    let engine = Engine {
        docker,
        node: node.clone(),
        prefix: config.container_prefix.clone(),
        app_port: config.app_port,
        confinement: config.confinement.clone(),
    };
    // Checked again before every start, which fails (saying why) until the network is right;
    // the agent itself keeps running so that its containers stay adopted and watched.
    if let Err(error) = engine.ensure_network().await {
        tracing::error!(%error, "app containers cannot start until the app network is fixed");
    }
    let sender = Sender { component: Component::Agent, instance: node.to_string() };
    let bus = service_kit::nats::connect_bus(&config.nats, sender, shutdown).await?;
    let etcd = service_kit::etcd::connect(&config.etcd, shutdown).await?;
    let keys = Keys::new(&config.etcd.prefix);
    let record = NodeRecord {
        id: node.clone(),
        address: config.address.clone(),
        memory_mb,
        cpus,
        labels: config.labels.clone(),
    };
    let registration = register(&etcd, &keys, &record, config.lease_ttl_secs);
    let inner = Arc::new(Inner {
        config,
        node: node.clone(),
        engine,
        bus,
        etcd,
        keys,
        lease: registration.watch(),
        tracked: Mutex::new(HashMap::new()),
        key_locks: Mutex::new(HashMap::new()),
        http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default(),
        shutdown: shutdown.clone(),
    });
    tracing::info!(%node, memory_mb, cpus, "agent starting");
    Ok((inner, registration))
}

/// Keeps the node's record alive under its lease. The registration has a shutdown of its own,
/// not the agent's: a stopping agent abandons the lease (see [`run`]) instead of revoking it.
fn register(
    etcd: &etcd_client::Client,
    keys: &Keys,
    record: &NodeRecord,
    ttl_secs: i64,
) -> RegistrationHandle {
    Registration {
        key: keys.node(&record.id),
        value: serde_json::to_vec(record).unwrap_or_default(),
        ttl: Duration::from_secs(ttl_secs.max(1).unsigned_abs()),
    }
    .spawn(etcd.clone(), &Shutdown::new())
}

/// Answers the scheduler's commands for this node until shutdown. The commands are subscribed
/// before the background loops start: once this node's first inventory is out, the scheduler
/// may send it commands at any moment, and none must be missed.
async fn serve(inner: &Arc<Inner>, shutdown: &Shutdown) -> Result<(), AgentError> {
    let ns = inner.bus.namespace();
    let mut starts = inner.bus.subscribe_subject(&ns.agent_start(&inner.node)).await?;
    let mut stops = inner.bus.subscribe_subject(&ns.agent_stop(&inner.node)).await?;
    let mut runs = inner.bus.subscribe_subject(&ns.agent_run(&inner.node)).await?;
    shutdown.spawn(watch::docker_events(inner.clone()));
    shutdown.spawn(watch::inventory(inner.clone()));
    shutdown.spawn(watch::routes_follow_lease(inner.clone()));
    loop {
        tokio::select! {
            Some(msg) = starts.next() => {
                answer(inner, "start", msg, |inner, cmd| async move { inner.start(cmd).await });
            }
            Some(msg) = stops.next() => {
                answer(inner, "stop", msg, |inner, cmd| async move { inner.stop(cmd).await });
            }
            Some(msg) = runs.next() => {
                answer(inner, "run", msg, |inner, cmd| async move { inner.run_one_off(cmd).await });
            }
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Handles one command on a task of its own and replies to it: a start may pull an image for
/// minutes, and must hold up neither the other commands nor the other containers.
fn answer<R, F, Fut>(
    inner: &Arc<Inner>,
    what: &'static str,
    msg: Result<Incoming<R>, (String, CodecError)>,
    handle: F,
) where
    R: Request + Clone,
    F: FnOnce(Arc<Inner>, R) -> Fut + Send + 'static,
    Fut: Future<Output = R::Reply> + Send,
{
    let cmd = match msg {
        Ok(cmd) => cmd,
        Err((subject, error)) => {
            tracing::warn!(%subject, %error, "malformed {what} command dropped");
            return;
        }
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let reply = handle(inner.clone(), cmd.envelope.body.clone()).await;
        if let Err(error) = inner.bus.reply(&cmd, reply).await {
            tracing::warn!(%error, "replying to a {what}");
        }
    });
}

async fn capacity(docker: &bollard::Docker, config: &AgentConfig) -> (u64, u32) {
    let info = docker.info().await.ok();
    let memory = if config.memory_mb > 0 {
        config.memory_mb
    } else {
        info.as_ref()
            .and_then(|i| i.mem_total)
            .map_or(1024, |b| u64::try_from(b / (1024 * 1024)).unwrap_or(1024))
    };
    let cpus = if config.cpus > 0 {
        config.cpus
    } else {
        info.as_ref().and_then(|i| i.ncpu).map_or(1, |n| u32::try_from(n).unwrap_or(1))
    };
    (memory, cpus)
}

/// Takes over the running containers a previous agent of this node left.
async fn adopt(inner: &Arc<Inner>) -> Result<(), AgentError> {
    for found in inner.engine.list().await? {
        if !found.running {
            continue;
        }
        let health = inner.engine.health_of(&found.name).await;
        tracing::info!(container = %found.name, "adopting running container");
        inner.track(found, health, false);
    }
    Ok(())
}

impl Inner {
    fn key_lock(&self, key: &ContainerKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.key_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    async fn start(self: &Arc<Self>, cmd: StartContainer) -> StartContainerReply {
        let key = &cmd.key;
        let span = tracing::info_span!(
            "start",
            app = %key.app,
            release = key.version,
            ptype = %key.process_type,
            index = key.index
        );
        // Instrumented, not entered: a guard held across an await would lend the span to
        // whatever else runs on this thread meanwhile, and take it from this start when it
        // resumes on another.
        self.start_container(cmd).instrument(span).await
    }

    async fn start_container(self: &Arc<Self>, cmd: StartContainer) -> StartContainerReply {
        let lock = self.key_lock(&cmd.key);
        let _guard = lock.lock().await;
        if let Some(t) = self.tracked.lock().unwrap_or_else(|p| p.into_inner()).get(&cmd.key) {
            return StartContainerReply::Started { container_id: t.id.clone(), host_port: t.host_port };
        }
        let extra = BTreeMap::from([
            ("DEIS_APP".to_owned(), cmd.key.app.to_string()),
            ("DEIS_RELEASE".to_owned(), format!("v{}", cmd.key.version)),
            ("DYNO".to_owned(), format!("{}.{}", cmd.key.process_type, cmd.key.index)),
        ]);
        match self.engine.start(&cmd, &extra, cmd.health.as_ref()).await {
            Ok(found) => {
                let reply = StartContainerReply::Started {
                    container_id: found.id.clone(),
                    host_port: found.host_port,
                };
                self.event(&found.key, ContainerEventKind::Created, &found.id, None, String::new()).await;
                self.track(found, cmd.health.clone(), true);
                reply
            }
            Err(error) => {
                tracing::warn!(%error, "start failed");
                StartContainerReply::Failed { reason: error.to_string() }
            }
        }
    }

    async fn stop(self: &Arc<Self>, cmd: StopContainer) -> StopContainerReply {
        let lock = self.key_lock(&cmd.key);
        let _guard = lock.lock().await;
        let name = self.engine.name(&cmd.key);
        let tracked = self.untrack(&cmd.key);
        if let Some(t) = &tracked {
            t.watchers.cancel();
        }
        self.delete_route(&cmd.key.app, &name).await;
        let halted = self.engine.halt(&name, cmd.grace_secs).await;
        if let Some(t) = tracked {
            // The container has exited: its output ends, and the follower ships the rest
            // (bounded, so a stuck engine cannot hold the stop forever).
            let mut done = t.logs_done.clone();
            let _ = tokio::time::timeout(Duration::from_secs(3), done.wait_for(|d| *d)).await;
            t.log_stop.cancel();
        }
        match halted.and(self.engine.remove(&name).await) {
            Ok(()) => {
                tracing::info!(container = %name, "stopped");
                StopContainerReply::Stopped
            }
            Err(error) => StopContainerReply::Failed { reason: error.to_string() },
        }
    }

    /// Starts a one-off container, followed to its end (and then removed) by a task of its own.
    async fn run_one_off(self: &Arc<Self>, cmd: RunOneOff) -> StartContainerReply {
        match self.engine.start_one_off(&cmd).await {
            Ok(name) => {
                tokio::spawn(watch::one_off(self.clone(), cmd, name.clone()));
                StartContainerReply::Started { container_id: name, host_port: None }
            }
            Err(error) => StartContainerReply::Failed { reason: error.to_string() },
        }
    }

    /// Stops every watcher; the containers keep running for the next agent to adopt.
    fn stop_watching(&self) {
        let tokens: Vec<CancellationToken> = self
            .tracked
            .lock()
            .map(|t| t.values().flat_map(|t| [t.watchers.clone(), t.log_stop.clone()]).collect())
            .unwrap_or_default();
        for token in tokens {
            token.cancel();
        }
    }

    fn track(self: &Arc<Self>, found: Found, health: Option<HealthCheck>, new: bool) {
        let watchers = self.shutdown.token().child_token();
        let log_stop = self.shutdown.token().child_token();
        let (done_tx, logs_done) = tokio::sync::watch::channel(false);
        let tracked = Tracked {
            name: found.name.clone(),
            id: found.id.clone(),
            port: found.port,
            host_port: found.host_port,
            ip: found.ip.clone(),
            healthy: false,
            health,
            watchers: watchers.clone(),
            log_stop: log_stop.clone(),
            logs_done,
        };
        let old = self.tracked.lock().unwrap_or_else(|p| p.into_inner()).insert(found.key.clone(), tracked);
        if let Some(old) = old {
            old.watchers.cancel();
            old.log_stop.cancel();
        }
        tokio::spawn(watch::health(self.clone(), found.key.clone(), watchers.clone()));
        let inner = self.clone();
        tokio::spawn(async move {
            watch::logs(inner, found.key, found.name, new, log_stop).await;
            let _ = done_tx.send(true);
        });
    }

    fn untrack(&self, key: &ContainerKey) -> Option<Tracked> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner()).remove(key)
    }

    fn current_lease(&self) -> Option<i64> {
        match *self.lease.borrow() {
            RegistrationState::Registered { lease } => Some(lease),
            _ => None,
        }
    }

    async fn put_route(&self, key: &ContainerKey, name: &str, host_port: u16) {
        // Under the container's lock, which `stop` holds while it untracks the container and
        // deletes its route: a route decided on before a stop must not be written after it
        // (found by chaos's kill-etcd-leader: a lease re-registration re-wrote the route of a
        // container stopped meanwhile, and it stayed, pointing at nothing).
        let lock = self.key_lock(key);
        let _guard = lock.lock().await;
        let tracked =
            self.tracked.lock().unwrap_or_else(|p| p.into_inner()).get(key).is_some_and(|t| t.name == name);
        if !tracked {
            return;
        }
        let Some(lease) = self.current_lease() else {
            // Routes go in when the node's lease is back (see routes_follow_lease).
            return;
        };
        let record = RouteRecord {
            address: format!("{}:{host_port}", self.config.address),
            node: self.node.clone(),
            version: key.version,
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let mut etcd = self.etcd.clone();
        let put = etcd
            .put(
                self.keys.route(&key.app, name),
                value,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )
            .await;
        if let Err(error) = put {
            tracing::warn!(%error, container = %name, "could not publish route");
        }
    }

    async fn delete_route(&self, app: &AppName, name: &str) {
        let mut etcd = self.etcd.clone();
        if let Err(error) = etcd.delete(self.keys.route(app, name), None).await {
            tracing::warn!(%error, container = %name, "could not delete route");
        }
    }

    async fn event(
        &self,
        key: &ContainerKey,
        kind: ContainerEventKind,
        id: &str,
        exit_code: Option<i64>,
        detail: String,
    ) {
        let ns = self.bus.namespace();
        let event = ContainerEvent {
            node: self.node.clone(),
            key: key.clone(),
            kind,
            container_id: id.to_owned(),
            exit_code,
            detail,
        };
        if let Err(error) =
            self.bus.publish(&ns.container_event(&self.node, &key.app, kind), &self.bus.envelope(event)).await
        {
            tracing::warn!(%error, "publishing a container event");
        }
    }

    /// What this node runs, for the scheduler.
    async fn inventory(&self) -> Result<NodeInventory, AgentError> {
        let found = self.engine.list().await?;
        let tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        let containers = found
            .into_iter()
            .map(|f| {
                let t = tracked.get(&f.key);
                ContainerStatus {
                    healthy: f.running && t.is_some_and(|t| t.healthy),
                    running: f.running,
                    host_port: f.host_port,
                    // The engine's creation time, not when this agent started watching: after a
                    // partition the scheduler keeps the newest copy of a key, which must be the
                    // replacement, not an old container an agent has just adopted again.
                    started_at: Timestamp(f.created.saturating_mul(1_000_000_000)),
                    container_id: f.id,
                    key: f.key,
                }
            })
            .collect();
        Ok(NodeInventory { node: self.node.clone(), containers })
    }
}
