//! Tenants cannot reach each other through the builder: a Dockerfile builds only from images the
//! app may use, `BUILDPACK_URL` cannot reach the inside, a destroyed app's name starts empty,
//! and silent SSH clients cannot hold sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::{Platform, files, head, in_registry, procfile_app, work_tree};
use service_kit::testing::eventually;
use tokio::io::AsyncReadExt;

// Generous: CI runs these beside every other suite on two cores.
const PATIENCE: Duration = Duration::from_secs(120);

/// The full id of the stack image on the engine.
fn stack_id() -> String {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", "deis/stack"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("sha256:").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_builds_only_from_the_stack_its_own_images_or_allowed_bases() {
    let p = Platform::start("basesonly", false).await;
    let (alice, app) = p.alice_with_app("mine").await;
    let other = p.app_name("theirs");
    let registry = p.builder_config.registry.clone();
    let id = stack_id();
    let cases = [
        // Another app's image by its platform-registry name.
        (format!("FROM {registry}/{other}:git-12345678\nRUN cat /etc/hostname\n"), 1),
        // An image by a short id (here the stack's own: short ids are never resolved).
        (format!("FROM {}\nRUN true\n", &id[..4]), 1),
        (format!("FROM sha256:{id}\nRUN true\n"), 1),
        // Multi-stage: an image copied from.
        (format!("FROM deis/stack AS build\nRUN true\nCOPY --from={registry}/{other}:git-1 /app /x\n"), 3),
        // A name from a build argument without a default.
        ("ARG BASE\nFROM $BASE\n".to_owned(), 2),
    ];
    for (n, (dockerfile, line)) in cases.iter().enumerate() {
        let repo = work_tree(&p.dir.path().join(format!("w{n}")), &[("Dockerfile", dockerfile, false)]);
        let pushed = alice.push(&repo, &app).await;
        assert!(!pushed.ok, "{dockerfile}");
        assert!(
            pushed.stderr.contains(&format!("Dockerfile line {line}: `")),
            "{dockerfile}: {}",
            pushed.stderr
        );
        assert!(!pushed.stderr.contains("Step 1/"), "nothing was built: {}", pushed.stderr);
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buildpack_url_to_loopback_is_refused_before_anything_connects() {
    let p = Platform::start_with("bploopback", false, None, |c| {
        c.buildpack_url_schemes = vec!["https".into(), "http".into(), "git".into()];
    })
    .await;
    let (alice, app) = p.alice_with_app("bp").await;
    // Something inside answers on loopback, as etcd would.
    let inside = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = inside.local_addr().unwrap().port();
    for url in [format!("http://127.0.0.1:{port}/v2/keys"), format!("git://localhost:{port}/bp.git")] {
        alice
            .client
            .config_update(
                &app,
                &controller_api::ConfigUpdate {
                    values: [("BUILDPACK_URL".to_owned(), Some(url.clone()))].into_iter().collect(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let repo = work_tree(&p.dir.path().join(format!("w{}", url.len())), &files(&procfile_app("hi")));
        let pushed = alice.push(&repo, &app).await;
        assert!(!pushed.ok);
        assert!(
            pushed.stderr.contains(&format!("BUILDPACK_URL '{url}' is not allowed"))
                && pushed.stderr.contains("a loopback address"),
            "{}",
            pushed.stderr
        );
    }
    // Nothing connected: the check came before any fetch.
    let accepted = tokio::time::timeout(Duration::from_millis(200), inside.accept()).await;
    assert!(accepted.is_err(), "the builder connected to the inside");
    p.stop().await;
}

/// Connects from `local` (a loopback address of its own, so the platform's readiness probe
/// does not count against the limit) and returns the stream.
async fn connect_from(local: [u8; 4], port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((local, 0).into()).unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}

/// Reads what the server sends until it closes: `(bytes, closed)`.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_ssh_clients_are_dropped_and_limited_per_address() {
    let p = Platform::start_with("sshidle", false, None, |c| {
        c.ssh_auth_timeout_secs = 2;
        c.ssh_max_connections_per_address = 2;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from([127, 0, 0, 2], p.ssh_port).await;
        let mut banner = [0u8; 4];
        s.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"SSH-");
        silent.push(s);
    }
    // A third from the same address is closed at once, without a banner.
    let mut third = connect_from([127, 0, 0, 2], p.ssh_port).await;
    let (got, closed) = read_until_closed(&mut third, Duration::from_secs(1)).await;
    assert!(closed && got.is_empty(), "the third connection got {got:?} (closed: {closed})");
    // Another address is not held up by the first one's.
    let mut elsewhere = connect_from([127, 0, 0, 3], p.ssh_port).await;
    let mut banner = [0u8; 4];
    elsewhere.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"SSH-");
    // Clients that never log in are dropped after the login timeout.
    for mut s in silent.into_iter().chain([elsewhere]) {
        let started = std::time::Instant::now();
        let (_, closed) = read_until_closed(&mut s, PATIENCE).await;
        assert!(closed, "a silent client kept its connection");
        println!("silent connection closed after {:?}", started.elapsed());
    }
    // Their slots are free again.
    eventually("a new connection from the first address", PATIENCE, || async {
        let mut s = connect_from([127, 0, 0, 2], p.ssh_port).await;
        let mut banner = [0u8; 4];
        s.read_exact(&mut banner).await.ok()?;
        (&banner == b"SSH-").then_some(())
    })
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destroyed_apps_name_starts_empty() {
    let p = Platform::start("reuse", true).await;
    let (alice, app) = p.alice_with_app("reuse").await;
    let repo = work_tree(&p.dir.path().join("w1"), &files(&procfile_app("the first owner's secret")));
    let sha = head(&repo);
    alice.push_ok(&repo, &app).await;
    let registry = p.builder_config.registry.clone();
    let image = format!("{registry}/{app}:git-{}", &sha[..8]);
    let cache = p.builder_config.cache_dir().join(format!("{app}.tar"));
    let on_engine = |image: String| async move {
        std::process::Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(p.bare_repo(&app).exists() && cache.exists() && on_engine(image.clone()).await);
    assert!(p.has_image_of(&app, &sha).await);
    let inspect = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &image])
        .output()
        .unwrap();
    let image_id = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    // The app's container is still running when the destroy reaches the builder: its image goes
    // once the scheduler has stopped it.
    alice.client.app_destroy(&app).await.unwrap();
    eventually("the builder forgets the destroyed app", PATIENCE, || {
        let (image, image_id) = (image.clone(), image_id.clone());
        let (cache, registry) = (cache.clone(), registry.clone());
        let repo_gone = !p.bare_repo(&app).exists();
        let (app, tag) = (app.clone(), format!("git-{}", &sha[..8]));
        async move {
            let gone = repo_gone
                && !cache.exists()
                && !on_engine(image).await
                && !on_engine(image_id).await
                && !in_registry(&registry, &app, &tag).await;
            gone.then_some(())
        }
    })
    .await;

    // A new app of the same name (here the same user's; it could be anyone's) starts empty:
    // an unrelated history is taken, with no old commits and no old cache.
    alice.client.app_create(Some(&app)).await.unwrap();
    let repo = work_tree(&p.dir.path().join("w2"), &files(&procfile_app("the new owner")));
    let pushed = alice.push_ok(&repo, &app).await;
    assert!(!pushed.stdout.contains("Restoring the build cache") && !pushed.stderr.contains("Restoring"));
    let commits = p.git_in_bare_repo(&app, &["rev-list", "--all"]);
    assert_eq!(String::from_utf8_lossy(&commits.stdout).trim(), head(&repo));
    p.stop().await;
}

/// The destroy of an app may not have reached the builder when a new app of the same name is
/// pushed to (the builder was down, or the push came first): the repository records its app's
/// identity, and one recorded for another app is never handed to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repository_of_another_app_of_the_same_name_is_not_reused() {
    let p = Platform::start("reuseid", true).await;
    let (alice, app) = p.alice_with_app("reuseid").await;
    let first = work_tree(&p.dir.path().join("w1"), &files(&procfile_app("the first owner's secret")));
    alice.push_ok(&first, &app).await;
    let recorded = p.bare_repo(&app).join("deis-app");
    let current = std::fs::read_to_string(&recorded).expect("the repository records its app");
    // As if the repository had been made for an earlier app of this name.
    let earlier = uuid::Uuid::new_v4().to_string();
    assert_ne!(current.trim(), earlier);
    std::fs::write(&recorded, &earlier).unwrap();

    let second = work_tree(&p.dir.path().join("w2"), &files(&procfile_app("the new owner")));
    alice.push_ok(&second, &app).await;
    let commits = p.git_in_bare_repo(&app, &["rev-list", "--all"]);
    assert_eq!(String::from_utf8_lossy(&commits.stdout).trim(), head(&second), "no old commits");
    assert_eq!(std::fs::read_to_string(&recorded).unwrap().trim(), current.trim());
    p.stop().await;
}
