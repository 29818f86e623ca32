//! The router: a stateless reverse proxy run on several hosts. Its route table comes from etcd
//! (routes written by agents for healthy containers, controllers and builders registered as
//! components) and is swapped in whole on every change; when etcd is unreachable the last table
//! keeps serving. `git push` over SSH (port 2222) passes through to a builder.

pub mod config;
pub mod conn;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod table;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bus_schema::discovery::Keys;
use bus_schema::{Component, Sender};
use conn::Door;
use http_body_util::BodyExt;
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
    /// The front door's listeners, whose connections start with a PROXY protocol header
    /// (`RouterConfig::listen_*_proxied`); `None` when not configured.
    pub http_proxied: Option<TcpListener>,
    pub https_proxied: Option<TcpListener>,
    pub git_proxied: Option<TcpListener>,
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

    // Routing never waits for the bus; access lines are queued until it comes (a router that
    // started before NATS used to give up on them for good).
    let bus = async move { bus_task.await.ok().flatten() };
    let proxy = Arc::new(Proxy::new(config.clone(), table.clone(), bus, metrics.clone()));
    let doors = Arc::new(Doors {
        limiter: conn::Limiter::new(config.max_connections_per_address),
        proxy_header_timeout: Duration::from_millis(config.proxy_header_timeout_ms.max(1)),
        header_timeout: Duration::from_millis(config.header_timeout_ms.max(1)),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
        tunnel_idle_timeout: Duration::from_secs(config.tunnel_idle_timeout_secs.max(1)),
        metrics,
    });

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
    let tls = tls_acceptor(table.clone())?;
    let git = |listener, door| passthrough(listener, door, table.clone(), doors.clone(), shutdown.clone());
    shutdown.spawn(git(listeners.git, Door::Direct));
    if let Some(listener) = listeners.git_proxied {
        shutdown.spawn(git(listener, Door::Proxied));
    }
    let http =
        |listener, door, tls| serve(listener, door, proxy.clone(), tls, doors.clone(), shutdown.clone());
    shutdown.spawn(http(listeners.https, Door::Direct, Some(tls.clone())));
    if let Some(listener) = listeners.https_proxied {
        shutdown.spawn(http(listener, Door::Proxied, Some(tls.clone())));
    }
    if let Some(listener) = listeners.http_proxied {
        shutdown.spawn(http(listener, Door::Proxied, None));
    }
    http(listeners.http, Door::Direct, None).await;
    Ok(())
}

/// What every listener shares: the per-address limit and the clocks.
#[derive(Debug)]
struct Doors {
    limiter: Arc<conn::Limiter>,
    proxy_header_timeout: Duration,
    header_timeout: Duration,
    idle_timeout: Duration,
    tunnel_idle_timeout: Duration,
    metrics: metrics::Metrics,
}

impl Doors {
    /// Accepts the next connection; `None` once shutting down.
    async fn accept(
        listener: &TcpListener,
        shutdown: &Shutdown,
    ) -> Option<(tokio::net::TcpStream, SocketAddr)> {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => return Some(a),
                    Err(error) => {
                        // Out of file descriptors, most often: give the others a moment.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    /// Reads the PROXY header (behind the front door) and applies the per-address limit;
    /// `None` when the connection is refused (it is closed by dropping it).
    async fn admit(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        door: Door,
    ) -> Option<conn::Admitted> {
        match conn::admit(stream, peer, door, self.proxy_header_timeout, &self.limiter).await {
            Ok(admitted) => Some(admitted),
            Err(refused) => {
                match refused {
                    conn::Refused::OverLimit(_) => self.metrics.connections_refused.inc(),
                    conn::Refused::ProxyHeader(_) => self.metrics.proxy_headers_refused.inc(),
                };
                tracing::debug!(%peer, error = %refused, "connection refused");
                None
            }
        }
    }
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
    door: Door,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    doors: Arc<Doors>,
    shutdown: Shutdown,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that takes longer than this to send a request's headers (slowloris) is cut off.
    // hyper starts this clock whenever it waits for a request, so it also ends HTTP/1.1
    // keep-alive connections left idle that long.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(doors.header_timeout)
        .keep_alive(true);
    // No HTTP/2 keep-alive pings: their answers would count as traffic and keep an idle
    // connection open forever; the idle clock below closes idle and dead connections alike.
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    while let Some((stream, peer)) = Doors::accept(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let doors = doors.clone();
        tokio::spawn(async move {
            let Some(admitted) = doors.admit(stream, peer, door).await else { return };
            let conn::Admitted { stream, client, permit: _permit } = admitted;
            let https = tls.is_some();
            let served = match tls {
                None => serve_connection(&builder, stream, &proxy, client, false, &doors).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(&builder, tls_stream, &proxy, client, https, &doors).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, client = %client.addr, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, client = %client.addr, "connection ended with an error");
            }
        });
    }
}

/// Serves HTTP on one connection until it ends, or until it has been idle (no request being
/// answered, no byte either way) for the idle timeout.
async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    proxy: &Arc<Proxy>,
    client: conn::Client,
    https: bool,
    doors: &Doors,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stream = conn::Tracked::new(stream);
    let activity = stream.activity();
    let affinity = Arc::new(proxy::Affinity::default());
    let proxy = proxy.clone();
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let in_flight = requests.request();
        let handled = proxy.clone().handle(req, client, https, affinity.clone());
        async move {
            let resp = handled.await?;
            // The request counts as being answered until its response's body is done with.
            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                })
                .boxed()
            }))
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let idle = doors.idle_timeout;
    // After a graceful shutdown the connection has this long to finish before it is dropped.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let wake = match closing {
            Some(deadline) => deadline,
            None => tokio::time::Instant::now() + idle.saturating_sub(activity.quiet_for()),
        };
        tokio::select! {
            served = connection.as_mut() => return served,
            () = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    return Ok(());
                }
                if activity.in_flight() == 0 && activity.quiet_for() >= idle {
                    tracing::debug!(client = %client.addr, "idle connection closed");
                    connection.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
        }
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
    let left = new.follow(&table.load());
    for address in left {
        tracing::warn!(%address, "a node left the cluster; requests in flight to it are given up");
    }
    table.store(Arc::new(new));
}

/// Passes TCP connections (git over SSH) through to the builders, round-robin. A PROXY header
/// from the front door is read here and not passed on: the builders speak plain SSH.
async fn passthrough(
    listener: TcpListener,
    door: Door,
    table: Arc<ArcSwap<Table>>,
    doors: Arc<Doors>,
    shutdown: Shutdown,
) {
    let cursor = Arc::new(AtomicUsize::new(0));
    while let Some((inbound, peer)) = Doors::accept(&listener, &shutdown).await {
        let table = table.clone();
        let cursor = cursor.clone();
        let doors = doors.clone();
        tokio::spawn(async move {
            let Some(admitted) = doors.admit(inbound, peer, door).await else { return };
            let conn::Admitted { stream: inbound, client, permit: _permit } = admitted;
            let builders = table.load().builders.clone();
            if builders.is_empty() {
                tracing::warn!(client = %client.addr, "git connection refused: no builder is registered");
                return;
            }
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            for i in 0..builders.len() {
                let backend = &builders[(start + i) % builders.len()];
                match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(backend))
                    .await
                {
                    Ok(Ok(mut outbound)) => {
                        conn::tunnel(inbound, &mut outbound, doors.tunnel_idle_timeout).await;
                        return;
                    }
                    _ => tracing::warn!(%backend, "builder unreachable; trying the next"),
                }
            }
        });
    }
}
