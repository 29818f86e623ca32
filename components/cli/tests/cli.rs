//! End-to-end tests of the `deis` binary against a real controller (real Postgres and NATS, via
//! `controller::testing`) on loopback: what a user types, what is saved in ~/.deis, what git
//! remote is added, what is printed and the exit status. Each test has its own controller,
//! database, home directory and work tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// One user's machine: a home directory and a work directory.
struct Machine {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl Machine {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&work).unwrap();
        Self { _dir: dir, home, work }
    }

    /// Runs `deis args…` with no terminal on stdin, as a script would.
    fn deis(&self, args: &[&str]) -> Run {
        self.deis_with(args, &[])
    }

    fn deis_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_deis"));
        command.args(args).current_dir(&self.work).env("HOME", &self.home).env_remove("DEIS_PROFILE");
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.stdin(Stdio::null()).output().unwrap();
        Run::from(args, output)
    }

    /// Registers alice as the administrator (with the operator's admin code) and leaves her
    /// logged in.
    fn register(&self, controller: &str) {
        let code = format!("--admin-code={}", controller::testing::TEST_ADMIN_CODE);
        self.deis(&[
            "register",
            controller,
            "--username=alice",
            "--password=pw",
            "--email=a@example.com",
            &code,
        ])
        .ok();
    }

    /// A new machine on which alice is registered at `controller` and logged in: where most
    /// tests start.
    fn with_alice(controller: &str) -> Self {
        let machine = Self::new();
        machine.register(controller);
        machine
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git").args(args).current_dir(&self.work).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

struct Run {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(args: &[&str], output: Output) -> Self {
        Self {
            what: format!("deis {}", args.join(" ")),
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// Asserts success; returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{} failed:\n{}{}", self.what, self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts failure with status 1; returns stderr.
    fn fails(&self) -> &str {
        assert_eq!(self.code, Some(1), "{} should fail:\n{}{}", self.what, self.stdout, self.stderr);
        assert!(self.stderr.starts_with("Error: ") || self.stderr.starts_with("error: "), "{}", self.stderr);
        &self.stderr
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}):\n{}", self.what, self.stdout))
    }
}

/// A real controller, on a runtime of its own so the tests can run the binary synchronously.
struct Controller {
    url: String,
    runtime: tokio::runtime::Runtime,
    controller: Option<controller::testing::TestController>,
}

impl Controller {
    fn start(test: &str) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let controller = runtime.block_on(controller::testing::TestController::start(test));
        Self { url: controller.url.clone(), runtime, controller: Some(controller) }
    }

    /// Puts an image in the platform registry, as a `docker push` would.
    fn push_image(&self, name: &str, tag: &str) -> String {
        let registry = service_kit::testing::TestServices::get().registry;
        self.runtime.block_on(service_kit::testing::push_tiny_image(&registry, name, tag));
        format!("{name}:{tag}")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(c) = self.controller.take() {
            self.runtime.block_on(c.stop());
        }
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn commands_need_a_login() {
    let m = Machine::new();
    let err = m.deis(&["apps"]).fails().to_owned();
    assert_eq!(err, "Error: not logged in: run `deis login <url>`\n");
    m.deis(&["config:list", "-a", "foo"]).fails();
}

#[test]
fn register_login_whoami_logout() {
    let ctl = Controller::start("cli-auth");
    let controller = ctl.url.clone();
    let m = Machine::new();
    let out = m
        .deis(&["register", &controller, "--username=alice", "--password=pw", "--email=a@example.com"])
        .ok()
        .to_owned();
    assert!(out.contains("Registered alice") && out.contains("Logged in as alice"), "{out}");
    assert!(!out.contains("administrator"), "registering without the admin code makes no admin: {out}");

    let file = m.home.join(".deis/client.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&m.home.join(".deis")), 0o700);
    let saved: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["controller"], controller.as_str());
    assert_eq!(saved["username"], "alice");
    assert_eq!(saved["token"].as_str().unwrap().len(), 64);

    assert_eq!(m.deis(&["whoami"]).ok(), format!("You are alice at {controller}\n"));
    assert_eq!(m.deis(&["whoami", "--json"]).json()["username"], "alice");

    // No terminal: a missing flag is an error naming it, never a hung prompt.
    let err = m.deis(&["login", &controller, "--username=alice"]).fails().to_owned();
    assert!(err.contains("--password"), "{err}");
    // The controller's own words reach the user.
    assert_eq!(
        m.deis(&["login", &controller, "--username=alice", "--password=nope"]).fails(),
        "Error: wrong username or password\n"
    );

    // Profiles are separate files.
    m.deis_with(&["login", &controller, "--username=alice", "--password=pw"], &[("DEIS_PROFILE", "staging")])
        .ok();
    assert_eq!(mode(&m.home.join(".deis/staging.json")), 0o600);

    assert_eq!(m.deis(&["logout"]).ok(), "Logged out\n");
    assert!(!file.exists());
    m.deis(&["whoami"]).fails();
    m.deis_with(&["whoami"], &[("DEIS_PROFILE", "staging")]).ok();
}

#[test]
fn app_lifecycle_in_a_git_repository() {
    let ctl = Controller::start("cli-lifecycle");
    let controller = ctl.url.clone();
    let m = Machine::with_alice(&controller);
    m.git(&["init", "-q"]);

    let out = m.deis(&["create", "foo"]).ok().to_owned();
    assert!(out.contains("created foo"), "{out}");
    let port_less_host = controller.trim_start_matches("http://").split(':').next().unwrap().to_owned();
    let remote = format!("ssh://git@{port_less_host}:2222/foo.git");
    assert_eq!(m.git(&["remote", "get-url", "deis"]), remote);
    assert!(out.contains("Git remote deis added"), "{out}");

    // From here on the app comes from the git remote.
    assert_eq!(m.deis_with(&["open"], &[("DISPLAY", "")]).ok().trim(), "http://foo.deis.local");
    let info = m.deis(&["info"]).ok().to_owned();
    assert!(info.starts_with("=== foo Application\n"), "{info}");
    assert!(m.deis(&["apps"]).ok().contains("foo\n"));
    assert!(m.deis(&["git:remote"]).ok().contains("already points at"));

    // Config: `=` in values, spaces, unset with null.
    let out = m.deis(&["config:set", "URL=postgres://h/db?a=b", "GREETING=hello world"]).ok().to_owned();
    assert!(out.starts_with("Creating config... done\n"), "{out}");
    assert!(out.contains("URL       postgres://h/db?a=b\n"), "{out}");
    let config = m.deis(&["config", "--json"]).json();
    assert_eq!(config["values"]["GREETING"], "hello world");
    assert_eq!(m.deis(&["config", "--oneline"]).ok(), "GREETING='hello world' URL=postgres://h/db?a=b\n");
    m.deis(&["config:unset", "GREETING"]).ok();
    assert!(m.deis(&["config", "--json"]).json()["values"].get("GREETING").is_none());
    let err = m.deis(&["config:set", "BAD-KEY=1"]).fails().to_owned();
    assert!(err.contains("invalid config key 'BAD-KEY'"), "{err}");

    // .env round trip through the controller.
    fs::write(m.work.join("in.env"), "# comment\nexport A='x y'\nB=\"q\\\"uote\"\n\nC=1=2\n").unwrap();
    m.deis(&["config:push", "-p", "in.env"]).ok();
    m.deis(&["config:pull", "-o", "out.env"]).ok();
    let pulled = fs::read_to_string(m.work.join("out.env")).unwrap();
    assert_eq!(pulled, "A='x y'\nB='q\"uote'\nC=1=2\nURL=postgres://h/db?a=b\n");
    assert_eq!(mode(&m.work.join("out.env")), 0o600);
    // Without --overwrite, local values win; with it, the app's do.
    fs::write(m.work.join("out.env"), "A=local\n").unwrap();
    m.deis(&["config:pull", "-o", "out.env"]).ok();
    assert!(fs::read_to_string(m.work.join("out.env")).unwrap().starts_with("A=local\n"));
    m.deis(&["config:pull", "-o", "out.env", "--overwrite"]).ok();
    assert!(fs::read_to_string(m.work.join("out.env")).unwrap().starts_with("A='x y'\n"));

    // Limits and tags live in the same config.
    let out = m.deis(&["limits:set", "web=256m"]).ok().to_owned();
    assert!(out.contains("--- Memory\nweb  256M\n"), "{out}");
    m.deis(&["limits:set", "--cpu", "web=512"]).ok();
    assert_eq!(m.deis(&["limits", "--json"]).json()["cpu"]["web"], 512);
    m.deis(&["limits:set", "web=abc"]).fails();
    m.deis(&["tags:set", "environ=prod"]).ok();
    assert_eq!(m.deis(&["tags"]).ok(), "=== foo Tags\nenviron  prod\n");

    // Nothing to scale before a build; then deploy an image from the registry.
    let err = m.deis(&["scale", "web=3"]).fails().to_owned();
    assert!(err.contains("has no build yet"), "{err}");
    let image = ctl.push_image(&format!("foo-{}", std::process::id()), "v1");
    let out = m
        .deis(&["pull", &image, "--procfile", "web: ./server", "--procfile", "worker: ./worker"])
        .ok()
        .to_owned();
    assert!(out.contains(&image), "{out}");

    // Scale shows the new formation.
    let out = m.deis(&["scale", "web=3", "worker=1"]).ok().to_owned();
    assert!(out.ends_with("=== foo Processes\nweb: 3\nworker: 1\n"), "{out}");
    m.deis(&["scale", "web=-1"]).fails();

    // Releases, newest first; rollback; info.
    let releases = m.deis(&["releases"]).ok().to_owned();
    assert!(releases.starts_with("=== foo Releases\nv"), "{releases}");
    let last: Vec<&str> = releases.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(last[0], "v1", "{releases}");
    assert!(last[1].starts_with("20") && last[1].ends_with('Z'), "{releases}");
    assert_eq!(last[2..].join(" "), "alice created initial release", "{releases}");
    // v1 has no build: a running app cannot go back to it (as in Deis v1).
    let err = m.deis(&["rollback", "v1"]).fails().to_owned();
    assert!(err.contains("no build associated with release v1"), "{err}");
    // The newest release is the pull's, which has a build: rolling back to it works.
    let pulled = releases.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    m.deis(&["config:set", "ROLLED=no"]).ok();
    let out = m.deis(&["rollback", &pulled]).ok().to_owned();
    assert!(out.starts_with(&format!("Rolling back to {pulled}... done, v")), "{out}");
    assert!(m.deis(&["releases:info", "1"]).ok().starts_with("=== foo Release v1\n"));
    assert_eq!(m.deis(&["releases:info", "v99"]).fails(), "Error: release v99 not found\n");

    // Destroying asks for confirmation, which a script must give with --confirm.
    let err = m.deis(&["destroy"]).fails().to_owned();
    assert!(err.contains("--confirm=foo"), "{err}");
    m.deis(&["destroy", "--confirm=bar"]).fails();
    assert!(m.deis(&["destroy", "--confirm=foo"]).ok().contains("Git remote deis removed"));
    assert_eq!(m.git(&["remote"]), "");
    let err = m.deis(&["info"]).fails().to_owned();
    assert!(err.contains("no app given"), "{err}");
}

#[test]
fn controller_errors_and_bad_input() {
    let ctl = Controller::start("cli-errors");
    let m = Machine::with_alice(&ctl.url);
    assert_eq!(m.deis(&["info", "-a", "missing"]).fails(), "Error: app 'missing' not found\n");
    // Caught locally, before any request: nothing odd reaches a URL path.
    m.deis(&["info", "-a", "../admin"]).fails();
    m.deis(&["domains:add", "a/b", "-a", "x"]).fails();
    m.deis(&["rollback", "vx", "-a", "x"]).fails();
    m.deis(&["create", "foo", "--no-remote"]).ok();
    assert!(m.deis(&["create", "foo"]).fails().contains("an app named 'foo' already exists"));
    // --json output is JSON and nothing else.
    let app = m.deis(&["apps:info", "-a", "foo", "--json"]).json();
    assert_eq!(app["id"], "foo");
    let domain = m.deis(&["domains:add", "www.foo.com", "-a", "foo", "--json"]).json();
    assert_eq!(domain["domain"], "www.foo.com");
    assert_eq!(m.deis(&["domains", "-a", "foo"]).ok(), "=== foo Domains\nwww.foo.com\n");
}

#[test]
fn keys_add_finds_the_default_key() {
    let ctl = Controller::start("cli-keys");
    let m = Machine::with_alice(&ctl.url);
    let err = m.deis(&["keys:add"]).fails().to_owned();
    assert!(err.contains("no SSH public key found"), "{err}");
    let ssh = m.home.join(".ssh");
    fs::create_dir_all(&ssh).unwrap();
    fs::write(ssh.join("id_rsa.pub"), "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 rsa@box\n").unwrap();
    fs::write(
        ssh.join("id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop\n",
    )
    .unwrap();
    let key = m.deis(&["keys:add", "--json"]).json();
    assert_eq!(key["id"], "alice@laptop");
    assert!(key["public"].as_str().unwrap().starts_with("ssh-ed25519 "));
    let listed = m.deis(&["keys"]).ok().to_owned();
    assert_eq!(listed, "=== alice Keys\nalice@laptop  ssh-ed25519 AAAAC3NzaC...0dh2l9GKJl\n");
    fs::write(m.work.join("id"), "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    assert!(m.deis(&["keys:add", "id"]).fails().contains("private key"));
}

#[test]
fn completions_and_help() {
    let m = Machine::new();
    assert!(m.deis(&["completions", "bash"]).ok().contains("apps:create"));
    assert!(m.deis(&["help"]).ok().contains("config:set"));
    let usage = m.deis(&["scale"]);
    assert_eq!(usage.code, Some(1));
    assert!(usage.stderr.contains("TYPE=COUNT"), "{}", usage.stderr);
}

#[test]
fn perms_share_an_app_between_two_users() {
    let ctl = Controller::start("cli-perms");
    let alice = Machine::with_alice(&ctl.url);
    let bob = Machine::new();
    // The admin code made alice the administrator: it is spent now, and a wrong one is refused.
    let register_bob = |extra: &[&str]| {
        let mut args =
            vec!["register", &ctl.url, "--username=bob", "--password=pw2", "--email=b@example.com"];
        args.extend(extra);
        bob.deis(&args)
    };
    let spent = format!("--admin-code={}", controller::testing::TEST_ADMIN_CODE);
    let err = register_bob(&[&spent]).fails().to_owned();
    assert!(err.contains("the admin code has been used"), "{err}");
    let err = register_bob(&["--admin-code=guess"]).fails().to_owned();
    assert!(err.contains("wrong admin code"), "{err}");
    let out = register_bob(&[]).ok().to_owned();
    assert!(out.contains("Registered bob\n"), "bob is no administrator: {out}");
    alice.deis(&["create", "shared", "--no-remote"]).ok();

    let err = bob.deis(&["info", "-a", "shared"]).fails().to_owned();
    assert!(err.contains("permission"), "{err}");
    // Bob cannot grant himself access, and only admins list users.
    bob.deis(&["perms:create", "bob", "-a", "shared"]).fails();
    bob.deis(&["users"]).fails();
    assert!(alice.deis(&["users"]).ok().contains("bob"));

    alice.deis(&["perms:create", "bob", "-a", "shared"]).ok();
    assert!(alice.deis(&["perms", "-a", "shared"]).ok().contains("bob"));
    assert!(bob.deis(&["info", "-a", "shared"]).ok().starts_with("=== shared Application\n"));
    bob.deis(&["config:set", "SHARED=yes", "-a", "shared"]).ok();
    // Sharing is not owning.
    bob.deis(&["destroy", "-a", "shared", "--confirm=shared"]).fails();

    alice.deis(&["perms:delete", "bob", "-a", "shared"]).ok();
    bob.deis(&["info", "-a", "shared"]).fails();
    // Admin rights: alice (an admin by the admin code) can make bob an admin.
    alice.deis(&["perms:create", "bob", "--admin"]).ok();
    assert!(bob.deis(&["users"]).ok().contains("alice"));
}

#[test]
fn log_credentials_are_issued_and_revoked() {
    let ctl = Controller::start("cli-logcreds");
    let alice = Machine::with_alice(&ctl.url);
    alice.deis(&["create", "shop", "--no-remote"]).ok();
    let (ns, database_url) = {
        let c = ctl.controller.as_ref().unwrap();
        (c.ns.clone(), c.config.database_url.clone())
    };
    // alice is an administrator (by the admin code): every app's stream, as one wildcard.
    let subject = format!("{}.drain.>", ns.root());
    // What the NATS auth callout answers for a user name and password.
    let pool = controller::db::pool(&database_url, 2).unwrap();
    let authorize = |user: &str, password: &str| {
        ctl.runtime
            .block_on(controller::model::log_credentials::authorize(&pool, &ns, user, password))
            .unwrap()
    };

    let out = alice.deis(&["logs:credentials"]).ok().to_owned();
    assert!(out.starts_with("=== Log Credentials\nusername:    logs-alice\n"), "{out}");
    assert!(out.contains(&format!("subjects:    {subject}\n")), "{out}");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no password in {out}"))
        .to_owned();
    assert!(
        out.contains(&format!(
            "nats sub --server <the platform's NATS> --user logs-alice --password {password} '{subject}'"
        )),
        "{out}"
    );
    assert_eq!(authorize("logs-alice", &password), Some(vec![subject.clone()]));

    // Again, as JSON: a new password replaces the old one.
    let creds = alice.deis(&["logs:credentials", "--json"]).json();
    assert_eq!(creds["username"], "logs-alice");
    assert_eq!(creds["subjects"], serde_json::json!([subject]));
    assert_eq!(creds["expires_in"], 600);
    let new_password = creds["password"].as_str().unwrap();
    assert_ne!(new_password, password);
    assert_eq!(authorize("logs-alice", &password), None);
    assert_eq!(authorize("logs-alice", new_password), Some(vec![subject.clone()]));

    let out = alice.deis(&["logs:credentials", "--revoke"]).ok().to_owned();
    assert_eq!(out, "Revoking log credentials... done\n");
    assert_eq!(authorize("logs-alice", new_password), None);
    assert!(Machine::new().deis(&["logs:credentials"]).fails().contains("not logged in"));
}

/// Polls `check` from a synchronous test until it returns `Some`, or panics naming `what`.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{what} did not happen within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `deis logs`, `deis logs -f` and `drains:*` against a real controller and a real logger that
/// share NATS and etcd, with lines published on the bus as an agent would.
#[test]
fn logs_and_drains_through_the_controller_and_logger() {
    use bus_schema::messages::{LogLine, LogSource, Stream};
    use bus_schema::names::{AppName, ProcessType};
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::sync::{Arc, Mutex};

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let services = service_kit::testing::TestServices::get();
    let prefix = format!("/tlogs{}", uuid::Uuid::new_v4().simple());
    let etcd = service_kit::EtcdConfig {
        endpoints: services.etcd_endpoints.clone(),
        prefix: prefix.clone(),
        ..Default::default()
    };
    let (mut config, ns, database) =
        runtime.block_on(controller::testing::TestController::config("cli-logs"));
    config.register_in_etcd = true;
    config.etcd = etcd.clone();
    let controller =
        runtime.block_on(controller::testing::TestController::start_with(config, ns.clone(), database));
    let data = tempfile::tempdir().unwrap();
    let logger_config = logger::LoggerConfig {
        data_dir: data.path().to_owned(),
        instance: "l1".into(),
        nats: service_kit::NatsConfig {
            url: services.nats_url.clone(),
            namespace: ns.root().to_owned(),
            ..Default::default()
        },
        etcd,
        // The test's drain listens on loopback, which the logger refuses by default.
        drains: logger::drains::DrainSettings {
            outbound: service_kit::OutboundPolicy { denied: vec![], allowed: vec!["127.0.0.0/8".into()] },
            ..Default::default()
        },
        ..Default::default()
    };
    let shutdown = service_kit::Shutdown::new();
    let logger_task = {
        let s = shutdown.clone();
        runtime.spawn(async move {
            let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            logger::run(logger_config, ops, s).await.unwrap();
        })
    };
    let bus = runtime.block_on(async {
        let client = async_nats::connect(&services.nats_url).await.unwrap();
        bus_schema::Bus::new(
            client,
            ns.clone(),
            bus_schema::Sender { component: bus_schema::Component::Test, instance: "cli".into() },
        )
    });
    let shop = AppName::parse("shop").unwrap();
    let publish = |seq: u64, message: &str| {
        let line = LogLine {
            app: shop.clone(),
            time: bus_schema::Timestamp::now(),
            source: LogSource::App { process_type: ProcessType::parse("web").unwrap(), index: 1 },
            stream: Stream::Stdout,
            node: None,
            seq,
            message: message.to_owned(),
        };
        runtime.block_on(bus.publish(&ns.log_lines(&shop), &bus.envelope(line))).unwrap();
    };

    let m = Machine::with_alice(&controller.url);
    m.deis(&["create", "shop", "--no-remote"]).ok();
    // The logger may still be subscribing: publish until `deis logs` shows the line.
    let mut seq = 0;
    wait_for("deis logs shows a line", || {
        seq += 1;
        publish(seq, &format!("hello {seq}"));
        let out = m.deis(&["logs", "-a", "shop", "-n", "1"]);
        (out.code == Some(0) && out.stdout.contains("shop[web.1]: hello")).then_some(())
    });
    for n in 0..5 {
        publish(1000 + n, &format!("request {n}"));
    }
    let out = wait_for("five more lines", || {
        let out = m.deis(&["logs", "-a", "shop", "-n", "3"]);
        out.stdout.contains("request 4").then_some(out.stdout)
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[2].ends_with(" shop[web.1]: request 4"), "{out}");
    assert!(lines[2].split(' ').next().unwrap().ends_with('Z'), "RFC 3339 UTC time first: {out}");
    let filtered = m.deis(&["logs", "-a", "shop", "--contains", "request 1"]).ok().to_owned();
    assert_eq!(filtered.lines().count(), 1, "{filtered}");
    assert!(m.deis(&["logs", "-a", "shop", "-n", "0"]).fails().contains("0 is not in 1..=10000"));

    // A syslog drain added with the CLI receives the app's lines.
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(String::new()));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = receiver.accept() else { return };
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    return;
                }
                received.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let url = format!("syslog://127.0.0.1:{port}");
    let out = m.deis(&["drains:add", &url, "-a", "shop"]).ok().to_owned();
    assert!(out.contains("Adding drain"), "{out}");
    assert!(m.deis(&["drains", "-a", "shop"]).ok().contains(&url));
    assert!(m.deis(&["drains:add", "ftp://x", "-a", "shop"]).fails().contains("drain URLs start with"));
    wait_for("the drain receives lines", || {
        seq += 1;
        publish(seq, &format!("to the drain {seq}"));
        let got = received.lock().unwrap().contains("to the drain");
        got.then_some(())
    });
    assert!(
        received.lock().unwrap().contains(" shop web.1 - - to the drain"),
        "{}",
        received.lock().unwrap()
    );
    // The controller's own event about it is in the stream too.
    runtime.block_on(service_kit::testing::eventually(
        "the event in the logs",
        std::time::Duration::from_secs(20),
        || {
            let out = m.deis(&["logs", "-a", "shop", "--process", "controller"]);
            async move {
                out.stdout
                    .contains("shop[deis-controller]: alice added drain syslog://127.0.0.1")
                    .then_some(())
            }
        },
    ));
    m.deis(&["drains:remove", &url, "-a", "shop"]).ok();
    assert!(m.deis(&["drains", "-a", "shop"]).ok().contains("No drains"));

    // `deis logs -f` prints the history, then new lines as they come.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_deis"))
        .args(["logs", "-f", "-n", "1", "-a", "shop"])
        .current_dir(&m.work)
        .env("HOME", &m.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("shop["), "{first}");
    publish(99_999, "live line");
    let live = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("live line"))).unwrap().unwrap();
    assert!(live.ends_with(" shop[web.1]: live line"), "{live}");
    follow.kill().unwrap();
    let _ = follow.wait();

    shutdown.trigger();
    runtime.block_on(async {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), logger_task).await;
        controller.stop().await;
    });
}
