//! The router against real etcd and real backends on loopback: routes appear and vanish, a dead
//! backend costs no GET, WebSockets pass, git's TCP passes, and an etcd outage changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bus_schema::discovery::ComponentRecord;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use router::{Listeners, RouterConfig};
use service_kit::testing::{LateService, TestServices, eventually, free_port};
use service_kit::{EtcdConfig, NatsConfig, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP backend answering `name` (and echoing the forwarded headers it saw).
async fn backend(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Connections live in a JoinSet owned by the accept loop: aborting the backend's task kills
    // its open keep-alive connections too, as a crashed process would.
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            connections.spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                        let xff = req
                            .headers()
                            .get("x-forwarded-for")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let rid = req
                            .headers()
                            .get("x-request-id")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let body = format!("{name} xff={xff} rid={}", !rid.is_empty());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A server on a loopback port of its own that runs `serve` on each connection it accepts.
async fn serve_each<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

struct Rig {
    prefix: String,
    http: SocketAddr,
    https: SocketAddr,
    git: SocketAddr,
    /// The front door's listeners: each connection starts with a PROXY header.
    http_proxied: SocketAddr,
    git_proxied: SocketAddr,
    shutdown: Shutdown,
    etcd: etcd_client::Client,
}

impl Rig {
    async fn start(test: &str, endpoints: Vec<String>) -> Self {
        let nats_url = TestServices::get().nats_url;
        Self::start_with_nats(
            test,
            endpoints,
            NatsConfig { url: nats_url, namespace: format!("t{test}"), ..Default::default() },
        )
        .await
    }

    /// A router on the shared etcd where the app `shop` is served by a backend answering `alpha`.
    async fn serving_shop(test: &str) -> Self {
        let mut rig = Self::start(test, TestServices::get().etcd_endpoints).await;
        let (alpha, _) = backend("alpha").await;
        rig.put_route("shop", "c1", alpha).await;
        rig
    }

    /// A router reaching NATS as told (somewhere nothing listens yet, say).
    async fn start_with_nats(test: &str, endpoints: Vec<String>, nats: NatsConfig) -> Self {
        Self::start_configured(test, endpoints, nats, |_| {}).await
    }

    /// A router on the shared services, its config changed by `tune`.
    async fn start_tuned(test: &str, tune: impl FnOnce(&mut RouterConfig)) -> Self {
        let services = TestServices::get();
        let nats = NatsConfig { url: services.nats_url, namespace: format!("t{test}"), ..Default::default() };
        Self::start_configured(test, services.etcd_endpoints, nats, tune).await
    }

    async fn start_configured(
        test: &str,
        endpoints: Vec<String>,
        nats: NatsConfig,
        tune: impl FnOnce(&mut RouterConfig),
    ) -> Self {
        let prefix = format!("/t{test}{}", uuid::Uuid::new_v4().simple());
        let mut config = RouterConfig {
            platform_domain: "deis.local".into(),
            eject_secs: 30,
            etcd: EtcdConfig { endpoints: endpoints.clone(), prefix: prefix.clone(), ..Default::default() },
            nats,
            ..Default::default()
        };
        tune(&mut config);
        let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let listeners = Listeners {
            http: bind().await,
            https: bind().await,
            ops: bind().await,
            git: bind().await,
            http_proxied: Some(bind().await),
            https_proxied: Some(bind().await),
            git_proxied: Some(bind().await),
        };
        let http = listeners.http.local_addr().unwrap();
        let https = listeners.https.local_addr().unwrap();
        let git = listeners.git.local_addr().unwrap();
        let http_proxied = listeners.http_proxied.as_ref().unwrap().local_addr().unwrap();
        let git_proxied = listeners.git_proxied.as_ref().unwrap().local_addr().unwrap();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        tokio::spawn(async move { router::run(config, listeners, s).await.unwrap() });
        let etcd = etcd_client::Client::connect(endpoints, None).await.unwrap();
        Self { prefix, http, https, git, http_proxied, git_proxied, shutdown, etcd }
    }

    async fn put_route(&mut self, app: &str, container: &str, addr: SocketAddr) {
        let value =
            serde_json::json!({"address": addr.to_string(), "node": "node1", "version": 1}).to_string();
        self.etcd.put(format!("{}/routes/{app}/{container}", self.prefix), value, None).await.unwrap();
    }

    /// Publishes a certificate for `domain` (or a wildcard), as the controller and `deisctl` do.
    async fn put_cert(&mut self, domain: &str, cert: &rcgen::Certificate, key: &rcgen::KeyPair) {
        let record = serde_json::json!({"certificate": cert.pem(), "key": key.serialize_pem()}).to_string();
        self.etcd.put(format!("{}/certs/{domain}", self.prefix), record, None).await.unwrap();
    }

    /// An HTTPS client that trusts only `root` (PEM) and finds `domain` at the router.
    fn tls_client(&self, root: &str, domain: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .resolve(domain, self.https)
            .build()
            .unwrap()
    }

    async fn get(&self, host: &str) -> Option<(u16, String)> {
        let resp = reqwest::Client::new()
            .get(format!("http://{}/", self.http))
            .header("host", host)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_appear_and_vanish_and_a_dead_backend_costs_no_get() {
    let mut rig = Rig::start("routes", TestServices::get().etcd_endpoints).await;
    let (a, _ta) = backend("alpha").await;
    let (b, tb) = backend("beta").await;

    assert_eq!(rig.get("example.com").await.map(|r| r.0), Some(404), "an unknown host: a clear 404");
    // Once the router has read etcd: a name that is no app is a 404 that says so.
    eventually("a name that is no app: 404", Duration::from_secs(2), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 404 && r.1.contains("There is no app named shop"))
    })
    .await;
    // The controllers publish the app: it exists, nothing serves it yet.
    rig.etcd.put(format!("{}/apps/shop", rig.prefix), "", None).await.unwrap();
    eventually("no route yet: 503, nothing serves the app", Duration::from_secs(2), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 503)
    })
    .await;
    let added = Instant::now();
    rig.put_route("shop", "c1", a).await;
    let (status, body) = eventually("a new route gets traffic", Duration::from_secs(1), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 200)
    })
    .await;
    println!("new route served after {:?}", added.elapsed());
    assert_eq!(status, 200);
    assert!(body.starts_with("alpha xff=127.0.0.1 rid=true"), "{body}");

    // A custom domain, as the controller publishes it, reaches the same app.
    rig.etcd.put(format!("{}/domains/www.shop.example", rig.prefix), "shop", None).await.unwrap();
    let (_, body) = eventually("a custom domain is routed", Duration::from_secs(2), || async {
        rig.get("www.shop.example").await.filter(|r| r.0 == 200)
    })
    .await;
    assert!(body.starts_with("alpha"), "{body}");

    rig.put_route("shop", "c2", b).await;
    eventually("both backends serve", Duration::from_secs(2), || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(rig.get("shop.deis.local").await?.1.split(' ').next()?.to_owned());
        }
        (seen.len() == 2).then_some(())
    })
    .await;

    // beta dies without its route being removed (as between a crash and its lease running out).
    tb.abort();
    let _ = tb.await;
    let mut failed = 0;
    for _ in 0..40 {
        match rig.get("shop.deis.local").await {
            Some((200, body)) if body.starts_with("alpha") => {}
            other => {
                println!("failed: {other:?}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 0, "a refused connection is retried on the other backend");

    // The last route goes: the app has no healthy container.
    let mut etcd = rig.etcd.clone();
    etcd.delete(
        format!("{}/routes/shop/", rig.prefix),
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    eventually("a removed route gets no traffic", Duration::from_secs(2), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 503)
    })
    .await;
    // The app is destroyed: its name is no app any more.
    etcd.delete(format!("{}/apps/shop", rig.prefix), None).await.unwrap();
    eventually("a destroyed app answers 404", Duration::from_secs(2), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 404)
    })
    .await;
}

/// A backend that dies with the request in flight (it reads it, then closes without a word): a
/// GET goes to another backend, as it is safe to send again; a POST is not resent (502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_in_flight_to_a_dying_backend_is_retried_elsewhere_a_post_is_not() {
    use tokio::io::AsyncReadExt;
    let mut rig = Rig::start("inflight", TestServices::get().etcd_endpoints).await;
    let (good, _t) = backend("good").await;
    let mute_addr = serve_each(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        // Dropped: the connection closes with no answer.
    })
    .await;
    rig.etcd.put(format!("{}/apps/flaky", rig.prefix), "", None).await.unwrap();
    // The dying backend's route first: the table applies etcd's changes in order, so once the
    // good one answers, the dying one is in the table too (the other order let every request of
    // a fast run reach the good backend alone).
    rig.put_route("flaky", "c2", mute_addr).await;
    rig.put_route("flaky", "c1", good).await;
    eventually("both routes are in the table", Duration::from_secs(2), || async {
        rig.get("flaky.deis.local").await.filter(|r| r.0 == 200)
    })
    .await;
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method| {
        let body = if method == reqwest::Method::POST { "x" } else { "" };
        http.request(method, format!("http://{}/", rig.http))
            .header("host", "flaky.deis.local")
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
    };
    let mut gets = Vec::new();
    for _ in 0..20 {
        gets.push(send(reqwest::Method::GET).await.map(|r| r.status().as_u16()).unwrap_or(0));
    }
    assert!(gets.iter().all(|s| *s == 200), "every GET answered by the good backend: {gets:?}");
    let mut posts = Vec::new();
    for _ in 0..10 {
        posts.push(send(reqwest::Method::POST).await.map(|r| r.status().as_u16()).unwrap_or(0));
    }
    assert!(posts.contains(&502), "a POST that reached the dying backend is not resent: {posts:?}");
}

/// A node frozen with requests in flight (its kernel still holds their connections, nothing
/// answers): once its lease runs out and its key leaves etcd, the router gives those requests up
/// at once instead of waiting out its request timeout. The GET is sent to a live backend, the POST
/// answered 502 (it may have been acted on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_to_a_node_that_leaves_the_cluster_are_given_up() {
    use std::sync::{Arc, Mutex};
    // Longer than the client waits below: an answer at all shows the request was given up.
    let mut rig = Rig::start_tuned("departed", |c| c.request_timeout_secs = 300).await;
    let (good, _t) = backend("good").await;
    // The frozen node's backend, on an address of its own (127.0.0.2) so it is on another node.
    let frozen = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let frozen_addr = frozen.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = frozen.accept().await {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let method = String::from_utf8_lossy(&buf[..n]).split(' ').next().unwrap_or("").to_owned();
            record.lock().unwrap().push(method);
            held.push(stream);
        }
    });
    let node = |name: &str, address: &str| {
        serde_json::json!({"id": name, "address": address, "memory_mb": 1024, "cpus": 1, "labels": {}})
            .to_string()
    };
    let route = |address: SocketAddr, node: &str| {
        serde_json::json!({"address": address.to_string(), "node": node, "version": 1}).to_string()
    };
    let p = rig.prefix.clone();
    rig.etcd.put(format!("{p}/nodes/node1"), node("node1", "127.0.0.1"), None).await.unwrap();
    rig.etcd.put(format!("{p}/nodes/node2"), node("node2", "127.0.0.2"), None).await.unwrap();
    rig.etcd.put(format!("{p}/apps/shop"), "", None).await.unwrap();
    rig.etcd.put(format!("{p}/routes/shop/c2"), route(frozen_addr, "node2"), None).await.unwrap();
    rig.etcd.put(format!("{p}/routes/shop/c1"), route(good, "node1"), None).await.unwrap();
    eventually("the live backend answers", Duration::from_secs(2), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 200)
    })
    .await;

    // Requests go round-robin: send them one by one until one of each kind is stuck on node2.
    let http = reqwest::Client::new();
    let url = format!("http://{}/", rig.http);
    let mut stuck = Vec::new();
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        for attempt in 0.. {
            assert!(attempt < 10, "no {method} reached the frozen backend");
            let before = seen.lock().unwrap().iter().filter(|m| **m == method.as_str()).count();
            let body = if method == reqwest::Method::POST { "x" } else { "" };
            let send = http
                .request(method.clone(), &url)
                .header("host", "shop.deis.local")
                .body(body)
                .timeout(Duration::from_secs(30))
                .send();
            let mut request = tokio::spawn(async move {
                let resp = send.await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                Ok::<_, String>((status, resp.text().await.unwrap_or_default()))
            });
            let reached_frozen = tokio::select! {
                answered = &mut request => {
                    assert_eq!(answered.unwrap().unwrap().0, 200, "answered by the live backend");
                    false
                }
                () = eventually("the request is answered or reaches the frozen backend", Duration::from_secs(5), || async {
                    (seen.lock().unwrap().iter().filter(|m| **m == method.as_str()).count() > before).then_some(())
                }) => true,
            };
            if reached_frozen {
                stuck.push((method.clone(), request));
                break;
            }
        }
    }

    // node2's lease runs out: its key (and, in a cluster, its routes) leave etcd.
    rig.etcd.delete(format!("{p}/nodes/node2"), None).await.unwrap();
    for (method, request) in stuck {
        let answer = request.await.unwrap();
        match method {
            reqwest::Method::GET => {
                let (status, body) = answer.expect("the GET is answered, not left to time out");
                assert_eq!(status, 200, "{body}");
                assert!(body.starts_with("good"), "sent again to the live backend: {body}");
            }
            _ => {
                let (status, _) = answer.expect("the POST is answered, not left to time out");
                assert_eq!(status, 502, "a POST that may have been acted on is not sent again");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_answers_at_its_name_and_the_routers_own_address() {
    let mut rig = Rig::start("ctl", TestServices::get().etcd_endpoints).await;
    let (c, _t) = backend("controller").await;
    let value = ComponentRecord::new(c.to_string(), "test").to_json();
    rig.etcd.put(format!("{}/components/controller/x", rig.prefix), value, None).await.unwrap();
    for host in ["deis.deis.local", "127.0.0.1", "localhost:8080"] {
        let (status, body) = eventually("the controller is routed", Duration::from_secs(2), || async {
            rig.get(host).await.filter(|r| r.0 == 200)
        })
        .await;
        assert_eq!(status, 200);
        assert!(body.starts_with("controller"), "{host}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_through() {
    let mut rig = Rig::start("ws", TestServices::get().etcd_endpoints).await;
    let addr = serve_each(|stream| async move {
        // A plain GET (the test's readiness probe) is not a WebSocket: ignore it.
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() {
                ws.send(msg).await.unwrap();
            }
        }
    })
    .await;
    rig.put_route("chat", "c1", addr).await;
    eventually("the route is in", Duration::from_secs(2), || async {
        rig.get("chat.deis.local").await.filter(|r| r.0 != 404)
    })
    .await;

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/socket", rig.http).into_client_request().unwrap();
    request.headers_mut().insert("host", "chat.deis.local".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_traffic_passes_through_to_a_builder() {
    let mut rig = Rig::start("git", TestServices::get().etcd_endpoints).await;
    let addr = serve_each(|mut s| async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    })
    .await;
    let value = ComponentRecord::new(addr.to_string(), "test").to_json();
    rig.etcd.put(format!("{}/components/builder/b1", rig.prefix), value, None).await.unwrap();
    let got =
        eventually("bytes come back through port 2222's pass-through", Duration::from_secs(3), || async {
            let mut s = tokio::net::TcpStream::connect(rig.git).await.ok()?;
            s.write_all(b"SSH-2.0-test\r\n").await.ok()?;
            let mut buf = [0u8; 14];
            tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await.ok()?.ok()?;
            Some(buf)
        })
        .await;
    assert_eq!(&got, b"SSH-2.0-test\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_goes_on_when_etcd_stops() {
    // The router reaches the shared etcd through a forwarder that can go away, as etcd would.
    let etcd = LateService::new(TestServices::get().etcd_endpoints[0].trim_start_matches("http://")).await;
    etcd.open();
    let mut rig = Rig::start("etcddown", vec![etcd.url("http")]).await;
    let (a, _t) = backend("alpha").await;
    rig.put_route("steady", "c1", a).await;
    eventually("routed", Duration::from_secs(2), || async {
        rig.get("steady.deis.local").await.filter(|r| r.0 == 200)
    })
    .await;

    etcd.close();
    let until = Instant::now() + Duration::from_secs(3);
    let mut served = 0;
    while Instant::now() < until {
        let (status, _) = rig.get("steady.deis.local").await.expect("the router answers");
        assert_eq!(status, 200, "the last route table keeps serving while etcd is down");
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_certificates_are_served_by_sni() {
    let mut rig = Rig::serving_shop("tls").await;
    let mut roots = Vec::new();
    for domain in ["a.example", "b.example"] {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec![domain.to_owned()]).unwrap();
        // What the controller publishes for a certificate attached to a domain.
        rig.put_cert(domain, &cert, &key_pair).await;
        rig.etcd.put(format!("{}/domains/{domain}", rig.prefix), "shop", None).await.unwrap();
        roots.push(cert.pem());
    }
    for (domain, root) in ["a.example", "b.example"].into_iter().zip(&roots) {
        // Trust only this domain's certificate: the handshake succeeds only if SNI chose it.
        let client = rig.tls_client(root, domain);
        let url = format!("https://{domain}:{}/", rig.https.port());
        // The certificate and the domain are two etcd keys the router may apply one after the
        // other: the app's answer is awaited, not only the handshake.
        let (version, body) =
            eventually("the certificate and the domain are served", Duration::from_secs(5), || {
                let client = client.clone();
                let url = url.clone();
                async move {
                    let resp = client.get(&url).send().await.ok()?;
                    let version = resp.version();
                    let body = resp.text().await.ok()?;
                    body.starts_with("alpha").then_some((version, body))
                }
            })
            .await;
        assert!(body.starts_with("alpha"), "{domain}: {body}");
        assert_eq!(version, reqwest::Version::HTTP_2, "clients that offer HTTP/2 over TLS get it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_certificate_serves_app_hosts_and_clients_without_sni() {
    let mut rig = Rig::serving_shop("platformtls").await;
    // What `deisctl` installs: one certificate for every app under the platform domain, also
    // valid for the address operators reach the routers by.
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["*.deis.local".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    rig.put_cert("*.deis.local", &cert, &key_pair).await;
    let client = rig.tls_client(&cert.pem(), "shop.deis.local");
    // By name: SNI names shop.deis.local and the wildcard covers it.
    let by_name = format!("https://shop.deis.local:{}/", rig.https.port());
    let body = eventually("the wildcard is served", Duration::from_secs(3), || {
        let client = client.clone();
        let url = by_name.clone();
        async move { client.get(&url).send().await.ok()?.text().await.ok() }
    })
    .await;
    assert!(body.starts_with("alpha"), "{body}");
    // By address: no SNI at all, yet the handshake succeeds with the platform certificate.
    let by_ip = format!("https://127.0.0.1:{}/", rig.https.port());
    let resp = client.get(&by_ip).header("host", "shop.deis.local").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().starts_with("alpha"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_only_setting_redirects_and_hsts_is_sent() {
    let mut rig = Rig::serving_shop("hsts").await;
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["secure.example".to_owned()]).unwrap();
    rig.put_cert("secure.example", &cert, &key_pair).await;
    rig.etcd.put(format!("{}/domains/secure.example", rig.prefix), "shop", None).await.unwrap();
    rig.etcd.put(format!("{}/settings/https_only", rig.prefix), "true", None).await.unwrap();
    rig.etcd.put(format!("{}/settings/hsts_max_age", rig.prefix), "31536000", None).await.unwrap();

    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let location = eventually("plain HTTP is redirected", Duration::from_secs(3), || {
        let plain = plain.clone();
        let url = format!("http://{}/cart?x=1", rig.http);
        async move {
            let resp = plain.get(url).header("host", "secure.example").send().await.ok()?;
            (resp.status() == 301).then(|| resp.headers()["location"].to_str().unwrap().to_owned())
        }
    })
    .await;
    assert_eq!(location, "https://secure.example/cart?x=1");

    let tls = rig.tls_client(&cert.pem(), "secure.example");
    let resp = tls.get(format!("https://secure.example:{}/", rig.https.port())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");
}

/// A router that starts before NATS is reachable (one in three did after `compose/up`) routes at
/// once and ships its access lines once NATS comes, even long after its start: it used to give
/// up on them for good after two seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_started_before_nats_ships_access_lines_once_it_comes() {
    let services = TestServices::get();
    // NATS's address for this router: nothing listens there until the forwarder opens.
    let late_port = free_port();
    let namespace = format!("tlate{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let nats = NatsConfig {
        url: format!("nats://127.0.0.1:{late_port}"),
        namespace: namespace.clone(),
        ..Default::default()
    };
    let mut rig = Rig::start_with_nats("latebus", services.etcd_endpoints.clone(), nats).await;
    let (addr, _backend) = backend("early").await;
    rig.put_route("early", "early.web.1", addr).await;
    let get = || async { rig.get("early.deis.local").await.map(|(status, _)| status) };
    eventually("the router routes without NATS", Duration::from_secs(10), || async {
        (get().await == Some(200)).then_some(())
    })
    .await;
    // Past the two seconds after which the router used to stop waiting for the bus.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Our own subscriber on the real NATS, then NATS "comes" at the router's address.
    let sender = bus_schema::Sender { component: bus_schema::Component::Router, instance: "test".into() };
    let nats =
        NatsConfig { url: services.nats_url.clone(), namespace: namespace.clone(), ..Default::default() };
    let bus = service_kit::nats::connect_bus(&nats, sender, &Shutdown::new()).await.unwrap();
    let app = bus_schema::AppName::parse("early").unwrap();
    let mut lines = bus.subscribe(&bus.namespace().all_log_lines()).await.unwrap();
    let real = services.nats_url.trim_start_matches("nats://").to_owned();
    let forwarder = TcpListener::bind(("127.0.0.1", late_port)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = forwarder.accept().await else { return };
            let real = real.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(real).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let opened = Instant::now();
    let seen = loop {
        assert_eq!(get().await, Some(200));
        if let Ok(Some(Ok(line))) = tokio::time::timeout(Duration::from_millis(500), lines.next()).await
            && line.envelope.body.app == app
        {
            break line.envelope.body.message;
        }
        assert!(opened.elapsed() < Duration::from_secs(30), "no access line reached the bus after NATS came");
    };
    println!("first access line on the bus {:?} after NATS came", opened.elapsed());
    assert!(seen.contains("status=200"), "{seen}");
}

/// A PROXY protocol v1 header as the front door would send it for `client`.
fn proxy_v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 10.0.0.2 40000 {port}\r\n").into_bytes()
}

/// A backend that answers with the forwarding headers it was given, one `name: value` a line.
async fn header_echo() -> SocketAddr {
    serve_each(|stream| async move {
        let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
            let mut lines = String::new();
            for name in [
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-real-ip",
                "forwarded",
            ] {
                for value in req.headers().get_all(name) {
                    lines.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                }
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(lines))))
        });
        let _ =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    })
    .await
}

/// An HTTP/1.1 connection to `addr` that first writes `preamble` (a PROXY header, or nothing).
/// The returned sender keeps the connection open while it lives.
async fn connect_http(
    addr: SocketAddr,
    preamble: &[u8],
) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(preamble).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// A GET for `host` on an open connection: the status and body, `None` if the connection failed.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let mut req = Request::get("/").header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp =
        tokio::time::timeout(Duration::from_secs(5), sender.send_request(req.body(Full::default()).unwrap()))
            .await
            .ok()?
            .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether the router closes `stream` (within a generous bound) without answering anything.
async fn closed_without_answer(stream: &mut tokio::net::TcpStream) -> bool {
    let mut got = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await {
        Ok(Ok(_)) => got.is_empty(),
        // A reset is a close too.
        Ok(Err(_)) => got.is_empty(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_client_says_of_itself_does_not_reach_the_app() {
    let mut rig = Rig::start("fwd", TestServices::get().etcd_endpoints).await;
    let echo = header_echo().await;
    rig.put_route("shop", "c1", echo).await;
    eventually("the route is in", Duration::from_secs(2), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 200)
    })
    .await;
    let forged = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "bank.example"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6;proto=https"),
    ];

    // Straight to the router: the peer's own address and the listener's scheme and port.
    let mut direct = connect_http(rig.http, b"").await.unwrap();
    let (status, seen) = get_on(&mut direct, "shop.deis.local", &forged).await.unwrap();
    assert_eq!(status, 200);
    let port = rig.http.port();
    assert_eq!(
        seen,
        format!(
            "x-forwarded-for: 127.0.0.1\nx-forwarded-proto: http\nx-forwarded-host: shop.deis.local\n\
             x-forwarded-port: {port}\nx-real-ip: 127.0.0.1\nforwarded: for=127.0.0.1;host=\"shop.deis.local\";proto=http\n"
        )
    );

    // Behind the front door: the client its PROXY header names, and the front door's port.
    let mut proxied = connect_http(rig.http_proxied, &proxy_v1("203.0.113.9", 80)).await.unwrap();
    let (status, seen) = get_on(&mut proxied, "shop.deis.local", &forged).await.unwrap();
    assert_eq!(status, 200);
    assert!(seen.starts_with("x-forwarded-for: 203.0.113.9\nx-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-port: 80\nx-real-ip: 203.0.113.9\n"), "{seen}");
    assert!(!seen.contains("6.6.6.6") && !seen.contains("bank.example"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_doors_listener_needs_a_proxy_header_and_git_gets_none() {
    let mut rig = Rig::serving_shop("pp").await;
    eventually("the route is in", Duration::from_secs(2), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 200)
    })
    .await;

    // A v2 header (binary, as HAProxy's send-proxy-v2 sends it) is read and the request served.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[192, 0, 2, 44, 10, 0, 0, 2, 0x9c, 0x40, 0, 80]);
    let mut sender = connect_http(rig.http_proxied, &v2).await.unwrap();
    let (status, body) = get_on(&mut sender, "shop.deis.local", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("alpha xff=192.0.2.44 "), "{body}");

    // A plain request, a malformed header, or nothing at all: closed without an answer.
    for preamble in
        [&b"GET / HTTP/1.1\r\nHost: shop.deis.local\r\n\r\n"[..], b"PROXY TCP4 1.2.3.4 nonsense\r\n"]
    {
        let mut stream = tokio::net::TcpStream::connect(rig.http_proxied).await.unwrap();
        stream.write_all(preamble).await.unwrap();
        assert!(closed_without_answer(&mut stream).await, "{}", String::from_utf8_lossy(preamble));
    }

    // git: the builder gets the client's bytes, never the header.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let builder = serve_each(move |mut s| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf).await {
                let _ = seen_tx.send(buf[..n].to_vec());
                let _ = s.write_all(b"SSH-2.0-builder\r\n").await;
            }
        }
    })
    .await;
    let value = ComponentRecord::new(builder.to_string(), "test").to_json();
    rig.etcd.put(format!("{}/components/builder/b1", rig.prefix), value, None).await.unwrap();
    eventually("git passes through the front door's listener", Duration::from_secs(3), || async {
        let mut s = tokio::net::TcpStream::connect(rig.git_proxied).await.ok()?;
        s.write_all(&[proxy_v1("198.51.100.3", 2222), b"SSH-2.0-client\r\n".to_vec()].concat()).await.ok()?;
        let mut banner = [0u8; 17];
        tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut banner)).await.ok()?.ok()
    })
    .await;
    // What the builder read first on the connection that answered (earlier tries found none).
    let first = seen_rx.recv().await.unwrap();
    assert_eq!(first, b"SSH-2.0-client\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_header_is_cut_off() {
    let rig = Rig::start_tuned("slowloris", |c| c.header_timeout_ms = 300).await;
    let mut stream = tokio::net::TcpStream::connect(rig.http).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: shop.deis.local\r\nX-Slow: 1").await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "a client that never finishes its headers keeps its connection");
    println!("closed after {:?}: {:?}", started.elapsed(), String::from_utf8_lossy(&got));
    assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_connection_limit_is_refused_while_another_is_served() {
    let mut rig = Rig::start_tuned("limit", |c| c.max_connections_per_address = 2).await;
    let (alpha, _) = backend("alpha").await;
    rig.put_route("shop", "c1", alpha).await;
    eventually("the route is in", Duration::from_secs(2), || async {
        rig.get("shop.deis.local").await.filter(|r| r.0 == 200)
    })
    .await;
    let mut held = Vec::new();
    // Two connections from one client address (as the front door names it), each answered.
    for _ in 0..2 {
        let mut sender = connect_http(rig.http_proxied, &proxy_v1("198.51.100.1", 80)).await.unwrap();
        assert_eq!(get_on(&mut sender, "shop.deis.local", &[]).await.map(|r| r.0), Some(200));
        held.push(sender);
    }
    // A third from the same address is closed unanswered...
    let mut third = tokio::net::TcpStream::connect(rig.http_proxied).await.unwrap();
    third.write_all(&proxy_v1("198.51.100.1", 80)).await.unwrap();
    third.write_all(b"GET / HTTP/1.1\r\nHost: shop.deis.local\r\n\r\n").await.unwrap();
    assert!(closed_without_answer(&mut third).await, "a third connection from a full address is served");
    // ...while another address is served, and the held connections still are.
    let mut other = connect_http(rig.http_proxied, &proxy_v1("198.51.100.2", 80)).await.unwrap();
    assert_eq!(get_on(&mut other, "shop.deis.local", &[]).await.map(|r| r.0), Some(200));
    for sender in &mut held {
        assert_eq!(get_on(sender, "shop.deis.local", &[]).await.map(|r| r.0), Some(200));
    }
    // Once one closes, its address may connect again.
    drop(held.pop());
    eventually("a freed slot is usable", Duration::from_secs(3), || async {
        let mut sender = connect_http(rig.http_proxied, &proxy_v1("198.51.100.1", 80)).await?;
        get_on(&mut sender, "shop.deis.local", &[]).await.filter(|r| r.0 == 200)
    })
    .await;
}
