//! Drain URLs as users give them to `deis drains:add`: checked by the controller when a drain is
//! added and by the logger when it reads one from etcd, with the same rules and the same words.

use std::fmt;

/// The longest drain URL accepted; real ones are far shorter, and the URL is stored in etcd.
const MAX_URL_LEN: usize = 2048;

/// A drain URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainUrl {
    /// `syslog://host:port`: RFC 5424 messages, octet-counted, over plain TCP.
    Syslog { host: String, port: u16 },
    /// `syslog+tls://host:port`: the same over TLS.
    SyslogTls { host: String, port: u16 },
    /// `https://…` (or `http://…`): Logplex-style batches POSTed to the URL.
    Http(url::Url),
}

/// Why a drain URL was refused. The messages are shown to the user as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainUrlError {
    #[error("the drain URL is empty")]
    Empty,
    #[error("the drain URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("'{url}' is not a URL: {reason}")]
    NotAUrl { url: String, reason: String },
    #[error("drain URLs start with syslog://, syslog+tls:// or https:// (not {scheme}://)")]
    UnsupportedScheme { scheme: String },
    #[error("the drain URL has no host")]
    MissingHost,
    #[error(
        "a {scheme}:// drain URL needs a port (syslog has no standard one for drains): {scheme}://host:port"
    )]
    MissingPort { scheme: String },
    #[error("port 0 is not a port a drain can reach")]
    PortZero,
    #[error("a {scheme}:// drain URL has only a host and a port; it cannot carry {what}")]
    Unexpected { scheme: String, what: &'static str },
}

impl DrainUrl {
    /// Checks a URL as given by a user (or read back from etcd).
    pub fn parse(s: &str) -> Result<DrainUrl, DrainUrlError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DrainUrlError::Empty);
        }
        if s.len() > MAX_URL_LEN {
            return Err(DrainUrlError::TooLong);
        }
        let url = url::Url::parse(s).map_err(|e| DrainUrlError::NotAUrl {
            // The error is shown back to the user who typed the URL, but never with a password.
            url: redact(s),
            reason: e.to_string(),
        })?;
        let scheme = url.scheme().to_owned();
        match scheme.as_str() {
            "syslog" | "syslog+tls" => {
                let unexpected = |what| DrainUrlError::Unexpected { scheme: scheme.clone(), what };
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(unexpected("a user name or password"));
                }
                if !(url.path().is_empty() || url.path() == "/") {
                    return Err(unexpected("a path"));
                }
                if url.query().is_some() {
                    return Err(unexpected("a query"));
                }
                if url.fragment().is_some() {
                    return Err(unexpected("a fragment"));
                }
                let host = match url.host() {
                    None | Some(url::Host::Domain("")) => return Err(DrainUrlError::MissingHost),
                    Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
                    Some(url::Host::Ipv4(ip)) => ip.to_string(),
                    Some(url::Host::Ipv6(ip)) => ip.to_string(),
                };
                let port = match url.port() {
                    None => return Err(DrainUrlError::MissingPort { scheme }),
                    Some(0) => return Err(DrainUrlError::PortZero),
                    Some(p) => p,
                };
                Ok(if scheme == "syslog" {
                    DrainUrl::Syslog { host, port }
                } else {
                    DrainUrl::SyslogTls { host, port }
                })
            }
            "https" | "http" => {
                match url.host_str() {
                    None | Some("") => return Err(DrainUrlError::MissingHost),
                    Some(_) => {}
                }
                if url.port() == Some(0) {
                    return Err(DrainUrlError::PortZero);
                }
                if url.fragment().is_some() {
                    return Err(DrainUrlError::Unexpected { scheme, what: "a fragment" });
                }
                Ok(DrainUrl::Http(url))
            }
            _ => Err(DrainUrlError::UnsupportedScheme { scheme }),
        }
    }

    /// The full URL, password included: what to store so the drain can be started again. Never
    /// log it; [`Display`](fmt::Display) is the form for logs and listings.
    pub fn full_url(&self) -> String {
        match self {
            DrainUrl::Http(url) => url.to_string(),
            _ => self.to_string(),
        }
    }

    /// `host:port` of the receiver, for logs and errors.
    pub fn host_port(&self) -> String {
        match self {
            DrainUrl::Syslog { host, port } | DrainUrl::SyslogTls { host, port } => {
                join_host_port(host, *port)
            }
            DrainUrl::Http(url) => {
                let host = url.host_str().unwrap_or_default();
                match url.port_or_known_default() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                }
            }
        }
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The URL as given, minus any password in it.
impl fmt::Display for DrainUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainUrl::Syslog { host, port } => write!(f, "syslog://{}", join_host_port(host, *port)),
            DrainUrl::SyslogTls { host, port } => write!(f, "syslog+tls://{}", join_host_port(host, *port)),
            DrainUrl::Http(url) => f.write_str(without_password(url).as_str()),
        }
    }
}

/// The URL with its password removed (the user name stays: it is often a token's label only).
pub(crate) fn without_password(url: &url::Url) -> url::Url {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have no password.
        let _ = shown.set_password(None);
    }
    shown
}

/// A string that failed to parse as a URL, with anything between `//` and `@` (where a
/// password would be) cut out.
fn redact(s: &str) -> String {
    match (s.find("//"), s.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}//…{}", &s[..start], &s[at..]),
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_urls_need_a_host_and_a_port() {
        let syslog = |host: &str, port| DrainUrl::Syslog { host: host.into(), port };
        for (input, want) in [
            ("syslog://logs.example.com:514", syslog("logs.example.com", 514)),
            (
                "syslog+tls://Logs.Example.com:6514/",
                DrainUrl::SyslogTls { host: "logs.example.com".into(), port: 6514 },
            ),
            ("syslog://127.0.0.1:1514", syslog("127.0.0.1", 1514)),
            ("syslog://[::1]:1514", syslog("::1", 1514)),
        ] {
            assert_eq!(DrainUrl::parse(input).unwrap(), want, "{input}");
        }
        assert_eq!(
            DrainUrl::parse("syslog://logs.example.com").unwrap_err(),
            DrainUrlError::MissingPort { scheme: "syslog".into() }
        );
        assert!(matches!(
            DrainUrl::parse("syslog://:514"),
            Err(DrainUrlError::NotAUrl { .. } | DrainUrlError::MissingHost)
        ));
        assert_eq!(DrainUrl::parse("syslog://h:0").unwrap_err(), DrainUrlError::PortZero);
        assert!(matches!(DrainUrl::parse("syslog://h:99999"), Err(DrainUrlError::NotAUrl { .. })));
        assert!(matches!(
            DrainUrl::parse("syslog://h:514/path"),
            Err(DrainUrlError::Unexpected { what: "a path", .. })
        ));
        assert!(matches!(
            DrainUrl::parse("syslog://u:p@h:514"),
            Err(DrainUrlError::Unexpected { what: "a user name or password", .. })
        ));
        assert!(matches!(DrainUrl::parse("syslog://h:514?x=1"), Err(DrainUrlError::Unexpected { .. })));
    }

    #[test]
    fn https_urls_default_to_port_443() {
        let url = DrainUrl::parse("https://logs.example.com/drain?token=abc").unwrap();
        let DrainUrl::Http(inner) = &url else { panic!("not http: {url:?}") };
        assert_eq!(inner.port_or_known_default(), Some(443));
        assert_eq!(url.host_port(), "logs.example.com:443");
        assert_eq!(url.to_string(), "https://logs.example.com/drain?token=abc");
        let plain = DrainUrl::parse("http://127.0.0.1:8080/x").unwrap();
        assert_eq!(plain.host_port(), "127.0.0.1:8080");
        assert!(DrainUrl::parse("https://:443/").is_err());
        assert!(matches!(DrainUrl::parse("syslog:///"), Err(DrainUrlError::MissingHost)));
        assert!(DrainUrl::parse("https://").is_err());
        assert_eq!(DrainUrl::parse("https://h:0/").unwrap_err(), DrainUrlError::PortZero);
    }

    #[test]
    fn other_schemes_and_non_urls_are_refused() {
        for bad in ["ftp://h:21", "udp://h:514", "syslog+udp://h:514", "file:///etc/passwd", "mailto:a@b"] {
            assert!(
                matches!(DrainUrl::parse(bad), Err(DrainUrlError::UnsupportedScheme { .. })),
                "{bad} should be an unsupported scheme"
            );
        }
        assert_eq!(DrainUrl::parse("  ").unwrap_err(), DrainUrlError::Empty);
        assert!(matches!(
            DrainUrl::parse("logs.example.com:514"),
            Err(DrainUrlError::UnsupportedScheme { .. })
        ));
        assert!(matches!(DrainUrl::parse("not a url"), Err(DrainUrlError::NotAUrl { .. })));
        let long = format!("https://h/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(DrainUrl::parse(&long).unwrap_err(), DrainUrlError::TooLong);
    }

    #[test]
    fn display_hides_the_password_but_full_url_keeps_it() {
        let url = DrainUrl::parse("https://user:s3cret@logs.example.com/drain").unwrap();
        assert_eq!(url.to_string(), "https://user@logs.example.com/drain");
        assert!(!format!("{url}").contains("s3cret"));
        assert_eq!(url.full_url(), "https://user:s3cret@logs.example.com/drain");
        assert_eq!(DrainUrl::parse(&url.full_url()).unwrap(), url);
        let syslog = DrainUrl::parse("syslog+tls://[::1]:6514").unwrap();
        assert_eq!(syslog.to_string(), "syslog+tls://[::1]:6514");
        assert_eq!(DrainUrl::parse(&syslog.to_string()).unwrap(), syslog);
        let err = DrainUrl::parse("https://user:s3cret@exa mple.com/").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
