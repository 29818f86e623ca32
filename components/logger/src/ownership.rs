//! Which logger instance forwards which app. Every instance stores every app's history, but only
//! one forwards an app's lines to its drains and its public drain subject, so a drain never gets
//! a line twice. The owner is chosen by rendezvous hashing of the app over the live instances
//! (registered under leases in etcd): every instance computes the same answer from the same
//! membership, and when an instance dies only its apps move.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bus_schema::names::AppName;

#[derive(Debug, Clone)]
pub struct Ownership {
    me: Arc<str>,
    members: Arc<ArcSwap<Vec<String>>>,
}

impl Ownership {
    /// Starts with this instance alone: until membership is known it forwards everything, which
    /// errs towards a duplicate rather than a loss.
    pub fn new(me: &str) -> Self {
        Self { me: me.into(), members: Arc::new(ArcSwap::from_pointee(vec![me.to_owned()])) }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Sets the live instances. This instance always counts itself as live: a logger whose own
    /// registration lapsed still forwards rather than dropping its apps.
    pub fn set_members(&self, mut members: Vec<String>) {
        if !members.iter().any(|m| *m == *self.me) {
            members.push(self.me.to_string());
        }
        members.sort();
        members.dedup();
        self.members.store(Arc::new(members));
    }

    pub fn members(&self) -> Arc<Vec<String>> {
        self.members.load_full()
    }

    pub fn owns(&self, app: &AppName) -> bool {
        owner(&self.members.load(), app).is_some_and(|o| *o == *self.me)
    }
}

/// The member with the highest score for the app.
pub fn owner<'a>(members: &'a [String], app: &AppName) -> Option<&'a str> {
    members.iter().max_by_key(|m| (score(m, app.as_str()), m.as_str())).map(String::as_str)
}

/// FNV-1a over member, a separator and app, then a 64-bit finaliser: stable across builds and
/// platforms (unlike `DefaultHasher`), and mixing well enough to spread apps evenly.
fn score(member: &str, app: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes().chain([0xff]).chain(app.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(n: usize) -> Vec<AppName> {
        (0..n).map(|i| AppName::parse(format!("app{i}")).unwrap()).collect()
    }

    #[test]
    fn every_app_has_exactly_one_owner_among_instances() {
        let members = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let views: Vec<Ownership> = members
            .iter()
            .map(|m| {
                let o = Ownership::new(m);
                o.set_members(members.clone());
                o
            })
            .collect();
        let mut per_member = [0usize; 3];
        for app in apps(600) {
            let owners: Vec<usize> = (0..3).filter(|&i| views[i].owns(&app)).collect();
            assert_eq!(owners.len(), 1, "{app} owned by {owners:?}");
            per_member[owners[0]] += 1;
        }
        assert!(per_member.iter().all(|&n| n > 120), "spread evenly: {per_member:?}");
    }

    #[test]
    fn losing_an_instance_moves_only_its_apps() {
        let all = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let two = vec!["a".to_owned(), "b".to_owned()];
        for app in apps(300) {
            let before = owner(&all, &app).unwrap();
            let after = owner(&two, &app).unwrap();
            if before != "c" {
                assert_eq!(before, after, "{app} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn an_instance_alone_owns_everything_and_always_counts_itself() {
        let o = Ownership::new("x");
        assert!(apps(20).iter().all(|a| o.owns(a)));
        o.set_members(vec!["y".to_owned()]);
        assert_eq!(*o.members(), vec!["x".to_owned(), "y".to_owned()]);
    }
}
