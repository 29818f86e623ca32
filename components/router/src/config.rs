//! The router's configuration.

use serde::{Deserialize, Serialize};
use service_kit::{EtcdConfig, LogConfig, NatsConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Where apps' HTTP traffic arrives.
    pub listen_http: String,
    /// Where apps' HTTPS traffic arrives; certificates are chosen by SNI.
    pub listen_https: String,
    /// `/healthz` and `/metrics`.
    pub listen_ops: String,
    /// Where `git push` over SSH arrives, passed through to a builder.
    pub listen_git: String,
    /// The front door's listeners (HTTP, HTTPS, git; empty: not opened). Every connection to
    /// them must start with a PROXY protocol header (v1 or v2) naming the client, whose address
    /// then stands for the connection (`X-Forwarded-For`, the per-address limit); one without
    /// is closed. They are separate from the listeners above, which app containers reach
    /// directly: a tenant must not be able to claim another client's address.
    pub listen_http_proxied: String,
    pub listen_https_proxied: String,
    pub listen_git_proxied: String,
    /// How long the front door has to send its PROXY header, in milliseconds.
    pub proxy_header_timeout_ms: u64,
    /// Longest time a client may take to send a request's headers (slowloris), in milliseconds.
    /// For HTTP/1.1 the clock also runs while a kept-alive connection waits for its next request.
    pub header_timeout_ms: u64,
    /// A connection with no request being answered and no byte either way for this long is
    /// closed (HTTP/2's idle connections; HTTP/1.1's are bounded by `header_timeout_ms`), in
    /// seconds.
    pub idle_timeout_secs: u64,
    /// An upgraded connection (a WebSocket) or a git push that carried no byte either way for
    /// this long is closed, in seconds; while traffic flows it stays open.
    pub tunnel_idle_timeout_secs: u64,
    /// Most connections open at once from one client address, across all listeners (0: no
    /// limit). More are closed at once.
    pub max_connections_per_address: usize,
    /// The platform domain: `<app>.<domain>` goes to the app, `deis.<domain>` to the controller.
    pub platform_domain: String,
    /// How long to wait for a backend to accept a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest time a backend may take to answer a request's headers, in seconds.
    pub request_timeout_secs: u64,
    /// A backend that refused or timed out a connection is skipped for this long, in seconds.
    pub eject_secs: u64,
    /// Request bodies up to this size are buffered so the request can be retried on another
    /// backend when a connection fails; larger ones are streamed.
    pub retry_buffer_bytes: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    pub nats: NatsConfig,
    pub etcd: EtcdConfig,
    pub log: LogConfig,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            listen_http: "0.0.0.0:80".to_owned(),
            listen_https: "0.0.0.0:443".to_owned(),
            listen_ops: "0.0.0.0:9090".to_owned(),
            listen_git: "0.0.0.0:2222".to_owned(),
            listen_http_proxied: String::new(),
            listen_https_proxied: String::new(),
            listen_git_proxied: String::new(),
            proxy_header_timeout_ms: 5000,
            header_timeout_ms: 10_000,
            idle_timeout_secs: 60,
            tunnel_idle_timeout_secs: 300,
            max_connections_per_address: 256,
            platform_domain: "deis.local".to_owned(),
            connect_timeout_ms: 1000,
            request_timeout_secs: 60,
            eject_secs: 10,
            retry_buffer_bytes: 64 * 1024,
            max_body_bytes: 100 * 1024 * 1024,
            nats: NatsConfig::default(),
            etcd: EtcdConfig::default(),
            log: LogConfig::default(),
        }
    }
}
