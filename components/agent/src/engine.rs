//! The Docker engine as the agent uses it: containers named and labelled by their identity, so
//! starting one is idempotent and a restarted agent can find its containers again.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bus_schema::NodeId;
use bus_schema::labels;
use bus_schema::messages::{ContainerKey, HealthCheck, Limits, RunOneOff, StartContainer};
use futures::StreamExt;

use crate::config::Confinement;
use crate::port;

/// The bridge driver's options that make the app network what it must be.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// Linux's limit on an interface name (IFNAMSIZ less the terminating NUL).
const MAX_BRIDGE_NAME: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("image {image} is not on this node and could not be pulled: {reason}")]
    Pull { image: String, reason: String },
    #[error("the engine refused {what}: {reason}")]
    Docker { what: String, reason: String },
    /// The app network exists but would not isolate apps (or cannot be made): starting
    /// containers on it would let tenants reach each other, so none are started.
    #[error("app network {network}: {reason}")]
    Network { network: String, reason: String },
}

fn docker_err(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let what = what.into();
    move |e| EngineError::Docker { what, reason: e.to_string() }
}

/// A container of ours as found on the engine.
#[derive(Debug, Clone)]
pub struct Found {
    pub key: ContainerKey,
    pub id: String,
    pub name: String,
    pub running: bool,
    /// The port the app listens on inside the container (its `$PORT`), from its label.
    pub port: u16,
    /// The host port the engine published `port` at.
    pub host_port: Option<u16>,
    /// The container's own address on the engine's network. Health checks go here, not to the
    /// published port: the engine's port proxy accepts connections even when the app does not
    /// listen yet.
    pub ip: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct Engine {
    pub docker: Docker,
    pub node: NodeId,
    pub prefix: String,
    /// The port of an app whose config and image name none, and of containers made before
    /// the port was recorded on them (see [`port`]).
    pub app_port: u16,
    pub confinement: Confinement,
}

impl Engine {
    /// The container's name: unique per engine and per node id, readable in `docker ps`.
    pub fn name(&self, key: &ContainerKey) -> String {
        format!(
            "{}{}.{}.v{}.{}.{}",
            self.prefix, self.node, key.app, key.version, key.process_type, key.index
        )
    }

    /// Every container this node's agent created, running or not.
    pub async fn list(&self) -> Result<Vec<Found>, EngineError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{}=true", labels::MANAGED), format!("{}={}", labels::NODE, self.node)],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(docker_err("listing containers"))?;
        let mut out = Vec::new();
        for c in list {
            let Some(key) = c.labels.as_ref().and_then(labels::container_key) else { continue };
            let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_owned());
            // Only ours: the prefix keeps tests and other platforms on the same engine apart.
            let Some(name) = name.filter(|n| n.starts_with(&self.prefix)) else { continue };
            let running = matches!(c.state, Some(bollard::models::ContainerSummaryStateEnum::RUNNING));
            let port = port::of_labels(c.labels.as_ref(), self.app_port);
            let host_port = c
                .ports
                .as_ref()
                .and_then(|ports| ports.iter().find(|p| p.private_port == port).and_then(|p| p.public_port));
            let ip = network_ip(c.network_settings.as_ref().and_then(|n| n.networks.as_ref()));
            out.push(Found {
                key,
                id: c.id.unwrap_or_default(),
                name,
                running,
                port,
                host_port,
                ip,
                created: c.created.unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// The container of a key, if it exists.
    pub async fn find(&self, key: &ContainerKey) -> Result<Option<Found>, EngineError> {
        let name = self.name(key);
        match self.docker.inspect_container(&name, None::<InspectContainerOptions>).await {
            Ok(info) => {
                let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                let port =
                    port::of_labels(info.config.as_ref().and_then(|c| c.labels.as_ref()), self.app_port);
                let host_port = info
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.ports.as_ref())
                    .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
                    .and_then(|b| b.first().and_then(|b| b.host_port.as_ref()).and_then(|p| p.parse().ok()));
                let ip = network_ip(info.network_settings.as_ref().and_then(|n| n.networks.as_ref()));
                Ok(Some(Found {
                    key: key.clone(),
                    id: info.id.unwrap_or_default(),
                    name,
                    running,
                    port,
                    host_port,
                    ip,
                    created: 0,
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(docker_err(format!("inspecting {name}"))(e)),
        }
    }

    /// Makes sure the app network exists and isolates its containers from each other: created
    /// when missing (a concurrent creator's network is as good), refused when it exists with
    /// inter-container communication on or another bridge than the node's firewall names.
    pub async fn ensure_network(&self) -> Result<(), EngineError> {
        let network = &self.confinement.network;
        let bridge = &self.confinement.bridge;
        let refuse = |reason: String| EngineError::Network { network: network.clone(), reason };
        if bridge.is_empty() || bridge.len() > MAX_BRIDGE_NAME {
            return Err(refuse(format!(
                "bridge name {bridge:?} must have 1 to {MAX_BRIDGE_NAME} characters"
            )));
        }
        let existing = match self.docker.inspect_network(network, None).await {
            Ok(found) => found,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                let create = NetworkCreateRequest {
                    name: network.clone(),
                    driver: Some("bridge".to_owned()),
                    options: Some(HashMap::from([
                        (ICC_OPTION.to_owned(), "false".to_owned()),
                        (BRIDGE_NAME_OPTION.to_owned(), bridge.clone()),
                    ])),
                    labels: Some(HashMap::from([(labels::MANAGED.to_owned(), "true".to_owned())])),
                    ..Default::default()
                };
                match self.docker.create_network(create).await {
                    Ok(_) => tracing::info!(%network, %bridge, "created the app network"),
                    // Another agent (or test) on this engine made it meanwhile: the bridge name
                    // is unique per engine, so its creation is refused; it is checked below.
                    Err(error) => tracing::info!(%network, %error, "app network not created here"),
                }
                self.docker.inspect_network(network, None).await.map_err(|e| refuse(e.to_string()))?
            }
            Err(e) => return Err(refuse(e.to_string())),
        };
        isolating(&existing, bridge).map_err(refuse)
    }

    /// Pulls the image when it is missing; returns what its configuration declares. An image
    /// that cannot be inspected even after the pull declares nothing (with a warning): its
    /// container runs as the default user on the default port, or fails to be created.
    pub async fn ensure_image(&self, image: &str) -> Result<ImageFacts, EngineError> {
        if let Ok(found) = self.docker.inspect_image(image).await {
            return Ok(ImageFacts::of(found));
        }
        let (repo, tag) = split_image(image);
        tracing::info!(%image, "pulling image");
        let mut pull = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(step) = pull.next().await {
            step.map_err(|e| EngineError::Pull { image: image.to_owned(), reason: e.to_string() })?;
        }
        match self.docker.inspect_image(image).await {
            Ok(found) => Ok(ImageFacts::of(found)),
            Err(error) => {
                tracing::warn!(%image, %error, "inspecting the pulled image failed; taking the defaults");
                Ok(ImageFacts::default())
            }
        }
    }

    /// Creates and starts the container for a start command. Idempotent: a running container of
    /// the same key is returned as it is; a stopped one is replaced.
    pub async fn start(
        &self,
        cmd: &StartContainer,
        extra_env: &BTreeMap<String, String>,
        health: Option<&HealthCheck>,
    ) -> Result<Found, EngineError> {
        if let Some(found) = self.find(&cmd.key).await? {
            if found.running {
                return Ok(found);
            }
            self.remove(&found.name).await?;
        }
        // Again at every start: the network may have been removed since the agent began.
        self.ensure_network().await?;
        let image = self.ensure_image(&cmd.image).await?;
        let (app_port, source) = port::choose(&cmd.env, &image.exposed_ports, self.app_port);
        tracing::info!(port = app_port, ?source, "the app's port");
        let name = self.name(&cmd.key);
        // The config's own PORT is replaced by the chosen one (the same, unless it was invalid).
        let mut env: Vec<String> =
            cmd.env.iter().chain(extra_env).filter(|(k, _)| k.as_str() != port::ENV).map(env_var).collect();
        env.push(format!("{}={app_port}", port::ENV));
        let mut container_labels = labels::for_container(&self.node, &cmd.key, health);
        container_labels.insert(port::LABEL.to_owned(), app_port.to_string());
        let published = format!("{app_port}/tcp");
        let body = ContainerCreateBody {
            image: Some(cmd.image.clone()),
            cmd: (!cmd.command.is_empty()).then(|| shell(&cmd.command)),
            env: Some(env),
            labels: Some(container_labels),
            exposed_ports: Some(vec![published.clone()]),
            user: self.confinement.user_for(&image.user),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    published,
                    Some(vec![PortBinding {
                        host_ip: Some("0.0.0.0".to_owned()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                // The scheduler restarts crashed containers, with backoff; the engine must not.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..self.confinement.host_config(&cmd.limits)
            }),
            ..Default::default()
        };
        self.create_and_start(&name, body).await?;
        self.find(&cmd.key).await?.ok_or_else(|| EngineError::Docker {
            what: format!("starting {name}"),
            reason: "it vanished".into(),
        })
    }

    /// Creates and starts a one-off container; returns its name. It is not restarted and not
    /// routed; the caller follows it to its end and removes it.
    pub async fn start_one_off(&self, cmd: &RunOneOff) -> Result<String, EngineError> {
        self.ensure_network().await?;
        let image = self.ensure_image(&cmd.image).await?;
        let short = cmd.run_id.simple().to_string();
        let name = format!("{}{}.{}.run.{}", self.prefix, self.node, cmd.app, &short[..12]);
        let mut env: Vec<String> = cmd.env.iter().map(env_var).collect();
        env.extend([
            format!("DEIS_APP={}", cmd.app),
            format!("DEIS_RELEASE=v{}", cmd.version),
            "DYNO=run.1".to_owned(),
        ]);
        let body = ContainerCreateBody {
            image: Some(cmd.image.clone()),
            cmd: Some(shell(&cmd.command)),
            env: Some(env),
            labels: Some(labels::for_one_off(&self.node, &cmd.app, cmd.run_id)),
            user: self.confinement.user_for(&image.user),
            host_config: Some(self.confinement.host_config(&cmd.limits)),
            ..Default::default()
        };
        self.create_and_start(&name, body).await?;
        Ok(name)
    }

    async fn create_and_start(&self, name: &str, body: ContainerCreateBody) -> Result<(), EngineError> {
        self.docker
            .create_container(
                Some(CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() }),
                body,
            )
            .await
            .map_err(docker_err(format!("creating {name}")))?;
        self.docker.start_container(name, None).await.map_err(docker_err(format!("starting {name}")))
    }

    /// The HTTP health check a container was started with, from its label.
    pub async fn health_of(&self, name: &str) -> Option<HealthCheck> {
        let info = self.docker.inspect_container(name, None::<InspectContainerOptions>).await.ok()?;
        labels::health_check(&info.config?.labels?)
    }

    /// Stops (SIGTERM, then SIGKILL after the grace period) and removes a container.
    pub async fn stop(&self, name: &str, grace_secs: u32) -> Result<(), EngineError> {
        self.halt(name, grace_secs).await?;
        self.remove(name).await
    }

    /// Stops a container (SIGTERM, then SIGKILL after the grace period) and keeps it, so its
    /// output can still be read to the end; gone or already stopped is fine.
    pub async fn halt(&self, name: &str, grace_secs: u32) -> Result<(), EngineError> {
        let t = i32::try_from(grace_secs).unwrap_or(30);
        match self.docker.stop_container(name, Some(StopContainerOptions { t: Some(t), signal: None })).await
        {
            // 304: already stopped.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404 | 304, .. }) => Ok(()),
            Err(e) => Err(docker_err(format!("stopping {name}"))(e)),
        }
    }

    pub async fn remove(&self, name: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_container(name, Some(RemoveContainerOptions { force: true, ..Default::default() }))
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404 | 409, .. }) => Ok(()),
            Err(e) => Err(docker_err(format!("removing {name}"))(e)),
        }
    }
}

/// What an image's configuration declares that the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// The user it runs as; empty when none.
    pub user: String,
    /// Its exposed ports, as `8000/tcp`, in no particular order (see [`port::first_exposed_tcp`]).
    pub exposed_ports: Vec<String>,
}

impl ImageFacts {
    fn of(image: bollard::models::ImageInspect) -> Self {
        let config = image.config.unwrap_or_default();
        Self {
            user: config.user.unwrap_or_default(),
            exposed_ports: config.exposed_ports.unwrap_or_default(),
        }
    }
}

impl Confinement {
    /// What every app container gets: the app network, its limits (a default memory limit when
    /// the app sets none, swap included, and a pids limit), only the listed capabilities, no new
    /// privileges, and an init to reap zombies.
    pub fn host_config(&self, limits: &Limits) -> HostConfig {
        let memory_mb = limits.memory_mb.unwrap_or(self.default_memory_mb);
        let memory = i64::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        HostConfig {
            network_mode: Some(self.network.clone()),
            memory: Some(memory),
            // Equal to the memory limit: no swap on top of it (the engine's default doubles it).
            memory_swap: Some(memory),
            pids_limit: Some(self.pids_limit),
            cpu_shares: limits.cpu_shares.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(self.capabilities.clone()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            init: Some(true),
            ..Default::default()
        }
    }

    /// The user a container of an image declaring `image_user` runs as: the image's own unless
    /// it is root (declared or by default), which becomes the unprivileged default user.
    pub fn user_for(&self, image_user: &str) -> Option<String> {
        let name = image_user.split(':').next().unwrap_or_default();
        let root = matches!(name, "" | "root" | "0");
        (root && !self.default_user.is_empty()).then(|| self.default_user.clone())
    }
}

/// Whether an existing network keeps apps apart: a bridge, inter-container communication off,
/// on the bridge the node's firewall names.
fn isolating(network: &bollard::models::NetworkInspect, bridge: &str) -> Result<(), String> {
    let options = network.options.clone().unwrap_or_default();
    if network.driver.as_deref() != Some("bridge") {
        return Err(format!("it uses the {:?} driver, not bridge; remove it", network.driver));
    }
    if options.get(ICC_OPTION).map(String::as_str) != Some("false") {
        return Err(format!("it lets containers reach each other ({ICC_OPTION} is not false); remove it"));
    }
    if options.get(BRIDGE_NAME_OPTION).map(String::as_str) != Some(bridge) {
        return Err(format!(
            "its bridge is {:?}, not {bridge:?} (the one the node's firewall names); remove it",
            options.get(BRIDGE_NAME_OPTION)
        ));
    }
    Ok(())
}

/// A Procfile (or `deis run`) command is a shell line, run by the app's own shell inside its
/// container.
fn shell(command: &str) -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned(), command.to_owned()]
}

fn env_var((name, value): (&String, &String)) -> String {
    format!("{name}={value}")
}

/// The container's own address on the first network that gives it one.
fn network_ip(networks: Option<&HashMap<String, EndpointSettings>>) -> Option<String> {
    networks?.values().find_map(|e| e.ip_address.clone().filter(|ip| !ip.is_empty()))
}

/// Splits `registry:5000/name:tag` into repository and tag (`latest` when absent).
pub fn split_image(image: &str) -> (&str, &str) {
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_run_as_their_own_user_unless_it_is_root() {
        let c = Confinement::default();
        for root in ["", "root", "0", "root:root", "0:0", "root:staff"] {
            assert_eq!(c.user_for(root).as_deref(), Some("1000:1000"), "{root:?}");
        }
        for own in ["app", "1000", "1001:1001", "nobody:nogroup"] {
            assert_eq!(c.user_for(own), None, "{own:?} is kept");
        }
        let root_allowed = Confinement { default_user: String::new(), ..Confinement::default() };
        assert_eq!(root_allowed.user_for(""), None);
    }

    #[test]
    fn every_container_is_confined_with_default_limits() {
        let c = Confinement::default();
        let unlimited = c.host_config(&Limits { memory_mb: None, cpu_shares: None });
        assert_eq!(unlimited.memory, Some(256 * 1024 * 1024));
        assert_eq!(unlimited.memory_swap, unlimited.memory, "no swap beyond the limit");
        assert_eq!(unlimited.pids_limit, Some(512));
        assert_eq!(unlimited.network_mode.as_deref(), Some("deis-apps"));
        assert_eq!(unlimited.cap_drop, Some(vec!["ALL".to_owned()]));
        let kept = unlimited.cap_add.unwrap_or_default();
        for absent in ["NET_RAW", "MKNOD", "SYS_CHROOT", "AUDIT_WRITE", "SETFCAP", "SETPCAP", "NET_ADMIN"] {
            assert!(!kept.iter().any(|k| k == absent), "{absent} is dropped");
        }
        assert_eq!(unlimited.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!(unlimited.privileged, Some(false));
        let limited = c.host_config(&Limits { memory_mb: Some(64), cpu_shares: Some(512) });
        assert_eq!(limited.memory, Some(64 * 1024 * 1024), "the app's own limit wins");
        assert_eq!(limited.cpu_shares, Some(512));
    }

    #[test]
    fn only_a_bridge_without_inter_container_traffic_on_the_named_bridge_isolates() {
        let network = |driver: &str, options: &[(&str, &str)]| bollard::models::NetworkInspect {
            driver: Some(driver.to_owned()),
            options: Some(options.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        };
        let good = [(ICC_OPTION, "false"), (BRIDGE_NAME_OPTION, "deis-apps")];
        assert_eq!(isolating(&network("bridge", &good), "deis-apps"), Ok(()));
        assert!(isolating(&network("bridge", &good), "other").is_err(), "another bridge");
        assert!(isolating(&network("overlay", &good), "deis-apps").is_err());
        let icc_on = [(ICC_OPTION, "true"), (BRIDGE_NAME_OPTION, "deis-apps")];
        assert!(isolating(&network("bridge", &icc_on), "deis-apps").is_err());
        assert!(isolating(&network("bridge", &[(BRIDGE_NAME_OPTION, "deis-apps")]), "deis-apps").is_err());
    }

    #[test]
    fn images_split_at_the_tag_not_the_registry_port() {
        assert_eq!(split_image("127.0.0.1:5000/app:git-1234"), ("127.0.0.1:5000/app", "git-1234"));
        assert_eq!(split_image("127.0.0.1:5000/app"), ("127.0.0.1:5000/app", "latest"));
        assert_eq!(split_image("deis/stack"), ("deis/stack", "latest"));
        assert_eq!(split_image("stack:v1"), ("stack", "v1"));
    }
}
