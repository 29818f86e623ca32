//! Connecting to a Docker engine. The engine may be older than bollard's default API version
//! (Debian's 20.10 speaks 1.41), so the version is negotiated once at connect.

use bollard::Docker;

#[derive(Debug, thiserror::Error)]
#[error("Docker engine at {host}: {reason}")]
pub struct DockerError {
    host: String,
    reason: String,
}

/// Connects to `DOCKER_HOST`, or the local socket, and agrees on an API version.
pub async fn connect() -> Result<Docker, DockerError> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
    let err = |e: bollard::errors::Error| DockerError { host: host.clone(), reason: e.to_string() };
    let docker = Docker::connect_with_defaults().map_err(err)?;
    let docker = docker.negotiate_version().await.map_err(err)?;
    docker.ping().await.map_err(err)?;
    Ok(docker)
}
