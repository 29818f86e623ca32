//! syslog:// and syslog+tls:// drains: one long-lived connection carrying octet-counted RFC 5424
//! messages, reopened with backoff whenever it fails.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::format::{frame_into, rfc5424};
use super::{DrainShared, Inner};

/// A write that takes longer than this means the receiver stopped reading: reconnect.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open connection to the receiver. The read half is only watched, to notice promptly when
/// the receiver closes (syslog receivers never send anything).
struct Conn {
    reader: ReadHalf<Box<dyn Io>>,
    writer: WriteHalf<Box<dyn Io>>,
}

impl Conn {
    async fn open(shared: &DrainShared, host: &str, port: u16, tls: bool) -> Result<Conn, String> {
        let timeout = shared.settings.connect_timeout();
        let open = async {
            // Resolved, checked and connected to the checked address: never inside the platform.
            let tcp = shared.outbound.connect(host, port, timeout).await.map_err(|e| e.to_string())?;
            // Lines should leave as they come, not wait for a fuller segment.
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = if tls {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("'{host}' is not a TLS server name: {e}"))?;
                let connector = tokio_rustls::TlsConnector::from(shared.tls.clone());
                Box::new(connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?)
            } else {
                Box::new(tcp)
            };
            let (reader, writer) = tokio::io::split(io);
            Ok(Conn { reader, writer })
        };
        match tokio::time::timeout(timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(format!("no connection within {timeout:?}")),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let write = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("writing: {e}")),
            Err(_) => Err(format!("the receiver took nothing for {WRITE_TIMEOUT:?}")),
        }
    }

    /// Resolves when the receiver closes the connection or it fails.
    async fn closed(&mut self) -> String {
        let mut scratch = [0u8; 512];
        loop {
            match self.reader.read(&mut scratch).await {
                Ok(0) => return "the receiver closed the connection".to_owned(),
                // Whatever a receiver sends is of no use to a syslog sender.
                Ok(_) => continue,
                Err(e) => return format!("connection failed: {e}"),
            }
        }
    }
}

/// What woke the idle loop.
enum Next {
    Batch(Option<Vec<super::Entry>>),
    Closed(String),
}

pub(super) async fn run(inner: &Inner, shared: &DrainShared, host: &str, port: u16, tls: bool) {
    let settings = &shared.settings;
    let mut backoff = settings.backoff();
    let mut conn: Option<Conn> = None;
    loop {
        let next = match conn.as_mut() {
            Some(c) => tokio::select! {
                batch = inner.next_batch(settings.batch_lines(), None) => Next::Batch(batch),
                why = c.closed() => Next::Closed(why),
            },
            None => Next::Batch(inner.next_batch(settings.batch_lines(), None).await),
        };
        let batch = match next {
            Next::Batch(Some(batch)) => batch,
            Next::Batch(None) => return,
            Next::Closed(why) => {
                tracing::info!(reason = %why, "drain connection closed while idle; reconnecting when there are lines");
                conn = None;
                continue;
            }
        };
        let mut bytes = Vec::with_capacity(batch.len() * 128);
        for entry in &batch {
            frame_into(&mut bytes, &rfc5424(&entry.line, &settings.hostname));
        }
        // The same batch goes out until a connection takes it. A write that fails part-way may
        // have reached the receiver, so it may see those lines twice rather than never.
        loop {
            let open = match conn.as_mut() {
                Some(c) => c,
                None => match Conn::open(shared, host, port, tls).await {
                    Ok(c) => {
                        tracing::info!("drain connected");
                        conn.insert(c)
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(%error, retry_in = ?delay, "drain receiver unreachable");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                },
            };
            match open.write(&bytes).await {
                Ok(()) => break,
                Err(error) => {
                    conn = None;
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "drain connection failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        backoff.reset();
        inner.buffer.remove_delivered(batch.len());
    }
}
