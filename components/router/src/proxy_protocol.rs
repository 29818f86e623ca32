//! The PROXY protocol (HAProxy's, versions 1 and 2): the header the front door sends first on
//! each connection it passes through, naming the client it came from. The front door is a TCP
//! passthrough, so without it the routers would see only the front door's address.
//!
//! Only the addresses are read; v2's TLVs are skipped. A header that is malformed, too long or
//! not there at all is an error: a listener that expects the header never guesses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The signature every v2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// v1's longest line, CRLF included (the spec's bound).
const V1_MAX: usize = 107;
/// v2's fixed part: signature, version and command, family and transport, length.
const V2_FIXED: usize = 16;
/// The most of a v2 header accepted: addresses and TLVs. HAProxy's own are far smaller; the
/// bound keeps a peer from making the router buffer 64 KiB per connection.
const V2_MAX_BODY: usize = 1024;

/// What a header says of the connection. Both are `None` for a connection the proxy made itself
/// (v2 `LOCAL`, v1 `UNKNOWN`, an unspecified or Unix family): the socket's own addresses apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client.
    pub source: Option<SocketAddr>,
    /// Where the client connected to (the front door's listener).
    pub destination: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("no complete PROXY protocol header in time")]
    Timeout,
    #[error("the connection closed before its PROXY protocol header was complete")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

/// Parses a header at the start of `buf`: the header and how many bytes it took, or `None` when
/// `buf` is a valid beginning that needs more bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let v1 = b"PROXY ";
    if starts_like(buf, v1) {
        return if buf.len() < v1.len() { Ok(None) } else { parse_v1(buf) };
    }
    if starts_like(buf, &V2_SIGNATURE) {
        return if buf.len() < V2_FIXED { Ok(None) } else { parse_v2(buf) };
    }
    Err(ProxyHeaderError::Missing)
}

/// Whether `buf` and `signature` agree on their common length.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError::Malformed("v1 line too long"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyHeaderError::Malformed("v1 not ASCII"))?;
    let consumed = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Some((ProxyHeader { source: None, destination: None }, consumed))),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *family == "TCP4";
            let source = SocketAddr::new(v1_ip(src, v4)?, v1_port(sport)?);
            let destination = SocketAddr::new(v1_ip(dst, v4)?, v1_port(dport)?);
            Ok(Some((ProxyHeader { source: Some(source), destination: Some(destination) }, consumed)))
        }
        _ => Err(ProxyHeaderError::Malformed("v1 fields")),
    }
}

fn v1_ip(s: &str, v4: bool) -> Result<IpAddr, ProxyHeaderError> {
    let ip = if v4 { s.parse::<Ipv4Addr>().map(IpAddr::V4) } else { s.parse::<Ipv6Addr>().map(IpAddr::V6) };
    ip.map_err(|_| ProxyHeaderError::Malformed("v1 address"))
}

fn v1_port(s: &str) -> Result<u16, ProxyHeaderError> {
    // Digits only: `str::parse` would also take a leading `+`.
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyHeaderError::Malformed("v1 port"));
    }
    s.parse().map_err(|_| ProxyHeaderError::Malformed("v1 port"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("v2 version"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyHeaderError::Malformed("v2 command")),
    };
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BODY {
        return Err(ProxyHeaderError::Malformed("v2 header too long"));
    }
    let total = V2_FIXED + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[V2_FIXED..total];
    let unknown = ProxyHeader { source: None, destination: None };
    if local {
        // The proxy's own connection (a health check): the socket's addresses are the truth.
        return Ok(Some((unknown, total)));
    }
    let stream = transport == 1;
    let header = match family {
        1 if stream => {
            let b: &[u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyHeaderError::Malformed("v2 IPv4 addresses too short"))?;
            let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            ProxyHeader {
                source: Some(SocketAddr::new(src.into(), u16::from_be_bytes([b[8], b[9]]))),
                destination: Some(SocketAddr::new(dst.into(), u16::from_be_bytes([b[10], b[11]]))),
            }
        }
        2 if stream => {
            let b: &[u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyHeaderError::Malformed("v2 IPv6 addresses too short"))?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            ProxyHeader {
                source: Some(SocketAddr::new(ip(0).into(), u16::from_be_bytes([b[32], b[33]]))),
                destination: Some(SocketAddr::new(ip(16).into(), u16::from_be_bytes([b[34], b[35]]))),
            }
        }
        // Unspecified or Unix: no address to use.
        0 | 3 => unknown,
        _ => return Err(ProxyHeaderError::Malformed("v2 family or transport")),
    };
    Ok(Some((header, total)))
}

/// Reads a header from the start of `stream` within `timeout`: the header, and the bytes read
/// past it (the start of the client's own data, which the caller must hand on first).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(ProxyHeader, Vec<u8>), ProxyHeaderError> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|e| ProxyHeaderError::Io(e.to_string()))?;
            if n == 0 {
                return Err(ProxyHeaderError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some((header, used)) = parse(&buf)? {
                return Ok((header, buf.split_off(used)));
            }
        }
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| ProxyHeaderError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_client_and_leave_what_follows() {
        let buf = b"PROXY TCP4 203.0.113.7 10.0.0.2 51234 80\r\nGET / HTTP/1.1\r\n";
        let (h, used) = parse(buf).unwrap().unwrap();
        assert_eq!(h.source, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.2:80".parse().unwrap()));
        assert_eq!(&buf[used..], b"GET / HTTP/1.1\r\n");

        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 ::1 443 8443\r\n").unwrap().unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:443".parse().unwrap()));
        let (h, _) = parse(b"PROXY UNKNOWN whatever\r\n").unwrap().unwrap();
        assert_eq!(h.source, None);
    }

    #[test]
    fn v1_needs_more_until_its_line_ends() {
        assert_eq!(parse(b"PRO"), Ok(None));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None));
    }

    #[test]
    fn v1_malformed_headers_are_refused() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyHeaderError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse(&endless), Err(ProxyHeaderError::Malformed("v1 line too long")));
    }

    #[test]
    fn a_connection_without_a_header_is_refused_at_once() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyHeaderError::Missing));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyHeaderError::Missing));
        assert_eq!(parse(b"SSH-2.0-x"), Err(ProxyHeaderError::Missing));
    }

    #[test]
    fn v2_ipv4_and_ipv6_with_tlvs_skipped() {
        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 2];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a NOOP TLV
        let mut buf = v2(1, 0x11, &body);
        let header_len = buf.len();
        buf.extend_from_slice(b"\x16\x03\x01");
        let (h, used) = parse(&buf).unwrap().unwrap();
        assert_eq!(used, header_len);
        assert_eq!(h.source, Some("198.51.100.9:40000".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.2:443".parse().unwrap()));

        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0, 80, 0, 81]);
        let (h, _) = parse(&v2(1, 0x21, &body)).unwrap().unwrap();
        assert_eq!(h.source, Some("[2001:db8::7]:80".parse().unwrap()));
    }

    #[test]
    fn v2_local_and_unspecified_carry_no_address() {
        let (h, used) = parse(&v2(0, 0x00, &[])).unwrap().unwrap();
        assert_eq!((h.source, used), (None, 16));
        let (h, _) = parse(&v2(1, 0x00, &[])).unwrap().unwrap();
        assert_eq!(h.source, None);
    }

    #[test]
    fn v2_partial_and_malformed_headers() {
        let full = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        for n in 0..full.len() {
            assert_eq!(parse(&full[..n]), Ok(None), "prefix of {n} bytes");
        }
        assert!(matches!(parse(&v2(1, 0x11, &[1, 2, 3])), Err(ProxyHeaderError::Malformed(_))));
        assert!(matches!(parse(&v2(2, 0x11, &[0; 12])), Err(ProxyHeaderError::Malformed(_))));
        assert!(matches!(parse(&v2(1, 0x12, &[0; 12])), Err(ProxyHeaderError::Malformed(_))));
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Err(ProxyHeaderError::Malformed(_))));
        let mut too_long = v2(1, 0x11, &[]);
        too_long[14..16].copy_from_slice(&4000u16.to_be_bytes());
        assert!(matches!(parse(&too_long), Err(ProxyHeaderError::Malformed(_))));
    }

    #[tokio::test]
    async fn read_header_keeps_the_bytes_after_it_and_times_out_on_silence() {
        let mut input: &[u8] = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nhello";
        let (h, rest) = read_header(&mut input, Duration::from_secs(1)).await.unwrap();
        assert_eq!(h.source, Some("1.2.3.4:1".parse().unwrap()));
        assert_eq!(rest, b"hello");

        let (_client, mut server) = tokio::io::duplex(64);
        let silent = read_header(&mut server, Duration::from_millis(50)).await;
        assert_eq!(silent, Err(ProxyHeaderError::Timeout));

        let mut closed: &[u8] = b"PROXY TCP4";
        assert_eq!(read_header(&mut closed, Duration::from_secs(1)).await, Err(ProxyHeaderError::Closed));
    }
}
