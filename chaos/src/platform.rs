//! The platform as its users and operators see it: the controller's API and `git push` through
//! the front door, etcd's view (live nodes, routes, leaders, health) read with deisctl's
//! credentials from whichever member answers, and the apps' public drain streams on NATS.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bus_schema::discovery::{self, HealthRecord, Keys, NodeRecord, RouteRecord};
use bus_schema::messages::DrainRecord;
use bus_schema::{AppName, Namespace};
use controller_api::Client;
use etcd_client::{ConnectOptions, GetOptions};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use crate::cluster::Cluster;

/// How to reach the cluster, from `chaos/chaos` (which reads the cluster's state folder).
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    pub http: SocketAddr,
    pub git_port: u16,
    pub domain: String,
    pub etcd_user: String,
    pub etcd_password: String,
    pub drain_password: String,
}

/// The command-line options saying how to reach a cluster, as `chaos/chaos` and
/// `compose/security` pass them (from the cluster's state folder).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The cluster's compose project.
    #[arg(long, env = "DEIS_CLUSTER", default_value = "deis")]
    pub cluster: String,
    /// The front door's HTTP port on 127.0.0.1.
    #[arg(long, env = "DEIS_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    #[arg(long, env = "DEIS_GIT_PORT", default_value_t = 2222)]
    pub git_port: u16,
    #[arg(long, env = "DEIS_DOMAIN", default_value = "deis.local")]
    pub domain: String,
    /// etcd user to read with (deisctl's).
    #[arg(long, env = "DEIS_CHAOS_ETCD_USER", default_value = "deisctl")]
    pub etcd_user: String,
    #[arg(long, env = "DEIS_CHAOS_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: String,
    /// The read-only NATS user's password, to follow the apps' drain streams.
    #[arg(long, env = "DEIS_CHAOS_DRAIN_PASSWORD", hide_env_values = true)]
    pub drain_password: String,
}

impl ClusterArgs {
    pub fn settings(self) -> Settings {
        Settings {
            cluster: self.cluster,
            http: crate::front(self.http_port),
            git_port: self.git_port,
            domain: self.domain,
            etcd_user: self.etcd_user,
            etcd_password: self.etcd_password,
            drain_password: self.drain_password,
        }
    }
}

pub struct Platform {
    pub settings: Settings,
    pub cluster: Cluster,
    pub keys: Keys,
    pub api: Client,
    ns: Namespace,
    etcd: Mutex<HashMap<String, etcd_client::Client>>,
    work: PathBuf,
    ssh_key: PathBuf,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("settings", &self.settings.cluster)
            .field("api", &self.api.base())
            .finish()
    }
}

impl Platform {
    /// Connects to the cluster and signs up a user of this run's own (with an SSH key for
    /// `git push`); `work` holds the key and the app's repository.
    pub async fn connect(settings: Settings, run_id: &str, work: &Path) -> anyhow::Result<Self> {
        let cluster = Cluster::connect(&settings.cluster)?;
        let base = format!("http://{}", settings.http);
        let anonymous = Client::new(&base, None);
        let username = format!("chaos{run_id}");
        let password = format!("chaos-{}", rand::random::<u64>());
        anonymous
            .register(&controller_api::RegisterRequest {
                username: username.clone(),
                password: password.clone(),
                email: format!("{username}@chaos.invalid"),
                first_name: String::new(),
                last_name: String::new(),
                admin_code: None,
            })
            .await
            .context("registering the suite's user with the controller")?;
        let token = anonymous
            .login(&controller_api::LoginRequest { username, password })
            .await
            .context("logging in")?
            .token;
        let api = Client::new(&base, Some(token));

        let ssh_key = work.join("id_chaos");
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", "chaos", "-f", &ssh_key.display().to_string()],
            work,
        )
        .await?;
        let public = std::fs::read_to_string(work.join("id_chaos.pub"))?;
        api.key_add(&controller_api::KeyCreateRequest { id: format!("chaos{run_id}"), public })
            .await
            .context("adding the suite's SSH key")?;

        Ok(Self {
            cluster,
            keys: Keys::new("/deis"),
            api,
            ns: Namespace::new("deis")?,
            etcd: Mutex::default(),
            work: work.to_owned(),
            ssh_key,
            settings,
        })
    }

    pub fn host_of(&self, app: &str) -> String {
        format!("{app}.{}", self.settings.domain)
    }

    // ------------------------------------------------------------------------------ etcd

    /// A linearizable read of every key under a prefix, from the first member that answers (a
    /// member cut off from the quorum cannot answer one, so it never serves stale data here).
    pub async fn etcd_prefix(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let what = format!("a read of {prefix}");
        self.on_first_member(&what, |mut kv| async move {
            let resp = kv.get(prefix, Some(GetOptions::new().with_prefix())).await?;
            Ok(resp
                .kvs()
                .iter()
                .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec()))
                .collect())
        })
        .await
    }

    /// Writes a key through the first member that answers (deisctl's credentials: platform
    /// settings, as `deisctl config platform set` writes them).
    pub async fn etcd_put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let what = format!("a write of {key}");
        self.on_first_member(&what, |mut kv| async move { kv.put(key, value, None).await.map(drop) }).await
    }

    /// `op` on the first member that answers within 2 s, trying the nodes in order.
    async fn on_first_member<T, F, Fut>(&self, what: &str, op: F) -> anyhow::Result<T>
    where
        F: Fn(etcd_client::KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut errors = Vec::new();
        for node in ["node1", "node2", "node3"] {
            let Ok(Some(ip)) = self.cluster.node_ip(node).await else { continue };
            let endpoint = format!("http://{ip}:2379");
            let client = match self.etcd_client(&endpoint).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("{node}: {e}"));
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(2), op(client.kv_client())).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => errors.push(format!("{node}: {e}")),
                Err(_) => errors.push(format!("{node}: no answer within 2 s")),
            }
            self.forget(&endpoint);
        }
        bail!("no etcd member answered {what}: {}", errors.join("; "))
    }

    async fn etcd_client(&self, endpoint: &str) -> anyhow::Result<etcd_client::Client> {
        if let Some(c) = self.etcd.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get(endpoint) {
            return Ok(c.clone());
        }
        let options = ConnectOptions::new()
            .with_user(self.settings.etcd_user.clone(), self.settings.etcd_password.clone())
            .with_auto_token_refresh(true)
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3));
        let client = tokio::time::timeout(
            Duration::from_secs(4),
            etcd_client::Client::connect([endpoint], Some(options)),
        )
        .await
        .context("no answer within 4 s")??;
        if let Ok(mut map) = self.etcd.lock() {
            map.insert(endpoint.to_owned(), client.clone());
        }
        Ok(client)
    }

    fn forget(&self, endpoint: &str) {
        if let Ok(mut map) = self.etcd.lock() {
            map.remove(endpoint);
        }
    }

    /// Nodes whose agent keeps its leased key alive.
    pub async fn live_nodes(&self) -> anyhow::Result<BTreeMap<String, NodeRecord>> {
        let mut out = BTreeMap::new();
        for (key, value) in self.etcd_prefix(&self.keys.nodes()).await? {
            let record: NodeRecord = discovery::parse(&key, &value).map_err(anyhow::Error::msg)?;
            out.insert(record.id.to_string(), record);
        }
        Ok(out)
    }

    pub async fn routes(&self, app: &str) -> anyhow::Result<Vec<(String, RouteRecord)>> {
        let app = AppName::parse(app)?;
        let mut out = Vec::new();
        for (key, value) in self.etcd_prefix(&self.keys.app_routes(&app)).await? {
            let record: RouteRecord = discovery::parse(&key, &value).map_err(anyhow::Error::msg)?;
            let container = key.rsplit('/').next().unwrap_or_default().to_owned();
            out.push((container, record));
        }
        Ok(out)
    }

    /// The scheduler instance that leads, if one does.
    pub async fn scheduler_leader(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .etcd_prefix(&self.keys.scheduler_leader())
            .await?
            .into_iter()
            .find(|(k, _)| *k == self.keys.scheduler_leader())
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The node whose database member is the primary (Patroni's leader key).
    pub async fn database_primary(&self) -> anyhow::Result<Option<String>> {
        let key = self.keys.database_leader();
        Ok(self
            .etcd_prefix(&key)
            .await?
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| String::from_utf8_lossy(&v).trim().to_owned()))
    }

    /// The node whose etcd member leads, as the members that answer see it.
    pub async fn etcd_leader(&self) -> anyhow::Result<Option<String>> {
        let mut ids: HashMap<u64, String> = HashMap::new();
        let mut leader = None;
        for node in ["node1", "node2", "node3"] {
            let Ok(Some(ip)) = self.cluster.node_ip(node).await else { continue };
            let endpoint = format!("http://{ip}:2379");
            let Ok(client) = self.etcd_client(&endpoint).await else { continue };
            let mut m = client.maintenance_client();
            match tokio::time::timeout(Duration::from_secs(2), m.status()).await {
                Ok(Ok(status)) => {
                    if let Some(header) = status.header() {
                        ids.insert(header.member_id(), node.to_owned());
                    }
                    if status.leader() != 0 {
                        leader = Some(status.leader());
                    }
                }
                _ => self.forget(&endpoint),
            }
        }
        Ok(leader.and_then(|id| ids.get(&id).cloned()))
    }

    /// Every announced part, and whether its health key says healthy (a missing key: down).
    pub async fn health(&self) -> anyhow::Result<BTreeMap<String, bool>> {
        let mut out = BTreeMap::new();
        for (key, _) in self.etcd_prefix(&self.keys.members()).await? {
            if let Some((component, instance)) = self.keys.member_of(&key) {
                out.insert(format!("{component}/{instance}"), false);
            }
        }
        for (key, value) in self.etcd_prefix(&self.keys.health()).await? {
            if let Some((component, instance)) = self.keys.health_of(&key) {
                let healthy = discovery::parse::<HealthRecord>(&key, &value).is_ok_and(|h| h.healthy);
                out.insert(format!("{component}/{instance}"), healthy);
            }
        }
        Ok(out)
    }

    /// The JetStream meta leader (a node name), as any NATS member's monitoring port says. That
    /// port listens on the node's loopback only, so the question is asked from inside a member's
    /// container, with a fixed script (bash's /dev/tcp: the image has no HTTP client).
    pub async fn nats_meta_leader(&self) -> anyhow::Result<Option<String>> {
        const ASK: &str =
            "exec 3<>/dev/tcp/127.0.0.1/8222 && printf 'GET /jsz HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3";
        for node in ["node1", "node2", "node3"] {
            let Ok(part) = self.cluster.part("nats", node).await else { continue };
            let argv = ["bash", "-c", ASK].map(str::to_owned);
            let Ok(Ok(answer)) =
                tokio::time::timeout(Duration::from_secs(3), self.cluster.exec(&part, &argv)).await
            else {
                continue;
            };
            let Some((_, body)) = answer.split_once("\r\n\r\n") else { continue };
            let Ok(body) = serde_json::from_str::<serde_json::Value>(body) else { continue };
            if let Some(leader) = body.pointer("/meta_cluster/leader").and_then(|v| v.as_str()) {
                return Ok(Some(leader.to_owned()));
            }
        }
        Ok(None)
    }

    // ------------------------------------------------------------------------------ git

    /// A repository of the suite's app (`chaos/app`), committed on `main`, in the work folder.
    pub async fn prepare_repo(&self, source: &Path) -> anyhow::Result<PathBuf> {
        let repo = self.work.join("app");
        std::fs::create_dir_all(&repo)?;
        for entry in std::fs::read_dir(source)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), repo.join(entry.file_name()))?;
            }
        }
        run("git", &["init", "-q", "-b", "main"], &repo).await?;
        self.commit(&repo, "the chaos suite's app").await?;
        Ok(repo)
    }

    /// A new commit (a file that changes every time), so the next push builds.
    pub async fn commit(&self, repo: &Path, message: &str) -> anyhow::Result<String> {
        std::fs::write(repo.join("CHAOS_COMMIT"), format!("{message} {}\n", rand::random::<u64>()))?;
        run("git", &["add", "-A"], repo).await?;
        run(
            "git",
            &["-c", "user.name=chaos", "-c", "user.email=chaos@chaos.invalid", "commit", "-qm", message],
            repo,
        )
        .await?;
        Ok(run("git", &["rev-parse", "HEAD"], repo).await?.trim().to_owned())
    }

    /// `git push` of `main` to an app, each output line (progress and build lines, `\r` or
    /// `\n` terminated) handed to `on_line` as it comes; Ok when git says the push succeeded.
    pub async fn push(&self, repo: &Path, app: &str, mut on_line: impl FnMut(&str)) -> anyhow::Result<()> {
        let url = format!("ssh://git@127.0.0.1:{}/{app}.git", self.settings.git_port);
        // git runs this through a shell: it holds only the suite's own temp path, no user input.
        let ssh = format!(
            "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.ssh_key.display()
        );
        let mut child = tokio::process::Command::new("git")
            .args(["push", "--progress", &url, "main"])
            .current_dir(repo)
            .env("GIT_SSH_COMMAND", ssh)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running git push")?;
        let mut stderr = child.stderr.take().context("git's stderr")?;
        let mut buf = [0u8; 8192];
        let mut line = Vec::new();
        loop {
            let n = stderr.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b == b'\n' || b == b'\r' {
                    if !line.is_empty() {
                        on_line(&String::from_utf8_lossy(&line));
                        line.clear();
                    }
                } else {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            on_line(&String::from_utf8_lossy(&line));
        }
        let status = child.wait().await?;
        if !status.success() {
            bail!("git push to {app} failed ({status})");
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------ logs

    /// Follows an app's public drain stream from now on, as any log consumer would, through
    /// every NATS member at once: whichever member a fault takes down, the others still deliver
    /// (what they carry is merged, so nothing counts twice).
    pub async fn watch_drain(&self, app: &str) -> anyhow::Result<DrainWatch> {
        let subject = self.ns.drain(&AppName::parse(app)?);
        let seen: Arc<Mutex<DrainSeen>> = Arc::default();
        let mut tasks = Vec::new();
        let mut errors = Vec::new();
        for node in ["node1", "node2", "node3"] {
            let Ok(Some(ip)) = self.cluster.node_ip(node).await else { continue };
            let url = format!("nats://{ip}:4222");
            let connect = async_nats::ConnectOptions::with_user_and_password(
                "drain".into(),
                self.settings.drain_password.clone(),
            )
            // Members advertise cluster-internal names this host cannot resolve.
            .ignore_discovered_servers()
            // A flood must not overflow the suite's own subscription.
            .subscription_capacity(1 << 20)
            .connect(&url);
            let client = match tokio::time::timeout(Duration::from_secs(3), connect).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    errors.push(format!("{node}: {e}"));
                    continue;
                }
                Err(_) => {
                    errors.push(format!("{node}: no answer within 3 s"));
                    continue;
                }
            };
            let mut sub = client.subscribe(subject.to_nats()).await?;
            // The subscription is live on the server once a round trip has gone through.
            client.flush().await?;
            let into = seen.clone();
            tasks.push(tokio::spawn(async move {
                let _client = client;
                while let Some(msg) = sub.next().await {
                    let Ok(record) = DrainRecord::from_json(&msg.payload) else { continue };
                    if let Ok(mut seen) = into.lock() {
                        seen.add(&record.time, &record.message);
                    }
                }
            }));
        }
        if tasks.is_empty() {
            bail!("no NATS member took the drain subscription: {}", errors.join("; "));
        }
        Ok(DrainWatch { seen, tasks })
    }
}

/// What a drain stream carried that the suite looks for.
#[derive(Debug, Default)]
pub struct DrainSeen {
    /// `(tag, seq)` of every request line (`chaos: GET /chaos/<tag>/<seq> answered by …`).
    pub requests: HashSet<(String, u64)>,
    /// Distinct flood lines per tag (`flood <tag> <i>`).
    pub flood: HashMap<String, BTreeSet<u64>>,
    /// Lines the logger said it dropped (`Error L10 …: N lines dropped`).
    pub dropped_notices: u64,
    /// Each notice once (by its time and text), since several subscriptions deliver it.
    notices: HashSet<(String, String)>,
}

impl DrainSeen {
    fn add(&mut self, time: &str, message: &str) {
        if let Some(rest) = message.strip_prefix("chaos: GET /chaos/") {
            let path = rest.split_whitespace().next().unwrap_or_default();
            if let Some((tag, seq)) = path.split_once('/')
                && let Ok(seq) = seq.parse()
            {
                self.requests.insert((tag.to_owned(), seq));
            }
        } else if let Some(rest) = message.strip_prefix("flood ") {
            let mut words = rest.split_whitespace();
            if let (Some(tag), Some(Ok(i))) = (words.next(), words.next().map(str::parse)) {
                self.flood.entry(tag.to_owned()).or_default().insert(i);
            }
        } else if let Some(rest) = message.strip_prefix("Error L10")
            && self.notices.insert((time.to_owned(), message.to_owned()))
        {
            // "Error L10 (output buffer overflow): 1234 lines dropped: …"
            let count = rest.split(':').nth(1).and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            self.dropped_notices += count.unwrap_or(0);
        }
    }
}

#[derive(Debug)]
pub struct DrainWatch {
    pub seen: Arc<Mutex<DrainSeen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for DrainWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs a program with an argument vector (never a shell) and returns its stdout.
async fn run(program: &str, args: &[&str], dir: &Path) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_lines_are_recognised() {
        let mut seen = DrainSeen::default();
        let notice =
            "Error L10 (output buffer overflow): 1234 lines dropped: the app logged faster than the logger";
        seen.add("t1", "chaos: GET /chaos/kill-node/17 answered by 1a2b3c4d5e6f");
        seen.add("t1", "chaos: GET /flood?lines=3&tag=x answered by 1a2b3c4d5e6f");
        seen.add("t2", "flood x 0");
        seen.add("t2", "flood x 2");
        seen.add("t2", "flood x 2");
        seen.add("t3", notice);
        // The same notice through a second member counts once; a later one counts again.
        seen.add("t3", notice);
        seen.add("t4", notice);
        seen.add("t5", "something else");
        assert!(seen.requests.contains(&("kill-node".to_owned(), 17)));
        assert_eq!(seen.requests.len(), 1);
        assert_eq!(seen.flood["x"].len(), 2);
        assert_eq!(seen.dropped_notices, 2468);
    }
}
