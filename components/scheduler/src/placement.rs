//! Container placement: chooses the node for each new container of a release, pure and deterministic.
//!
//! The scheduler builds a [`Placer`] from the nodes it knows (their capacity, labels and load)
//! and the containers already running, then asks it for one node per container to start, and
//! tells it about containers it plans to stop. Nothing here does I/O or waits, so a whole
//! scheduling pass can be planned, tested and replayed exactly: the same inputs always give the
//! same placements.
//!
//! Rules, in order of precedence:
//! 1. **Tags**: a node qualifies only if every `key=value` tag of the request is among its labels.
//! 2. **Fit**: the node's allocated memory plus the request must not exceed its capacity; a
//!    request of 0 MB (no limit) counts as [`DEFAULT_MEMORY_MB`]. Nodes are never overfilled.
//! 3. **Spread**: prefer the node with the fewest containers of this app, so losing one node
//!    loses as few of an app's replicas as possible.
//! 4. **Load**: then the least loaded node (lowest allocated/capacity ratio), then the one with
//!    the fewest containers in total.
//! 5. **Determinism**: remaining ties go to the smallest node id.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Memory counted against a node's capacity for a container with no memory limit (0 MB).
///
/// Counting nothing would let unlimited containers pile onto one node without bound.
pub const DEFAULT_MEMORY_MB: u64 = 256;

/// What placement needs to know about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The node's id, as the agent registered it.
    pub id: String,
    /// Memory available to containers on this node.
    pub capacity_memory_mb: u64,
    /// Memory already promised to containers on this node, including those listed as
    /// `existing` when the [`Placer`] is built.
    pub allocated_memory_mb: u64,
    /// The node's labels, matched against request tags.
    pub labels: BTreeMap<String, String>,
    /// Containers of all apps on this node, including those listed as `existing`.
    pub containers: u32,
}

/// One container to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The app the container belongs to; replicas of one app are spread across nodes.
    pub app: String,
    /// The container's memory limit; 0 means no limit, counted as [`DEFAULT_MEMORY_MB`].
    pub memory_mb: u64,
    /// Labels a node must carry (every `key=value`) to run this container.
    pub tags: BTreeMap<String, String>,
}

/// Why a container could not be placed. Each message says what an operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(
    clippy::enum_variant_names,
    reason = "`PlacementError::NoCapacity` reads as the answer it is; the shared prefix is meaning"
)]
pub enum PlacementError {
    /// The cluster has no nodes at all.
    #[error("no nodes are available to run containers: start the agent on at least one host")]
    NoNodes,
    /// No node carries every tag the app asks for, whatever its free memory.
    #[error(
        "no node has labels matching the app's tags {}: label a node with them, or change the app's tags",
        DisplayTags(tags)
    )]
    NoNodeMatchesTags {
        /// The tags no node matched.
        tags: BTreeMap<String, String>,
    },
    /// Nodes match the tags but none has enough free memory left.
    #[error(
        "no matching node has {memory_mb} MB of free memory for a container of app {app}: \
         add nodes, scale other apps down, or lower the app's memory limit"
    )]
    NoCapacity {
        /// The app whose container did not fit.
        app: String,
        /// The memory counted for the container (the default for a request of 0 MB).
        memory_mb: u64,
    },
}

/// Formats tags as `{k=v, k=v}`, the way users set them with `deis tags:set k=v`.
struct DisplayTags<'a>(&'a BTreeMap<String, String>);

impl fmt::Display for DisplayTags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{key}={value}")?;
        }
        f.write_str("}")
    }
}

/// The memory a request counts against a node's capacity.
fn effective_memory(memory_mb: u64) -> u64 {
    if memory_mb == 0 { DEFAULT_MEMORY_MB } else { memory_mb }
}

/// Plans placements over a snapshot of the cluster, updating its own view as it goes.
#[derive(Debug, Clone)]
pub struct Placer {
    /// Sorted by id, so a scan in index order meets ties in id order and keeps the first.
    nodes: Vec<NodeView>,
    /// Node id to its index in `nodes`, for `existing`, `release` and `node`.
    index: HashMap<String, usize>,
    /// For each app, `(node index, containers of the app there)` sorted by node index, only for
    /// nodes where the count is non-zero. Sparse because most apps run on few nodes: a dense
    /// table would cost apps × nodes memory every time a pass builds a `Placer`.
    apps: HashMap<String, Vec<(usize, u32)>>,
    /// Scratch table of the current app's count per node, all zero between calls. `place` fills
    /// it from the app's sparse list and clears it again, so the per-node scan reads counts by
    /// index without hashing and without allocating.
    scratch: Vec<u32>,
}

impl Placer {
    /// Builds a placer from the cluster's nodes and the containers already running, given as
    /// `(app, node id)` pairs, one per container.
    ///
    /// The nodes' `allocated_memory_mb` and `containers` must already include the existing
    /// containers; `existing` only supplies how many of each app run where, for spreading.
    /// Pairs naming an unknown node are ignored (the node may have just left the cluster).
    /// If two nodes share an id, the first one is kept.
    pub fn new(mut nodes: Vec<NodeView>, existing: impl IntoIterator<Item = (String, String)>) -> Self {
        // Stable sort, so "the first one is kept" refers to the caller's order.
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|later, earlier| later.id == earlier.id);
        let index: HashMap<String, usize> =
            nodes.iter().enumerate().map(|(i, node)| (node.id.clone(), i)).collect();
        let mut placer = Self { scratch: vec![0; nodes.len()], nodes, index, apps: HashMap::new() };
        for (app, node) in existing {
            if let Some(&i) = placer.index.get(&node) {
                placer.add_app_count(app, i);
            }
        }
        placer
    }

    /// Chooses a node for one container and records it (allocated memory, app count), so the
    /// next call sees it.
    pub fn place(&mut self, req: &Request) -> Result<String, PlacementError> {
        if self.nodes.is_empty() {
            return Err(PlacementError::NoNodes);
        }
        let need = effective_memory(req.memory_mb);

        let app_counts = self.apps.get(&req.app).map_or(&[][..], Vec::as_slice);
        for &(i, count) in app_counts {
            self.scratch[i] = count;
        }

        let mut any_tag_match = false;
        let mut best: Option<usize> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if !has_tags(node, &req.tags) {
                continue;
            }
            any_tag_match = true;
            if !fits(node, need) {
                continue;
            }
            let better = match best {
                None => true,
                // Strictly better only: on a tie the earlier node, with the smaller id, stays.
                Some(b) => compare(self.scratch[i], node, self.scratch[b], &self.nodes[b]) == Ordering::Less,
            };
            if better {
                best = Some(i);
            }
        }

        for &(i, _) in app_counts {
            self.scratch[i] = 0;
        }

        let Some(chosen) = best else {
            return Err(if any_tag_match {
                PlacementError::NoCapacity { app: req.app.clone(), memory_mb: need }
            } else {
                PlacementError::NoNodeMatchesTags { tags: req.tags.clone() }
            });
        };

        let node = &mut self.nodes[chosen];
        node.allocated_memory_mb += need; // cannot overflow: `fits` checked the sum
        node.containers = node.containers.saturating_add(1);
        let id = node.id.clone();
        if let Some(counts) = self.apps.get_mut(&req.app) {
            increment(counts, chosen);
        } else {
            // Only the first container of an app allocates its key.
            self.apps.insert(req.app.clone(), vec![(chosen, 1)]);
        }
        Ok(id)
    }

    /// Records that a container was removed (frees memory and the app count), for scale-down
    /// planning.
    ///
    /// `memory_mb` is the container's limit as requested (0 frees [`DEFAULT_MEMORY_MB`]).
    /// An unknown node is ignored, and nothing goes below zero, so releasing a container the
    /// placer never counted cannot corrupt its view.
    pub fn release(&mut self, app: &str, node: &str, memory_mb: u64) {
        let Some(&i) = self.index.get(node) else {
            return;
        };
        let view = &mut self.nodes[i];
        view.allocated_memory_mb = view.allocated_memory_mb.saturating_sub(effective_memory(memory_mb));
        view.containers = view.containers.saturating_sub(1);
        if let Some(counts) = self.apps.get_mut(app) {
            if let Ok(pos) = counts.binary_search_by_key(&i, |&(n, _)| n) {
                counts[pos].1 -= 1;
                if counts[pos].1 == 0 {
                    counts.remove(pos);
                }
            }
            if counts.is_empty() {
                self.apps.remove(app);
            }
        }
    }

    /// The placer's current view of a node, including the placements and releases so far.
    pub fn node(&self, id: &str) -> Option<&NodeView> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    /// How many containers of `app` the placer counts on `node`, including placements so far.
    pub fn app_containers(&self, app: &str, node: &str) -> u32 {
        let (Some(counts), Some(&i)) = (self.apps.get(app), self.index.get(node)) else {
            return 0;
        };
        counts.binary_search_by_key(&i, |&(n, _)| n).map_or(0, |pos| counts[pos].1)
    }

    fn add_app_count(&mut self, app: String, node: usize) {
        increment(self.apps.entry(app).or_default(), node);
    }
}

/// Adds one container on `node` to an app's sparse counts, keeping them sorted by node.
fn increment(counts: &mut Vec<(usize, u32)>, node: usize) {
    match counts.binary_search_by_key(&node, |&(n, _)| n) {
        Ok(pos) => counts[pos].1 = counts[pos].1.saturating_add(1),
        Err(pos) => counts.insert(pos, (node, 1)),
    }
}

/// Whether the node carries every tag of the request.
fn has_tags(node: &NodeView, tags: &BTreeMap<String, String>) -> bool {
    tags.iter().all(|(key, value)| node.labels.get(key) == Some(value))
}

/// Whether `need` MB more still fits within the node's capacity. An overflowing sum does not
/// fit, and neither does anything on a node already over capacity (e.g. reported that way).
fn fits(node: &NodeView, need: u64) -> bool {
    node.allocated_memory_mb.checked_add(need).is_some_and(|total| total <= node.capacity_memory_mb)
}

/// Orders two candidate nodes by rules 3 and 4: fewer containers of the app, then the lower
/// allocated/capacity ratio, then fewer containers in total. Rule 5 (id) is left to the scan.
fn compare(app_a: u32, a: &NodeView, app_b: u32, b: &NodeView) -> Ordering {
    app_a.cmp(&app_b).then_with(|| load_cmp(a, b)).then_with(|| a.containers.cmp(&b.containers))
}

/// Compares allocated/capacity ratios exactly, by cross-multiplying in u128, because floats
/// could call two different loads equal (or two equal ones different) and break ties unstably.
/// Candidates always have a non-zero capacity, since a request needs at least 1 MB to fit.
fn load_cmp(a: &NodeView, b: &NodeView) -> Ordering {
    let lhs = u128::from(a.allocated_memory_mb) * u128::from(b.capacity_memory_mb);
    let rhs = u128::from(b.allocated_memory_mb) * u128::from(a.capacity_memory_mb);
    lhs.cmp(&rhs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    fn node(id: &str, capacity: u64) -> NodeView {
        NodeView {
            id: id.to_owned(),
            capacity_memory_mb: capacity,
            allocated_memory_mb: 0,
            labels: BTreeMap::new(),
            containers: 0,
        }
    }

    fn labelled(id: &str, capacity: u64, labels: &[(&str, &str)]) -> NodeView {
        NodeView { labels: tags(labels), ..node(id, capacity) }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn req(app: &str, memory_mb: u64) -> Request {
        Request { app: app.to_owned(), memory_mb, tags: BTreeMap::new() }
    }

    fn no_existing() -> Vec<(String, String)> {
        Vec::new()
    }

    fn equal_nodes(n: usize) -> Vec<NodeView> {
        (0..n).map(|i| node(&format!("n{i}"), 4096)).collect()
    }

    fn place_n(placer: &mut Placer, r: &Request, n: usize) -> Vec<String> {
        (0..n).map(|_| placer.place(r).unwrap()).collect()
    }

    #[test]
    fn three_replicas_land_on_three_nodes() {
        let mut placer = Placer::new(equal_nodes(3), no_existing());
        let mut placed = place_n(&mut placer, &req("web", 256), 3);
        placed.sort();
        assert_eq!(placed, ["n0", "n1", "n2"]);
    }

    #[test]
    fn six_replicas_land_two_per_node() {
        let mut placer = Placer::new(equal_nodes(3), no_existing());
        place_n(&mut placer, &req("web", 256), 6);
        for id in ["n0", "n1", "n2"] {
            assert_eq!(placer.app_containers("web", id), 2, "{id}");
            assert_eq!(placer.node(id).unwrap().containers, 2, "{id}");
            assert_eq!(placer.node(id).unwrap().allocated_memory_mb, 512, "{id}");
        }
    }

    #[test]
    fn spread_counts_existing_containers() {
        let existing =
            [("web", "n0"), ("web", "n1"), ("web", "gone")].map(|(a, n)| (a.to_owned(), n.to_owned()));
        let mut placer = Placer::new(equal_nodes(3), existing);
        assert_eq!(placer.place(&req("web", 256)).unwrap(), "n2");
        // Another app does not care where web runs.
        assert_eq!(placer.place(&req("worker", 256)).unwrap(), "n0");
    }

    #[test]
    fn request_larger_than_any_free_memory_fails_with_no_capacity() {
        let mut nodes = equal_nodes(2);
        nodes[0].allocated_memory_mb = 4000;
        let mut placer = Placer::new(nodes, no_existing());
        let err = placer.place(&req("big", 4097)).unwrap_err();
        assert_eq!(err, PlacementError::NoCapacity { app: "big".to_owned(), memory_mb: 4097 });
        assert!(err.to_string().contains("4097 MB"), "{err}");
        // A failure records nothing.
        assert_eq!(placer.node("n1").unwrap().allocated_memory_mb, 0);
        // Exactly full is allowed; one more megabyte is not.
        assert_eq!(placer.place(&req("big", 4096)).unwrap(), "n1");
        assert_eq!(placer.place(&req("small", 96)).unwrap(), "n0");
        assert!(placer.place(&req("small", 1)).is_err());
    }

    #[test]
    fn never_fills_a_node_over_capacity() {
        let mut placer = Placer::new(vec![node("a", 1000), node("b", 700)], no_existing());
        let mut placed = 0;
        while placer.place(&req("web", 300)).is_ok() {
            placed += 1;
        }
        assert_eq!(placed, 5); // 3 × 300 on a, 2 × 300 on b
        for id in ["a", "b"] {
            let n = placer.node(id).unwrap();
            assert!(n.allocated_memory_mb <= n.capacity_memory_mb, "{n:?}");
        }
    }

    #[test]
    fn no_limit_counts_the_default_memory() {
        let mut placer = Placer::new(vec![node("a", 2 * DEFAULT_MEMORY_MB)], no_existing());
        place_n(&mut placer, &req("web", 0), 2);
        assert_eq!(
            placer.place(&req("web", 0)),
            Err(PlacementError::NoCapacity { app: "web".to_owned(), memory_mb: DEFAULT_MEMORY_MB })
        );
    }

    #[test]
    fn only_nodes_with_matching_labels_are_used() {
        let nodes = vec![
            labelled("a", 4096, &[("disk", "ssd"), ("zone", "1")]),
            labelled("b", 4096, &[("disk", "hdd"), ("zone", "1")]),
            labelled("c", 4096, &[("disk", "ssd"), ("zone", "2")]),
            node("d", 4096),
        ];
        let mut placer = Placer::new(nodes, no_existing());
        let ssd = Request { tags: tags(&[("disk", "ssd")]), ..req("db", 256) };
        let mut placed = place_n(&mut placer, &ssd, 4);
        placed.sort();
        assert_eq!(placed, ["a", "a", "c", "c"]);

        let ssd_zone2 = Request { tags: tags(&[("disk", "ssd"), ("zone", "2")]), ..req("cache", 256) };
        assert_eq!(placer.place(&ssd_zone2).unwrap(), "c");
    }

    #[test]
    fn no_matching_node_gives_no_node_matches_tags() {
        let mut placer = Placer::new(vec![labelled("a", 4096, &[("disk", "hdd")])], no_existing());
        let wanted = tags(&[("disk", "ssd"), ("gpu", "yes")]);
        let err = placer.place(&Request { tags: wanted.clone(), ..req("ml", 256) }).unwrap_err();
        assert!(err.to_string().contains("{disk=ssd, gpu=yes}"), "{err}");
        assert_eq!(err, PlacementError::NoNodeMatchesTags { tags: wanted });
    }

    #[test]
    fn no_nodes_gives_no_nodes() {
        let mut placer = Placer::new(Vec::new(), no_existing());
        assert_eq!(placer.place(&req("web", 1)), Err(PlacementError::NoNodes));
    }

    #[test]
    fn least_loaded_preferred_when_spread_is_equal() {
        let mut nodes = vec![node("a", 1000), node("b", 4000), node("c", 2000)];
        nodes[0].allocated_memory_mb = 300; // 30 %
        nodes[1].allocated_memory_mb = 1000; // 25 %, though the most MB allocated
        nodes[2].allocated_memory_mb = 700; // 35 %
        let mut placer = Placer::new(nodes, no_existing());
        assert_eq!(placer.place(&req("web", 100)).unwrap(), "b");
        // Spread still comes first: the next web replica avoids b although b is least loaded.
        assert_eq!(placer.place(&req("web", 100)).unwrap(), "a");
    }

    #[test]
    fn equal_load_prefers_fewer_containers_then_smaller_id() {
        let mut nodes = vec![node("c", 1000), node("b", 1000), node("a", 1000)];
        nodes[0].containers = 1;
        nodes[1].containers = 3;
        nodes[2].containers = 3;
        let mut placer = Placer::new(nodes, no_existing());
        assert_eq!(placer.place(&req("x", 0)).unwrap(), "c");
        // c now has more load; a and b tie on everything but the id.
        assert_eq!(placer.place(&req("y", 0)).unwrap(), "a");
    }

    #[test]
    fn release_frees_capacity_for_a_later_place() {
        let mut placer = Placer::new(vec![node("a", 1024)], no_existing());
        place_n(&mut placer, &req("web", 512), 2);
        assert!(placer.place(&req("web", 512)).is_err());
        placer.release("web", "a", 512);
        assert_eq!(placer.app_containers("web", "a"), 1);
        assert_eq!(placer.node("a").unwrap().containers, 1);
        assert_eq!(placer.place(&req("web", 512)).unwrap(), "a");
    }

    #[test]
    fn release_frees_the_app_count_for_spreading() {
        let mut placer = Placer::new(equal_nodes(2), no_existing());
        place_n(&mut placer, &req("web", 256), 2);
        placer.release("web", "n0", 256);
        assert_eq!(placer.app_containers("web", "n0"), 0);
        assert_eq!(placer.place(&req("web", 256)).unwrap(), "n0");
    }

    #[test]
    fn release_of_unknown_things_is_harmless() {
        let mut placer = Placer::new(equal_nodes(1), no_existing());
        placer.release("web", "nowhere", 256);
        placer.release("web", "n0", 256);
        let n = placer.node("n0").unwrap();
        assert_eq!((n.allocated_memory_mb, n.containers), (0, 0));
    }

    #[test]
    fn duplicate_node_ids_keep_the_first() {
        let placer = Placer::new(vec![node("a", 1), node("a", 2)], no_existing());
        assert_eq!(placer.node("a").unwrap().capacity_memory_mb, 1);
    }

    #[test]
    fn same_inputs_give_same_placements() {
        let run = || {
            let nodes = vec![node("z", 2048), node("m", 2048), node("a", 2048)];
            let mut placer = Placer::new(nodes, no_existing());
            (0..9).map(|i| placer.place(&req(["web", "worker"][i % 2], 256)).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    // --- Property tests -------------------------------------------------------------------

    const APPS: [&str; 4] = ["web", "worker", "db", "cron"];
    const LABELS: [(&str, &str); 4] = [("disk", "ssd"), ("disk", "hdd"), ("zone", "1"), ("zone", "2")];

    fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        // Later pairs with the same key override earlier ones, as a node has one value per key.
        proptest::collection::vec(0..LABELS.len(), 0..3)
            .prop_map(|picks| tags(&picks.iter().map(|&i| LABELS[i]).collect::<Vec<_>>()))
    }

    /// Round sizes half the time, so equal loads (and the tie-breaks after them) come up often.
    fn arb_mb(max: u64) -> impl Strategy<Value = u64> {
        prop_oneof![(0..=max / 256).prop_map(|k| k * 256), 0..=max]
    }

    fn arb_node(i: usize) -> impl Strategy<Value = NodeView> {
        (arb_mb(3072), arb_mb(1536), arb_labels(), 0u32..4).prop_map(
            move |(capacity, allocated, labels, containers)| NodeView {
                id: format!("node-{i:02}"),
                capacity_memory_mb: capacity,
                // Sometimes already over capacity, as a node might report itself.
                allocated_memory_mb: allocated,
                labels,
                containers,
            },
        )
    }

    fn arb_nodes() -> impl Strategy<Value = Vec<NodeView>> {
        (1usize..30).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Place(Request),
        /// Release the container from the successful placement with this index (modulo).
        Release(usize),
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        (
            0..APPS.len(),
            prop_oneof![Just(0u64), Just(128u64), Just(256u64), Just(512u64), 1u64..1200],
            proptest::collection::vec(0..LABELS.len(), 0..2),
        )
            .prop_map(|(app, memory_mb, picks)| Request {
                app: APPS[app].to_owned(),
                memory_mb,
                tags: tags(&picks.iter().map(|&i| LABELS[i]).collect::<Vec<_>>()),
            })
    }

    fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                4 => arb_request().prop_map(Op::Place),
                1 => any::<usize>().prop_map(Op::Release),
            ],
            1..200,
        )
    }

    /// A deliberately naive restatement of the rules: collect every candidate, sort by the full
    /// key with floats replaced by the same exact ratio, take the first.
    fn oracle(
        nodes: &[NodeView],
        counts: &HashMap<(String, String), u32>,
        req: &Request,
    ) -> Result<String, PlacementError> {
        if nodes.is_empty() {
            return Err(PlacementError::NoNodes);
        }
        let need = effective_memory(req.memory_mb);
        let tagged: Vec<&NodeView> =
            nodes.iter().filter(|n| req.tags.iter().all(|(k, v)| n.labels.get(k) == Some(v))).collect();
        if tagged.is_empty() {
            return Err(PlacementError::NoNodeMatchesTags { tags: req.tags.clone() });
        }
        let count = |n: &NodeView| counts.get(&(req.app.clone(), n.id.clone())).copied().unwrap_or(0);
        let mut fitting: Vec<&NodeView> = tagged
            .into_iter()
            .filter(|n| {
                u128::from(n.allocated_memory_mb) + u128::from(need) <= u128::from(n.capacity_memory_mb)
            })
            .collect();
        fitting.sort_by(|a, b| {
            count(a)
                .cmp(&count(b))
                .then_with(|| {
                    (u128::from(a.allocated_memory_mb) * u128::from(b.capacity_memory_mb))
                        .cmp(&(u128::from(b.allocated_memory_mb) * u128::from(a.capacity_memory_mb)))
                })
                .then_with(|| a.containers.cmp(&b.containers))
                .then_with(|| a.id.cmp(&b.id))
        });
        fitting
            .first()
            .map(|n| n.id.clone())
            .ok_or_else(|| PlacementError::NoCapacity { app: req.app.clone(), memory_mb: need })
    }

    proptest! {
        #[test]
        fn placements_respect_tags_capacity_and_spread(nodes in arb_nodes(), ops in arb_ops()) {
            let mut placer = Placer::new(nodes.clone(), no_existing());
            // Our own model of the cluster, updated independently of the placer.
            let mut model = nodes.clone();
            let mut counts: HashMap<(String, String), u32> = HashMap::new();
            let mut placed: Vec<(Request, String)> = Vec::new();

            for op in ops {
                match op {
                    Op::Release(pick) => {
                        if placed.is_empty() {
                            continue;
                        }
                        let (r, id) = placed.remove(pick % placed.len());
                        placer.release(&r.app, &id, r.memory_mb);
                        let n = model.iter_mut().find(|n| n.id == id).unwrap();
                        n.allocated_memory_mb -= effective_memory(r.memory_mb);
                        n.containers -= 1;
                        *counts.get_mut(&(r.app.clone(), id)).unwrap() -= 1;
                    }
                    Op::Place(r) => {
                        let need = effective_memory(r.memory_mb);
                        let count = |id: &str| counts.get(&(r.app.clone(), id.to_owned())).copied().unwrap_or(0);
                        // Nodes that were eligible and had room at this moment.
                        let open: Vec<String> = model
                            .iter()
                            .filter(|n| r.tags.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
                            .filter(|n| n.allocated_memory_mb + need <= n.capacity_memory_mb)
                            .map(|n| n.id.clone())
                            .collect();
                        let got = placer.place(&r);
                        prop_assert_eq!(&got, &oracle(&model, &counts, &r));
                        match got {
                            Ok(id) => {
                                let n = model.iter_mut().find(|n| n.id == id).unwrap();
                                // Tags are honoured.
                                for (k, v) in &r.tags {
                                    prop_assert_eq!(n.labels.get(k), Some(v));
                                }
                                // Spread: no open node had fewer of this app's containers.
                                let chosen = count(&id);
                                for other in &open {
                                    prop_assert!(chosen <= count(other),
                                        "{} placed on {} with {} of its containers, but {} had {}",
                                        r.app, id, chosen, other, count(other));
                                }
                                n.allocated_memory_mb += need;
                                n.containers += 1;
                                *counts.entry((r.app.clone(), id.clone())).or_default() += 1;
                                // Never over capacity.
                                prop_assert!(n.allocated_memory_mb <= n.capacity_memory_mb);
                                placed.push((r, id));
                            }
                            // A failure only when no eligible node had room.
                            Err(_) => prop_assert!(open.is_empty()),
                        }
                    }
                }
                // The placer's view matches the model after every step.
                for n in &model {
                    prop_assert_eq!(placer.node(&n.id), Some(n));
                    for app in APPS {
                        prop_assert_eq!(placer.app_containers(app, &n.id), count_of(&counts, app, &n.id));
                    }
                }
            }
        }

        #[test]
        fn node_order_does_not_matter(nodes in arb_nodes(), ops in arb_ops(), seed in any::<u64>()) {
            let mut shuffled = nodes.clone();
            // A cheap deterministic shuffle; the placer must sort the input itself.
            let len = shuffled.len();
            for i in (1..len).rev() {
                let j = usize::try_from(seed.rotate_left(u32::try_from(i).unwrap()) % (i as u64 + 1)).unwrap();
                shuffled.swap(i, j);
            }
            let mut a = Placer::new(nodes, no_existing());
            let mut b = Placer::new(shuffled, no_existing());
            for op in ops {
                if let Op::Place(r) = op {
                    prop_assert_eq!(a.place(&r), b.place(&r));
                }
            }
        }
    }

    fn count_of(counts: &HashMap<(String, String), u32>, app: &str, node: &str) -> u32 {
        counts.get(&(app.to_owned(), node.to_owned())).copied().unwrap_or(0)
    }
}
