//! https:// (and http://) drains: batches POSTed as Logplex frames (`application/logplex-1`),
//! so receivers built for Heroku's HTTPS drains take them as they are. Each batch has a frame id
//! that stays the same when the batch is sent again, so a receiver can drop a repeat.

use std::time::Duration;

use super::format::{frame_into, rfc5424};
use super::{DrainShared, Inner};

pub(super) const USER_AGENT: &str = concat!("deis-logger/", env!("CARGO_PKG_VERSION"));
/// One POST, body and answer included.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) const CONTENT_TYPE: &str = "application/logplex-1";
pub(super) const MSG_COUNT: &str = "Logplex-Msg-Count";
pub(super) const FRAME_ID: &str = "Logplex-Frame-Id";
pub(super) const DRAIN_TOKEN: &str = "Logplex-Drain-Token";

pub(super) async fn run(inner: &Inner, shared: &DrainShared, url: &url::Url) {
    let settings = &shared.settings;
    let linger = Duration::from_millis(settings.batch_wait_ms);
    let token = format!("d.{}", inner.id);
    let mut backoff = settings.backoff();
    while let Some(batch) = inner.next_batch(settings.batch_lines(), Some(linger)).await {
        let frame_id = uuid::Uuid::new_v4().simple().to_string();
        let mut body = Vec::with_capacity(batch.len() * 128);
        for entry in &batch {
            frame_into(&mut body, &rfc5424(&entry.line, &settings.hostname));
        }
        let body = bytes::Bytes::from(body);
        loop {
            // The client checks every name it resolves; an address in the URL is checked here.
            if let Err(e) = shared.outbound.check_literal_host(url.host_str().unwrap_or_default()) {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "drain receiver refused");
                tokio::time::sleep(delay).await;
                continue;
            }
            // reqwest moves any user name and password in the URL into an Authorization header
            // and out of the URL, so they appear in no error either.
            let request = shared
                .http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .header(MSG_COUNT, batch.len())
                .header(FRAME_ID, &frame_id)
                .header(DRAIN_TOKEN, &token)
                .body(body.clone());
            let error = match request.send().await {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => format!("the receiver answered {}", response.status()),
                Err(e) => error_chain(&e.without_url()),
            };
            let delay = backoff.next_delay();
            tracing::warn!(%error, frame_id, lines = batch.len(), retry_in = ?delay, "drain batch not taken");
            tokio::time::sleep(delay).await;
        }
        tracing::trace!(frame_id, lines = batch.len(), "drain batch delivered");
        backoff.reset();
        inner.buffer.remove_delivered(batch.len());
    }
}

/// An error with its causes: reqwest's own message ("error sending request") says too little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
