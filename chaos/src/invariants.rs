//! The platform's invariants, checked against ground truth: the containers each live node's
//! engine really runs, the routes in etcd, what the controller (Postgres) answers, and the lines
//! the apps' drain streams carried.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::cluster::AppContainer;
use crate::platform::Platform;

/// One invariant after one scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub held: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self { name: name.to_owned(), held: true, detail },
            Err(detail) => Self { name: name.to_owned(), held: false, detail },
        }
    }
}

/// A write the platform acknowledged, which must never be lost.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Acked {
    Config { app: String, key: String, value: String },
    Formation { app: String, web: u32 },
    Domain { app: String, domain: String },
    Build { app: String, sha: String },
}

/// Every app container on the nodes that are live (their agent's lease is alive), and the nodes.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub live: BTreeMap<String, String>,
    pub containers: Vec<AppContainer>,
}

pub async fn placement(p: &Platform) -> Result<Placement, String> {
    let nodes = p.live_nodes().await.map_err(|e| format!("{e:#}"))?;
    let mut containers = Vec::new();
    for node in nodes.keys() {
        containers.extend(p.cluster.app_containers(node).await.map_err(|e| e.to_string())?);
    }
    Ok(Placement { live: nodes.into_iter().map(|(k, v)| (k, v.address)).collect(), containers })
}

/// The release an app should run: the newest, once deployed.
async fn deployed(p: &Platform, app: &str) -> Result<u32, String> {
    let status = p.api.deploy_status(app).await.map_err(|e| format!("{app}: deploy status: {e}"))?;
    match status {
        Some(s) if s.state == controller_api::DeployPhase::Deployed => Ok(s.version),
        Some(s) => Err(format!("{app}: v{} is {}", s.version, s.state)),
        None => Err(format!("{app}: never deployed")),
    }
}

/// Every app runs exactly the replicas asked, of its deployed release, on live nodes, one copy
/// per container key.
pub async fn replicas(p: &Platform, at: &Placement, app: &str) -> Result<String, String> {
    let wanted = p.api.app(app).await.map_err(|e| format!("{app}: {e}"))?.structure;
    let version = deployed(p, app).await?;
    let mine: Vec<&AppContainer> = at.containers.iter().filter(|c| c.app == app && c.running).collect();
    let mut problems = Vec::new();
    for (ptype, &want) in &wanted {
        let of_type: Vec<&&AppContainer> = mine.iter().filter(|c| &c.process_type == ptype).collect();
        let current = of_type.iter().filter(|c| c.version == version).count();
        if current != want as usize {
            problems.push(format!("{ptype}: {current} of v{version} running, {want} asked"));
        }
        let keys: BTreeSet<u32> = of_type.iter().map(|c| c.index).collect();
        if keys.len() != of_type.len() {
            problems.push(format!("{ptype}: two copies of one container"));
        }
    }
    let stale: Vec<String> = mine
        .iter()
        .filter(|c| c.version != version || !wanted.contains_key(&c.process_type))
        .map(|c| format!("{}.{} v{} on {}", c.process_type, c.index, c.version, c.node))
        .collect();
    if !stale.is_empty() {
        problems.push(format!("left running: {}", stale.join(", ")));
    }
    if problems.is_empty() {
        let nodes: BTreeSet<&str> = mine.iter().map(|c| c.node.as_str()).collect();
        Ok(format!(
            "{app}: {} running v{version} on {}",
            mine.len(),
            nodes.into_iter().collect::<Vec<_>>().join(",")
        ))
    } else {
        Err(format!("{app}: {}", problems.join("; ")))
    }
}

/// Every route points at a live, healthy container: one route per running web container, each
/// on a live node, at the container's published port, answering a GET.
pub async fn routes(p: &Platform, at: &Placement, app: &str) -> Result<String, String> {
    let routes = p.routes(app).await.map_err(|e| format!("{e:#}"))?;
    let web: Vec<&AppContainer> =
        at.containers.iter().filter(|c| c.app == app && c.running && c.process_type == "web").collect();
    let mut problems = Vec::new();
    for (container, route) in &routes {
        let Some(address) = at.live.get(route.node.as_str()) else {
            problems.push(format!("{container} routed on {} which is not live", route.node));
            continue;
        };
        let backs = web.iter().any(|c| {
            c.node == route.node.as_str()
                && c.host_port.is_some_and(|port| route.address == format!("{address}:{port}"))
        });
        if !backs {
            problems.push(format!("{container} → {} is no running web container", route.address));
            continue;
        }
        if let Err(e) = answers(&route.address).await {
            problems.push(format!("{container} → {}: {e}", route.address));
        }
    }
    if routes.len() != web.len() {
        problems.push(format!("{} routes for {} running web containers", routes.len(), web.len()));
    }
    if problems.is_empty() {
        Ok(format!("{app}: {} routes, all answer", routes.len()))
    } else {
        Err(problems.join("; "))
    }
}

async fn answers(address: &str) -> Result<(), String> {
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(3)).build().map_err(|e| e.to_string())?;
    let resp = http.get(format!("http://{address}/")).send().await.map_err(|e| e.to_string())?;
    if resp.status().is_success() { Ok(()) } else { Err(format!("answers {}", resp.status())) }
}

/// Every acknowledged write is still there, as the controller reads it back from Postgres.
pub async fn acknowledged(p: &Platform, ledger: &[Acked]) -> Result<String, String> {
    let mut problems = Vec::new();
    let mut formations: BTreeMap<&str, u32> = BTreeMap::new();
    // A later write of the same key replaces an earlier one: only the last must be there.
    let mut configs: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    let mut domains: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut builds: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in ledger {
        match a {
            Acked::Formation { app, web } => {
                formations.insert(app, *web);
            }
            Acked::Config { app, key, value } => {
                configs.entry(app).or_default().insert(key, value);
            }
            Acked::Domain { app, domain } => domains.entry(app).or_default().push(domain),
            Acked::Build { app, sha } => builds.entry(app).or_default().push(sha),
        }
    }
    for (app, web) in &formations {
        match p.api.app(app).await {
            Ok(a) if a.structure.get("web") == Some(web) => {}
            Ok(a) => problems.push(format!("{app}: formation {:?}, acknowledged web={web}", a.structure)),
            Err(e) => problems.push(format!("{app}: {e}")),
        }
    }
    for (app, pairs) in &configs {
        match p.api.config(app).await {
            Ok(c) => {
                for (k, v) in pairs {
                    if c.values.get(*k).map(String::as_str) != Some(*v) {
                        problems.push(format!("{app}: config {k}={v} lost"));
                    }
                }
            }
            Err(e) => problems.push(format!("{app}: {e}")),
        }
    }
    for (app, names) in &domains {
        match p.api.domains(app).await {
            Ok(list) => {
                let have: BTreeSet<&str> = list.iter().map(|d| d.domain.as_str()).collect();
                let lost: Vec<&&str> = names.iter().filter(|d| !have.contains(**d)).collect();
                if !lost.is_empty() {
                    problems.push(format!("{app}: {} acknowledged domains lost", lost.len()));
                }
            }
            Err(e) => problems.push(format!("{app}: {e}")),
        }
    }
    for (app, shas) in &builds {
        match p.api.builds(app).await {
            Ok(list) => {
                for sha in shas {
                    if !list.iter().any(|b| b.sha == *sha) {
                        problems.push(format!("{app}: build of {sha} lost"));
                    }
                }
            }
            Err(e) => problems.push(format!("{app}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(format!("{} acknowledged writes, all present", ledger.len()))
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_keeps_its_verdict_and_detail() {
        let ok = Check::new("replicas", Ok("fine".into()));
        assert!(ok.held);
        let bad = Check::new("replicas", Err("web: 1 of v3 running, 2 asked".into()));
        assert!(!bad.held);
        assert_eq!(bad.detail, "web: 1 of v3 running, 2 asked");
    }

    #[test]
    fn acknowledged_writes_serialize_with_their_kind() {
        let a = Acked::Formation { app: "one".into(), web: 2 };
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"kind":"formation","app":"one","web":2}"#);
    }
}
