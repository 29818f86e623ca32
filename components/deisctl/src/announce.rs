//! `deisctl announce`: one per host of the cluster (each node, and the front door). It probes the
//! host's parts every second and keeps each one's health in etcd under the announcer's own
//! lease, so everything a host runs is reported down at once when the host stops (the lease runs
//! out) and an operator reads the whole cluster's health from etcd alone. Each part is also
//! recorded once as a member, which stays when it goes down.

use std::collections::HashMap;
use std::time::Duration;

use bus_schema::NodeId;
use bus_schema::discovery::{HealthRecord, Keys, MemberRecord};
use service_kit::{Backoff, Shutdown};

use crate::config::DeisctlConfig;
use crate::parts::label;
use crate::probe::{Probe, ProbeError};
use crate::unix_now;

/// One part this announcer watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub component: String,
    pub instance: String,
    pub probe: Probe,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("'{0}' is not <component>[@<instance>]=<probe>")]
    Malformed(String),
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

impl Watched {
    /// Parses `router=http://127.0.0.1:9090/healthz` or `lb@front=tcp:127.0.0.1:80`. Without an
    /// instance, the part is named after its node (or after itself, off the nodes).
    pub fn parse(spec: &str, node: Option<&NodeId>) -> Result<Self, SpecError> {
        let malformed = || SpecError::Malformed(spec.to_owned());
        let (name, probe) = spec.split_once('=').ok_or_else(malformed)?;
        let (component, instance) = match name.split_once('@') {
            Some((c, i)) => (c.to_owned(), i.to_owned()),
            None => (name.to_owned(), node.map_or_else(|| name.to_owned(), ToString::to_string)),
        };
        if !label(&component) || !label(&instance) {
            return Err(malformed());
        }
        Ok(Self { component, instance, probe: Probe::parse(probe)? })
    }

    fn part(&self) -> String {
        format!("{}@{}", self.component, self.instance)
    }
}

/// Announces until shutdown; the lease is revoked on the way out, so the parts show down at once.
pub async fn run(config: &DeisctlConfig, node: Option<NodeId>, watched: Vec<Watched>, shutdown: Shutdown) {
    let keys = Keys::new(&config.etcd.prefix);
    let ttl = config.etcd.lease_ttl_secs.max(2);
    let interval = Duration::from_millis(config.probe_interval_ms.max(100));
    let timeout = Duration::from_millis(config.probe_timeout_ms.max(100));
    let http = reqwest::Client::builder().no_proxy().timeout(timeout).build().unwrap_or_default();
    // What each part was last seen as, and since when; kept across reconnections.
    let mut seen: HashMap<String, (bool, String, i64)> = HashMap::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let Some(mut etcd) = crate::etcd::connect(&config.etcd, &shutdown).await else { return };
        let session = Session {
            keys: &keys,
            node: node.as_ref(),
            watched: &watched,
            http: &http,
            timeout,
            interval,
            ttl,
        };
        match session.run(&mut etcd, &mut seen, &shutdown).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "announcing interrupted; starting again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

struct Session<'a> {
    keys: &'a Keys,
    node: Option<&'a NodeId>,
    watched: &'a [Watched],
    http: &'a reqwest::Client,
    timeout: Duration,
    interval: Duration,
    ttl: i64,
}

impl Session<'_> {
    /// One lease's lifetime: members recorded, then probes and keep-alives every interval. Returns
    /// `Ok` on shutdown (after revoking the lease) and the error that ended it otherwise.
    async fn run(
        &self,
        etcd: &mut etcd_client::Client,
        seen: &mut HashMap<String, (bool, String, i64)>,
        shutdown: &Shutdown,
    ) -> Result<(), String> {
        let member = serde_json::to_vec(&MemberRecord { node: self.node.cloned() }).unwrap_or_default();
        for w in self.watched {
            etcd.put(self.keys.member(&w.component, &w.instance), member.clone(), None)
                .await
                .map_err(|e| format!("recording members: {e}"))?;
        }
        let lease = etcd.lease_grant(self.ttl, None).await.map_err(|e| format!("lease: {e}"))?.id();
        let (mut keeper, mut answers) =
            etcd.lease_keep_alive(lease).await.map_err(|e| format!("keep-alive: {e}"))?;
        let mut written: HashMap<String, HealthRecord> = HashMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), etcd.lease_revoke(lease)).await;
                    return Ok(());
                }
            }
            keeper.keep_alive().await.map_err(|e| format!("keep-alive: {e}"))?;
            match tokio::time::timeout(Duration::from_secs(2), answers.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return Err("the lease expired".to_owned()),
                Ok(Ok(None)) => return Err("keep-alive stream closed".to_owned()),
                Ok(Err(e)) => return Err(format!("keep-alive: {e}")),
                Err(_) => return Err("keep-alive unanswered".to_owned()),
            }
            let checks = self.watched.iter().map(|w| {
                let mut etcd = etcd.clone();
                async move { w.probe.check(self.http, &mut etcd, self.keys.prefix(), self.timeout).await }
            });
            let results = futures::future::join_all(checks).await;
            let now = unix_now();
            for (w, result) in self.watched.iter().zip(results) {
                let part = w.part();
                let (healthy, detail) = match result {
                    Ok(()) => (true, "ok".to_owned()),
                    Err(e) => (false, e),
                };
                let since = match seen.get(&part) {
                    Some((h, d, since)) if *h == healthy && *d == detail => *since,
                    _ => {
                        if healthy {
                            tracing::info!(%part, "healthy");
                        } else {
                            tracing::warn!(%part, %detail, "not healthy");
                        }
                        now
                    }
                };
                seen.insert(part.clone(), (healthy, detail.clone(), since));
                let record = HealthRecord {
                    healthy,
                    detail,
                    probe: w.probe.to_string(),
                    node: self.node.cloned(),
                    since,
                };
                if written.get(&part) == Some(&record) {
                    continue;
                }
                let value = serde_json::to_vec(&record).unwrap_or_default();
                etcd.put(
                    self.keys.part_health(&w.component, &w.instance),
                    value,
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(|e| format!("writing health: {e}"))?;
                written.insert(part, record);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_parts_after_their_node_unless_told() {
        let node = NodeId::parse("node2").unwrap();
        let w = Watched::parse("router=http://127.0.0.1:9090/healthz", Some(&node)).unwrap();
        assert_eq!((w.component.as_str(), w.instance.as_str()), ("router", "node2"));
        let w = Watched::parse("lb=tcp:127.0.0.1:80", None).unwrap();
        assert_eq!((w.component.as_str(), w.instance.as_str()), ("lb", "lb"));
        let w = Watched::parse("lb@front=tcp:127.0.0.1:80", Some(&node)).unwrap();
        assert_eq!(w.instance, "front");
    }

    #[test]
    fn bad_specs_are_refused() {
        for bad in ["router", "Router=tcp:a:1", "a@=tcp:a:1", "a@b@c=tcp:a:1"] {
            assert!(matches!(Watched::parse(bad, None), Err(SpecError::Malformed(_))), "{bad}");
        }
        assert!(matches!(Watched::parse("router=udp:x", None), Err(SpecError::Probe(_))));
    }
}
