//! Test helpers shared by every crate's tests (feature `testing`): where the real test services
//! are, and `eventually` instead of sleeps. Test helpers panic with a message on failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The services that `compose/services up` started on loopback.
#[derive(Debug, Clone)]
pub struct TestServices {
    pub nats_url: String,
    pub etcd_endpoints: Vec<String>,
    pub postgres_url: String,
    pub registry: String,
}

impl TestServices {
    /// Reads `$DEIS_SERVICES_DIR/env` (default `/tmp/deis-services/env`). Panics with the command
    /// to run when the services are not up: a test never skips silently.
    pub fn get() -> Self {
        let dir = std::env::var_os("DEIS_SERVICES_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/deis-services"));
        let path = dir.join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "test services are not running ({}: {e}); start them with `./compose/services up`",
                path.display()
            )
        });
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{} has no {key}; rerun `./compose/services up`", path.display()))
        };
        Self {
            nats_url: get("DEIS_TEST_NATS_URL"),
            etcd_endpoints: get("DEIS_TEST_ETCD_ENDPOINTS").split(',').map(str::to_owned).collect(),
            postgres_url: get("DEIS_TEST_POSTGRES_URL"),
            registry: get("DEIS_TEST_REGISTRY"),
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `patience`. Use instead of
/// sleeping: it returns as soon as the condition holds, and says what did not happen.
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > patience {
            panic!("{what}: still not true after {patience:?}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// A free TCP port on loopback, for test daemons that need a port number up front.
///
/// Chosen below the kernel's ephemeral range (32768 and up): a port the kernel hands out for
/// binding to 0 may be given again at once to any outgoing connection on the machine, and then the
/// daemon's bind fails. Ports below the range are only ever taken by an explicit bind.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    for _ in 0..1_000 {
        // RandomState is seeded afresh per instance: a cheap random number without a crate.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = (LOW + (h.finish() % u64::from(SPAN)) as u32) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on loopback between {LOW} and {}", LOW + SPAN)
}

/// Puts a tiny image (a config and no layers) straight into a registry through its HTTP API,
/// for tests that need an image "already in the platform registry" without a Docker push.
pub async fn push_tiny_image(registry: &str, name: &str, tag: &str) {
    use sha2::Digest;
    let http = reqwest::Client::new();
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["true"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(config)));
    let start = http
        .post(format!("http://{registry}/v2/{name}/blobs/uploads/"))
        .send()
        .await
        .expect("registry reachable");
    assert_eq!(start.status(), 202, "starting a blob upload");
    let location = start.headers()["location"].to_str().expect("ASCII location").to_owned();
    let location =
        if location.starts_with("http") { location } else { format!("http://{registry}{location}") };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{location}{sep}digest={digest}"))
        .body(config.to_vec())
        .send()
        .await
        .expect("upload");
    assert_eq!(put.status(), 201, "uploading the config blob");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": digest},
        "layers": []
    });
    let put = http
        .put(format!("http://{registry}/v2/{name}/manifests/{tag}"))
        .header("content-type", "application/vnd.docker.distribution.manifest.v2+json")
        .body(manifest.to_string())
        .send()
        .await
        .expect("manifest upload");
    assert_eq!(put.status(), 201, "uploading the manifest");
}

/// A service that comes late and can go away, for tests that start a component before what it
/// depends on: a TCP forwarder on a port of its own, handed to the component as its NATS or etcd
/// address. Until [`LateService::open`] every connection is closed at once, as if nothing
/// listened; [`LateService::close`] cuts every forwarded connection and refuses again.
#[derive(Debug)]
pub struct LateService {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl LateService {
    /// Closed at first; `upstream` is the real service's `host:port`.
    pub async fn new(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let upstream = upstream.to_owned();
        let state = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !*state.borrow() {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut changes = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        // Closed (or dropped): the connection goes, as with a dead server.
                        _ = changes.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Self { addr, open, task }
    }

    /// Where the component connects: `scheme://127.0.0.1:port`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// The service comes: connections are forwarded from now on.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// The service goes away: forwarded connections are cut, new ones closed at once.
    pub fn close(&self) {
        self.open.send_replace(false);
    }
}

impl Drop for LateService {
    fn drop(&mut self) {
        self.open.send_replace(false);
        self.task.abort();
    }
}
