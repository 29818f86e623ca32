//! What happens to a connection before and around HTTP: the PROXY protocol header from the
//! front door, the per-address connection limit, and the clocks that close connections that
//! have gone quiet. Any client can open sockets and say nothing; each of these costs the router
//! a task and a file descriptor, so none may be held for free.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::proxy_protocol::{self, ProxyHeaderError};

/// Who is at the other end of a connection, as far as the router can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the PROXY header's source behind the front door, else the peer.
    pub addr: SocketAddr,
    /// The port the client connected to (the front door's, behind it).
    pub port: u16,
}

/// A stream whose first bytes were already read (past a PROXY header) and are handed out again
/// before the rest.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self { prefix, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// When a connection last carried a byte, and how many of its requests are being answered.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Self { base: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last byte either way.
    pub fn quiet_for(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Marks a request as being answered until the guard is dropped (with the response's body).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request being answered; see [`Activity::request`].
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that records in its [`Activity`] every byte that crosses it.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, activity: Arc::new(Activity::default()) }
    }
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Copies both ways between a client and a backend (an upgraded WebSocket, a git push) for as
/// long as bytes flow; once neither side has sent anything for `idle`, both are closed.
pub async fn tunnel<A, B>(client: A, backend: &mut B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = Tracked::new(client);
    let activity = client.activity();
    let copy = tokio::io::copy_bidirectional(&mut client, backend);
    tokio::pin!(copy);
    loop {
        let quiet = activity.quiet_for();
        if quiet >= idle {
            tracing::debug!(?idle, "tunnel idle; closed");
            return;
        }
        tokio::select! {
            _ = &mut copy => return,
            () = tokio::time::sleep(idle - quiet) => {}
        }
    }
}

/// Open connections per client address, each allowed at most `max` at a time, so one address
/// cannot take every socket the router has.
#[derive(Debug)]
pub struct Limiter {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Limiter {
    /// `max` 0 means no limit.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()) })
    }

    /// A permit for one more connection from `ip`, or `None` when it has `max` open already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        if self.max == 0 {
            return Some(Permit { limiter: None, ip });
        }
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Permit { limiter: Some(self.clone()), ip })
    }
}

/// One admitted connection; its address's count goes down when it is dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Option<Arc<Limiter>>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(limiter) = &self.limiter else { return };
        let mut open = limiter.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How a listener's connections begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The client itself connects.
    Direct,
    /// The front door connects, and starts with a PROXY protocol header naming the client.
    Proxied,
}

/// Why an accepted connection was closed before it was served.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    ProxyHeader(#[from] ProxyHeaderError),
    #[error("{0} has too many connections open")]
    OverLimit(IpAddr),
}

/// An accepted connection that may be served.
#[derive(Debug)]
pub struct Admitted {
    pub stream: Prefixed<TcpStream>,
    pub client: Client,
    pub permit: Permit,
}

/// Reads the PROXY header (behind the front door) and admits the connection under its client's
/// limit.
pub async fn admit(
    mut stream: TcpStream,
    peer: SocketAddr,
    door: Door,
    header_timeout: Duration,
    limiter: &Arc<Limiter>,
) -> Result<Admitted, Refused> {
    let listener_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let (client, prefix) = match door {
        Door::Direct => (Client { addr: peer, port: listener_port }, Vec::new()),
        Door::Proxied => {
            let (header, rest) = proxy_protocol::read_header(&mut stream, header_timeout).await?;
            let client = Client {
                addr: header.source.unwrap_or(peer),
                port: header.destination.map_or(listener_port, |d| d.port()),
            };
            (client, rest)
        }
    };
    let permit = limiter.admit(client.addr.ip()).ok_or(Refused::OverLimit(client.addr.ip()))?;
    Ok(Admitted { stream: Prefixed::new(prefix, stream), client, permit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_limit_is_per_address_and_freed_on_drop() {
        let limiter = Limiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.admit(a).unwrap();
        let _second = limiter.admit(a).unwrap();
        assert!(limiter.admit(a).is_none(), "a third from the same address");
        assert!(limiter.admit(b).is_some(), "another address is not affected");
        drop(first);
        assert!(limiter.admit(a).is_some(), "a slot freed by a closed connection");
        assert!(Limiter::new(0).admit(a).is_some());
    }

    #[tokio::test]
    async fn prefixed_hands_out_its_prefix_first() {
        let (mut near, far) = tokio::io::duplex(64);
        near.write_all(b" world").await.unwrap();
        drop(near);
        let mut s = Prefixed::new(b"hello".to_vec(), far);
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn a_quiet_tunnel_is_closed_and_a_busy_one_is_not() {
        let (client, mut client_far) = tokio::io::duplex(64);
        let (mut backend, mut backend_far) = tokio::io::duplex(64);
        let idle = Duration::from_secs(1);
        let task = tokio::spawn(async move { tunnel(client, &mut backend, idle).await });
        // Traffic for longer than the idle time keeps it open.
        for _ in 0..12 {
            client_far.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            backend_far.read_exact(&mut b).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!task.is_finished(), "a tunnel carrying traffic stays open");
        // Then silence closes it: the client sees the end of its stream.
        let mut rest = Vec::new();
        client_far.read_to_end(&mut rest).await.unwrap();
        task.await.unwrap();
    }
}
