//! The builder's hooks (`/v1/hooks/`) against real Postgres and NATS: only the builder's secret
//! opens them, they answer who owns a key, who may push where (with the app's config), and
//! what became of a build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::messages::{BuildCompleted, BuildKind};
use bus_schema::{AppName, MessageId, ProcessType};
use controller::testing::TestController;
use controller_api::{Client, ConfigUpdate, KeyCreateRequest};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";

async fn controller(test: &str, builder_key: Option<&str>) -> TestController {
    let (mut config, ns, database) = TestController::config(test).await;
    config.builder_key = builder_key.map(str::to_owned);
    TestController::start_with(config, ns, database).await
}

#[tokio::test]
async fn only_the_builders_secret_opens_the_hooks() {
    let ctl = controller("hooksauth", Some("s3cret")).await;
    let alice = ctl.user("alice").await;
    let key = alice.key_add(&KeyCreateRequest { id: "laptop".into(), public: KEY.into() }).await.unwrap();

    let builder = Client::for_builder(&ctl.url, "s3cret");
    let owner = builder.hook_key_owner(&key.fingerprint).await.unwrap();
    assert_eq!((owner.username.as_str(), owner.key_id.as_str()), ("alice", "laptop"));
    assert_eq!(owner.fingerprint, key.fingerprint);

    for wrong in ["s3cret!", "s3cre", "", "token s3cret"] {
        let err = Client::for_builder(&ctl.url, wrong).hook_key_owner(&key.fingerprint).await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{wrong:?}: {err}");
    }
    // A user's token is not the builder's secret.
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/hooks/push/", ctl.url))
        .header("Authorization", format!("token {}", alice.token().unwrap()))
        .json(&serde_json::json!({"username": "alice", "app": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 401);
    ctl.stop().await;

    // Without a configured secret the hooks are closed to everyone.
    let ctl = controller("hooksoff", None).await;
    let err = Client::for_builder(&ctl.url, "anything").hook_key_owner("SHA256:x").await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("builder_key"), "{err}");
    ctl.stop().await;
}

#[tokio::test]
async fn keys_pushes_and_builds_are_answered_for_the_builder() {
    let ctl = controller("hooks", Some("s3cret")).await;
    // An admin (by the operator's admin code): alice may push anywhere.
    let _admin = ctl.admin("alice").await;
    let bob = ctl.user("bob").await;
    let carol = ctl.user("carol").await;
    let builder = Client::for_builder(&ctl.url, "s3cret");

    let unknown = builder.hook_key_owner("SHA256:AAAA/bbb+ccc").await.unwrap_err();
    assert_eq!(unknown.status(), Some(404));
    assert!(unknown.to_string().contains("deis keys:add"), "{unknown}");

    bob.app_create(Some("shop")).await.unwrap();
    bob.config_update(
        "shop",
        &ConfigUpdate {
            values: [("BUILDPACK_URL".to_owned(), Some("https://example.com/bp.git".to_owned()))].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let push = builder.hook_push("bob", "shop").await.unwrap();
    assert_eq!(push.url, "http://shop.deis.local");
    assert_eq!(push.config.get("BUILDPACK_URL").map(String::as_str), Some("https://example.com/bp.git"));
    // Alice is an admin; carol is an outsider until bob shares.
    assert!(!carol.whoami().await.unwrap().is_superuser);
    builder.hook_push("alice", "shop").await.unwrap();
    let err = builder.hook_push("carol", "shop").await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("carol does not have permission to push to shop"), "{err}");
    bob.perm_create("shop", "carol").await.unwrap();
    assert_eq!(builder.hook_push("carol", "shop").await.unwrap().username, "carol");
    assert_eq!(builder.hook_push("bob", "nope").await.unwrap_err().status(), Some(404));
    assert_eq!(builder.hook_push("nobody", "shop").await.unwrap_err().status(), Some(404));
    assert_eq!(builder.hook_push("bob", "Bad.Name").await.unwrap_err().status(), Some(422));

    // A build the builder announces becomes a release that the hook reports.
    let build_id = uuid::Uuid::now_v7();
    let status = builder.hook_build_status("shop", build_id).await.unwrap();
    assert_eq!((status.release, status.deploy.as_ref()), (None, None));
    let registry = service_kit::testing::TestServices::get().registry;
    let repo = format!("{}-shop", ctl.ns.root());
    service_kit::testing::push_tiny_image(&registry, &repo, "git-0123abcd").await;
    let bus = ctl.bus().await;
    let completed = BuildCompleted {
        app: AppName::parse("shop").unwrap(),
        build_id,
        git_sha: "0123abcd".repeat(5),
        user: "bob".into(),
        kind: BuildKind::Buildpack,
        image: format!("{registry}/{repo}:git-0123abcd"),
        procfile: BTreeMap::from([(ProcessType::web(), "./serve".to_owned())]),
    };
    let envelope = bus.envelope(completed).with_id(MessageId(build_id));
    bus.publish_durable(&ctl.ns.build_completed(&AppName::parse("shop").unwrap()), &envelope).await.unwrap();
    let status = service_kit::testing::eventually("the build is released", Duration::from_secs(20), || {
        let builder = builder.clone();
        async move { builder.hook_build_status("shop", build_id).await.ok().filter(|s| s.release.is_some()) }
    })
    .await;
    // Releases: v1 (create), v2 (config), v3 (the build).
    assert_eq!(status.release, Some(3));
    assert_eq!(status.url, "http://shop.deis.local");
    // No scheduler runs here: the rollout is unknown, and the hook says why.
    assert!(status.deploy.is_none());
    assert!(status.deploy_unknown.as_deref().unwrap_or_default().contains("scheduler"), "{status:?}");

    assert_eq!(builder.hook_build_status("shop", uuid::Uuid::nil()).await.unwrap().release, None);
    assert_eq!(builder.hook_build_status("nope", build_id).await.unwrap_err().status(), Some(404));
    ctl.stop().await;
}
