//! The builder's Prometheus metrics.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Built,
    Failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub builds: Family<OutcomeLabel, Counter>,
    /// Seconds from the start of a build until its image was in the registry.
    pub build_seconds: Histogram,
    /// SSH sessions or commands refused, by why.
    pub refused: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let buckets = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
        Self { builds: Family::default(), build_seconds: Histogram::new(buckets), refused: Family::default() }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        service_kit::register_metrics!(
            registry,
            ("builder_builds", "Builds by outcome", self.builds),
            (
                "builder_build_seconds",
                "Seconds from the start of a build until its image was pushed",
                self.build_seconds,
            ),
            ("builder_refused", "SSH logins and commands refused, by reason", self.refused),
        );
    }

    pub fn observe_build(&self, outcome: Outcome, took: Duration) {
        self.builds.get_or_create(&OutcomeLabel { outcome }).inc();
        if outcome == Outcome::Built {
            self.build_seconds.observe(took.as_secs_f64());
        }
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}
