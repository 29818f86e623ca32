//! Placement benchmark: 10,000 containers of 500 apps on 1,000 nodes must plan well under 1 s.
//!
//! Run with `cargo bench -p scheduler --bench placement`. It prints timings (never asserts
//! them, as timings depend on the machine) and exits non-zero only if a placement fails or a
//! node ends up over capacity, which would be bugs rather than slowness.
#![allow(clippy::print_stdout)]

// Included by path so the benchmark depends on the placement module alone, not on the rest of
// the crate; it uses only part of the module's API.
#[allow(dead_code, reason = "the benchmark does not use every function of the module")]
#[path = "../src/placement.rs"]
mod placement;

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use placement::{NodeView, Placer, Request};

const NODES: usize = 1_000;
const APPS: usize = 500;
const REPLICAS: usize = 20; // web=20 for every app: 10,000 containers
const NODE_MEMORY_MB: u64 = 16 * 1024;
const RUNS: usize = 5;

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// 1,000 equal nodes in three zones; every tenth has SSDs.
fn nodes() -> Vec<NodeView> {
    (0..NODES)
        .map(|i| {
            let mut pairs = vec![("zone", format!("zone-{}", i % 3))];
            if i % 10 == 0 {
                pairs.push(("disk", "ssd".to_owned()));
            }
            NodeView {
                id: format!("node-{i:04}"),
                capacity_memory_mb: NODE_MEMORY_MB,
                allocated_memory_mb: 0,
                labels: labels(&pairs),
                containers: 0,
            }
        })
        .collect()
}

/// The containers to place, app by app as the scheduler handles formations: mixed memory
/// limits (including 0, no limit), one app in ten pinned to a zone, one in twenty-five to SSDs.
fn requests() -> Vec<Request> {
    const MEMORY_MB: [u64; 6] = [128, 0, 256, 384, 512, 192];
    let mut out = Vec::with_capacity(APPS * REPLICAS);
    for app in 0..APPS {
        let mut pairs = Vec::new();
        if app % 10 == 0 {
            pairs.push(("zone", "zone-1".to_owned()));
        }
        if app % 25 == 0 {
            pairs.push(("disk", "ssd".to_owned()));
        }
        let tags = labels(&pairs);
        // A multiplier co-prime with 6 mixes the sizes across neighbouring apps.
        let memory_mb = MEMORY_MB[(app * 7) % MEMORY_MB.len()];
        for _ in 0..REPLICAS {
            out.push(Request { app: format!("app-{app:03}"), memory_mb, tags: tags.clone() });
        }
    }
    out
}

fn main() -> ExitCode {
    let nodes = nodes();
    let requests = requests();
    let mut times = Vec::with_capacity(RUNS);
    let mut last: Option<(Placer, Vec<String>)> = None;

    for _ in 0..RUNS {
        let input = nodes.clone();
        let mut placed = Vec::with_capacity(requests.len());
        let start = Instant::now();
        let mut placer = Placer::new(input, Vec::<(String, String)>::new());
        for req in &requests {
            match placer.place(black_box(req)) {
                Ok(id) => placed.push(id),
                Err(err) => {
                    println!("placement {} of app {} failed: {err}", placed.len(), req.app);
                    return ExitCode::FAILURE;
                }
            }
        }
        times.push(start.elapsed());
        last = Some((black_box(placer), placed));
    }

    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "placed {} containers on {} nodes: best {:.1} ms, median {:.1} ms (target < 1 s)",
        requests.len(),
        nodes.len(),
        ms(times[0]),
        ms(times[times.len() / 2]),
    );

    let Some((placer, placed)) = last else {
        return ExitCode::FAILURE;
    };
    let mut worst_app = 0;
    let mut over_capacity = 0;
    let (mut min_used, mut max_used) = (u64::MAX, 0);
    for node in &nodes {
        let Some(view) = placer.node(&node.id) else {
            return ExitCode::FAILURE;
        };
        if view.allocated_memory_mb > view.capacity_memory_mb {
            over_capacity += 1;
        }
        min_used = min_used.min(view.allocated_memory_mb);
        max_used = max_used.max(view.allocated_memory_mb);
    }
    let mut per_app_node: HashMap<(&str, &str), u32> = HashMap::new();
    for (req, id) in requests.iter().zip(&placed) {
        let count = per_app_node.entry((&req.app, id)).or_default();
        *count += 1;
        worst_app = worst_app.max(*count);
    }
    let distinct = {
        let mut ids: Vec<&String> = placed.iter().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    println!(
        "spread: at most {worst_app} container(s) of one app on a single node; \
         {distinct} nodes used; memory allocated per node {min_used}–{max_used} MB of {NODE_MEMORY_MB}"
    );
    if over_capacity > 0 {
        println!("{over_capacity} node(s) over capacity");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
