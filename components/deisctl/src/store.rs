//! `deisctl store status`: the store's (Ceph's) health in a line or two, from `ceph status` run
//! in one of the store's containers (they hold the cluster's admin key; nothing else does).

use serde_json::Value;

/// What `ceph status --format json` says, reduced to what an operator reads first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `HEALTH_OK`, `HEALTH_WARN` or `HEALTH_ERR`.
    pub health: String,
    pub monitors: u64,
    pub quorum: Vec<String>,
    pub osds: u64,
    pub osds_up: u64,
    pub osds_in: u64,
    /// Placement groups by state, most first.
    pub pgs: Vec<(String, u64)>,
    pub bytes_used: u64,
    pub bytes_total: u64,
    /// Each health check: its code, severity and message.
    pub checks: Vec<(String, String, String)>,
}

impl Summary {
    /// Reads `ceph status --format json` (Pacific; older releases nest the OSD map once more).
    pub fn parse(json: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| format!("ceph status is not JSON: {e}"))?;
        let health = v
            .pointer("/health/status")
            .and_then(Value::as_str)
            .ok_or("ceph status names no health")?
            .to_owned();
        let n = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        let osdmap = v.get("osdmap").map(|o| o.get("osdmap").unwrap_or(o));
        let osd = |k: &str| osdmap.and_then(|o| o.get(k)).and_then(Value::as_u64).unwrap_or(0);
        let quorum = v
            .get("quorum_names")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let mut pgs: Vec<(String, u64)> = v
            .pointer("/pgmap/pgs_by_state")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((s.get("state_name")?.as_str()?.to_owned(), s.get("count")?.as_u64()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        pgs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut checks: Vec<(String, String, String)> = v
            .pointer("/health/checks")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(code, c)| {
                        let severity = c.get("severity").and_then(Value::as_str).unwrap_or("?");
                        let message = c.pointer("/summary/message").and_then(Value::as_str).unwrap_or("");
                        (code.clone(), severity.to_owned(), message.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        checks.sort();
        Ok(Self {
            health,
            monitors: n("/monmap/num_mons"),
            quorum,
            osds: osd("num_osds"),
            osds_up: osd("num_up_osds"),
            osds_in: osd("num_in_osds"),
            pgs,
            bytes_used: n("/pgmap/bytes_used"),
            bytes_total: n("/pgmap/bytes_total"),
            checks,
        })
    }

    pub fn healthy(&self) -> bool {
        self.health == "HEALTH_OK"
    }

    /// The first line always; a second naming each health check when there are any.
    pub fn lines(&self) -> Vec<String> {
        let pgs = if self.pgs.is_empty() {
            "no placement groups".to_owned()
        } else {
            let total: u64 = self.pgs.iter().map(|(_, c)| c).sum();
            let states: Vec<String> = self.pgs.iter().map(|(s, c)| format!("{c} {s}")).collect();
            format!("{total} placement groups ({})", states.join(", "))
        };
        let mut out = vec![format!(
            "{}: {} of {} monitors in quorum ({}), {} of {} OSDs up ({} in), {pgs}, {} used of {}",
            self.health,
            self.quorum.len(),
            self.monitors,
            self.quorum.join(", "),
            self.osds_up,
            self.osds,
            self.osds_in,
            bytes(self.bytes_used),
            bytes(self.bytes_total),
        )];
        if !self.checks.is_empty() {
            let checks: Vec<String> = self
                .checks
                .iter()
                .map(|(code, severity, message)| {
                    let severity = severity.strip_prefix("HEALTH_").unwrap_or(severity).to_lowercase();
                    format!("{code} ({severity}): {message}")
                })
                .collect();
            out.push(format!("  {}", checks.join("; ")));
        }
        out
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    // Precision does not matter for a summary line.
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from a real `ceph status --format json` of this cluster with node3 stopped.
    const DEGRADED: &str = r#"{
      "fsid": "4f0c", "health": {"status": "HEALTH_WARN", "checks": {
        "OSD_DOWN": {"severity": "HEALTH_WARN", "summary": {"message": "1 osds down", "count": 1}, "muted": false},
        "MON_DOWN": {"severity": "HEALTH_WARN", "summary": {"message": "1/3 mons down, quorum node1,node2", "count": 1}, "muted": false}
      }, "mutes": []},
      "quorum": [0, 1], "quorum_names": ["node1", "node2"],
      "monmap": {"epoch": 1, "min_mon_release_name": "pacific", "num_mons": 3},
      "osdmap": {"epoch": 31, "num_osds": 3, "num_up_osds": 2, "num_in_osds": 3, "num_remapped_pgs": 0},
      "pgmap": {"pgs_by_state": [{"state_name": "active+undersized+degraded", "count": 41},
                                 {"state_name": "active+clean", "count": 7}],
                "num_pools": 6, "bytes_used": 3328180224, "bytes_avail": 22436048896, "bytes_total": 25769803776}
    }"#;

    #[test]
    fn a_degraded_store_says_what_is_down_and_why() {
        let s = Summary::parse(DEGRADED).unwrap();
        assert!(!s.healthy());
        let lines = s.lines();
        assert_eq!(
            lines[0],
            "HEALTH_WARN: 2 of 3 monitors in quorum (node1, node2), 2 of 3 OSDs up (3 in), 48 placement \
             groups (41 active+undersized+degraded, 7 active+clean), 3.1 GiB used of 24.0 GiB"
        );
        assert_eq!(
            lines[1],
            "  MON_DOWN (warn): 1/3 mons down, quorum node1,node2; OSD_DOWN (warn): 1 osds down"
        );
    }

    #[test]
    fn a_healthy_store_is_one_line_and_older_nesting_is_read() {
        let json = r#"{"health": {"status": "HEALTH_OK", "checks": {}}, "quorum_names": ["a", "b", "c"],
          "monmap": {"num_mons": 3}, "osdmap": {"osdmap": {"num_osds": 3, "num_up_osds": 3, "num_in_osds": 3}},
          "pgmap": {"pgs_by_state": [{"state_name": "active+clean", "count": 48}], "bytes_used": 512, "bytes_total": 2048}}"#;
        let s = Summary::parse(json).unwrap();
        assert!(s.healthy());
        assert_eq!(
            s.lines(),
            ["HEALTH_OK: 3 of 3 monitors in quorum (a, b, c), 3 of 3 OSDs up (3 in), 48 placement groups \
              (48 active+clean), 512 B used of 2.0 KiB"]
        );
    }

    #[test]
    fn what_is_not_a_status_is_a_clear_error() {
        assert!(Summary::parse("not json").unwrap_err().contains("not JSON"));
        assert!(Summary::parse("{}").unwrap_err().contains("no health"));
    }
}
