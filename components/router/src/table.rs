//! The route table: which backends serve which host. Built from etcd's keys (routes written by
//! agents, controllers and builders registered as components), swapped in whole on every change,
//! and read without locks on every request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bus_schema::AppName;
use bus_schema::discovery::{ComponentRecord, Keys, NodeRecord, RouteRecord};
use tokio_util::sync::CancellationToken;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    App(AppName),
    Controller,
    Unknown,
}

/// Platform settings the router applies (set with `deisctl config platform set`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Answer plain HTTP requests for apps with a redirect to HTTPS.
    pub https_only: bool,
    /// Send `Strict-Transport-Security: max-age=N` on HTTPS answers.
    pub hsts_max_age: Option<u64>,
}

/// A snapshot of every route.
#[derive(Debug, Default)]
pub struct Table {
    pub apps: HashMap<AppName, Vec<String>>,
    /// Every app that exists (the controllers publish the list), routed or not: a name outside
    /// it and without routes is no app (404), an app without healthy containers is down (503).
    pub known: HashSet<AppName>,
    pub controllers: Vec<String>,
    pub builders: Vec<String>,
    /// Custom domains → app.
    pub domains: HashMap<String, AppName>,
    pub settings: Settings,
    /// Certificates by domain (or `*.parent` pattern), for SNI.
    pub certs: HashMap<String, std::sync::Arc<rustls::sign::CertifiedKey>>,
    platform_domain: String,
    /// Each app's metric handles (filled in by the router when the table is installed).
    pub app_metrics: HashMap<AppName, crate::metrics::AppMetrics>,
    pub controller_metrics: Option<crate::metrics::AppMetrics>,
    /// Round-robin cursors, per app (and one for the controller).
    cursors: HashMap<AppName, AtomicUsize>,
    controller_cursor: AtomicUsize,
    /// Each live node's address, with a token cancelled when the node leaves the cluster (its
    /// lease expired: dead, frozen or cut off). Requests in flight to a backend at that address
    /// are then given up at once: a frozen node's kernel still holds their connections open, and
    /// they would wait for the request timeout (a minute) otherwise.
    node_departures: HashMap<String, CancellationToken>,
}

impl Table {
    /// Builds the table from every key under the platform's prefix. Malformed values are
    /// skipped and counted: one bad key never takes routing down.
    pub fn build(keys: &Keys, kvs: &BTreeMap<String, Vec<u8>>, platform_domain: &str) -> (Self, usize) {
        let mut apps: HashMap<AppName, Vec<String>> = HashMap::new();
        let mut known = HashSet::new();
        let mut controllers = Vec::new();
        let mut builders = Vec::new();
        let mut bad = 0;
        let mut domains = HashMap::new();
        let mut certs = HashMap::new();
        let mut settings = Settings::default();
        let mut domain = None;
        let mut node_departures = HashMap::new();
        let components = keys.components();
        let settings_prefix = keys.settings();
        for (key, value) in kvs {
            if let Some(name) = key.strip_prefix(&settings_prefix) {
                let value = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
                match name {
                    "https_only" => match value.as_str() {
                        "true" | "1" | "yes" => settings.https_only = true,
                        "false" | "0" | "no" | "" => settings.https_only = false,
                        _ => bad += 1,
                    },
                    "hsts_max_age" => match value.parse::<u64>() {
                        Ok(0) => settings.hsts_max_age = None,
                        Ok(n) => settings.hsts_max_age = Some(n),
                        Err(_) => bad += 1,
                    },
                    // `deisctl config platform set domain=…` overrides the configured domain.
                    "domain" => match value.trim_end_matches('.') {
                        d if d.contains('.') && !d.contains('/') && !d.contains(' ') => {
                            domain = Some(d.to_owned())
                        }
                        _ => bad += 1,
                    },
                    _ => {}
                }
            } else if let Some(domain) = keys.cert_of(key) {
                match bus_schema::discovery::parse::<bus_schema::discovery::CertRecord>(key, value)
                    .ok()
                    .and_then(|r| certified_key(&r))
                {
                    Some(ck) => {
                        certs.insert(domain.to_ascii_lowercase(), ck);
                    }
                    None => bad += 1,
                }
            } else if let Some(domain) = keys.domain_of(key) {
                match std::str::from_utf8(value).ok().and_then(|v| AppName::parse(v.trim()).ok()) {
                    Some(app) => {
                        domains.insert(domain.to_ascii_lowercase(), app);
                    }
                    None => bad += 1,
                }
            } else if keys.node_of(key).is_some() {
                // Agents write these for the scheduler; one the router cannot read only means
                // requests to that node wait for their timeout, as before: not a bad route.
                if let Ok(node) = bus_schema::discovery::parse::<NodeRecord>(key, value) {
                    node_departures.insert(node.address, CancellationToken::new());
                }
            } else if let Some(app) = keys.app_of(key) {
                known.insert(app);
            } else if let Some((app, _container)) = keys.route_of(key) {
                match bus_schema::discovery::parse::<RouteRecord>(key, value) {
                    Ok(route) => apps.entry(app).or_default().push(route.address),
                    Err(_) => bad += 1,
                }
            } else if let Some(rest) = key.strip_prefix(&components) {
                let address = ComponentRecord::from_json(value).map(|r| r.address);
                match (rest.split('/').next(), address) {
                    (Some("controller"), Some(a)) => controllers.push(a),
                    (Some("builder"), Some(a)) => builders.push(a),
                    (Some("controller" | "builder"), None) => bad += 1,
                    _ => {}
                }
            }
        }
        for backends in apps.values_mut() {
            backends.sort();
        }
        controllers.sort();
        builders.sort();
        let cursors = apps.keys().map(|a| (a.clone(), AtomicUsize::new(0))).collect();
        let table = Self {
            apps,
            known,
            controllers,
            builders,
            domains,
            settings,
            certs,
            platform_domain: domain
                .unwrap_or_else(|| platform_domain.trim_end_matches('.').to_ascii_lowercase()),
            app_metrics: HashMap::new(),
            controller_metrics: None,
            cursors,
            controller_cursor: AtomicUsize::new(0),
            node_departures,
        };
        (table, bad)
    }

    /// Takes over the previous table's departure tokens for the nodes still live, and cancels
    /// those of the nodes that left: what was sent to them is given up.
    pub fn follow(&mut self, previous: &Table) -> Vec<String> {
        for (address, token) in &mut self.node_departures {
            if let Some(old) = previous.node_departures.get(address) {
                *token = old.clone();
            }
        }
        let mut left = Vec::new();
        for (address, token) in &previous.node_departures {
            if !self.node_departures.contains_key(address) {
                token.cancel();
                left.push(address.clone());
            }
        }
        left
    }

    /// The token cancelled when the node a backend (`host:port`) runs on leaves the cluster;
    /// `None` for a backend on no known node.
    pub fn departure(&self, backend: &str) -> Option<&CancellationToken> {
        if self.node_departures.is_empty() {
            return None;
        }
        let host = backend.rsplit_once(':').map_or(backend, |(h, _)| h);
        self.node_departures.get(host.trim_start_matches('[').trim_end_matches(']'))
    }

    /// Where a Host goes: `<app>.<domain>`, a custom domain, `deis.<domain>` or a bare address or
    /// `localhost` (the controller, so a local cluster needs no DNS).
    pub fn resolve(&self, host: &str) -> Target {
        let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok()
            || host == format!("deis.{}", self.platform_domain)
        {
            return Target::Controller;
        }
        if let Some(app) = self.domains.get(&host) {
            return Target::App(app.clone());
        }
        // A wildcard domain (`*.example.com`) covers one label below it.
        if let Some(app) =
            host.split_once('.').and_then(|(_, parent)| self.domains.get(&format!("*.{parent}")))
        {
            return Target::App(app.clone());
        }
        if let Some(Ok(app)) = host.strip_suffix(&format!(".{}", self.platform_domain)).map(AppName::parse) {
            return Target::App(app);
        }
        Target::Unknown
    }

    /// Whether a name is an app: listed by the controllers, or routed (a route is proof enough
    /// while the list is late).
    pub fn is_app(&self, app: &AppName) -> bool {
        self.known.contains(app) || self.apps.contains_key(app)
    }

    /// The platform certificate (`*.<platform domain>`, set by the operator with `deisctl`), for
    /// clients that send no server name or one no certificate covers: a connection by IP
    /// address still gets TLS rather than a failed handshake.
    pub fn platform_cert(&self) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        self.certs
            .get(&format!("*.{}", self.platform_domain))
            .or_else(|| self.certs.get(&self.platform_domain))
            .cloned()
    }

    /// The certificate for a TLS server name: exact, else a one-label wildcard.
    pub fn cert_for(&self, name: &str) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        self.certs
            .get(&name)
            .or_else(|| name.split_once('.').and_then(|(_, parent)| self.certs.get(&format!("*.{parent}"))))
            .cloned()
    }

    /// The backends of a target, starting at the next one in round-robin order, without those
    /// ejected (unless all are: then all, rather than none).
    pub fn candidates(&self, target: &Target, ejected: &Ejections) -> Vec<&str> {
        let (list, cursor) = match target {
            Target::App(app) => match (self.apps.get(app), self.cursors.get(app)) {
                (Some(list), Some(cursor)) => (list.as_slice(), cursor),
                _ => return Vec::new(),
            },
            Target::Controller => (self.controllers.as_slice(), &self.controller_cursor),
            Target::Unknown => return Vec::new(),
        };
        if list.is_empty() {
            return Vec::new();
        }
        let start = cursor.fetch_add(1, Ordering::Relaxed) % list.len();
        let ordered = list[start..].iter().chain(&list[..start]).map(String::as_str);
        if !ejected.any() {
            return ordered.collect();
        }
        let healthy: Vec<&str> = ordered.clone().filter(|b| !ejected.is_ejected(b)).collect();
        if healthy.is_empty() { ordered.collect() } else { healthy }
    }
}

/// Parses a PEM chain and key into what rustls serves; `None` when either is unusable.
fn certified_key(
    record: &bus_schema::discovery::CertRecord,
) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(record.certificate.as_bytes()).collect::<Result<_, _>>().ok()?;
    if chain.is_empty() {
        return None;
    }
    let key = PrivateKeyDer::from_pem_slice(record.key.as_bytes()).ok()?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    Some(std::sync::Arc::new(rustls::sign::CertifiedKey::new(chain, signing)))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| h.trim_start_matches('['));
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Backends that refused or timed out a connection, and until when they are skipped.
#[derive(Debug, Default)]
pub struct Ejections {
    until: Mutex<HashMap<String, Instant>>,
    /// How many entries the map holds, so the common case (nothing ejected) takes no lock.
    count: AtomicUsize,
}

impl Ejections {
    pub fn eject(&self, backend: &str, for_: Duration) {
        if let Ok(mut map) = self.until.lock() {
            map.insert(backend.to_owned(), Instant::now() + for_);
            self.count.store(map.len(), Ordering::Relaxed);
        }
    }

    /// Whether any backend may be ejected (cheap: no lock).
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    pub fn is_ejected(&self, backend: &str) -> bool {
        let Ok(mut map) = self.until.lock() else { return false };
        match map.get(backend) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(backend);
                self.count.store(map.len(), Ordering::Relaxed);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let keys = Keys::new("/deis");
        let route = |addr: &str| {
            serde_json::to_vec(&serde_json::json!({"address": addr, "node": "n1", "version": 1})).unwrap()
        };
        let kvs = BTreeMap::from([
            ("/deis/routes/shop/c1".to_owned(), route("10.0.0.1:1000")),
            ("/deis/routes/shop/c2".to_owned(), route("10.0.0.2:1000")),
            ("/deis/routes/shop/bad".to_owned(), b"{".to_vec()),
            (
                "/deis/components/controller/x".to_owned(),
                ComponentRecord::new("10.0.0.9:8000", "1.0.0").to_json(),
            ),
            ("/deis/nodes/n1".to_owned(), b"{}".to_vec()),
            ("/deis/domains/www.shop.example".to_owned(), b"shop".to_vec()),
            ("/deis/domains/bad.example".to_owned(), b"Not An App".to_vec()),
            ("/deis/domains/*.wild.example".to_owned(), b"shop".to_vec()),
            ("/deis/certs/broken.example".to_owned(), br#"{"certificate":"x","key":"y"}"#.to_vec()),
            ("/deis/settings/https_only".to_owned(), b"true".to_vec()),
            ("/deis/settings/hsts_max_age".to_owned(), b"lots".to_vec()),
            ("/deis/apps/idle".to_owned(), Vec::new()),
            ("/deis/apps/Not An App".to_owned(), Vec::new()),
        ]);
        let (table, bad) = Table::build(&keys, &kvs, "deis.local");
        assert_eq!(bad, 4);
        assert_eq!(table.settings, Settings { https_only: true, hsts_max_age: None });
        table
    }

    #[test]
    fn an_app_is_listed_or_routed_anything_else_is_no_app() {
        let t = table();
        let name = |n: &str| AppName::parse(n).unwrap();
        assert!(t.is_app(&name("shop")), "routed, though the list does not name it");
        assert!(t.is_app(&name("idle")), "listed, though nothing runs");
        assert!(!t.is_app(&name("gone")));
        assert_eq!(t.known.len(), 1, "a malformed name is ignored");
    }

    #[test]
    fn hosts_resolve_to_apps_and_the_controller() {
        let t = table();
        assert_eq!(t.resolve("shop.deis.local"), Target::App(AppName::parse("shop").unwrap()));
        assert_eq!(t.resolve("Shop.Deis.Local:8080"), Target::App(AppName::parse("shop").unwrap()));
        assert_eq!(t.resolve("deis.deis.local"), Target::Controller);
        assert_eq!(t.resolve("127.0.0.1:8080"), Target::Controller);
        assert_eq!(t.resolve("[::1]:80"), Target::Controller);
        assert_eq!(t.resolve("localhost"), Target::Controller);
        assert_eq!(t.resolve("example.com"), Target::Unknown);
        assert_eq!(
            t.resolve("WWW.shop.example:443"),
            Target::App(AppName::parse("shop").unwrap()),
            "a custom domain"
        );
        assert_eq!(t.resolve("bad.example"), Target::Unknown);
        assert_eq!(t.resolve("any.wild.example"), Target::App(AppName::parse("shop").unwrap()));
        assert_eq!(t.resolve("a.b.wild.example"), Target::Unknown);
        assert_eq!(t.resolve("a.b.deis.local"), Target::Unknown);
    }

    #[test]
    fn the_domain_setting_overrides_the_configured_domain() {
        let keys = Keys::new("/deis");
        let mut kvs = BTreeMap::from([("/deis/settings/domain".to_owned(), b"Apps.Example.COM.".to_vec())]);
        let (t, bad) = Table::build(&keys, &kvs, "deis.local");
        assert_eq!(bad, 0);
        assert_eq!(t.resolve("shop.apps.example.com"), Target::App(AppName::parse("shop").unwrap()));
        assert_eq!(t.resolve("deis.apps.example.com"), Target::Controller);
        assert_eq!(t.resolve("shop.deis.local"), Target::Unknown);
        kvs.insert("/deis/settings/domain".to_owned(), b"nodots".to_vec());
        let (t, bad) = Table::build(&keys, &kvs, "deis.local");
        assert_eq!(bad, 1, "a malformed domain is counted and the configured one kept");
        assert_eq!(t.resolve("shop.deis.local"), Target::App(AppName::parse("shop").unwrap()));
    }

    #[test]
    fn backends_rotate_and_ejected_ones_are_skipped() {
        let t = table();
        let shop = Target::App(AppName::parse("shop").unwrap());
        let ej = Ejections::default();
        let first = t.candidates(&shop, &ej);
        let second = t.candidates(&shop, &ej);
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], second[0], "round robin");
        ej.eject("10.0.0.1:1000", Duration::from_secs(60));
        assert_eq!(t.candidates(&shop, &ej), vec!["10.0.0.2:1000"]);
        ej.eject("10.0.0.2:1000", Duration::from_secs(60));
        assert_eq!(t.candidates(&shop, &ej).len(), 2, "all ejected: try them all rather than none");
        assert_eq!(t.candidates(&Target::Controller, &ej), vec!["10.0.0.9:8000"]);
    }
}
