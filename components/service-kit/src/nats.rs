//! Connecting to NATS: retried with backoff until it works or shutdown begins. After the first
//! connection async-nats reconnects by itself; we only log what happens.

use std::time::Duration;

use bus_schema::{Bus, Namespace, Sender};

use crate::backoff::Backoff;
use crate::config::NatsConfig;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("bad NATS namespace '{0}': {1}")]
    Namespace(String, bus_schema::NameError),
    #[error("shutdown began before NATS at {0} could be reached")]
    ShuttingDown(String),
    #[error("NATS at {0}: {1}")]
    Connect(String, String),
}

/// Connects, retrying with backoff. `name` is shown in the server's connection list.
pub async fn connect(
    config: &NatsConfig,
    name: &str,
    shutdown: &Shutdown,
) -> Result<async_nats::Client, NatsError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match options(config, name).connect(urls(config).as_slice()).await {
            Ok(client) => return Ok(client),
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(url = %config.url, attempt, %error, ?delay, "NATS not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err(NatsError::ShuttingDown(config.url.clone())),
                }
            }
        }
    }
}

fn options(config: &NatsConfig, name: &str) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        // The URLs in the order given: a node's parts list their own member first.
        .retain_servers_order()
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
                other => tracing::debug!(%other, "NATS event"),
            }
        });
    match (&config.user, &config.password) {
        // Replies come to an inbox of this user's own: the cluster's bus permissions let each
        // user read only `_INBOX_<user>.>`, so none can read the answers sent to another
        // (compose/cluster/files/nats-entry).
        (Some(user), Some(password)) => options
            .user_and_password(user.clone(), password.clone())
            .custom_inbox_prefix(format!("_INBOX_{user}")),
        _ => options,
    }
}

/// The bus namespace, and the connection's name in the server's list.
fn identity(config: &NatsConfig, sender: &Sender) -> Result<(Namespace, String), NatsError> {
    let ns =
        Namespace::new(&config.namespace).map_err(|e| NatsError::Namespace(config.namespace.clone(), e))?;
    Ok((ns, format!("{}-{}", sender.component, sender.instance)))
}

fn urls(config: &NatsConfig) -> Vec<&str> {
    config.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// Like [`connect_bus`], but returns at once with a client that connects in the background and
/// keeps trying: for a component that must serve (its SSH port, its health) before the bus comes.
/// Requests and publishes fail, and subscriptions wait, until it connects.
pub async fn connect_bus_in_background(config: &NatsConfig, sender: Sender) -> Result<Bus, NatsError> {
    let (ns, name) = identity(config, &sender)?;
    let client = options(config, &name)
        .retry_on_initial_connect()
        .connect(urls(config).as_slice())
        .await
        .map_err(|e| NatsError::Connect(config.url.clone(), e.to_string()))?;
    Ok(Bus::new(client, ns, sender))
}

/// Connects and wraps the client in a [`Bus`] for the configured namespace.
pub async fn connect_bus(config: &NatsConfig, sender: Sender, shutdown: &Shutdown) -> Result<Bus, NatsError> {
    let (ns, name) = identity(config, &sender)?;
    let client = connect(config, &name, shutdown).await?;
    Ok(Bus::new(client, ns, sender))
}
