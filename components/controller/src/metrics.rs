//! The controller's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

/// Counters shared by the API, the relay and the build consumer.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub responses: Family<StatusLabel, Counter>,
    pub events_published: Counter,
    pub outbox_pending: Gauge,
    /// Outbox events the bus will never take (too large), set aside so others go on.
    pub events_set_aside: Counter,
    pub builds_consumed: Counter,
    /// Completed builds the controller refused (over a quota), reported as failed.
    pub builds_refused: Counter,
    pub bad_bus_messages: Counter,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        service_kit::register_metrics!(
            registry,
            ("controller_http_responses", "API responses by status", self.responses),
            ("controller_events_published", "Outbox events published", self.events_published),
            ("controller_outbox_pending", "Outbox events not yet published", self.outbox_pending),
            (
                "controller_events_set_aside",
                "Outbox events that cannot be published, set aside",
                self.events_set_aside
            ),
            ("controller_builds_consumed", "Build outcomes handled", self.builds_consumed),
            ("controller_builds_refused", "Completed builds refused (over a quota)", self.builds_refused),
            ("controller_bad_bus_messages", "Malformed messages dropped", self.bad_bus_messages),
        );
    }
}
