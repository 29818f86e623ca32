//! Wire tests: round trips, committed golden bytes, and malformed input for every message type.
//!
//! Golden files live in `bus-schema/golden/<kind>.hex`. When an encoding changes on purpose, bump
//! `SCHEMA_VERSION`, keep the old decoder, and regenerate with `UPDATE_GOLDEN=1 cargo test -p
//! bus-schema --test wire`; an accidental change fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::vec_init_then_push)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use bus_schema::codec::{self, CodecError, HEADER_LEN};
use bus_schema::messages::*;
use bus_schema::{
    AppName, Component, Envelope, Kind, Message, MessageId, NodeId, ProcessType, Sender, Timestamp,
};
use proptest::prelude::*;
use uuid::Uuid;

fn app() -> AppName {
    AppName::parse("go-example").unwrap()
}
fn node() -> NodeId {
    NodeId::parse("node2").unwrap()
}
fn web() -> ProcessType {
    ProcessType::web()
}
fn worker() -> ProcessType {
    ProcessType::parse("worker").unwrap()
}
const BUILD: Uuid = Uuid::from_u128(0x0193_5c2a_0000_7000_8000_0000_0000_0042);

fn key() -> ContainerKey {
    ContainerKey { app: app(), version: 7, process_type: web(), index: 2 }
}

fn release() -> ReleaseSpec {
    ReleaseSpec {
        app: app(),
        version: 7,
        image: "127.0.0.1:5000/go-example:git-1a2b3c4d".into(),
        processes: BTreeMap::from([(web(), "bin/server".into()), (worker(), "bin/worker -q".into())]),
        config: BTreeMap::from([
            ("DATABASE_URL".into(), "postgres://db/app".into()),
            ("POWERED_BY".into(), "Deis".into()),
        ]),
        limits: BTreeMap::from([(web(), Limits { memory_mb: Some(512), cpu_shares: None })]),
        tags: BTreeMap::from([("environ".into(), "prod".into())]),
    }
}

/// Wraps a body in a fixed envelope, so the golden bytes do not depend on the clock.
fn fixed<M: Message>(body: M) -> Envelope<M> {
    Envelope {
        id: MessageId(Uuid::from_u128(0x0193_5c2a_1111_7222_8333_4444_5555_6666)),
        time: Timestamp(1_795_780_800_123_456_789),
        sender: Sender { component: Component::Controller, instance: "controller-0".into() },
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        body,
    }
}

/// Runs `$check` once for every message type with its sample value. Adding a `Kind` without a
/// sample here fails `every_kind_has_a_sample`.
macro_rules! for_each_sample {
    ($check:ident) => {{
        let mut kinds = Vec::new();
        kinds.push($check(BuildRequested {
            app: app(),
            build_id: BUILD,
            git_sha: "1a2b3c4d5e6f".into(),
            user: "alice".into(),
        }));
        kinds.push($check(BuildLogLine {
            app: app(),
            build_id: BUILD,
            seq: 12,
            stream: Stream::Stdout,
            line: "-----> Python app detected".into(),
        }));
        kinds.push($check(BuildCompleted {
            app: app(),
            build_id: BUILD,
            git_sha: "1a2b3c4d5e6f".into(),
            user: "alice".into(),
            kind: BuildKind::Buildpack,
            image: "127.0.0.1:5000/go-example:git-1a2b3c4d".into(),
            procfile: BTreeMap::from([(web(), "python app.py".into())]),
        }));
        kinds.push($check(BuildFailed {
            app: app(),
            build_id: BUILD,
            git_sha: "1a2b3c4d5e6f".into(),
            user: "alice".into(),
            reason: "bin/compile exited with 1".into(),
        }));
        kinds.push($check(ReleaseCreated {
            release: release(),
            summary: "alice set POWERED_BY".into(),
            created_by: "alice".into(),
        }));
        kinds.push($check(FormationChanged {
            app: app(),
            formation: BTreeMap::from([(web(), 3), (worker(), 1)]),
            generation: 4,
            changed_by: "alice".into(),
        }));
        kinds.push($check(AppDestroyed { app: app(), destroyed_by: "alice".into() }));
        kinds.push($check(DesiredStateRequest {}));
        kinds.push($check(DesiredStateSnapshot {
            apps: vec![AppDesired {
                release: release(),
                formation: BTreeMap::from([(web(), 2)]),
                generation: 3,
            }],
        }));
        kinds.push($check(DesiredStatePageRequest { after: Some(app()) }));
        kinds.push($check(DesiredStatePage {
            apps: vec![AppDesired {
                release: release(),
                formation: BTreeMap::from([(web(), 2)]),
                generation: 3,
            }],
            next: Some(app()),
        }));
        kinds.push($check(AppStatusRequest { app: app() }));
        kinds.push($check(RestartRequest { app: app(), process_type: Some(web()), index: Some(2) }));
        kinds.push($check(RestartReply { restarting: 1 }));
        kinds.push($check(RunRequest {
            app: app(),
            run_id: BUILD,
            command: "python manage.py migrate".into(),
            user: "alice".into(),
        }));
        kinds.push($check(RunReply::Started { node: node() }));
        kinds.push($check(RunOneOff {
            app: app(),
            run_id: BUILD,
            version: 7,
            image: "127.0.0.1:5000/go-example:git-1a2b3c4d".into(),
            command: "ls -l".into(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            limits: Limits::default(),
        }));
        kinds.push($check(RunExited { run_id: BUILD, exit_code: Some(3) }));
        kinds.push($check(AppStatus {
            app: app(),
            containers: vec![ContainerView {
                key: key(),
                node: node(),
                state: "up".into(),
                since: Timestamp(1_795_780_000_000_000_000),
            }],
            deploy: Some(DeployState::Failed {
                version: 8,
                serving: Some(7),
                reason: "web.1 never passed its health check".into(),
            }),
        }));
        kinds.push($check(StartContainer {
            key: key(),
            image: "127.0.0.1:5000/go-example:git-1a2b3c4d".into(),
            command: "bin/server".into(),
            env: BTreeMap::from([("PORT".into(), "5000".into())]),
            limits: Limits { memory_mb: Some(256), cpu_shares: Some(512) },
            health: Some(HealthCheck { path: "/healthz".into(), timeout_ms: 1000, initial_delay_ms: 500 }),
        }));
        kinds.push($check(StartContainerReply::Started {
            container_id: "f00dfeed".into(),
            host_port: Some(32768),
        }));
        kinds.push($check(StopContainer { key: key(), grace_secs: 10 }));
        kinds.push($check(StopContainerReply::Failed { reason: "engine unreachable".into() }));
        kinds.push($check(ContainerEvent {
            node: node(),
            key: key(),
            kind: ContainerEventKind::Exited,
            container_id: "f00dfeed".into(),
            exit_code: Some(137),
            detail: "killed".into(),
        }));
        kinds.push($check(NodeHeartbeat {
            node: node(),
            address: "10.0.0.2".into(),
            capacity: Capacity { memory_mb: 8192, cpus: 4 },
            allocated: Capacity { memory_mb: 1024, cpus: 1 },
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            containers: 3,
        }));
        kinds.push($check(NodeInventory {
            node: node(),
            containers: vec![ContainerStatus {
                key: key(),
                container_id: "f00dfeed".into(),
                healthy: true,
                running: true,
                host_port: Some(32768),
                started_at: Timestamp(1_795_780_000_000_000_000),
            }],
        }));
        kinds.push($check(LogLine {
            app: app(),
            time: Timestamp(1_795_780_800_123_456_789),
            source: LogSource::App { process_type: web(), index: 2 },
            stream: Stream::Stderr,
            node: Some(node()),
            seq: 99,
            message: "GET / 200 — ünïcode ok".into(),
        }));
        kinds.push($check(ControllerEvent {
            app: app(),
            actor: "alice".into(),
            action: "scale".into(),
            message: "alice scaled web=3".into(),
        }));
        kinds.push($check(LogQuery {
            app: app(),
            lines: 500,
            since: Some(Timestamp(1_795_780_000_000_000_000)),
            process: Some("web".into()),
            contains: Some("GET /".into()),
        }));
        kinds.push($check(LogQueryReply {
            lines: vec![LogLine {
                app: app(),
                time: Timestamp(1_795_780_800_123_456_789),
                source: LogSource::Router,
                stream: Stream::Stdout,
                node: None,
                seq: 1,
                message: "method=GET path=/ status=200".into(),
            }],
            error: None,
        }));
        kinds
    }};
}

fn golden_path(kind: Kind) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(format!("{}.hex", kind.name()))
}

fn round_trip<M: Message + PartialEq>(body: M) -> Kind {
    let env = fixed(body);
    let bytes = codec::encode(&env).unwrap();
    let back: Envelope<M> = codec::decode(&bytes).unwrap();
    assert_eq!(back, env, "{} did not survive a round trip", M::KIND);
    M::KIND
}

#[test]
fn every_message_round_trips() {
    for_each_sample!(round_trip);
}

#[test]
fn every_kind_has_a_sample() {
    let mut covered = for_each_sample!(round_trip);
    covered.sort();
    let mut all = Kind::ALL.to_vec();
    all.sort();
    assert_eq!(covered, all, "a message kind has no sample in tests/wire.rs");
}

fn golden<M: Message + PartialEq>(body: M) -> Kind {
    let env = fixed(body);
    let bytes = codec::encode(&env).unwrap();
    let path = golden_path(M::KIND);
    let hex_now = hex::encode(&bytes);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, format!("{hex_now}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no golden file {} (run with UPDATE_GOLDEN=1 once)", path.display()));
    assert_eq!(
        hex_now,
        committed.trim(),
        "the encoding of {} changed; if on purpose, bump SCHEMA_VERSION and regenerate the golden files",
        M::KIND
    );
    // The committed bytes must also still decode to the same value.
    let old: Envelope<M> = codec::decode(&hex::decode(committed.trim()).unwrap()).unwrap();
    assert_eq!(old, env);
    M::KIND
}

#[test]
fn encodings_match_the_committed_golden_bytes() {
    for_each_sample!(golden);
}

fn truncations_fail<M: Message + PartialEq>(body: M) -> Kind {
    let bytes = codec::encode(&fixed(body)).unwrap();
    for cut in 0..bytes.len() {
        assert!(
            codec::decode::<M>(&bytes[..cut]).is_err(),
            "{} decoded from {cut} of {} bytes",
            M::KIND,
            bytes.len()
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(codec::decode::<M>(&longer), Err(CodecError::TrailingBytes { extra: 1, .. })));
    M::KIND
}

#[test]
fn truncated_or_padded_messages_are_refused() {
    for_each_sample!(truncations_fail);
}

fn other_versions_fail<M: Message + PartialEq>(body: M) -> Kind {
    let mut bytes = codec::encode(&fixed(body)).unwrap();
    for version in [0u16, 2, 0xffff] {
        bytes[2..4].copy_from_slice(&version.to_be_bytes());
        match codec::decode::<M>(&bytes) {
            Err(CodecError::UnsupportedVersion { found }) => assert_eq!(found, version),
            other => panic!("version {version} gave {other:?}"),
        }
    }
    M::KIND
}

#[test]
fn other_schema_versions_are_refused_clearly() {
    for_each_sample!(other_versions_fail);
}

#[test]
fn a_message_of_another_kind_is_refused() {
    let bytes = codec::encode(&fixed(AppDestroyed { app: app(), destroyed_by: "a".into() })).unwrap();
    let err = codec::decode::<ReleaseCreated>(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::WrongKind { expected: Kind::ReleaseCreated, found: 12 }), "{err}");
    assert!(err.to_string().contains("release_created"));
}

#[test]
fn bad_names_inside_a_message_are_refused_at_decode() {
    // Encode a message whose app name field holds an invalid name, by hand-patching the bytes of
    // a valid one of the same length ("go-example" -> "Go.Example").
    let bytes = codec::encode(&fixed(AppDestroyed { app: app(), destroyed_by: "a".into() })).unwrap();
    let pos = bytes.windows(10).position(|w| w == b"go-example").unwrap();
    let mut bad = bytes.clone();
    bad[pos..pos + 10].copy_from_slice(b"Go.Example");
    let err = codec::decode::<AppDestroyed>(&bad).unwrap_err();
    assert!(err.to_string().contains("Go.Example"), "{err}");
}

#[test]
fn drain_records_are_json_with_the_documented_fields() {
    let line = LogLine {
        app: app(),
        time: Timestamp(1_795_780_800_123_456_789),
        source: LogSource::App { process_type: web(), index: 1 },
        stream: Stream::Stdout,
        node: Some(node()),
        seq: 1,
        message: "hello".into(),
    };
    let json: serde_json::Value = serde_json::from_slice(&DrainRecord::from_line(&line).to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "v": 1, "app": "go-example", "time": "2026-11-27T12:00:00.123456Z", "source": "app",
            "process": "web.1", "stream": "stdout", "node": "node2", "message": "hello"
        })
    );
    assert!(DrainRecord::from_json(b"{\"v\":1}").is_err());
    assert_eq!(line.display(), "2026-11-27T12:00:00.123456Z go-example[web.1]: hello");
}

fn random_bytes_never_panic<M: Message>(bytes: &[u8]) {
    let _ = codec::decode::<M>(bytes);
}

fn with_valid_header(kind: Kind, tail: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + tail.len());
    v.extend_from_slice(&codec::MAGIC);
    v.extend_from_slice(&codec::SCHEMA_VERSION.to_be_bytes());
    v.extend_from_slice(&(kind as u16).to_be_bytes());
    v.extend_from_slice(tail);
    v
}

macro_rules! decode_all {
    ($bytes:expr) => {{
        let b: &[u8] = $bytes;
        random_bytes_never_panic::<BuildRequested>(b);
        random_bytes_never_panic::<BuildLogLine>(b);
        random_bytes_never_panic::<BuildCompleted>(b);
        random_bytes_never_panic::<BuildFailed>(b);
        random_bytes_never_panic::<ReleaseCreated>(b);
        random_bytes_never_panic::<FormationChanged>(b);
        random_bytes_never_panic::<AppDestroyed>(b);
        random_bytes_never_panic::<DesiredStateRequest>(b);
        random_bytes_never_panic::<DesiredStateSnapshot>(b);
        random_bytes_never_panic::<DesiredStatePageRequest>(b);
        random_bytes_never_panic::<DesiredStatePage>(b);
        random_bytes_never_panic::<AppStatusRequest>(b);
        random_bytes_never_panic::<AppStatus>(b);
        random_bytes_never_panic::<RestartRequest>(b);
        random_bytes_never_panic::<RestartReply>(b);
        random_bytes_never_panic::<RunRequest>(b);
        random_bytes_never_panic::<RunReply>(b);
        random_bytes_never_panic::<RunOneOff>(b);
        random_bytes_never_panic::<RunExited>(b);
        random_bytes_never_panic::<StartContainer>(b);
        random_bytes_never_panic::<StartContainerReply>(b);
        random_bytes_never_panic::<StopContainer>(b);
        random_bytes_never_panic::<StopContainerReply>(b);
        random_bytes_never_panic::<ContainerEvent>(b);
        random_bytes_never_panic::<NodeHeartbeat>(b);
        random_bytes_never_panic::<NodeInventory>(b);
        random_bytes_never_panic::<LogLine>(b);
        random_bytes_never_panic::<ControllerEvent>(b);
        let _ = bus_schema::DesiredChange::decode(b);
        let _ = bus_schema::BuildOutcome::decode(b);
    }};
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all!(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_are_refused_without_panic(
        kind in proptest::sample::select(Kind::ALL.to_vec()),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        decode_all!(&with_valid_header(kind, &tail));
    }

    #[test]
    fn huge_length_prefixes_do_not_allocate_or_panic(kind in proptest::sample::select(Kind::ALL.to_vec()), n in 0usize..64) {
        // A varint that claims a string of ~2^64 bytes, after n valid-looking bytes.
        let mut tail = vec![0u8; n];
        tail.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        decode_all!(&with_valid_header(kind, &tail));
    }

    #[test]
    fn flipped_bytes_in_valid_messages_never_panic(pos in 0usize..200, bit in 0u8..8) {
        let bytes = codec::encode(&fixed(ReleaseCreated { release: release(), summary: "s".into(), created_by: "a".into() })).unwrap();
        let mut b = bytes.clone();
        let i = pos % b.len();
        b[i] ^= 1 << bit;
        decode_all!(&b);
    }

    #[test]
    fn log_lines_round_trip_any_text(message in ".*", seq in any::<u64>(), nanos in any::<i64>()) {
        let line = LogLine { app: app(), time: Timestamp(nanos), source: LogSource::Router, stream: Stream::Stdout, node: None, seq, message };
        let env = fixed(line);
        let back: Envelope<LogLine> = codec::decode(&codec::encode(&env).unwrap()).unwrap();
        prop_assert_eq!(back, env);
    }
}
