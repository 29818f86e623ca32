//! Registration under a lease, against real etcd: the key lives while the keepalive runs, goes
//! when it stops, and comes back after the lease is lost or etcd restarts with no data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;
use service_kit::etcd::{RegistrationHandle, RegistrationState};
use service_kit::testing::{TestServices, eventually, free_port};
use service_kit::{Registration, Shutdown};

fn unique_key(name: &str) -> String {
    format!("/test/{}/{name}", uuid_like())
}

fn uuid_like() -> String {
    format!("{:x}{:x}", std::process::id(), Instant::now().elapsed().as_nanos() ^ rand_u64())
}

fn rand_u64() -> u128 {
    u128::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos())
}

async fn shared_client() -> Client {
    Client::connect(TestServices::get().etcd_endpoints, None).await.unwrap()
}

async fn value_of(client: &mut Client, key: &str) -> Option<Vec<u8>> {
    let resp = client.get(key, None).await.ok()?;
    resp.kvs().first().map(|kv| kv.value().to_vec())
}

/// Registers `value` at `key` and waits until the registration holds its lease. Its shutdown is
/// never triggered: tests end registrations through the handle.
async fn registered(client: &Client, key: &str, value: &[u8], ttl: Duration) -> RegistrationHandle {
    let registration = Registration { key: key.to_owned(), value: value.to_vec(), ttl };
    let handle = registration.spawn(client.clone(), &Shutdown::new());
    let mut state = handle.watch();
    state.wait_for(|s| matches!(s, RegistrationState::Registered { .. })).await.unwrap();
    handle
}

#[tokio::test]
async fn key_lives_past_its_ttl_while_kept_alive_and_goes_within_ttl_when_abandoned() {
    let mut client = shared_client().await;
    let key = unique_key("node1");
    let shutdown = Shutdown::new();
    let ttl = Duration::from_secs(2);
    let handle =
        Registration { key: key.clone(), value: b"10.0.0.1".to_vec(), ttl }.spawn(client.clone(), &shutdown);

    eventually("the key is registered", Duration::from_secs(5), || {
        let mut c = client.clone();
        let k = key.clone();
        async move { value_of(&mut c, &k).await }
    })
    .await;
    // Two full TTLs later the key is still there: the keepalive works.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(value_of(&mut client, &key).await.as_deref(), Some(&b"10.0.0.1"[..]));

    // A crash: the keepalive stops and nobody revokes the lease.
    let stopped = Instant::now();
    handle.abandon().await;
    eventually("the abandoned key expires", ttl + Duration::from_secs(3), || {
        let mut c = client.clone();
        let k = key.clone();
        async move { value_of(&mut c, &k).await.is_none().then_some(()) }
    })
    .await;
    println!("abandoned key gone after {:?} (TTL {ttl:?})", stopped.elapsed());
}

#[tokio::test]
async fn a_clean_stop_removes_the_key_at_once() {
    let mut client = shared_client().await;
    let key = unique_key("controller");
    let handle = registered(&client, &key, b"x", Duration::from_secs(30)).await;
    handle.stop().await;
    assert_eq!(value_of(&mut client, &key).await, None, "a revoked lease takes its key with it");
}

#[tokio::test]
async fn a_lost_lease_is_replaced_and_the_key_comes_back() {
    let mut client = shared_client().await;
    let key = unique_key("router");
    let handle = registered(&client, &key, b"r", Duration::from_secs(2)).await;
    let RegistrationState::Registered { lease } = handle.state() else { unreachable!() };

    // Someone (an operator, or etcd after a partition) ends the lease: the key goes with it.
    client.lease_revoke(lease).await.unwrap();
    assert_eq!(value_of(&mut client, &key).await, None);

    let new_lease = eventually("a new lease is granted", Duration::from_secs(10), || {
        let s = handle.state();
        async move {
            match s {
                RegistrationState::Registered { lease: l } if l != lease => Some(l),
                _ => None,
            }
        }
    })
    .await;
    assert_ne!(new_lease, lease);
    assert_eq!(value_of(&mut client, &key).await.as_deref(), Some(&b"r"[..]));
    handle.stop().await;
}

/// An etcd of this test's own, so it can be killed without disturbing other tests.
struct OwnEtcd {
    child: Child,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

impl OwnEtcd {
    fn start(dir: tempfile::TempDir, client_port: u16, peer_port: u16) -> Self {
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .args(["--name", "own", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args([
                "--initial-cluster",
                &format!("own={peer_url}"),
                "--logger",
                "zap",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd must be installed (./compose/services up installs it)");
        Self { child, client_port, peer_port, dir }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd and throws its data away: it comes back empty, as a rebuilt member would.
    fn restart_empty(mut self) -> Self {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::fs::remove_dir_all(self.dir.path().join("data")).unwrap();
        let (dir, c, p) = (
            std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()),
            self.client_port,
            self.peer_port,
        );
        Self::start(dir, c, p)
    }
}

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn registration_comes_back_after_etcd_restarts_empty() {
    let etcd = OwnEtcd::start(tempfile::tempdir().unwrap(), free_port(), free_port());
    let endpoint = etcd.endpoint();
    let config = service_kit::EtcdConfig { endpoints: vec![endpoint.clone()], ..Default::default() };
    let shutdown = Shutdown::new();
    let client = service_kit::etcd::connect(&config, &shutdown).await.unwrap();
    let key = "/deis/nodes/node7".to_owned();
    let handle = registered(&client, &key, b"n7", Duration::from_secs(2)).await;

    let etcd = etcd.restart_empty();
    let restarted = Instant::now();
    eventually("the key is registered again in the empty etcd", Duration::from_secs(20), || {
        let endpoint = endpoint.clone();
        let key = key.clone();
        async move {
            let mut c = Client::connect([endpoint], None).await.ok()?;
            value_of(&mut c, &key).await
        }
    })
    .await;
    println!("re-registered {:?} after etcd came back empty", restarted.elapsed());
    handle.stop().await;
    drop(etcd);
}
