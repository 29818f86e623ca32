//! The HTTP proxy: one request in, the same request to a healthy backend of the app its Host
//! names, the answer back, streamed both ways. A backend that refuses a connection is ejected for
//! a while and the request goes to the next one (bodies small enough are buffered so they can be
//! sent again); WebSocket upgrades are bridged; hop-by-hop headers stay on their hop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bus_schema::messages::{LogLine, LogSource, Stream};
use bus_schema::{Bus, Timestamp};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::config::RouterConfig;
use crate::metrics::Metrics;
use crate::table::{Ejections, Table, Target};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Proxy {
    pub table: Arc<ArcSwap<Table>>,
    pub ejections: Ejections,
    config: RouterConfig,
    /// Access lines go to one shipping task through this queue: a `try_send` per request is
    /// far cheaper than a task per request, and a slow bus drops lines, never requests.
    access: Option<tokio::sync::mpsc::Sender<LogLine>>,
    metrics: Metrics,
    local_port: u16,
    https_port: u16,
    request_prefix: String,
    request_counter: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let mut resp = Response::new(full(html));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp
}

impl Proxy {
    pub fn new(
        config: RouterConfig,
        table: Arc<ArcSwap<Table>>,
        bus: impl std::future::Future<Output = Option<Bus>> + Send + 'static,
        metrics: Metrics,
        local_port: u16,
        https_port: u16,
    ) -> Self {
        let request_prefix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        // The queue exists from the start: lines wait in it (up to its size) while the bus is not
        // there yet, and are shipped once it connects, however late that is.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<LogLine>(8192);
        tokio::spawn(async move {
            let Some(bus) = bus.await else { return };
            tracing::info!("connected to NATS; shipping access lines");
            while let Some(line) = rx.recv().await {
                let subject = bus.namespace().log_lines(&line.app);
                let _ = bus.publish(&subject, &bus.envelope(line)).await;
            }
        });
        let access = Some(tx);
        Self {
            table,
            ejections: Ejections::default(),
            config,
            access,
            metrics,
            local_port,
            https_port,
            request_prefix,
            request_counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A request id unique across routers: this router's random prefix and a counter. Cheaper than
    /// a random UUID per request (no system call on the hot path).
    fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n:x}", self.request_prefix)
    }

    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
        affinity: Arc<Affinity>,
    ) -> Result<Response<Body>, Infallible> {
        let start = Instant::now();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let table = self.table.load_full();
        let target = table.resolve(&host);
        let app = match &target {
            Target::App(app) => app.to_string(),
            Target::Controller => "deis".to_owned(),
            Target::Unknown => {
                let text = format!(
                    "No app is served at {}. Check the app's name, or add this domain to it with `deis domains:add`.",
                    escape(&host)
                );
                return Ok(page(StatusCode::NOT_FOUND, "No such app", &text));
            }
        };
        // Platform setting: apps answer only over HTTPS (the controller stays reachable for the CLI).
        if !https && table.settings.https_only && matches!(target, Target::App(_)) {
            let location = format!(
                "https://{}{}",
                host.rsplit_once(':')
                    .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
                    .map_or(host.as_str(), |(h, _)| h),
                req.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            let mut resp = page(StatusCode::MOVED_PERMANENTLY, "Moved", "This app is served over HTTPS.");
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return Ok(resp);
        }
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map(str::to_owned)
            .unwrap_or_else(|| self.next_request_id());
        let candidates = table.candidates(&target, &self.ejections);
        if let Target::App(name) = &target
            && candidates.is_empty()
            && !table.is_app(name)
        {
            // A name that is no app (never created, or destroyed): not an outage of anything.
            let text = format!(
                "There is no app named {}. `deis apps` lists yours; `deis create {}` makes it.",
                escape(name.as_str()),
                escape(name.as_str())
            );
            return Ok(page(StatusCode::NOT_FOUND, "No such app", &text));
        }
        if candidates.is_empty() {
            let text = format!(
                "Nothing serves {} right now: no such app is deployed, or none of its containers is healthy. See `deis ps` and `deis logs`.",
                escape(&app)
            );
            let (method, path) = (req.method().clone(), req.uri().to_string());
            let resp = page(StatusCode::SERVICE_UNAVAILABLE, "No healthy containers", &text);
            return Ok(self.finish(
                &Exchange {
                    table: &table,
                    target: &target,
                    method: &method,
                    path: &path,
                    host: &host,
                    start,
                    request_id: &request_id,
                    peer,
                    https,
                },
                resp,
            ));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.max_body_bytes) {
            return Ok(page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                "The request body is larger than this platform accepts.",
            ));
        }
        let upgrade = wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let method = req.method().clone();
        let path =
            req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
        let headers = forward_headers(
            req.headers(),
            peer,
            if https { self.https_port } else { self.local_port },
            https,
            &request_id,
            upgrade,
        );
        let exchange = Exchange {
            table: &table,
            target: &target,
            method: &method,
            path: &path,
            host: &host,
            start,
            request_id: &request_id,
            peer,
            https,
        };
        let has_body =
            declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);

        // Small bodies are buffered so a refused connection can be retried elsewhere with the same
        // bytes; large ones stream, and are retried only when they are empty.
        let mut streaming: Option<Incoming> = None;
        let buffered: Option<Bytes> = if !has_body {
            Some(Bytes::new())
        } else if declared.is_some_and(|n| n <= self.config.retry_buffer_bytes) {
            let limit = usize::try_from(self.config.retry_buffer_bytes).unwrap_or(usize::MAX);
            match Limited::new(req.into_body(), limit).collect().await {
                Ok(collected) => Some(collected.to_bytes()),
                Err(_) => {
                    return Ok(page(
                        StatusCode::BAD_REQUEST,
                        "Bad request",
                        "The request body could not be read.",
                    ));
                }
            }
        } else {
            streaming = Some(req.into_body());
            None
        };

        let timeout = Duration::from_secs(self.config.request_timeout_secs.max(1));
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut last_error = String::new();
        for backend in &candidates {
            let body = match (&buffered, streaming.take()) {
                (Some(bytes), _) => full(bytes.clone()),
                (None, Some(incoming)) => {
                    let limit = usize::try_from(self.config.max_body_bytes).unwrap_or(usize::MAX);
                    Limited::new(incoming, limit).map_err(|e| -> BoxError { e }).boxed()
                }
                (None, None) => break,
            };
            let mut out = Request::builder().method(method.clone()).uri(path.as_str());
            if let Some(h) = out.headers_mut() {
                *h = headers.clone();
            }
            let Ok(out) = out.body(body) else { break };
            match tokio::time::timeout(timeout, self.send(&affinity, backend, out, buffered.as_ref())).await {
                Ok(Ok(mut resp)) => {
                    if upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_side) = client_upgrade {
                            let backend_side = hyper::upgrade::on(&mut resp);
                            tokio::spawn(bridge(client_side, backend_side));
                        }
                        let (mut parts, _) = resp.into_parts();
                        strip_hop_by_hop(&mut parts.headers, true);
                        let resp = Response::from_parts(parts, full(Bytes::new()));
                        return Ok(self.finish(&exchange, resp));
                    }
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers, false);
                    parts.headers.insert(
                        "x-request-id",
                        HeaderValue::from_str(&request_id).unwrap_or(HeaderValue::from_static("-")),
                    );
                    let resp =
                        Response::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed());
                    return Ok(self.finish(&exchange, resp));
                }
                Ok(Err(error)) if error.is_connect() => {
                    // Nothing of the request reached this backend: skip it for a while, try the next.
                    self.ejections.eject(backend, Duration::from_secs(self.config.eject_secs));
                    self.metrics.ejections.inc();
                    tracing::warn!(%backend, %app, %error, "backend refused; ejected");
                    last_error = format!("{backend} refused the connection");
                    if buffered.is_none() {
                        break;
                    }
                }
                Ok(Err(error)) if idempotent && buffered.as_ref().is_some_and(Bytes::is_empty) => {
                    // The connection broke before any answer (a container killed, a node lost with
                    // the request in flight): a GET or HEAD without a body is safe to send again,
                    // as browsers and nginx do. Not ejected: a kept-alive connection the backend
                    // closed looks the same; a dead backend is ejected by its next refused connect.
                    tracing::warn!(%backend, %app, %error, "backend failed before answering; retrying elsewhere");
                    last_error = format!("{backend}: {error}");
                }
                Ok(Err(error)) => {
                    last_error = format!("{backend}: {error}");
                    break;
                }
                Err(_) => {
                    self.ejections.eject(backend, Duration::from_secs(self.config.eject_secs));
                    let resp =
                        page(StatusCode::GATEWAY_TIMEOUT, "Timed out", "The app did not answer in time.");
                    return Ok(self.finish(&exchange, resp));
                }
            }
        }
        tracing::warn!(%app, error = %last_error, "no backend answered");
        let resp = page(StatusCode::BAD_GATEWAY, "Bad gateway", "The app's containers could not be reached.");
        Ok(self.finish(&exchange, resp))
    }

    /// Counts the request and writes its access line into the app's log stream.
    fn finish(&self, x: &Exchange<'_>, resp: Response<Body>) -> Response<Body> {
        let Exchange { table, target, method, path, host, start, request_id, peer, https } = *x;
        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        let app = match target {
            Target::App(app) => Some(app.clone()),
            _ => None,
        };
        let handles = match &app {
            Some(app) => {
                table.app_metrics.get(app).cloned().unwrap_or_else(|| self.metrics.for_app(app.as_str()))
            }
            None => table.controller_metrics.clone().unwrap_or_else(|| self.metrics.for_app("deis")),
        };
        handles.observe(status, elapsed);
        let mut resp = resp;
        let hsts = table
            .settings
            .hsts_max_age
            .filter(|_| https)
            .and_then(|age| HeaderValue::from_str(&format!("max-age={age}")).ok());
        if let Some(value) = hsts {
            resp.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, value);
        }
        if let (Some(app), Some(access)) = (app, &self.access) {
            let bytes = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let message = format!(
                "method={} path=\"{}\" host={} fwd=\"{}\" status={status} bytes={bytes} service={}ms request_id={request_id}",
                method,
                path,
                host,
                peer.ip(),
                elapsed.as_millis()
            );
            let line = LogLine {
                app: app.clone(),
                time: Timestamp::now(),
                source: LogSource::Router,
                stream: Stream::Stdout,
                node: None,
                seq: 0,
                message,
            };
            if access.try_send(line).is_err() {
                self.metrics.access_lines_dropped.inc();
            }
        }
        resp
    }
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// What the access line and metrics need to know of one request.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    table: &'a Table,
    target: &'a Target,
    method: &'a hyper::Method,
    path: &'a str,
    host: &'a str,
    start: Instant,
    request_id: &'a str,
    peer: SocketAddr,
    https: bool,
}

/// Backend connections owned by one client connection. An HTTP/1.1 client sends one request at a
/// time, so its requests can reuse the same backend connection with no shared pool and no lock
/// contention between clients.
#[derive(Default)]
pub struct Affinity {
    conns: std::sync::Mutex<HashMap<String, SendRequest<Body>>>,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Affinity").finish_non_exhaustive()
    }
}

/// Why a request could not be sent to a backend.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing of the request reached the backend.
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connecting: {e}"),
            SendError::Http(e) => write!(f, "{e}"),
        }
    }
}

impl Proxy {
    async fn connect(&self, backend: &str) -> Result<SendRequest<Body>, SendError> {
        let connect = tokio::net::TcpStream::connect(backend);
        let stream =
            tokio::time::timeout(Duration::from_millis(self.config.connect_timeout_ms.max(1)), connect)
                .await
                .map_err(|_| {
                    SendError::Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))
                })?
                .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Sends a request on this client connection's backend connection, or a new one. A reused
    /// connection the backend closed meanwhile is replaced, and a buffered request sent again.
    async fn send(
        &self,
        affinity: &Affinity,
        backend: &str,
        req: Request<Body>,
        buffered: Option<&Bytes>,
    ) -> Result<Response<Incoming>, SendError> {
        let cached = affinity.conns.lock().ok().and_then(|mut m| m.remove(backend));
        let reused = cached.is_some();
        let mut sender = match cached {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.connect(backend).await?,
            },
            None => self.connect(backend).await?,
        };
        let (parts, body) = req.into_parts();
        let copy = buffered.map(|b| Request::from_parts(parts.clone(), full(b.clone())));
        let result = match sender.send_request(Request::from_parts(parts, body)).await {
            Err(e)
                if reused
                    && copy.is_some()
                    && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
            {
                sender = self.connect(backend).await?;
                match copy {
                    Some(again) => sender.send_request(again).await,
                    None => Err(e),
                }
            }
            other => other,
        };
        let resp = result.map_err(SendError::Http)?;
        if let Ok(mut m) = affinity.conns.lock() {
            m.insert(backend.to_owned(), sender);
        }
        Ok(resp)
    }
}

/// The headers sent on to the backend.
fn forward_headers(
    incoming: &HeaderMap,
    peer: SocketAddr,
    port: u16,
    https: bool,
    request_id: &str,
    upgrade: bool,
) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers, upgrade);
    let xff = match incoming.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let set = |h: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(&mut headers, "x-forwarded-for", &xff);
    if !incoming.contains_key("x-forwarded-proto") {
        set(&mut headers, "x-forwarded-proto", if https { "https" } else { "http" });
    }
    if !incoming.contains_key("x-forwarded-port") {
        set(&mut headers, "x-forwarded-port", &port.to_string());
    }
    set(&mut headers, "x-request-id", request_id);
    headers
}

/// Removes hop-by-hop headers, and those the Connection header names. An upgrade keeps its
/// `Upgrade` and `Connection: upgrade`, which the next hop needs to switch protocols.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    for name in HOP_BY_HOP.iter().map(|s| s.to_string()).chain(named) {
        headers.remove(name.as_str());
    }
    if let (true, Some(u)) = (upgrade, upgrade_value) {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

async fn bridge(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(backend)) = (client.await, backend.await) else { return };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let out = forward_headers(&h, peer, 80, false, "rid", false);
        assert!(
            out.get("x-secret").is_none() && out.get("keep-alive").is_none() && out.get(header::TE).is_none()
        );
        assert_eq!(out.get("x-app").unwrap(), "kept");
        assert_eq!(out.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(out.get("x-forwarded-port").unwrap(), "80");
        assert_eq!(out.get("x-request-id").unwrap(), "rid");
    }

    #[test]
    fn forwarded_for_is_appended_and_upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        let out = forward_headers(&h, "10.0.0.1:1".parse().unwrap(), 443, true, "r", true);
        assert_eq!(out.get("x-forwarded-for").unwrap(), "1.1.1.1, 10.0.0.1");
        assert_eq!(out.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(out.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn error_pages_escape_the_host() {
        assert_eq!(escape("<script>"), "&lt;script&gt;");
    }
}
