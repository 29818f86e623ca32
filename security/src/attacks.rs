//! The attacks, each as the attacker (an ordinary account) would carry it out, and the check of
//! what must hold instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use controller_api::{ApiError, BuildCreateRequest, ConfigUpdate, PasswdRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Tier, Verdict, http, push, repo, say};

pub async fn run(t: &mut Tier, name: &str) -> anyhow::Result<Verdict> {
    match name {
        "base-image" => base_image(t).await,
        "deploy-image" => deploy_image(t).await,
        "app-to-app" => app_to_app(t).await,
        "quotas" => quotas(t).await,
        "sessions" => sessions(t).await,
        "outbound" => outbound(t).await,
        "names-reused" => names_reused(t).await,
        "idle-connections" => idle_connections(t).await,
        "bus-credentials" => bus_credentials(t).await,
        "log-credentials" => log_credentials(t).await,
        "domains" => domains(t).await,
        other => bail!("no attack named '{other}'"),
    }
}

/// Removes the tenants' apps (best effort: the cluster is removed after the tier anyway).
pub async fn clean_up(t: &Tier) {
    for (p, app) in [(&t.victim, &t.victim_app), (&t.attacker, &t.attacker_app)] {
        if let Err(e) = p.api.app_destroy(app).await {
            say(&format!("cleaning up {app}: {e}"));
        }
    }
}

/// The victim's newest image, as its builds list names it.
async fn victim_image(t: &Tier) -> anyhow::Result<String> {
    let builds = t.victim.api.builds(&t.victim_app).await?;
    Ok(builds.first().context("the victim has no build")?.image.clone())
}

fn refused(result: &Result<impl std::fmt::Debug, ApiError>) -> Option<u16> {
    match result {
        Err(ApiError::Status { status, .. }) if (400..500).contains(status) => Some(*status),
        _ => None,
    }
}

fn describe<T>(result: &Result<T, ApiError>) -> String {
    match result {
        Ok(_) => "accepted".to_owned(),
        Err(e) => match e.status() {
            Some(s) => format!("{s} ({e})"),
            None => e.to_string(),
        },
    }
}

// ------------------------------------------------------------------------------------- images

/// 1. A Dockerfile starting FROM the victim's image, by its repository and tag and by a short
///    id, printing the victim's secret file while it builds.
async fn base_image(t: &mut Tier) -> anyhow::Result<Verdict> {
    let image = victim_image(t).await?;
    let mut sources = vec![image.clone()];
    for node in ["node1", "node2", "node3"] {
        if let Ok(Some(id)) = t.victim.cluster.image_id(node, &image).await {
            let hex = id.trim_start_matches("sha256:");
            sources.push(hex[..hex.len().min(12)].to_owned());
            break;
        }
    }
    let app = format!("sec-{}-base", t.run_id);
    t.attacker.api.app_create(Some(&app)).await?;
    let mut seen = Vec::new();
    let mut held = true;
    for (i, from) in sources.iter().enumerate() {
        let dir = t.path(&format!("base-{i}"));
        let dockerfile =
            format!("FROM {from}\nRUN cat /app/SECRET.txt || true\nCMD [\"python3\", \"/app/server.py\"]\n");
        repo::from_files(&dir, &[("Dockerfile", &dockerfile), ("Procfile", "web: python3 /app/server.py\n")])
            .await?;
        let (ok, lines) = push(&t.attacker, &dir, &app).await;
        let leaked = lines.iter().any(|l| l.contains(&t.secret));
        held &= !ok && !leaked;
        // The builder's reason (its lines start with `remote: !`).
        let reason = lines.iter().find(|l| l.contains('!') && !l.contains("[remote rejected]"));
        seen.push(format!(
            "FROM {from}: push {}{}{}",
            if ok { "succeeded" } else { "failed" },
            reason.map(|r| format!(" ({})", r.trim_start_matches("remote:").trim())).unwrap_or_default(),
            if leaked { ", the victim's secret was printed" } else { "" }
        ));
    }
    t.attacker.api.app_destroy(&app).await.ok();
    Ok(Verdict::new(held, seen.join("; ")))
}

/// 2. builds:create with the victim's image, and with a tag of the victim's that does not
///    exist: both refused alike, so the answer tells nothing about the victim's tags.
async fn deploy_image(t: &mut Tier) -> anyhow::Result<Verdict> {
    let image = victim_image(t).await?;
    let guessed = match image.rsplit_once(':') {
        Some((repo, _)) => format!("{repo}:git-00000000"),
        None => format!("{image}:git-00000000"),
    };
    let request = |image: &str| BuildCreateRequest { image: image.to_owned(), procfile: BTreeMap::new() };
    let real = t.attacker.api.build_create(&t.attacker_app, &request(&image)).await;
    let fake = t.attacker.api.build_create(&t.attacker_app, &request(&guessed)).await;
    let held = matches!((refused(&real), refused(&fake)), (Some(a), Some(b)) if a == b);
    Ok(Verdict::new(
        held,
        format!("the victim's {image}: {}; a guessed tag: {}", describe(&real), describe(&fake)),
    ))
}

// ------------------------------------------------------------------------------------ network

/// The one-off's probe: connects to each target (label host port) and reports, then tries a raw
/// socket and reads its cgroup's limits. Sent base64-encoded so no quoting can go wrong.
const PROBE: &str = r#"
import socket, sys
for item in TARGETS:
    label, host, port = item
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        print("PROBE OPEN " + label, flush=True)
    except Exception as e:
        print("PROBE CLOSED " + label + " " + type(e).__name__, flush=True)
    finally:
        s.close()
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    print("PROBE RAW allowed", flush=True)
except Exception as e:
    print("PROBE RAW denied " + type(e).__name__, flush=True)
# cgroup v2 files first, then v1's.
for name, paths in (("pids.max", ("pids.max", "pids/pids.max")),
                    ("memory.max", ("memory.max", "memory/memory.limit_in_bytes"))):
    value = "unreadable"
    for path in paths:
        try:
            value = open("/sys/fs/cgroup/" + path).read().strip()
            break
        except Exception:
            pass
    print("PROBE LIMIT " + name + " " + value, flush=True)
"#;

/// 3. From a one-off of the attacker's app: the victim's containers directly (their address on
///    the node's bridge) and through their published ports, and the cluster's services.
async fn app_to_app(t: &mut Tier) -> anyhow::Result<Verdict> {
    let mut targets: Vec<(String, String, u16)> = Vec::new();
    for c in t.running(&t.victim, &t.victim_app).await {
        for ip in t.victim.cluster.container_ips(&c).await.unwrap_or_default() {
            targets.push((format!("victim-container@{}", c.node), ip.to_string(), 5000));
        }
        if let (Some(port), Ok(Some(node_ip))) = (c.host_port, t.victim.cluster.node_ip(&c.node).await) {
            targets.push((format!("victim-published-port@{}", c.node), node_ip.to_string(), port));
        }
    }
    if targets.is_empty() {
        bail!("found none of the victim's containers");
    }
    for (node, port, what) in [("node1", 2379, "etcd"), ("node1", 4222, "nats"), ("node1", 5432, "postgres")]
    {
        if let Ok(Some(ip)) = t.victim.cluster.node_ip(node).await {
            targets.push((format!("{what}@{node}"), ip.to_string(), port));
        }
    }
    let list: Vec<String> = targets.iter().map(|(l, h, p)| format!("({l:?}, {h:?}, {p})")).collect();
    let program = format!("TARGETS = [{}]\n{PROBE}", list.join(", "));
    let encoded = base64_encode(program.as_bytes());
    let command = format!("python3 -c \"import base64; exec(base64.b64decode('{encoded}'))\"");
    let mut lines = Vec::new();
    t.attacker
        .api
        .run(&t.attacker_app, &command, |event| {
            if let controller_api::RunEvent::Line { line, .. } = event {
                lines.push(line.clone());
            }
        })
        .await
        .context("deis run")?;
    let probe: Vec<&str> = lines.iter().filter_map(|l| l.trim().strip_prefix("PROBE ")).collect();
    if probe.is_empty() {
        bail!("the one-off printed nothing of its probe: {lines:?}");
    }
    let open: Vec<&str> = probe.iter().filter_map(|l| l.strip_prefix("OPEN ")).collect();
    let raw_denied = probe.iter().any(|l| l.starts_with("RAW denied"));
    let limited = |name: &str| {
        probe.iter().any(|l| {
            l.strip_prefix("LIMIT ")
                .and_then(|l| l.strip_prefix(name))
                // cgroup v1 writes "no limit" as a number near 2^63.
                .is_some_and(|v| v.trim().parse::<u64>().is_ok_and(|n| n < 1 << 50))
        })
    };
    let (pids, memory) = (limited("pids.max"), limited("memory.max"));
    let held = open.is_empty() && raw_denied && pids && memory;
    Ok(Verdict::new(
        held,
        format!(
            "{} of {} targets reachable{}; raw socket {}; pids limit {}; memory limit {}",
            open.len(),
            targets.len(),
            if open.is_empty() { String::new() } else { format!(" ({})", open.join(", ")) },
            if raw_denied { "denied" } else { "allowed" },
            if pids { "set" } else { "none" },
            if memory { "set" } else { "none" },
        ),
    ))
}

/// Standard base64 with padding, what `base64 -d` in the one-off reads.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ------------------------------------------------------------------------------------- limits

/// 4. A value too big, a config too big in total, a container count too big, a Procfile with 300
///    process types; then the victim changes its config and is served as before.
async fn quotas(t: &mut Tier) -> anyhow::Result<Verdict> {
    let api = &t.attacker.api;
    let app = &t.attacker_app;
    let set = |key: &str, value: String| ConfigUpdate {
        values: [(key.to_owned(), Some(value))].into(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let big_value = api.config_update(app, &set("BIG", "x".repeat(40 * 1024))).await;
    seen.push(format!("one 40 KiB value: {}", describe(&big_value)));
    // 30 KiB values, each under any per-value limit, until the app's total is refused.
    let mut total_refused = None;
    for i in 0..12 {
        let r = api.config_update(app, &set(&format!("PART{i}"), "y".repeat(30 * 1024))).await;
        if let Some(status) = refused(&r) {
            total_refused = Some((i, status));
            break;
        }
    }
    seen.push(match total_refused {
        Some((i, status)) => format!("total refused ({status}) at {} KiB", (i + 1) * 30),
        None => "12 values of 30 KiB (360 KiB) all accepted".to_owned(),
    });
    let scale = api.scale(app, &[("web".to_owned(), 1000)].into()).await;
    seen.push(format!("web=1000: {}", describe(&scale)));

    let dir = t.path("many-types");
    let procfile: String = (0..300).map(|i| format!("p{i}: python3 server.py\n")).collect();
    repo::from_dir(&t.options.app_dir, &dir, &[("Procfile", &procfile)]).await?;
    let many = format!("sec-{}-many", t.run_id);
    api.app_create(Some(&many)).await?;
    let (pushed, _) = push(&t.attacker, &dir, &many).await;
    let types_in_release = api.app(&many).await.map(|a| a.structure.len()).unwrap_or(0);
    let many_refused = !pushed && types_in_release < 300;
    seen.push(format!("Procfile with 300 types: push {}", if pushed { "accepted" } else { "refused" }));
    api.app_destroy(&many).await.ok();

    // The victim's own change still goes through: nothing the attacker sent blocks the outbox.
    let victim_change = t
        .victim
        .api
        .config_update(&t.victim_app, &set("AFTER_QUOTAS", format!("{}", rand::random::<u32>())))
        .await;
    seen.push(format!("the victim's config:set afterwards: {}", describe(&victim_change)));
    let held = refused(&big_value).is_some()
        && total_refused.is_some()
        && refused(&scale).is_some()
        && many_refused
        && victim_change.is_ok();
    Ok(Verdict::new(held, seen.join("; ")))
}

// ----------------------------------------------------------------------------------- sessions

/// 5. The first registration is no administrator (checked at setup); after passwd another
///    session's token stops working; a burst of wrong passwords is answered 429 with Retry-After,
///    and the right password too while the lockout lasts.
async fn sessions(t: &mut Tier) -> anyhow::Result<Verdict> {
    let settings = &t.options.settings;
    let base = format!("http://{}", settings.http);
    let username = format!("sess{}", t.run_id);
    let password = crate::register(settings, &username).await?;
    let one = crate::log_in(settings, &username, &password).await?;
    let two = crate::log_in(settings, &username, &password).await?;
    let new_password = format!("sess-{:016x}", rand::random::<u64>());
    one.passwd(&PasswdRequest {
        username: None,
        password: Some(password.clone()),
        new_password: new_password.clone(),
    })
    .await?;
    let other_after = two.whoami().await;
    let own_after = one.whoami().await;
    let other_ended = refused(&other_after) == Some(401);

    // A burst of wrong passwords, then the right one.
    let url = format!("{base}/v1/auth/login/");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..8 {
        let body = serde_json::json!({ "username": username, "password": format!("wrong-{i}") });
        let resp = http().post(&url).json(&body).send().await?;
        if resp.status().as_u16() == 429 {
            retry_after = retry_after.or_else(|| {
                resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned)
            });
        }
        statuses.push(resp.status().as_u16());
    }
    let body = serde_json::json!({ "username": username, "password": new_password });
    let right = http().post(&url).json(&body).send().await?.status().as_u16();
    let throttled = statuses.contains(&429) && retry_after.is_some() && right == 429;
    let first_admin = t.first_user_admin.unwrap_or(true);
    let held = !first_admin && other_ended && own_after.is_ok() && throttled;
    Ok(Verdict::new(
        held,
        format!(
            "first user admin: {first_admin}; after passwd the other token: {}, the own: {}; \
             8 wrong passwords: {statuses:?} (Retry-After {}); then the right one: {right}",
            describe(&other_after),
            describe(&own_after),
            retry_after.as_deref().unwrap_or("none"),
        ),
    ))
}

// ----------------------------------------------------------------------------------- outbound

/// 6. A buildpack URL on etcd's client port, and a drain posting to a cluster address (one of
///    the attacker's own containers' published port, so a post that happens shows in its log).
async fn outbound(t: &mut Tier) -> anyhow::Result<Verdict> {
    let node1 = t.victim.cluster.node_ip("node1").await?.context("node1 has no address")?;
    let app = format!("sec-{}-bp", t.run_id);
    let api = &t.attacker.api;
    api.app_create(Some(&app)).await?;
    let url = format!("http://{node1}:2379/version");
    api.config_update(
        &app,
        &ConfigUpdate {
            values: [("BUILDPACK_URL".to_owned(), Some(url.clone()))].into(),
            ..Default::default()
        },
    )
    .await?;
    // A buildpack app: no Dockerfile, so the builder fetches the buildpack.
    let dir = t.path("buildpack-app");
    let server = std::fs::read_to_string(t.options.app_dir.join("server.py"))?;
    repo::from_files(
        &dir,
        &[("server.py", &server), ("Procfile", "web: python3 server.py\n"), ("requirements.txt", "")],
    )
    .await?;
    let (pushed, lines) = push(&t.attacker, &dir, &app).await;
    let fetched = lines.iter().any(|l| l.contains("etcdserver") || l.contains("etcdcluster"));
    api.app_destroy(&app).await.ok();

    // The drain: a cluster address the logger must not post to.
    let mine = t.running(&t.attacker, &t.attacker_app).await;
    let target = mine.first().context("the attacker's app runs no container")?;
    let node_ip = t.attacker.cluster.node_ip(&target.node).await?.context("no node address")?;
    let port = target.host_port.context("the attacker's container publishes no port")?;
    let drain_url = format!("http://{node_ip}:{port}/drain-probe");
    let drain = api.drain_add(&t.attacker_app, &drain_url).await;
    let mut posted = false;
    if drain.is_ok() {
        // Lines for the drain to carry, then a look at the app's own log for the logger's POST.
        let host = t.attacker.host_of(&t.attacker_app);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) && !posted {
            t.get(&host, "/make-a-line").await.ok();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut text = Vec::new();
            let query = controller_api::LogsQuery { lines: Some(200), ..Default::default() };
            let _ = api.logs(&t.attacker_app, &query, |line| text.push(line.to_owned())).await;
            posted = text.iter().any(|l| l.contains("POST /drain-probe"));
        }
        if let Ok(d) = &drain {
            api.drain_remove(&t.attacker_app, &d.id.to_string()).await.ok();
        }
    }
    let held = !fetched && !pushed && !posted;
    Ok(Verdict::new(
        held,
        format!(
            "BUILDPACK_URL={url}: push {}{}; drain to {drain_url}: {}{}",
            if pushed { "succeeded" } else { "failed" },
            if fetched { ", etcd's answer shown in the push" } else { "" },
            describe(&drain),
            if posted { ", and the logger posted there" } else { "" },
        ),
    ))
}

// ------------------------------------------------------------------------------- names reused

/// 7. The victim pushes to an app and destroys it; the attacker creates an app of that name and
///    pushes a history of its own: an old repository would refuse it (git's "fetch first").
async fn names_reused(t: &mut Tier) -> anyhow::Result<Verdict> {
    let app = format!("sec-{}-reuse", t.run_id);
    t.victim.api.app_create(Some(&app)).await?;
    let old = t.path("reuse-victim");
    repo::from_dir(&t.options.app_dir, &old, &[("SECRET.txt", &t.secret)]).await?;
    let (victim_pushed, _) = push(&t.victim, &old, &app).await;
    if !victim_pushed {
        bail!("the victim's push to {app} failed");
    }
    t.victim.api.app_destroy(&app).await?;
    t.attacker.api.app_create(Some(&app)).await?;
    let new = t.path("reuse-attacker");
    repo::from_dir(&t.options.app_dir, &new, &[("MINE.txt", "the attacker's own history\n")]).await?;
    let (pushed, lines) = push(&t.attacker, &new, &app).await;
    let old_history = lines.iter().any(|l| l.contains("fetch first") || l.contains("non-fast-forward"));
    t.attacker.api.app_destroy(&app).await.ok();
    Ok(Verdict::new(
        pushed && !old_history,
        if pushed {
            "the new app's first push started from an empty repository".to_owned()
        } else if old_history {
            "the new app still holds the destroyed app's history (push refused: fetch first)".to_owned()
        } else {
            format!("the new app's push failed: {}", lines.last().cloned().unwrap_or_default())
        },
    ))
}

// ---------------------------------------------------------------------------- idle connections

/// Whether the peer closes the connection within `patience` while the client sends nothing more.
async fn closed_within(stream: &mut TcpStream, patience: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + patience;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// 8. A half-sent request header, a silent SSH client, and a few hundred sockets from one
///    address.
async fn idle_connections(t: &mut Tier) -> anyhow::Result<Verdict> {
    let http_addr = t.options.settings.http;
    let git_addr = std::net::SocketAddr::from(([127, 0, 0, 1], t.options.settings.git_port));
    let patience = Duration::from_secs(60);
    let half = async {
        let mut s = TcpStream::connect(http_addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: slow.example\r\n").await?;
        anyhow::Ok(closed_within(&mut s, patience).await)
    };
    let silent_ssh = async {
        let mut s = TcpStream::connect(git_addr).await?;
        anyhow::Ok(closed_within(&mut s, patience).await)
    };
    let (half, silent_ssh) = tokio::join!(half, silent_ssh);
    let (half, silent_ssh) = (half?, silent_ssh?);

    // Many idle sockets from one address (more than the front door's per-address limit, 1000):
    // some must be turned away. Whatever was refused is closed by the time of the look.
    let mut sockets = Vec::new();
    for _ in 0..1100 {
        match TcpStream::connect(http_addr).await {
            Ok(s) => sockets.push(s),
            Err(_) => break,
        }
    }
    let opened = sockets.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut turned_away = 0;
    for s in &mut sockets {
        if closed_within(s, Duration::from_millis(2)).await {
            turned_away += 1;
        }
    }
    drop(sockets);
    let held = half && silent_ssh && turned_away > 0;
    Ok(Verdict::new(
        held,
        format!(
            "half a header: {}; silent SSH client: {}; {opened} idle sockets from one address: {turned_away} turned away",
            if half { "closed" } else { "kept 60 s" },
            if silent_ssh { "closed" } else { "kept 60 s" },
        ),
    ))
}

// ----------------------------------------------------------------------------- bus credentials

/// 9. With the router's NATS account: ask the controller for the desired state (every app's
///    config) and publish a start command to an agent.
async fn bus_credentials(t: &mut Tier) -> anyhow::Result<Verdict> {
    let (errors_tx, mut errors_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let nats = async_nats::ConnectOptions::with_user_and_password(
        "router".into(),
        t.options.router_nats_password.clone(),
    )
    .event_callback(move |event| {
        let errors_tx = errors_tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = errors_tx.send(e.to_string());
            }
        }
    })
    .connect(format!("nats://127.0.0.1:{}", t.options.nats_port))
    .await
    .context("connecting as the router")?;
    let ns = bus_schema::Namespace::new("deis")?;
    let desired = tokio::time::timeout(
        Duration::from_secs(5),
        nats.request(ns.desired_state().as_str().to_owned(), bytes::Bytes::new()),
    )
    .await;
    let page = tokio::time::timeout(
        Duration::from_secs(5),
        nats.request(ns.desired_state_page().as_str().to_owned(), bytes::Bytes::new()),
    )
    .await;
    let got_state = matches!(desired, Ok(Ok(ref m)) if !m.payload.is_empty())
        || matches!(page, Ok(Ok(ref m)) if !m.payload.is_empty());
    let node = bus_schema::NodeId::parse("node1")?;
    nats.publish(ns.agent_start(&node).as_str().to_owned(), bytes::Bytes::new()).await.ok();
    nats.flush().await.ok();
    let mut denied = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while let Ok(Some(e)) =
        tokio::time::timeout(until.saturating_duration_since(Instant::now()), errors_rx.recv()).await
    {
        denied.push(e);
    }
    let publish_denied = denied.iter().any(|e| e.to_lowercase().contains("permission"));
    Ok(Verdict::new(
        !got_state && publish_denied,
        format!(
            "desired-state request: {}; start command to an agent: {}",
            if got_state { "answered" } else { "no answer" },
            if publish_denied { "permission violation" } else { "accepted" },
        ),
    ))
}

// ----------------------------------------------------------------------------- log credentials

/// 9. The `drain` user reads every tenant's logs; a tenant's own log credentials (`deis
///    logs:credentials`) must read only its apps: with them, subscribe to the attacker's own
///    drain stream and to the victim's, then make lines in both apps through the front door.
async fn log_credentials(t: &mut Tier) -> anyhow::Result<Verdict> {
    let creds = t.attacker.api.log_credentials().await.context("issuing the attacker's log credentials")?;
    let ns = bus_schema::Namespace::new("deis")?;
    let own = ns.drain(&bus_schema::AppName::parse(&t.attacker_app)?).as_str().to_owned();
    let victims = ns.drain(&bus_schema::AppName::parse(&t.victim_app)?).as_str().to_owned();
    let url = format!("nats://127.0.0.1:{}", t.options.nats_port);
    let listed = creds.subjects.contains(&own) && !creds.subjects.contains(&victims);

    let wrong =
        async_nats::ConnectOptions::with_user_and_password(creds.username.clone(), "not-the-token".into())
            .connect(url.as_str())
            .await;
    let wrong_refused = wrong.is_err();

    let (errors_tx, mut errors_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let nats =
        async_nats::ConnectOptions::with_user_and_password(creds.username.clone(), creds.password.clone())
            .event_callback(move |event| {
                let errors_tx = errors_tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = errors_tx.send(e.to_string());
                    }
                }
            })
            .connect(url.as_str())
            .await
            .context("connecting with the attacker's log credentials")?;
    let mut mine = nats.subscribe(own.clone()).await?;
    let mut theirs = nats.subscribe(victims.clone()).await?;
    nats.flush().await.ok();

    // Lines in both apps (the routers log every request) until the attacker's own arrives.
    let (own_host, victim_host) = (t.attacker.host_of(&t.attacker_app), t.victim.host_of(&t.victim_app));
    let (mut got_own, mut got_theirs) = (false, 0usize);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) && !got_own {
        t.get(&victim_host, "/log-probe").await.ok();
        t.get(&own_host, "/log-probe").await.ok();
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut mine)).await
        {
            got_own = true;
        }
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(50), futures::StreamExt::next(&mut theirs)).await
        {
            got_theirs += 1;
        }
    }
    // A last look at the victim's stream after the attacker's line came.
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut theirs)).await
    {
        got_theirs += 1;
    }
    let mut errors = Vec::new();
    while let Ok(e) = errors_rx.try_recv() {
        errors.push(e);
    }
    let denied = errors.iter().any(|e| e.to_lowercase().contains("permission"));
    Ok(Verdict::new(
        listed && wrong_refused && got_own && got_theirs == 0 && denied,
        format!(
            "issued for [{}]; a wrong password: {}; own stream: {}; victim's stream: {}",
            creds.subjects.join(", "),
            if wrong_refused { "refused" } else { "accepted" },
            if got_own { "lines arrive" } else { "nothing in 30 s" },
            if got_theirs > 0 {
                format!("{got_theirs} lines read")
            } else if denied {
                "permission violation, nothing read".to_owned()
            } else {
                "nothing read, no violation reported".to_owned()
            },
        ),
    ))
}

// ------------------------------------------------------------------------------------ domains

/// 10. A custom domain under the platform domain, also after the platform domain changes;
///     forwarded headers a client sends; the controller's /metrics through the front door.
async fn domains(t: &mut Tier) -> anyhow::Result<Verdict> {
    let domain = t.options.settings.domain.clone();
    let mut seen = Vec::new();
    let shadow = t.attacker.api.domain_add(&t.attacker_app, &format!("{}.{domain}", t.victim_app)).await;
    seen.push(format!("{}.{domain}: {}", t.victim_app, describe(&shadow)));

    // The headers a client sends must not reach the app as the edge's.
    let host = t.attacker.host_of(&t.attacker_app);
    let (_, body) = t
        .get_with(
            &host,
            "/headers",
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Host", "evil.example"),
            ],
        )
        .await?;
    let headers: serde_json::Value = serde_json::from_str(&body).context("the app's /headers answer")?;
    let header = |name: &str| headers.get(name).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let forged = header("x-forwarded-proto") == "https"
        || header("x-forwarded-for").contains("6.6.6.6")
        || header("x-forwarded-host") == "evil.example";
    seen.push(format!(
        "forwarded headers the app saw: proto '{}', for '{}', host '{}'",
        header("x-forwarded-proto"),
        header("x-forwarded-for"),
        header("x-forwarded-host")
    ));

    let (metrics_status, metrics_body) = t.get(&t.api_host(), "/metrics").await?;
    let metrics_public = metrics_status == 200 && metrics_body.contains("# TYPE");
    seen.push(format!("/metrics through the front door: {metrics_status}"));

    // The platform domain changes: the victim's name under the new domain is still its own.
    let key = "/deis/settings/domain";
    let new_domain = format!("sec{}.test", t.run_id);
    t.victim.etcd_put(key, &new_domain).await?;
    let after = async {
        let victim_host = format!("{}.{new_domain}", t.victim_app);
        // Once the routers serve the new domain, the platform has taken the change.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok((200, _)) = t.get(&victim_host, "/").await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        t.attacker.api.domain_add(&t.attacker_app, &victim_host).await
    }
    .await;
    seen.push(format!(
        "after the domain became {new_domain}, {}.{new_domain}: {}",
        t.victim_app,
        describe(&after)
    ));
    t.victim.etcd_put(key, &domain).await?;
    t.wait_served(&t.victim_app, Duration::from_secs(60)).await?;
    let held = refused(&shadow).is_some() && refused(&after).is_some() && !forged && !metrics_public;
    Ok(Verdict::new(held, seen.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
