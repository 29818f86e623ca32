//! `deisctl status` and `deisctl nodes`: the health of every part and node, read from etcd.
//! A node is up while its agent's leased node key exists; a part is healthy or not as its host's
//! announcer last probed it, and down when no announcer reports it (the key went with its lease).
//! Parts are known from their member records (kept when they go down) and, when the Docker
//! engine is at hand, from the cluster's containers too.

use std::collections::{BTreeMap, BTreeSet};

use bus_schema::discovery::{HealthRecord, Keys, MemberRecord, NodeRecord, parse};

use crate::parts::{Container, NODE, part_name};

/// Everything `status` reads, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `(component, instance)` → health.
    pub health: BTreeMap<(String, String), HealthRecord>,
    pub members: BTreeMap<(String, String), MemberRecord>,
    /// Live nodes (their agent holds the lease).
    pub nodes: BTreeMap<String, NodeRecord>,
    /// The scheduler instance that leads.
    pub leader: Option<String>,
    /// The database member that is the primary (Patroni's leader key).
    pub database_primary: Option<String>,
    /// The cluster's containers, when the engine could be asked.
    pub containers: Vec<Container>,
    /// Values that could not be read, as `key: reason`.
    pub malformed: Vec<String>,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// A node whose agent holds its lease.
    Up,
    Healthy,
    Unhealthy,
    Down,
}

impl State {
    pub fn ok(self) -> bool {
        matches!(self, Self::Up | Self::Healthy)
    }

    pub fn word(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Healthy => "healthy",
            Self::Unhealthy => "UNHEALTHY",
            Self::Down => "DOWN",
        }
    }
}

/// One line of the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub part: String,
    pub component: String,
    pub node: Option<String>,
    pub state: State,
    /// Seconds in this state, when known.
    pub for_secs: Option<i64>,
    pub detail: String,
}

/// The order parts are listed in: the data plane's foundations first.
const ORDER: [&str; 13] = [
    "node",
    "etcd",
    "nats",
    "store",
    "router",
    "agent",
    "database",
    "registry",
    "controller",
    "scheduler",
    "builder",
    "logger",
    "lb",
];

fn rank(component: &str) -> usize {
    ORDER.iter().position(|c| *c == component).unwrap_or(ORDER.len())
}

/// Builds the status table from what was read. Pure, so it is tested without a cluster.
pub fn rows(observed: &Observed) -> Vec<Row> {
    let (nodes, parts) = observed.known();
    let mut rows: Vec<Row> = nodes.iter().map(|node| node_row(observed, node)).collect();
    rows.extend(parts.iter().map(|(component, instance)| part_row(observed, component, instance)));
    rows.sort_by(|a, b| {
        (rank(&a.component), &a.component, &a.part).cmp(&(rank(&b.component), &b.component, &b.part))
    });
    rows
}

impl Observed {
    /// Every node and part that anything reports: a part that went down keeps its member record,
    /// and one that never announced itself is still known by its container, so neither drops
    /// out of the table.
    fn known(&self) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
        let mut nodes: BTreeSet<String> = self.nodes.keys().cloned().collect();
        let mut parts: BTreeSet<(String, String)> = BTreeSet::new();
        for ((component, instance), member) in &self.members {
            nodes.extend(member.node.as_ref().map(ToString::to_string));
            parts.insert((component.clone(), instance.clone()));
        }
        for ((component, instance), health) in &self.health {
            nodes.extend(health.node.as_ref().map(ToString::to_string));
            parts.insert((component.clone(), instance.clone()));
        }
        for c in &self.containers {
            if c.is_node() {
                nodes.insert(c.instance.clone());
            } else if c.component != "announce" {
                parts.insert((c.component.clone(), c.instance.clone()));
            }
        }
        (nodes, parts)
    }

    fn container(&self, component: &str, instance: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.component == component && c.instance == instance)
    }
}

/// A node is up while its agent holds the node's lease, and down otherwise.
fn node_row(observed: &Observed, node: &str) -> Row {
    let (state, detail) = match observed.nodes.get(node) {
        Some(record) => (
            State::Up,
            format!(
                "{}, {} CPUs, {} MiB{}",
                record.address,
                record.cpus,
                record.memory_mb,
                labels(&record.labels)
            ),
        ),
        None => {
            let mut detail = "no lease: its agent is stopped or the node is unreachable".to_owned();
            if let Some(c) = observed.container(NODE, node).filter(|c| !c.running()) {
                detail = format!("{detail}; container {}", c.status.to_lowercase());
            }
            (State::Down, detail)
        }
    };
    Row {
        part: node.to_owned(),
        component: NODE.to_owned(),
        node: Some(node.to_owned()),
        state,
        for_secs: None,
        detail,
    }
}

/// A part is as its announcer last probed it, and down when no announcer reports it.
fn part_row(observed: &Observed, component: &str, instance: &str) -> Row {
    let key = (component.to_owned(), instance.to_owned());
    let member_node = observed.members.get(&key).and_then(|m| m.node.as_ref().map(ToString::to_string));
    let mut row = match observed.health.get(&key) {
        Some(h) => Row {
            part: part_name(component, instance),
            component: component.to_owned(),
            node: h.node.as_ref().map(ToString::to_string).or(member_node),
            state: if h.healthy { State::Healthy } else { State::Unhealthy },
            for_secs: Some((observed.now - h.since).max(0)),
            detail: if h.healthy { String::new() } else { h.detail.clone() },
        },
        None => unreported_row(observed, component, instance, member_node),
    };
    let role = match component {
        "scheduler" if observed.leader.as_deref() == Some(instance) => Some("leader"),
        "database" if observed.database_primary.as_deref() == Some(instance) => Some("primary"),
        "database" if row.state == State::Healthy => Some("replica"),
        _ => None,
    };
    if let Some(role) = role {
        row.detail = if row.detail.is_empty() { role.to_owned() } else { format!("{role}; {}", row.detail) };
    }
    row
}

/// A part no announcer reports is down; the detail says the likeliest reason, most telling
/// first: its container stopped, its node is down, or its announcer is.
fn unreported_row(observed: &Observed, component: &str, instance: &str, member_node: Option<String>) -> Row {
    let container = observed.container(component, instance);
    let node = member_node.or_else(|| container.and_then(|c| c.node.clone()));
    let node_down = node.as_ref().is_some_and(|n| !observed.nodes.contains_key(n));
    let detail = match container {
        Some(c) if !c.running() => format!("container {}", c.status.to_lowercase()),
        _ if node_down => "its node is down".to_owned(),
        Some(_) => "running, but no announcer reports it (is the node's announcer up?)".to_owned(),
        None => "no health report".to_owned(),
    };
    Row {
        part: part_name(component, instance),
        component: component.to_owned(),
        node,
        state: State::Down,
        for_secs: None,
        detail,
    }
}

fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(", labels {}", text.join(","))
}

/// Reads health, members, live nodes, the scheduler's leader and the database's primary from etcd.
pub async fn read(
    etcd: &mut etcd_client::Client,
    keys: &Keys,
    now: i64,
) -> Result<Observed, etcd_client::Error> {
    let mut observed = Observed { now, ..Observed::default() };
    let owned = |(component, instance): (&str, &str)| (component.to_owned(), instance.to_owned());
    let malformed = &mut observed.malformed;
    let health = records(etcd, keys.health(), |key| keys.health_of(key).map(owned), malformed).await?;
    let members = records(etcd, keys.members(), |key| keys.member_of(key).map(owned), malformed).await?;
    let nodes = records::<(), NodeRecord>(etcd, keys.nodes(), |_| Some(()), malformed).await?;
    observed.health = health.into_iter().collect();
    observed.members = members.into_iter().collect();
    observed.nodes = nodes.into_iter().map(|((), node)| (node.id.to_string(), node)).collect();
    observed.leader = value(etcd, keys.scheduler_leader()).await?;
    observed.database_primary = value(etcd, keys.database_leader()).await?;
    Ok(observed)
}

/// A key's value as trimmed text, if the key exists.
async fn value(etcd: &mut etcd_client::Client, key: String) -> Result<Option<String>, etcd_client::Error> {
    Ok(etcd
        .get(key, None)
        .await?
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).trim().to_owned()))
}

/// The records under a prefix whose keys `id_of` recognises (others are not ours to judge), in
/// key order. A malformed value is set aside (its key and why) rather than failing the read, so
/// one bad record does not hide the rest of the cluster.
async fn records<I, T: serde::de::DeserializeOwned>(
    etcd: &mut etcd_client::Client,
    prefix: String,
    id_of: impl Fn(&str) -> Option<I>,
    malformed: &mut Vec<String>,
) -> Result<Vec<(I, T)>, etcd_client::Error> {
    let mut found = Vec::new();
    for kv in etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await?.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        let Some(id) = id_of(key) else { continue };
        match parse::<T>(key, kv.value()) {
            Ok(record) => found.push((id, record)),
            Err(e) => malformed.push(e),
        }
    }
    Ok(found)
}

/// The table as text, with a summary line.
pub fn render(rows: &[Row]) -> String {
    let width =
        |f: &dyn Fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let part_w = width(&|r| r.part.len(), "PART");
    let state_w = width(&|r| r.state.word().len(), "STATE");
    let mut out = format!("{:part_w$}  {:state_w$}  {:>8}  DETAIL\n", "PART", "STATE", "FOR");
    for r in rows {
        let since = r.for_secs.map(duration).unwrap_or_default();
        out.push_str(
            format!("{:part_w$}  {:state_w$}  {since:>8}  {}", r.part, r.state.word(), r.detail).trim_end(),
        );
        out.push('\n');
    }
    out.push_str(&summary(rows));
    out.push('\n');
    out
}

/// `17 of 17 parts healthy`, or which are not.
pub fn summary(rows: &[Row]) -> String {
    let bad: Vec<&str> = rows.iter().filter(|r| !r.state.ok()).map(|r| r.part.as_str()).collect();
    let good = rows.len() - bad.len();
    if bad.is_empty() {
        format!("{good} of {} parts healthy", rows.len())
    } else {
        format!("{good} of {} parts healthy; not healthy: {}", rows.len(), bad.join(", "))
    }
}

/// `4s`, `3m10s`, `2h05m`, `3d04h`.
pub fn duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::NodeId;

    fn health(node: &str, healthy: bool, detail: &str) -> HealthRecord {
        HealthRecord {
            healthy,
            detail: detail.into(),
            probe: "tcp:127.0.0.1:1".into(),
            node: Some(NodeId::parse(node).unwrap()),
            since: 100,
        }
    }

    fn node(id: &str) -> NodeRecord {
        NodeRecord {
            id: NodeId::parse(id).unwrap(),
            address: "10.0.0.1".into(),
            memory_mb: 2048,
            cpus: 2,
            labels: BTreeMap::new(),
        }
    }

    fn member(node: &str) -> MemberRecord {
        MemberRecord { node: Some(NodeId::parse(node).unwrap()) }
    }

    fn k(c: &str, i: &str) -> (String, String) {
        (c.to_owned(), i.to_owned())
    }

    #[test]
    fn the_database_primary_and_its_replicas_are_named() {
        let mut o = Observed { now: 130, database_primary: Some("node2".into()), ..Observed::default() };
        for n in ["node1", "node2", "node3"] {
            o.nodes.insert(n.into(), node(n));
            o.members.insert(k("database", n), member(n));
        }
        o.health.insert(k("database", "node1"), health("node1", true, "ok"));
        o.health.insert(k("database", "node2"), health("node2", true, "ok"));
        o.health.insert(k("database", "node3"), health("node3", false, "HTTP 503"));
        let rows = rows(&o);
        let db: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| r.component == "database")
            .map(|r| (r.part.as_str(), r.detail.as_str()))
            .collect();
        assert_eq!(
            db,
            [("database@node1", "replica"), ("database@node2", "primary"), ("database@node3", "HTTP 503")]
        );
    }

    #[test]
    fn a_stopped_node_and_its_parts_are_down_and_the_rest_healthy() {
        let mut o = Observed { now: 130, leader: Some("node1".into()), ..Observed::default() };
        o.nodes.insert("node1".into(), node("node1"));
        for (c, i) in [("etcd", "node1"), ("etcd", "node2"), ("scheduler", "node1"), ("router", "node1")] {
            o.members.insert(k(c, i), member(i));
        }
        o.health.insert(k("etcd", "node1"), health("node1", true, "ok"));
        o.health.insert(k("scheduler", "node1"), health("node1", true, "ok"));
        o.health.insert(k("router", "node1"), health("node1", false, "HTTP 503: no route table loaded yet"));

        let rows = rows(&o);
        let parts: Vec<(&str, State)> = rows.iter().map(|r| (r.part.as_str(), r.state)).collect();
        assert_eq!(
            parts,
            [
                ("node1", State::Up),
                ("node2", State::Down),
                ("etcd@node1", State::Healthy),
                ("etcd@node2", State::Down),
                ("router@node1", State::Unhealthy),
                ("scheduler@node1", State::Healthy),
            ]
        );
        assert_eq!(rows[3].detail, "its node is down");
        assert_eq!(rows[4].detail, "HTTP 503: no route table loaded yet");
        assert_eq!(rows[5].detail, "leader");
        assert_eq!(rows[2].for_secs, Some(30));
        let text = render(&rows);
        assert!(
            text.contains("3 of 6 parts healthy; not healthy: node2, etcd@node2, router@node1"),
            "{text}"
        );
    }

    #[test]
    fn containers_add_parts_etcd_has_not_heard_of_and_say_why_they_are_down() {
        let mut o = Observed::default();
        o.containers.push(Container {
            id: "x".into(),
            name: "deis_controller_1".into(),
            component: "controller".into(),
            instance: "node2".into(),
            node: Some("node2".into()),
            state: "exited".into(),
            status: "Exited (1) 3 seconds ago".into(),
        });
        let rows = rows(&o);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, State::Down);
        assert_eq!(rows[0].detail, "container exited (1) 3 seconds ago");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(4), "4s");
        assert_eq!(duration(190), "3m10s");
        assert_eq!(duration(7500), "2h05m");
        assert_eq!(duration(3 * 86400 + 4 * 3600), "3d04h");
    }
}
