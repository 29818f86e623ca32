//! What every platform component shares, so each `main.rs` stays a few lines: typed config,
//! tracing setup, graceful shutdown, NATS and etcd connections with backoff, registration in etcd
//! under a lease, and the ops HTTP endpoints (`/healthz`, `/metrics`).

pub mod backoff;
pub mod config;
pub mod docker;
pub mod etcd;
pub mod metrics;
pub mod nats;
pub mod ops;
pub mod outbound;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use backoff::Backoff;
pub use config::{ConfigError, EtcdConfig, LogConfig, LogFormat, NatsConfig, load_config};
pub use etcd::{Registration, RegistrationHandle};
pub use ops::{Health, OpsServer};
pub use outbound::{Outbound, OutboundError, OutboundPolicy};
pub use shutdown::Shutdown;
pub use startup::{StartError, bind, serve, start};
