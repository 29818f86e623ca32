//! Reaching etcd from off the nodes (deisctl on an operator's machine, the front door's
//! announcer). The client's own balancing over several endpoints fails requests while one
//! endpoint's name does not resolve, which is exactly the case when a node is stopped; so one
//! member that answers is chosen here, trying each in turn.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use service_kit::{Backoff, EtcdConfig, Shutdown};

fn options(config: &EtcdConfig) -> ConnectOptions {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        // etcd's simple tokens live in the memory of the member that issued them: after that
        // member restarts every request is refused with "invalid auth token" until the client
        // authenticates again (found by chaos's kill-etcd-leader: the schedulers never led again).
        options = options.with_user(user.clone(), password.clone()).with_auto_token_refresh(true);
    }
    options
}

/// The first endpoint that answers, and why the others did not.
pub async fn connect_once(config: &EtcdConfig) -> Result<Client, Vec<String>> {
    let mut failures = Vec::new();
    for endpoint in &config.endpoints {
        let attempt = async {
            let mut client = Client::connect([endpoint.as_str()], Some(options(config))).await?;
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => failures.push(format!("{endpoint}: {e}")),
            Err(_) => failures.push(format!("{endpoint}: no answer within 3 s")),
        }
    }
    Err(failures)
}

/// Tries every endpoint until one answers or shutdown begins.
pub async fn connect(config: &EtcdConfig, shutdown: &Shutdown) -> Option<Client> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match connect_once(config).await {
            Ok(client) => return Some(client),
            Err(failures) => tracing::warn!(?failures, "no etcd member answers yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}
