//! `git push` to a release that serves: the real controller, builder, scheduler and agent on the
//! real Docker engine, registry and NATS, pushed to with the real `git` and `ssh` clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use bus_schema::AppName;
use bus_schema::discovery::{Keys, RouteRecord};
use common::{Platform, commit, files, head, procfile_app, work_tree};
use service_kit::testing::{TestServices, eventually};

/// What the app's healthy web containers answer, through their routes in etcd.
async fn serving(p: &Platform, app: &str) -> Vec<String> {
    let keys = Keys::new(&format!("/{}", p.ns.root()));
    let mut etcd = etcd_client::Client::connect(TestServices::get().etcd_endpoints, None).await.unwrap();
    let resp = etcd
        .get(
            keys.app_routes(&AppName::parse(app).unwrap()),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for kv in resp.kvs() {
        let route: RouteRecord = serde_json::from_slice(kv.value()).unwrap();
        if let Ok(resp) = reqwest::Client::new()
            .get(format!("http://{}/", route.address))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            out.push(resp.text().await.unwrap_or_default().trim().to_owned());
        }
    }
    out
}

/// Waits until the app's one route answers `body`.
async fn wait_until_serving(p: &Platform, app: &str, body: &str, what: &str, patience: Duration) {
    eventually(what, patience, || async { (serving(p, app).await == vec![body.to_owned()]).then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_procfile_app_is_pushed_built_released_and_served() {
    let p = Platform::start("procfile", true).await;
    let (alice, app) = p.alice_with_app("web").await;
    let repo = work_tree(&p.dir.path().join("w"), &files(&procfile_app("hello from the first push")));
    let sha = head(&repo);

    let pushed = alice.push_ok(&repo, &app).await;
    pushed.assert_shows(&[
        "-----> Procfile app detected",
        "-----> Nothing to compile",
        "-----> Process types: web",
        &format!("-----> Pushing image {}/{app}:git-{}", p.builder_config.registry, &sha[..8]),
        "-----> Launching...",
        "release v2 created",
        &format!("done, {app}:v2 deployed to Deis"),
        &format!("http://{app}.deis.local"),
    ]);
    assert!(p.has_image_of(&app, &sha).await);
    let builds = alice.client.builds(&app).await.unwrap();
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].sha, sha);
    assert_eq!(builds[0].kind, "buildpack");
    assert_eq!(builds[0].procfile.get("web").map(String::as_str), Some("./serve.sh"));
    let releases = alice.client.releases(&app).await.unwrap();
    assert_eq!(releases[0].version, 2);
    assert_eq!(releases[0].image, format!("{}/{app}:git-{}", p.builder_config.registry, &sha[..8]));
    // The push ended when the scheduler saw the release healthy; its route follows.
    wait_until_serving(&p, &app, "hello from the first push", "the release serves", Duration::from_secs(20))
        .await;

    // A second push rolls out a new release, and the branch follows.
    commit(&repo, &files(&procfile_app("hello from the second push")));
    let pushed = alice.push_ok(&repo, &app).await;
    pushed.assert_shows(&[&format!("done, {app}:v3 deployed to Deis")]);
    wait_until_serving(
        &p,
        &app,
        "hello from the second push",
        "the new release serves alone",
        Duration::from_secs(30),
    )
    .await;
    let main = p.git_in_bare_repo(&app, &["rev-parse", "refs/heads/main"]);
    assert_eq!(String::from_utf8_lossy(&main.stdout).trim(), head(&repo));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_app_builds_in_a_virtualenv_that_the_next_push_reuses() {
    let p = Platform::start("python", true).await;
    let (alice, app) = p.alice_with_app("py").await;
    let app_py = |greeting: &str| {
        format!(
            "import http.server, os, sys\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       body = ('{greeting} from ' + sys.prefix).encode()\n\
             \x20       self.send_response(200); self.end_headers(); self.wfile.write(body)\n\
             http.server.HTTPServer(('', int(os.environ['PORT'])), H).serve_forever()\n"
        )
    };
    let first = app_py("hello");
    let repo = work_tree(
        &p.dir.path().join("w"),
        &[("requirements.txt", "# the standard library is enough\n", false), ("app.py", &first, false)],
    );
    let pushed = alice.push_ok(&repo, &app).await;
    pushed.assert_shows(&[
        "-----> Python app detected",
        "-----> Creating a virtualenv",
        "-----> Process types: web",
    ]);
    // `web` is the buildpack's default, run by the virtualenv's python.
    wait_until_serving(&p, &app, "hello from /app/.venv", "the release serves", Duration::from_secs(20))
        .await;
    assert!(p.builder_config.cache_dir().join(format!("{app}.tar")).exists(), "the build cache is kept");

    let second = app_py("hi again");
    commit(&repo, &[("app.py", &second, false)]);
    let pushed = alice.push_ok(&repo, &app).await;
    pushed.assert_shows(&[
        "-----> Restoring the build cache",
        "-----> Reusing the virtualenv from the build cache",
    ]);
    assert!(!pushed.stderr.contains("Creating a virtualenv"), "{}", pushed.stderr);
    wait_until_serving(
        &p,
        &app,
        "hi again from /app/.venv",
        "the second release serves",
        Duration::from_secs(30),
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dockerfile_app_from_the_stack_builds_and_releases() {
    let p = Platform::start("dockerfile", true).await;
    let (alice, app) = p.alice_with_app("docker").await;
    let repo = work_tree(
        &p.dir.path().join("w"),
        &[
            (
                "Dockerfile",
                "FROM deis/stack\nCOPY public /srv\nCMD exec python3 -u -m http.server \"$PORT\" --directory /srv\n",
                false,
            ),
            ("public/index.html", "from a Dockerfile\n", false),
        ],
    );
    let sha = head(&repo);
    let pushed = alice.push_ok(&repo, &app).await;
    assert!(p.has_image_of(&app, &sha).await);
    pushed.assert_shows(&[
        "-----> Building Docker image from the Dockerfile",
        // The stack is named by the builder, and the engine builds from its id.
        "-----> Base image deis/stack is sha256:",
        "Successfully built",
    ]);
    let builds = alice.client.builds(&app).await.unwrap();
    assert_eq!((builds[0].kind.as_str(), builds[0].procfile.len()), ("dockerfile", 0));
    let releases = alice.client.releases(&app).await.unwrap();
    assert_eq!(releases[0].version, 2);
    // Without a Procfile the image's CMD runs as the `cmd` process type, as in Deis v1.
    let info = alice.client.app(&app).await.unwrap();
    assert_eq!(info.structure.get("cmd"), Some(&1), "{info:?}");
    pushed.assert_shows(&[&format!("done, {app}:v2 deployed to Deis")]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_pushes_to_one_app_leave_the_repository_intact_and_both_outcomes_clear() {
    let p = Platform::start("concurrent", true).await;
    let (alice, app) = p.alice_with_app("race").await;
    let one = work_tree(&p.dir.path().join("one"), &files(&procfile_app("one")));
    let two = work_tree(&p.dir.path().join("two"), &files(&procfile_app("two")));
    let (a, b) = tokio::join!(alice.push(&one, &app), alice.push(&two, &app));
    assert!(a.ok != b.ok, "exactly one push lands: {a:?} {b:?}");
    let (winner, loser, winner_repo) = if a.ok { (&a, &b, &one) } else { (&b, &a, &two) };
    assert!(winner.stderr.contains("deployed to Deis"), "{}", winner.stderr);
    // The other either waited for the first build and was told the branch moved, or (if it
    // reached the builder after the first push finished) git refused it as not a fast-forward.
    let clear = (loser.stderr.contains("waiting for it to finish")
        && loser.stderr.contains("while this push waited: another push landed first"))
        || loser.stderr.contains("fetch first")
        || loser.stderr.contains("non-fast-forward");
    assert!(clear, "the refused push says why:\n{}", loser.stderr);

    let fsck = p.git_in_bare_repo(&app, &["fsck", "--strict"]);
    assert!(fsck.status.success(), "the repository is intact: {}", String::from_utf8_lossy(&fsck.stderr));
    let main = p.git_in_bare_repo(&app, &["rev-parse", "refs/heads/main"]);
    assert_eq!(String::from_utf8_lossy(&main.stdout).trim(), head(winner_repo));
    let builds = alice.client.builds(&app).await.unwrap();
    assert_eq!(builds.len(), 1, "only the landed push was released: {builds:?}");
    assert_eq!(builds[0].sha, head(winner_repo));
    p.stop().await;
}
