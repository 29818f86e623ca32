//! Service tests of the controller's API against real Postgres and NATS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use controller::testing::TestController;
use controller_api::{Client, ConfigUpdate, KeyCreateRequest};

/// A request to add a certificate from its PEM files, named after it and serving no domain yet.
fn pem_request(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> controller_api::CertCreateRequest {
    controller_api::CertCreateRequest {
        name: None,
        certificate: cert.pem(),
        key: key.serialize_pem(),
        common_name: None,
    }
}

/// A controller and two users: alice, made an admin by the operator's admin code, and bob.
async fn alice_and_bob(test: &str) -> (TestController, Client, Client) {
    let ctl = TestController::start(test).await;
    let alice = ctl.admin("alice").await;
    let bob = ctl.user("bob").await;
    (ctl, alice, bob)
}

/// A controller, its admin alice, and an app of hers.
async fn alice_with_app(test: &str, app: &str) -> (TestController, Client) {
    let ctl = TestController::start(test).await;
    let alice = ctl.admin("alice").await;
    alice.app_create(Some(app)).await.unwrap();
    (ctl, alice)
}

fn set(pairs: &[(&str, &str)]) -> ConfigUpdate {
    ConfigUpdate {
        values: pairs.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_admin_code_makes_an_admin_and_apps_are_private_until_shared() {
    let (ctl, alice, bob) = alice_and_bob("perms").await;
    assert!(alice.whoami().await.unwrap().is_superuser, "registered with the admin code");
    assert!(!bob.whoami().await.unwrap().is_superuser);

    // Bob's app; Alice is an admin so make the second non-admin user carol the outsider.
    let carol = ctl.user("carol").await;
    let app = bob.app_create(Some("bobs-app")).await.unwrap();
    assert_eq!(app.owner, "bob");
    assert_eq!(app.url, "bobs-app.deis.local");
    let releases = bob.releases("bobs-app").await.unwrap();
    assert_eq!(releases.len(), 1, "creating an app makes release v1");
    assert_eq!(releases[0].version, 1);

    // Carol can neither read nor change it.
    assert_eq!(carol.app("bobs-app").await.unwrap_err().status(), Some(403));
    assert_eq!(carol.config("bobs-app").await.unwrap_err().status(), Some(403));
    assert_eq!(carol.config_update("bobs-app", &set(&[("X", "1")])).await.unwrap_err().status(), Some(403));
    assert!(carol.apps().await.unwrap().is_empty());
    // Nor can she share it with herself.
    assert_eq!(carol.perm_create("bobs-app", "carol").await.unwrap_err().status(), Some(403));
    // The admin can see everything.
    assert_eq!(alice.apps().await.unwrap().len(), 1);

    bob.perm_create("bobs-app", "carol").await.unwrap();
    assert_eq!(bob.perms("bobs-app").await.unwrap().users, vec!["carol".to_owned()]);
    carol.config_update("bobs-app", &set(&[("X", "1")])).await.unwrap();
    assert_eq!(carol.apps().await.unwrap().len(), 1);
    // Sharing does not make carol an owner: she cannot destroy it or share it further.
    assert_eq!(carol.app_destroy("bobs-app").await.unwrap_err().status(), Some(403));
    assert_eq!(carol.perm_create("bobs-app", "alice").await.unwrap_err().status(), Some(403));

    bob.perm_delete("bobs-app", "carol").await.unwrap();
    assert_eq!(carol.app("bobs-app").await.unwrap_err().status(), Some(403));

    // Users are for admins only.
    assert_eq!(bob.users().await.unwrap_err().status(), Some(403));
    assert_eq!(alice.users().await.unwrap().len(), 3);
    ctl.stop().await;
}

#[tokio::test]
async fn concurrent_config_sets_give_gapless_unique_releases() {
    let (ctl, alice) = alice_with_app("concurrent", "busy").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = alice.clone();
        tasks.push(tokio::spawn(async move {
            client.config_update("busy", &set(&[(&format!("KEY_{i}"), "v")])).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let releases = alice.releases("busy").await.unwrap();
    let versions: Vec<u32> = releases.iter().map(|r| r.version).collect();
    let unique: BTreeSet<u32> = versions.iter().copied().collect();
    assert_eq!(versions.len(), 21, "{versions:?}");
    assert_eq!(unique, (1..=21).collect(), "versions must be v1..v21 with no gap or duplicate: {versions:?}");
    // Every change is in the final config: none was lost to a race.
    assert_eq!(alice.config("busy").await.unwrap().values.len(), 20);
    ctl.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_detail_never_a_5xx() {
    let (ctl, alice) = alice_with_app("badinput", "good").await;
    let token = alice.token().unwrap().to_owned();
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: Vec<u8>| {
        http.request(method, format!("{}{path}", ctl.url))
            .header("Authorization", format!("token {token}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(reqwest::Method, &str, Vec<u8>, u16)> = vec![
        (reqwest::Method::POST, "/v1/apps/", b"{not json".to_vec(), 400),
        (reqwest::Method::POST, "/v1/apps/", br#"{"id": "ok-name", "extra": 1}"#.to_vec(), 400),
        (reqwest::Method::POST, "/v1/apps/", br#"{"id": "Bad_Name"}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/", br#"{"id": "deis"}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/", br#"{"id": 12}"#.to_vec(), 400),
        (
            reqwest::Method::POST,
            "/v1/auth/login/",
            br#"{"username": "\u0000", "password": "x"}"#.to_vec(),
            422,
        ),
        (reqwest::Method::DELETE, "/v1/keys/a%00b", vec![], 422),
        (reqwest::Method::POST, "/v1/apps/", br#"{"id": "good"}"#.to_vec(), 409),
        (reqwest::Method::POST, "/v1/apps/good/config/", br#"{"values": {"1BAD": "x"}}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/good/config/", br#"{"values": {"A": 5}}"#.to_vec(), 400),
        (reqwest::Method::POST, "/v1/apps/good/config/", br#"{"memory": {"web": "lots"}}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/good/config/", br#"{}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/good/config/", vec![b'{'; 2 * 1024 * 1024], 413),
        (reqwest::Method::POST, "/v1/apps/good/scale/", br#"{"web": -1}"#.to_vec(), 400),
        (reqwest::Method::POST, "/v1/apps/good/scale/", br#"{"web": 1}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/good/domains/", br#"{"domain": "not a domain"}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/good/domains/", br#"{"domain": "x.deis.local"}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/keys/", br#"{"id": "k", "public": "ssh-rsa garbage"}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/certs/", br#"{"certificate": "nope", "key": "nope"}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/good/releases/rollback/", br#"{"version": 5}"#.to_vec(), 422),
        (reqwest::Method::GET, "/v1/apps/good/releases/vX/", vec![], 404),
        (reqwest::Method::GET, "/v1/apps/missing/", vec![], 404),
        (reqwest::Method::GET, "/v1/apps/?limit=0", vec![], 400),
        (reqwest::Method::GET, "/v1/nope", vec![], 404),
        (reqwest::Method::PUT, "/v1/apps/", vec![], 405),
        (reqwest::Method::POST, "/v1/apps/good/builds/", br#"{"image": "bad image"}"#.to_vec(), 422),
        (reqwest::Method::POST, "/v1/apps/good/builds/", br#"{"image": "good:missing"}"#.to_vec(), 422),
    ];
    for (method, path, body, want) in cases {
        let resp = send(method.clone(), path, body).await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, want, "{method} {path}: {text}");
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{method} {path}: no detail in {text}"
        );
    }
    // No token, and a wrong one.
    let resp = http.get(format!("{}/v1/apps/", ctl.url)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp =
        http.get(format!("{}/v1/apps/", ctl.url)).header("Authorization", "token nope").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // What was accepted before is intact.
    assert_eq!(alice.releases("good").await.unwrap().len(), 1);
    ctl.stop().await;
}

#[tokio::test]
async fn keys_are_checked_and_fingerprints_unique_across_users() {
    let (ctl, alice, bob) = alice_and_bob("keys").await;
    let public =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";
    let key =
        alice.key_add(&KeyCreateRequest { id: "alice@laptop".into(), public: public.into() }).await.unwrap();
    assert!(key.fingerprint.starts_with("SHA256:"));
    let err = bob.key_add(&KeyCreateRequest { id: "mine".into(), public: public.into() }).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert_eq!(alice.keys().await.unwrap().len(), 1);
    assert!(bob.keys().await.unwrap().is_empty());
    alice.key_remove("alice@laptop").await.unwrap();
    assert!(alice.keys().await.unwrap().is_empty());
    ctl.stop().await;
}

#[tokio::test]
async fn domains_are_unique_and_certs_are_matched_to_them() {
    let (ctl, alice, bob) = alice_and_bob("domains").await;
    alice.app_create(Some("shop")).await.unwrap();
    bob.app_create(Some("blog")).await.unwrap();
    alice.domain_add("shop", "www.Example.com").await.unwrap();
    let err = bob.domain_add("blog", "www.example.com").await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");

    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["www.example.com".to_owned(), "*.example.com".to_owned()])
            .unwrap();
    let added = alice.cert_add(&pem_request(&cert, &key_pair)).await.unwrap();
    assert!(added.san.contains(&"*.example.com".to_owned()), "{added:?}");
    let attached = alice.cert_attach(&added.name, "www.example.com").await.unwrap();
    assert_eq!(attached.domains, vec!["www.example.com".to_owned()]);
    // Deis v1's `certs:add --common-name`: named after the domain and serving it at once.
    alice.domain_add("shop", "api.example.com").await.unwrap();
    let by_name = controller_api::CertCreateRequest {
        common_name: Some("api.example.com".into()),
        ..pem_request(&cert, &key_pair)
    };
    let v1 = alice.cert_add(&by_name).await.unwrap();
    assert_eq!(
        (v1.name.as_str(), v1.domains.clone()),
        ("api.example.com", vec!["api.example.com".to_owned()])
    );
    // For a domain nobody added, the answer says why it serves nothing yet.
    let lonely = controller_api::CertCreateRequest {
        name: Some("lonely".into()),
        common_name: Some("nowhere.example.com".into()),
        ..pem_request(&cert, &key_pair)
    };
    let err = alice.cert_add(&lonely).await.unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert!(err.to_string().contains("cannot serve nowhere.example.com"), "{err}");
    // Nothing was kept: once the domain exists, the same command works (it was a 409 before).
    alice.domain_add("shop", "nowhere.example.com").await.unwrap();
    let later = alice.cert_add(&lonely).await.unwrap();
    assert_eq!(later.domains, vec!["nowhere.example.com".to_owned()]);

    // Deis v1's `certs:add cert key` (no --common-name) for a domain already added: the
    // certificate serves its common name at once, and `certs:remove <common name>` finds it.
    alice.domain_add("shop", "cn.example.com").await.unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["cn.example.com".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "CN.example.com");
    let by_cn = params.self_signed(&key).unwrap();
    let mine = controller_api::CertCreateRequest { name: Some("mine".into()), ..pem_request(&by_cn, &key) };
    let added = alice.cert_add(&mine).await.unwrap();
    assert_eq!(added.domains, vec!["cn.example.com".to_owned()], "{added:?}");
    alice.cert_remove("CN.example.com").await.unwrap();
    assert_eq!(alice.cert_remove("mine").await.unwrap_err().status(), Some(404));

    // A key from another certificate is refused.
    let other = rcgen::generate_simple_self_signed(vec!["other.org".to_owned()]).unwrap();
    let err = alice
        .cert_add(&controller_api::CertCreateRequest {
            name: Some("mismatch".into()),
            ..pem_request(&cert, &other.key_pair)
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert!(err.to_string().contains("does not match"), "{err}");
    ctl.stop().await;
}

#[tokio::test]
async fn rollback_restores_an_earlier_config_in_a_new_release() {
    let (ctl, alice) = alice_with_app("rollback", "roller").await;
    alice.config_update("roller", &set(&[("ANSWER", "one")])).await.unwrap();
    alice.config_update("roller", &set(&[("ANSWER", "two")])).await.unwrap();
    let r = alice.rollback("roller", Some(2)).await.unwrap();
    assert_eq!(r.version, 4);
    assert!(r.summary.contains("rolled back to v2"), "{}", r.summary);
    assert_eq!(alice.config("roller").await.unwrap().values.get("ANSWER").map(String::as_str), Some("one"));
    // Default: the one before the current.
    let r = alice.rollback("roller", None).await.unwrap();
    assert_eq!(r.version, 5);
    assert_eq!(alice.config("roller").await.unwrap().values.get("ANSWER").map(String::as_str), Some("two"));
    assert_eq!(
        alice.release("roller", 5).await.unwrap().config,
        alice.release("roller", 3).await.unwrap().config
    );
    ctl.stop().await;
}

#[tokio::test]
async fn unsetting_and_limits_and_tags_make_releases_with_summaries() {
    let (ctl, alice) = alice_with_app("summaries", "sums").await;
    alice.config_update("sums", &set(&[("FOO", "1"), ("BAR", "2")])).await.unwrap();
    let mut update = ConfigUpdate::default();
    update.values.insert("FOO".into(), None);
    update.memory.insert("web".into(), Some("512M".into()));
    update.tags.insert("environ".into(), Some("prod".into()));
    let config = alice.config_update("sums", &update).await.unwrap();
    assert_eq!(config.values, BTreeMap::from([("BAR".to_owned(), "2".to_owned())]));
    assert_eq!(config.memory.get("web").map(String::as_str), Some("512M"));
    let releases = alice.releases("sums").await.unwrap();
    assert_eq!(releases[0].summary, "alice unset FOO; changed limits web=512M; changed tags environ=prod");
    assert_eq!(releases[1].summary, "alice set BAR, FOO");
    // The same change again, or unsetting a limit that is not set, is done already: it answers
    // the config as it is and makes no release (nothing restarts).
    let same = alice.config_update("sums", &set(&[("BAR", "2")])).await.unwrap();
    assert_eq!(same.values, BTreeMap::from([("BAR".to_owned(), "2".to_owned())]));
    let mut unset_unset = ConfigUpdate::default();
    unset_unset.cpu.insert("web".into(), None);
    alice.config_update("sums", &unset_unset).await.unwrap();
    assert_eq!(alice.releases("sums").await.unwrap().len(), 3);
    tokio::time::sleep(Duration::from_millis(1)).await;
    ctl.stop().await;
}

#[tokio::test]
async fn process_status_needs_a_scheduler_and_says_so() {
    let (ctl, alice) = alice_with_app("nosched", "lonely").await;
    let err = alice.containers("lonely").await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(err.to_string().contains("scheduler"), "{err}");
    assert_eq!(alice.deploy_status("lonely").await.unwrap_err().status(), Some(503));
    ctl.stop().await;
}

#[tokio::test]
async fn apps_and_custom_domains_are_published_to_etcd_for_the_routers() {
    let (mut config, ns, database) = TestController::config("domainsync").await;
    let services = service_kit::testing::TestServices::get();
    config.register_in_etcd = true;
    config.etcd = service_kit::EtcdConfig {
        endpoints: services.etcd_endpoints.clone(),
        prefix: format!("/{}", ns.root()),
        ..Default::default()
    };
    let ctl = TestController::start_with(config, ns.clone(), database).await;
    let alice = ctl.user("alice").await;
    alice.app_create(Some("site")).await.unwrap();
    let mut etcd = etcd_client::Client::connect(services.etcd_endpoints, None).await.unwrap();
    let keys = bus_schema::discovery::Keys::new(&format!("/{}", ns.root()));
    // A stray key (etcd holding something Postgres does not) is removed by the sync.
    etcd.put(keys.domain("stale.example.com"), "ghost", None).await.unwrap();

    alice.domain_add("site", "www.site.example").await.unwrap();
    let value_of = |key: String| {
        let mut etcd = etcd.clone();
        async move { etcd.get(key, None).await.ok()?.kvs().first().map(|kv| kv.value().to_vec()) }
    };
    // The app itself is listed, so routers answer 404 only for names that are no app.
    let site = bus_schema::AppName::parse("site").unwrap();
    service_kit::testing::eventually("the app reaches etcd", Duration::from_secs(5), || {
        value_of(keys.app(&site))
    })
    .await;
    service_kit::testing::eventually("the domain reaches etcd", Duration::from_secs(5), || {
        let v = value_of(keys.domain("www.site.example"));
        async move { v.await.filter(|v| v == b"site") }
    })
    .await;
    service_kit::testing::eventually("the stray key is gone", Duration::from_secs(5), || {
        let v = value_of(keys.domain("stale.example.com"));
        async move { v.await.is_none().then_some(()) }
    })
    .await;
    // A certificate attached to the domain is published for the routers' SNI.
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["www.site.example".to_owned()]).unwrap();
    let added = alice.cert_add(&pem_request(&cert, &key_pair)).await.unwrap();
    alice.cert_attach(&added.name, "www.site.example").await.unwrap();
    let record =
        service_kit::testing::eventually("the certificate reaches etcd", Duration::from_secs(5), || {
            value_of(keys.cert("www.site.example"))
        })
        .await;
    let record: bus_schema::discovery::CertRecord = serde_json::from_slice(&record).unwrap();
    assert_eq!(record.certificate, cert.pem());
    alice.app_destroy("site").await.unwrap();
    service_kit::testing::eventually(
        "a destroyed app, its domains and certificates leave etcd",
        Duration::from_secs(5),
        || {
            let a = value_of(keys.app(&site));
            let d = value_of(keys.domain("www.site.example"));
            let c = value_of(keys.cert("www.site.example"));
            async move { (a.await.is_none() && d.await.is_none() && c.await.is_none()).then_some(()) }
        },
    )
    .await;
    ctl.stop().await;
}

/// What the real Deis v1.13 client relies on before and around every command (read from its
/// source, client/controller/client/http.go and the commands): `GET /v1/` answers 401 without a
/// token, every answer carries `DEIS_API_VERSION: 1.7`, `auth:cancel` is a DELETE, and lists take
/// `page_size`.
#[tokio::test]
async fn deis_v1_clients_find_a_controller_of_their_api_version() {
    let ctl = TestController::start("deisv1").await;
    let alice = ctl.user("alice").await;
    let http = reqwest::Client::new();
    let root = http.get(format!("{}/v1/", ctl.url)).send().await.unwrap();
    assert_eq!(root.status(), 401, "the client's connection check wants 401");
    assert_eq!(root.headers()["DEIS_API_VERSION"], "1.7");
    assert_eq!(root.headers()["X_DEIS_API_VERSION"], "1.7");
    // As a v1 client sends: a user's token, and none of this project's client's headers.
    let send_as = |method: reqwest::Method, path: &str, token: &str| {
        http.request(method, format!("{}{path}", ctl.url))
            .header("Authorization", format!("token {token}"))
            .send()
    };
    let token = alice.token().unwrap().to_owned();
    let authed = send_as(reqwest::Method::GET, "/v1/", &token).await.unwrap();
    assert_eq!(authed.status(), 200);
    let missing = http.get(format!("{}/v1/nothing-here/", ctl.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["DEIS_API_VERSION"], "1.7", "on errors too");

    for name in ["pa", "pb", "pc"] {
        alice.app_create(Some(name)).await.unwrap();
    }
    let page: serde_json::Value =
        send_as(reqwest::Method::GET, "/v1/apps/?page_size=2", &token).await.unwrap().json().await.unwrap();
    assert_eq!(page["count"], 3);
    assert_eq!(page["results"].as_array().unwrap().len(), 2, "{page}");

    let bob = ctl.user("bob").await;
    let bob_token = bob.token().unwrap().to_owned();
    let cancel = send_as(reqwest::Method::DELETE, "/v1/auth/cancel/", &bob_token).await.unwrap();
    assert_eq!(cancel.status(), 204);
    assert_eq!(bob.whoami().await.unwrap_err().status(), Some(401), "the account is gone");

    // A `Prefer` header that is not text is ignored (it chooses only when a change answers),
    // never a reason to refuse a request.
    let odd = reqwest::header::HeaderValue::from_bytes(b"respond-async\xff").unwrap();
    let resp = http.get(format!("{}/healthz", ctl.url)).header("prefer", odd).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    ctl.stop().await;
}
