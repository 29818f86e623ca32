//! A real platform on loopback for the builder's tests and benchmark: a controller (Postgres,
//! NATS) that knows the builder's secret, the builder itself (the real SSH server, `git
//! receive-pack`, our hook binary, the Docker engine and the test registry), and on request the
//! data plane (a scheduler and an agent on the same engine), so a push ends when its release is
//! healthy, as in a cluster. Pushes use the real `git` and `ssh` clients. Everything a test
//! creates on the engine is named `deis-test-<namespace>-…` or labelled with the test's apps,
//! and removed when the harness is dropped, even after a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use builder::BuilderConfig;
use bus_schema::Namespace;
use controller::testing::TestController;
use controller_api::{Client, KeyCreateRequest};
use service_kit::testing::TestServices;
use service_kit::{EtcdConfig, NatsConfig, Shutdown};

pub const BUILDER_KEY: &str = "test-builder-secret";

pub struct Platform {
    pub ctl: TestController,
    pub ns: Namespace,
    pub prefix: String,
    pub ssh_port: u16,
    pub dir: tempfile::TempDir,
    pub builder_config: BuilderConfig,
    apps: std::sync::Mutex<Vec<String>>,
    tasks: Vec<(Shutdown, tokio::task::JoinHandle<()>)>,
}

impl Platform {
    /// The controller and the builder; with `data_plane`, a scheduler and an agent too.
    pub async fn start(test: &str, data_plane: bool) -> Self {
        Self::start_with_bus(test, data_plane, None).await
    }

    /// As `start`, the builder reaching NATS at `builder_nats` (a `LateService`, say) instead.
    pub async fn start_with_bus(test: &str, data_plane: bool, builder_nats: Option<String>) -> Self {
        Self::start_with(test, data_plane, builder_nats, |_| {}).await
    }

    /// As `start_with_bus`, the builder's config changed by `tweak` first.
    pub async fn start_with(
        test: &str,
        data_plane: bool,
        builder_nats: Option<String>,
        tweak: impl FnOnce(&mut BuilderConfig),
    ) -> Self {
        let (mut config, ns, database) = TestController::config(test).await;
        config.builder_key = Some(BUILDER_KEY.to_owned());
        let ctl = TestController::start_with(config, ns.clone(), database).await;
        let prefix = format!("deis-test-{}-", ns.root());
        let dir = tempfile::tempdir().unwrap();
        let services = TestServices::get();
        let nats = NatsConfig {
            url: services.nats_url.clone(),
            namespace: ns.root().to_owned(),
            stream_max_mb: Some(8),
            ..Default::default()
        };
        let etcd = EtcdConfig {
            endpoints: services.etcd_endpoints.clone(),
            prefix: format!("/{}", ns.root()),
            ..Default::default()
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut builder_config = BuilderConfig {
            register_in_etcd: false,
            data_dir: dir.path().join("builder"),
            controller_url: ctl.url.clone(),
            builder_key: BUILDER_KEY.to_owned(),
            registry: services.registry.clone(),
            buildpacks_dir: manifest.join("buildpacks"),
            // Tests serve custom buildpacks from local repositories.
            buildpack_url_schemes: vec!["file".to_owned()],
            hook_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_builder"))),
            container_prefix: prefix.clone(),
            build_timeout_secs: 600,
            release_timeout_secs: 120,
            nats: NatsConfig { url: builder_nats.unwrap_or_else(|| nats.url.clone()), ..nats.clone() },
            etcd: etcd.clone(),
            ..Default::default()
        };
        tweak(&mut builder_config);
        let ssh = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ssh_port = ssh.local_addr().unwrap().port();
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut tasks = Vec::new();
        let shutdown = Shutdown::new();
        let (cfg, s) = (builder_config.clone(), shutdown.clone());
        tasks.push((
            shutdown,
            tokio::spawn(async move {
                builder::run(cfg, builder::Listeners { ssh, ops }, s).await.unwrap();
            }),
        ));
        if data_plane {
            let shutdown = Shutdown::new();
            let config = agent::AgentConfig {
                node_id: "node1".to_owned(),
                container_prefix: prefix.clone(),
                memory_mb: 4096,
                lease_ttl_secs: 2,
                health_interval_ms: 300,
                inventory_interval_ms: 500,
                nats: nats.clone(),
                etcd: etcd.clone(),
                ..Default::default()
            };
            let s = shutdown.clone();
            tasks.push((shutdown, tokio::spawn(async move { agent::run(config, s).await.unwrap() })));
            let shutdown = Shutdown::new();
            let config = scheduler::SchedulerConfig {
                instance: "s1".to_owned(),
                leader_ttl_secs: 2,
                deploy_timeout_secs: 60,
                reconcile_interval_ms: 500,
                settle_ms: 500,
                stop_grace_secs: 2,
                command_timeout_secs: 120,
                nats,
                etcd,
                ..Default::default()
            };
            let s = shutdown.clone();
            tasks.push((shutdown, tokio::spawn(async move { scheduler::run(config, s).await.unwrap() })));
        }
        // The builder is ready when its SSH port answers with an SSH banner.
        service_kit::testing::eventually(
            "the builder's SSH server answers",
            Duration::from_secs(30),
            || async move {
                use tokio::io::AsyncReadExt;
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", ssh_port)).await.ok()?;
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.ok()?;
                (&buf == b"SSH-").then_some(())
            },
        )
        .await;
        Self { ctl, ns, prefix, ssh_port, dir, builder_config, apps: Default::default(), tasks }
    }

    /// A unique app name for this test.
    pub fn app_name(&self, word: &str) -> String {
        let root = self.ns.root();
        let name = format!("{word}-{}", &root[root.len() - 8..]);
        self.apps.lock().unwrap().push(name.clone());
        name
    }

    /// alice, her key registered, and a new app of hers: where most tests begin.
    pub async fn alice_with_app(&self, word: &str) -> (User, String) {
        let alice = self.user("alice", true).await;
        let app = self.app_name(word);
        alice.client.app_create(Some(&app)).await.unwrap();
        (alice, app)
    }

    /// The builder's bare repository of an app, where pushes land.
    pub fn bare_repo(&self, app: &str) -> PathBuf {
        self.builder_config.repos_dir().join(format!("{app}.git"))
    }

    /// `git <args>` run on the builder's bare repository of an app.
    pub fn git_in_bare_repo(&self, app: &str, args: &[&str]) -> Output {
        let bare = self.bare_repo(app);
        std::process::Command::new("git").arg("--git-dir").arg(&bare).args(args).output().unwrap()
    }

    /// Whether the platform registry has the image built from `sha` of an app.
    pub async fn has_image_of(&self, app: &str, sha: &str) -> bool {
        in_registry(&self.builder_config.registry, app, &format!("git-{}", &sha[..8])).await
    }

    /// A registered user with an SSH key pair; the key is registered unless `register_key` is false.
    pub async fn user(&self, name: &str, register_key: bool) -> User {
        let client = self.ctl.user(name).await;
        let key = self.dir.path().join(format!("id_{name}"));
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{name}@test"))
            .arg("-f")
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        if register_key {
            let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
            client.key_add(&KeyCreateRequest { id: format!("{name}@test"), public }).await.unwrap();
        }
        User { client, key, port: self.ssh_port }
    }

    pub async fn stop(mut self) {
        for (shutdown, task) in self.tasks.drain(..).rev() {
            shutdown.trigger();
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        for (shutdown, _) in &self.tasks {
            shutdown.trigger();
        }
        let docker = |args: &[&str]| std::process::Command::new("docker").args(args).output().ok();
        if let Some(out) = docker(&["ps", "-aq", "--filter", &format!("name={}", self.prefix)]) {
            let ids: Vec<String> =
                String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                docker(&args);
            }
        }
        // The apps' images: `<registry>/<app>:git-…` (and the benchmark's `<app>-peer`).
        let registry = &self.builder_config.registry;
        let apps = self.apps.lock().unwrap().clone();
        if let Some(out) = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]) {
            let refs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|r| {
                    apps.iter().any(|app| {
                        r.starts_with(&format!("{registry}/{app}:"))
                            || r.starts_with(&format!("{registry}/{app}-peer:"))
                    })
                })
                .map(str::to_owned)
                .collect();
            if !refs.is_empty() {
                let mut args = vec!["rmi", "-f"];
                args.extend(refs.iter().map(String::as_str));
                docker(&args);
            }
        }
    }
}

/// A user of the platform with an SSH key.
pub struct User {
    pub client: Client,
    pub key: PathBuf,
    port: u16,
}

/// The result of a `git push`.
#[derive(Debug)]
pub struct Pushed {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Pushed {
    fn from(out: Output) -> Self {
        Self {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Pushed {
    /// Asserts that the push's output shows each of `expected`.
    pub fn assert_shows(&self, expected: &[&str]) {
        for expected in expected {
            assert!(self.stderr.contains(expected), "the push shows `{expected}`:\n{}", self.stderr);
        }
    }
}

impl User {
    pub fn remote(&self, app: &str) -> String {
        format!("ssh://git@127.0.0.1:{}/{app}.git", self.port)
    }

    fn ssh_command(&self) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o PasswordAuthentication=no",
            self.key.display()
        )
    }

    /// A git command in `repo` that reaches the builder with this user's key.
    pub fn git(&self, repo: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("git");
        cmd.current_dir(repo)
            .env("GIT_SSH_COMMAND", self.ssh_command())
            .env_remove("SSH_AUTH_SOCK")
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true);
        cmd
    }

    /// Starts `git push <remote> HEAD:main` in a process group of its own, and returns the group
    /// id: killing the group is a pusher pressing Ctrl-C (git and its ssh both go).
    pub fn start_push(&self, repo: &Path, app: &str) -> u32 {
        let child = self
            .git(repo)
            .args(["push", &self.remote(app), "HEAD:main"])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .unwrap();
        child.id().unwrap()
    }

    /// `git push <remote> HEAD:main`.
    pub async fn push(&self, repo: &Path, app: &str) -> Pushed {
        let out = tokio::time::timeout(
            Duration::from_secs(600),
            self.git(repo).args(["push", &self.remote(app), "HEAD:main"]).output(),
        )
        .await
        .expect("the push finishes")
        .unwrap();
        let pushed = Pushed::from(out);
        println!("--- git push of {app} (ok: {}) ---\n{}{}", pushed.ok, pushed.stdout, pushed.stderr);
        pushed
    }

    /// `git push <remote> HEAD:main`, which must succeed.
    pub async fn push_ok(&self, repo: &Path, app: &str) -> Pushed {
        let pushed = self.push(repo, app).await;
        assert!(pushed.ok, "the push succeeds:\n{}", pushed.stderr);
        pushed
    }

    /// Runs an arbitrary command over SSH against the builder.
    pub async fn ssh(&self, command: &str) -> Pushed {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(["-i"])
            .arg(&self.key)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-p", &self.port.to_string(), "git@127.0.0.1", command])
            .env_remove("SSH_AUTH_SOCK")
            .kill_on_drop(true);
        Pushed::from(tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.unwrap().unwrap())
    }
}

/// A git work tree with the given files committed. `files` are (path, contents, executable).
pub fn work_tree(dir: &Path, files: &[(&str, &str, bool)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").current_dir(dir).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    if !dir.join(".git").exists() {
        git(&["init", "-q", "-b", "main"]);
    }
    commit(dir, files);
    dir.to_path_buf()
}

/// Writes files and commits them.
pub fn commit(dir: &Path, files: &[(&str, &str, bool)]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, text, exec) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for args in [
        vec!["add", "-A"],
        vec!["-c", "user.name=Test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "change"],
    ] {
        let out = std::process::Command::new("git").current_dir(dir).args(&args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The commit a work tree is at.
pub fn head(dir: &Path) -> String {
    let out =
        std::process::Command::new("git").current_dir(dir).args(["rev-parse", "HEAD"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether the registry has `<app>:<tag>`.
pub async fn in_registry(registry: &str, app: &str, tag: &str) -> bool {
    let resp = reqwest::Client::new()
        .head(format!("http://{registry}/v2/{app}/manifests/{tag}"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .unwrap();
    resp.status().as_u16() == 200
}

/// A static web app run by a Procfile: stdlib Python serving a directory on `$PORT`.
pub fn procfile_app(greeting: &str) -> Vec<(&'static str, String, bool)> {
    vec![
        ("Procfile", "web: ./serve.sh\n".to_owned(), false),
        (
            "serve.sh",
            "#!/bin/sh\nexec python3 -u -m http.server \"$PORT\" --directory public\n".to_owned(),
            true,
        ),
        ("public/index.html", format!("{greeting}\n"), false),
    ]
}

pub fn files<'a>(v: &'a [(&'static str, String, bool)]) -> Vec<(&'static str, &'a str, bool)> {
    v.iter().map(|(p, t, x)| (*p, t.as_str(), *x)).collect()
}
