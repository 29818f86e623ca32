//! Publishes the apps that exist (`<prefix>/apps/<app>`), custom domains
//! (`<prefix>/domains/<domain>` = app) and the certificates attached to them
//! (`<prefix>/certs/<domain>`) to etcd for the routers, and apps' log drains
//! (`<prefix>/drains/<app>/<id>`) for the loggers. Postgres
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
                tracing::info!(put, deleted, "apps, domains, certificates and drains published to etcd")
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

/// Makes etcd's app, domain, certificate and drain keys equal what Postgres holds. Returns how many keys
/// were put and deleted.
pub async fn sync_once(
    ctx: &Ctx,
    client: &mut etcd_client::Client,
    keys: &Keys,
) -> Result<(usize, usize), String> {
    let db = ctx.pool.get().await.map_err(|e| e.to_string())?;
    let rows = db
        .query("SELECT d.domain, a.name AS app FROM domains d JOIN apps a ON a.id = d.app_id", &[])
        .await
        .map_err(|e| e.to_string())?;
    // Checked again at every sync: a domain added before the platform domain changed may be
    // under the new one now, and published it would take the traffic of an app's own name.
    let platform = ctx.settings.platform_domains();
    let mut domains = BTreeMap::new();
    for r in &rows {
        let domain: &str = r.try_get("domain").map_err(|e| e.to_string())?;
        let app: String = r.try_get("app").map_err(|e| e.to_string())?;
        if platform.iter().any(|p| crate::model::validate::under_platform_domain(domain, p)) {
            tracing::warn!(%domain, %app, "custom domain under the platform domain; not published");
            continue;
        }
        domains.insert(keys.domain(domain), app);
    }
    let rows = db
        .query(
            "SELECT cd.domain, c.certificate, c.key FROM cert_domains cd JOIN certs c ON c.id = cd.cert_id",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut certs = BTreeMap::new();
    for r in &rows {
        let text = |column: &str| r.try_get::<_, String>(column).map_err(|e| e.to_string());
        let domain = text("domain")?;
        if platform.iter().any(|p| crate::model::validate::under_platform_domain(&domain, p)) {
            continue;
        }
        let record =
            bus_schema::discovery::CertRecord { certificate: text("certificate")?, key: text("key")? };
        certs.insert(keys.cert(&domain), serde_json::to_string(&record).map_err(|e| e.to_string())?);
    }
    let rows = db
        .query("SELECT a.name AS app, d.id, d.url FROM drains d JOIN apps a ON a.id = d.app_id", &[])
        .await
        .map_err(|e| e.to_string())?;
    let mut drains = BTreeMap::new();
    for r in &rows {
        let Ok(app) = bus_schema::AppName::parse(r.try_get::<_, &str>("app").map_err(|e| e.to_string())?)
        else {
            continue;
        };
        let id: uuid::Uuid = r.try_get("id").map_err(|e| e.to_string())?;
        let spec = bus_schema::discovery::DrainSpec { url: r.try_get("url").map_err(|e| e.to_string())? };
        drains.insert(
            keys.drain(&app, &id.to_string()),
            serde_json::to_string(&spec).map_err(|e| e.to_string())?,
        );
    }
    let rows = db.query("SELECT name FROM apps", &[]).await.map_err(|e| e.to_string())?;
    let apps: BTreeMap<String, String> = rows
        .iter()
        .filter_map(|r| r.try_get::<_, &str>("name").ok().and_then(|n| bus_schema::AppName::parse(n).ok()))
        .map(|app| (keys.app(&app), String::new()))
        .collect();
    let (p0, d0) = reconcile(client, &keys.apps(), &apps).await?;
    let (p1, d1) = reconcile(client, &keys.domains(), &domains).await?;
    let (p2, d2) = reconcile(client, &keys.certs(), &certs).await?;
    let (p3, d3) = reconcile(client, &keys.drains(), &drains).await?;
    Ok((p0 + p1 + p2 + p3, d0 + d1 + d2 + d3))
}

/// Makes the keys under `prefix` equal `want`.
async fn reconcile(
    client: &mut etcd_client::Client,
    prefix: &str,
    want: &BTreeMap<String, String>,
) -> Result<(usize, usize), String> {
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
    for (key, value) in want {
        if have.get(key).map(Vec::as_slice) != Some(value.as_bytes()) {
            client.put(key.as_str(), value.as_str(), None).await.map_err(|e| e.to_string())?;
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
