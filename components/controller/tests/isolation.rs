//! Tenants cannot reach each other through the controller: an app deploys only its own images,
//! custom domains never shadow app names under the platform domain the routers use (etcd's),
//! and `/metrics` is not served on the API listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use controller::testing::TestController;
use controller_api::{BuildCreateRequest, Client};
use service_kit::EtcdConfig;
use service_kit::testing::{TestServices, eventually, free_port, push_tiny_image};

fn image(image: String) -> BuildCreateRequest {
    BuildCreateRequest { image, procfile: BTreeMap::new() }
}

/// Two ordinary users (neither an administrator: someone registered before them), each with an app.
async fn two_tenants(ctl: &TestController, mine: &str, theirs: &str) -> (Client, Client) {
    let _first = ctl.user("root").await;
    let bob = ctl.user("bob").await;
    let carol = ctl.user("carol").await;
    bob.app_create(Some(mine)).await.unwrap();
    carol.app_create(Some(theirs)).await.unwrap();
    (bob, carol)
}

#[tokio::test]
async fn an_app_deploys_only_its_own_images_and_the_answer_does_not_tell_what_exists() {
    let ctl = TestController::start("ownimages").await;
    let registry = TestServices::get().registry;
    let (mine, theirs) = (format!("bob-{}", free_port()), format!("carol-{}", free_port()));
    let (bob, carol) = two_tenants(&ctl, &mine, &theirs).await;
    push_tiny_image(&registry, &theirs, "git-0badc0de").await;
    push_tiny_image(&registry, &mine, "v1").await;
    // Carol may deploy her own image; so may bob his.
    carol.build_create(&theirs, &image(format!("{theirs}:git-0badc0de"))).await.unwrap();
    bob.build_create(&mine, &image(format!("{registry}/{mine}:v1"))).await.unwrap();

    // Every way of naming carol's repository, existing tag or not, is the same 403 for bob.
    let local = registry.replace("127.0.0.1", "localhost");
    for other in [
        format!("{theirs}:git-0badc0de"),
        format!("{theirs}:git-ffffffff"),
        theirs.clone(),
        format!("{registry}/{theirs}:git-0badc0de"),
        format!("{registry}/{theirs}:git-ffffffff"),
        format!("library/{theirs}:git-0badc0de"),
        format!("{registry}/library/{theirs}:git-0badc0de"),
        format!("{theirs}@sha256:{}", "0".repeat(64)),
        // No such app: refused alike.
        format!("ghost-{}:v1", free_port()),
    ] {
        let error = bob.build_create(&mine, &image(other.clone())).await.unwrap_err();
        assert_eq!(error.status(), Some(403), "{other}: {error}");
        assert!(!error.to_string().contains("not in the platform registry"), "{other}: {error}");
    }
    // Another registry host stays refused as before (422), without asking it anything.
    let error = bob.build_create(&mine, &image(format!("{local}/{theirs}:git-0badc0de"))).await.unwrap_err();
    assert_eq!(error.status(), Some(422), "{error}");
    assert_eq!(bob.builds(&mine).await.unwrap().len(), 1, "only bob's own image was deployed");

    // Between his own apps a tenant may move an image (`deis pull` of another app's build).
    let second = format!("{mine}-two");
    bob.app_create(Some(&second)).await.unwrap();
    bob.build_create(&second, &image(format!("{registry}/{mine}:v1"))).await.unwrap();
    let error = bob.build_create(&second, &image(format!("{theirs}:git-0badc0de"))).await.unwrap_err();
    assert_eq!(error.status(), Some(403), "{error}");
}

/// A controller that follows etcd under a prefix of its own.
async fn with_etcd(test: &str) -> (TestController, etcd_client::Client, String) {
    let (mut config, ns, database) = TestController::config(test).await;
    let prefix = format!("/{test}-{}", uuid::Uuid::new_v4().simple());
    config.register_in_etcd = true;
    config.platform_domain = "deis.local".into();
    config.etcd = EtcdConfig {
        endpoints: TestServices::get().etcd_endpoints,
        prefix: prefix.clone(),
        ..Default::default()
    };
    let etcd = etcd_client::Client::connect(&config.etcd.endpoints, None).await.unwrap();
    let ctl = TestController::start_with(config, ns, database).await;
    (ctl, etcd, prefix)
}

#[tokio::test]
async fn custom_domains_never_shadow_app_names_under_the_platform_domain_in_etcd() {
    let (ctl, mut etcd, prefix) = with_etcd("domainsource").await;
    let (bob, _carol) = two_tenants(&ctl, "thief", "victim").await;
    bob.domain_add("thief", "www.thief.example.org").await.unwrap();
    // A name under the new domain, taken before the domain changed (as an older controller
    // let it be), must not be published once that domain is the platform's.
    let db = ctl.db().await;
    db.execute(
        "INSERT INTO domains (app_id, owner, domain) SELECT id, 'bob', 'victim.new.example.com' FROM apps
         WHERE name = 'thief'",
        &[],
    )
    .await
    .unwrap();
    etcd.put(format!("{prefix}/settings/domain"), "new.example.com", None).await.unwrap();

    // The routers' domain is the controller's now: names under it belong to apps.
    eventually("the controller follows etcd's platform domain", Duration::from_secs(10), || {
        let bob = bob.clone();
        async move {
            let error = bob.domain_add("thief", "victim.new.example.com").await.err()?;
            (error.status() == Some(422)).then_some(())
        }
    })
    .await;
    for name in ["new.example.com", "*.new.example.com", "a.b.new.example.com", "victim.deis.local"] {
        let error = bob.domain_add("thief", name).await.unwrap_err();
        assert_eq!(error.status(), Some(422), "{name}: {error}");
        assert!(error.to_string().contains("platform domain"), "{name}: {error}");
    }
    assert!(bob.app("thief").await.unwrap().url.ends_with(".new.example.com"));

    // The router table gets the ordinary custom domain, never the one under the platform domain.
    let get = |key: String| {
        let mut etcd = etcd.clone();
        async move { etcd.get(key, None).await.unwrap().kvs().first().map(|kv| kv.value().to_vec()) }
    };
    eventually("the custom domain is published", Duration::from_secs(10), || {
        get(format!("{prefix}/domains/www.thief.example.org"))
    })
    .await;
    assert_eq!(get(format!("{prefix}/domains/victim.new.example.com")).await, None);
    drop(db);
    ctl.stop().await;
}

#[tokio::test]
async fn the_registration_mode_is_the_platform_setting_in_etcd() {
    let (ctl, mut etcd, prefix) = with_etcd("registrationsource").await;
    let _first = ctl.user("root").await;
    etcd.put(format!("{prefix}/settings/registration"), "disabled", None).await.unwrap();
    let anon = ctl.anonymous();
    let mut n = 0;
    eventually("registration follows etcd's setting", Duration::from_secs(10), || {
        n += 1;
        let anon = anon.clone();
        let username = format!("late{n}");
        async move {
            let req = controller_api::RegisterRequest {
                email: format!("{username}@example.com"),
                username,
                password: "pw".into(),
                first_name: String::new(),
                last_name: String::new(),
                admin_code: None,
            };
            let error = anon.register(&req).await.err()?;
            (error.status() == Some(403)).then_some(())
        }
    })
    .await;
    etcd.delete(format!("{prefix}/settings/registration"), None).await.unwrap();
    eventually("the config's open mode is back", Duration::from_secs(10), || {
        let ctl = &ctl;
        async move {
            let req = controller_api::RegisterRequest {
                username: "back".into(),
                password: "pw".into(),
                email: "back@example.com".into(),
                first_name: String::new(),
                last_name: String::new(),
                admin_code: None,
            };
            ctl.anonymous().register(&req).await.ok().map(drop)
        }
    })
    .await;
    ctl.stop().await;
}

#[tokio::test]
async fn metrics_are_served_only_on_the_operations_listener() {
    let (mut config, ns, database) = TestController::config("opsmetrics").await;
    let ops = format!("127.0.0.1:{}", free_port());
    config.listen_ops = Some(ops.clone());
    let ctl = TestController::start_with(config, ns, database).await;
    let http = reqwest::Client::new();
    let api_metrics = http.get(format!("{}/metrics", ctl.url)).send().await.unwrap();
    assert_eq!(api_metrics.status(), 404, "the API listener serves /metrics");
    // Healthy once the controller has reached the bus, which it does after it starts serving.
    eventually("the API listener's /healthz is 200", Duration::from_secs(10), || {
        let http = http.clone();
        let url = format!("{}/healthz", ctl.url);
        async move { (http.get(url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    let text = eventually("the ops listener answers", Duration::from_secs(10), || {
        let http = http.clone();
        let url = format!("http://{ops}/metrics");
        async move { http.get(url).send().await.ok()?.text().await.ok() }
    })
    .await;
    assert!(text.contains("controller_http_responses"), "{text}");
    assert_eq!(http.get(format!("http://{ops}/healthz")).send().await.unwrap().status(), 200);
    ctl.stop().await;
}
