//! A scenario's report (fault, time to detect, time to recover, requests, p99, invariants), the
//! run's table for the terminal and for README, and its JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::invariants::Check;
use crate::load::Stats;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    /// What was done to the cluster.
    pub fault: String,
    /// From the fault to the platform noticing it (what noticing means is scenario-specific and
    /// said in `detected_by`).
    pub detect_s: Option<f64>,
    pub detected_by: String,
    /// From the fault to the platform serving as asked again.
    pub recover_s: Option<f64>,
    pub recovered_when: String,
    /// Per app under load.
    pub load: Vec<Stats>,
    pub invariants: Vec<Check>,
    /// Other numbers the scenario measures (seconds, counts).
    pub measures: BTreeMap<String, f64>,
    /// Targets the scenario checks, with whether they were met.
    pub targets: Vec<TargetResult>,
    pub notes: Vec<String>,
    /// Set when the scenario could not be carried out.
    pub error: Option<String>,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub name: String,
    pub met: bool,
    pub detail: String,
}

impl Report {
    /// A scenario passes when it ran and every invariant held. Targets (times, failed GETs) are
    /// reported, met or missed, but are not verdicts: these machines are shared and noisy.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.invariants.iter().all(|c| c.held)
    }
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub run: String,
    pub cluster: String,
    pub started: String,
    pub passed: bool,
    /// Timings of the setup: the first deploys.
    pub setup: BTreeMap<String, f64>,
    pub scenarios: Vec<Report>,
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"))
}

/// The run as a Markdown table (readable in a terminal too), then each scenario's details.
pub fn table(run: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | fault | detect | recover | failed/total GETs (per app) | p99 (per app) | invariants | result |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in &run.scenarios {
        let failed =
            r.load.iter().map(|s| format!("{}/{}", s.failed, s.total)).collect::<Vec<_>>().join(", ");
        let p99 = r.load.iter().map(|s| format!("{:.0} ms", s.p99_ms)).collect::<Vec<_>>().join(", ");
        let held = r.invariants.iter().filter(|c| c.held).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {}/{} held | {} |",
            r.scenario,
            r.fault,
            secs(r.detect_s),
            secs(r.recover_s),
            if failed.is_empty() { "-".into() } else { failed },
            if p99.is_empty() { "-".into() } else { p99 },
            held,
            r.invariants.len(),
            if r.passed() { "pass" } else { "FAIL" },
        );
    }
    if !run.setup.is_empty() {
        let _ = writeln!(out, "\n**setup**");
        for (k, v) in &run.setup {
            let _ = writeln!(out, "- {k}: {v:.2}");
        }
    }
    for r in &run.scenarios {
        let _ = writeln!(out, "\n**{}** ({:.0} s): {}", r.scenario, r.duration_s, r.fault);
        if !r.detected_by.is_empty() {
            let _ = writeln!(out, "- detected: {} ({})", secs(r.detect_s), r.detected_by);
        }
        if !r.recovered_when.is_empty() {
            let _ = writeln!(out, "- recovered: {} ({})", secs(r.recover_s), r.recovered_when);
        }
        for s in &r.load {
            let failures = if s.failures.is_empty() {
                String::new()
            } else {
                format!(
                    "; failures: {}",
                    s.failures.iter().map(|(k, v)| format!("{v}× {k}")).collect::<Vec<_>>().join(", ")
                )
            };
            let _ = writeln!(
                out,
                "- load {}: {}/{} failed, {} retried once, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{failures}",
                s.app, s.failed, s.total, s.retried, s.p50_ms, s.p99_ms, s.max_ms
            );
        }
        for (k, v) in &r.measures {
            let _ = writeln!(out, "- {k}: {v}");
        }
        for t in &r.targets {
            let _ =
                writeln!(out, "- target {}: {} ({})", t.name, if t.met { "met" } else { "MISSED" }, t.detail);
        }
        for c in &r.invariants {
            let _ = writeln!(
                out,
                "- invariant {}: {} ({})",
                c.name,
                if c.held { "held" } else { "BROKEN" },
                c.detail
            );
        }
        for n in &r.notes {
            let _ = writeln!(out, "- note: {n}");
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "- ERROR: {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_invariant_fails_the_scenario_and_shows_in_the_table() {
        let mut r =
            Report { scenario: "kill-node".into(), fault: "SIGKILL node3".into(), ..Default::default() };
        r.detect_s = Some(3.04);
        r.invariants.push(Check::new("replicas", Ok("ok".into())));
        assert!(r.passed());
        r.invariants.push(Check::new("routes", Err("a route to a dead container".into())));
        assert!(!r.passed());
        let run = RunReport {
            run: "x".into(),
            cluster: "c".into(),
            started: "now".into(),
            passed: false,
            setup: BTreeMap::new(),
            scenarios: vec![r],
        };
        let t = table(&run);
        assert!(t.contains("| kill-node | SIGKILL node3 | 3.0 s | - | - | - | 1/2 held | FAIL |"), "{t}");
        assert!(t.contains("invariant routes: BROKEN (a route to a dead container)"), "{t}");
    }
}
