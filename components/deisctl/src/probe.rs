//! Health probes of the parts `deisctl announce` watches: an HTTP GET that must answer 2xx, a TCP
//! connect, or an etcd key that must exist (the agent's node key, kept alive by its lease).

use std::fmt;
use std::time::Duration;

/// How one part is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `http://…`: healthy when the GET answers 2xx.
    Http(String),
    /// `tcp:host:port`: healthy when a connection is accepted.
    Tcp(String),
    /// `key:nodes/node1`: healthy while this key (below the platform prefix) exists.
    Key(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("'{0}' is not a probe: expected http://…, tcp:<host>:<port> or key:<key>")]
    Unknown(String),
    #[error("'{0}': a TCP probe needs <host>:<port>")]
    TcpAddress(String),
    #[error("'{0}': a key probe needs a key below the platform prefix, like key:nodes/node1")]
    Key(String),
}

impl Probe {
    pub fn parse(text: &str) -> Result<Self, ProbeError> {
        if text.starts_with("http://") || text.starts_with("https://") {
            return Ok(Self::Http(text.to_owned()));
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            let valid = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            return if valid {
                Ok(Self::Tcp(addr.to_owned()))
            } else {
                Err(ProbeError::TcpAddress(text.into()))
            };
        }
        if let Some(key) = text.strip_prefix("key:") {
            let key = key.trim_start_matches('/');
            let valid =
                !key.is_empty() && !key.split('/').any(|segment| segment.is_empty() || segment == "..");
            return if valid { Ok(Self::Key(key.to_owned())) } else { Err(ProbeError::Key(text.into())) };
        }
        Err(ProbeError::Unknown(text.to_owned()))
    }

    /// Runs the probe once. `Ok(())` is healthy; the error says what is wrong, for operators.
    pub async fn check(
        &self,
        http: &reqwest::Client,
        etcd: &mut etcd_client::Client,
        prefix: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let outcome = tokio::time::timeout(timeout, async {
            match self {
                Self::Http(url) => {
                    let response = http.get(url).send().await.map_err(|e| describe_http(&e))?;
                    let status = response.status();
                    if status.is_success() {
                        return Ok(());
                    }
                    let body = response.text().await.unwrap_or_default();
                    Err(format!("HTTP {}: {}", status.as_u16(), first_line(&body)))
                }
                Self::Tcp(addr) => {
                    tokio::net::TcpStream::connect(addr.as_str()).await.map(drop).map_err(|e| e.to_string())
                }
                Self::Key(key) => {
                    let full = format!("{}/{key}", prefix.trim_end_matches('/'));
                    let found = etcd
                        .get(full.as_bytes(), Some(etcd_client::GetOptions::new().with_count_only()))
                        .await
                        .map_err(|e| format!("etcd: {e}"))?;
                    if found.count() > 0 { Ok(()) } else { Err(format!("{full} is missing")) }
                }
            }
        })
        .await;
        outcome.unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(url) => f.write_str(url),
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
            Self::Key(key) => write!(f, "key:{key}"),
        }
    }
}

/// reqwest's errors hide the cause (connection refused …) in their source chain.
fn describe_http(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// The first line of a body, cut to a length that fits a status table.
fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    let mut cut: String = line.chars().take(160).collect();
    if line.chars().count() > 160 {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse_and_print_back() {
        for text in ["http://127.0.0.1:9090/healthz", "tcp:127.0.0.1:5432", "key:nodes/node1"] {
            assert_eq!(Probe::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Probe::parse("key:/nodes/node1").unwrap(), Probe::Key("nodes/node1".into()));
    }

    #[test]
    fn bad_probes_are_refused_with_the_reason() {
        assert!(matches!(Probe::parse("ftp://x"), Err(ProbeError::Unknown(_))));
        assert!(matches!(Probe::parse("tcp:5432"), Err(ProbeError::TcpAddress(_))));
        assert!(matches!(Probe::parse("tcp:host:0"), Err(ProbeError::TcpAddress(_))));
        assert!(matches!(Probe::parse("tcp:host:99999"), Err(ProbeError::TcpAddress(_))));
        assert!(matches!(Probe::parse("key:"), Err(ProbeError::Key(_))));
        assert!(matches!(Probe::parse("key:nodes//x"), Err(ProbeError::Key(_))));
        assert!(matches!(Probe::parse("key:../secrets"), Err(ProbeError::Key(_))));
    }

    #[test]
    fn bodies_are_cut_to_one_short_line() {
        assert_eq!(first_line("{\"healthy\":false}\nmore"), "{\"healthy\":false}");
        let long = "x".repeat(500);
        assert_eq!(first_line(&long).chars().count(), 161);
    }
}
