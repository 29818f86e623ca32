//! The controller: the platform's HTTP API (`/v1/`, Deis v1's paths) and the only writer of its
//! Postgres state. Changes are published to the bus through an outbox; completed builds arrive
//! from the bus and become releases.

pub mod api;
mod builds_consumer;
pub mod config;
pub mod ctx;
pub mod db;
pub mod domains_sync;
mod log_callout;
pub mod metrics;
pub mod model;
pub mod platform_settings;
mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bus_schema::{Namespace, Sender};
use prometheus_client::registry::Registry;
use service_kit::{Backoff, Health, OpsServer, Registration, Shutdown};
use tokio::net::TcpListener;

pub use config::{ControllerConfig, RegistrationMode};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("bad NATS namespace: {0}")]
    Namespace(#[from] bus_schema::NameError),
    #[error("cannot listen for operations on {0}: {1}")]
    Ops(String, std::io::Error),
}

/// Runs the controller on an already bound listener until shutdown.
pub async fn run(
    config: ControllerConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ControllerError> {
    let ns = Namespace::new(&config.nats.namespace)?;
    let pool = db::pool(&config.database_url, config.database_pool_size)?;
    migrate_with_retry(&pool, &shutdown).await?;

    let metrics = metrics::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ctx = Arc::new(ctx::Ctx::new(pool, config.clone(), ns, metrics));

    let db_ok = Arc::new(AtomicBool::new(true));
    let nats_ok = Arc::new(AtomicBool::new(!(config.relay_enabled || config.consume_builds)));
    shutdown.spawn(watch_database(ctx.clone(), db_ok.clone(), shutdown.clone()));
    if config.relay_enabled || config.consume_builds {
        shutdown.spawn(bus_tasks(ctx.clone(), nats_ok.clone(), shutdown.clone()));
    }
    if config.register_in_etcd {
        shutdown.spawn(register(config.clone(), shutdown.clone()));
        shutdown.spawn(domains_sync::run(ctx.clone(), shutdown.clone()));
        shutdown.spawn(platform_settings::follow(
            ctx.settings.clone(),
            config.etcd.clone(),
            ctx.domains_wake.clone(),
            shutdown.clone(),
        ));
    }

    let ops = {
        let (db_ok, nats_ok) = (db_ok.clone(), nats_ok.clone());
        OpsServer::new(registry, move || {
            let check = |ok: &AtomicBool, what: &str| {
                if ok.load(Ordering::Relaxed) { Ok(()) } else { Err(format!("{what} unreachable")) }
            };
            Health::from_checks([
                ("postgres".to_owned(), check(&db_ok, "postgres")),
                ("nats".to_owned(), check(&nats_ok, "nats")),
            ])
        })
    };
    // `/metrics` tells how the platform is used (responses, events, builds): it is served only
    // on the operations listener, on the cluster network. The API listener, which the routers
    // publish at `deis.<domain>`, keeps `/healthz` (the announcer probes it there).
    let api_ops = health_only(ops.routes());
    if let Some(addr) = &config.listen_ops {
        let ops_listener =
            TcpListener::bind(addr).await.map_err(|e| ControllerError::Ops(addr.clone(), e))?;
        tracing::info!(addr = ?ops_listener.local_addr().ok(), "operations (/metrics, /healthz) listening");
        shutdown.spawn(ops.serve(ops_listener, shutdown.clone()));
    }
    let openapi = Arc::new(api::openapi_document());
    let routes = api::routes(ctx.clone(), api_ops, openapi);
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, domain = %ctx.settings.domain(), "controller listening");
    let stop = shutdown.clone();
    warp::serve(routes).incoming(listener).graceful(async move { stop.cancelled().await }).run().await;
    Ok(())
}

/// The ops routes limited to `/healthz`; any other path (`/metrics`) falls through to the API,
/// which does not know it.
fn health_only(
    ops: warp::filters::BoxedFilter<(warp::reply::Response,)>,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    use warp::Filter;
    warp::path::full()
        .and_then(|path: warp::path::FullPath| async move {
            if path.as_str() == "/healthz" { Ok(()) } else { Err(warp::reject::not_found()) }
        })
        .untuple_one()
        .and(ops)
        .boxed()
}

async fn migrate_with_retry(
    pool: &deadpool_postgres::Pool,
    shutdown: &Shutdown,
) -> Result<(), ControllerError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match db::migrate(pool).await {
            Ok(()) => return Ok(()),
            // Postgres may still be starting; a failing migration itself is fatal.
            Err(e @ db::DbError::Migration { .. }) => return Err(e.into()),
            Err(error) => {
                tracing::warn!(%error, "database not ready; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.cancelled() => return Err(error.into()),
                }
            }
        }
    }
}

async fn watch_database(ctx: Arc<ctx::Ctx>, ok: Arc<AtomicBool>, shutdown: Shutdown) {
    loop {
        let alive = match ctx.pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        };
        ok.store(alive, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn bus_tasks(ctx: Arc<ctx::Ctx>, nats_ok: Arc<AtomicBool>, shutdown: Shutdown) {
    let sender =
        Sender { component: bus_schema::Component::Controller, instance: ctx.config.advertise.clone() };
    let Ok(bus) = service_kit::nats::connect_bus(&ctx.config.nats, sender, &shutdown).await else {
        return;
    };
    nats_ok.store(true, Ordering::Relaxed);
    let _ = ctx.bus.set(bus.clone());
    if ctx.config.relay_enabled {
        shutdown.spawn(model::outbox::relay(ctx.clone(), bus.clone(), shutdown.clone()));
    }
    if ctx.config.consume_builds {
        shutdown.spawn(builds_consumer::run(ctx.clone(), bus.clone(), shutdown.clone()));
    }
    shutdown.spawn(snapshot::serve(ctx.clone(), bus.clone(), shutdown.clone()));
    if let Some(issuer) = log_callout::issuer(&ctx.config.log_credentials) {
        shutdown.spawn(log_callout::serve(ctx.clone(), bus.client().clone(), issuer, shutdown.clone()));
    }
    loop {
        let state = bus.client().connection_state();
        nats_ok.store(state == async_nats::connection::State::Connected, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Keeps `<prefix>/components/controller/<advertise>` alive in etcd while this instance runs.
async fn register(config: ControllerConfig, shutdown: Shutdown) {
    let Ok(client) = service_kit::etcd::connect(&config.etcd, &shutdown).await else {
        return;
    };
    let key =
        bus_schema::discovery::Keys::new(&config.etcd.prefix).component("controller", &config.advertise);
    let value = bus_schema::discovery::ComponentRecord::new(&config.advertise, env!("CARGO_PKG_VERSION"));
    let handle =
        Registration { key, value: value.to_json(), ttl: config.etcd.lease_ttl() }.spawn(client, &shutdown);
    shutdown.cancelled().await;
    handle.stop().await;
}
