//! The cluster as the Docker engine sees it: the parts' containers (found by their compose
//! project and `io.deis.*` labels, through deisctl's `Parts`), the faults applied to them, and
//! each node's own engine (reached through its socket on the node's volume) for the app
//! containers that really run.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{KillContainerOptions, ListContainersOptions, RestartContainerOptions};
use bus_schema::labels;
use deisctl::parts::{Container, Parts, Target};
use futures::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error(transparent)]
    Parts(#[from] deisctl::parts::PartsError),
    #[error(transparent)]
    Target(#[from] deisctl::parts::TargetError),
    #[error("cluster '{cluster}' has no part {part}")]
    NoPart { cluster: String, part: String },
    #[error("`{command}` in {container} failed ({code:?}): {output}")]
    Exec { container: String, command: String, code: Option<i64>, output: String },
    #[error("the engine of {node} does not answer: {reason}")]
    Engine { node: String, reason: String },
}

/// An app container as a node's engine reports it (read from the [`labels`] the agent wrote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppContainer {
    pub node: String,
    pub id: String,
    pub app: String,
    pub version: u32,
    pub process_type: String,
    pub index: u32,
    pub running: bool,
    pub host_port: Option<u16>,
}

impl AppContainer {
    /// The hostname the app sees (and answers with): the container id's first 12 characters.
    pub fn hostname(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    docker: Docker,
    project: String,
    parts: Parts,
    /// Node addresses, briefly cached: the suite's polls ask for them many times a second, and a
    /// node that restarts may come back with a new one.
    addresses: Arc<Mutex<AddressCache>>,
}

type AddressCache = HashMap<String, (Option<IpAddr>, Instant)>;

/// Rules a partition adds to a node's firewall, tagged so that healing removes exactly them.
const PARTITION_TAG: &str = "deis-chaos-partition";
const PARTITION_RULES: [(&str, &str); 4] =
    [("INPUT", "-i"), ("OUTPUT", "-o"), ("FORWARD", "-i"), ("FORWARD", "-o")];

impl Cluster {
    pub fn connect(project: &str) -> Result<Self, ClusterError> {
        let docker = Docker::connect_with_local_defaults()?;
        Ok(Self {
            parts: Parts::new(docker.clone(), project),
            docker,
            project: project.to_owned(),
            addresses: Arc::default(),
        })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub async fn parts(&self) -> Result<Vec<Container>, ClusterError> {
        Ok(self.parts.list().await?)
    }

    /// One part, like `etcd`/`node2` or `controller`/`node2`.
    pub async fn part(&self, component: &str, instance: &str) -> Result<Container, ClusterError> {
        self.parts()
            .await?
            .into_iter()
            .find(|c| c.component == component && c.instance == instance)
            .ok_or_else(|| ClusterError::NoPart {
                cluster: self.project.clone(),
                part: format!("{component}/{instance}"),
            })
    }

    /// A node's container and everything sharing its network namespace.
    pub async fn node_parts(&self, node: &str) -> Result<Vec<Container>, ClusterError> {
        let all = self.parts().await?;
        Ok(Target::parse(node)?.select(&all)?.into_iter().cloned().collect())
    }

    /// SIGKILL to all of them at once (concurrently), as a power cut would.
    pub async fn kill(&self, containers: &[Container]) -> Result<(), ClusterError> {
        let kills = containers.iter().map(|c| async move {
            self.docker.kill_container(&c.id, Some(KillContainerOptions { signal: "SIGKILL".into() })).await
        });
        for result in futures::future::join_all(kills).await {
            match result {
                // Already dead (it may have died with its node's network namespace).
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {}
                other => other?,
            }
        }
        Ok(())
    }

    pub async fn pause(&self, containers: &[Container]) -> Result<(), ClusterError> {
        let all = containers.iter().map(|c| self.docker.pause_container(&c.id));
        for result in futures::future::join_all(all).await {
            result?;
        }
        Ok(())
    }

    pub async fn unpause(&self, containers: &[Container]) -> Result<(), ClusterError> {
        let all = containers.iter().map(|c| self.docker.unpause_container(&c.id));
        for result in futures::future::join_all(all).await {
            result?;
        }
        Ok(())
    }

    /// Starts a node (its engine first, then its parts) or a part, as `deisctl start` does.
    pub async fn start(&self, target: &str) -> Result<(), ClusterError> {
        Ok(self.parts.start(&Target::parse(target)?, |_| {}).await?)
    }

    pub async fn start_container(&self, c: &Container) -> Result<(), ClusterError> {
        match self
            .docker
            .start_container(&c.id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
        {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) | Ok(()) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn restart(&self, c: &Container, grace_secs: i32) -> Result<(), ClusterError> {
        let options = RestartContainerOptions { t: Some(grace_secs), ..Default::default() };
        Ok(self.docker.restart_container(&c.id, Some(options)).await?)
    }

    pub async fn running(&self, c: &Container) -> Result<bool, ClusterError> {
        let info = self.docker.inspect_container(&c.id, None).await?;
        Ok(info.state.and_then(|s| s.running).unwrap_or(false))
    }

    /// The node's address on the cluster network.
    pub async fn node_ip(&self, node: &str) -> Result<Option<IpAddr>, ClusterError> {
        if let Ok(cache) = self.addresses.lock()
            && let Some((ip, at)) = cache.get(node)
            && at.elapsed() < Duration::from_secs(2)
        {
            return Ok(*ip);
        }
        let ip = self.inspect_node_ip(node).await?;
        if let Ok(mut cache) = self.addresses.lock() {
            cache.insert(node.to_owned(), (ip, Instant::now()));
        }
        Ok(ip)
    }

    async fn inspect_node_ip(&self, node: &str) -> Result<Option<IpAddr>, ClusterError> {
        let c = self.part("node", node).await?;
        let info = self.docker.inspect_container(&c.id, None).await?;
        let network = format!("{}_cluster", self.project);
        Ok(info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&network))
            .and_then(|n| n.ip_address)
            .and_then(|ip| ip.parse().ok()))
    }

    /// Cuts a node off the cluster network: its firewall drops everything in and out of its
    /// cluster interface, forwarded traffic of its app containers included. Loopback (its parts
    /// talking to each other) keeps working, as on a host whose uplink failed.
    pub async fn partition(&self, node: &str) -> Result<(), ClusterError> {
        let c = self.part("node", node).await?;
        for (chain, dir) in PARTITION_RULES {
            self.exec(&c, &rule("-I", chain, dir)).await?;
        }
        Ok(())
    }

    /// Removes what `partition` added (every copy, so a repeated partition heals too).
    pub async fn heal_partition(&self, node: &str) -> Result<(), ClusterError> {
        let c = self.part("node", node).await?;
        for (chain, dir) in PARTITION_RULES {
            // `-D` fails once no such rule is left.
            for _ in 0..16 {
                if self.exec(&c, &rule("-D", chain, dir)).await.is_err() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Runs a command (an argument vector, no shell) in a container; its output, or an error
    /// with the output when it exits non-zero.
    pub async fn exec(&self, c: &Container, argv: &[String]) -> Result<String, ClusterError> {
        let exec = self
            .docker
            .create_exec(
                &c.id,
                CreateExecOptions {
                    cmd: Some(argv.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let mut text = String::new();
        if let StartExecResults::Attached { mut output, .. } = self.docker.start_exec(&exec.id, None).await? {
            while let Some(chunk) = output.next().await {
                text.push_str(&chunk?.to_string());
            }
        }
        let code = self.docker.inspect_exec(&exec.id).await?.exit_code;
        if code == Some(0) {
            Ok(text)
        } else {
            Err(ClusterError::Exec { container: c.name.clone(), command: argv.join(" "), code, output: text })
        }
    }

    /// The app containers in a node's own engine (through its socket on the node's `run`
    /// volume), or an error when the engine does not answer in time (a node killed or paused).
    pub async fn app_containers(&self, node: &str) -> Result<Vec<AppContainer>, ClusterError> {
        let engine_err = |reason: String| ClusterError::Engine { node: node.to_owned(), reason };
        let engine = self.engine(node).await?;
        let filters = HashMap::from([("label".to_owned(), vec![labels::APP.to_owned()])]);
        let list = engine.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }));
        let found = tokio::time::timeout(Duration::from_secs(4), list)
            .await
            .map_err(|_| engine_err("no answer within 4 s".into()))?
            .map_err(|e| engine_err(e.to_string()))?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let container_labels = c.labels.unwrap_or_default();
                // One-off `deis run` containers are not part of the formation.
                if container_labels.contains_key(labels::RUN) {
                    return None;
                }
                let key = labels::container_key(&container_labels)?;
                Some(AppContainer {
                    node: node.to_owned(),
                    id: c.id.unwrap_or_default(),
                    app: key.app.to_string(),
                    version: key.version,
                    process_type: key.process_type.to_string(),
                    index: key.index,
                    running: c.state.map(|s| s.to_string()) == Some("running".to_owned()),
                    host_port: c.ports.unwrap_or_default().iter().find_map(|p| p.public_port),
                })
            })
            .collect())
    }
}

impl Cluster {
    /// A node's own engine, through its socket on the node's `run` volume.
    async fn engine(&self, node: &str) -> Result<Docker, ClusterError> {
        let volume = self.docker.inspect_volume(&format!("{}_{node}-run", self.project)).await?;
        let socket = format!("{}/docker.sock", volume.mountpoint);
        Docker::connect_with_unix(&socket, 3, bollard::API_DEFAULT_VERSION)
            .map_err(|e| ClusterError::Engine { node: node.to_owned(), reason: e.to_string() })
    }

    /// An app container's addresses on its node's networks: what another container on that node
    /// would dial to reach it directly.
    pub async fn container_ips(&self, c: &AppContainer) -> Result<Vec<IpAddr>, ClusterError> {
        let engine = self.engine(&c.node).await?;
        let info = engine.inspect_container(&c.id, None).await?;
        Ok(info
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|n| n.ip_address.and_then(|ip| ip.parse().ok()))
            .collect())
    }

    /// The full id (`sha256:…`) of an image in a node's engine, if it has it.
    pub async fn image_id(&self, node: &str, image: &str) -> Result<Option<String>, ClusterError> {
        let engine = self.engine(node).await?;
        match engine.inspect_image(image).await {
            Ok(info) => Ok(info.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// SIGKILL to one app container in its node's engine: the app crashed (OOM, a segfault).
    pub async fn crash(&self, c: &AppContainer) -> Result<(), ClusterError> {
        let engine = self.engine(&c.node).await?;
        engine.kill_container(&c.id, Some(KillContainerOptions { signal: "SIGKILL".into() })).await?;
        Ok(())
    }
}

fn rule(op: &str, chain: &str, dir: &str) -> Vec<String> {
    ["iptables", op, chain, dir, "eth+", "-m", "comment", "--comment", PARTITION_TAG, "-j", "DROP"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_rules_drop_the_cluster_interface_and_are_tagged() {
        assert_eq!(
            rule("-I", "FORWARD", "-o").join(" "),
            "iptables -I FORWARD -o eth+ -m comment --comment deis-chaos-partition -j DROP"
        );
        // Healing deletes with the same spec, so it removes only the suite's rules.
        assert_eq!(rule("-D", "INPUT", "-i")[2..], rule("-I", "INPUT", "-i")[2..]);
    }
}
