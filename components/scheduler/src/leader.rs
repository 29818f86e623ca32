//! Leader election through etcd: the leader holds `<prefix>/scheduler/leader` under its lease.
//! Standbys wait for the key to go; a leader whose lease cannot be kept alive steps down at once,
//! before its lease can expire and another instance takes over.

use std::time::Duration;

use bus_schema::discovery::Keys;
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use service_kit::Shutdown;
use tokio_util::sync::CancellationToken;

/// Held while leading: `lost` is cancelled when leadership ends.
#[derive(Debug)]
pub struct Leadership {
    pub lost: CancellationToken,
    /// The lease's keepalive; dropping the leadership (even by a crash of the leading task)
    /// stops it, so the lease runs out as it would when the process dies.
    keepalive: tokio::task::JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// Waits until this instance leads, or shutdown.
pub async fn campaign(
    client: &Client,
    keys: &Keys,
    instance: &str,
    ttl: Duration,
    shutdown: &Shutdown,
) -> Option<Leadership> {
    let key = keys.scheduler_leader();
    let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(5);
    let mut client = client.clone();
    loop {
        if shutdown.is_shutting_down() {
            return None;
        }
        let attempt = async {
            let lease = client.lease_grant(ttl_secs, None).await?.id();
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_bytes(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_bytes(),
                    instance.as_bytes(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let won = client.txn(txn).await?.succeeded();
            if !won {
                let _ = client.lease_revoke(lease).await;
            }
            Ok::<_, etcd_client::Error>((won, lease))
        };
        match attempt.await {
            Ok((true, lease)) => {
                let lost = shutdown.token().child_token();
                let keepalive = tokio::spawn(keep_alive(client.clone(), lease, ttl, lost.clone()));
                tracing::info!(%instance, lease, "became the scheduler leader");
                return Some(Leadership { lost, keepalive });
            }
            Ok((false, _)) => wait_for_vacancy(&mut client, &key, shutdown).await,
            Err(error) => {
                tracing::warn!(%error, "campaign failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// Returns when the leader key is deleted (or after a while, to re-check).
async fn wait_for_vacancy(client: &mut Client, key: &str, shutdown: &Shutdown) {
    let watch = client.watch(key, Some(WatchOptions::new())).await;
    let Ok(mut stream) = watch else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return;
    };
    let wait = async {
        while let Ok(Some(resp)) = stream.message().await {
            if resp.events().iter().any(|e| e.event_type() == EventType::Delete) {
                return;
            }
        }
    };
    tokio::select! {
        _ = wait => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        _ = shutdown.cancelled() => {}
    }
}

async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, lost: CancellationToken) {
    let period = (ttl / 3).max(Duration::from_millis(200));
    let Ok((mut keeper, mut responses)) = client.lease_keep_alive(lease).await else {
        lost.cancel();
        return;
    };
    loop {
        tokio::select! {
            _ = lost.cancelled() => {
                // Stepping down (shutdown): hand over at once instead of after the TTL.
                let _ = tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
                return;
            }
            _ = tokio::time::sleep(period) => {}
        }
        let ok = keeper.keep_alive().await.is_ok()
            && matches!(tokio::time::timeout(period, responses.message()).await, Ok(Ok(Some(r))) if r.ttl() > 0);
        if !ok {
            tracing::warn!(lease, "leader lease lost; stepping down");
            lost.cancel();
            return;
        }
    }
}
