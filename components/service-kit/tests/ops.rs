//! The ops endpoints over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use service_kit::{Health, OpsServer, Shutdown};

#[tokio::test]
async fn healthz_follows_the_checks_and_metrics_are_prometheus_text() {
    let mut registry = Registry::default();
    let requests: Counter = Counter::default();
    registry.register("requests", "Requests served", requests.clone());
    requests.inc_by(3);

    let nats_ok = Arc::new(AtomicBool::new(true));
    let flag = nats_ok.clone();
    let ops = OpsServer::new(registry, move || {
        Health::from_checks([(
            "nats".to_owned(),
            if flag.load(Ordering::SeqCst) { Ok(()) } else { Err("disconnected".to_owned()) },
        )])
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(ops.serve(listener, shutdown.clone()));

    let http = reqwest::Client::new();
    let r = http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["nats"], "ok");

    nats_ok.store(false, Ordering::SeqCst);
    let r = http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["nats"], "disconnected");

    let text = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("requests_total 3"), "{text}");

    assert_eq!(http.get(format!("http://{addr}/nope")).send().await.unwrap().status(), 404);
    shutdown.trigger();
    server.await.unwrap();
}
