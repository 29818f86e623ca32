//! The Docker engine as the agent uses it: containers named and labelled by their identity, so
//! starting one is idempotent and a restarted agent can find its containers again.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bus_schema::NodeId;
use bus_schema::labels;
use bus_schema::messages::{ContainerKey, HealthCheck, Limits, RunOneOff, StartContainer};
use futures::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("image {image} is not on this node and could not be pulled: {reason}")]
    Pull { image: String, reason: String },
    #[error("the engine refused {what}: {reason}")]
    Docker { what: String, reason: String },
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
    pub app_port: u16,
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
            let host_port = c.ports.as_ref().and_then(|ports| {
                ports.iter().find(|p| p.private_port == self.app_port).and_then(|p| p.public_port)
            });
            let ip = network_ip(c.network_settings.as_ref().and_then(|n| n.networks.as_ref()));
            out.push(Found {
                key,
                id: c.id.unwrap_or_default(),
                name,
                running,
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
                let host_port = info
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.ports.as_ref())
                    .and_then(|p| p.get(&format!("{}/tcp", self.app_port)).cloned().flatten())
                    .and_then(|b| b.first().and_then(|b| b.host_port.as_ref()).and_then(|p| p.parse().ok()));
                let ip = network_ip(info.network_settings.as_ref().and_then(|n| n.networks.as_ref()));
                Ok(Some(Found {
                    key: key.clone(),
                    id: info.id.unwrap_or_default(),
                    name,
                    running,
                    host_port,
                    ip,
                    created: 0,
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(docker_err(format!("inspecting {name}"))(e)),
        }
    }

    pub async fn ensure_image(&self, image: &str) -> Result<(), EngineError> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
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
        Ok(())
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
        self.ensure_image(&cmd.image).await?;
        let name = self.name(&cmd.key);
        let mut env: Vec<String> = cmd.env.iter().chain(extra_env).map(env_var).collect();
        env.push(format!("PORT={}", self.app_port));
        let port = format!("{}/tcp", self.app_port);
        let body = ContainerCreateBody {
            image: Some(cmd.image.clone()),
            cmd: (!cmd.command.is_empty()).then(|| shell(&cmd.command)),
            env: Some(env),
            labels: Some(labels::for_container(&self.node, &cmd.key, health)),
            exposed_ports: Some(vec![port.clone()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    port,
                    Some(vec![PortBinding {
                        host_ip: Some("0.0.0.0".to_owned()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                cap_drop: Some(vec![
                    "NET_RAW".to_owned(),
                    "SYS_CHROOT".to_owned(),
                    "MKNOD".to_owned(),
                    "AUDIT_WRITE".to_owned(),
                ]),
                // The scheduler restarts crashed containers, with backoff; the engine must not.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..confined(&cmd.limits)
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
        self.ensure_image(&cmd.image).await?;
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
            host_config: Some(confined(&cmd.limits)),
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

/// What every app container gets: its limits, no privileges, an init to reap zombies.
fn confined(limits: &Limits) -> HostConfig {
    HostConfig {
        memory: limits.memory_mb.map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
        cpu_shares: limits.cpu_shares.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        privileged: Some(false),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        init: Some(true),
        ..Default::default()
    }
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
    fn images_split_at_the_tag_not_the_registry_port() {
        assert_eq!(split_image("127.0.0.1:5000/app:git-1234"), ("127.0.0.1:5000/app", "git-1234"));
        assert_eq!(split_image("127.0.0.1:5000/app"), ("127.0.0.1:5000/app", "latest"));
        assert_eq!(split_image("deis/stack"), ("deis/stack", "latest"));
        assert_eq!(split_image("stack:v1"), ("stack", "v1"));
    }
}
