//! The controller on the bus: the outbox survives a crash between commit and publish, build
//! outcomes become releases exactly once, scale/config/destroy reach the desired-state stream, and
//! a controller started before NATS and etcd publishes what it took once they come.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bus_schema::messages::{BuildCompleted, BuildFailed, BuildKind, ControllerEvent};
use bus_schema::streams::{ConsumerId, ensure_consumer};
use bus_schema::{AppName, DesiredChange, ProcessType};
use controller::testing::TestController;
use controller_api::{BuildCreateRequest, Client, ConfigUpdate};
use futures::StreamExt;
use service_kit::testing::{LateService, TestServices, eventually};

/// A controller, its admin alice, and an app of hers.
async fn alice_with_app(test: &str, app: &str) -> (TestController, Client) {
    let ctl = TestController::start(test).await;
    let alice = ctl.admin("alice").await;
    alice.app_create(Some(app)).await.unwrap();
    (ctl, alice)
}

fn set(k: &str, v: &str) -> ConfigUpdate {
    ConfigUpdate { values: BTreeMap::from([(k.to_owned(), Some(v.to_owned()))]), ..Default::default() }
}

/// How many outbox rows wait to be published, or why the database could not say.
async fn unpublished(db: &tokio_postgres::Client) -> Result<i64, tokio_postgres::Error> {
    let row = db.query_one("SELECT count(*) AS count FROM outbox WHERE published IS NULL", &[]).await?;
    Ok(row.try_get("count").unwrap())
}

/// Waits until the relay has published every outbox row.
async fn outbox_empties(db: &tokio_postgres::Client, what: &str) {
    eventually(what, Duration::from_secs(10), || async { (unpublished(db).await.ok()? == 0).then_some(()) })
        .await;
}

/// A build of an image already in the registry, with no Procfile.
fn image_build(image: String) -> BuildCreateRequest {
    BuildCreateRequest { image, procfile: BTreeMap::new() }
}

/// The scheduler's durable consumer of the desired-state stream, as a scheduler declares it.
async fn scheduler_consumer(
    bus: &bus_schema::Bus,
    ns: &bus_schema::Namespace,
) -> async_nats::jetstream::consumer::PullConsumer {
    let options = bus_schema::streams::StreamOptions::for_tests();
    ensure_consumer(bus.jetstream(), ns, &ns.consumer(ConsumerId::Scheduler), &options).await.unwrap()
}

/// Everything the desired-state consumer has, acked.
async fn drain(consumer: &async_nats::jetstream::consumer::PullConsumer) -> Vec<DesiredChange> {
    let mut out = Vec::new();
    let mut batch =
        consumer.fetch().max_messages(100).expires(Duration::from_millis(800)).messages().await.unwrap();
    while let Some(msg) = batch.next().await {
        let msg = msg.unwrap();
        out.push(DesiredChange::decode(&msg.payload).unwrap());
        msg.ack().await.unwrap();
    }
    out
}

fn releases_of(changes: &[DesiredChange]) -> Vec<u32> {
    changes
        .iter()
        .filter_map(|c| match c {
            DesiredChange::Release(e) => Some(e.body.release.version),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn events_committed_before_a_crash_are_published_after_restart_exactly_once() {
    let (mut config, ns, database) = TestController::config("outbox").await;
    // Instance A commits changes but dies before publishing anything.
    config.relay_enabled = false;
    let a = TestController::start_with(config.clone(), ns.clone(), database.clone()).await;
    let alice = a.user("alice").await;
    alice.app_create(Some("durable")).await.unwrap();
    alice.config_update("durable", &set("A", "1")).await.unwrap();
    let db = a.db().await;
    a.stop().await;
    let pending = unpublished(&db).await.unwrap();
    assert!(pending >= 2, "the changes' events wait in the outbox ({pending})");

    let bus = TestController::start_with(config.clone(), ns.clone(), database.clone()).await;
    let scheduler = bus.bus().await;
    let consumer = scheduler_consumer(&scheduler, &ns).await;
    bus.stop().await;

    // Instance B starts with the relay on and publishes what A left.
    config.relay_enabled = true;
    let b = TestController::start_with(config.clone(), ns.clone(), database.clone()).await;
    outbox_empties(&db, "the outbox empties").await;
    let first = drain(&consumer).await;
    assert_eq!(releases_of(&first), vec![1, 2]);

    // A relay that dies after publishing but before marking republishes the same rows: the
    // copies carry the same message ids, and JetStream stores none of them again.
    db.execute("UPDATE outbox SET published = NULL", &[]).await.unwrap();
    outbox_empties(&db, "the outbox is republished").await;
    let again = drain(&consumer).await;
    assert!(again.is_empty(), "duplicates reached the consumer: {again:?}");
    b.stop().await;
}

#[tokio::test]
async fn a_completed_build_becomes_one_release_and_a_formation() {
    let (ctl, alice) = alice_with_app("buildevents", "pushed").await;
    let bus = ctl.bus().await;
    let ns = ctl.ns.clone();
    let app = AppName::parse("pushed").unwrap();
    let mut events = bus.subscribe(&ns.all_controller_events()).await.unwrap();
    let desired = scheduler_consumer(&bus, &ns).await;
    drain(&desired).await;

    let build_id = uuid::Uuid::now_v7();
    let done = BuildCompleted {
        app: app.clone(),
        build_id,
        git_sha: "0123456789abcdef".into(),
        user: "alice".into(),
        kind: BuildKind::Buildpack,
        image: format!("{}/pushed:git-01234567", TestServices::get().registry),
        procfile: BTreeMap::from([
            (ProcessType::web(), "python3 app.py".into()),
            (ProcessType::parse("worker").unwrap(), "python3 w.py".into()),
        ]),
    };
    bus.publish_durable(&ns.build_completed(&app), &bus.envelope(done.clone())).await.unwrap();
    let release = eventually("the build is released", Duration::from_secs(10), || {
        let alice = alice.clone();
        async move { alice.releases("pushed").await.ok()?.into_iter().find(|r| r.version == 2) }
    })
    .await;
    assert_eq!(release.image, done.image);
    assert!(release.summary.contains("alice deployed 01234567"), "{}", release.summary);
    let app_info = alice.app("pushed").await.unwrap();
    assert_eq!(app_info.structure, BTreeMap::from([("web".to_owned(), 1), ("worker".to_owned(), 0)]));

    // The same build delivered again (a new message id, as after a builder retry) changes nothing.
    bus.publish_durable(&ns.build_completed(&app), &bus.envelope(done.clone())).await.unwrap();
    // A failed build becomes a line in the app's log stream.
    let failed = BuildFailed {
        app: app.clone(),
        build_id: uuid::Uuid::now_v7(),
        git_sha: "feedface".into(),
        user: "alice".into(),
        reason: "bin/compile exited 1".into(),
    };
    bus.publish_durable(&ns.build_failed(&app), &bus.envelope(failed)).await.unwrap();
    let line: ControllerEvent = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let next = events.next().await.expect("subscription open").expect("well-formed event");
            if next.envelope.body.action == "build" {
                return next.envelope.body;
            }
        }
    })
    .await
    .expect("the failure is announced within 10s");
    assert!(line.message.contains("bin/compile exited 1"), "{}", line.message);
    // By now the duplicate has been handled too (the stream is consumed in order).
    assert_eq!(alice.releases("pushed").await.unwrap().len(), 2, "a redelivered build made a second release");

    let changes = drain(&desired).await;
    assert_eq!(releases_of(&changes), vec![2]);
    let spec = changes
        .iter()
        .find_map(|c| match c {
            DesiredChange::Release(e) => Some(e.body.release.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(spec.processes.get(&ProcessType::web()).map(String::as_str), Some("python3 app.py"));
    let formation = changes
        .iter()
        .find_map(|c| match c {
            DesiredChange::Formation(e) => Some(e.body.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(formation.formation.get(&ProcessType::web()), Some(&1));
    // The formation comes before the release it is for: a scheduler never sees a first build's
    // release with nothing to run (it would call it deployed before anything started).
    let position = |release: bool| {
        changes.iter().position(|c| matches!(c, DesiredChange::Release(_)) == release).unwrap()
    };
    assert!(position(false) < position(true), "{changes:?}");

    // Scaling reaches the stream with a higher generation; destroying does too.
    alice.scale("pushed", &BTreeMap::from([("web".to_owned(), 3)])).await.unwrap();
    let err = alice.scale("pushed", &BTreeMap::from([("nope".to_owned(), 1)])).await.unwrap_err();
    assert_eq!(err.status(), Some(422));
    alice.app_destroy("pushed").await.unwrap();
    let changes = eventually("scale and destroy are published", Duration::from_secs(10), || {
        let desired = &desired;
        async move {
            let c = drain(desired).await;
            (!c.is_empty()).then_some(c)
        }
    })
    .await;
    let mut changes = changes;
    if changes.len() < 2 {
        changes.extend(drain(&desired).await);
    }
    match (&changes[0], &changes[1]) {
        (DesiredChange::Formation(f), DesiredChange::Destroyed(d)) => {
            assert_eq!(f.body.formation.get(&ProcessType::web()), Some(&3));
            assert!(f.body.generation > formation.generation);
            assert_eq!(d.body.app, app);
        }
        other => panic!("unexpected changes: {other:?}"),
    }
    ctl.stop().await;
}

#[tokio::test]
async fn builds_create_deploys_an_image_that_is_in_the_registry() {
    let (ctl, alice) = alice_with_app("imagebuild", "imaged").await;
    let registry = TestServices::get().registry;
    let repo = format!("imaged-{}", uuid::Uuid::new_v4().simple());
    service_kit::testing::push_tiny_image(&registry, &repo, "v1").await;

    let build = alice.build_create("imaged", &image_build(format!("{repo}:v1"))).await.unwrap();
    assert_eq!(build.image, format!("{registry}/{repo}:v1"));
    assert_eq!(build.kind, "image");
    let releases = alice.releases("imaged").await.unwrap();
    assert_eq!(releases[0].version, 2);
    assert_eq!(releases[0].build, Some(build.uuid));
    // An image with no Procfile runs its own command as `cmd`, one container to start with.
    assert_eq!(alice.app("imaged").await.unwrap().structure, BTreeMap::from([("cmd".to_owned(), 1)]));
    alice.scale("imaged", &BTreeMap::from([("cmd".to_owned(), 2)])).await.unwrap();
    // v1 has no build: the running app cannot be rolled back to it, and no release is made.
    let refused = alice.rollback("imaged", Some(1)).await.unwrap_err();
    assert_eq!(refused.status(), Some(422));
    assert!(refused.to_string().contains("no build associated with release v1"), "{refused}");
    assert_eq!(alice.releases("imaged").await.unwrap()[0].version, 2);

    let missing = alice.build_create("imaged", &image_build(format!("{repo}:nope"))).await.unwrap_err();
    assert_eq!(missing.status(), Some(422));
    assert!(missing.to_string().contains("not in the platform registry"), "{missing}");
    let elsewhere = alice
        .build_create("imaged", &image_build("docker.io/library/nginx:latest".into()))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.status(), Some(422));
    assert_eq!(alice.builds("imaged").await.unwrap().len(), 1);
    ctl.stop().await;
}

#[tokio::test]
async fn the_relay_declares_its_streams_when_no_consumer_has_yet() {
    let (ctl, _alice) = alice_with_app("nostream", "early").await;
    let db = ctl.db().await;
    outbox_empties(&db, "the outbox empties with no consumer around").await;
    // A scheduler arriving later finds everything.
    let bus = ctl.bus().await;
    let consumer = scheduler_consumer(&bus, &ctl.ns).await;
    assert_eq!(releases_of(&drain(&consumer).await), vec![1]);
    ctl.stop().await;
}

#[tokio::test]
async fn the_controller_answers_desired_state_requests() {
    let (ctl, alice) = alice_with_app("snapshot", "one").await;
    alice.app_create(Some("two")).await.unwrap();
    alice.config_update("two", &set("X", "1")).await.unwrap();
    let bus = ctl.bus().await;
    let reply = eventually("the controller answers", Duration::from_secs(10), || {
        let bus = bus.clone();
        let ns = ctl.ns.clone();
        async move {
            bus.request(
                &ns.desired_state(),
                &bus.envelope(bus_schema::messages::DesiredStateRequest {}),
                Duration::from_secs(2),
            )
            .await
            .ok()
        }
    })
    .await;
    let apps: Vec<(String, u32)> =
        reply.body.apps.iter().map(|a| (a.release.app.to_string(), a.release.version)).collect();
    assert_eq!(apps, vec![("one".to_owned(), 1), ("two".to_owned(), 2)]);
    assert_eq!(reply.body.apps[1].release.config.get("X").map(String::as_str), Some("1"));
    ctl.stop().await;
}

/// Pages cut by size: with a budget smaller than one app, every page holds exactly one, in name
/// order, and following `next` from the first page reaches every app once.
#[tokio::test]
async fn the_desired_state_comes_in_pages_that_cover_every_app_once() {
    let (mut config, ns, database) = TestController::config("pages").await;
    config.snapshot_page_bytes = 1;
    let ctl = TestController::start_with(config, ns, database).await;
    let alice = ctl.admin("alice").await;
    for app in ["pc", "pa", "pb"] {
        alice.app_create(Some(app)).await.unwrap();
    }
    // A large config (near the per-app quota) still gets through, on a page of its own.
    alice.config_update("pb", &set("BIG", &"x".repeat(30 * 1024))).await.unwrap();
    let bus = ctl.bus().await;
    let ask = |after: Option<bus_schema::AppName>| {
        let (bus, ns) = (bus.clone(), ctl.ns.clone());
        async move {
            let request = bus.envelope(bus_schema::messages::DesiredStatePageRequest { after });
            bus.request(&ns.desired_state_page(), &request, Duration::from_secs(2)).await.ok()
        }
    };
    let first = eventually("the controller answers a page", Duration::from_secs(10), || ask(None)).await;
    let mut seen = Vec::new();
    let mut page = first;
    loop {
        assert_eq!(page.body.apps.len(), 1, "one app per page under a 1-byte budget");
        seen.extend(page.body.apps.iter().map(|a| a.release.app.to_string()));
        match page.body.next.clone() {
            Some(next) => page = ask(Some(next)).await.expect("the next page"),
            None => break,
        }
    }
    assert_eq!(seen, ["pa", "pb", "pc"]);
    ctl.stop().await;
}

/// Started before NATS and etcd (Postgres up): the API takes writes at once; their events wait in
/// the outbox and are published once NATS comes, and the app list reaches etcd once it comes.
#[tokio::test]
async fn a_controller_started_before_nats_and_etcd_takes_writes_and_publishes_them_once_they_come() {
    let services = TestServices::get();
    let nats = LateService::new(services.nats_url.trim_start_matches("nats://")).await;
    let etcd = LateService::new(services.etcd_endpoints[0].trim_start_matches("http://")).await;
    let (mut config, ns, database) = TestController::config("ctllate").await;
    config.nats.url = nats.url("nats");
    config.register_in_etcd = true;
    config.etcd = service_kit::EtcdConfig {
        endpoints: vec![etcd.url("http")],
        prefix: format!("/{}", ns.root()),
        ..Default::default()
    };
    let ctl = TestController::start_with(config, ns.clone(), database).await;
    let alice = ctl.user("alice").await;
    alice.app_create(Some("early")).await.unwrap();
    alice.config_update("early", &set("A", "1")).await.unwrap();
    let db = ctl.db().await;
    let pending = unpublished(&db).await.unwrap();
    assert!(pending >= 2, "the writes' events wait in the outbox ({pending})");

    nats.open();
    etcd.open();
    outbox_empties(&db, "the outbox is published once NATS comes").await;
    let mut client = etcd_client::Client::connect(services.etcd_endpoints, None).await.unwrap();
    let key =
        bus_schema::discovery::Keys::new(&format!("/{}", ns.root())).app(&AppName::parse("early").unwrap());
    eventually("the app list reaches etcd once it comes", Duration::from_secs(20), || {
        let mut client = client.clone();
        let key = key.clone();
        async move { (client.get(key, None).await.ok()?.count() == 1).then_some(()) }
    })
    .await;
    client
        .delete(format!("/{}/", ns.root()), Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .ok();
    ctl.stop().await;
}
