//! The HTTP proxy: one request in, the same request to a healthy backend of the app its Host
//! names, the answer back, streamed both ways. A backend that refuses a connection is ejected for
//! a while and the request goes to the next one (bodies small enough are buffered so they can be
//! sent again); WebSocket upgrades are bridged; hop-by-hop headers stay on their hop.

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bus_schema::messages::{LogLine, LogSource, Stream};
use bus_schema::{Bus, Timestamp};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::config::RouterConfig;
use crate::conn::Client;
use crate::metrics::Metrics;
use crate::table::{Ejections, Table, Target};
use tokio_util::sync::CancellationToken;

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
        req: Request<Incoming>,
        client: Client,
        https: bool,
        affinity: Arc<Affinity>,
    ) -> Result<Response<Body>, Infallible> {
        let start = Instant::now();
        let host = request_host(&req);
        let table = self.table.load_full();
        let target = table.resolve(&host);
        let Some(app) = app_label(&target) else {
            return Ok(unknown_host(&host));
        };
        // Platform setting: apps answer only over HTTPS (the controller stays reachable for the CLI).
        if !https && table.settings.https_only && matches!(target, Target::App(_)) {
            return Ok(https_redirect(&host, req.uri()));
        }
        let request_id = self.request_id(req.headers());
        let candidates = table.candidates(&target, &self.ejections);
        let routed = Routed {
            table: &table,
            target: &target,
            app,
            host: &host,
            start,
            request_id: &request_id,
            client,
            https,
        };
        if candidates.is_empty() {
            return Ok(self.no_backend(&routed, &req));
        }
        Ok(self.forward(&routed, req, &candidates, &affinity).await)
    }

    /// The client's own request id when it sent a usable one, so one request can be followed
    /// through every proxy it crosses; a new one otherwise.
    fn request_id(&self, headers: &HeaderMap) -> String {
        headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map(str::to_owned)
            .unwrap_or_else(|| self.next_request_id())
    }

    /// The answer when no backend can be tried: the request is counted and logged only when it
    /// names an app that exists, since a name that is no app is not an outage of anything.
    fn no_backend(&self, routed: &Routed<'_>, req: &Request<Incoming>) -> Response<Body> {
        if let Target::App(name) = routed.target
            && !routed.table.is_app(name)
        {
            let text = format!(
                "There is no app named {}. `deis apps` lists yours; `deis create {}` makes it.",
                escape(name.as_str()),
                escape(name.as_str())
            );
            return page(StatusCode::NOT_FOUND, "No such app", &text);
        }
        let text = format!(
            "Nothing serves {} right now: no such app is deployed, or none of its containers is healthy. See `deis ps` and `deis logs`.",
            escape(routed.app)
        );
        let path = req.uri().to_string();
        let resp = page(StatusCode::SERVICE_UNAVAILABLE, "No healthy containers", &text);
        self.finish(&Exchange { routed, method: req.method(), path: &path }, resp)
    }

    /// Prepares the request for the backends (headers, body) and sends it to the first that
    /// answers.
    async fn forward(
        &self,
        routed: &Routed<'_>,
        mut req: Request<Incoming>,
        candidates: &[&str],
        affinity: &Affinity,
    ) -> Response<Body> {
        let declared = content_length(req.headers());
        if declared.is_some_and(|n| n > self.config.max_body_bytes) {
            return page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                "The request body is larger than this platform accepts.",
            );
        }
        let upgrade = wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let method = req.method().clone();
        let path =
            req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
        let headers = forward_headers(req.headers(), routed, upgrade);
        let has_body =
            declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
        // A request that declares no body goes on with an empty one. Its own stream is held, unread,
        // until the answer is back: dropping it would have HTTP/2 discard what the client may still
        // send on it before the backend has answered.
        let (body, _unread) = if has_body {
            match self.read_body(req.into_body(), declared).await {
                Ok(body) => (body, None),
                Err(resp) => return resp,
            }
        } else {
            (Outgoing::Buffered(Bytes::new()), Some(req))
        };
        let exchange = Exchange { routed, method: &method, path: &path };
        self.try_backends(&exchange, candidates, &headers, body, client_upgrade, affinity).await
    }

    /// Small bodies are buffered so a refused connection can be retried elsewhere with the same
    /// bytes; large ones stream, and are retried only when they are empty.
    async fn read_body(&self, body: Incoming, declared: Option<u64>) -> Result<Outgoing, Response<Body>> {
        if declared.is_none_or(|n| n > self.config.retry_buffer_bytes) {
            return Ok(Outgoing::Streaming(Some(body)));
        }
        let limit = usize::try_from(self.config.retry_buffer_bytes).unwrap_or(usize::MAX);
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(Outgoing::Buffered(collected.to_bytes())),
            Err(_) => {
                Err(page(StatusCode::BAD_REQUEST, "Bad request", "The request body could not be read."))
            }
        }
    }

    /// Sends the request to each candidate in turn until one answers, or a failure leaves
    /// nothing safe to send again.
    async fn try_backends(
        &self,
        x: &Exchange<'_>,
        candidates: &[&str],
        headers: &HeaderMap,
        mut body: Outgoing,
        client_upgrade: Option<OnUpgrade>,
        affinity: &Affinity,
    ) -> Response<Body> {
        let timeout = Duration::from_secs(self.config.request_timeout_secs.max(1));
        let idempotent = matches!(*x.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut last_error = String::new();
        for backend in candidates {
            let departure = x.routed.table.departure(backend);
            if departure.is_some_and(CancellationToken::is_cancelled) {
                // Its node left after this request read the table: nothing was sent there.
                last_error = format!("{backend}: its node left the cluster");
                continue;
            }
            let Some(out) = self.backend_request(x, headers, &mut body) else { break };
            let sent = tokio::time::timeout(timeout, self.send(affinity, backend, out, body.buffered()));
            let answer = match departure {
                Some(token) => tokio::select! {
                    answer = sent => answer,
                    () = token.cancelled() => {
                        self.metrics.given_up.inc();
                        tracing::warn!(%backend, app = %x.routed.app, "the backend's node left the cluster with the request in flight");
                        let error = format!("{backend}: its node left the cluster with the request in flight");
                        if idempotent && body.buffered().is_some_and(Bytes::is_empty) {
                            // As for a connection that broke before any answer: safe to send again.
                            last_error = error;
                            continue;
                        }
                        last_error = error;
                        break;
                    }
                },
                None => sent.await,
            };
            match answer {
                Ok(Ok(resp)) => return self.relay(x, resp, client_upgrade),
                Ok(Err(error)) => {
                    match self.after_failure(backend, x.routed.app, &error, &body, idempotent) {
                        ControlFlow::Continue(error) => last_error = error,
                        ControlFlow::Break(error) => {
                            last_error = error;
                            break;
                        }
                    }
                }
                Err(_) => {
                    self.eject(backend);
                    let resp =
                        page(StatusCode::GATEWAY_TIMEOUT, "Timed out", "The app did not answer in time.");
                    return self.finish(x, resp);
                }
            }
        }
        tracing::warn!(app = %x.routed.app, error = %last_error, "no backend answered");
        let resp = page(StatusCode::BAD_GATEWAY, "Bad gateway", "The app's containers could not be reached.");
        self.finish(x, resp)
    }

    /// The request for the next backend; `None` once a streamed body has gone to an earlier one
    /// and cannot be sent again.
    fn backend_request(
        &self,
        x: &Exchange<'_>,
        headers: &HeaderMap,
        body: &mut Outgoing,
    ) -> Option<Request<Body>> {
        let body = match body {
            Outgoing::Buffered(bytes) => full(bytes.clone()),
            Outgoing::Streaming(incoming) => {
                let limit = usize::try_from(self.config.max_body_bytes).unwrap_or(usize::MAX);
                Limited::new(incoming.take()?, limit).map_err(|e| -> BoxError { e }).boxed()
            }
        };
        let mut out = Request::builder().method(x.method.clone()).uri(x.path);
        if let Some(h) = out.headers_mut() {
            *h = headers.clone();
        }
        out.body(body).ok()
    }

    /// Whether a failed backend may be followed by the next one; either way, what to report if
    /// none answers.
    fn after_failure(
        &self,
        backend: &str,
        app: &str,
        error: &SendError,
        body: &Outgoing,
        idempotent: bool,
    ) -> ControlFlow<String, String> {
        if error.is_connect() {
            // Nothing of the request reached this backend: skip it for a while, try the next.
            self.eject(backend);
            self.metrics.ejections.inc();
            tracing::warn!(%backend, %app, %error, "backend refused; ejected");
            let last_error = format!("{backend} refused the connection");
            return match body {
                Outgoing::Buffered(_) => ControlFlow::Continue(last_error),
                Outgoing::Streaming(_) => ControlFlow::Break(last_error),
            };
        }
        if idempotent && body.buffered().is_some_and(Bytes::is_empty) {
            // The connection broke before any answer (a container killed, a node lost with
            // the request in flight): a GET or HEAD without a body is safe to send again,
            // as browsers and nginx do. Not ejected: a kept-alive connection the backend
            // closed looks the same; a dead backend is ejected by its next refused connect.
            tracing::warn!(%backend, %app, %error, "backend failed before answering; retrying elsewhere");
            return ControlFlow::Continue(format!("{backend}: {error}"));
        }
        ControlFlow::Break(format!("{backend}: {error}"))
    }

    fn eject(&self, backend: &str) {
        self.ejections.eject(backend, Duration::from_secs(self.config.eject_secs));
    }

    /// The backend's answer as the client gets it. A switch of protocols leaves the two
    /// connections bridged by a task of their own, outliving this request.
    fn relay(
        &self,
        x: &Exchange<'_>,
        mut resp: Response<Incoming>,
        client_upgrade: Option<OnUpgrade>,
    ) -> Response<Body> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = client_upgrade
        {
            let backend_side = hyper::upgrade::on(&mut resp);
            let idle = Duration::from_secs(self.config.tunnel_idle_timeout_secs.max(1));
            tokio::spawn(bridge(client_side, backend_side, idle));
            let (mut parts, _) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            return self.finish(x, Response::from_parts(parts, full(Bytes::new())));
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        parts.headers.insert(
            "x-request-id",
            HeaderValue::from_str(x.routed.request_id).unwrap_or(HeaderValue::from_static("-")),
        );
        let resp = Response::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed());
        self.finish(x, resp)
    }

    /// Counts the request and writes its access line into the app's log stream.
    fn finish(&self, x: &Exchange<'_>, resp: Response<Body>) -> Response<Body> {
        let Exchange { routed, method, path } = *x;
        let Routed { table, target, host, start, request_id, client, https, .. } = *routed;
        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        let app = match target {
            Target::App(app) => Some(app),
            _ => None,
        };
        let handles = match app {
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
                client.addr.ip().to_canonical(),
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
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// What the Connection headers list: options such as `upgrade`, and names of headers meant for
/// this hop only.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Where one request goes, and what its access line and metrics need to know of it, all known
/// before its body is touched.
#[derive(Clone, Copy)]
struct Routed<'a> {
    table: &'a Table,
    target: &'a Target,
    /// The name the request is counted and logged under: the app's, or `deis`.
    app: &'a str,
    host: &'a str,
    start: Instant,
    request_id: &'a str,
    /// Who sent it, and to which port.
    client: Client,
    https: bool,
}

/// A routed request as it is sent on.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    routed: &'a Routed<'a>,
    method: &'a Method,
    path: &'a str,
}

/// A request's body as the backends get it.
enum Outgoing {
    /// Empty, or small enough to have been read whole: it can be sent again.
    Buffered(Bytes),
    /// Too large to keep: it goes to one backend only, and is `None` once it has.
    Streaming(Option<Incoming>),
}

impl Outgoing {
    fn buffered(&self) -> Option<&Bytes> {
        match self {
            Outgoing::Buffered(bytes) => Some(bytes),
            Outgoing::Streaming(_) => None,
        }
    }
}

/// The host a request names: its Host header, else the authority of its URI (HTTP/2 sends
/// `:authority` instead of Host).
fn request_host<B>(req: &Request<B>) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// The name a target's requests are counted and logged under; `None` when nothing is served there.
fn app_label(target: &Target) -> Option<&str> {
    match target {
        Target::App(app) => Some(app.as_str()),
        Target::Controller => Some("deis"),
        Target::Unknown => None,
    }
}

fn unknown_host(host: &str) -> Response<Body> {
    let text = format!(
        "No app is served at {}. Check the app's name, or add this domain to it with `deis domains:add`.",
        escape(host)
    );
    page(StatusCode::NOT_FOUND, "No such app", &text)
}

/// The same URL over HTTPS on the default port.
fn https_redirect(host: &str, uri: &hyper::Uri) -> Response<Body> {
    let location = format!(
        "https://{}{}",
        host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h),
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut resp = page(StatusCode::MOVED_PERMANENTLY, "Moved", "This app is served over HTTPS.");
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
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

/// What a client may say about itself or about proxies before this one. The router is the
/// edge: these are replaced, never appended to, so an app (and the controller, which throttles
/// logins by the address in `X-Forwarded-For`) sees only what the router itself knows.
const FORWARDING: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// The headers sent on to the backend.
fn forward_headers(incoming: &HeaderMap, routed: &Routed<'_>, upgrade: bool) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers, upgrade);
    for name in FORWARDING {
        headers.remove(name);
    }
    let ip = routed.client.addr.ip().to_canonical();
    let proto = if routed.https { "https" } else { "http" };
    let set = |h: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(&mut headers, "x-forwarded-for", &ip.to_string());
    set(&mut headers, "x-real-ip", &ip.to_string());
    set(&mut headers, "x-forwarded-proto", proto);
    set(&mut headers, "x-forwarded-port", &routed.client.port.to_string());
    if !routed.host.is_empty() {
        set(&mut headers, "x-forwarded-host", routed.host);
    }
    // RFC 7239: an IPv6 node is bracketed and quoted; the host is quoted (it may hold a port).
    let node = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let host = routed.host.replace('\\', "\\\\").replace('"', "\\\"");
    set(&mut headers, "forwarded", &format!("for={node};host=\"{host}\";proto={proto}"));
    set(&mut headers, "x-request-id", routed.request_id);
    headers
}

/// Removes hop-by-hop headers, and those the Connection header names. An upgrade keeps its
/// `Upgrade` and `Connection: upgrade`, which the next hop needs to switch protocols.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<String> =
        connection_tokens(headers).filter(|t| !t.is_empty()).map(str::to_ascii_lowercase).collect();
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    for name in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        headers.remove(name);
    }
    if let (true, Some(u)) = (upgrade, upgrade_value) {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Joins an upgraded client connection to its backend's for as long as either carries traffic.
async fn bridge(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade, idle: Duration) {
    let (Ok(client), Ok(backend)) = (client.await, backend.await) else { return };
    let mut backend = TokioIo::new(backend);
    crate::conn::tunnel(TokioIo::new(client), &mut backend, idle).await;
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers a request from `client` (to `port`) gets on its way to the backend.
    fn forwarded(h: &HeaderMap, client: &str, port: u16, https: bool, upgrade: bool) -> HeaderMap {
        let table = Table::default();
        let routed = Routed {
            table: &table,
            target: &Target::Unknown,
            app: "shop",
            host: "shop.deis.local",
            start: Instant::now(),
            request_id: "rid",
            client: Client { addr: client.parse().unwrap(), port },
            https,
        };
        forward_headers(h, &routed, upgrade)
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        let out = forwarded(&h, "10.1.2.3:5555", 80, false, false);
        assert!(
            out.get("x-secret").is_none() && out.get("keep-alive").is_none() && out.get(header::TE).is_none()
        );
        assert_eq!(out.get("x-app").unwrap(), "kept");
        assert_eq!(out.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(out.get("x-forwarded-port").unwrap(), "80");
        assert_eq!(out.get("x-request-id").unwrap(), "rid");
    }

    #[test]
    fn what_a_client_says_of_itself_is_replaced_and_upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "1.1.1.1"),
            ("forwarded", "for=1.1.1.1;proto=https"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        let out = forwarded(&h, "10.0.0.1:1", 8080, false, true);
        let all =
            |name: &str| out.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(all("x-forwarded-for"), ["10.0.0.1"]);
        assert_eq!(all("x-real-ip"), ["10.0.0.1"]);
        assert_eq!(all("x-forwarded-proto"), ["http"]);
        assert_eq!(all("x-forwarded-host"), ["shop.deis.local"]);
        assert_eq!(all("x-forwarded-port"), ["8080"]);
        assert_eq!(all("forwarded"), ["for=10.0.0.1;host=\"shop.deis.local\";proto=http"]);
        assert_eq!(out.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(out.get(header::CONNECTION).unwrap(), "upgrade");

        // An IPv6 client, and one seen as an IPv4-mapped address, over HTTPS.
        let out = forwarded(&HeaderMap::new(), "[2001:db8::5]:1", 443, true, false);
        assert_eq!(
            out.get("forwarded").unwrap(),
            "for=\"[2001:db8::5]\";host=\"shop.deis.local\";proto=https"
        );
        let out = forwarded(&HeaderMap::new(), "[::ffff:192.0.2.9]:1", 443, true, false);
        assert_eq!(out.get("x-forwarded-for").unwrap(), "192.0.2.9");
    }

    #[test]
    fn error_pages_escape_the_host() {
        assert_eq!(escape("<script>"), "&lt;script&gt;");
    }
}
