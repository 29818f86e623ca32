//! The reconcile step as a pure function: desired state and observed state in, the commands to
//! send out. No I/O happens here, so every rule (rolling deploys, scale, node loss, duplicates
//! after a partition, crash backoff, deploy timeouts) is unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bus_schema::discovery::NodeRecord;
use bus_schema::messages::{
    AppDesired, ContainerKey, DeployState, HealthCheck, Limits, ReleaseSpec, StartContainer,
};
use bus_schema::{AppName, NodeId, ProcessType, Timestamp};

use crate::placement::{self, NodeView, Placer, Request};

/// A container as the agents report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub node: NodeId,
    pub key: ContainerKey,
    pub running: bool,
    pub healthy: bool,
    pub started_at: Timestamp,
}

/// What the plan asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start {
        node: NodeId,
        command: StartContainer,
    },
    Stop {
        node: NodeId,
        key: ContainerKey,
    },
    /// A line for the app's log stream.
    Say {
        app: AppName,
        message: String,
    },
}

/// The rollout of an app's newest release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    pub version: u32,
    /// When this version's rollout began. The deploy timeout counts from here, and only while the
    /// state is `Deploying`: once a release has run whole, a crash, a lost node, a scale or a
    /// restart is reconciliation, never a failed deploy.
    pub started: Instant,
    pub state: DeployState,
}

/// Timing rules of the plan.
#[derive(Debug, Clone)]
pub struct Rules {
    /// A new release whose containers are not all healthy by then has failed its deploy.
    pub deploy_timeout: Duration,
    /// First delay before restarting a crashed container; doubles per crash up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A start not yet seen in an inventory after this long is tried again.
    pub inflight_timeout: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            deploy_timeout: Duration::from_secs(60),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            inflight_timeout: Duration::from_secs(90),
        }
    }
}

/// The scheduler's memory between reconciles.
#[derive(Debug, Default)]
pub struct Memory {
    pub deploys: HashMap<AppName, Deploy>,
    /// The newest release of each app that ran whole: what the app keeps running when a later
    /// release fails its deploy. A new leader does not know it until a release runs whole again.
    pub last_good: HashMap<AppName, ReleaseSpec>,
    /// Starts sent and not yet confirmed by an inventory: key → (node, when).
    pub inflight: HashMap<ContainerKey, (NodeId, Instant)>,
    /// Stops sent: key and node.
    pub stopping: HashMap<(ContainerKey, NodeId), Instant>,
    /// Crash backoff per container: (crashes so far, not before).
    pub backoff: HashMap<ContainerKey, (u32, Instant)>,
    /// Containers waiting to be restarted (`deis ps:restart`), one at a time per process type.
    pub restarts: BTreeSet<ContainerKey>,
}

/// Computes the commands that move observed state toward desired state.
///
/// Per app, the newest release is rolled out (`Deploying`) while the older ones keep serving; once
/// every container of it is healthy it is `Deployed` and the older ones go. A release that is not
/// whole within the deploy timeout has `Failed`: if an older release still serves, the app keeps
/// running its last good release (at the current formation), the failed release's unhealthy
/// containers go and none of it is started again; if nothing older serves, the failed release is
/// still reconciled (crashes restart with backoff) since it is all the app has.
pub fn plan(
    desired: &BTreeMap<AppName, AppDesired>,
    nodes: &BTreeMap<NodeId, NodeRecord>,
    observed: &[Observed],
    memory: &mut Memory,
    rules: &Rules,
    now: Instant,
) -> Vec<Action> {
    // Containers on nodes that are gone do not count: they are being replaced.
    let live: Vec<&Observed> = observed.iter().filter(|o| nodes.contains_key(&o.node)).collect();
    memory.inflight.retain(|key, (node, since)| {
        nodes.contains_key(node)
            && now.duration_since(*since) < rules.inflight_timeout
            && !live.iter().any(|o| &o.key == key && &o.node == node)
    });
    memory.stopping.retain(|(key, node), since| {
        now.duration_since(*since) < rules.inflight_timeout
            && live.iter().any(|o| &o.key == key && &o.node == node)
    });
    memory.deploys.retain(|app, _| desired.contains_key(app));
    memory.last_good.retain(|app, _| desired.contains_key(app));
    memory.backoff.retain(|key, _| desired.contains_key(&key.app));

    let placer = placer(desired, nodes, &live, memory);
    let mut step = Step { memory, rules, now, placer, actions: Vec::new() };
    // Apps that are no longer wanted: everything of theirs goes.
    for o in &live {
        if !desired.contains_key(&o.key.app) {
            step.stop(o);
        }
    }
    for (app, want) in desired {
        if want.release.image.is_empty() {
            continue;
        }
        let mine: Vec<&Observed> = live.iter().copied().filter(|o| &o.key.app == app).collect();
        step.app(app, want, &mine);
    }
    step.actions
}

/// How an app's containers are driven this pass.
enum Mode {
    /// The newest release: started, kept whole, and the older ones stopped once it serves.
    Roll,
    /// The newest release failed and this earlier release, which ran whole, is run instead.
    Fallback(ReleaseSpec),
    /// The newest release failed and an older one serves, but this scheduler never saw that one
    /// whole (a new leader): nothing is started or stopped but the failed release's unhealthy
    /// containers.
    Hold,
}

/// One reconcile pass: the memory it updates and the actions it collects.
struct Step<'a> {
    memory: &'a mut Memory,
    rules: &'a Rules,
    now: Instant,
    placer: Placer,
    actions: Vec<Action>,
}

impl Step<'_> {
    fn stop(&mut self, o: &Observed) {
        let id = (o.key.clone(), o.node.clone());
        if let std::collections::hash_map::Entry::Vacant(e) = self.memory.stopping.entry(id) {
            e.insert(self.now);
            self.actions.push(Action::Stop { node: o.node.clone(), key: o.key.clone() });
        }
    }

    fn say(&mut self, app: &AppName, message: String) {
        self.actions.push(Action::Say { app: app.clone(), message });
    }

    fn app(&mut self, app: &AppName, want: &AppDesired, mine: &[&Observed]) {
        // One copy per key, whatever its release: after a partition heals the same key can run on
        // two nodes, an old release's as well as the newest's.
        let mine = self.one_copy_each(mine);
        let mine = mine.as_slice();
        let newest = &want.release;
        let version = newest.version;
        let now = self.now;
        let deploy = self.memory.deploys.entry(app.clone()).or_insert_with(|| Deploy {
            version,
            started: now,
            state: DeployState::Deploying { version },
        });
        if deploy.version < version {
            *deploy = Deploy { version, started: now, state: DeployState::Deploying { version } };
        }
        let deploy = deploy.clone();
        let serving_older = mine
            .iter()
            .filter(|o| o.key.version < version && o.running && o.healthy)
            .map(|o| o.key.version)
            .max();
        let failed = matches!(deploy.state, DeployState::Failed { .. });
        let mode = match self.memory.last_good.get(app) {
            Some(good) if failed && good.version < version => Mode::Fallback(good.clone()),
            _ if failed && serving_older.is_some() => Mode::Hold,
            _ => Mode::Roll,
        };
        match mode {
            Mode::Fallback(good) => {
                let (ours, others): (Vec<&Observed>, Vec<&Observed>) =
                    mine.iter().partition(|o| o.key.version == good.version);
                let whole = self.run_release(want, &good, &ours);
                for o in others {
                    // What serves of the failed release stays; older releases go once the last
                    // good one is whole again.
                    let serves = o.key.version == version && o.running && o.healthy;
                    if !serves && (o.key.version == version || whole) {
                        self.stop(o);
                    }
                }
            }
            Mode::Hold => {
                for o in mine.iter().filter(|o| o.key.version == version && !(o.running && o.healthy)) {
                    self.stop(o);
                }
            }
            Mode::Roll => self.roll(app, want, mine, &deploy, serving_older),
        }
    }

    /// Drives the newest release and moves its deploy state on.
    fn roll(
        &mut self,
        app: &AppName,
        want: &AppDesired,
        mine: &[&Observed],
        deploy: &Deploy,
        serving_older: Option<u32>,
    ) {
        let version = want.release.version;
        let (ours, others): (Vec<&Observed>, Vec<&Observed>) =
            mine.iter().partition(|o| o.key.version == version);
        let whole = self.run_release(want, &want.release, &ours);
        match &deploy.state {
            // Superseded by a release that ran whole: whatever older still shows up goes.
            DeployState::Deployed { .. } => {
                for o in others {
                    self.stop(o);
                }
            }
            _ if whole => {
                for o in &others {
                    self.stop(o);
                }
                if !others.is_empty() || matches!(deploy.state, DeployState::Failed { .. }) {
                    self.say(app, format!("release v{version} is up"));
                }
                self.memory.last_good.insert(app.clone(), want.release.clone());
                if let Some(d) = self.memory.deploys.get_mut(app) {
                    d.state = DeployState::Deployed { version };
                }
            }
            DeployState::Deploying { .. }
                if self.now.duration_since(deploy.started) > self.rules.deploy_timeout =>
            {
                let reason = format!(
                    "its containers did not all pass their health checks within {}s",
                    self.rules.deploy_timeout.as_secs()
                );
                // What the app falls back to: the last release that ran whole, else whatever
                // older still serves (a new leader knows no last good release).
                let last_good = self.memory.last_good.get(app).map(|r| r.version).filter(|v| *v < version);
                let serving = last_good.or(serving_older);
                let message = match serving {
                    Some(v) => format!("release v{version} failed: {reason}; v{v} keeps serving"),
                    None => format!(
                        "release v{version} failed: {reason}; nothing older serves, so it is kept trying"
                    ),
                };
                self.say(app, message);
                if let Some(d) = self.memory.deploys.get_mut(app) {
                    d.state = DeployState::Failed { version, serving, reason };
                }
                if serving.is_some() {
                    for o in ours.iter().filter(|o| !(o.running && o.healthy)) {
                        self.stop(o);
                    }
                }
            }
            _ => {}
        }
    }

    /// Starts, restarts and stops one release's containers to match the formation. True when
    /// every container it should have runs and is healthy.
    fn run_release(&mut self, want: &AppDesired, release: &ReleaseSpec, ours: &[&Observed]) -> bool {
        let mut types: BTreeSet<ProcessType> = want.formation.keys().cloned().collect();
        types.extend(ours.iter().map(|o| o.key.process_type.clone()));
        let mut whole = true;
        for ptype in &types {
            let count = if release.processes.contains_key(ptype) {
                want.formation.get(ptype).copied().unwrap_or(0)
            } else {
                0
            };
            let of_type: Vec<&Observed> =
                ours.iter().copied().filter(|o| &o.key.process_type == ptype).collect();
            whole &= self.run_type(release, ptype, count, &of_type);
        }
        whole
    }

    fn run_type(
        &mut self,
        release: &ReleaseSpec,
        ptype: &ProcessType,
        count: u32,
        of_type: &[&Observed],
    ) -> bool {
        let app = &release.app;
        // Copies were made one per key already (`one_copy_each`).
        let kept: BTreeMap<u32, &Observed> = of_type.iter().map(|o| (o.key.index, *o)).collect();
        for index in 1..=count {
            let key = ContainerKey {
                app: app.clone(),
                version: release.version,
                process_type: ptype.clone(),
                index,
            };
            self.keep_running(release, key, kept.get(&index).copied());
        }
        for (index, o) in &kept {
            if *index > count {
                self.stop(o);
            }
        }
        let ready = kept.iter().filter(|(i, o)| **i <= count && o.running && o.healthy).count();
        self.roll_restarts(app, ptype, &kept, ready >= count as usize);
        ready >= count as usize
    }

    /// One container per key: the newest running copy (the replacement) stays; the others go.
    fn one_copy_each<'o>(&mut self, mine: &[&'o Observed]) -> Vec<&'o Observed> {
        let mut by_key: BTreeMap<&ContainerKey, Vec<&'o Observed>> = BTreeMap::new();
        for o in mine {
            by_key.entry(&o.key).or_default().push(o);
        }
        let mut kept = Vec::with_capacity(by_key.len());
        for (_, mut copies) in by_key {
            copies.sort_by_key(|o| (o.running, o.started_at));
            let Some(keep) = copies.pop() else { continue };
            for extra in copies {
                self.stop(extra);
            }
            kept.push(keep);
        }
        kept
    }

    /// Starts a missing container, or restarts a crashed one in place after its backoff.
    fn keep_running(&mut self, release: &ReleaseSpec, key: ContainerKey, existing: Option<&Observed>) {
        let now = self.now;
        if let Some(o) = existing.filter(|o| o.running) {
            // Healthy for a while after its last restart: its crashes are forgiven.
            if o.healthy
                && self.memory.backoff.get(&key).is_some_and(|(_, not_before)| {
                    now.saturating_duration_since(*not_before) > self.rules.max_backoff
                })
            {
                self.memory.backoff.remove(&key);
            }
            return;
        }
        if self.memory.inflight.contains_key(&key) {
            return;
        }
        if existing.is_some() {
            let (crashes, not_before) = self.memory.backoff.get(&key).copied().unwrap_or((0, now));
            if now < not_before {
                return;
            }
            let delay =
                self.rules.min_backoff.saturating_mul(1u32 << crashes.min(16)).min(self.rules.max_backoff);
            self.memory.backoff.insert(key.clone(), (crashes + 1, now + delay));
        }
        let ptype = key.process_type.clone();
        let node = match existing {
            // A crashed container restarts where it is.
            Some(o) => Ok(o.node.to_string()),
            None => self.placer.place(&Request {
                app: release.app.to_string(),
                memory_mb: memory_of(release.limits.get(&ptype)),
                tags: release.tags.clone(),
            }),
        };
        match node.map(NodeId::parse) {
            Ok(Ok(node)) => {
                self.memory.inflight.insert(key.clone(), (node.clone(), now));
                self.actions.push(Action::Start { node, command: start_command(release, &ptype, key) });
            }
            Ok(Err(error)) => {
                let message =
                    format!("cannot place {ptype}.{}: the placer chose an invalid node: {error}", key.index);
                self.say(&release.app, message);
            }
            Err(error) => {
                self.say(&release.app, format!("cannot place {ptype}.{}: {error}", key.index));
            }
        }
    }

    /// Restarts roll: one container of a type at a time, and only while all the others of its type
    /// serve. Stopping it is enough: the next pass starts it afresh.
    fn roll_restarts(
        &mut self,
        app: &AppName,
        ptype: &ProcessType,
        kept: &BTreeMap<u32, &Observed>,
        whole: bool,
    ) {
        self.memory
            .restarts
            .retain(|k| &k.app != app || &k.process_type != ptype || kept.values().any(|o| &o.key == k));
        let busy = self.memory.inflight.keys().any(|k| &k.app == app && &k.process_type == ptype)
            || self.memory.stopping.keys().any(|(k, _)| &k.app == app && &k.process_type == ptype);
        if !whole || busy {
            return;
        }
        let next = self.memory.restarts.iter().find(|k| &k.app == app && &k.process_type == ptype).cloned();
        if let Some(key) = next {
            self.memory.restarts.remove(&key);
            if let Some(o) = kept.values().find(|o| o.key == key) {
                self.stop(o);
            }
        }
    }
}

fn memory_of(limits: Option<&Limits>) -> u64 {
    limits.and_then(|l| l.memory_mb).unwrap_or(0)
}

/// Chooses the node for a one-off container, like any other container of the app.
pub fn place_one_off(
    want: &AppDesired,
    nodes: &BTreeMap<NodeId, NodeRecord>,
    observed: &[Observed],
    memory: &Memory,
) -> Result<NodeId, String> {
    let mut desired = BTreeMap::new();
    desired.insert(want.release.app.clone(), want.clone());
    let live: Vec<&Observed> = observed.iter().filter(|o| nodes.contains_key(&o.node)).collect();
    let mut placer = placer(&desired, nodes, &live, memory);
    let request = Request {
        app: want.release.app.to_string(),
        memory_mb: memory_of(want.release.limits.get(&ProcessType::web())),
        tags: want.release.tags.clone(),
    };
    let node = placer.place(&request).map_err(|e| e.to_string())?;
    NodeId::parse(node).map_err(|e| e.to_string())
}

/// Builds the placer from what runs now (and what is being started), so capacity and spread
/// count everything.
fn placer(
    desired: &BTreeMap<AppName, AppDesired>,
    nodes: &BTreeMap<NodeId, NodeRecord>,
    live: &[&Observed],
    memory: &Memory,
) -> Placer {
    let mut allocated: HashMap<&NodeId, (u64, u32)> = HashMap::new();
    let mut existing = Vec::new();
    let cost = |key: &ContainerKey| {
        let mb = desired.get(&key.app).map_or(0, |d| memory_of(d.release.limits.get(&key.process_type)));
        if mb == 0 { placement::DEFAULT_MEMORY_MB } else { mb }
    };
    for o in live {
        let e = allocated.entry(&o.node).or_default();
        e.0 += cost(&o.key);
        e.1 += 1;
        existing.push((o.key.app.to_string(), o.node.to_string()));
    }
    for (key, (node, _)) in &memory.inflight {
        let e = allocated.entry(node).or_default();
        e.0 += cost(key);
        e.1 += 1;
        existing.push((key.app.to_string(), node.to_string()));
    }
    let views = nodes
        .iter()
        .map(|(id, record)| {
            let (mb, n) = allocated.get(id).copied().unwrap_or_default();
            NodeView {
                id: id.to_string(),
                capacity_memory_mb: record.memory_mb,
                allocated_memory_mb: mb,
                labels: record.labels.clone(),
                containers: n,
            }
        })
        .collect();
    Placer::new(views, existing)
}

/// The agent command for one container of a release.
pub fn start_command(release: &ReleaseSpec, ptype: &ProcessType, key: ContainerKey) -> StartContainer {
    let health = if ptype.is_web() { health_check(&release.config) } else { None };
    StartContainer {
        key,
        image: release.image.clone(),
        command: release.processes.get(ptype).cloned().unwrap_or_default(),
        env: release.config.clone(),
        limits: release.limits.get(ptype).cloned().unwrap_or_default(),
        health,
    }
}

/// Deis v1's health check settings, from the app's config.
fn health_check(config: &BTreeMap<String, String>) -> Option<HealthCheck> {
    let path = config.get("HEALTHCHECK_URL")?;
    if !path.starts_with('/') {
        return None;
    }
    let secs = |k: &str, d: u32| config.get(k).and_then(|v| v.parse::<u32>().ok()).unwrap_or(d);
    Some(HealthCheck {
        path: path.clone(),
        timeout_ms: secs("HEALTHCHECK_TIMEOUT", 1).saturating_mul(1000),
        initial_delay_ms: secs("HEALTHCHECK_INITIAL_DELAY", 0).saturating_mul(1000),
    })
}

#[cfg(test)]
mod tests {
    use bus_schema::messages::ReleaseSpec;

    use super::*;

    fn app() -> AppName {
        AppName::parse("shop").unwrap()
    }
    fn node(n: &str) -> NodeId {
        NodeId::parse(n).unwrap()
    }
    fn nodes(names: &[&str]) -> BTreeMap<NodeId, NodeRecord> {
        names
            .iter()
            .map(|n| {
                (
                    node(n),
                    NodeRecord {
                        id: node(n),
                        address: "10.0.0.1".into(),
                        memory_mb: 4096,
                        cpus: 2,
                        labels: BTreeMap::new(),
                    },
                )
            })
            .collect()
    }
    fn desired(version: u32, web: u32) -> BTreeMap<AppName, AppDesired> {
        BTreeMap::from([(
            app(),
            AppDesired {
                release: ReleaseSpec {
                    app: app(),
                    version,
                    image: "img".into(),
                    processes: BTreeMap::from([(ProcessType::web(), "serve".into())]),
                    config: BTreeMap::new(),
                    limits: BTreeMap::new(),
                    tags: BTreeMap::new(),
                },
                formation: BTreeMap::from([(ProcessType::web(), web)]),
                generation: 1,
            },
        )])
    }
    fn obs(n: &str, version: u32, index: u32, healthy: bool, started: i64) -> Observed {
        Observed {
            node: node(n),
            key: ContainerKey { app: app(), version, process_type: ProcessType::web(), index },
            running: true,
            healthy,
            started_at: Timestamp(started),
        }
    }
    /// What the leader keeps from one plan to the next, planning on nodes n1 and n2 (where most
    /// tests run).
    #[derive(Default)]
    struct Leader {
        memory: Memory,
        rules: Rules,
    }
    impl Leader {
        fn plan(
            &mut self,
            desired: &BTreeMap<AppName, AppDesired>,
            observed: &[Observed],
            now: Instant,
        ) -> Vec<Action> {
            plan(desired, &nodes(&["n1", "n2"]), observed, &mut self.memory, &self.rules, now)
        }
    }
    fn starts(actions: &[Action]) -> Vec<(String, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { node, command } => Some((node.to_string(), command.key.index)),
                _ => None,
            })
            .collect()
    }
    fn stops(actions: &[Action]) -> Vec<(String, u32, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { node, key } => Some((node.to_string(), key.version, key.index)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_release_starts_its_containers_spread_over_nodes() {
        let mut leader = Leader::default();
        let now = Instant::now();
        let actions = leader.plan(&desired(1, 3), &[], now);
        let s = starts(&actions);
        assert_eq!(s.len(), 3);
        let on_n1 = s.iter().filter(|(n, _)| n == "n1").count();
        assert!((1..=2).contains(&on_n1), "{s:?}");
        // Asked again before the agents report: nothing is started twice.
        assert!(starts(&leader.plan(&desired(1, 3), &[], now)).is_empty());
    }

    #[test]
    fn scaling_down_stops_the_highest_indices() {
        let mut leader = Leader::default();
        let observed = [obs("n1", 1, 1, true, 1), obs("n2", 1, 2, true, 1), obs("n1", 1, 3, true, 1)];
        let actions = leader.plan(&desired(1, 1), &observed, Instant::now());
        assert_eq!(stops(&actions), vec![("n2".into(), 1, 2), ("n1".into(), 1, 3)]);
        assert!(starts(&actions).is_empty());
    }

    #[test]
    fn a_rolling_deploy_keeps_the_old_release_until_the_new_one_is_healthy() {
        let mut leader = Leader::default();
        let now = Instant::now();
        let old = [obs("n1", 1, 1, true, 1), obs("n2", 1, 2, true, 1)];
        let actions = leader.plan(&desired(2, 2), &old, now);
        assert_eq!(starts(&actions).len(), 2);
        assert!(stops(&actions).is_empty(), "old containers stay while the new ones start");

        let mut both = old.to_vec();
        both.extend([obs("n2", 2, 1, true, 5), obs("n1", 2, 2, false, 5)]);
        let actions = leader.plan(&desired(2, 2), &both, now);
        assert!(stops(&actions).is_empty(), "one new container is not healthy yet");

        both[3].healthy = true;
        let actions = leader.plan(&desired(2, 2), &both, now);
        assert_eq!(stops(&actions), vec![("n1".into(), 1, 1), ("n2".into(), 1, 2)]);
    }

    #[test]
    fn a_release_that_never_turns_healthy_fails_and_the_old_one_keeps_serving() {
        let mut leader = Leader {
            rules: Rules { deploy_timeout: Duration::from_secs(30), ..Rules::default() },
            ..Leader::default()
        };
        let t0 = Instant::now();
        let observed = [obs("n1", 1, 1, true, 1), obs("n2", 2, 1, false, 5)];
        leader.plan(&desired(2, 1), &observed, t0);
        let actions = leader.plan(&desired(2, 1), &observed, t0 + Duration::from_secs(31));
        assert_eq!(stops(&actions), vec![("n2".into(), 2, 1)], "only the new release's containers go");
        assert!(matches!(
            leader.memory.deploys[&app()].state,
            DeployState::Failed { version: 2, serving: Some(1), .. }
        ));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Say { message, .. } if message.contains("v1 keeps serving")))
        );
        // And it is not retried.
        let later = leader.plan(&desired(2, 1), &observed[..1], t0 + Duration::from_secs(60));
        assert!(starts(&later).is_empty());
        assert!(stops(&later).is_empty());
    }

    #[test]
    fn containers_of_a_lost_node_are_replaced_elsewhere() {
        let mut memory = Memory::default();
        let observed = [obs("n1", 1, 1, true, 1), obs("n2", 1, 2, true, 1)];
        let actions =
            plan(&desired(1, 2), &nodes(&["n2"]), &observed, &mut memory, &Rules::default(), Instant::now());
        assert_eq!(starts(&actions), vec![("n2".into(), 1)]);
    }

    #[test]
    fn after_a_partition_heals_the_older_copy_of_a_key_is_stopped() {
        let mut leader = Leader::default();
        // n1 came back with web.1, which was replaced on n2 meanwhile.
        let observed = [obs("n1", 1, 1, true, 1), obs("n2", 1, 1, true, 9), obs("n2", 1, 2, true, 1)];
        let actions = leader.plan(&desired(1, 2), &observed, Instant::now());
        assert_eq!(stops(&actions), vec![("n1".into(), 1, 1)]);
        assert!(starts(&actions).is_empty());
    }

    #[test]
    fn crashed_containers_restart_in_place_with_backoff() {
        let mut leader = Leader::default();
        let t0 = Instant::now();
        let mut crashed = obs("n2", 1, 1, false, 1);
        crashed.running = false;
        let crashed = [crashed];
        let a = leader.plan(&desired(1, 1), &crashed, t0);
        assert_eq!(starts(&a), vec![("n2".into(), 1)]);
        leader.memory.inflight.clear();
        // It crashed again at once: the next restart waits.
        let a = leader.plan(&desired(1, 1), &crashed, t0 + Duration::from_millis(500));
        assert!(starts(&a).is_empty());
        let a = leader.plan(&desired(1, 1), &crashed, t0 + Duration::from_secs(3));
        assert_eq!(starts(&a).len(), 1);
    }

    #[test]
    fn restarts_roll_one_container_at_a_time() {
        let mut leader = Leader::default();
        let t0 = Instant::now();
        let observed = vec![obs("n1", 1, 1, true, 1), obs("n2", 1, 2, true, 1)];
        leader.memory.restarts.extend(observed.iter().map(|o| o.key.clone()));
        let a = leader.plan(&desired(1, 2), &observed, t0);
        assert_eq!(stops(&a), vec![("n1".into(), 1, 1)], "one at a time");
        // web.1 is gone and being restarted: web.2 waits.
        let a = leader.plan(&desired(1, 2), &observed[1..], t0);
        assert_eq!(starts(&a).len(), 1);
        assert!(stops(&a).is_empty());
        // web.1 is back and healthy: now web.2.
        leader.memory.inflight.clear();
        let back = vec![obs("n1", 1, 1, true, 5), obs("n2", 1, 2, true, 1)];
        let a = leader.plan(&desired(1, 2), &back, t0);
        assert_eq!(stops(&a), vec![("n2".into(), 1, 2)]);
        assert!(leader.memory.restarts.is_empty());
    }

    #[test]
    fn destroyed_apps_lose_every_container() {
        let mut memory = Memory::default();
        let observed = [obs("n1", 1, 1, true, 1)];
        let actions = plan(
            &BTreeMap::new(),
            &nodes(&["n1"]),
            &observed,
            &mut memory,
            &Rules::default(),
            Instant::now(),
        );
        assert_eq!(stops(&actions), vec![("n1".into(), 1, 1)]);
    }

    #[test]
    fn health_checks_come_from_deis_v1_config() {
        let config: BTreeMap<String, String> = [
            ("HEALTHCHECK_URL", "/health"),
            ("HEALTHCHECK_TIMEOUT", "3"),
            ("HEALTHCHECK_INITIAL_DELAY", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            health_check(&config),
            Some(HealthCheck { path: "/health".into(), timeout_ms: 3000, initial_delay_ms: 2000 })
        );
        assert_eq!(health_check(&BTreeMap::new()), None);
    }
}
