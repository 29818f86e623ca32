//! What every component binary's `main` does around its own part: [`start`] reads the config and
//! installs tracing, [`bind`] opens the listeners the config names, and [`serve`] runs the
//! component until SIGINT or SIGTERM and then gives its tasks a moment to finish. A `main` calls
//! them in that order, so a bad config or a busy port ends the process before any signal handler
//! or task exists.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::net::TcpListener;

use crate::config::{ConfigError, LogConfig, load_config};
use crate::shutdown::Shutdown;

/// How long [`serve`] waits, once the component has returned, for the tasks it spawned.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a component could not start. The messages name the step; the cause follows as the
/// error's source, so `main`'s report reads "loading configuration … Caused by: …".
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading configuration")]
    Config(#[source] ConfigError),
    #[error("binding {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Loads `component`'s config (see [`load_config`]) and installs tracing as the config's log
/// section says; `log` picks that section out.
pub fn start<C>(
    component: &str,
    file: Option<&Path>,
    log: impl FnOnce(&C) -> &LogConfig,
) -> Result<C, StartError>
where
    C: Serialize + DeserializeOwned + Default,
{
    let config = load_config(component, file).map_err(StartError::Config)?;
    crate::telemetry::init_tracing(log(&config));
    Ok(config)
}

/// Binds a TCP listener to `addr` (`host:port`).
pub async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr: addr.to_owned(), source })
}

/// Runs a component: `run` gets a [`Shutdown`] that SIGINT and SIGTERM trigger. When it returns
/// `Ok`, the tasks spawned on that shutdown get [`SHUTDOWN_GRACE`] to finish; an error is returned
/// at once.
pub async fn serve<F, Fut, E>(run: F) -> Result<(), E>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    run(shutdown.clone()).await?;
    shutdown.wait(SHUTDOWN_GRACE).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Example {
        log: LogConfig,
    }

    #[test]
    fn a_config_that_does_not_load_is_reported_as_such() {
        let missing = Some(Path::new("/nonexistent/c.toml"));
        let err = start("startup-test", missing, |c: &Example| &c.log).unwrap_err();
        assert_eq!(err.to_string(), "loading configuration");
        let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(cause.starts_with("configuration of startup-test: "), "{cause}");
    }

    #[tokio::test]
    async fn a_port_in_use_is_named_in_the_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = bind(&addr).await.unwrap_err();
        assert_eq!(err.to_string(), format!("binding {addr}"));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn serve_returns_the_components_error_without_waiting() {
        let started = std::time::Instant::now();
        let result = serve(|shutdown| async move {
            // A task that would hold `wait` for its whole grace period.
            shutdown.spawn(std::future::pending::<()>());
            Err::<(), _>("broken")
        })
        .await;
        assert_eq!(result, Err("broken"));
        assert!(started.elapsed() < SHUTDOWN_GRACE);
    }

    #[tokio::test]
    async fn serve_waits_for_the_tasks_once_the_component_returns() {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let result = serve(|shutdown| async move {
            let s = shutdown.clone();
            shutdown.spawn(async move {
                s.cancelled().await;
                d.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            shutdown.trigger();
            Ok::<(), std::convert::Infallible>(())
        })
        .await;
        assert!(result.is_ok());
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
