//! Outbound connections made on a tenant's behalf (a custom buildpack's URL, a log drain) must
//! not reach the inside of the platform: loopback, link-local (cloud metadata), the cluster's
//! networks, the nodes. [`Outbound`] is the one check every such connection goes through.
//!
//! The check is on the *resolved* address that is then connected to: a name is resolved once,
//! every address it gave is checked, and the connection goes to a checked address (never to the
//! name again, which a hostile DNS server could answer differently the second time). Redirects
//! are followed only through the same check.
//!
//! The operator configures extra denied networks (the cluster's and the nodes' addresses when
//! they are not private ones) and an allow-list of host names or networks that overrides every
//! refusal (an internal log collector, a private buildpack mirror).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the operator says about outbound connections (a section of a component's config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundPolicy {
    /// Networks refused besides the built-in ones (loopback, unspecified, link-local, multicast,
    /// private and shared ranges, reserved): CIDRs like `203.0.113.0/24` or single addresses.
    /// Put the cluster's networks and the nodes' addresses here when they are public ones.
    pub denied: Vec<String>,
    /// Allowed even when denied: host names (exactly as written in the URL, case-insensitive)
    /// or CIDRs / addresses the resolved address may fall in.
    pub allowed: Vec<String>,
}

/// Why an outbound connection is refused, in words for the tenant who configured it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("'{0}' is not an address or network (expected a CIDR like 10.0.0.0/8)")]
    BadNetwork(String),
    #[error("{host} resolves to {ip}, {why}: connections there are not allowed")]
    Denied { host: String, ip: IpAddr, why: &'static str },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connecting to {host} ({addr}): {reason}")]
    Connect { host: String, addr: SocketAddr, reason: String },
    #[error("no connection to {host} within {0:?}", .timeout)]
    Timeout { host: String, timeout: Duration },
}

/// A network: an address and how many leading bits of it are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, bits: u8) -> Cidr {
        Cidr { addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)), bits }
    }

    const fn v6(segments: [u16; 8], bits: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr { addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), bits }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn prefix(a: u128, b: u128, bits: u32, width: u32) -> bool {
            if bits == 0 {
                return true;
            }
            let shift = width - bits.min(width);
            (a >> shift) == (b >> shift)
        }
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                prefix(u32::from(n).into(), u32::from(i).into(), self.bits.into(), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => prefix(u128::from(n), u128::from(i), self.bits.into(), 128),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = OutboundError;

    fn from_str(s: &str) -> Result<Cidr, OutboundError> {
        let bad = || OutboundError::BadNetwork(s.to_owned());
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, bits })
    }
}

/// Refused whatever the operator adds, unless allowed: every network that is not the public
/// internet, with the reason given to the tenant.
const BUILT_IN_DENIED: &[(Cidr, &str)] = &[
    (Cidr::v4(0, 0, 0, 0, 8), "an unspecified (\"this network\") address"),
    (Cidr::v4(10, 0, 0, 0, 8), "a private address"),
    (Cidr::v4(100, 64, 0, 0, 10), "a shared (carrier-grade NAT) address"),
    (Cidr::v4(127, 0, 0, 0, 8), "a loopback address"),
    (Cidr::v4(169, 254, 0, 0, 16), "a link-local address"),
    (Cidr::v4(172, 16, 0, 0, 12), "a private address"),
    (Cidr::v4(192, 0, 0, 0, 24), "a reserved address"),
    (Cidr::v4(192, 168, 0, 0, 16), "a private address"),
    (Cidr::v4(198, 18, 0, 0, 15), "a benchmarking address"),
    (Cidr::v4(224, 0, 0, 0, 4), "a multicast address"),
    (Cidr::v4(240, 0, 0, 0, 4), "a reserved address"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "an unspecified address"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "a loopback address"),
    (Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "a private (unique local) address"),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "a link-local address"),
    (Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "a site-local address"),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "a multicast address"),
];

/// The checker, built once from an [`OutboundPolicy`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    denied: Vec<Cidr>,
    allowed_networks: Vec<Cidr>,
    allowed_hosts: Vec<String>,
}

impl Outbound {
    /// Refuses a policy naming something that is not a network (a config error).
    pub fn new(policy: &OutboundPolicy) -> Result<Outbound, OutboundError> {
        let denied = policy.denied.iter().map(|d| d.parse()).collect::<Result<Vec<Cidr>, _>>()?;
        let mut allowed_networks = Vec::new();
        let mut allowed_hosts = Vec::new();
        for a in &policy.allowed {
            let a = a.trim();
            // Anything that starts like an address must be one: a typo must not silently become
            // a host name that never matches.
            if a.contains('/') || a.parse::<IpAddr>().is_ok() {
                allowed_networks.push(a.parse()?);
            } else if !a.is_empty() {
                allowed_hosts.push(a.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        Ok(Outbound { inner: Arc::new(Inner { denied, allowed_networks, allowed_hosts }) })
    }

    /// Everything allowed (tests of other things that talk to loopback receivers).
    pub fn allow_all() -> Outbound {
        Outbound {
            inner: Arc::new(Inner {
                denied: Vec::new(),
                allowed_networks: vec![Cidr::v4(0, 0, 0, 0, 0), Cidr::v6([0; 8], 0)],
                allowed_hosts: Vec::new(),
            }),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.inner.allowed_hosts.contains(&host)
    }

    /// Whether `ip`, which `host` resolved to (or is), may be connected to.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), OutboundError> {
        let ip = canonical(ip);
        if self.host_allowed(host) || self.inner.allowed_networks.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        let denied = |why| Err(OutboundError::Denied { host: host.to_owned(), ip, why });
        if let Some((_, why)) = BUILT_IN_DENIED.iter().find(|(n, _)| n.contains(ip)) {
            return denied(why);
        }
        if let IpAddr::V4(v4) = ip
            && v4.is_broadcast()
        {
            return denied("a broadcast address");
        }
        if self.inner.denied.iter().any(|n| n.contains(ip)) {
            return denied("inside the platform's networks");
        }
        Ok(())
    }

    /// Resolves `host` and checks every address it gives: one refused address refuses the host
    /// (a name that also points inside is not one to send tenants' data to).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_ip(host, ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| OutboundError::Resolve { host: host.to_owned(), reason: e.to_string() })?
            .collect();
        if addrs.is_empty() {
            return Err(OutboundError::NoAddress { host: host.to_owned() });
        }
        for a in &addrs {
            self.check_ip(host, a.ip())?;
        }
        Ok(addrs)
    }

    /// Resolves and checks `host`, then connects to one of the checked addresses (the first
    /// that answers), within `timeout`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream, OutboundError> {
        let work = async {
            let addrs = self.resolve(host, port).await?;
            let mut last = None;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => {
                        last = Some(OutboundError::Connect {
                            host: host.to_owned(),
                            addr,
                            reason: e.to_string(),
                        })
                    }
                }
            }
            Err(last.unwrap_or_else(|| OutboundError::NoAddress { host: host.to_owned() }))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| OutboundError::Timeout { host: host.to_owned(), timeout })?
    }

    /// Checks a URL's host statically when it is an address (an HTTP client does not resolve
    /// those, so [`Outbound::resolver`] never sees them). Names are checked when resolved.
    pub fn check_literal_host(&self, host: &str) -> Result<(), OutboundError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(host, ip),
            Err(_) => Ok(()),
        }
    }
}

/// An IPv4 address carried in IPv6 (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) is
/// checked as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            ip
        }
        v4 => v4,
    }
}

#[cfg(feature = "outbound-http")]
pub use http::*;

#[cfg(feature = "outbound-http")]
mod http {
    use super::*;

    /// reqwest's resolver through the check: the client connects only to the addresses this
    /// returned, so what was checked is what is connected to.
    #[derive(Debug, Clone)]
    pub struct CheckedResolver(pub Outbound);

    impl reqwest::dns::Resolve for CheckedResolver {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let outbound = self.0.clone();
            let host = name.as_str().to_owned();
            Box::pin(async move {
                // Port 0: reqwest puts the URL's port in.
                let addrs = outbound.resolve(&host, 0).await?;
                let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
                Ok(addrs)
            })
        }
    }

    impl Outbound {
        /// Sets up an HTTP client so every connection goes through the check: names resolved
        /// by [`CheckedResolver`], redirects (up to `max_redirects`, 0 for none) followed only
        /// to hosts that pass, no proxy from the environment (it would connect for us,
        /// unchecked). A URL whose host is an address must still be checked with
        /// [`Outbound::check_literal_host`] before the request.
        pub fn http_client(
            &self,
            builder: reqwest::ClientBuilder,
            max_redirects: usize,
        ) -> reqwest::ClientBuilder {
            let outbound = self.clone();
            let policy = reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error(format!("more than {max_redirects} redirects"));
                }
                let host = attempt.url().host_str().unwrap_or_default().to_owned();
                match outbound.check_literal_host(&host) {
                    Ok(()) if max_redirects > 0 => attempt.follow(),
                    Ok(()) => attempt.stop(),
                    Err(e) => attempt.error(e),
                }
            });
            builder.no_proxy().dns_resolver(Arc::new(CheckedResolver(self.clone()))).redirect(policy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn refused(o: &Outbound, s: &str) -> bool {
        o.check_ip("h", ip(s)).is_err()
    }

    #[test]
    fn the_inside_is_refused_and_the_internet_is_not() {
        let o = Outbound::new(&OutboundPolicy::default()).unwrap();
        for inside in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(&o, inside), "{inside} must be refused");
        }
        for outside in ["1.1.1.1", "172.32.0.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(!refused(&o, outside), "{outside} must be allowed");
        }
        let e = o.check_ip("meta", ip("169.254.169.254")).unwrap_err().to_string();
        assert!(e.contains("meta") && e.contains("link-local"), "{e}");
    }

    #[test]
    fn operators_deny_more_and_allow_exceptions() {
        let policy = OutboundPolicy {
            denied: vec!["203.0.113.0/24".into(), "198.51.100.7".into()],
            allowed: vec!["10.9.0.0/16".into(), "Logs.Internal".into(), "127.0.0.1".into()],
        };
        let o = Outbound::new(&policy).unwrap();
        assert!(refused(&o, "203.0.113.200"));
        assert!(refused(&o, "198.51.100.7"));
        assert!(!refused(&o, "198.51.100.8"));
        assert!(!refused(&o, "10.9.3.4"));
        assert!(refused(&o, "10.8.3.4"));
        assert!(!refused(&o, "127.0.0.1"));
        assert!(refused(&o, "127.0.0.2"));
        assert!(o.check_ip("logs.internal.", ip("10.0.0.1")).is_ok());
        assert!(o.check_ip("other.internal", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn networks_parse_strictly() {
        for bad in ["10.0.0.0/33", "::/129", "x/8", "10.0.0/8", "1.2.3.4/"] {
            let policy = OutboundPolicy { denied: vec![bad.into()], allowed: vec![] };
            assert!(Outbound::new(&policy).is_err(), "{bad}");
        }
        let policy = OutboundPolicy { denied: vec![], allowed: vec!["10.0.0.0/99".into()] };
        assert!(Outbound::new(&policy).is_err());
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains(ip("1.2.3.4")) && !c.contains(ip("::1")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:1::1")) && !c.contains(ip("2001:db9::1")));
    }

    #[tokio::test]
    async fn names_are_checked_on_what_they_resolve_to() {
        let o = Outbound::new(&OutboundPolicy::default()).unwrap();
        let e = o.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(e, OutboundError::Denied { .. }), "{e}");
        assert!(o.resolve("[::1]", 80).await.is_err());
        assert!(o.resolve("127.0.0.1", 80).await.is_err());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let e = o.connect("localhost", port, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, OutboundError::Denied { .. }), "{e}");
        let allowed =
            Outbound::new(&OutboundPolicy { denied: vec![], allowed: vec!["localhost".into()] }).unwrap();
        allowed.connect("localhost", port, Duration::from_secs(5)).await.unwrap();
    }

    #[cfg(feature = "outbound-http")]
    #[tokio::test]
    async fn http_redirects_and_names_go_through_the_check() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A server on loopback that redirects to loopback by address, and one by name.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let answer = if req.starts_with("GET /to-address") {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/inside\r\nContent-Length: 0\r\n\r\n"
                    )
                } else if req.starts_with("GET /to-name") {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://localhost:{port}/inside\r\nContent-Length: 0\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ninside".to_owned()
                };
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        // The public host is played by an allow-listed name for the first hop only.
        let policy = OutboundPolicy { denied: vec![], allowed: vec!["public.test".into()] };
        let o = Outbound::new(&policy).unwrap();
        let client = o
            .http_client(reqwest::Client::builder(), 3)
            .resolve("public.test", SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        let first = client.get(format!("http://public.test:{port}/plain")).send().await.unwrap();
        assert_eq!(first.text().await.unwrap(), "inside", "an allowed name passes");
        for path in ["to-address", "to-name"] {
            let e = client.get(format!("http://public.test:{port}/{path}")).send().await.unwrap_err();
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            assert!(text.contains("loopback"), "{path}: {text}");
        }
        assert!(o.check_literal_host("127.0.0.1").is_err());
        assert!(o.check_literal_host("[::1]").is_err());
    }
}
