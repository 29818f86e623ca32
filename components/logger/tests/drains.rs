//! Drains against real receivers on loopback: a syslog receiver over TCP and TLS whose messages
//! a standard RFC 5424 parser must accept, and an HTTPS receiver that records Logplex frames.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_schema::envelope::Timestamp;
use bus_schema::messages::{LogLine, LogSource, Stream};
use bus_schema::names::{AppName, ProcessType};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use logger::drains::{Drain, DrainSettings, DrainShared, DrainStats, DrainUrl};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use service_kit::testing::{eventually, free_port};
use service_kit::{OutboundPolicy, Shutdown};
use syslog_rfc5424::message::ProcId;
use syslog_rfc5424::{SyslogFacility, SyslogMessage, SyslogSeverity};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const PATIENCE: Duration = Duration::from_secs(20);

fn app() -> AppName {
    AppName::parse("drain-test-app").unwrap()
}

fn line(n: u64, stream: Stream) -> LogLine {
    LogLine {
        app: app(),
        time: Timestamp::now(),
        source: LogSource::App { process_type: ProcessType::parse("web").unwrap(), index: 1 },
        stream,
        node: None,
        seq: n,
        message: format!("line {n}"),
    }
}

fn settings(buffer_lines: usize) -> DrainSettings {
    DrainSettings {
        buffer_lines,
        batch_lines: 4,
        batch_wait_ms: 20,
        connect_timeout_ms: 2_000,
        retry_max_secs: 1,
        extra_ca_file: None,
        hostname: "deis-test-host".to_owned(),
        // The receivers here are on loopback, which drains refuse unless the operator allows it.
        outbound: OutboundPolicy { denied: vec![], allowed: vec!["127.0.0.0/8".into(), "localhost".into()] },
    }
}

/// A drain of the test app to `url`, named `id`.
fn spawn_drain(id: &str, url: &str, settings: &DrainSettings, shutdown: &Shutdown) -> Drain {
    let shared = DrainShared::new(settings).unwrap();
    Drain::spawn(app(), id.into(), DrainUrl::parse(url).unwrap(), shared, shutdown)
}

/// Sends the test app's lines numbered `numbers`, all on stdout.
fn send_lines(drain: &Drain, numbers: std::ops::Range<u64>) {
    for n in numbers {
        drain.send(&line(n, Stream::Stdout));
    }
}

/// Splits octet-counted frames (`<len> <message>`); panics on anything else, which fails the test.
fn split_frames(mut bytes: &[u8]) -> Vec<String> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let space = bytes.iter().position(|b| *b == b' ').expect("a frame length ends with a space");
        let len: usize =
            std::str::from_utf8(&bytes[..space]).unwrap().parse().expect("a decimal frame length");
        let rest = &bytes[space + 1..];
        assert!(rest.len() >= len, "frame of {len} octets, only {} left", rest.len());
        messages.push(String::from_utf8(rest[..len].to_vec()).expect("UTF-8 message"));
        bytes = &rest[len..];
    }
    messages
}

/// Parses with a standard RFC 5424 parser and checks what it does not: every header field is
/// PRINTUSASCII.
fn parse(message: &str) -> SyslogMessage {
    let parsed =
        syslog_rfc5424::parse_message(message).unwrap_or_else(|e| panic!("not RFC 5424 ({e}): {message:?}"));
    let header: Vec<&str> = message.splitn(8, ' ').collect();
    assert_eq!(header.len(), 8, "{message:?}");
    for field in &header[..7] {
        assert!(field.bytes().all(|b| b.is_ascii_graphic()), "field {field:?} of {message:?}");
    }
    assert_eq!(parsed.version, 1);
    assert_eq!(parsed.facility, SyslogFacility::LOG_USER);
    assert_eq!(parsed.hostname.as_deref(), Some("deis-test-host"));
    assert_eq!(parsed.appname.as_deref(), Some("drain-test-app"));
    assert_eq!(parsed.msgid, None);
    assert!(parsed.sd.is_empty());
    parsed
}

fn procid(m: &SyslogMessage) -> String {
    match &m.procid {
        Some(ProcId::Name(name)) => name.clone(),
        other => panic!("procid {other:?}"),
    }
}

fn is_notice(m: &SyslogMessage, dropped: u64) -> bool {
    procid(m) == "deis-logger"
        && m.severity == SyslogSeverity::SEV_ERR
        && m.msg
            .starts_with(&format!("Error L10 (output buffer overflow): {dropped} messages dropped since "))
}

// ---------------------------------------------------------------------------------------------
// A syslog receiver.

/// What a syslog receiver got: each message with the number of the connection it came on.
#[derive(Clone, Default)]
struct SyslogReceiver {
    messages: Arc<Mutex<Vec<(usize, String)>>>,
    connections: Arc<AtomicUsize>,
    handshake_failures: Arc<AtomicUsize>,
}

impl SyslogReceiver {
    /// Accepts connections on `listener`; with `close_first_after`, the first connection is
    /// closed by the receiver once it has read that many messages.
    fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, close_first_after: Option<usize>) -> Self {
        let receiver = SyslogReceiver::default();
        let r = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let r = r.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let conn = r.connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let limit = if conn == 1 { close_first_after } else { None };
                    match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => r.read(conn, stream, limit).await,
                            Err(_) => {
                                r.handshake_failures.fetch_add(1, Ordering::SeqCst);
                            }
                        },
                        None => r.read(conn, tcp, limit).await,
                    }
                });
            }
        });
        receiver
    }

    /// A receiver on a loopback port of its own, and the port.
    async fn on_loopback(tls: Option<TlsAcceptor>, close_first_after: Option<usize>) -> (Self, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (Self::serve(listener, tls, close_first_after), port)
    }

    async fn read(&self, conn: usize, mut stream: impl tokio::io::AsyncRead + Unpin, limit: Option<usize>) {
        let mut pending = Vec::new();
        let mut taken = 0;
        let mut buf = [0u8; 4096];
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            // Take every complete frame; keep a partial one for the next read.
            while let Some(space) = pending.iter().position(|b| *b == b' ') {
                let len: usize =
                    match std::str::from_utf8(&pending[..space]).ok().and_then(|s| s.parse().ok()) {
                        Some(len) => len,
                        None => {
                            let junk = String::from_utf8_lossy(&pending).into_owned();
                            self.messages.lock().unwrap().push((conn, format!("BAD FRAMING: {junk}")));
                            return;
                        }
                    };
                if pending.len() < space + 1 + len {
                    break;
                }
                let message = String::from_utf8_lossy(&pending[space + 1..space + 1 + len]).into_owned();
                pending.drain(..space + 1 + len);
                self.messages.lock().unwrap().push((conn, message));
                taken += 1;
                if limit == Some(taken) {
                    return;
                }
            }
        }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().iter().map(|(_, m)| m.clone()).collect()
    }

    fn parsed(&self) -> Vec<SyslogMessage> {
        self.messages().iter().map(|m| parse(m)).collect()
    }

    fn on_connection(&self, conn: usize) -> Vec<String> {
        self.messages.lock().unwrap().iter().filter(|(c, _)| *c == conn).map(|(_, m)| m.clone()).collect()
    }
}

/// Waits until the receiver holds `n` messages, then parses them all.
async fn wait_for(receiver: &SyslogReceiver, n: usize) -> Vec<SyslogMessage> {
    eventually(&format!("{n} syslog messages"), PATIENCE, || async {
        let got = receiver.messages();
        assert!(got.len() <= n, "more messages than sent: {got:#?}");
        (got.len() == n).then_some(())
    })
    .await;
    receiver.parsed()
}

async fn wait_for_stats(drain: &Drain, want: DrainStats) {
    eventually(&format!("drain stats {want:?}"), PATIENCE, || async {
        (drain.stats() == want).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Certificates.

struct Pki {
    ca_file: tempfile::NamedTempFile,
    acceptor: TlsAcceptor,
}

impl Pki {
    /// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "deis-test drains CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

        let ca_file =
            tempfile::Builder::new().prefix("deis-test-drain-ca").suffix(".pem").tempfile().unwrap();
        std::fs::write(ca_file.path(), ca.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Pki { ca_file, acceptor: TlsAcceptor::from(Arc::new(config)) }
    }

    fn ca_path(&self) -> PathBuf {
        self.ca_file.path().to_owned()
    }

    /// Drain settings that trust this CA besides the system's.
    fn trusted(&self, buffer_lines: usize) -> DrainSettings {
        DrainSettings { extra_ca_file: Some(self.ca_path()), ..settings(buffer_lines) }
    }
}

// ---------------------------------------------------------------------------------------------
// An HTTPS receiver.

#[derive(Debug, Clone)]
struct Post {
    /// The status the receiver answered.
    status: u16,
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Post {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
    }
}

#[derive(Clone, Default)]
struct HttpsReceiver {
    posts: Arc<Mutex<Vec<Post>>>,
    /// How many of the next requests to answer 500.
    fail_next: Arc<AtomicUsize>,
    /// While set, every request is answered 503.
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl HttpsReceiver {
    async fn start(pki: &Pki) -> (HttpsReceiver, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = HttpsReceiver::default();
        let r = receiver.clone();
        let acceptor = pki.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let r = r.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req| {
                        let r = r.clone();
                        async move { Ok::<_, Infallible>(r.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (receiver, port)
    }

    async fn handle(&self, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let status = if self.down.load(Ordering::SeqCst) {
            503
        } else if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            500
        } else {
            200
        };
        self.posts.lock().unwrap().push(Post {
            status,
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body,
        });
        hyper::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap()
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// The messages of the batches answered 2xx, in order.
    fn delivered(&self) -> Vec<SyslogMessage> {
        self.posts()
            .iter()
            .filter(|p| p.status == 200)
            .flat_map(|p| split_frames(&p.body))
            .map(|m| parse(&m))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn a_tcp_syslog_drain_delivers_rfc5424_lines_in_order() {
    let (receiver, port) = SyslogReceiver::on_loopback(None, None).await;
    let shutdown = Shutdown::new();
    let drain = spawn_drain("d1", &format!("syslog://127.0.0.1:{port}"), &settings(100), &shutdown);

    let mut sent = Vec::new();
    for n in 0..30 {
        let stream = if n % 3 == 0 { Stream::Stderr } else { Stream::Stdout };
        let mut l = line(n, stream);
        if n == 7 {
            l.source = LogSource::Router;
            l.message = "GET /index.html 200 — ünïcode, [brackets] and \"quotes\"".into();
        }
        drain.send(&l);
        sent.push(l);
    }
    let got = wait_for(&receiver, sent.len()).await;
    for (m, l) in got.iter().zip(&sent) {
        assert_eq!(m.msg, l.message);
        assert_eq!(procid(m), l.source.to_string());
        let severity =
            if l.stream == Stream::Stderr { SyslogSeverity::SEV_ERR } else { SyslogSeverity::SEV_INFO };
        assert_eq!(m.severity, severity, "{m:?}");
        let micros = l.time.0 / 1_000;
        assert_eq!(m.timestamp, Some(micros / 1_000_000), "{m:?}");
        assert_eq!(m.timestamp_nanos.map(i64::from), Some((micros % 1_000_000) * 1_000), "{m:?}");
    }
    wait_for_stats(&drain, DrainStats { delivered: 30, dropped: 0, buffered: 0 }).await;
    drain.stop().await;
}

#[tokio::test]
async fn a_tls_syslog_drain_trusts_the_extra_ca_and_only_it() {
    let pki = Pki::new();
    let (receiver, port) = SyslogReceiver::on_loopback(Some(pki.acceptor.clone()), None).await;
    let shutdown = Shutdown::new();

    // Without the CA the receiver's certificate is refused and nothing is delivered.
    let url = format!("syslog+tls://localhost:{port}");
    let refused = spawn_drain("untrusting", &url, &settings(100), &shutdown);
    refused.send(&line(0, Stream::Stdout));
    eventually("a failed handshake", PATIENCE, || async {
        (receiver.handshake_failures.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    assert_eq!(refused.stats(), DrainStats { delivered: 0, dropped: 0, buffered: 1 });
    assert!(receiver.messages().is_empty());
    refused.stop().await;

    let drain = spawn_drain("trusting", &url, &pki.trusted(100), &shutdown);
    send_lines(&drain, 0..10);
    let got = wait_for(&receiver, 10).await;
    let messages: Vec<&str> = got.iter().map(|m| m.msg.as_str()).collect();
    let want: Vec<String> = (0..10).map(|n| format!("line {n}")).collect();
    assert_eq!(messages, want);
    wait_for_stats(&drain, DrainStats { delivered: 10, dropped: 0, buffered: 0 }).await;
    drain.stop().await;
}

#[tokio::test]
async fn an_https_drain_posts_logplex_frames_and_retries_a_batch_with_its_frame_id() {
    let pki = Pki::new();
    let (receiver, port) = HttpsReceiver::start(&pki).await;
    receiver.fail_next.store(1, Ordering::SeqCst);
    let shutdown = Shutdown::new();
    let url = format!("https://user:s3cret@127.0.0.1:{port}/logs/in");
    assert!(!DrainUrl::parse(&url).unwrap().to_string().contains("s3cret"));
    let drain = spawn_drain("d-https", &url, &pki.trusted(100), &shutdown);

    let sent: Vec<LogLine> =
        (0..10).map(|n| line(n, if n == 4 { Stream::Stderr } else { Stream::Stdout })).collect();
    for l in &sent {
        drain.send(l);
    }
    wait_for_stats(&drain, DrainStats { delivered: 10, dropped: 0, buffered: 0 }).await;

    let posts = receiver.posts();
    assert!(posts.len() >= 4, "ten lines in batches of at most four, one failed: {posts:#?}");
    for post in &posts {
        assert_eq!(post.path, "/logs/in");
        assert_eq!(post.header("content-type"), "application/logplex-1");
        assert_eq!(post.header("logplex-drain-token"), "d.d-https");
        assert!(post.header("user-agent").starts_with("deis-logger/"), "{post:?}");
        // base64("user:s3cret"): the URL's credentials, as basic auth.
        assert_eq!(post.header("authorization"), "Basic dXNlcjpzM2NyZXQ=");
        let frames = split_frames(&post.body);
        assert!(!frames.is_empty() && frames.len() <= 4, "{frames:?}");
        assert_eq!(post.header("logplex-msg-count"), frames.len().to_string());
        assert!(!post.header("logplex-frame-id").is_empty());
    }
    // The failed batch came again, the same, under the same frame id.
    assert_eq!(posts[0].status, 500);
    assert_eq!(posts[1].status, 200);
    assert_eq!(posts[0].header("logplex-frame-id"), posts[1].header("logplex-frame-id"));
    assert_eq!(posts[0].body, posts[1].body);
    // Every other batch has its own frame id.
    let mut ids: Vec<&str> = posts[1..].iter().map(|p| p.header("logplex-frame-id")).collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "frame ids repeat across batches: {posts:#?}");
    assert!(posts[1..].iter().all(|p| p.status == 200));

    let got = receiver.delivered();
    assert_eq!(got.len(), sent.len());
    for (m, l) in got.iter().zip(&sent) {
        assert_eq!(m.msg, l.message);
        assert_eq!(procid(m), "web.1");
        let severity =
            if l.stream == Stream::Stderr { SyslogSeverity::SEV_ERR } else { SyslogSeverity::SEV_INFO };
        assert_eq!(m.severity, severity);
    }
    drain.stop().await;
}

#[tokio::test]
async fn a_syslog_drain_that_was_down_delivers_its_buffer_then_a_drop_notice() {
    // Nothing listens on the port yet.
    let port = free_port();
    let shutdown = Shutdown::new();
    let drain = spawn_drain("d-down", &format!("syslog://127.0.0.1:{port}"), &settings(5), &shutdown);
    send_lines(&drain, 0..12);
    // The buffer holds five; the other seven are counted.
    assert_eq!(drain.stats(), DrainStats { delivered: 0, dropped: 7, buffered: 5 });

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let receiver = SyslogReceiver::serve(listener, None, None);
    let got = wait_for(&receiver, 6).await;
    let first: Vec<&str> = got[..5].iter().map(|m| m.msg.as_str()).collect();
    assert_eq!(first, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
    assert!(is_notice(&got[5], 7), "{:?}", got[5]);
    wait_for_stats(&drain, DrainStats { delivered: 5, dropped: 7, buffered: 0 }).await;

    // Newer lines follow the notice.
    drain.send(&line(12, Stream::Stdout));
    let got = wait_for(&receiver, 7).await;
    assert_eq!(got[6].msg, "line 12");
    wait_for_stats(&drain, DrainStats { delivered: 6, dropped: 7, buffered: 0 }).await;
    drain.stop().await;
}

#[tokio::test]
async fn an_https_drain_that_was_down_delivers_its_buffer_then_a_drop_notice() {
    let pki = Pki::new();
    let (receiver, port) = HttpsReceiver::start(&pki).await;
    receiver.down.store(true, Ordering::SeqCst);
    let shutdown = Shutdown::new();
    let drain =
        spawn_drain("d-https-down", &format!("https://localhost:{port}/"), &pki.trusted(5), &shutdown);
    send_lines(&drain, 0..12);
    assert_eq!(drain.stats(), DrainStats { delivered: 0, dropped: 7, buffered: 5 });
    eventually("the receiver turning a batch away", PATIENCE, || async {
        receiver.posts().iter().any(|p| p.status == 503).then_some(())
    })
    .await;

    receiver.down.store(false, Ordering::SeqCst);
    wait_for_stats(&drain, DrainStats { delivered: 5, dropped: 7, buffered: 0 }).await;
    eventually("the drop notice", PATIENCE, || async { (receiver.delivered().len() == 6).then_some(()) })
        .await;
    let got = receiver.delivered();
    let first: Vec<&str> = got[..5].iter().map(|m| m.msg.as_str()).collect();
    assert_eq!(first, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
    assert!(is_notice(&got[5], 7), "{:?}", got[5]);
    drain.stop().await;
}

#[tokio::test]
async fn a_syslog_drain_reconnects_when_the_receiver_closes() {
    // The receiver hangs up after the first message.
    let (receiver, port) = SyslogReceiver::on_loopback(None, Some(1)).await;
    let shutdown = Shutdown::new();
    let drain = spawn_drain("d-reconnect", &format!("syslog://127.0.0.1:{port}"), &settings(100), &shutdown);
    drain.send(&line(0, Stream::Stdout));
    wait_for(&receiver, 1).await;

    // Lines written just as the connection dies may be lost (TCP does not say); later ones
    // arrive on a new connection, in order.
    let mut n = 1;
    let on_second = eventually("lines on a second connection", PATIENCE, || {
        drain.send(&line(n, Stream::Stdout));
        n += 1;
        let got = receiver.on_connection(2);
        async move { (!got.is_empty()).then_some(got) }
    })
    .await;
    let numbers: Vec<u64> =
        on_second.iter().map(|m| parse(m).msg.trim_start_matches("line ").parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 2);
    drain.stop().await;
}

#[tokio::test]
async fn stopping_a_drain_delivers_what_it_holds() {
    let (receiver, port) = SyslogReceiver::on_loopback(None, None).await;
    let shutdown = Shutdown::new();
    let drain = spawn_drain("d-stop", &format!("syslog://127.0.0.1:{port}"), &settings(1_000), &shutdown);
    send_lines(&drain, 0..200);
    drain.stop().await;
    let got = wait_for(&receiver, 200).await;
    assert!(got.iter().enumerate().all(|(n, m)| m.msg == format!("line {n}")));

    // A drain whose receiver is down still stops (giving up its lines after the grace).
    let down = format!("syslog://127.0.0.1:{}", free_port());
    let stuck = spawn_drain("d-stuck", &down, &settings(1_000), &shutdown);
    stuck.send(&line(0, Stream::Stdout));
    stuck.stop().await;
    assert!(shutdown.wait(Duration::from_secs(10)).await, "drain tasks still running after stop");
}

#[test]
fn a_bad_extra_ca_file_is_a_clear_error() {
    let missing =
        DrainSettings { extra_ca_file: Some("/nonexistent/deis-test-ca.pem".into()), ..settings(1) };
    let err = DrainShared::new(&missing).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/deis-test-ca.pem"), "{err}");
    let empty = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(empty.path(), "not a certificate\n").unwrap();
    let err = DrainShared::new(&DrainSettings { extra_ca_file: Some(empty.path().into()), ..settings(1) })
        .unwrap_err()
        .to_string();
    assert!(err.contains("no certificate"), "{err}");
}

/// A drain may not reach the platform's inside: with the default policy, a receiver on loopback
/// (by address or by a name resolving there) gets no connection, while the same receiver, once
/// the operator allows loopback, does (the control that shows the receiver was reachable).
#[tokio::test]
async fn drains_to_loopback_are_refused_unless_the_operator_allows_them() {
    let (receiver, port) = SyslogReceiver::on_loopback(None, None).await;
    let shutdown = Shutdown::new();
    let default_policy = DrainSettings { outbound: OutboundPolicy::default(), ..settings(100) };
    let by_address =
        spawn_drain("d-inside-ip", &format!("syslog://127.0.0.1:{port}"), &default_policy, &shutdown);
    let by_name =
        spawn_drain("d-inside-name", &format!("syslog://localhost:{port}"), &default_policy, &shutdown);
    send_lines(&by_address, 0..3);
    send_lines(&by_name, 0..3);
    let allowed = spawn_drain("d-allowed", &format!("syslog://127.0.0.1:{port}"), &settings(100), &shutdown);
    send_lines(&allowed, 0..3);
    wait_for_stats(&allowed, DrainStats { delivered: 3, dropped: 0, buffered: 0 }).await;
    // The refused drains tried first and retry within a second (retry_max_secs 1): by the time
    // the control delivered, each had its go.
    wait_for_stats(&by_address, DrainStats { delivered: 0, dropped: 0, buffered: 3 }).await;
    wait_for_stats(&by_name, DrainStats { delivered: 0, dropped: 0, buffered: 3 }).await;
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 1, "only the allowed drain connected");
    assert_eq!(receiver.messages().len(), 3);

    let pki = Pki::new();
    let (https, port) = HttpsReceiver::start(&pki).await;
    let refused = DrainSettings { outbound: OutboundPolicy::default(), ..pki.trusted(100) };
    let by_address = spawn_drain("d-https-ip", &format!("https://127.0.0.1:{port}/"), &refused, &shutdown);
    let by_name = spawn_drain("d-https-name", &format!("https://localhost:{port}/"), &refused, &shutdown);
    send_lines(&by_address, 0..2);
    send_lines(&by_name, 0..2);
    let allowed =
        spawn_drain("d-https-ok", &format!("https://localhost:{port}/"), &pki.trusted(100), &shutdown);
    send_lines(&allowed, 0..2);
    wait_for_stats(&allowed, DrainStats { delivered: 2, dropped: 0, buffered: 0 }).await;
    assert_eq!(by_address.stats().delivered + by_name.stats().delivered, 0);
    assert_eq!(https.posts().len(), 1, "only the allowed drain posted: {:?}", https.posts().len());
    for d in [by_address, by_name, allowed] {
        d.stop().await;
    }
}
