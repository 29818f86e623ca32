//! Typed configuration: each component has one config struct with documented defaults, loaded
//! once in `main` from an optional TOML file and then `DEIS_<COMPONENT>_*` environment variables
//! (nested fields joined with `__`, e.g. `DEIS_CONTROLLER_NATS__URL`). Tests build config values
//! directly and never set process environment.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration of {component}: {source}")]
pub struct ConfigError {
    component: String,
    #[source]
    source: Box<figment::Error>,
}

/// Loads a component's config: defaults, then the file (if given), then the environment.
pub fn load_config<T>(component: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let prefix = format!("DEIS_{}_", component.to_uppercase().replace('-', "_"));
    figment = figment.merge(Env::prefixed(&prefix).split("__"));
    figment.extract().map_err(|e| ConfigError { component: component.to_owned(), source: Box::new(e) })
}

/// How to reach NATS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, comma-separated in the environment; any one of them is enough to connect.
    pub url: String,
    /// The component's own NATS user, if the cluster requires one.
    pub user: Option<String>,
    pub password: Option<String>,
    /// The subject root (`deis` in a cluster; tests use their own).
    pub namespace: String,
    /// JetStream replicas for the platform's streams: 1 on one server, 3 in the cluster.
    pub stream_replicas: usize,
    /// A byte cap for each stream below the declared one, in MiB (JetStream reserves it up front).
    pub stream_max_mb: Option<u64>,
}

impl NatsConfig {
    pub fn stream_options(&self) -> bus_schema::streams::StreamOptions {
        bus_schema::streams::StreamOptions {
            replicas: self.stream_replicas,
            max_bytes: self
                .stream_max_mb
                .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            user: None,
            password: None,
            namespace: bus_schema::Namespace::DEFAULT_ROOT.to_owned(),
            stream_replicas: 1,
            stream_max_mb: None,
        }
    }
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// The key prefix everything of this platform lives under (tests use their own).
    pub prefix: String,
    /// Lease TTL of this component's registration, in seconds: how long after a crash it still
    /// looks alive.
    pub lease_ttl_secs: i64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            user: None,
            password: None,
            prefix: "/deis".to_owned(),
            lease_ttl_secs: 10,
        }
    }
}

impl EtcdConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs.max(1).unsigned_abs())
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people at a terminal.
    #[default]
    Human,
    /// One JSON object per line, for machines.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `controller=debug,warn` …); `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, filter: "info".to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Example {
        listen: String,
        nats: NatsConfig,
    }

    #[test]
    fn a_file_overrides_defaults_and_unknown_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:80\"\n[nats]\nurl = \"nats://n:4222\"\n").unwrap();
        let c: Example = load_config("example-test-a", Some(&path)).unwrap();
        assert_eq!(c.listen, "0.0.0.0:80");
        assert_eq!(c.nats.url, "nats://n:4222");
        assert_eq!(c.nats.namespace, "deis");

        std::fs::write(&path, "listn = \"typo\"\n").unwrap();
        let err = load_config::<Example>("example-test-a", Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(load_config::<Example>("example-test-b", Some(Path::new("/nonexistent/c.toml"))).is_err());
    }
}
