//! etcd: connecting with backoff, and registering a key that lives exactly as long as this
//! process keeps its lease alive. Liveness in the platform is this and nothing else: a node, a
//! component or a route is alive while its leased key exists.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, PutOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::EtcdConfig;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("shutdown began before etcd at {0:?} could be reached")]
    ShuttingDown(Vec<String>),
}

/// How to connect to `config`'s endpoints: giving up on an endpoint after `connect_timeout`, on a
/// request after 5 s, and keeping idle connections alive.
pub fn connect_options(config: &EtcdConfig, connect_timeout: Duration) -> ConnectOptions {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(connect_timeout)
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        // etcd's simple tokens live in the memory of the member that issued them: after that
        // member restarts every request is refused with "invalid auth token" until the client
        // authenticates again (found by chaos's kill-etcd-leader: the schedulers never led again).
        options = options.with_user(user.clone(), password.clone()).with_auto_token_refresh(true);
    }
    options
}

/// Connects, retrying with backoff until etcd answers or shutdown begins.
pub async fn connect(config: &EtcdConfig, shutdown: &Shutdown) -> Result<Client, EtcdError> {
    let mut backoff = Backoff::default();
    loop {
        let options = connect_options(config, Duration::from_secs(3));
        match Client::connect(&config.endpoints, Some(options)).await {
            Ok(mut client) => match client.status().await {
                Ok(_) => return Ok(client),
                Err(error) => tracing::warn!(endpoints = ?config.endpoints, %error, "etcd not answering yet"),
            },
            Err(error) => tracing::warn!(endpoints = ?config.endpoints, %error, "etcd not reachable yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.cancelled() => return Err(EtcdError::ShuttingDown(config.endpoints.clone())),
        }
    }
}

/// A key to keep alive under a lease.
#[derive(Debug, Clone)]
pub struct Registration {
    pub key: String,
    pub value: Vec<u8>,
    pub ttl: Duration,
}

/// The state of a registration, for health checks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not (or no longer) registered; trying.
    Registering,
    /// The key exists under this lease.
    Registered { lease: i64 },
    /// Stopped.
    Stopped,
}

/// Controls a running registration.
#[derive(Debug)]
pub struct RegistrationHandle {
    stop: CancellationToken,
    /// Set when stopping should leave the lease to expire instead of revoking it.
    abandon: watch::Sender<bool>,
    state: watch::Receiver<RegistrationState>,
    task: tokio::task::JoinHandle<()>,
}

impl RegistrationHandle {
    /// The current state.
    pub fn state(&self) -> RegistrationState {
        *self.state.borrow()
    }

    /// A receiver to watch the state change.
    pub fn watch(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Stops and revokes the lease: the key disappears at once (a clean shutdown).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Stops keeping the lease alive without revoking it, as a crash or a partition would: the
    /// key disappears when the TTL runs out.
    pub async fn abandon(self) {
        let _ = self.abandon.send(true);
        self.stop.cancel();
        let _ = self.task.await;
    }
}

impl Registration {
    /// Starts keeping the key registered. If the lease is lost (expired during a partition,
    /// revoked, or etcd's data was lost), a new lease is granted and the key put again. Shutdown
    /// revokes the lease so the key goes at once.
    pub fn spawn(self, client: Client, shutdown: &Shutdown) -> RegistrationHandle {
        let stop = shutdown.token().child_token();
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let (state_tx, state_rx) = watch::channel(RegistrationState::Registering);
        let task = tokio::spawn(self.run(client, stop.clone(), abandon_rx, state_tx));
        RegistrationHandle { stop, abandon: abandon_tx, state: state_rx, task }
    }

    async fn run(
        self,
        mut client: Client,
        stop: CancellationToken,
        abandon: watch::Receiver<bool>,
        state: watch::Sender<RegistrationState>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.ttl.max(Duration::from_secs(1)));
        let ttl_secs = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        loop {
            let _ = state.send(RegistrationState::Registering);
            let lease = match self.register_once(&mut client, ttl_secs).await {
                Ok(lease) => lease,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(key = %self.key, %error, ?delay, "registration failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            };
            backoff.reset();
            let _ = state.send(RegistrationState::Registered { lease });
            tracing::info!(key = %self.key, lease, "registered in etcd");

            let ended = self.keep_alive(&mut client, lease, &stop).await;
            match ended {
                KeepAliveEnd::Stopped => {
                    if !*abandon.borrow() {
                        // Revoking deletes the key now instead of after the TTL.
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
                    }
                    break;
                }
                KeepAliveEnd::Lost(reason) => {
                    tracing::warn!(key = %self.key, lease, %reason, "lease lost; registering again");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        }
        let _ = state.send(RegistrationState::Stopped);
    }

    async fn register_once(&self, client: &mut Client, ttl_secs: i64) -> Result<i64, etcd_client::Error> {
        let lease = client.lease_grant(ttl_secs, None).await?.id();
        let put = client
            .put(self.key.as_bytes(), self.value.clone(), Some(PutOptions::new().with_lease(lease)))
            .await;
        if let Err(e) = put {
            let _ = client.lease_revoke(lease).await;
            return Err(e);
        }
        Ok(lease)
    }

    async fn keep_alive(&self, client: &mut Client, lease: i64, stop: &CancellationToken) -> KeepAliveEnd {
        let (mut keeper, mut responses) = match client.lease_keep_alive(lease).await {
            Ok(pair) => pair,
            Err(e) => return KeepAliveEnd::Lost(e.to_string()),
        };
        // A third of the TTL leaves two more tries before the lease runs out.
        let period = (self.ttl / 3).max(Duration::from_millis(200));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return KeepAliveEnd::Stopped,
                _ = tick.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        return KeepAliveEnd::Lost(e.to_string());
                    }
                    let answer = tokio::time::timeout(period.max(Duration::from_secs(1)), responses.message()).await;
                    match answer {
                        Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
                        Ok(Ok(Some(_))) => return KeepAliveEnd::Lost("lease expired or revoked".into()),
                        Ok(Ok(None)) => return KeepAliveEnd::Lost("keep-alive stream closed".into()),
                        Ok(Err(e)) => return KeepAliveEnd::Lost(e.to_string()),
                        Err(_) => return KeepAliveEnd::Lost("keep-alive unanswered".into()),
                    }
                }
            }
        }
    }
}

enum KeepAliveEnd {
    Stopped,
    Lost(String),
}

/// Keeps `on_change` fed with every key and value under `prefix`: a full read, then a watch from
/// that revision, calling `on_change` with the whole set after the read and after each batch of
/// events. When etcd is unreachable or the watch breaks it reconnects with backoff; meanwhile the
/// caller keeps what it last saw (so a router keeps routing, a logger keeps forwarding). Returns
/// at shutdown.
pub async fn follow_prefix<F>(config: &EtcdConfig, prefix: &str, shutdown: &Shutdown, mut on_change: F)
where
    F: FnMut(&std::collections::BTreeMap<String, Vec<u8>>) + Send,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let Ok(mut client) = connect(config, shutdown).await else { return };
        let result: Result<(), etcd_client::Error> = async {
            let resp =
                client.get(prefix.as_bytes(), Some(etcd_client::GetOptions::new().with_prefix())).await?;
            let revision = resp.header().map_or(0, |h| h.revision());
            let mut kvs: std::collections::BTreeMap<String, Vec<u8>> = resp
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok().map(|k| (k.to_owned(), kv.value().to_vec())))
                .collect();
            on_change(&kvs);
            backoff.reset();
            let mut watch = client
                .watch(
                    prefix.as_bytes(),
                    Some(etcd_client::WatchOptions::new().with_prefix().with_start_revision(revision + 1)),
                )
                .await?;
            loop {
                let msg = tokio::select! {
                    m = watch.message() => m?,
                    _ = shutdown.cancelled() => return Ok(()),
                };
                let Some(msg) = msg else { return Ok(()) };
                for event in msg.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Ok(key) = kv.key_str() else { continue };
                    match event.event_type() {
                        etcd_client::EventType::Put => kvs.insert(key.to_owned(), kv.value().to_vec()),
                        etcd_client::EventType::Delete => kvs.remove(key),
                    };
                }
                on_change(&kvs);
            }
        }
        .await;
        if shutdown.is_shutting_down() {
            return;
        }
        if let Err(error) = result {
            tracing::warn!(%prefix, %error, "etcd watch lost; keeping what was last seen while reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
