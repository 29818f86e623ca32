//! The logger: takes every log line from the bus (containers' output from the agents, the
//! routers' access lines, build output, the controller's events), keeps each app's history on
//! disk, answers history queries for `deis logs`, and, for the apps this instance owns, forwards
//! every line to the app's drains and republishes it as JSON on the app's public drain subject.
//! Run several: each keeps every app's history; ownership of forwarding is shared out by
//! rendezvous hashing over the live instances in etcd, so no drain receives a line twice.

pub mod config;
pub mod drains;
pub mod metrics;
pub mod ownership;
pub mod pipeline;
pub mod reach;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bus_schema::discovery::{DrainSpec, Keys};
use bus_schema::messages::{LogLine, LogQuery, LogQueryReply, LogSource, Stream};
use bus_schema::{AppName, Bus, BusError, Component, Incoming, Sender, Timestamp};
use futures::StreamExt;
use prometheus_client::registry::Registry;
use service_kit::{Health, OpsServer, Registration, RegistrationHandle, Shutdown};
use tokio::net::TcpListener;

pub use config::LoggerConfig;
use drains::{DrainError, DrainShared, DrainUrl};
use metrics::Metrics;
use ownership::Ownership;
use pipeline::{Dispatcher, DrainTable, Shared};
use reach::{Reach, Windows};

/// A query answer stays under NATS's default 1 MiB message size.
const MAX_REPLY_BYTES: usize = 900 * 1024;

/// Why the logger could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("creating the data folder {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to NATS")]
    Nats(#[source] service_kit::nats::NatsError),
    #[error("setting up drains")]
    Drains(#[source] DrainError),
    /// Subscribing to the bus: the error names the subject.
    #[error(transparent)]
    Subscribe(#[from] BusError),
}

/// Runs the logger until shutdown.
pub async fn run(config: LoggerConfig, ops: TcpListener, shutdown: Shutdown) -> Result<(), LoggerError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| LoggerError::DataDir { path: config.data_dir.clone(), source })?;
    let sender = Sender { component: Component::Logger, instance: config.instance.clone() };
    let bus =
        service_kit::nats::connect_bus(&config.nats, sender, &shutdown).await.map_err(LoggerError::Nats)?;
    let ns = bus.namespace().clone();
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ownership = Ownership::new(&config.instance);
    let drains = Arc::new(ArcSwap::from_pointee(DrainTable::new()));
    let shared = Arc::new(Shared {
        config: config.clone(),
        bus: bus.clone(),
        ownership: ownership.clone(),
        drains: drains.clone(),
        drain_shared: DrainShared::new(&config.drains).map_err(LoggerError::Drains)?,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });

    // Subscribe before anything else, so every line published from now on is seen.
    let mut lines = bus.subscribe(&ns.all_log_lines()).await?;
    let mut events = bus.subscribe(&ns.all_controller_events()).await?;
    let mut destroyed = bus.subscribe(&ns.all_apps_destroyed()).await?;
    let queries = bus.queue_subscribe(&ns.log_queries(), "logger").await?;
    let inventories = bus.subscribe(&ns.all_node_inventories()).await?;

    let reach = Arc::new(Mutex::new(Reach::default()));
    shutdown.spawn(hear_nodes(inventories, reach.clone(), metrics.clone(), shutdown.clone()));
    shutdown.spawn(follow_etcd(config.clone(), ownership, drains, reach, metrics.clone(), shutdown.clone()));
    shutdown.spawn(answer_queries(
        queries,
        bus.clone(),
        config.data_dir.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let health_bus = bus.clone();
    let ops_server = OpsServer::new(registry, move || {
        let state = health_bus.client().connection_state();
        Health::from_checks([(
            "nats".to_owned(),
            if state == async_nats::connection::State::Connected {
                Ok(())
            } else {
                Err(format!("{state:?}"))
            },
        )])
    });
    shutdown.spawn(ops_server.serve(ops, shutdown.clone()));
    tracing::info!(instance = %config.instance, data = %config.data_dir.display(), "logger running");

    let mut dispatcher = Dispatcher::new(shared);
    loop {
        tokio::select! {
            line = lines.next() => match line {
                Some(Ok(msg)) => {
                    if ns.app_of(&msg.subject).as_ref() == Some(&msg.envelope.body.app) {
                        dispatcher.ingest(msg.envelope.body);
                    } else {
                        metrics.bad_messages.inc();
                    }
                }
                Some(Err((subject, error))) => {
                    metrics.bad_messages.inc();
                    tracing::debug!(%subject, %error, "undecodable log line");
                }
                None => break,
            },
            event = events.next() => match event {
                Some(Ok(msg)) => {
                    let event = msg.envelope.body;
                    dispatcher.ingest(LogLine {
                        app: event.app,
                        time: msg.envelope.time,
                        source: LogSource::Controller,
                        stream: Stream::Stdout,
                        node: None,
                        seq: 0,
                        message: event.message,
                    });
                }
                Some(Err((subject, error))) => {
                    metrics.bad_messages.inc();
                    tracing::debug!(%subject, %error, "undecodable controller event");
                }
                None => break,
            },
            gone = destroyed.next() => match gone {
                Some(Ok(msg)) => dispatcher.remove(&msg.envelope.body.app).await,
                Some(Err(_)) => { metrics.bad_messages.inc(); }
                None => break,
            },
            _ = shutdown.cancelled() => break,
        }
    }
    dispatcher.close().await;
    Ok(())
}

/// Notes when each node's agent was last heard (its inventory, every 2 s).
async fn hear_nodes(
    mut inventories: impl futures::Stream<
        Item = Result<Incoming<bus_schema::messages::NodeInventory>, (String, bus_schema::CodecError)>,
    > + Unpin,
    reach: Arc<Mutex<Reach>>,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    loop {
        let inventory = tokio::select! {
            i = inventories.next() => match i { Some(i) => i, None => return },
            _ = shutdown.cancelled() => return,
        };
        match inventory {
            Ok(msg) => {
                if let Ok(mut reach) = reach.lock() {
                    reach.heard(msg.envelope.body.node.as_str(), Instant::now());
                }
            }
            Err(_) => {
                metrics.bad_messages.inc();
            }
        }
    }
}

/// Registers this instance while it hears every live node, and keeps the membership, the live
/// nodes and the drain table current from etcd.
async fn follow_etcd(
    config: LoggerConfig,
    ownership: Ownership,
    drains: Arc<ArcSwap<DrainTable>>,
    reach: Arc<Mutex<Reach>>,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    let keys = Keys::new(&config.etcd.prefix);
    let Ok(client) = service_kit::etcd::connect(&config.etcd, &shutdown).await else { return };
    let registering = register_while_reachable(&config, &keys, client, reach.clone(), &metrics, &shutdown);
    let nodes_prefix = keys.nodes();
    let nodes = service_kit::etcd::follow_prefix(&config.etcd, &nodes_prefix, &shutdown, |kvs| {
        let live = kvs.keys().filter_map(|k| k.strip_prefix(&nodes_prefix)).map(str::to_owned);
        if let Ok(mut reach) = reach.lock() {
            reach.set_live(live, Instant::now());
        }
    });
    let members_prefix = format!("{}logger/", keys.components());
    let members = service_kit::etcd::follow_prefix(&config.etcd, &members_prefix, &shutdown, |kvs| {
        let live: Vec<String> =
            kvs.keys().filter_map(|k| k.strip_prefix(&members_prefix)).map(str::to_owned).collect();
        ownership.set_members(live);
        metrics.members.set(i64::try_from(ownership.members().len()).unwrap_or(i64::MAX));
        tracing::debug!(members = ?ownership.members(), "logger membership");
    });
    let drains_prefix = keys.drains();
    let drains_follow = service_kit::etcd::follow_prefix(&config.etcd, &drains_prefix, &shutdown, |kvs| {
        drains.store(Arc::new(drain_table(&keys, kvs)));
    });
    tokio::join!(registering, nodes, members, drains_follow);
}

/// Keeps this instance registered among the loggers (so it takes a share of the forwarding)
/// exactly while it hears every live node: see `reach`.
async fn register_while_reachable(
    config: &LoggerConfig,
    keys: &Keys,
    client: etcd_client::Client,
    reach: Arc<Mutex<Reach>>,
    metrics: &Metrics,
    shutdown: &Shutdown,
) {
    let windows = Windows::from_silence(Duration::from_millis(config.node_silence_ms.max(1)));
    let registration = || Registration {
        key: keys.component("logger", &config.instance),
        value: serde_json::json!({ "instance": config.instance, "version": env!("CARGO_PKG_VERSION") })
            .to_string()
            .into_bytes(),
        ttl: config.etcd.lease_ttl(),
    };
    let mut handle: Option<RegistrationHandle> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let decision = match reach.lock() {
            Ok(reach) => reach.decide(handle.is_some(), Instant::now(), windows),
            Err(_) => Ok(()),
        };
        metrics.reachable.set(i64::from(decision.is_ok()));
        match (decision, handle.take()) {
            (Ok(()), None) => {
                tracing::info!(instance = %config.instance, "hears every live node: taking a share of the forwarding");
                handle = Some(registration().spawn(client.clone(), shutdown));
            }
            (Err(silent), Some(registered)) => {
                tracing::warn!(
                    instance = %config.instance,
                    ?silent,
                    "no longer hears every live node over the bus: leaving its apps to the other loggers"
                );
                // Revoking waits on etcd, which may be what is cut off; the next registration
                // takes a lease of its own.
                tokio::spawn(registered.stop());
            }
            (_, kept) => handle = kept,
        }
    }
    if let Some(registered) = handle {
        registered.stop().await;
    }
}

/// Parses every drain key; a malformed one is logged and skipped, never fatal.
fn drain_table(keys: &Keys, kvs: &BTreeMap<String, Vec<u8>>) -> DrainTable {
    let mut table = DrainTable::new();
    for (key, value) in kvs {
        let Some((app, id)) = keys.drain_of(key) else { continue };
        let url = bus_schema::discovery::parse::<DrainSpec>(key, value)
            .and_then(|spec| DrainUrl::parse(&spec.url).map_err(|e| e.to_string()));
        match url {
            Ok(url) => {
                table.entry(app).or_default().insert(id, url);
            }
            Err(error) => tracing::warn!(%key, %error, "ignoring a malformed drain"),
        }
    }
    table
}

async fn answer_queries(
    mut queries: impl futures::Stream<Item = Result<Incoming<LogQuery>, (String, bus_schema::CodecError)>> + Unpin,
    bus: Bus,
    root: PathBuf,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    loop {
        let query = tokio::select! {
            q = queries.next() => match q { Some(q) => q, None => return },
            _ = shutdown.cancelled() => return,
        };
        let Ok(query) = query else {
            metrics.bad_messages.inc();
            continue;
        };
        metrics.queries.inc();
        let bus = bus.clone();
        let root = root.clone();
        tokio::spawn(async move {
            let q = query.envelope.body.clone();
            let result =
                tokio::task::spawn_blocking(move || store::read(&root, &q.app, &q, MAX_REPLY_BYTES)).await;
            let reply = match result {
                Ok(Ok(history)) => LogQueryReply {
                    error: history
                        .truncated
                        .then(|| format!("only the newest {} lines fit in one answer", history.lines.len())),
                    lines: history.lines,
                },
                Ok(Err(error)) => LogQueryReply { lines: Vec::new(), error: Some(error.to_string()) },
                Err(error) => {
                    LogQueryReply { lines: Vec::new(), error: Some(format!("reading history: {error}")) }
                }
            };
            if let Err(error) = bus.reply(&query, reply).await {
                tracing::warn!(%error, "answering a history query failed");
            }
        });
    }
}

/// A line of the logger's own in an app's stream, such as a notice of lines lost: on stderr, so
/// drains and `deis logs` show it as an error.
pub(crate) fn logger_notice(app: &AppName, message: String) -> LogLine {
    LogLine {
        app: app.clone(),
        time: Timestamp::now(),
        source: LogSource::Logger,
        stream: Stream::Stderr,
        node: None,
        seq: 0,
        message,
    }
}

/// How long a client should wait for a history answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
