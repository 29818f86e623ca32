//! The ops endpoints every component serves: `/healthz` (200 when healthy, 503 with the failing
//! checks otherwise) and `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::shutdown::Shutdown;

/// The result of a health check: overall status plus one line per dependency.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    /// Dependency → "ok" or what is wrong with it.
    pub checks: BTreeMap<String, String>,
}

impl Health {
    /// Builds a health result from named checks; healthy when all are `Ok`.
    pub fn from_checks(checks: impl IntoIterator<Item = (String, Result<(), String>)>) -> Self {
        let mut healthy = true;
        let checks = checks
            .into_iter()
            .map(|(name, result)| {
                let text = match result {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => {
                        healthy = false;
                        e
                    }
                };
                (name, text)
            })
            .collect();
        Self { healthy, checks }
    }
}

type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;

/// Serves `/healthz` and `/metrics`, alone or mounted beside a component's own routes.
#[derive(Clone)]
pub struct OpsServer {
    registry: Arc<Registry>,
    health: HealthFn,
}

impl std::fmt::Debug for OpsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsServer").finish_non_exhaustive()
    }
}

impl OpsServer {
    pub fn new(registry: Registry, health: impl Fn() -> Health + Send + Sync + 'static) -> Self {
        Self { registry: Arc::new(registry), health: Arc::new(health) }
    }

    /// The two routes as a warp filter.
    pub fn routes(&self) -> BoxedFilter<(Response,)> {
        let health = self.health.clone();
        let healthz = warp::path!("healthz").and(warp::get()).map(move || {
            let h = health();
            let status = if h.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            warp::reply::with_status(warp::reply::json(&h), status).into_response()
        });
        let registry = self.registry.clone();
        let metrics = warp::path!("metrics").and(warp::get()).map(move || {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &registry) {
                Ok(()) => warp::reply::with_header(
                    body,
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .into_response(),
                Err(_) => {
                    warp::reply::with_status("metrics encoding failed", StatusCode::INTERNAL_SERVER_ERROR)
                        .into_response()
                }
            }
        });
        healthz.or(metrics).unify().boxed()
    }

    /// Serves the ops routes on an already bound listener until shutdown.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) {
        let routes = self.routes();
        warp::serve(routes).incoming(listener).graceful(async move { shutdown.cancelled().await }).run().await
    }
}

use warp::Reply as _;
