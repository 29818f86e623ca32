//! The callout against a real nats-server (the platform's pinned build): a log consumer with the
//! right password reads only its granted drain subject, a wrong password is refused at connect,
//! and an expired user JWT makes the server drop the client, whose reconnect is checked again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, ServerError};
use bus_auth::{CalloutConfig, Credentials, Grant};
use futures::StreamExt;
use nkeys::KeyPair;
use service_kit::testing::free_port;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ACCOUNT: &str = "DEIS";
const READER: &str = "alice";
const READER_TOKEN: &str = "tok-alice-1";
const APP_A: &str = "deis.drain.app-a";
const APP_B: &str = "deis.drain.app-b";

/// A nats-server process, killed when dropped (so also when a test panics).
struct NatsServer {
    child: Child,
    url: String,
    auth_password: String,
    publisher_password: String,
    _dir: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DEIS_TEST_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose/nats-server");
    let out = Command::new(&script).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The server config this crate documents: the callout user and a static publisher bypass
/// the callout through `auth_users`; everyone else is sent to the service.
fn config(port: u16, issuer: &str, auth_password: &str, publisher_password: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:{port}"
accounts {{
  {ACCOUNT} {{
    users: [
      {{ user: "auth", password: "{auth_password}" }}
      {{ user: "publisher", password: "{publisher_password}", permissions: {{ publish: {{ allow: ["deis.drain.>"] }}, subscribe: {{ deny: [">"] }} }} }}
    ]
  }}
}}
authorization {{
  auth_callout {{
    issuer: "{issuer}"
    account: {ACCOUNT}
    auth_users: [ "auth", "publisher" ]
  }}
}}
"#
    )
}

fn start_server(issuer: &KeyPair) -> NatsServer {
    let binary = nats_server_binary();
    let dir = tempfile::tempdir().unwrap();
    let auth_password = uuid::Uuid::new_v4().simple().to_string();
    let publisher_password = uuid::Uuid::new_v4().simple().to_string();
    let port = free_port();
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, config(port, &issuer.public_key(), &auth_password, &publisher_password)).unwrap();

    let check = Command::new(&binary).arg("-t").arg("-c").arg(&conf).output().unwrap();
    assert!(check.status.success(), "config refused: {}", String::from_utf8_lossy(&check.stderr));

    let log = std::fs::File::create(dir.path().join("nats.log")).unwrap();
    let child = Command::new(&binary).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let mut server = NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        auth_password,
        publisher_password,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(server._dir.path().join("nats.log")).unwrap_or_default();
            panic!("nats-server exited ({status}): {log}");
        }
        assert!(Instant::now() < deadline, "nats-server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// Who asked the check, and whether it was let in: lets tests see each (re-)check.
type Calls = Arc<Mutex<Vec<(String, bool)>>>;

/// Runs the service as `auth`. `reader_allowed` switches the reader's access off at will.
async fn start_callout(
    server: &NatsServer,
    issuer: KeyPair,
    ttl: Duration,
    reader_allowed: Arc<AtomicBool>,
) -> (Calls, CancellationToken, tokio::task::JoinHandle<()>) {
    let client = ConnectOptions::with_user_and_password("auth".into(), server.auth_password.clone())
        .connect(&server.url)
        .await
        .unwrap();
    let config = CalloutConfig { issuer, account: ACCOUNT.to_owned(), ttl };
    let bound = bus_auth::bind(client, config).await.unwrap();
    let calls: Calls = Arc::default();
    let cancel = CancellationToken::new();
    let authorize = {
        let calls = calls.clone();
        move |credentials: Credentials| {
            let ok = credentials.user == READER
                && credentials.password == READER_TOKEN
                && reader_allowed.load(Ordering::SeqCst);
            calls.lock().unwrap().push((credentials.user.clone(), ok));
            async move { Ok(ok.then(|| Grant { subscribe_allow: vec![APP_A.to_owned()] })) }
        }
    };
    let task = tokio::spawn(bound.serve(authorize, cancel.clone()));
    (calls, cancel, task)
}

/// Connects with an event channel, so tests can see server errors and disconnects.
async fn connect_reader(
    server: &NatsServer,
    password: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<Event>), async_nats::ConnectError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = ConnectOptions::with_user_and_password(READER.into(), password.into())
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(&server.url)
        .await?;
    Ok((client, rx))
}

async fn publisher(server: &NatsServer) -> Client {
    ConnectOptions::with_user_and_password("publisher".into(), server.publisher_password.clone())
        .connect(&server.url)
        .await
        .unwrap()
}

/// Waits for an event matching `want`, returning the events seen before it.
async fn wait_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    within: Duration,
    want: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if want(&event) => return seen,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("event channel closed; seen {seen:?}"),
            Err(_) => panic!("no matching event within {within:?}; seen {seen:?}"),
        }
    }
}

fn server_error_containing(event: &Event, text: &str) -> bool {
    matches!(event, Event::ServerError(ServerError::Other(message)) if message.to_lowercase().contains(&text.to_lowercase()))
}

async fn next_payload(sub: &mut async_nats::Subscriber, within: Duration) -> Option<String> {
    match tokio::time::timeout(within, sub.next()).await {
        Ok(Some(message)) => Some(String::from_utf8_lossy(&message.payload).into_owned()),
        Ok(None) | Err(_) => None,
    }
}

#[tokio::test]
async fn reader_sees_only_its_granted_drain_and_cannot_publish() {
    let issuer = KeyPair::new_account();
    let server = start_server(&issuer);
    let (calls, cancel, task) =
        start_callout(&server, issuer, Duration::from_secs(60), Arc::new(AtomicBool::new(true))).await;

    let (reader, mut events) = connect_reader(&server, READER_TOKEN).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), [(READER.to_owned(), true)]);

    let mut sub_a = reader.subscribe(APP_A).await.unwrap();
    let mut sub_b = reader.subscribe(APP_B).await.unwrap();
    reader.flush().await.unwrap();
    wait_event(&mut events, Duration::from_secs(5), |e| {
        server_error_containing(e, &format!("permissions violation for subscription to \"{APP_B}\""))
    })
    .await;

    let publisher = publisher(&server).await;
    publisher.publish(APP_B, "line-b".into()).await.unwrap();
    publisher.publish(APP_A, "line-a".into()).await.unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(next_payload(&mut sub_a, Duration::from_secs(5)).await.as_deref(), Some("line-a"));
    assert_eq!(next_payload(&mut sub_b, Duration::from_millis(500)).await, None);

    // Publishing, even to its own drain subject, is refused.
    reader.publish(APP_A, "forged".into()).await.unwrap();
    reader.flush().await.unwrap();
    wait_event(&mut events, Duration::from_secs(5), |e| {
        server_error_containing(e, &format!("permissions violation for publish to \"{APP_A}\""))
    })
    .await;
    assert_eq!(next_payload(&mut sub_a, Duration::from_millis(500)).await, None);

    // Nobody can forge a request: the server refuses client publishes on the callout subject,
    // even from the unrestricted callout user (malformed requests are covered by unit tests).
    let (tx, mut auth_events) = mpsc::unbounded_channel();
    let auth = ConnectOptions::with_user_and_password("auth".into(), server.auth_password.clone())
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .connect(&server.url)
        .await
        .unwrap();
    auth.publish(bus_auth::CALLOUT_SUBJECT, "not a jwt".into()).await.unwrap();
    auth.flush().await.unwrap();
    wait_event(&mut auth_events, Duration::from_secs(5), |e| {
        server_error_containing(
            e,
            &format!("permissions violation for publish to \"{}\"", bus_auth::CALLOUT_SUBJECT),
        )
    })
    .await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}

#[tokio::test]
async fn wrong_password_is_refused_at_connect_quickly() {
    let issuer = KeyPair::new_account();
    let server = start_server(&issuer);
    let (calls, _cancel, _task) =
        start_callout(&server, issuer, Duration::from_secs(60), Arc::new(AtomicBool::new(true))).await;

    let started = Instant::now();
    let error = connect_reader(&server, "wrong").await.err().unwrap();
    assert_eq!(error.kind(), ConnectErrorKind::AuthorizationViolation, "{error}");
    // Answered by the service, not left to the server's auth timeout (2 s by default).
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert_eq!(*calls.lock().unwrap(), [(READER.to_owned(), false)]);

    // No password at all is refused without consulting the check.
    let error = ConnectOptions::new().connect(&server.url).await.err().unwrap();
    assert_eq!(error.kind(), ConnectErrorKind::AuthorizationViolation, "{error}");
    assert_eq!(calls.lock().unwrap().len(), 1);

    // And the right one still works.
    connect_reader(&server, READER_TOKEN).await.unwrap();
}

#[tokio::test]
async fn expired_user_jwt_disconnects_and_the_reconnect_is_checked_again() {
    let issuer = KeyPair::new_account();
    let server = start_server(&issuer);
    let allowed = Arc::new(AtomicBool::new(true));
    let (calls, _cancel, _task) =
        start_callout(&server, issuer, Duration::from_secs(2), allowed.clone()).await;
    let publisher = publisher(&server).await;

    let (reader, mut events) = connect_reader(&server, READER_TOKEN).await.unwrap();
    let mut sub_a = reader.subscribe(APP_A).await.unwrap();
    reader.flush().await.unwrap();

    // First expiry while still allowed: the server drops the connection, the client comes
    // back through the callout and its subscription works again.
    wait_event(&mut events, Duration::from_secs(6), |e| server_error_containing(e, "authentication expired"))
        .await;
    wait_event(&mut events, Duration::from_secs(5), |e| matches!(e, Event::Connected)).await;
    assert_eq!(*calls.lock().unwrap(), [(READER.to_owned(), true), (READER.to_owned(), true)]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // The resubscription races the first publishes after reconnect: retry a little.
        publisher.publish(APP_A, "after-renewal".into()).await.unwrap();
        publisher.flush().await.unwrap();
        if next_payload(&mut sub_a, Duration::from_millis(300)).await.as_deref() == Some("after-renewal") {
            break;
        }
        assert!(Instant::now() < deadline, "no message after reconnect");
    }

    // Revoked: at the next expiry the server drops it again and the re-check refuses it.
    allowed.store(false, Ordering::SeqCst);
    wait_event(&mut events, Duration::from_secs(6), |e| server_error_containing(e, "authentication expired"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !calls.lock().unwrap().iter().any(|(_, ok)| !ok) {
        assert!(Instant::now() < deadline, "no re-check after expiry: {:?}", calls.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Drain what was queued, then nothing more arrives for the revoked reader.
    while next_payload(&mut sub_a, Duration::from_millis(200)).await.is_some() {}
    publisher.publish(APP_A, "after-revoke".into()).await.unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(next_payload(&mut sub_a, Duration::from_secs(1)).await, None);
    assert_ne!(reader.connection_state(), async_nats::connection::State::Connected);
}
