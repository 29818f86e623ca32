//! The scheduler: one elected leader among several instances turns desired state (releases and
//! formations, from the controller) and actual state (nodes from etcd, containers from the agents)
//! into start and stop commands. Placement spreads and fits; deploys roll; lost nodes' containers
//! are replaced; crash loops back off. The rules live in [`plan`], a pure function.

pub mod config;
mod leader;
pub mod placement;
pub mod plan;
#[cfg(test)]
mod simulation;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_schema::discovery::{Keys, NodeRecord};
use bus_schema::messages::{
    AppDesired, AppStatus, ContainerEventKind, ContainerView, DesiredStatePageRequest, LogLine, LogSource,
    ReleaseSpec, RestartReply, RestartRequest, RunOneOff, RunReply, RunRequest, StartContainerReply,
    StopContainer, StopContainerReply, Stream,
};
use bus_schema::streams::{ConsumerId, ensure_consumer};
use bus_schema::{AppName, Bus, Component, DesiredChange, NodeId, Sender, Timestamp};
use futures::StreamExt;
use service_kit::{Backoff, Shutdown};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::SchedulerConfig;
use plan::{Action, Memory, Observed, Rules};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Nats(#[from] service_kit::nats::NatsError),
    #[error(transparent)]
    Etcd(#[from] service_kit::etcd::EtcdError),
    #[error("binding the ops address {0}: {1}")]
    Ops(String, std::io::Error),
}

/// Runs the scheduler until shutdown: campaigns, and leads while elected.
pub async fn run(config: SchedulerConfig, shutdown: Shutdown) -> Result<(), SchedulerError> {
    let sender = Sender { component: Component::Scheduler, instance: config.instance.clone() };
    let bus = service_kit::nats::connect_bus(&config.nats, sender, &shutdown).await?;
    let etcd = service_kit::etcd::connect(&config.etcd, &shutdown).await?;
    let keys = Keys::new(&config.etcd.prefix);
    if let Some(addr) = &config.listen_ops {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| SchedulerError::Ops(addr.clone(), e))?;
        let client = bus.client().clone();
        let ops = service_kit::OpsServer::new(prometheus_client::registry::Registry::default(), move || {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            service_kit::Health::from_checks([(
                "nats".to_owned(),
                if connected { Ok(()) } else { Err("disconnected; reconnecting".to_owned()) },
            )])
        });
        shutdown.spawn(ops.serve(listener, shutdown.clone()));
    }
    let config = Arc::new(config);
    loop {
        let ttl = Duration::from_secs(config.leader_ttl_secs.max(1));
        let Some(leadership) = leader::campaign(&etcd, &keys, &config.instance, ttl, &shutdown).await else {
            return Ok(());
        };
        let mut leader =
            Leader::new(config.clone(), bus.clone(), etcd.clone(), keys.clone(), leadership.lost.clone());
        leader.lead().await;
        leadership.lost.cancel();
        if shutdown.is_shutting_down() {
            return Ok(());
        }
        tracing::warn!(instance = %config.instance, "no longer the leader; campaigning again");
    }
}

/// What finished commands report back to the loop.
#[derive(Debug)]
enum Done {
    Started {
        app: AppName,
        node: NodeId,
        key: bus_schema::messages::ContainerKey,
        result: Result<(), String>,
    },
    Stopped {
        node: NodeId,
        key: bus_schema::messages::ContainerKey,
        result: Result<(), String>,
    },
}

struct Leader {
    config: Arc<SchedulerConfig>,
    bus: Bus,
    etcd: etcd_client::Client,
    keys: Keys,
    lost: CancellationToken,
    desired: BTreeMap<AppName, AppDesired>,
    /// Destroyed apps and when, so a late event about them is not taken for a new app.
    tombstones: HashMap<AppName, Timestamp>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    observed: HashMap<NodeId, Vec<Observed>>,
    memory: Memory,
    rules: Rules,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
}

impl Leader {
    fn new(
        config: Arc<SchedulerConfig>,
        bus: Bus,
        etcd: etcd_client::Client,
        keys: Keys,
        lost: CancellationToken,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let rules = Rules {
            deploy_timeout: Duration::from_secs(config.deploy_timeout_secs.max(1)),
            ..Rules::default()
        };
        Self {
            config,
            bus,
            etcd,
            keys,
            lost,
            desired: BTreeMap::new(),
            tombstones: HashMap::new(),
            nodes: BTreeMap::new(),
            observed: HashMap::new(),
            memory: Memory::default(),
            rules,
            done_tx,
            done_rx,
        }
    }

    async fn lead(&mut self) {
        let ns = self.bus.namespace().clone();
        // The truth first: every app's release and formation, from the controller.
        // Page by page (each page cut by size, so large configs never make one answer too big
        // for the bus); a page that fails is asked again, from where it left off.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut after = None;
        loop {
            let request = self.bus.envelope(DesiredStatePageRequest { after: after.clone() });
            match self.bus.request(&ns.desired_state_page(), &request, Duration::from_secs(10)).await {
                Ok(page) => {
                    for app in page.body.apps {
                        self.desired.insert(app.release.app.clone(), app);
                    }
                    match page.body.next {
                        Some(next) => {
                            after = Some(next);
                            continue;
                        }
                        None => break,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the controller has not answered the desired-state request yet")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.lost.cancelled() => return,
            }
        }
        tracing::info!(apps = self.desired.len(), "desired state loaded");

        let spec = ns.consumer(ConsumerId::Scheduler);
        let consumer = loop {
            match ensure_consumer(self.bus.jetstream(), &ns, &spec, &self.config.nats.stream_options()).await
            {
                Ok(c) => break c,
                Err(error) => tracing::warn!(%error, "cannot bind the scheduler consumer yet"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.lost.cancelled() => return,
            }
        };
        let (
            Ok(mut changes),
            Ok(mut inventories),
            Ok(mut events),
            Ok(mut status),
            Ok(mut restarts),
            Ok(mut runs),
        ) = (
            consumer.messages().await,
            self.bus.subscribe(&ns.all_node_inventories()).await,
            self.bus.subscribe(&ns.all_container_events()).await,
            self.bus.subscribe_subject(&ns.app_status()).await,
            self.bus.subscribe_subject(&ns.restart()).await,
            self.bus.subscribe_subject(&ns.run()).await,
        )
        else {
            tracing::warn!("cannot subscribe; stepping down");
            return;
        };
        let (mut node_watch, node_revision) = match self.load_nodes().await {
            Ok(w) => w,
            Err(error) => {
                tracing::warn!(%error, "cannot read nodes from etcd; stepping down");
                return;
            }
        };
        tracing::debug!(node_revision, "watching nodes");

        let settle_until = Instant::now() + Duration::from_millis(self.config.settle_ms);
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.reconcile_interval_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut reconcile = false;
            tokio::select! {
                _ = self.lost.cancelled() => return,
                _ = tick.tick() => reconcile = true,
                Some(msg) = changes.next() => match msg {
                    Ok(msg) => {
                        match DesiredChange::decode(&msg.payload) {
                            Ok(change) => self.apply(change),
                            Err(error) => tracing::error!(%error, "dropping a malformed desired-state change"),
                        }
                        let _ = msg.ack().await;
                        reconcile = true;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "desired-state stream failed; stepping down to rebind");
                        return;
                    }
                },
                Some(msg) = inventories.next() => if let Ok(inv) = msg {
                    let inv = inv.envelope.body;
                    let list = inv
                        .containers
                        .into_iter()
                        .map(|c| Observed { node: inv.node.clone(), key: c.key, running: c.running, healthy: c.healthy, started_at: c.started_at })
                        .collect();
                    self.observed.insert(inv.node, list);
                },
                Some(msg) = events.next() => if let Ok(e) = msg {
                    self.container_event(e.envelope.body);
                    reconcile = true;
                },
                Some(msg) = status.next() => if let Ok(req) = msg {
                    let answer = self.status(&req.envelope.body.app);
                    let _ = self.bus.reply(&req, answer).await;
                },
                Some(msg) = runs.next() => if let Ok(req) = msg {
                    self.run_one_off(req);
                },
                Some(msg) = restarts.next() => if let Ok(req) = msg {
                    let answer = self.queue_restart(&req.envelope.body);
                    let _ = self.bus.reply(&req, answer).await;
                    reconcile = true;
                },
                watched = node_watch.message() => match watched {
                    Ok(Some(resp)) => {
                        self.node_changes(&resp);
                        reconcile = true;
                    }
                    _ => {
                        tracing::warn!("etcd node watch ended; stepping down to rebuild it");
                        return;
                    }
                },
                Some(done) = self.done_rx.recv() => {
                    self.finished(done);
                    reconcile = true;
                }
            }
            if reconcile && Instant::now() >= settle_until {
                self.reconcile();
            }
        }
    }

    async fn load_nodes(&mut self) -> Result<(etcd_client::WatchStream, i64), etcd_client::Error> {
        let prefix = self.keys.nodes();
        let resp =
            self.etcd.get(prefix.as_bytes(), Some(etcd_client::GetOptions::new().with_prefix())).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        for kv in resp.kvs() {
            self.node_put(kv.key_str().unwrap_or_default(), kv.value());
        }
        let stream = self
            .etcd
            .watch(
                prefix.as_bytes(),
                Some(etcd_client::WatchOptions::new().with_prefix().with_start_revision(revision + 1)),
            )
            .await?;
        Ok((stream, revision))
    }

    fn node_put(&mut self, key: &str, value: &[u8]) {
        match bus_schema::discovery::parse::<NodeRecord>(key, value) {
            Ok(record) if self.keys.node_of(key).as_ref() == Some(&record.id) => {
                if !self.nodes.contains_key(&record.id) {
                    tracing::info!(node = %record.id, "node joined");
                }
                self.nodes.insert(record.id.clone(), record);
            }
            Ok(_) => tracing::warn!(%key, "node record does not match its key; ignored"),
            Err(error) => tracing::warn!(%error, "ignoring a malformed node record"),
        }
    }

    fn node_changes(&mut self, resp: &etcd_client::WatchResponse) {
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let key = kv.key_str().unwrap_or_default().to_owned();
            match event.event_type() {
                etcd_client::EventType::Put => self.node_put(&key, kv.value()),
                etcd_client::EventType::Delete => {
                    if let Some(node) = self.keys.node_of(&key) {
                        tracing::warn!(%node, "node lost; its containers will be replaced");
                        self.nodes.remove(&node);
                        self.observed.remove(&node);
                    }
                }
            }
        }
    }

    fn apply(&mut self, change: DesiredChange) {
        match change {
            DesiredChange::Release(env) => {
                let release = env.body.release;
                if self.tombstones.get(&release.app).is_some_and(|t| env.time < *t) {
                    return;
                }
                let entry = self.desired.entry(release.app.clone()).or_insert_with(|| AppDesired {
                    release: empty_release(&release.app),
                    formation: BTreeMap::new(),
                    generation: 0,
                });
                if release.version > entry.release.version {
                    tracing::info!(app = %release.app, release = release.version, "new release");
                    entry.release = release;
                }
            }
            DesiredChange::Formation(env) => {
                let f = env.body;
                if self.tombstones.get(&f.app).is_some_and(|t| env.time < *t) {
                    return;
                }
                let entry = self.desired.entry(f.app.clone()).or_insert_with(|| AppDesired {
                    release: empty_release(&f.app),
                    formation: BTreeMap::new(),
                    generation: 0,
                });
                if f.generation > entry.generation {
                    tracing::info!(app = %f.app, formation = ?f.formation, "formation changed");
                    entry.formation = f.formation;
                    entry.generation = f.generation;
                }
            }
            DesiredChange::Destroyed(env) => {
                tracing::info!(app = %env.body.app, "app destroyed");
                self.desired.remove(&env.body.app);
                self.tombstones.insert(env.body.app, env.time);
            }
        }
    }

    fn container_event(&mut self, e: bus_schema::messages::ContainerEvent) {
        let list = self.observed.entry(e.node.clone()).or_default();
        let existing = list.iter_mut().find(|o| o.key == e.key);
        match (e.kind, existing) {
            (ContainerEventKind::Created, None) => list.push(Observed {
                node: e.node,
                key: e.key,
                running: true,
                healthy: false,
                started_at: Timestamp::now(),
            }),
            (ContainerEventKind::Healthy, Some(o)) => {
                o.running = true;
                o.healthy = true;
            }
            // Unknown and healthy: an adopted container; its age comes with the next inventory.
            (ContainerEventKind::Unhealthy, Some(o)) => o.healthy = false,
            (ContainerEventKind::Exited, Some(o)) => {
                o.running = false;
                o.healthy = false;
            }
            _ => {}
        }
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Started { app, node, key, result: Err(reason) } => {
                self.memory.inflight.remove(&key);
                self.say(
                    &app,
                    format!("could not start {}.{} on {node}: {reason}", key.process_type, key.index),
                );
            }
            Done::Started { node, key, result: Ok(()), .. } => {
                // Seen from now on, until the next inventory says otherwise.
                let list = self.observed.entry(node.clone()).or_default();
                if !list.iter().any(|o| o.key == key) {
                    list.push(Observed {
                        node,
                        key,
                        running: true,
                        healthy: false,
                        started_at: Timestamp::now(),
                    });
                }
            }
            Done::Stopped { node, key, result } => {
                if let Err(reason) = result {
                    tracing::warn!(%node, ?key, %reason, "stop failed; will retry");
                    self.memory.stopping.remove(&(key, node));
                } else if let Some(list) = self.observed.get_mut(&node) {
                    list.retain(|o| o.key != key);
                }
            }
        }
    }

    fn reconcile(&mut self) {
        let observed: Vec<Observed> = self.observed.values().flatten().cloned().collect();
        let actions =
            plan::plan(&self.desired, &self.nodes, &observed, &mut self.memory, &self.rules, Instant::now());
        for action in actions {
            match action {
                Action::Start { node, command } => {
                    tracing::info!(%node, app = %command.key.app, release = command.key.version, ptype = %command.key.process_type, index = command.key.index, "starting");
                    let bus = self.bus.clone();
                    let done = self.done_tx.clone();
                    let timeout = Duration::from_secs(self.config.command_timeout_secs);
                    tokio::spawn(async move {
                        let key = command.key.clone();
                        let app = key.app.clone();
                        let subject = bus.namespace().agent_start(&node);
                        let result = match bus.request(&subject, &bus.envelope(command), timeout).await {
                            Ok(reply) => match reply.body {
                                StartContainerReply::Started { .. } => Ok(()),
                                StartContainerReply::Failed { reason } => Err(reason),
                            },
                            Err(error) => Err(error.to_string()),
                        };
                        let _ = done.send(Done::Started { app, node, key, result });
                    });
                }
                Action::Stop { node, key } => {
                    tracing::info!(%node, app = %key.app, release = key.version, ptype = %key.process_type, index = key.index, "stopping");
                    let bus = self.bus.clone();
                    let done = self.done_tx.clone();
                    let grace = self.config.stop_grace_secs;
                    tokio::spawn(async move {
                        let subject = bus.namespace().agent_stop(&node);
                        let cmd = StopContainer { key: key.clone(), grace_secs: grace };
                        let result = match bus
                            .request(&subject, &bus.envelope(cmd), Duration::from_secs(u64::from(grace) + 30))
                            .await
                        {
                            Ok(reply) => match reply.body {
                                StopContainerReply::Stopped => Ok(()),
                                StopContainerReply::Failed { reason } => Err(reason),
                            },
                            Err(error) => Err(error.to_string()),
                        };
                        let _ = done.send(Done::Stopped { node, key, result });
                    });
                }
                Action::Say { app, message } => self.say(&app, message),
            }
        }
    }

    /// A line in the app's log stream, from the scheduler.
    fn say(&self, app: &AppName, message: String) {
        tracing::info!(%app, %message, "telling the app's log");
        let line = LogLine {
            app: app.clone(),
            time: Timestamp::now(),
            source: LogSource::Scheduler,
            stream: Stream::Stdout,
            node: None,
            seq: 0,
            message,
        };
        let bus = self.bus.clone();
        tokio::spawn(async move {
            let subject = bus.namespace().log_lines(&line.app);
            let _ = bus.publish(&subject, &bus.envelope(line)).await;
        });
    }

    /// Places a one-off container of the app's current release and hands it to that node's agent;
    /// the answer goes back from a task so a slow image pull blocks nothing else.
    fn run_one_off(&mut self, req: bus_schema::Incoming<RunRequest>) {
        let body = req.envelope.body.clone();
        let bus = self.bus.clone();
        let Some(want) = self.desired.get(&body.app).filter(|d| !d.release.image.is_empty()) else {
            let reply =
                RunReply::Failed { reason: format!("{} has no build yet: deploy it first", body.app) };
            tokio::spawn(async move { bus.reply(&req, reply).await });
            return;
        };
        let observed: Vec<Observed> = self.observed.values().flatten().cloned().collect();
        let node = plan::place_one_off(want, &self.nodes, &observed, &self.memory);
        let node = match node {
            Ok(node) => node,
            Err(reason) => {
                tokio::spawn(async move { bus.reply(&req, RunReply::Failed { reason }).await });
                return;
            }
        };
        let release = &want.release;
        let cmd = RunOneOff {
            app: body.app.clone(),
            run_id: body.run_id,
            version: release.version,
            image: release.image.clone(),
            command: body.command.clone(),
            env: release.config.clone(),
            limits: release.limits.get(&bus_schema::ProcessType::web()).cloned().unwrap_or_default(),
        };
        self.say(&body.app, format!("{} runs `{}` on {node}", body.user, body.command));
        let timeout = Duration::from_secs(self.config.command_timeout_secs);
        tokio::spawn(async move {
            let answer = bus.request(&bus.namespace().agent_run(&node), &bus.envelope(cmd), timeout).await;
            let reply = match answer.map(|r| r.body) {
                Ok(StartContainerReply::Started { .. }) => RunReply::Started { node },
                Ok(StartContainerReply::Failed { reason }) => RunReply::Failed { reason },
                Err(error) => {
                    RunReply::Failed { reason: format!("the agent on {node} did not answer: {error}") }
                }
            };
            bus.reply(&req, reply).await
        });
    }

    /// Queues the app's current containers (of a type, or one of them) for a rolling restart.
    fn queue_restart(&mut self, req: &RestartRequest) -> RestartReply {
        let version = self.desired.get(&req.app).map(|d| d.release.version);
        let keys: Vec<_> = self
            .observed
            .iter()
            .filter(|(node, _)| self.nodes.contains_key(*node))
            .flat_map(|(_, list)| list.iter())
            .filter(|o| o.key.app == req.app && Some(o.key.version) == version)
            .filter(|o| req.process_type.as_ref().is_none_or(|t| &o.key.process_type == t))
            .filter(|o| req.index.is_none_or(|i| o.key.index == i))
            .map(|o| o.key.clone())
            .collect();
        let restarting = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        if restarting > 0 {
            self.say(&req.app, format!("restarting {restarting} container(s), one at a time"));
        }
        self.memory.restarts.extend(keys);
        RestartReply { restarting }
    }

    fn status(&self, app: &AppName) -> AppStatus {
        let mut containers: Vec<ContainerView> = self
            .observed
            .iter()
            .filter(|(node, _)| self.nodes.contains_key(*node))
            .flat_map(|(_, list)| list.iter())
            .filter(|o| &o.key.app == app)
            .map(view)
            .collect();
        containers.sort_by(|a, b| a.key.cmp(&b.key));
        AppStatus {
            app: app.clone(),
            containers,
            deploy: self.memory.deploys.get(app).map(|d| d.state.clone()),
        }
    }
}

/// A container as `deis ps` shows it.
fn view(o: &Observed) -> ContainerView {
    ContainerView {
        key: o.key.clone(),
        node: o.node.clone(),
        state: match (o.running, o.healthy) {
            (true, true) => "up",
            (true, false) => "starting",
            (false, _) => "crashed",
        }
        .to_owned(),
        since: o.started_at,
    }
}

fn empty_release(app: &AppName) -> ReleaseSpec {
    ReleaseSpec {
        app: app.clone(),
        version: 0,
        image: String::new(),
        processes: BTreeMap::new(),
        config: BTreeMap::new(),
        limits: BTreeMap::new(),
        tags: BTreeMap::new(),
    }
}
