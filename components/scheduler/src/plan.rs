//! The reconcile step as a pure function: desired state and observed state in, the commands to
//! send out. No I/O happens here, so every rule (rolling deploys, scale, node loss, duplicates
//! after a partition, crash backoff, deploy timeouts) is unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bus_schema::discovery::NodeRecord;
use bus_schema::messages::{AppDesired, ContainerKey, DeployState, HealthCheck, Limits, StartContainer};
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
    pub started: Instant,
    pub state: DeployState,
}

/// Timing rules of the plan.
#[derive(Debug, Clone)]
pub struct Rules {
    /// A release whose containers are not all healthy by then is rolled back to the old one.
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
pub fn plan(
    desired: &BTreeMap<AppName, AppDesired>,
    nodes: &BTreeMap<NodeId, NodeRecord>,
    observed: &[Observed],
    memory: &mut Memory,
    rules: &Rules,
    now: Instant,
) -> Vec<Action> {
    let mut actions = Vec::new();
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

    let mut placer = placer(desired, nodes, &live, memory);
    let stop = |actions: &mut Vec<Action>, memory: &mut Memory, o: &Observed| {
        let id = (o.key.clone(), o.node.clone());
        if let std::collections::hash_map::Entry::Vacant(e) = memory.stopping.entry(id) {
            e.insert(now);
            actions.push(Action::Stop { node: o.node.clone(), key: o.key.clone() });
        }
    };

    // Apps that are no longer wanted: everything of theirs goes.
    for o in &live {
        if !desired.contains_key(&o.key.app) {
            stop(&mut actions, memory, o);
        }
    }

    for (app, want) in desired {
        let release = &want.release;
        if release.image.is_empty() {
            continue;
        }
        let version = release.version;
        let deploy = memory.deploys.entry(app.clone()).or_insert_with(|| Deploy {
            version,
            started: now,
            state: DeployState::Deploying { version },
        });
        if deploy.version < version {
            *deploy = Deploy { version, started: now, state: DeployState::Deploying { version } };
        }
        let failed = matches!(deploy.state, DeployState::Failed { version: v, .. } if v == version);

        let mine: Vec<&Observed> = live.iter().copied().filter(|o| &o.key.app == app).collect();
        let mut types: BTreeSet<ProcessType> = want.formation.keys().cloned().collect();
        types.extend(mine.iter().map(|o| o.key.process_type.clone()));
        let mut all_ready = true;
        let mut stop_old = Vec::new();

        for ptype in &types {
            let count = if release.processes.contains_key(ptype) {
                want.formation.get(ptype).copied().unwrap_or(0)
            } else {
                0
            };
            let current: Vec<&Observed> = mine
                .iter()
                .copied()
                .filter(|o| &o.key.process_type == ptype && o.key.version == version)
                .collect();
            let old: Vec<&Observed> = mine
                .iter()
                .copied()
                .filter(|o| &o.key.process_type == ptype && o.key.version != version)
                .collect();

            // One container per key: after a partition heals the same key can run on two nodes.
            // The newest (the replacement) stays; the others go.
            let mut by_key: BTreeMap<&ContainerKey, Vec<&Observed>> = BTreeMap::new();
            for o in &current {
                by_key.entry(&o.key).or_default().push(o);
            }
            let mut kept: BTreeMap<u32, &Observed> = BTreeMap::new();
            for (key, mut copies) in by_key {
                copies.sort_by_key(|o| (o.running, o.started_at));
                let Some(keep) = copies.pop() else { continue };
                for extra in copies {
                    stop(&mut actions, memory, extra);
                }
                kept.insert(key.index, keep);
            }

            if failed {
                for o in kept.values() {
                    stop(&mut actions, memory, o);
                }
                continue;
            }

            for index in 1..=count {
                let key = ContainerKey { app: app.clone(), version, process_type: ptype.clone(), index };
                let existing = kept.get(&index);
                let crashed = existing.is_some_and(|o| !o.running);
                if existing.is_some() && !crashed {
                    continue;
                }
                if memory.inflight.contains_key(&key) {
                    continue;
                }
                if crashed {
                    let (crashes, not_before) = memory.backoff.get(&key).copied().unwrap_or((0, now));
                    if now < not_before {
                        continue;
                    }
                    let delay =
                        rules.min_backoff.saturating_mul(1u32 << crashes.min(16)).min(rules.max_backoff);
                    memory.backoff.insert(key.clone(), (crashes + 1, now + delay));
                }
                let node = match existing {
                    // A crashed container restarts where it is.
                    Some(o) => Ok(o.node.to_string()),
                    None => placer.place(&Request {
                        app: app.to_string(),
                        memory_mb: memory_of(release.limits.get(ptype)),
                        tags: release.tags.clone(),
                    }),
                };
                match node.map(NodeId::parse) {
                    Ok(Ok(node)) => {
                        memory.inflight.insert(key.clone(), (node.clone(), now));
                        actions.push(Action::Start { node, command: start_command(want, ptype, key) });
                    }
                    Ok(Err(_)) => {}
                    Err(error) => {
                        actions.push(Action::Say {
                            app: app.clone(),
                            message: format!("cannot place {ptype}.{index}: {error}"),
                        });
                    }
                }
            }
            for (index, o) in &kept {
                if *index > count {
                    stop(&mut actions, memory, o);
                }
            }
            let ready = kept.iter().filter(|(i, o)| **i <= count && o.running && o.healthy).count();
            if ready < count as usize {
                all_ready = false;
            }
            // Restarts roll: one container of a type at a time, and only while all the others
            // of its type serve. Stopping it is enough: the next pass starts it afresh.
            memory
                .restarts
                .retain(|k| &k.app != app || &k.process_type != ptype || kept.values().any(|o| &o.key == k));
            let busy = memory.inflight.keys().any(|k| &k.app == app && &k.process_type == ptype)
                || memory.stopping.keys().any(|(k, _)| &k.app == app && &k.process_type == ptype);
            if ready >= count as usize && !busy {
                let next =
                    memory.restarts.iter().find(|k| &k.app == app && &k.process_type == ptype).cloned();
                if let Some(key) = next {
                    memory.restarts.remove(&key);
                    if let Some(o) = kept.values().find(|o| o.key == key) {
                        stop(&mut actions, memory, o);
                    }
                }
            }
            stop_old.extend(old);
        }

        if failed {
            continue;
        }
        if all_ready {
            // Rolling deploy: the old release goes only once the new one serves.
            for o in &stop_old {
                stop(&mut actions, memory, o);
            }
            let Some(deploy) = memory.deploys.get_mut(app) else { continue };
            if !matches!(deploy.state, DeployState::Deployed { .. }) && stop_old.is_empty() {
                if matches!(deploy.state, DeployState::Deploying { .. }) && version > 1 {
                    actions
                        .push(Action::Say { app: app.clone(), message: format!("release v{version} is up") });
                }
                deploy.state = DeployState::Deployed { version };
            }
        } else if memory
            .deploys
            .get(app)
            .is_some_and(|d| now.duration_since(d.started) > rules.deploy_timeout)
        {
            let serving = stop_old.iter().filter(|o| o.healthy).map(|o| o.key.version).max();
            let reason = format!(
                "its containers did not all pass their health checks within {}s",
                rules.deploy_timeout.as_secs()
            );
            let message = match serving {
                Some(v) => format!("release v{version} failed: {reason}; v{v} keeps serving"),
                None => format!("release v{version} failed: {reason}"),
            };
            actions.push(Action::Say { app: app.clone(), message });
            if let Some(deploy) = memory.deploys.get_mut(app) {
                deploy.state = DeployState::Failed { version, serving, reason };
            }
            for o in mine.iter().filter(|o| o.key.version == version) {
                stop(&mut actions, memory, o);
            }
        }
    }
    memory.deploys.retain(|app, _| desired.contains_key(app));
    actions
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
pub fn start_command(want: &AppDesired, ptype: &ProcessType, key: ContainerKey) -> StartContainer {
    let release = &want.release;
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
        let mut memory = Memory::default();
        let now = Instant::now();
        let actions = plan(&desired(1, 3), &nodes(&["n1", "n2"]), &[], &mut memory, &Rules::default(), now);
        let s = starts(&actions);
        assert_eq!(s.len(), 3);
        let on_n1 = s.iter().filter(|(n, _)| n == "n1").count();
        assert!((1..=2).contains(&on_n1), "{s:?}");
        // Asked again before the agents report: nothing is started twice.
        assert!(
            starts(&plan(&desired(1, 3), &nodes(&["n1", "n2"]), &[], &mut memory, &Rules::default(), now))
                .is_empty()
        );
    }

    #[test]
    fn scaling_down_stops_the_highest_indices() {
        let mut memory = Memory::default();
        let observed = [obs("n1", 1, 1, true, 1), obs("n2", 1, 2, true, 1), obs("n1", 1, 3, true, 1)];
        let actions = plan(
            &desired(1, 1),
            &nodes(&["n1", "n2"]),
            &observed,
            &mut memory,
            &Rules::default(),
            Instant::now(),
        );
        assert_eq!(stops(&actions), vec![("n2".into(), 1, 2), ("n1".into(), 1, 3)]);
        assert!(starts(&actions).is_empty());
    }

    #[test]
    fn a_rolling_deploy_keeps_the_old_release_until_the_new_one_is_healthy() {
        let mut memory = Memory::default();
        let now = Instant::now();
        let old = [obs("n1", 1, 1, true, 1), obs("n2", 1, 2, true, 1)];
        let actions = plan(&desired(2, 2), &nodes(&["n1", "n2"]), &old, &mut memory, &Rules::default(), now);
        assert_eq!(starts(&actions).len(), 2);
        assert!(stops(&actions).is_empty(), "old containers stay while the new ones start");

        let mut both = old.to_vec();
        both.extend([obs("n2", 2, 1, true, 5), obs("n1", 2, 2, false, 5)]);
        let actions = plan(&desired(2, 2), &nodes(&["n1", "n2"]), &both, &mut memory, &Rules::default(), now);
        assert!(stops(&actions).is_empty(), "one new container is not healthy yet");

        both[3].healthy = true;
        let actions = plan(&desired(2, 2), &nodes(&["n1", "n2"]), &both, &mut memory, &Rules::default(), now);
        assert_eq!(stops(&actions), vec![("n1".into(), 1, 1), ("n2".into(), 1, 2)]);
    }

    #[test]
    fn a_release_that_never_turns_healthy_fails_and_the_old_one_keeps_serving() {
        let mut memory = Memory::default();
        let rules = Rules { deploy_timeout: Duration::from_secs(30), ..Rules::default() };
        let t0 = Instant::now();
        let observed = [obs("n1", 1, 1, true, 1), obs("n2", 2, 1, false, 5)];
        plan(&desired(2, 1), &nodes(&["n1", "n2"]), &observed, &mut memory, &rules, t0);
        let actions = plan(
            &desired(2, 1),
            &nodes(&["n1", "n2"]),
            &observed,
            &mut memory,
            &rules,
            t0 + Duration::from_secs(31),
        );
        assert_eq!(stops(&actions), vec![("n2".into(), 2, 1)], "only the new release's containers go");
        assert!(matches!(
            memory.deploys[&app()].state,
            DeployState::Failed { version: 2, serving: Some(1), .. }
        ));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Say { message, .. } if message.contains("v1 keeps serving")))
        );
        // And it is not retried.
        let later = plan(
            &desired(2, 1),
            &nodes(&["n1", "n2"]),
            &observed[..1],
            &mut memory,
            &rules,
            t0 + Duration::from_secs(60),
        );
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
        let mut memory = Memory::default();
        // n1 came back with web.1, which was replaced on n2 meanwhile.
        let observed = [obs("n1", 1, 1, true, 1), obs("n2", 1, 1, true, 9), obs("n2", 1, 2, true, 1)];
        let actions = plan(
            &desired(1, 2),
            &nodes(&["n1", "n2"]),
            &observed,
            &mut memory,
            &Rules::default(),
            Instant::now(),
        );
        assert_eq!(stops(&actions), vec![("n1".into(), 1, 1)]);
        assert!(starts(&actions).is_empty());
    }

    #[test]
    fn crashed_containers_restart_in_place_with_backoff() {
        let mut memory = Memory::default();
        let rules = Rules::default();
        let t0 = Instant::now();
        let mut crashed = obs("n2", 1, 1, false, 1);
        crashed.running = false;
        let a = plan(
            &desired(1, 1),
            &nodes(&["n1", "n2"]),
            std::slice::from_ref(&crashed),
            &mut memory,
            &rules,
            t0,
        );
        assert_eq!(starts(&a), vec![("n2".into(), 1)]);
        memory.inflight.clear();
        // It crashed again at once: the next restart waits.
        let a = plan(
            &desired(1, 1),
            &nodes(&["n1", "n2"]),
            std::slice::from_ref(&crashed),
            &mut memory,
            &rules,
            t0 + Duration::from_millis(500),
        );
        assert!(starts(&a).is_empty());
        let a = plan(
            &desired(1, 1),
            &nodes(&["n1", "n2"]),
            std::slice::from_ref(&crashed),
            &mut memory,
            &rules,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(starts(&a).len(), 1);
    }

    #[test]
    fn restarts_roll_one_container_at_a_time() {
        let mut memory = Memory::default();
        let t0 = Instant::now();
        let observed = vec![obs("n1", 1, 1, true, 1), obs("n2", 1, 2, true, 1)];
        memory.restarts.extend(observed.iter().map(|o| o.key.clone()));
        let a = plan(&desired(1, 2), &nodes(&["n1", "n2"]), &observed, &mut memory, &Rules::default(), t0);
        assert_eq!(stops(&a), vec![("n1".into(), 1, 1)], "one at a time");
        // web.1 is gone and being restarted: web.2 waits.
        let a =
            plan(&desired(1, 2), &nodes(&["n1", "n2"]), &observed[1..], &mut memory, &Rules::default(), t0);
        assert_eq!(starts(&a).len(), 1);
        assert!(stops(&a).is_empty());
        // web.1 is back and healthy: now web.2.
        memory.inflight.clear();
        let back = vec![obs("n1", 1, 1, true, 5), obs("n2", 1, 2, true, 1)];
        let a = plan(&desired(1, 2), &nodes(&["n1", "n2"]), &back, &mut memory, &Rules::default(), t0);
        assert_eq!(stops(&a), vec![("n2".into(), 1, 2)]);
        assert!(memory.restarts.is_empty());
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
        let config = BTreeMap::from([
            ("HEALTHCHECK_URL".to_owned(), "/health".to_owned()),
            ("HEALTHCHECK_TIMEOUT".to_owned(), "3".to_owned()),
            ("HEALTHCHECK_INITIAL_DELAY".to_owned(), "2".to_owned()),
        ]);
        assert_eq!(
            health_check(&config),
            Some(HealthCheck { path: "/health".into(), timeout_ms: 3000, initial_delay_ms: 2000 })
        );
        assert_eq!(health_check(&BTreeMap::new()), None);
    }
}
