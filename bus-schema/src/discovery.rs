//! The etcd side of the contract: every key the platform writes in etcd, and the JSON values
//! under them. Like subjects, keys are only ever built here. Values are JSON so operators can
//! read them with `etcdctl`; they are parsed (and refused when malformed) at the edge.
//!
//! | key                                        | value         | lease            |
//! |--------------------------------------------|---------------|------------------|
//! | `<prefix>/nodes/<node>`                    | `NodeRecord`  | the node's agent |
//! | `<prefix>/routes/<app>/<container>`        | `RouteRecord` | the node's agent |
//! | `<prefix>/components/<component>/<id>`     | `ComponentRecord` | the component |
//! | `<prefix>/scheduler/leader`                | instance id   | the leader       |
//! | `<prefix>/domains/<domain>`                | app name      | none (controller, rebuilt from Postgres) |
//! | `<prefix>/certs/<domain>`                  | `CertRecord`  | none (controller, rebuilt from Postgres) |
//! | `<prefix>/settings/<name>`                 | text          | none (deisctl)   |
//! | `<prefix>/health/<component>/<instance>`   | `HealthRecord`| the host's announcer (`deisctl announce`) |
//! | `<prefix>/members/<component>/<instance>`  | `MemberRecord`| none (the announcer, once) |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{AppName, NodeId};

/// The key layout under one prefix (`/deis` in a cluster; tests use their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.trim_end_matches('/').to_owned() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    pub fn node(&self, node: &NodeId) -> String {
        format!("{}/nodes/{node}", self.prefix)
    }
    pub fn routes(&self) -> String {
        format!("{}/routes/", self.prefix)
    }
    pub fn app_routes(&self, app: &AppName) -> String {
        format!("{}/routes/{app}/", self.prefix)
    }
    /// A route of one container; `container` is the container's name (unique per engine).
    pub fn route(&self, app: &AppName, container: &str) -> String {
        format!("{}/routes/{app}/{container}", self.prefix)
    }
    pub fn components(&self) -> String {
        format!("{}/components/", self.prefix)
    }
    pub fn component(&self, component: &str, instance: &str) -> String {
        format!("{}/components/{component}/{instance}", self.prefix)
    }
    pub fn scheduler_leader(&self) -> String {
        format!("{}/scheduler/leader", self.prefix)
    }
    /// Patroni's leader key for the platform's database (scope `database` under this prefix):
    /// its value is the node name of the member that is the primary. Written by Patroni only.
    pub fn database_leader(&self) -> String {
        format!("{}/database/leader", self.prefix)
    }
    /// Every app that exists: `<prefix>/apps/<app>` (empty value), published by the controllers
    /// so routers can tell an app with nothing running (503) from a name that is no app (404).
    pub fn apps(&self) -> String {
        format!("{}/apps/", self.prefix)
    }
    pub fn app(&self, app: &AppName) -> String {
        format!("{}/apps/{app}", self.prefix)
    }
    /// The app of an app key, if it is one.
    pub fn app_of(&self, key: &str) -> Option<AppName> {
        key.strip_prefix(&self.apps()).and_then(|name| AppName::parse(name).ok())
    }
    pub fn domains(&self) -> String {
        format!("{}/domains/", self.prefix)
    }
    /// A custom domain's key; its value is the app's name.
    pub fn domain(&self, domain: &str) -> String {
        format!("{}/domains/{domain}", self.prefix)
    }
    /// The domain of a domain key, if it is one.
    pub fn domain_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("/domains/")
            .filter(|d| !d.is_empty() && !d.contains('/'))
    }
    pub fn certs(&self) -> String {
        format!("{}/certs/", self.prefix)
    }
    /// The certificate serving a domain (or a wildcard pattern like `*.example.com`).
    pub fn cert(&self, domain: &str) -> String {
        format!("{}/certs/{domain}", self.prefix)
    }
    pub fn cert_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("/certs/")
            .filter(|d| !d.is_empty() && !d.contains('/'))
    }
    pub fn settings(&self) -> String {
        format!("{}/settings/", self.prefix)
    }
    /// Every app's log drains: `<prefix>/drains/<app>/<drain id>` = [`DrainSpec`].
    pub fn drains(&self) -> String {
        format!("{}/drains/", self.prefix)
    }
    pub fn drain(&self, app: &AppName, id: &str) -> String {
        format!("{}/drains/{app}/{id}", self.prefix)
    }
    /// The app and drain id of a drain key.
    pub fn drain_of(&self, key: &str) -> Option<(AppName, String)> {
        let rest = key.strip_prefix(&self.drains())?;
        let (app, id) = rest.split_once('/')?;
        if id.is_empty() || id.contains('/') {
            return None;
        }
        Some((AppName::parse(app).ok()?, id.to_owned()))
    }
    /// One platform setting (`domain`, `https_only`, `hsts_max_age`).
    pub fn setting(&self, name: &str) -> String {
        format!("{}/settings/{name}", self.prefix)
    }
    pub fn setting_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("/settings/")
            .filter(|s| !s.is_empty() && !s.contains('/'))
    }
    /// Every part's health, as its host's announcer last saw it (leased: gone when the host is).
    pub fn health(&self) -> String {
        format!("{}/health/", self.prefix)
    }
    pub fn part_health(&self, component: &str, instance: &str) -> String {
        format!("{}/health/{component}/{instance}", self.prefix)
    }
    /// The component and instance of a health key.
    pub fn health_of<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        two_labels(key.strip_prefix(&self.health())?)
    }
    /// Every part that ever announced itself (not leased: a part that is down stays listed).
    pub fn members(&self) -> String {
        format!("{}/members/", self.prefix)
    }
    pub fn member(&self, component: &str, instance: &str) -> String {
        format!("{}/members/{component}/{instance}", self.prefix)
    }
    pub fn member_of<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        two_labels(key.strip_prefix(&self.members())?)
    }

    /// The node id at the end of a node key.
    pub fn node_of(&self, key: &str) -> Option<NodeId> {
        NodeId::parse(key.strip_prefix(&self.nodes())?).ok()
    }

    /// The app and container of a route key.
    pub fn route_of(&self, key: &str) -> Option<(AppName, String)> {
        let rest = key.strip_prefix(&self.routes())?;
        let (app, container) = rest.split_once('/')?;
        if container.is_empty() || container.contains('/') {
            return None;
        }
        Some((AppName::parse(app).ok()?, container.to_owned()))
    }
}

/// `<component>/<instance>`, both non-empty and without further slashes.
fn two_labels(rest: &str) -> Option<(&str, &str)> {
    let (component, instance) = rest.split_once('/')?;
    (!component.is_empty() && !instance.is_empty() && !instance.contains('/'))
        .then_some((component, instance))
}

/// A running instance of a component that serves (the controller, the builder), written by the
/// component under its own lease: routers send the component's traffic to `address`. (Loggers
/// register under the same prefix only to be counted; they serve nothing there.)
/// Unknown fields are kept out of the type but accepted, so an older router reads a newer record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// `host:port` where the component serves.
    pub address: String,
    /// The component's version (its crate version), for operators reading etcd.
    #[serde(default)]
    pub version: String,
}

impl ComponentRecord {
    /// This build's record for a component serving at `address`.
    pub fn new(address: impl Into<String>, version: impl Into<String>) -> Self {
        Self { address: address.into(), version: version.into() }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of two strings always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a record; `None` for one that is not a component record.
    pub fn from_json(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}

/// A live node, written by its agent under the node's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    pub id: NodeId,
    /// The address routers use to reach this node's published ports.
    pub address: String,
    pub memory_mb: u64,
    pub cpus: u32,
    pub labels: BTreeMap<String, String>,
}

/// A healthy web container of an app, written by its node's agent under the node's lease: the
/// route vanishes when the container fails its health check, stops, or the node dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRecord {
    /// `host:port` to send the app's traffic to.
    pub address: String,
    pub node: NodeId,
    pub version: u32,
}

/// A TLS certificate chain and its key, for the routers to terminate TLS for a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRecord {
    pub certificate: String,
    pub key: String,
}

/// A log drain of an app: where the logger forwards every line of the app's stream. The URL's
/// scheme says how: `syslog://host:port` (RFC 5424 over TCP, octet counting),
/// `syslog+tls://host:port`, or `https://…` / `http://…` (Logplex-style batches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainSpec {
    pub url: String,
}

/// A part's health as its host's announcer probes it, kept under the announcer's lease: the key
/// disappears when the host (or its announcer) stops, so a missing key means "down".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthRecord {
    pub healthy: bool,
    /// `ok`, or what the probe found wrong.
    pub detail: String,
    /// What is probed, e.g. `http://127.0.0.1:9090/healthz`.
    pub probe: String,
    /// The node the part runs on (`None` for parts outside the nodes, like the front door).
    pub node: Option<NodeId>,
    /// Unix time (seconds) at which the part entered its current state.
    pub since: i64,
}

/// A part of the platform, recorded when it is first announced and kept when it goes down, so
/// an operator sees what is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    pub node: Option<NodeId>,
}

/// Parses a JSON value read from etcd, with the key in the error.
pub fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("malformed value at {key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let keys = Keys::new("/deis/");
        let node = NodeId::parse("node1").unwrap();
        assert_eq!(keys.node(&node), "/deis/nodes/node1");
        assert_eq!(keys.node_of(&keys.node(&node)), Some(node));
        let app = AppName::parse("shop").unwrap();
        let key = keys.route(&app, "c1");
        assert_eq!(key, "/deis/routes/shop/c1");
        assert_eq!(keys.route_of(&key), Some((app, "c1".to_owned())));
        assert_eq!(keys.route_of("/deis/routes/Bad/c1"), None);
        assert_eq!(keys.route_of("/deis/routes/shop/"), None);
        assert_eq!(keys.node_of("/deis/nodes/a/b"), None);
        assert_eq!(keys.domain_of(&keys.domain("www.example.com")), Some("www.example.com"));
        assert_eq!(keys.domain_of("/deis/domains/"), None);
        assert_eq!(keys.health_of(&keys.part_health("etcd", "node1")), Some(("etcd", "node1")));
        assert_eq!(keys.member_of(&keys.member("lb", "lb")), Some(("lb", "lb")));
        assert_eq!(keys.health_of("/deis/health/etcd/"), None);
        assert_eq!(keys.health_of("/deis/health/etcd/a/b"), None);
        assert_eq!(keys.setting_of(&keys.setting("domain")), Some("domain"));
        let shop = AppName::parse("shop").unwrap();
        assert_eq!(keys.app(&shop), "/deis/apps/shop");
        assert_eq!(keys.app_of(&keys.app(&shop)), Some(shop));
        assert_eq!(keys.app_of("/deis/apps/"), None);
        assert_eq!(keys.app_of("/deis/apps/shop/x"), None);
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(parse::<RouteRecord>("/k", b"{").is_err());
        assert!(parse::<RouteRecord>("/k", br#"{"address":"a","node":"n1","version":1,"x":1}"#).is_err());
        assert!(parse::<RouteRecord>("/k", br#"{"address":"a","node":"n1","version":1}"#).is_ok());
    }
}
