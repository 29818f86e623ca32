//! The router's Prometheus metrics: requests by app and status class, latency by app.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub app: String,
    /// `1xx` … `5xx`.
    pub status: &'static str,
}

/// One app's metric handles, looked up once per route table rather than per request.
#[derive(Debug, Clone)]
pub struct AppMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
}

impl AppMetrics {
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<AppLabel, Histogram, fn() -> Histogram>,
    pub ejections: Counter,
    /// Requests in flight to a node that left the cluster, given up (and sent elsewhere if safe).
    pub given_up: Counter,
    pub bad_routes: Counter,
    /// Access lines not shipped because the queue to the bus was full.
    pub access_lines_dropped: Counter,
    /// Connections closed at once because their client address had too many open.
    pub connections_refused: Counter,
    /// Front-door connections closed for a missing, malformed or late PROXY header.
    pub proxy_headers_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ejections: Counter::default(),
            given_up: Counter::default(),
            bad_routes: Counter::default(),
            access_lines_dropped: Counter::default(),
            connections_refused: Counter::default(),
            proxy_headers_refused: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        service_kit::register_metrics!(
            registry,
            ("router_requests", "Requests by app and status class", self.requests),
            ("router_request_seconds", "Time to the backend's response headers", self.latency),
            ("router_backend_ejections", "Backends ejected after a refused connection", self.ejections),
            (
                "router_requests_given_up",
                "Requests in flight to a node that left the cluster, given up at once",
                self.given_up,
            ),
            (
                "router_access_lines_dropped",
                "Access lines not shipped because the bus could not keep up",
                self.access_lines_dropped,
            ),
            ("router_bad_route_values", "Malformed route values skipped", self.bad_routes),
            (
                "router_connections_refused",
                "Connections closed because their client address had too many open",
                self.connections_refused,
            ),
            (
                "router_proxy_headers_refused",
                "Front-door connections closed for a missing or malformed PROXY header",
                self.proxy_headers_refused,
            ),
        );
    }

    /// The handles of one app's metrics (they share their values with the registry's).
    pub fn for_app(&self, app: &str) -> AppMetrics {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let by_class = CLASSES.map(|status| {
            self.requests.get_or_create(&RequestLabels { app: app.to_owned(), status }).clone()
        });
        let latency = self.latency.get_or_create(&AppLabel { app: app.to_owned() }).clone();
        AppMetrics { by_class, latency }
    }
}
