//! The OpenAPI document is valid and true: schemathesis (PyPI) generates requests for every
//! operation from the document and checks the live controller's answers against it. No 5xx, no
//! undocumented status, no body that breaks its schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use controller::testing::TestController;
use controller_api::KeyCreateRequest;

/// Where `compose/test` installs schemathesis (a venv of its own), or `$DEIS_SCHEMATHESIS`.
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("DEIS_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from("/var/cache/deis-tools/venv/bin/schemathesis");
    assert!(
        venv.exists(),
        "schemathesis is not installed: run ./compose/test (it installs it into /var/cache/deis-tools/venv)"
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_response_breaking_the_document() {
    // The builder's hooks are exercised too, with the builder's secret beside the user's token.
    let (mut config, ns, database) = TestController::config("schemathesis").await;
    config.builder_key = Some("schemathesis-builder-secret".to_owned());
    let ctl = TestController::start_with(config, ns, database).await;
    // The process endpoints ask the scheduler, so the system under test includes one.
    let scheduler_shutdown = service_kit::Shutdown::new();
    let scheduler_config = scheduler::SchedulerConfig {
        instance: "schemathesis".into(),
        settle_ms: 0,
        nats: ctl.config.nats.clone(),
        etcd: service_kit::EtcdConfig {
            endpoints: service_kit::testing::TestServices::get().etcd_endpoints,
            prefix: format!("/{}", ctl.ns.root()),
            ..Default::default()
        },
        ..Default::default()
    };
    let scheduler_task = tokio::spawn(scheduler::run(scheduler_config, scheduler_shutdown.clone()));
    let alice = ctl.admin("alice").await;
    // Some state, so generated requests also reach the paths where things exist.
    alice.app_create(Some("fuzzed")).await.unwrap();
    alice.domain_add("fuzzed", "www.fuzzed.example").await.unwrap();
    alice
        .key_add(&KeyCreateRequest {
            id: "k".into(),
            public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl k@h"
                .into(),
        })
        .await
        .unwrap();
    let token = alice.token().unwrap().to_owned();
    // Wait until the scheduler leads and answers.
    service_kit::testing::eventually("the scheduler answers", std::time::Duration::from_secs(20), || {
        let alice = alice.clone();
        async move { alice.containers("fuzzed").await.ok() }
    })
    .await;

    // The document itself parses as OpenAPI 3 with every operation.
    let doc: serde_json::Value =
        reqwest::get(format!("{}/v1/openapi.json", ctl.url)).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"].as_object().unwrap().len() >= 25);

    // `deis run` starts real containers and `deis logs` asks a logger; with neither here they can
    // only answer 503, which this test would count as a failure. The data-plane tests exercise
    // `run`, the CLI's logs test (with a real logger) exercises `logs`.
    let skipped = ["/v1/apps/{app}/run/", "/v1/apps/{app}/logs/"];
    let report = tempfile::tempdir().unwrap();
    // A second pass pins path parameters to things that exist, so generated bodies reach the
    // logic behind the lookups instead of stopping at 404.
    let pinned = report.path().join("pinned.toml");
    std::fs::write(
        &pinned,
        "[parameters]\n\"path.app\" = \"fuzzed\"\n\"path.domain\" = \"www.fuzzed.example\"\n\"path.version\" = \"v1\"\n\"path.id\" = \"k\"\n\"path.username\" = \"alice\"\n",
    )
    .unwrap();
    let run = |exclude: &[&str], include: &[&str], examples: &str, config: Option<&std::path::Path>| {
        let mut cmd = Command::new(schemathesis());
        if let Some(config) = config {
            cmd.arg("--config-file").arg(config);
        }
        cmd.arg("run");
        if config.is_some() {
            // Deleting the pinned app or domain would turn the rest of the pass into 404s.
            cmd.args(["--exclude-method", "DELETE"]);
        }
        cmd
            .arg(format!("{}/v1/openapi.json", ctl.url))
            .args(["--url", &ctl.url])
            .args(["-H", &format!("Authorization: token {token}")])
            .args(["-H", "X-Deis-Builder-Auth: schemathesis-builder-secret"])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
            .args(["--max-examples", examples, "--seed", "1", "--workers", "1", "--no-color", "--request-timeout", "20"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--report-dir"])
            .arg(report.path())
            .env("SCHEMATHESIS_HOOKS", "");
        for path in skipped {
            cmd.args(["--exclude-path", path]);
        }
        for path in exclude {
            cmd.args(["--exclude-path", path]);
        }
        for path in include {
            cmd.args(["--include-path", path]);
        }
        cmd
    };
    // Operations that end the session (cancel the account, replace the token) run last, alone.
    let enders = ["/v1/auth/cancel/", "/v1/auth/tokens/"];
    let passes = [
        ("random", run(&enders, &[], "25", None)),
        ("pinned", run(&enders, &[], "25", Some(&pinned))),
        ("session enders", run(&[], &enders, "10", None)),
    ];
    for (name, mut cmd) in passes {
        let output =
            tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("schemathesis runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("--- schemathesis ({name}) ---\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "schemathesis ({name}) found failures; see the output above");
    }
    scheduler_shutdown.trigger();
    let _ = scheduler_task.await;
    ctl.stop().await;
}
