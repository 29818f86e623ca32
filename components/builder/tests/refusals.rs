//! What the builder refuses, and how a failed build looks: with the real controller, builder,
//! `ssh` and `git` clients, Docker engine and NATS. No data plane: none of these reach a release.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use bus_schema::AppName;
use common::{Platform, files, procfile_app, work_tree};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_key_is_refused_and_nothing_is_received() {
    let p = Platform::start("unregistered", false).await;
    let (_alice, app) = p.alice_with_app("keys").await;
    let repo = work_tree(&p.dir.path().join("w"), &files(&procfile_app("hi")));
    let mallory = p.user("mallory", false).await;

    let pushed = mallory.push(&repo, &app).await;
    assert!(!pushed.ok);
    assert!(pushed.stderr.contains("Permission denied"), "{}", pushed.stderr);
    assert!(pushed.stderr.contains("is registered with Deis"), "the refusal says why: {}", pushed.stderr);
    assert!(!p.bare_repo(&app).exists(), "nothing was received");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_access_and_any_other_command_are_refused_clearly() {
    let p = Platform::start("noaccess", false).await;
    let (alice, app) = p.alice_with_app("private").await;
    let bob = p.user("bob", true).await;
    let repo = work_tree(&p.dir.path().join("w"), &files(&procfile_app("hi")));

    let pushed = bob.push(&repo, &app).await;
    assert!(!pushed.ok);
    assert!(
        pushed.stderr.contains(&format!("bob does not have permission to push to {app}")),
        "{}",
        pushed.stderr
    );

    let missing = bob.push(&repo, "nosuchapp").await;
    assert!(!missing.ok);
    assert!(missing.stderr.contains("app 'nosuchapp' not found"), "{}", missing.stderr);

    // Cloning, a shell command and a path that is not an app are refused with the reason.
    let clone = bob.ssh(&format!("git-upload-pack '/{app}.git'")).await;
    assert!(!clone.ok && clone.stderr.contains("only `git push` is supported"), "{clone:?}");
    let shell = bob.ssh("cat /etc/passwd").await;
    assert!(!shell.ok && shell.stderr.contains("only `git push` is supported"), "{shell:?}");
    let escape = bob.ssh("git-receive-pack '../../etc.git'").await;
    assert!(!escape.ok && escape.stderr.contains("is not an app"), "{escape:?}");

    // Shared with bob, the same push gets past the access check (and is built).
    alice.client.perm_create(&app, "bob").await.unwrap();
    let subscriber = p.ctl.bus().await;
    let ns = p.ns.clone();
    let mut requested = subscriber.subscribe(&ns.all_builds_requested()).await.unwrap();
    let group = bob.start_push(&repo, &app);
    let event =
        tokio::time::timeout(Duration::from_secs(60), requested.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.envelope.body.app, AppName::parse(&app).unwrap());
    assert_eq!(event.envelope.body.user, "bob");
    // Hanging up (git and ssh killed, as Ctrl-C does) abandons the build, and the builder
    // removes what it had started.
    let killed =
        std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status().unwrap();
    assert!(killed.success());
    let prefix = p.prefix.clone();
    service_kit::testing::eventually(
        "the abandoned build's container is removed",
        Duration::from_secs(30),
        || {
            let prefix = prefix.clone();
            async move {
                let out = std::process::Command::new("docker")
                    .args(["ps", "-aq", "--filter", &format!("name={prefix}")])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout).trim().is_empty().then_some(())
            }
        },
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_fails_the_push_shows_its_output_and_moves_nothing() {
    let p = Platform::start("failing", false).await;
    let alice = p.user("alice", true).await;
    let bus = p.ctl.bus().await;

    // A buildpack app: BUILDPACK_URL picks a custom buildpack (from a local repository) whose
    // compile step fails.
    let app = p.app_name("badpack");
    alice.client.app_create(Some(&app)).await.unwrap();
    let pack = work_tree(
        &p.dir.path().join("pack"),
        &[
            ("bin/detect", "#!/bin/sh\necho Failing\n", true),
            (
                "bin/compile",
                "#!/bin/sh\necho \"compiling $(ls $1)\"\necho 'oh no, compile is broken' >&2\nexit 3\n",
                true,
            ),
            ("bin/release", "#!/bin/sh\necho '--- {}'\n", true),
        ],
    );
    let url = format!("file://{}", pack.display());
    alice
        .client
        .config_update(
            &app,
            &controller_api::ConfigUpdate {
                values: [("BUILDPACK_URL".to_owned(), Some(url))].into_iter().collect(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut failed = bus.subscribe(&p.ns.all_builds_failed()).await.unwrap();
    let mut logs = bus.subscribe(&p.ns.all_log_lines()).await.unwrap();
    let repo = work_tree(&p.dir.path().join("w1"), &files(&procfile_app("hi")));
    let pushed = alice.push(&repo, &app).await;
    assert!(!pushed.ok, "a failed build fails the push");
    pushed.assert_shows(&[
        "Fetching custom buildpack",
        "-----> Failing app detected",
        "compiling Procfile",
        "oh no, compile is broken",
        "the buildpack's compile step failed",
        "pre-receive hook declined",
    ]);
    let event = tokio::time::timeout(Duration::from_secs(10), failed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.envelope.body.app.as_str(), app);
    assert!(event.envelope.body.reason.contains("compile step failed"), "{:?}", event.envelope.body);
    // The build's lines are in the app's log stream too.
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let l = logs.next().await.unwrap().unwrap().envelope.body;
            if l.message.contains("oh no, compile is broken") {
                return l;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(line.source.kind(), "builder");
    assert!(alice.client.builds(&app).await.unwrap().is_empty(), "nothing was built");
    let refs = p.git_in_bare_repo(&app, &["show-ref"]);
    assert!(String::from_utf8_lossy(&refs.stdout).trim().is_empty(), "the branch was not created");

    // A Dockerfile app whose build step fails.
    let app = p.app_name("baddocker");
    alice.client.app_create(Some(&app)).await.unwrap();
    let repo = work_tree(
        &p.dir.path().join("w2"),
        &[("Dockerfile", "FROM deis/stack\nRUN echo 'step output before failing' && exit 7\n", false)],
    );
    let pushed = alice.push(&repo, &app).await;
    assert!(!pushed.ok);
    assert!(pushed.stderr.contains("step output before failing"), "{}", pushed.stderr);
    assert!(pushed.stderr.contains("the Docker build failed"), "{}", pushed.stderr);

    // A base image the app may not use is named, with its line.
    let repo =
        work_tree(&p.dir.path().join("w3"), &[("Dockerfile", "FROM deis-test/nowhere:1\nCMD true\n", false)]);
    let pushed = alice.push(&repo, &app).await;
    assert!(!pushed.ok);
    assert!(
        pushed.stderr.contains(
            "Dockerfile line 1: `FROM deis-test/nowhere:1`: deis-test/nowhere:1 is not an image this app may build from"
        ),
        "{}",
        pushed.stderr
    );

    // Pushing another branch than main, or deleting main, is refused with what to do.
    let other = alice
        .git(&repo)
        .args(["push", &alice.remote(&app), "HEAD:refs/heads/feature"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success() && stderr.contains("Deis builds the main (or master) branch"),
        "{stderr}"
    );
    p.stop().await;
}

/// Started before NATS: SSH answers at once (`Platform` waits for the banner), a push is refused
/// with the reason and nothing built, and once the bus comes pushes are built again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_started_before_the_bus_serves_ssh_and_builds_once_the_bus_comes() {
    let services = service_kit::testing::TestServices::get();
    let late = service_kit::testing::LateService::new(services.nats_url.trim_start_matches("nats://")).await;
    let p = Platform::start_with_bus("latebus", false, Some(late.url("nats"))).await;
    let (alice, app) = p.alice_with_app("late").await;
    let repo = work_tree(&p.dir.path().join("w"), &[("README", "no Procfile, nothing to detect\n", false)]);

    let refused = alice.push(&repo, &app).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("message bus is not reachable"),
        "the refusal says why: {}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("-----> Building"), "nothing was built: {}", refused.stderr);

    let bus = p.ctl.bus().await;
    let mut failed = bus.subscribe(&p.ns.all_builds_failed()).await.unwrap();
    late.open();
    let pushed = service_kit::testing::eventually(
        "a push is built once the bus comes",
        Duration::from_secs(60),
        || async {
            let pushed = alice.push(&repo, &app).await;
            pushed.stderr.contains("-----> Building").then_some(pushed)
        },
    )
    .await;
    assert!(!pushed.ok, "an app with nothing to build still fails: {}", pushed.stderr);
    // Its outcome reaches the bus: the builder publishes, not just builds.
    let event = tokio::time::timeout(Duration::from_secs(10), failed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.envelope.body.app.as_str(), app);
    p.stop().await;
}

/// A Procfile with more process types than an app may have is refused before anything is built
/// (the controller would refuse the build anyway; the push must not wait for that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procfile_with_too_many_process_types_is_refused_before_building() {
    let p = Platform::start("manytypes", false).await;
    let (alice, app) = p.alice_with_app("many").await;
    let mut app_files = procfile_app("hi");
    let procfile: String = (0..40).map(|i| format!("p{i}: ./serve.sh\n")).collect();
    app_files[0] = ("Procfile", procfile, false);
    let repo = work_tree(&p.dir.path().join("w"), &files(&app_files));
    let pushed = alice.push(&repo, &app).await;
    assert!(!pushed.ok, "{}", pushed.stderr);
    pushed.assert_shows(&["the Procfile declares 40 process types; an app may have at most 32"]);
    assert!(!pushed.stderr.contains("Pushing image"), "nothing was built: {}", pushed.stderr);
    p.stop().await;
}
