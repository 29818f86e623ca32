//! The scenarios: each applies one fault under load, measures when the platform noticed and
//! when it served as asked again, heals the fault, and says which log lines it may cost.
//!
//! Named like Antithesis' test commands, by what they do; `run all` runs them in this order.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::Suite;
use crate::invariants::{Acked, Check};
use crate::report::TargetResult;

pub const SCENARIOS: &[(&str, &str)] = &[
    ("steady-state", "no fault: git push to serving, and scale out to healthy, under load"),
    (
        "long-after-deploy",
        "once every release is past the deploy timeout: SIGKILL an app container, then scale out and back",
    ),
    (
        "kill-node",
        "SIGKILL every container of a node at once: its engine and app containers, etcd, NATS, router, agent",
    ),
    (
        "pause-node",
        "freeze every container of a node (docker pause) until the platform has replaced it, then thaw",
    ),
    (
        "partition-node",
        "cut a node off the cluster network (its firewall drops its uplink) until replaced, then heal",
    ),
    (
        "kill-node1",
        "as kill-node, on node1: a store member, a registry, a controller, a database member and a scheduler die with it",
    ),
    (
        "kill-node2",
        "as kill-node, on node2: a controller, a database member and a logger die with it; the API must go on",
    ),
    ("kill-etcd-leader", "SIGKILL the etcd member that leads, then start it again"),
    (
        "kill-nats-member",
        "SIGKILL the NATS member that leads JetStream, scale meanwhile, then start it again",
    ),
    ("kill-scheduler-leader", "SIGKILL the leading scheduler, scale meanwhile, then start it again"),
    (
        "kill-controller-mid-deploy",
        "config:set starts a deploy, SIGKILL the controller at once, start it 5 s later",
    ),
    (
        "restart-database-primary",
        "restart the database's primary member while the API takes a write every 250 ms",
    ),
    (
        "kill-database-primary",
        "SIGKILL the database's primary member while the API takes a write every 250 ms, then start it",
    ),
    (
        "kill-builder-mid-push",
        "SIGKILL the builder as soon as a git push starts building, start it, push again",
    ),
    ("flood-logs", "one app writes 200,000 lines as fast as it can, under load"),
    (
        "soak",
        "for --soak-secs (120 in run all), random pushes, config:sets, scales, restarts, rollbacks, runs, crashed containers and killed controllers at random intervals, each settled and checked",
    ),
];

/// The replicas of the app that must see no failed GET when a node dies.
pub const MANY: u32 = 3;

/// What a scenario found; the runner adds the load's numbers and the invariants.
#[derive(Debug, Default)]
pub struct Outcome {
    pub fault_at: Option<Instant>,
    pub detect: Option<Duration>,
    pub detected_by: String,
    pub recover: Option<Duration>,
    pub recovered_when: String,
    pub measures: BTreeMap<String, f64>,
    pub targets: Vec<TargetResult>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    /// Log lines this fault may cost, by design.
    pub lossy: Vec<Lossy>,
    /// Whether the app with several replicas must see no failed GET.
    pub no_failed_gets_for_many: bool,
}

/// Lines answered in `[from, until]` by these containers (hostnames; empty = any) may be lost.
#[derive(Debug, Clone)]
pub struct Lossy {
    pub from: Instant,
    pub until: Instant,
    pub containers: BTreeSet<String>,
    pub app: Option<String>,
    pub why: String,
}

/// Polls `check` every `every` until it is true; how long that took, or `None` at `patience`.
pub async fn poll<F, Fut>(
    since: Instant,
    patience: Duration,
    every: Duration,
    mut check: F,
) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    loop {
        if check().await {
            return Some(since.elapsed());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

fn target(name: &str, met: bool, detail: String) -> TargetResult {
    TargetResult { name: name.to_owned(), met, detail }
}

pub async fn run(s: &mut Suite, name: &str) -> anyhow::Result<Outcome> {
    match name {
        "steady-state" => steady_state(s).await,
        "long-after-deploy" => long_after_deploy(s).await,
        "kill-node" => node_fault(s, NodeFault::Kill).await,
        "kill-node1" | "kill-node2" => {
            let victim = std::mem::replace(&mut s.victim, name.trim_start_matches("kill-").to_owned());
            let outcome = node_fault(s, NodeFault::Kill).await;
            s.victim = victim;
            outcome
        }
        "pause-node" => node_fault(s, NodeFault::Pause).await,
        "partition-node" => node_fault(s, NodeFault::Partition).await,
        "kill-etcd-leader" => kill_etcd_leader(s).await,
        "kill-nats-member" => kill_nats_member(s).await,
        "kill-scheduler-leader" => kill_scheduler_leader(s).await,
        "kill-controller-mid-deploy" => kill_controller_mid_deploy(s).await,
        "restart-database-primary" => database_primary_fault(s, DatabaseFault::Restart).await,
        "kill-database-primary" => database_primary_fault(s, DatabaseFault::Kill).await,
        "kill-builder-mid-push" => kill_builder_mid_push(s).await,
        "flood-logs" => flood_logs(s).await,
        "soak" => crate::soak::soak(s).await,
        other => bail!("no scenario named '{other}' (chaos list shows them)"),
    }
}

/// Before the load starts: node faults need the several-replica app on every node (the
/// scheduler does not move containers back after a node returns), so it is spread again by
/// scaling to zero and back, placement putting one replica on each node.
pub async fn prepare(s: &mut Suite, name: &str) -> anyhow::Result<()> {
    let victim = match name {
        "kill-node" | "pause-node" | "partition-node" => s.victim.clone(),
        "kill-node1" | "kill-node2" => name.trim_start_matches("kill-").to_owned(),
        _ => return Ok(()),
    };
    let two = s.two.clone();
    let on_victim = s.p.cluster.app_containers(&victim).await?.iter().any(|c| c.app == two && c.running);
    if on_victim {
        return Ok(());
    }
    println!("      (spreading {two} over the nodes again: scale web=0, then web={MANY})");
    s.scale(&two, 0).await?;
    poll(Instant::now(), Duration::from_secs(60), Duration::from_millis(200), || s.serving_app(&two))
        .await
        .context("scaling to zero")?;
    s.scale(&two, MANY).await?;
    poll(Instant::now(), Duration::from_secs(90), Duration::from_millis(200), || s.whole())
        .await
        .context("scaling back out")?;
    Ok(())
}

// ------------------------------------------------------------------------------ steady state

async fn steady_state(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let before = s.deployed_version(&s.one).await?;
    let sha = s.p.commit(&s.repo, "steady state").await?;
    let start = Instant::now();
    let built = s.push(&s.one.clone()).await?;
    s.ledger.push(Acked::Build { app: s.one.clone(), sha });
    let pushed = start.elapsed();
    let serving = poll(start, Duration::from_secs(120), Duration::from_millis(100), || {
        s.serves_release_above(&s.one, before)
    })
    .await
    .context("the pushed release never served")?;
    out.measures.insert("git push → serving new release (s)".into(), secs(serving));
    out.measures.insert("git push returned (s)".into(), secs(pushed));
    if let Some(built) = built {
        let platform = serving.saturating_sub(built.duration_since(start));
        out.measures.insert("build done → serving, platform time (s)".into(), secs(platform));
        out.targets.push(target(
            "git push to serving in under 5 s of platform time (build excluded)",
            platform < Duration::from_secs(5),
            format!("{:.2} s from \"Built and pushed\" to the new release answering", platform.as_secs_f64()),
        ));
    }
    let two = s.two.clone();
    let scaled = Instant::now();
    s.scale(&two, MANY + 1).await?;
    let healthy = poll(scaled, Duration::from_secs(90), Duration::from_millis(100), || s.serving_app(&two))
        .await
        .context("scale out never became healthy")?;
    out.measures.insert(format!("scale web={} → healthy and routed (s)", MANY + 1), secs(healthy));
    s.scale(&two, MANY).await?;
    poll(Instant::now(), Duration::from_secs(90), Duration::from_millis(200), || s.serving_app(&two))
        .await
        .context("scale back in never settled")?;
    out.notes.push("node loss to replaced is measured by kill-node".into());
    Ok(out)
}

// ------------------------------------------------------------------------------ long after a deploy

/// The scheduler's deploy timeout in the suite's cluster (its default; compose/cluster keeps it).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// A crash and a scale on apps whose releases ran whole minutes ago: reconciliation, never a
/// failed deploy (a timer counted from a release's start once stopped every container of an app
/// at its first crash after two minutes). Runs second in `all`, so the node faults after it also
/// hit releases past their deploy timeout.
async fn long_after_deploy(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome { no_failed_gets_for_many: true, ..Default::default() };
    if let Some(newest) = s.released_at.values().max().copied() {
        let due = newest + DEPLOY_TIMEOUT + Duration::from_secs(15);
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            println!(
                "      (waiting {:.0} s under load: every app's newest release past the {} s deploy timeout)",
                wait.as_secs_f64(),
                DEPLOY_TIMEOUT.as_secs()
            );
            tokio::time::sleep(wait).await;
        }
        out.measures.insert("newest release's age at the crash (s)".into(), secs(newest.elapsed()));
    }
    let two = s.two.clone();
    let mut running = Vec::new();
    for node in s.p.live_nodes().await?.keys() {
        running.extend(
            s.p.cluster.app_containers(node).await?.into_iter().filter(|c| c.app == two && c.running),
        );
    }
    let victim = running.into_iter().min_by_key(|c| c.index).context("no running container of the app")?;
    out.notes.push(format!("crashed {two} {}.{} on {}", victim.process_type, victim.index, victim.node));
    let fault_at = Instant::now();
    s.p.cluster.crash(&victim).await?;
    out.fault_at = Some(fault_at);
    out.detected_by = "its node's engine reports the container exited".into();
    let is_down = || async {
        s.p.cluster
            .app_containers(&victim.node)
            .await
            .is_ok_and(|cs| cs.iter().any(|c| c.id == victim.id && !c.running))
    };
    out.detect = poll(fault_at, Duration::from_secs(10), Duration::from_millis(50), is_down).await;
    out.recovered_when =
        format!("{}.{} runs again and every app is served as asked", victim.process_type, victim.index);
    let back = poll(fault_at, Duration::from_secs(60), Duration::from_millis(100), || async {
        !is_down().await && s.serving_all().await
    })
    .await;
    out.recover = back;
    out.targets.push(target(
        "a crashed container long after its deploy is running and serving again within 5 s",
        back.is_some_and(|d| d <= Duration::from_secs(5)),
        back.map_or_else(|| "not within 60 s".into(), |d| format!("{:.2} s", d.as_secs_f64())),
    ));
    // A scale long after the deploy is reconciliation too: the new replica joins, none stops.
    let scaled = Instant::now();
    s.scale(&two, MANY + 1).await?;
    let out_healthy = poll(scaled, Duration::from_secs(60), Duration::from_millis(100), || async {
        s.serving_app(&two).await && s.hostnames(&two).await.is_ok_and(|h| h.len() == MANY as usize + 1)
    })
    .await;
    out.targets.push(target(
        &format!("scale web={} long after the deploy serves from {} containers", MANY + 1, MANY + 1),
        out_healthy.is_some(),
        out_healthy.map_or_else(|| "not within 60 s".into(), |d| format!("{:.2} s", d.as_secs_f64())),
    ));
    s.scale(&two, MANY).await?;
    poll(Instant::now(), Duration::from_secs(60), Duration::from_millis(200), || s.serving_app(&two))
        .await
        .context("scale back in never settled")?;
    Ok(out)
}

// ------------------------------------------------------------------------------ node faults

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeFault {
    Kill,
    Pause,
    Partition,
}

async fn node_fault(s: &mut Suite, fault: NodeFault) -> anyhow::Result<Outcome> {
    let mut out = Outcome { no_failed_gets_for_many: true, ..Default::default() };
    let victim = s.victim.clone();
    let ours: Vec<_> =
        s.p.cluster
            .app_containers(&victim)
            .await?
            .into_iter()
            .filter(|c| c.running && (c.app == s.one || c.app == s.two))
            .collect();
    let lost: BTreeSet<String> = ours.iter().map(|c| c.hostname().to_owned()).collect();
    out.measures.insert(format!("app containers on {victim}"), ours.len() as f64);
    if ours.is_empty() {
        out.notes.push(format!("placement put none of the suite's containers on {victim}"));
    }
    // Which leaders die with the node: they change how long detection and recovery take.
    let mut held = Vec::new();
    if s.p.etcd_leader().await.ok().flatten().as_deref() == Some(victim.as_str()) {
        held.push("the etcd leader (etcd extends every lease when its leader changes, so the node's lease outlives it by an election)");
    }
    if s.p.scheduler_leader().await.ok().flatten().as_deref() == Some(victim.as_str()) {
        held.push("the scheduler leader (a standby takes over once its lease expires, then waits for the agents' inventories)");
    }
    if s.p.nats_meta_leader().await.ok().flatten().as_deref() == Some(victim.as_str()) {
        held.push("JetStream's meta leader");
    }
    out.notes.push(if held.is_empty() {
        format!("{victim} held no leader")
    } else {
        format!("{victim} held {}", held.join("; "))
    });
    let parts = s.p.cluster.node_parts(&victim).await?;
    let probe = ApiProbe::start(s.p.api.clone(), s.one.clone());
    let fault_at = Instant::now();
    match fault {
        NodeFault::Kill => s.p.cluster.kill(&parts).await?,
        NodeFault::Pause => s.p.cluster.pause(&parts).await?,
        NodeFault::Partition => s.p.cluster.partition(&victim).await?,
    }
    out.fault_at = Some(fault_at);
    out.detected_by = format!("{victim}'s lease expired: its nodes/ key is gone from etcd");
    out.detect = poll(fault_at, Duration::from_secs(30), Duration::from_millis(100), || async {
        s.p.live_nodes().await.is_ok_and(|n| !n.contains_key(&victim))
    })
    .await;
    out.recovered_when = "every app runs the replicas asked on live nodes, each routed and answering".into();
    out.recover = serving_all_again(s, fault_at).await;
    if let Some(r) = out.recover {
        out.targets.push(target(
            "lost containers replaced and serving within 10 s",
            r <= Duration::from_secs(10),
            format!("{:.2} s", r.as_secs_f64()),
        ));
    }
    out.lossy.push(Lossy {
        from: fault_at - Duration::from_secs(2),
        until: Instant::now(),
        containers: lost,
        app: None,
        why: format!("lines of {victim}'s containers its agent had not yet published"),
    });
    let api = probe.finish(fault_at).await;
    out.measures.insert("API reads refused or timed out during the fault".into(), api.refused as f64);
    match api.back_after {
        Some(d) => {
            out.measures.insert("API answering again after the fault (s)".into(), secs(d));
            out.targets.push(target(
                "the API answers again within 10 s",
                d <= Duration::from_secs(10),
                format!("{:.2} s", d.as_secs_f64()),
            ));
        }
        None if api.refused == 0 => out.notes.push("the API answered every read during the fault".into()),
        None => out.notes.push("the API did not answer again before the fault was healed".into()),
    }
    if fault == NodeFault::Kill {
        push_while_down(s, &mut out, &victim, &parts, fault_at).await;
    }
    // Heal.
    let healing = Instant::now();
    match fault {
        NodeFault::Kill => s.p.cluster.start(&victim).await?,
        NodeFault::Pause => s.p.cluster.unpause(&parts).await?,
        NodeFault::Partition => s.p.cluster.heal_partition(&victim).await?,
    }
    let back = poll(healing, Duration::from_secs(240), Duration::from_millis(250), || s.whole()).await;
    match back {
        Some(d) => {
            out.measures.insert(format!("{victim} healed → every part healthy again (s)"), secs(d));
        }
        None => out.notes.push(format!("{victim} did not come back healthy within 240 s")),
    }
    Ok(out)
}

/// A `git push` started 15 s after a node died must build, push to the registry (its layers in
/// the store, one copy down) and serve. Skipped, with a note, when the builder died with the node
/// (it runs on one node only).
async fn push_while_down(
    s: &mut Suite,
    out: &mut Outcome,
    victim: &str,
    parts: &[deisctl::parts::Container],
    fault_at: Instant,
) {
    if parts.iter().any(|c| c.component == "builder") {
        out.notes.push(format!("no git push during the fault: the only builder died with {victim} (#16)"));
        return;
    }
    tokio::time::sleep((fault_at + Duration::from_secs(15)).saturating_duration_since(Instant::now())).await;
    let one = s.one.clone();
    let result: anyhow::Result<Duration> = async {
        let before = s.deployed_version(&one).await?;
        let sha = s.p.commit(&s.repo, "pushed while a node is down").await?;
        let start = Instant::now();
        s.push(&one).await?;
        s.ledger.push(Acked::Build { app: one.clone(), sha });
        poll(start, Duration::from_secs(120), Duration::from_millis(200), || {
            s.serves_release_above(&one, before)
        })
        .await
        .context("the release it made never served")
    }
    .await;
    out.checks.push(Check::new(
        "a git push started 15 s after the node died builds and serves",
        match result {
            Ok(d) => {
                out.measures.insert("git push 15 s after the kill → new release serving (s)".into(), secs(d));
                Ok(format!("served {:.1} s after the push began", d.as_secs_f64()))
            }
            Err(e) => Err(format!("{e:#}")),
        },
    ));
}

/// Reads an app through the API (a controller, then the database's primary) every 250 ms, each
/// with a 2 s limit, while a fault lasts: how long the API itself was away.
struct ApiProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, bool)>>,
}

struct ApiAway {
    refused: usize,
    /// From the fault to the first answer after the last refusal; `None` if none was refused
    /// (or none answered after).
    back_after: Option<Duration>,
}

impl ApiProbe {
    fn start(api: controller_api::Client, app: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            // Bounded: at most ten minutes of reads even if nobody stops it.
            for _ in 0..2_400 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let at = Instant::now();
                let ok =
                    matches!(tokio::time::timeout(Duration::from_secs(2), api.app(&app)).await, Ok(Ok(_)));
                samples.push((at, ok));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            samples
        });
        Self { stop, task }
    }

    async fn finish(self, fault_at: Instant) -> ApiAway {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await.unwrap_or_default();
        away(&samples, fault_at)
    }
}

fn away(samples: &[(Instant, bool)], fault_at: Instant) -> ApiAway {
    let after: Vec<_> = samples.iter().filter(|(at, _)| *at >= fault_at).collect();
    let refused = after.iter().filter(|(_, ok)| !ok).count();
    let last_refused = after.iter().rposition(|(_, ok)| !ok);
    let back_after =
        last_refused.and_then(|i| after.get(i + 1)).map(|(at, _)| at.saturating_duration_since(fault_at));
    ApiAway { refused, back_after }
}

// ------------------------------------------------------------------------------ control plane

/// SIGKILL to one part; the fault's instant goes into the outcome.
async fn kill_part(
    s: &Suite,
    out: &mut Outcome,
    component: &str,
    instance: &str,
) -> anyhow::Result<(deisctl::parts::Container, Instant)> {
    let part = s.p.cluster.part(component, instance).await?;
    let fault_at = Instant::now();
    s.p.cluster.kill(std::slice::from_ref(&part)).await?;
    out.fault_at = Some(fault_at);
    Ok((part, fault_at))
}

async fn kill_etcd_leader(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let leader = s.p.etcd_leader().await?.context("no etcd member says who leads")?;
    let (part, fault_at) = kill_part(s, &mut out, "etcd", &leader).await?;
    out.notes.push(format!("the leader was {leader}'s member"));
    out.detected_by = "another member leads".into();
    out.detect = new_leader(fault_at, Duration::from_millis(100), &leader, || s.p.etcd_leader()).await;
    // A write through the new leader: the platform takes desired state again.
    let two = s.two.clone();
    let web = s.ledger_web(&two).unwrap_or(MANY);
    s.scale_retrying(&two, web, Duration::from_secs(30)).await?;
    out.recovered_when = "a new leader, and every app served as asked".into();
    out.recover = serving_all_again(s, fault_at).await;
    s.p.cluster.start_container(&part).await?;
    heal_whole(s, &mut out).await;
    Ok(out)
}

async fn kill_nats_member(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let leader = s.p.nats_meta_leader().await?.context("no NATS member says who leads JetStream")?;
    let (part, fault_at) = kill_part(s, &mut out, "nats", &leader).await?;
    out.notes.push(format!("JetStream's meta leader was {leader}"));
    // Desired state must still flow: a scale acknowledged now has to happen.
    let two = s.two.clone();
    s.scale_retrying(&two, MANY + 1, Duration::from_secs(30)).await?;
    out.detected_by = "another member leads JetStream".into();
    out.detect = new_leader(fault_at, Duration::from_millis(200), &leader, || s.p.nats_meta_leader()).await;
    out.recovered_when =
        format!("the scale to web={} acknowledged during the fault runs and is routed", MANY + 1);
    out.recover = serving_all_again(s, fault_at).await;
    out.lossy.push(Lossy {
        from: fault_at - Duration::from_secs(1),
        until: fault_at + Duration::from_secs(10),
        containers: BTreeSet::new(),
        app: None,
        why: "lines published to the killed member before its clients reconnected (core NATS)".into(),
    });
    s.p.cluster.start_container(&part).await?;
    heal_whole(s, &mut out).await;
    scale_back(s, &two, MANY).await?;
    Ok(out)
}

async fn kill_scheduler_leader(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let leader = s.p.scheduler_leader().await?.context("no scheduler leads")?;
    let (part, fault_at) = kill_part(s, &mut out, "scheduler", &leader).await?;
    out.notes.push(format!("the leader was {leader}"));
    let one = s.one.clone();
    s.scale_retrying(&one, 2, Duration::from_secs(30)).await?;
    out.detected_by = "another scheduler holds the leader key".into();
    out.detect = new_leader(fault_at, Duration::from_millis(100), &leader, || s.p.scheduler_leader()).await;
    out.recovered_when = "the scale to web=2 acknowledged during the fault runs and is routed".into();
    out.recover = serving_all_again(s, fault_at).await;
    s.p.cluster.start_container(&part).await?;
    heal_whole(s, &mut out).await;
    scale_back(s, &one, 1).await?;
    Ok(out)
}

async fn kill_controller_mid_deploy(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let two = s.two.clone();
    let before = s.deployed_version(&two).await?;
    let value = format!("{}", rand::random::<u32>());
    s.config_set(&two, "CHAOS_DEPLOY", &value).await?;
    // At once: the release is committed and the deploy has just begun.
    let (part, fault_at) = kill_part(s, &mut out, "controller", "node2").await?;
    out.detected_by = "the controller's health key says down".into();
    out.detect = poll(fault_at, Duration::from_secs(30), Duration::from_millis(100), || async {
        s.p.health().await.is_ok_and(|h| h.get("controller/node2") == Some(&false))
    })
    .await;
    let down_for = Duration::from_secs(5).saturating_sub(fault_at.elapsed());
    tokio::time::sleep(down_for).await;
    s.p.cluster.start_container(&part).await?;
    out.recovered_when = format!("the release made before the kill (after v{before}) serves every replica");
    out.recover = poll(fault_at, Duration::from_secs(120), Duration::from_millis(200), || async {
        s.serves_release_above(&two, before).await && s.serving_all().await
    })
    .await;
    heal_whole(s, &mut out).await;
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatabaseFault {
    /// A clean stop (Patroni hands the leader key over) and a start.
    Restart,
    /// SIGKILL: the leader key stays until its TTL runs out; the member is started afterwards.
    Kill,
}

/// Writes (domains:add) every 250 ms while the database's primary member is faulted; every write
/// acknowledged goes into the ledger the invariants check, so a failover that lost a commit fails.
async fn database_primary_fault(s: &mut Suite, fault: DatabaseFault) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let primary = s.p.database_primary().await?.context("no database member is the primary")?;
    out.notes.push(format!("the primary was {primary}"));
    let part = s.p.cluster.part("database", &primary).await?;
    let one = s.one.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = {
        let cluster = s.p.cluster.clone();
        let part = part.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let at = Instant::now();
            match fault {
                DatabaseFault::Restart => cluster.restart(&part, 10).await.map(|()| at),
                DatabaseFault::Kill => cluster.kill(std::slice::from_ref(&part)).await.map(|()| at),
            }
        })
    };
    // Writes every 250 ms until 5 s after the first write that succeeds after a refused one.
    let mut acked = 0u32;
    let mut refused = 0u32;
    let mut first_refused: Option<Instant> = None;
    let mut back: Option<Instant> = None;
    let writing = Instant::now();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) && writing.elapsed() < Duration::from_secs(90) {
        n += 1;
        let domain = format!("w{n}-{}.chaos.example.com", s.run_id);
        let attempt = tokio::time::timeout(Duration::from_secs(5), s.p.api.domain_add(&one, &domain)).await;
        match attempt {
            Ok(Ok(_)) => {
                acked += 1;
                s.ledger.push(Acked::Domain { app: one.clone(), domain });
                if first_refused.is_some() && back.is_none() {
                    back = Some(Instant::now());
                }
            }
            _ => {
                refused += 1;
                first_refused.get_or_insert_with(Instant::now);
            }
        }
        if back.is_some_and(|b| b.elapsed() > Duration::from_secs(5))
            || (first_refused.is_none()
                && restarted.is_finished()
                && writing.elapsed() > Duration::from_secs(20))
        {
            stop.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fault_at = restarted.await.context("the restart task")??;
    out.fault_at = Some(fault_at);
    out.measures.insert("writes acknowledged".into(), f64::from(acked));
    out.measures.insert("writes refused (not acknowledged)".into(), f64::from(refused));
    out.detected_by = "the first write the API refused".into();
    out.detect = first_refused.map(|t| t.saturating_duration_since(fault_at));
    out.recovered_when = "the first write acknowledged after that".into();
    out.recover = back.map(|t| t.saturating_duration_since(fault_at));
    if first_refused.is_none() {
        out.notes.push("no write was refused: the fault fell between writes".into());
    }
    match s.p.database_primary().await {
        Ok(Some(now)) if now != primary => out.notes.push(format!("{now} took over as the primary")),
        Ok(Some(_)) => out.notes.push(format!("{primary} is the primary again")),
        _ => out.notes.push("no primary once the writes ended".into()),
    }
    if fault == DatabaseFault::Kill {
        s.p.cluster.start_container(&part).await?;
    }
    heal_whole(s, &mut out).await;
    Ok(out)
}

async fn kill_builder_mid_push(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let one = s.one.clone();
    let before = s.deployed_version(&one).await?;
    let part = s.p.cluster.part("builder", "node3").await?;
    s.p.commit(&s.repo, "killed mid-push").await?;
    // The push runs while the suite watches its lines; the builder dies once it is building.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let first = {
        let p = &s.p;
        let repo = s.repo.clone();
        let app = one.clone();
        async move {
            p.push(&repo, &app, |line| {
                println!("      | {line}");
                let _ = tx.send(line.to_owned());
            })
            .await
        }
    };
    let watch = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                // At once: a small app's build takes well under a second.
                Ok(Some(line)) if line.contains("-----> Building") => {
                    let at = Instant::now();
                    s.p.cluster.kill(std::slice::from_ref(&part)).await?;
                    return Ok::<_, anyhow::Error>(Some(at));
                }
                Ok(Some(_)) => continue,
                _ => return Ok(None),
            }
        }
    };
    let (first_result, fault_at) = tokio::join!(first, watch);
    let fault_at = fault_at?.context("the push never started building")?;
    out.fault_at = Some(fault_at);
    out.notes.push(match &first_result {
        Ok(()) => "the killed push still succeeded (the build had finished)".into(),
        Err(e) => format!("the killed push failed, as it should: {e:#}"),
    });
    out.detected_by = "the builder's health key says down".into();
    out.detect = poll(fault_at, Duration::from_secs(30), Duration::from_millis(100), || async {
        s.p.health().await.is_ok_and(|h| h.get("builder/node3") == Some(&false))
    })
    .await;
    s.p.cluster.start_container(&part).await?;
    poll(Instant::now(), Duration::from_secs(60), Duration::from_millis(200), || async {
        s.p.health().await.is_ok_and(|h| h.get("builder/node3") == Some(&true))
    })
    .await
    .context("the builder did not come back healthy")?;
    let sha = s.p.commit(&s.repo, "pushed again").await?;
    s.push(&one).await?;
    s.ledger.push(Acked::Build { app: one.clone(), sha });
    out.recovered_when = "a second push serves its release".into();
    out.recover = poll(fault_at, Duration::from_secs(120), Duration::from_millis(200), || async {
        s.serves_release_above(&one, before).await && s.serving_all().await
    })
    .await;
    Ok(out)
}

// ------------------------------------------------------------------------------ logs

const FLOOD_LINES: u64 = 200_000;

async fn flood_logs(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let one = s.one.clone();
    let tag = format!("f{}", s.run_id);
    let watch = s.watch(&one).context("the runner watches the app's drain")?;
    let hosts: BTreeSet<String> = s.hostnames(&one).await?;
    let fault_at = Instant::now();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let resp = http
        .get(format!("http://{}/flood?lines={FLOOD_LINES}&tag={tag}", s.p.settings.http))
        .header("Host", s.p.host_of(&one))
        .send()
        .await?;
    if resp.status().as_u16() != 202 {
        bail!("the flood was refused: {}", resp.status());
    }
    out.fault_at = Some(fault_at);
    // The stream has settled once nothing new arrived for 3 s.
    let mut last = (0usize, Instant::now());
    let mut first_notice = None;
    let settled = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (now, notices) = watch
            .lock()
            .map(|w| (w.flood.get(&tag).map_or(0, BTreeSet::len), w.dropped_notices))
            .unwrap_or_default();
        if notices > 0 && first_notice.is_none() {
            first_notice = Some(fault_at.elapsed());
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) && now > 0 {
            break Some(fault_at.elapsed());
        }
        if fault_at.elapsed() > Duration::from_secs(120) {
            break None;
        }
    };
    let (delivered, announced) = watch
        .lock()
        .map(|w| (w.flood.get(&tag).map_or(0, BTreeSet::len) as u64, w.dropped_notices))
        .unwrap_or_default();
    let unaccounted = FLOOD_LINES.saturating_sub(delivered + announced);
    out.detected_by = if first_notice.is_some() {
        "the first \"Error L10\" drop notice on the app's stream".into()
    } else {
        "no drop notice: the logger kept up".into()
    };
    out.detect = first_notice;
    out.recovered_when = "the app's stream quiet for 3 s after the flood".into();
    out.recover = settled;
    out.measures.insert("flood lines written".into(), FLOOD_LINES as f64);
    out.measures.insert("flood lines on the drain stream".into(), delivered as f64);
    out.measures.insert("lines announced dropped (Error L10)".into(), announced as f64);
    if let Some(d) = settled {
        out.measures.insert("flood delivered, lines/s".into(), (delivered as f64 / d.as_secs_f64()).round());
    }
    out.checks.push(Check::new(
        "every lost flood line announced",
        if unaccounted == 0 {
            Ok(format!("{delivered} delivered + {announced} announced dropped ≥ {FLOOD_LINES} written"))
        } else {
            Err(format!("{unaccounted} of {FLOOD_LINES} lines lost without a notice"))
        },
    ));
    out.lossy.push(Lossy {
        from: fault_at,
        until: Instant::now(),
        containers: hosts,
        app: Some(one),
        why: "the flooding app's own lines, dropped with a notice when its queue is full".into(),
    });
    Ok(out)
}

/// After a part is started again: wait until every part is healthy and the apps are served.
/// Waits (up to 90 s) until every app serves as asked again: the time since the fault, or `None`.
async fn serving_all_again(s: &Suite, fault_at: Instant) -> Option<Duration> {
    poll(fault_at, Duration::from_secs(90), Duration::from_millis(200), || s.serving_all()).await
}

/// Asks `leader` every `every` (for up to 30 s) until it names a member other than `was`: the
/// time since the fault, or `None`. An unanswered question counts as no new leader yet.
async fn new_leader<F, Fut>(fault_at: Instant, every: Duration, was: &str, leader: F) -> Option<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    poll(fault_at, Duration::from_secs(30), every, || async {
        leader().await.ok().flatten().is_some_and(|l| l != was)
    })
    .await
}

/// Undoes a scale made during a fault, then waits (up to 60 s) until every app serves as asked,
/// so the next scenario starts from what the ledger says.
async fn scale_back(s: &mut Suite, app: &str, web: u32) -> anyhow::Result<()> {
    s.scale_retrying(app, web, Duration::from_secs(30)).await?;
    poll(Instant::now(), Duration::from_secs(60), Duration::from_millis(200), || s.serving_all()).await;
    Ok(())
}

async fn heal_whole(s: &Suite, out: &mut Outcome) {
    let healing = Instant::now();
    match poll(healing, Duration::from_secs(180), Duration::from_millis(250), || s.whole()).await {
        Some(d) => {
            out.measures.insert("healed → every part healthy again (s)".into(), secs(d));
        }
        None => out.notes.push("the cluster was not whole again within 180 s of healing".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_back_at_the_first_answer_after_the_last_refusal() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let samples = [
            (at(0), true),
            (at(250), false),
            (at(500), true),
            (at(750), false),
            (at(1000), true),
            (at(1250), true),
        ];
        let a = away(&samples, at(100));
        assert_eq!(a.refused, 2);
        assert_eq!(a.back_after, Some(Duration::from_millis(900)));
        let all_good = away(&[(at(0), true), (at(250), true)], at(0));
        assert_eq!((all_good.refused, all_good.back_after), (0, None));
        let never_back = away(&[(at(0), true), (at(250), false)], at(0));
        assert_eq!((never_back.refused, never_back.back_after), (1, None));
    }
}
