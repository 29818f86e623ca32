//! Failed logins, counted per key (a username's digest, a client address), so that guessing
//! passwords is slow: after a few failures the key is locked out for a while, longer with every
//! further failure. Attempts still being checked count against the limit too, so that many
//! guesses sent at once cannot all get past it before the first failure is known. In memory, per
//! controller instance, and bounded in size: a full table forgets the entries that matter least
//! first. The counts and lockouts every instance must see are also kept in Postgres
//! (`model::login_lockouts`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest lockout, however many failures came before.
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);
/// Failures are forgotten this long after the last one (or the end of its lockout).
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// What an attempt waits while as many others are being checked as the key may still fail.
const BUSY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// The last failure, or the end of its lockout if later.
    until: Instant,
    locked_until: Option<Instant>,
    /// Attempts begun and not yet finished.
    in_flight: u32,
}

impl Failures {
    fn forgotten(&self, now: Instant) -> bool {
        now >= self.until + FORGET_AFTER
    }
}

/// Failed attempts per key, with lockouts.
#[derive(Debug)]
pub struct Throttle<K> {
    entries: Mutex<HashMap<K, Failures>>,
    max_failures: u32,
    first_lockout: Duration,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// `max_failures` failures lock a key out for `first_lockout`; each further one doubles it.
    /// At most `capacity` keys are remembered.
    pub fn new(max_failures: u32, first_lockout: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_failures: max_failures.max(1),
            first_lockout: first_lockout.max(Duration::from_secs(1)),
            capacity: capacity.max(1),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<K, Failures>> {
        // A panic elsewhere while holding the lock leaves the counts usable.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `key` must still wait, while it is locked out.
    pub fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let entries = self.entries();
        let until = entries.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Begins an attempt of `key`, unless it is locked out or as many attempts are being checked
    /// as it may still fail before a lockout: then how long to wait. Every attempt begun is
    /// [`finish`](Self::finish)ed.
    pub fn begin(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut entries = self.entries();
        let entry = self.entry(&mut entries, key, now);
        if let Some(until) = entry.locked_until.filter(|until| *until > now) {
            return Err(until - now);
        }
        // Once past the limit, after a lockout, one attempt at a time.
        let allowance = self.max_failures.saturating_sub(entry.count).max(1);
        if entry.in_flight >= allowance {
            return Err(BUSY);
        }
        entry.in_flight += 1;
        Ok(())
    }

    /// Finishes an attempt begun with [`begin`](Self::begin); returns the lockout its failure
    /// starts, if it starts one.
    pub fn finish(&self, key: &K, failed: bool, now: Instant) -> Option<Duration> {
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if !failed && entry.count == 0 && entry.in_flight == 0 {
                entries.remove(key);
            }
        }
        if failed { self.fail_in(&mut entries, key, now) } else { None }
    }

    /// Records a failure of `key` (an attempt not begun); returns the lockout it starts, if it
    /// starts one.
    pub fn fail(&self, key: &K, now: Instant) -> Option<Duration> {
        self.fail_in(&mut self.entries(), key, now)
    }

    /// `key`'s entry, made (room first) if it has none, started over if forgotten.
    fn entry<'a>(&self, entries: &'a mut HashMap<K, Failures>, key: &K, now: Instant) -> &'a mut Failures {
        if !entries.contains_key(key) && entries.len() >= self.capacity {
            make_room(entries, self.capacity, now);
        }
        let fresh = Failures { count: 0, until: now, locked_until: None, in_flight: 0 };
        let entry = entries.entry(key.clone()).or_insert(fresh);
        if entry.forgotten(now) {
            *entry = Failures { in_flight: entry.in_flight, ..fresh };
        }
        entry
    }

    fn fail_in(&self, entries: &mut HashMap<K, Failures>, key: &K, now: Instant) -> Option<Duration> {
        let entry = self.entry(entries, key, now);
        entry.count = entry.count.saturating_add(1);
        entry.until = entry.until.max(now);
        if entry.count < self.max_failures {
            return None;
        }
        // The first lockout at the limit, doubling with every failure after it.
        let doublings = (entry.count - self.max_failures).min(16);
        let lockout = self.first_lockout.saturating_mul(1 << doublings).min(MAX_LOCKOUT);
        entry.locked_until = Some(now + lockout);
        entry.until = now + lockout;
        Some(lockout)
    }

    /// Forgets `key`'s failures (after it succeeded), and any attempt of it being checked.
    pub fn reset(&self, key: &K) {
        self.entries().remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Leaves fewer than `capacity` entries: the forgotten ones go first, then those whose hold ends
/// soonest (a locked-out key is kept longest).
fn make_room<K: Hash + Eq + Clone>(entries: &mut HashMap<K, Failures>, capacity: usize, now: Instant) {
    entries.retain(|_, f| !f.forgotten(now));
    while entries.len() >= capacity {
        let Some(soonest) = entries.iter().min_by_key(|(_, f)| f.until).map(|(k, _)| k.clone()) else {
            break;
        };
        entries.remove(&soonest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn locks_out_after_the_limit_and_doubles_after() {
        let t = Throttle::new(3, 10 * S, 100);
        let now = Instant::now();
        assert_eq!(t.fail(&"k", now), None);
        assert_eq!(t.fail(&"k", now), None);
        assert_eq!(t.locked(&"k", now), None);
        assert_eq!(t.fail(&"k", now), Some(10 * S));
        assert_eq!(t.locked(&"k", now + 4 * S), Some(6 * S));
        assert_eq!(t.locked(&"other", now), None, "keys are separate");
        // Once the lockout passes, one more failure locks it out for twice as long.
        let later = now + 10 * S;
        assert_eq!(t.locked(&"k", later), None);
        assert_eq!(t.fail(&"k", later), Some(20 * S));
        assert_eq!(t.fail(&"k", later + 20 * S), Some(40 * S));
    }

    #[test]
    fn lockouts_are_capped_and_failures_forgotten() {
        let t = Throttle::new(1, 1000 * S, 100);
        let now = Instant::now();
        assert_eq!(t.fail(&"k", now), Some(1000 * S));
        assert_eq!(t.fail(&"k", now + 1000 * S), Some(2000 * S));
        assert_eq!(t.fail(&"k", now + 3000 * S), Some(MAX_LOCKOUT));
        let quiet = now + 3000 * S + MAX_LOCKOUT + FORGET_AFTER;
        assert_eq!(t.fail(&"k", quiet), Some(1000 * S), "a quiet key starts over");
    }

    #[test]
    fn a_reset_forgets_the_failures() {
        let t = Throttle::new(2, 10 * S, 100);
        let now = Instant::now();
        t.fail(&"k", now);
        t.reset(&"k");
        assert_eq!(t.fail(&"k", now), None);
        assert!(t.fail(&"k", now).is_some());
    }

    #[test]
    fn attempts_being_checked_count_against_the_limit() {
        let t = Throttle::new(3, 10 * S, 100);
        let now = Instant::now();
        // Three guesses at once may run; a fourth waits for them.
        for _ in 0..3 {
            t.begin(&"k", now).unwrap();
        }
        assert_eq!(t.begin(&"k", now), Err(BUSY));
        assert_eq!(t.finish(&"k", true, now), None);
        assert_eq!(t.begin(&"k", now), Err(BUSY), "two still running may still fail");
        assert_eq!(t.finish(&"k", true, now), None);
        assert_eq!(t.finish(&"k", true, now), Some(10 * S));
        assert_eq!(t.begin(&"k", now + S), Err(9 * S));
        // After the lockout, one attempt at a time.
        let later = now + 10 * S;
        t.begin(&"k", later).unwrap();
        assert_eq!(t.begin(&"k", later), Err(BUSY));
        assert_eq!(t.finish(&"k", false, later), None);
        t.begin(&"k", later).unwrap();
    }

    #[test]
    fn a_success_leaves_nothing_behind() {
        let t = Throttle::new(3, 10 * S, 100);
        let now = Instant::now();
        t.begin(&"k", now).unwrap();
        t.finish(&"k", false, now);
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_keeps_locked_keys() {
        let t = Throttle::new(2, 60 * S, 10);
        let now = Instant::now();
        t.fail(&0, now);
        t.fail(&0, now);
        assert!(t.locked(&0, now).is_some());
        for key in 1..1000 {
            t.fail(&key, now + S);
        }
        assert!(t.len() <= 10, "{} keys remembered", t.len());
        assert!(t.locked(&0, now + S).is_some(), "the locked key outlives the flood");
        // Forgotten entries make room before anything else.
        let much_later = now + MAX_LOCKOUT + FORGET_AFTER;
        t.fail(&5000, much_later);
        assert_eq!(t.len(), 1);
    }
}
