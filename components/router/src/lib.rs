//! The router: a stateless reverse proxy run on several hosts. Its route table comes from etcd
//! (routes written by agents for healthy containers, controllers and builders registered as
//! components) and is swapped in whole on every change; when etcd is unreachable the last table
//! keeps serving. `git push` over SSH (port 2222) passes through to a builder.

pub mod config;
pub mod metrics;
pub mod proxy;
pub mod table;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bus_schema::discovery::Keys;
use bus_schema::{Component, Sender};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use service_kit::{Health, OpsServer, Shutdown};
use tokio::net::TcpListener;

pub use config::RouterConfig;
use proxy::Proxy;
use table::Table;

/// The router's listeners, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub https: TcpListener,
    pub ops: TcpListener,
    pub git: TcpListener,
}

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("building the TLS config of the HTTPS listener")]
    Tls(#[source] rustls::Error),
}

/// Runs the router until shutdown.
pub async fn run(config: RouterConfig, listeners: Listeners, shutdown: Shutdown) -> Result<(), RouterError> {
    let keys = Keys::new(&config.etcd.prefix);
    let table = Arc::new(ArcSwap::from_pointee(Table::default()));
    let loaded = Arc::new(AtomicBool::new(false));
    let metrics = metrics::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    // Access lines need the bus, but routing must not wait for it.
    let bus_config = config.nats.clone();
    let bus_shutdown = shutdown.clone();
    let bus_task = tokio::spawn(async move {
        let sender = Sender { component: Component::Router, instance: "router".into() };
        service_kit::nats::connect_bus(&bus_config, sender, &bus_shutdown).await.ok()
    });
    shutdown.spawn(follow_etcd(
        config.clone(),
        keys,
        table.clone(),
        loaded.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let local_port = listeners.http.local_addr().map(|a| a.port()).unwrap_or(80);
    let https_port = listeners.https.local_addr().map(|a| a.port()).unwrap_or(443);
    // Routing never waits for the bus; access lines are queued until it comes (a router that
    // started before NATS used to give up on them for good).
    let bus = async move { bus_task.await.ok().flatten() };
    let proxy = Arc::new(Proxy::new(config.clone(), table.clone(), bus, metrics, local_port, https_port));

    let ops = {
        let loaded = loaded.clone();
        OpsServer::new(registry, move || {
            Health::from_checks([(
                "routes".to_owned(),
                if loaded.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("no route table loaded yet".to_owned())
                },
            )])
        })
    };
    shutdown.spawn(ops.serve(listeners.ops, shutdown.clone()));
    shutdown.spawn(passthrough(listeners.git, table.clone(), shutdown.clone()));
    shutdown.spawn(serve(
        listeners.https,
        proxy.clone(),
        Some(tls_acceptor(table.clone())?),
        shutdown.clone(),
    ));
    serve(listeners.http, proxy, None, shutdown).await;
    Ok(())
}

/// Chooses the certificate by SNI from the current route table.
#[derive(Debug)]
struct Sni(Arc<ArcSwap<Table>>);

impl rustls::server::ResolvesServerCert for Sni {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let table = self.0.load();
        hello.server_name().and_then(|name| table.cert_for(name)).or_else(|| table.platform_cert())
    }
}

fn tls_acceptor(table: Arc<ArcSwap<Table>>) -> Result<tokio_rustls::TlsAcceptor, RouterError> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(RouterError::Tls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Sni(table)));
    // HTTP/2 for clients that offer it, HTTP/1.1 otherwise; the server side detects which.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections (TLS ones when given an acceptor) and serves HTTP/1.1 and HTTP/2 on them.
async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: Shutdown,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that takes longer than this to send a request's headers (slowloris) is cut off.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    builder.http2().timer(hyper_util::rt::TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let https = tls.is_some();
            let affinity = Arc::new(proxy::Affinity::default());
            let service = hyper::service::service_fn(move |req| {
                proxy.clone().handle(req, peer, https, affinity.clone())
            });
            let served = match tls {
                None => builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
}

/// Keeps the route table in step with etcd: a full read, then a watch from that revision. On
/// any failure the last table stays in place while it reconnects.
async fn follow_etcd(
    config: RouterConfig,
    keys: Keys,
    table: Arc<ArcSwap<Table>>,
    loaded: Arc<AtomicBool>,
    metrics: metrics::Metrics,
    shutdown: Shutdown,
) {
    let prefix = format!("{}/", keys.prefix());
    service_kit::etcd::follow_prefix(&config.etcd, &prefix, &shutdown, |kvs| {
        install(&keys, kvs, &config, &table, &metrics);
        loaded.store(true, Ordering::Relaxed);
    })
    .await;
}

fn install(
    keys: &Keys,
    kvs: &BTreeMap<String, Vec<u8>>,
    config: &RouterConfig,
    table: &ArcSwap<Table>,
    metrics: &metrics::Metrics,
) {
    let (mut new, bad) = Table::build(keys, kvs, &config.platform_domain);
    new.app_metrics = new.apps.keys().map(|app| (app.clone(), metrics.for_app(app.as_str()))).collect();
    new.controller_metrics = Some(metrics.for_app("deis"));
    if bad > 0 {
        metrics.bad_routes.inc_by(bad as u64);
        tracing::warn!(bad, "skipped malformed route values");
    }
    table.store(Arc::new(new));
}

/// Passes TCP connections (git over SSH) through to the builders, round-robin.
async fn passthrough(listener: TcpListener, table: Arc<ArcSwap<Table>>, shutdown: Shutdown) {
    let cursor = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut inbound, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = shutdown.cancelled() => return,
        };
        let builders = table.load().builders.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move {
            if builders.is_empty() {
                tracing::warn!(%peer, "git connection refused: no builder is registered");
                return;
            }
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            for i in 0..builders.len() {
                let backend = &builders[(start + i) % builders.len()];
                match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(backend))
                    .await
                {
                    Ok(Ok(mut outbound)) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    _ => tracing::warn!(%backend, "builder unreachable; trying the next"),
                }
            }
        });
    }
}
