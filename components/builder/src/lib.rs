//! The builder: receives `git push` over SSH, builds the pushed commit into an image (the app's
//! Dockerfile, or Heroku buildpacks on the stack image), pushes it to the platform registry and
//! announces the build on the bus, then tells the pusher the release and its URL once the
//! release is healthy.
//!
//! The flow of one push: [`ssh`] lets a registered key in and starts `git receive-pack` for an
//! app the user may use; git runs our static pre-receive hook ([`hook`], this same binary),
//! which hands the push to this process over a Unix socket; [`push`] takes the app's build
//! lock, [`build`]s, publishes the outcome and waits for the release. A failed build fails the
//! hook, so git rejects the push and the branch stays where it was.

pub mod build;
pub mod config;
mod destroyed;
pub mod git;
pub mod hook;
mod metrics;
mod push;
pub mod ssh;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bus_schema::discovery::ComponentRecord;
use bus_schema::streams::{StreamId, ensure_stream};
use bus_schema::{AppName, Bus, Component, Sender};
use prometheus_client::registry::Registry;
use service_kit::{Health, OpsServer, Registration, Shutdown};
use tokio::net::{TcpListener, UnixListener};

pub use config::BuilderConfig;
use push::PushContext;

#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    #[error("preparing the data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("SSH host key: {0}")]
    HostKey(String),
    #[error(transparent)]
    Docker(#[from] service_kit::docker::DockerError),
    #[error(transparent)]
    Nats(#[from] service_kit::nats::NatsError),
    #[error("the builder_key is empty: set the secret shared with the controller's builder_key")]
    NoBuilderKey,
    #[error("finding this executable for the git hook: {0}")]
    HookExe(String),
    #[error("the SSH server stopped: {0}")]
    Ssh(String),
}

/// The listeners the builder serves on, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub ssh: TcpListener,
    pub ops: TcpListener,
}

/// Shared by every connection and build.
#[derive(Debug)]
pub struct Builder {
    pub config: BuilderConfig,
    /// The controller, called with the builder's own secret.
    pub controller: controller_api::Client,
    pub docker: Docker,
    pub bus: Bus,
    /// The executable git runs as the pre-receive hook.
    pub hook_exe: PathBuf,
    pushes: Mutex<HashMap<String, Arc<PushContext>>>,
    locks: Mutex<HashMap<AppName, Arc<tokio::sync::Mutex<()>>>>,
    metrics: metrics::Metrics,
    shutdown: Shutdown,
}

impl Builder {
    /// Remembers an authorised push; its hook proves which push it is with the returned token.
    fn add_push(&self, push: PushContext) -> String {
        let mut bytes = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.pushes.lock().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), Arc::new(push));
        token
    }

    fn push(&self, token: &str) -> Option<Arc<PushContext>> {
        self.pushes.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    fn forget_push(&self, token: &str) {
        self.pushes.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
    }

    /// The app's build lock: one build per app at a time.
    fn app_lock(&self, app: &AppName) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(app.clone()).or_default().clone()
    }
}

/// Runs the builder until shutdown.
pub async fn run(
    config: BuilderConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), BuilderError> {
    if config.builder_key.is_empty() {
        return Err(BuilderError::NoBuilderKey);
    }
    for dir in [config.data_dir.clone(), config.repos_dir(), config.cache_dir()] {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| BuilderError::DataDir { path: dir.display().to_string(), reason: e.to_string() })?;
    }
    let host_key = ssh::host_key(&config.host_key_path()).await.map_err(BuilderError::HostKey)?;
    let hook_exe = match &config.hook_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| BuilderError::HookExe(e.to_string()))?,
    };
    let docker = service_kit::docker::connect().await?;
    let sender = Sender { component: Component::Builder, instance: config.advertise.clone() };
    // The SSH port and the health endpoint serve before the bus comes (a push then fails with
    // a clear message rather than hanging before the banner); the client connects on its own.
    let bus = service_kit::nats::connect_bus_in_background(&config.nats, sender, &shutdown).await?;
    shutdown.spawn(builds_stream(bus.clone(), config.nats.stream_options(), shutdown.clone()));

    let socket = config.hook_socket();
    let _ = tokio::fs::remove_file(&socket).await;
    let hooks = UnixListener::bind(&socket)
        .map_err(|e| BuilderError::DataDir { path: socket.display().to_string(), reason: e.to_string() })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));
    }

    let metrics = metrics::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let builder = Arc::new(Builder {
        controller: controller_api::Client::for_builder(&config.controller_url, &config.builder_key),
        config: config.clone(),
        docker,
        bus: bus.clone(),
        hook_exe,
        pushes: Mutex::default(),
        locks: Mutex::default(),
        metrics,
        shutdown: shutdown.clone(),
    });
    shutdown.spawn(push::serve_hooks(builder.clone(), hooks));
    shutdown.spawn(destroyed::follow(builder.clone()));

    let ops = OpsServer::new(registry, move || {
        let nats = if bus.client().connection_state() == async_nats::connection::State::Connected {
            Ok(())
        } else {
            Err("nats disconnected".to_owned())
        };
        Health::from_checks([("nats".to_owned(), nats)])
    });
    shutdown.spawn(ops.serve(listeners.ops, shutdown.clone()));
    if config.register_in_etcd {
        shutdown.spawn(register(config.clone(), shutdown.clone()));
    }

    let addr = listeners.ssh.local_addr().ok();
    tracing::info!(?addr, registry = %config.registry, "builder listening for git pushes");
    let server = ssh::Server { builder: builder.clone() };
    ssh::serve(server, Arc::new(ssh::config(host_key)), &listeners.ssh, shutdown.token().clone()).await;
    let result = Ok(());
    let _ = tokio::fs::remove_file(&socket).await;
    result
}

/// Build outcomes are published durably: the stream must exist before the first one. Declared
/// once the bus answers (the controller declares it too).
async fn builds_stream(bus: Bus, options: bus_schema::streams::StreamOptions, shutdown: Shutdown) {
    let spec = bus.namespace().stream(StreamId::Builds);
    let mut backoff = service_kit::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    for attempt in 1u64.. {
        match ensure_stream(bus.jetstream(), &spec, &options).await {
            Ok(_) => return,
            // Quiet while the bus is still coming; said once a minute or so after that (a
            // stream whose settings conflict never comes right by waiting).
            Err(error) if attempt % 12 == 5 => {
                tracing::warn!(%error, attempt, "the BUILDS stream cannot be declared; retrying")
            }
            Err(error) => tracing::debug!(%error, "the BUILDS stream cannot be declared yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Keeps `<prefix>/components/builder/<advertise>` alive in etcd: routers send port 2222 there.
async fn register(config: BuilderConfig, shutdown: Shutdown) {
    let Ok(client) = service_kit::etcd::connect(&config.etcd, &shutdown).await else {
        return;
    };
    let key = bus_schema::discovery::Keys::new(&config.etcd.prefix).component("builder", &config.advertise);
    let value = ComponentRecord::new(config.advertise.as_str(), env!("CARGO_PKG_VERSION")).to_json();
    let handle = Registration { key, value, ttl: config.etcd.lease_ttl() }.spawn(client, &shutdown);
    shutdown.cancelled().await;
    tokio::time::timeout(Duration::from_secs(5), handle.stop()).await.ok();
}
