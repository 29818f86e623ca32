//! Publishes custom domains to etcd (`<prefix>/domains/<domain>` = app) for the routers. Postgres
//! holds the truth; this loop makes etcd match it after every change, every 30 seconds, and
//! whenever etcd comes back empty, so etcd never holds the only copy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bus_schema::discovery::Keys;
use service_kit::Shutdown;

use crate::ctx::Ctx;

pub async fn run(ctx: Arc<Ctx>, shutdown: Shutdown) {
    let Ok(mut client) = service_kit::etcd::connect(&ctx.config.etcd, &shutdown).await else { return };
    let keys = Keys::new(&ctx.config.etcd.prefix);
    loop {
        match sync_once(&ctx, &mut client, &keys).await {
            Ok((put, deleted)) if put + deleted > 0 => {
                tracing::info!(put, deleted, "domains published to etcd")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "publishing domains to etcd failed; will retry"),
        }
        tokio::select! {
            _ = ctx.domains_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Makes etcd's domain keys equal Postgres' domains. Returns how many keys were put and deleted.
pub async fn sync_once(
    ctx: &Ctx,
    client: &mut etcd_client::Client,
    keys: &Keys,
) -> Result<(usize, usize), String> {
    let db = ctx.pool.get().await.map_err(|e| e.to_string())?;
    let rows = db
        .query("SELECT d.domain, a.name FROM domains d JOIN apps a ON a.id = d.app_id", &[])
        .await
        .map_err(|e| e.to_string())?;
    let want: BTreeMap<String, String> =
        rows.iter().map(|r| (keys.domain(r.get::<_, &str>(0)), r.get(1))).collect();
    let prefix = keys.domains();
    let have = client
        .get(prefix.as_bytes(), Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    let have: BTreeMap<String, Vec<u8>> = have
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok().map(|k| (k.to_owned(), kv.value().to_vec())))
        .collect();
    let (mut put, mut deleted) = (0, 0);
    for (key, app) in &want {
        if have.get(key).map(Vec::as_slice) != Some(app.as_bytes()) {
            client.put(key.as_str(), app.as_str(), None).await.map_err(|e| e.to_string())?;
            put += 1;
        }
    }
    for key in have.keys() {
        if !want.contains_key(key) {
            client.delete(key.as_str(), None).await.map_err(|e| e.to_string())?;
            deleted += 1;
        }
    }
    Ok((put, deleted))
}
