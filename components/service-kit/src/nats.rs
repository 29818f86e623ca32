//! Connecting to NATS: retried with backoff until it works or shutdown begins. After the first
//! connection async-nats reconnects by itself; we only log what happens, and bring a client that
//! had to connect away from its first server back to it once it answers (`keep_home`).

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
            Ok(client) => {
                if let Some(home) = home(config) {
                    shutdown.spawn(keep_home(client.clone(), home, HOME_CHECK, shutdown.clone()));
                }
                return Ok(client);
            }
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

/// How often a client away from its first server checks whether it can go back.
pub const HOME_CHECK: Duration = Duration::from_secs(5);

/// The first server's `host:port`, when there are others to fall back on.
fn home(config: &NatsConfig) -> Option<String> {
    let urls = urls(config);
    if urls.len() < 2 {
        return None;
    }
    let first = urls.first()?;
    let rest = first.split_once("://").map_or(*first, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if hostport.is_empty() {
        return None;
    }
    Some(if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_owned()
    } else {
        format!("{hostport}:4222")
    })
}

/// A cluster's parts list their own node's NATS member first, so a member's death breaks only its
/// own node's connections. A client that had to connect elsewhere (its own member was not up yet
/// when the node booted, or restarted since) would stay there for good, and the death of that
/// other node would then cut it too, losing what was in flight (core NATS). So every `every` it
/// compares the server it is on with the one its first URL answers as (a NATS server names
/// itself in the INFO line it sends before any authentication), and reconnects when they differ
/// and the first answers: one reconnect at a time of its choosing, which again follows the
/// URLs' order.
pub async fn keep_home(client: async_nats::Client, home: String, every: Duration, shutdown: Shutdown) {
    // The first server's id as last read: while the client is on it, nothing is asked (a server
    // that restarts has a new id, and the client reconnected meanwhile, so it is read again).
    let mut known: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        if client.connection_state() != async_nats::connection::State::Connected {
            continue;
        }
        let on = client.server_info();
        if known.as_deref() == Some(on.server_id.as_str()) {
            continue;
        }
        let Some(home_id) = server_id(&home).await else { continue };
        known = Some(home_id.clone());
        if on.server_id == home_id {
            continue;
        }
        tracing::info!(
            %home,
            on = %on.server_name,
            "NATS: the first server answers again; moving back to it from the one it had to use"
        );
        if let Err(error) = client.force_reconnect().await {
            tracing::warn!(%home, %error, "NATS: could not move back to the first server");
        }
    }
}

/// The id a NATS server gives in its INFO line, or `None` when it does not answer within a second.
pub async fn server_id(hostport: &str) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let read = async {
        let stream = tokio::net::TcpStream::connect(hostport).await.ok()?;
        let mut line = String::new();
        // The INFO line is a few hundred bytes; a server that sends more is not one to trust.
        let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(stream, 16 * 1024));
        reader.read_line(&mut line).await.ok()?;
        let info: serde_json::Value = serde_json::from_str(line.trim().strip_prefix("INFO ")?).ok()?;
        info.get("server_id")?.as_str().map(str::to_owned)
    };
    tokio::time::timeout(Duration::from_secs(1), read).await.ok().flatten()
}

/// Like [`connect_bus`], but returns at once with a client that connects in the background and
/// keeps trying: for a component that must serve (its SSH port, its health) before the bus comes.
/// Requests and publishes fail, and subscriptions wait, until it connects.
pub async fn connect_bus_in_background(
    config: &NatsConfig,
    sender: Sender,
    shutdown: &Shutdown,
) -> Result<Bus, NatsError> {
    let (ns, name) = identity(config, &sender)?;
    let client = options(config, &name)
        .retry_on_initial_connect()
        .connect(urls(config).as_slice())
        .await
        .map_err(|e| NatsError::Connect(config.url.clone(), e.to_string()))?;
    if let Some(home) = home(config) {
        shutdown.spawn(keep_home(client.clone(), home, HOME_CHECK, shutdown.clone()));
    }
    Ok(Bus::new(client, ns, sender))
}

/// Connects and wraps the client in a [`Bus`] for the configured namespace.
pub async fn connect_bus(config: &NatsConfig, sender: Sender, shutdown: &Shutdown) -> Result<Bus, NatsError> {
    let (ns, name) = identity(config, &sender)?;
    let client = connect(config, &name, shutdown).await?;
    Ok(Bus::new(client, ns, sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_of(url: &str) -> Option<String> {
        home(&NatsConfig { url: url.to_owned(), ..Default::default() })
    }

    #[test]
    fn the_first_of_several_servers_is_home() {
        assert_eq!(home_of("nats://127.0.0.1:4222,nats://node1:4222"), Some("127.0.0.1:4222".to_owned()));
        assert_eq!(home_of("nats://u:p@localhost,nats://node1:4222"), Some("localhost:4222".to_owned()));
        assert_eq!(home_of(" 10.0.0.1:5222 , nats://b"), Some("10.0.0.1:5222".to_owned()));
        assert_eq!(home_of("nats://127.0.0.1:4222"), None, "one server: nowhere else to be");
    }
}
