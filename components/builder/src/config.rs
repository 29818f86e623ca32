//! The builder's configuration: defaults here, then a TOML file, then `DEIS_BUILDER_*` variables.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use service_kit::{EtcdConfig, LogConfig, NatsConfig, OutboundPolicy};

/// Everything the builder is told at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuilderConfig {
    /// Where the SSH server listens (the routers pass port 2222 to it).
    pub listen_ssh: String,
    /// Where `/healthz` and `/metrics` are served.
    pub listen_ops: String,
    /// The SSH address routers dial, written to etcd under `components/builder/<advertise>`.
    pub advertise: String,
    /// Whether to register in etcd (off in tests that run without routers).
    pub register_in_etcd: bool,
    /// Where the builder keeps its state: the SSH host key, one bare repository per app, the
    /// per-app build caches and the socket its git hooks talk to.
    pub data_dir: PathBuf,
    /// The controller's base URL.
    pub controller_url: String,
    /// The builder's own secret for the controller's `/v1/hooks/` (the controller's
    /// `builder_key`); never a user's token.
    pub builder_key: String,
    /// The platform registry (`host:port`): images go to `<registry>/<app>:git-<sha8>`.
    pub registry: String,
    /// The image buildpacks compile in and buildpack apps run on.
    pub stack_image: String,
    /// Where the shipped buildpacks are (one directory each, with `bin/detect|compile|release`).
    pub buildpacks_dir: PathBuf,
    /// The shipped buildpacks in detection order: the first whose `bin/detect` succeeds builds.
    pub buildpacks: Vec<String>,
    /// URL schemes `BUILDPACK_URL` may use. `file` is for tests only: it would let an app read
    /// files on the builder, such as other apps' repositories.
    pub buildpack_url_schemes: Vec<String>,
    /// Where `BUILDPACK_URL` (and a Dockerfile's `ADD <url>`) may connect: loopback, link-local,
    /// private and the platform's networks are refused unless allowed here.
    pub outbound: OutboundPolicy,
    /// Images a Dockerfile may build from besides the stack image and the app's own images:
    /// repositories (`python`, `docker.io/library/debian`) or prefixes (`mirror.example/*`).
    /// Each is pulled and used by its id; nothing in the platform registry but the app's own.
    pub allowed_base_images: Vec<String>,
    /// Most process types a Procfile may declare: the controller refuses more (its quota of the
    /// same default), so a push is refused here at once instead of after building an image that
    /// can never be released.
    pub max_process_types: usize,
    /// An SSH client must finish logging in within this many seconds of connecting.
    pub ssh_auth_timeout_secs: u64,
    /// An SSH connection that carries no data for this many seconds is closed (a push streaming
    /// its build's output carries data).
    pub ssh_idle_timeout_secs: u64,
    /// SSH connections open at once from one client address; more are refused.
    pub ssh_max_connections_per_address: usize,
    /// The executable git runs as the pre-receive hook (`builder hook`); empty means this very
    /// executable.
    pub hook_exe: Option<PathBuf>,
    /// The git executable.
    pub git: String,
    /// Prefix of the build containers' names, so an operator (or a test) can find them.
    pub container_prefix: String,
    /// How long a build may take before it is stopped, in seconds.
    pub build_timeout_secs: u64,
    /// How long the push waits for the controller to release the build and the scheduler to
    /// report it healthy, in seconds.
    pub release_timeout_secs: u64,
    /// Memory of a build container, in MiB.
    pub build_memory_mb: u64,
    /// Largest pushed tree, compiled slug or build cache kept, in MiB.
    pub max_archive_mb: u64,
    pub nats: NatsConfig,
    pub etcd: EtcdConfig,
    pub log: LogConfig,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        Self {
            listen_ssh: "0.0.0.0:2223".to_owned(),
            listen_ops: "0.0.0.0:9223".to_owned(),
            advertise: "127.0.0.1:2223".to_owned(),
            register_in_etcd: true,
            data_dir: PathBuf::from("/var/lib/deis/builder"),
            controller_url: "http://127.0.0.1:8000".to_owned(),
            builder_key: String::new(),
            registry: "127.0.0.1:5000".to_owned(),
            stack_image: "deis/stack".to_owned(),
            buildpacks_dir: PathBuf::from("/usr/share/deis/buildpacks"),
            buildpacks: vec!["python".to_owned(), "procfile".to_owned()],
            buildpack_url_schemes: vec!["https".to_owned(), "http".to_owned(), "git".to_owned()],
            outbound: OutboundPolicy::default(),
            allowed_base_images: Vec::new(),
            max_process_types: 32,
            ssh_auth_timeout_secs: 20,
            ssh_idle_timeout_secs: 600,
            ssh_max_connections_per_address: 16,
            hook_exe: None,
            git: "git".to_owned(),
            container_prefix: "deis-build-".to_owned(),
            build_timeout_secs: 1800,
            release_timeout_secs: 300,
            build_memory_mb: 2048,
            max_archive_mb: 1024,
            nats: NatsConfig::default(),
            etcd: EtcdConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl BuilderConfig {
    pub fn max_archive_bytes(&self) -> u64 {
        self.max_archive_mb.saturating_mul(1024 * 1024)
    }

    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("repos")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }

    pub fn hook_socket(&self) -> PathBuf {
        self.data_dir.join("hook.sock")
    }

    pub fn host_key_path(&self) -> PathBuf {
        self.data_dir.join("ssh_host_ed25519_key")
    }
}
