//! Whether this instance hears every live node over the bus, which decides whether it takes a
//! share of the forwarding. etcd and NATS heal separately: after a partition a node's etcd
//! connection may be back seconds (with TCP's retransmission backoff, tens of seconds) before
//! its NATS member's routes carry the other nodes' lines again. A logger that registered as soon
//! as etcd answered would take its apps back from the instance that forwarded them meanwhile and
//! then receive none of their lines. So an instance counts as reachable only while it hears each
//! live node's agent (its inventory, every 2 s): it registers once it hears them all and gives
//! up its registration when one has been silent too long. Giving up never loses a line: the
//! others take its apps over, and it goes on forwarding its own share as it sees it, so a drain
//! may get some lines twice while it is out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When a live node counts as heard.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Join: every live node heard within this long.
    pub join: Duration,
    /// Leave: some live node silent for longer than this.
    pub leave: Duration,
}

impl Windows {
    /// From the longest silence allowed: join needs every node heard within half of it, so an
    /// instance on the edge does not come and go with each inventory.
    pub fn from_silence(silence: Duration) -> Self {
        Self { join: silence / 2, leave: silence }
    }
}

/// The live nodes (from etcd) and when each was last heard on the bus.
#[derive(Debug, Default)]
pub struct Reach {
    /// Node → when this instance first saw it live (so a node never heard is silent since then).
    live: HashMap<String, Instant>,
    heard: HashMap<String, Instant>,
}

impl Reach {
    /// Replaces the live nodes; a node new to the set counts as live from `now`.
    pub fn set_live(&mut self, nodes: impl IntoIterator<Item = String>, now: Instant) {
        let previous = std::mem::take(&mut self.live);
        for node in nodes {
            let since = previous.get(&node).copied().unwrap_or(now);
            self.live.insert(node, since);
        }
    }

    pub fn heard(&mut self, node: &str, at: Instant) {
        self.heard.insert(node.to_owned(), at);
    }

    /// The live nodes not heard within `window` of `now`, sorted.
    fn silent(&self, now: Instant, window: Duration, since_live_counts: bool) -> Vec<String> {
        let mut silent: Vec<String> = self
            .live
            .iter()
            .filter(|(node, since)| {
                let last = self.heard.get(*node).copied();
                let last = if since_live_counts { last.max(Some(**since)) } else { last };
                last.is_none_or(|at| now.saturating_duration_since(at) > window)
            })
            .map(|(node, _)| node.clone())
            .collect();
        silent.sort();
        silent
    }

    /// Whether this instance should be registered, given whether it is: `Ok` to be (or stay)
    /// registered, `Err` with the nodes it does not hear.
    pub fn decide(&self, registered: bool, now: Instant, windows: Windows) -> Result<(), Vec<String>> {
        // Joining needs every node actually heard; leaving gives a node that just became live
        // the whole window to be heard first.
        let silent = if registered {
            self.silent(now, windows.leave, true)
        } else {
            self.silent(now, windows.join, false)
        };
        if silent.is_empty() { Ok(()) } else { Err(silent) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Windows = Windows { join: Duration::from_secs(3), leave: Duration::from_secs(6) };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn with_no_live_node_an_instance_registers_at_once() {
        let reach = Reach::default();
        assert_eq!(reach.decide(false, Instant::now(), W), Ok(()));
    }

    #[test]
    fn it_joins_only_once_every_live_node_is_heard() {
        let t0 = Instant::now();
        let mut reach = Reach::default();
        reach.set_live(["n1".to_owned(), "n2".to_owned()], t0);
        assert_eq!(reach.decide(false, t0, W), Err(vec!["n1".to_owned(), "n2".to_owned()]));
        reach.heard("n1", t0 + s(1));
        assert_eq!(reach.decide(false, t0 + s(1), W), Err(vec!["n2".to_owned()]));
        reach.heard("n2", t0 + s(2));
        assert_eq!(reach.decide(false, t0 + s(2), W), Ok(()));
        // n1 heard 4 s ago: too long to join on, not long enough to leave on.
        assert!(reach.decide(false, t0 + s(5), W).is_err());
        assert_eq!(reach.decide(true, t0 + s(5), W), Ok(()));
    }

    #[test]
    fn it_leaves_when_a_live_node_is_silent_too_long_and_a_dead_node_does_not_count() {
        let t0 = Instant::now();
        let mut reach = Reach::default();
        reach.set_live(["n1".to_owned(), "n2".to_owned()], t0);
        reach.heard("n1", t0);
        reach.heard("n2", t0);
        reach.heard("n1", t0 + s(6));
        assert_eq!(reach.decide(true, t0 + s(6), W), Ok(()));
        assert_eq!(reach.decide(true, t0 + s(7), W), Err(vec!["n2".to_owned()]));
        // n2's lease ran out: it is no longer live, so its silence no longer matters.
        reach.set_live(["n1".to_owned()], t0 + s(7));
        assert_eq!(reach.decide(true, t0 + s(7), W), Ok(()));
    }

    #[test]
    fn a_node_that_just_became_live_has_the_whole_window_to_be_heard() {
        let t0 = Instant::now();
        let mut reach = Reach::default();
        reach.set_live(["n1".to_owned()], t0);
        reach.heard("n1", t0);
        reach.set_live(["n1".to_owned(), "n3".to_owned()], t0 + s(1));
        reach.heard("n1", t0 + s(5));
        // A registered instance stays while n3 is new...
        assert_eq!(reach.decide(true, t0 + s(5), W), Ok(()));
        // ...and leaves once n3 has been live and silent for the whole window.
        assert_eq!(reach.decide(true, t0 + s(8), W), Err(vec!["n3".to_owned()]));
        // Being set live again keeps the first time it was seen.
        reach.set_live(["n1".to_owned(), "n3".to_owned()], t0 + s(8));
        assert!(reach.decide(true, t0 + s(8), W).is_err());
    }
}
