//! Quotas: what one app or user may use is limited with clear 4xx answers (config sizes, process
//! types, containers), and an event the bus will never take is set aside without holding up
//! anyone else's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::messages::{BuildCompleted, BuildKind, ControllerEvent};
use bus_schema::{AppName, Envelope, Kind, MessageId, ProcessType, Sender, codec};
use controller::config::Quotas;
use controller::testing::TestController;
use controller_api::{BuildCreateRequest, Client, ConfigUpdate};
use futures::StreamExt;
use service_kit::testing::{TestServices, eventually, push_tiny_image};

fn set(pairs: &[(&str, String)]) -> ConfigUpdate {
    ConfigUpdate {
        values: pairs.iter().map(|(k, v)| ((*k).to_owned(), Some(v.clone()))).collect(),
        ..Default::default()
    }
}

/// A controller with small quotas, and an ordinary user.
async fn with_quotas(test: &str, quotas: Quotas) -> (TestController, Client) {
    let (mut config, ns, database) = TestController::config(test).await;
    config.quotas = quotas;
    let ctl = TestController::start_with(config, ns, database).await;
    let _first = ctl.user("root").await;
    let bob = ctl.user("bob").await;
    (ctl, bob)
}

/// Deploys a tiny image to `app` with the given process types.
async fn deploy(user: &Client, app: &str, types: &[&str]) -> Result<(), controller_api::ApiError> {
    let registry = TestServices::get().registry;
    push_tiny_image(&registry, app, "v1").await;
    let procfile = types.iter().map(|t| ((*t).to_owned(), "run".to_owned())).collect();
    user.build_create(app, &BuildCreateRequest { image: format!("{app}:v1"), procfile }).await.map(drop)
}

#[tokio::test]
async fn config_values_and_an_apps_whole_config_are_limited() {
    let quotas = Quotas { config_value_bytes: 1000, config_bytes_per_app: 3000, ..Default::default() };
    let (ctl, bob) = with_quotas("configquota", quotas).await;
    bob.app_create(Some("big")).await.unwrap();
    let error = bob.config_update("big", &set(&[("ONE", "x".repeat(1001))])).await.unwrap_err();
    assert_eq!(error.status(), Some(422), "{error}");
    assert!(error.to_string().contains("1000 bytes per value"), "{error}");
    bob.config_update("big", &set(&[("A", "x".repeat(990)), ("B", "x".repeat(990))])).await.unwrap();
    // Each value fits; together, after the merge, they do not.
    let error =
        bob.config_update("big", &set(&[("C", "x".repeat(990)), ("D", "x".repeat(990))])).await.unwrap_err();
    assert_eq!(error.status(), Some(422), "{error}");
    assert!(error.to_string().contains("3000 bytes of keys and values per app"), "{error}");
    // What was accepted stays, and shrinking is always allowed.
    assert_eq!(bob.config("big").await.unwrap().values.len(), 2);
    let unset = ConfigUpdate { values: BTreeMap::from([("A".to_owned(), None)]), ..Default::default() };
    bob.config_update("big", &unset).await.unwrap();
    ctl.stop().await;
}

#[tokio::test]
async fn process_types_are_limited_through_the_api_and_from_the_builder() {
    let quotas = Quotas { process_types_per_app: 3, ..Default::default() };
    let (ctl, bob) = with_quotas("typesquota", quotas).await;
    bob.app_create(Some("many")).await.unwrap();
    let error = deploy(&bob, "many", &["a", "b", "c", "d"]).await.unwrap_err();
    assert_eq!(error.status(), Some(422), "{error}");
    assert!(error.to_string().contains("limit is 3 process types"), "{error}");
    deploy(&bob, "many", &["a", "b", "c"]).await.unwrap();

    // A push with too many types is a failed build, told in the app's log stream, not an
    // outcome retried forever, and no release.
    let bus = ctl.bus().await;
    let ns = ctl.ns.clone();
    let app = AppName::parse("many").unwrap();
    let mut events = bus.subscribe(&ns.all_controller_events()).await.unwrap();
    let procfile: BTreeMap<ProcessType, String> =
        (0..300).map(|i| (ProcessType::parse(format!("t{i}")).unwrap(), "run".to_owned())).collect();
    let done = BuildCompleted {
        app: app.clone(),
        build_id: uuid::Uuid::now_v7(),
        git_sha: "0123456789abcdef".into(),
        user: "bob".into(),
        kind: BuildKind::Buildpack,
        image: format!("{}/many:git-01234567", TestServices::get().registry),
        procfile,
    };
    bus.publish_durable(&ns.build_completed(&app), &bus.envelope(done)).await.unwrap();
    let line: ControllerEvent = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let next = events.next().await.expect("subscription open").expect("well-formed event");
            if next.envelope.body.action == "build" {
                return next.envelope.body;
            }
        }
    })
    .await
    .expect("the refusal is announced within 10s");
    assert!(
        line.message.contains("failed") && line.message.contains("limit is 3 process types"),
        "{}",
        line.message
    );
    assert_eq!(bob.releases("many").await.unwrap().len(), 2, "the refused build was released");
    ctl.stop().await;
}

#[tokio::test]
async fn containers_are_limited_per_app_and_per_user() {
    let quotas = Quotas { containers_per_app: 4, containers_per_user: 6, ..Default::default() };
    let (ctl, bob) = with_quotas("containerquota", quotas).await;
    for app in ["one", "two"] {
        bob.app_create(Some(app)).await.unwrap();
        deploy(&bob, app, &["web", "worker"]).await.unwrap();
    }
    let scale = |pairs: &[(&str, u32)]| -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    let error = bob.scale("one", &scale(&[("web", 3), ("worker", 2)])).await.unwrap_err();
    assert_eq!(error.status(), Some(422), "{error}");
    assert!(error.to_string().contains("limit is 4 containers per app"), "{error}");
    bob.scale("one", &scale(&[("web", 2), ("worker", 2)])).await.unwrap();
    bob.scale("two", &scale(&[("web", 2)])).await.unwrap();
    // 4 + 3 is over the user's 6, though each app is within its 4.
    let error = bob.scale("two", &scale(&[("web", 3)])).await.unwrap_err();
    assert_eq!(error.status(), Some(422), "{error}");
    assert!(error.to_string().contains("limit is 6 containers per user"), "{error}");
    // Scaling down is always allowed.
    bob.scale("one", &scale(&[("worker", 0)])).await.unwrap();
    bob.scale("two", &scale(&[("web", 3)])).await.unwrap();
    ctl.stop().await;
}

#[tokio::test]
async fn an_event_the_bus_cannot_take_is_set_aside_and_others_go_on() {
    let (ctl, bob) = with_quotas("setaside", Quotas::default()).await;
    bob.app_create(Some("huge")).await.unwrap();
    bob.app_create(Some("small")).await.unwrap();
    let bus = ctl.bus().await;
    let mut events = bus.subscribe(&ctl.ns.all_controller_events()).await.unwrap();
    let db = ctl.db().await;
    // An event over the bus's payload limit (1 MB on the test server), as an earlier version
    // without quotas could have written, waits first in the outbox.
    let id = MessageId::new();
    let body = ControllerEvent {
        app: AppName::parse("huge").unwrap(),
        actor: "bob".into(),
        action: "config".into(),
        message: "x".repeat(2 * 1024 * 1024),
    };
    let sender = Sender { component: bus_schema::Component::Controller, instance: "old".into() };
    let payload = codec::encode(&Envelope::new(sender, body).with_id(id)).unwrap();
    db.execute(
        "INSERT INTO outbox (id, kind, payload) VALUES ($1, $2, $3)",
        &[&id.0, &(Kind::ControllerEvent as i16), &payload],
    )
    .await
    .unwrap();
    // Another app's change after it still goes out.
    bob.config_update("small", &set(&[("FOO", "bar".into())])).await.unwrap();
    let mut notice = None;
    let mut small_released = false;
    tokio::time::timeout(Duration::from_secs(15), async {
        while notice.is_none() || !small_released {
            let next = events.next().await.expect("subscription open").expect("well-formed event");
            let e = next.envelope.body;
            if e.app.as_str() == "small" && e.action == "release" {
                small_released = true;
            }
            if e.app.as_str() == "huge" && e.action == "error" {
                notice = Some(e.message);
            }
        }
    })
    .await
    .expect("the other app's event and the notice are published");
    let notice = notice.unwrap();
    assert!(notice.contains("set aside") && notice.contains("bytes"), "{notice}");
    let row = db.query_one("SELECT set_aside FROM outbox WHERE id = $1", &[&id.0]).await.unwrap();
    let reason: Option<String> = row.get("set_aside");
    assert!(reason.is_some(), "the row is not marked as set aside");
    eventually("nothing is left pending", Duration::from_secs(10), || async {
        let row = db.query_one("SELECT count(*) AS n FROM outbox WHERE published IS NULL", &[]).await.ok()?;
        (row.get::<_, i64>("n") == 0).then_some(())
    })
    .await;
    ctl.stop().await;
}
