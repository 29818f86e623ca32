//! security: the tenants' isolation tier. Against the 3-node compose cluster it signs up two
//! ordinary users, a victim and an attacker, deploys an app for each (the victim's carries a
//! secret file), then replays every attack an ordinary account once got through (issue #20) from
//! outside, as that user would: through the front door, `git push`, `deis run` one-offs and the
//! bus's public port. Each attack reports whether the isolation held and what it saw.
// Printing progress and the report is this crate's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod attacks;
pub mod repo;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chaos::platform::{Platform, Settings};
use controller_api::{Client, LoginRequest, RegisterRequest};

/// How to reach the cluster, beyond what the chaos suite's [`Settings`] hold.
#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    /// The tier's app (`security/app`).
    pub app_dir: PathBuf,
    /// The front door's NATS port on 127.0.0.1.
    pub nats_port: u16,
    /// The router's NATS password: the attack on bus credentials uses the most exposed
    /// component's account, as an attacker who took over a router would.
    pub router_nats_password: String,
}

/// One attack's outcome.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub held: bool,
    pub detail: String,
}

impl Verdict {
    pub fn new(held: bool, detail: impl Into<String>) -> Self {
        Self { held, detail: detail.into() }
    }
}

/// The attacks, in the order `run all` runs them (`domains` last: it changes the platform
/// domain for a moment).
pub const ATTACKS: [(&str, &str); 11] = [
    ("base-image", "a Dockerfile FROM the victim's image (by repository and by short id) does not build"),
    (
        "deploy-image",
        "builds:create with the victim's image is refused, the same way whether the tag exists or not",
    ),
    (
        "app-to-app",
        "a one-off reaches neither the victim's containers nor the cluster's services; no NET_RAW; pids and memory limited",
    ),
    (
        "quotas",
        "oversized config, too many process types or containers are refused with a 4xx; the victim still deploys",
    ),
    (
        "sessions",
        "registering first gives no admin; passwd ends other tokens; wrong passwords get 429 with Retry-After",
    ),
    (
        "outbound",
        "BUILDPACK_URL and drains pointing inside the cluster are refused, not fetched or posted to",
    ),
    ("names-reused", "an app created with a destroyed app's name starts from an empty repository"),
    (
        "idle-connections",
        "silent and half-sent connections are closed; one address cannot hold more sockets than its limit",
    ),
    (
        "bus-credentials",
        "the router's NATS account can neither read the desired state nor command the agents",
    ),
    (
        "log-credentials",
        "a tenant's own log credentials read its apps' drain streams and not another tenant's",
    ),
    (
        "domains",
        "a custom domain under the platform domain is refused, also after the domain changes; forwarded headers are the edge's; /metrics is not public",
    ),
];

/// The tier's state: the two tenants and their apps.
pub struct Tier {
    pub options: Options,
    pub run_id: String,
    pub victim: Platform,
    pub attacker: Platform,
    /// The victim's app (three replicas, one per node) and the secret its image carries.
    pub victim_app: String,
    pub secret: String,
    /// The attacker's own app, deployed from the tier's app.
    pub attacker_app: String,
    /// Whether the very first user registered on the cluster was made an administrator.
    pub first_user_admin: Option<bool>,
    pub work: tempfile::TempDir,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier").field("run_id", &self.run_id).finish()
    }
}

pub fn say(what: &str) {
    let now = time::OffsetDateTime::now_utc();
    println!("==> [security {:02}:{:02}:{:02}] {what}", now.hour(), now.minute(), now.second());
}

impl Tier {
    /// Registers a first user (checked for admin rights), signs up the two tenants, and deploys
    /// the victim's app (three replicas) and the attacker's.
    pub async fn setup(options: Options) -> anyhow::Result<Self> {
        let run_id = format!("{:04x}", rand::random::<u16>());
        let work = tempfile::Builder::new().prefix("deis-security-").tempdir()?;
        say(&format!("run {run_id} against cluster '{}'", options.settings.cluster));
        let first_user_admin = first_user_is_admin(&options.settings, &run_id).await?;
        let victim_dir = work.path().join("victim");
        let attacker_dir = work.path().join("attacker");
        std::fs::create_dir_all(&victim_dir)?;
        std::fs::create_dir_all(&attacker_dir)?;
        let victim = Platform::connect(options.settings.clone(), &format!("{run_id}v"), &victim_dir).await?;
        let attacker =
            Platform::connect(options.settings.clone(), &format!("{run_id}a"), &attacker_dir).await?;
        let secret = format!("victim-secret-{:016x}", rand::random::<u64>());
        let mut tier = Self {
            victim_app: format!("sec-{run_id}-victim"),
            attacker_app: format!("sec-{run_id}-mine"),
            run_id,
            secret,
            first_user_admin,
            options,
            victim,
            attacker,
            work,
        };
        tier.deploy_victim().await?;
        tier.deploy_attacker().await?;
        Ok(tier)
    }

    async fn deploy_victim(&mut self) -> anyhow::Result<()> {
        let app = self.victim_app.clone();
        say(&format!("victim: create {app}, git push (with a secret file), scale web=3"));
        self.victim.api.app_create(Some(&app)).await?;
        let repo = self.work.path().join("victim-app");
        repo::from_dir(&self.options.app_dir, &repo, &[("SECRET.txt", &format!("{}\n", self.secret))])
            .await?;
        push_or_fail(&self.victim, &repo, &app).await?;
        self.victim.api.scale(&app, &[("web".to_owned(), 3)].into()).await?;
        self.wait_served(&app, Duration::from_secs(120)).await?;
        let started = Instant::now();
        while self.running(&self.victim, &app).await.len() < 3 {
            if started.elapsed() > Duration::from_secs(120) {
                bail!("the victim's app has not 3 running containers after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    async fn deploy_attacker(&mut self) -> anyhow::Result<()> {
        let app = self.attacker_app.clone();
        say(&format!("attacker: create {app}, git push"));
        self.attacker.api.app_create(Some(&app)).await?;
        let repo = self.work.path().join("attacker-app");
        repo::from_dir(&self.options.app_dir, &repo, &[]).await?;
        push_or_fail(&self.attacker, &repo, &app).await?;
        self.wait_served(&app, Duration::from_secs(120)).await
    }

    /// Waits until the app answers through the front door.
    pub async fn wait_served(&self, app: &str, patience: Duration) -> anyhow::Result<()> {
        let host = self.victim.host_of(app);
        let started = Instant::now();
        loop {
            if let Ok((200, body)) = self.get(&host, "/").await
                && body.starts_with("secure")
            {
                return Ok(());
            }
            if started.elapsed() > patience {
                bail!("{app} does not answer through the front door after {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A GET through the front door: status and body.
    pub async fn get(&self, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
        self.get_with(host, path, &[]).await
    }

    pub async fn get_with(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String)> {
        let mut req = http().get(format!("http://{}{path}", self.options.settings.http)).header("Host", host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// The running containers of an app, from every node's engine.
    pub async fn running(&self, p: &Platform, app: &str) -> Vec<chaos::cluster::AppContainer> {
        let mut found = Vec::new();
        for node in ["node1", "node2", "node3"] {
            if let Ok(list) = p.cluster.app_containers(node).await {
                found.extend(list.into_iter().filter(|c| c.app == app && c.running));
            }
        }
        found
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    pub fn api_host(&self) -> String {
        format!("deis.{}", self.options.settings.domain)
    }
}

/// A plain HTTP client with a short timeout, never following redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Pushes and fails with the push's output when git says it failed.
pub async fn push_or_fail(p: &Platform, repo: &Path, app: &str) -> anyhow::Result<()> {
    let (ok, lines) = push(p, repo, app).await;
    if !ok {
        bail!("git push to {app} failed:\n{}", lines.join("\n"));
    }
    Ok(())
}

/// A push and everything it printed; whether git said it succeeded.
pub async fn push(p: &Platform, repo: &Path, app: &str) -> (bool, Vec<String>) {
    let mut lines = Vec::new();
    let result = p.push(repo, app, |line| lines.push(line.to_owned())).await;
    if let Err(e) = &result {
        lines.push(format!("({e})"));
    }
    (result.is_ok(), lines)
}

/// Registers a user with a random password (no admin code, as anyone would); its password.
pub async fn register(settings: &Settings, username: &str) -> anyhow::Result<String> {
    let anonymous = Client::new(&format!("http://{}", settings.http), None);
    let password = format!("{username}-{:016x}", rand::random::<u64>());
    anonymous
        .register(&RegisterRequest {
            username: username.to_owned(),
            password: password.clone(),
            email: format!("{username}@security.invalid"),
            first_name: String::new(),
            last_name: String::new(),
            admin_code: None,
        })
        .await
        .with_context(|| format!("registering {username}"))?;
    Ok(password)
}

/// A client logged in as the user: each call is a session of its own (a token of its own).
pub async fn log_in(settings: &Settings, username: &str, password: &str) -> anyhow::Result<Client> {
    let base = format!("http://{}", settings.http);
    let request = LoginRequest { username: username.to_owned(), password: password.to_owned() };
    let token = Client::new(&base, None).login(&request).await?.token;
    Ok(Client::new(&base, Some(token)))
}

/// Registers a user of the run's own before anyone else (on a new cluster: the first user) and
/// asks the controller whether it is an administrator.
async fn first_user_is_admin(settings: &Settings, run_id: &str) -> anyhow::Result<Option<bool>> {
    let username = format!("first{run_id}");
    let password = register(settings, &username).await.context("registering the first user")?;
    let me = log_in(settings, &username, &password).await?.whoami().await?;
    Ok(Some(me.is_superuser))
}

/// Runs the named attacks (or `all`) and prints the report; whether every isolation held.
pub async fn run(options: Options, names: Vec<String>) -> anyhow::Result<bool> {
    let names: Vec<String> = if names.iter().any(|n| n == "all") {
        ATTACKS.iter().map(|(n, _)| (*n).to_owned()).collect()
    } else {
        names
    };
    for name in &names {
        if !ATTACKS.iter().any(|(n, _)| n == name) {
            bail!("no attack named '{name}' (security list shows them)");
        }
    }
    let mut tier = Tier::setup(options).await?;
    let mut results = Vec::new();
    for name in &names {
        say(&format!("attack: {name}"));
        let started = Instant::now();
        let verdict = match attacks::run(&mut tier, name).await {
            Ok(v) => v,
            Err(e) => Verdict::new(false, format!("the attack could not be carried out: {e:#}")),
        };
        say(&format!(
            "{name}: {} ({:.1} s): {}",
            if verdict.held { "held" } else { "BROKEN" },
            started.elapsed().as_secs_f64(),
            verdict.detail
        ));
        results.push((name.clone(), verdict));
    }
    attacks::clean_up(&tier).await;
    println!("\n==> [security] report (run {})", tier.run_id);
    for (name, v) in &results {
        println!("    {:<18} {:<6} {}", name, if v.held { "held" } else { "BROKEN" }, v.detail);
    }
    Ok(results.iter().all(|(_, v)| v.held))
}
