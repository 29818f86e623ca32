//! Reaching etcd from off the nodes (deisctl on an operator's machine, the front door's
//! announcer). The client's own balancing over several endpoints fails requests while one
//! endpoint's name does not resolve, which is exactly the case when a node is stopped; so one
//! member that answers is chosen here, trying each in turn.

use std::time::Duration;

use etcd_client::Client;
use service_kit::{Backoff, EtcdConfig, Shutdown};

/// The first endpoint that answers, and why the others did not.
pub async fn connect_once(config: &EtcdConfig) -> Result<Client, Vec<String>> {
    let mut failures = Vec::new();
    for endpoint in &config.endpoints {
        let attempt = async {
            // 2 s to connect leaves time for the status request within the 3 s an endpoint gets.
            let options = service_kit::etcd::connect_options(config, Duration::from_secs(2));
            let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
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
