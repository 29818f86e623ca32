//! The logger's counters, served on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Lines taken from the bus.
    pub lines_in: Counter,
    /// Lines dropped because their app's queue was full.
    pub lines_dropped: Counter,
    /// Lines published on drain streams and handed to drains by this instance.
    pub lines_forwarded: Counter,
    /// Lines sent again on taking an app over from an instance that left.
    pub lines_resent: Counter,
    /// Messages on log subjects that did not decode, or whose app disagreed with the subject.
    pub bad_messages: Counter,
    pub store_errors: Counter,
    pub publish_errors: Counter,
    pub queries: Counter,
    /// Live logger instances this one knows of (forwarding is shared among them).
    pub members: Gauge,
    /// 1 while this instance hears every live node and so takes a share of the forwarding.
    pub reachable: Gauge,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        service_kit::register_metrics!(
            registry.sub_registry_with_prefix("deis_logger"),
            ("lines_in", "Log lines taken from the bus", self.lines_in),
            ("lines_dropped", "Lines dropped because their app's queue was full", self.lines_dropped),
            ("lines_forwarded", "Lines forwarded to drain streams and drains", self.lines_forwarded),
            (
                "lines_resent",
                "Lines sent again on taking an app over from an instance that left",
                self.lines_resent
            ),
            ("bad_messages", "Undecodable or inconsistent log messages", self.bad_messages),
            ("store_errors", "Failed appends to history", self.store_errors),
            ("publish_errors", "Failed publishes on drain streams", self.publish_errors),
            ("queries", "History queries answered", self.queries),
            ("members", "Live logger instances sharing the forwarding", self.members),
            (
                "reachable",
                "1 while this instance hears every live node and takes a share of the forwarding",
                self.reachable
            ),
        );
    }
}
