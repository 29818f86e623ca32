//! The agent's background loops: health checks, log followers, the engine's event stream, the
//! inventory, and keeping routes under the node's current lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{EventsOptions, LogsOptions};
use bus_schema::messages::{ContainerEventKind, ContainerKey, LogLine, LogSource, Stream};
use bus_schema::{AppName, Bus, BusError, NodeId, Subject, Timestamp, labels};
use futures::StreamExt;
use service_kit::Backoff;
use service_kit::etcd::RegistrationState;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::Inner;

/// Longest line shipped; longer ones are cut with a marker so one app cannot flood the bus.
const MAX_LINE: usize = 10 * 1024;

/// Checks one container until it goes: TCP connect to its port (and the HTTP check when the app
/// set one). Healthy web containers get a route; a container failing its checks loses it.
pub async fn health(inner: Arc<Inner>, key: ContainerKey, stop: CancellationToken) {
    let is_web = key.process_type.is_web();
    let (name, app_port, host_port, ip, health) = {
        let tracked = inner.tracked.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = tracked.get(&key) else { return };
        (t.name.clone(), t.port, t.host_port, t.ip.clone(), t.health.clone())
    };
    // Check the app itself, on its own port, where the engine lets us reach it; the published
    // port otherwise.
    let target = match (&ip, host_port) {
        (Some(ip), _) => Some(format!("{ip}:{app_port}")),
        (None, Some(port)) => Some(format!("{}:{port}", inner.config.health_host)),
        (None, None) => None,
    };
    if let Some(h) = &health {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(u64::from(h.initial_delay_ms))) => {}
            _ = stop.cancelled() => return,
        }
    }
    let interval = Duration::from_millis(inner.config.health_interval_ms.max(100));
    let mut failures = 0u32;
    let mut healthy = false;
    loop {
        let ok = if is_web {
            match &target {
                Some(target) => check(&inner, target, health.as_ref()).await,
                None => false,
            }
        } else {
            // Other process types have no port: running is healthy (exits come as events).
            true
        };
        if ok {
            failures = 0;
            if !healthy {
                healthy = true;
                // The route first: whoever learns the container is healthy (an inventory, the
                // scheduler, a `git push` waiting for its deploy) may send traffic at once.
                if let (true, Some(host_port)) = (is_web, host_port) {
                    inner.put_route(&key, &name, host_port).await;
                }
                set_healthy(&inner, &key, true);
                let id = container_id(&inner, &key);
                inner.event(&key, ContainerEventKind::Healthy, &id, None, String::new()).await;
                tracing::info!(container = %name, "healthy");
            }
        } else {
            failures += 1;
            if healthy && failures >= inner.config.health_failures.max(1) {
                healthy = false;
                set_healthy(&inner, &key, false);
                inner.delete_route(&key.app, &name).await;
                let id = container_id(&inner, &key);
                let detail = format!("failed {failures} health checks in a row");
                inner.event(&key, ContainerEventKind::Unhealthy, &id, None, detail).await;
                tracing::warn!(container = %name, failures, "unhealthy; route removed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn set_healthy(inner: &Inner, key: &ContainerKey, healthy: bool) {
    if let Some(t) = inner.tracked.lock().unwrap_or_else(|p| p.into_inner()).get_mut(key) {
        t.healthy = healthy;
    }
}

fn container_id(inner: &Inner, key: &ContainerKey) -> String {
    inner.tracked.lock().unwrap_or_else(|p| p.into_inner()).get(key).map(|t| t.id.clone()).unwrap_or_default()
}

async fn check(inner: &Inner, addr: &str, health: Option<&bus_schema::messages::HealthCheck>) -> bool {
    let connect = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await;
    match connect {
        Ok(Ok(mut stream)) => {
            let _ = stream.shutdown().await;
        }
        _ => return false,
    }
    let Some(h) = health else { return true };
    let url = format!("http://{addr}{}", h.path);
    let timeout = Duration::from_millis(u64::from(h.timeout_ms.max(100)));
    match inner.http.get(&url).timeout(timeout).send().await {
        Ok(resp) => resp.status().is_success() || resp.status().is_redirection(),
        Err(_) => false,
    }
}

/// Follows a container's output and publishes each line on the app's log subject.
pub async fn logs(
    inner: Arc<Inner>,
    key: ContainerKey,
    name: String,
    from_start: bool,
    stop: CancellationToken,
) {
    let since = if from_start {
        0
    } else {
        // An adopted container's old lines were shipped by the previous agent.
        i32::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        )
        .unwrap_or(0)
    };
    let options = LogsOptions { follow: true, stdout: true, stderr: true, since, ..Default::default() };
    let mut output = inner.engine.docker.logs(&name, Some(options));
    let source = LogSource::App { process_type: key.process_type.clone(), index: key.index };
    let mut shipper = Shipper::new(inner.bus.namespace().log_lines(&key.app), &key.app, source, &inner.node);
    let mut lines = Lines::default();
    loop {
        let chunk = tokio::select! {
            c = output.next() => c,
            _ = stop.cancelled() => return,
        };
        let (chunks, end) = match chunk {
            Some(Ok(chunk)) => (lines.push(chunk), false),
            // The output ended (the container exited): ship what was left unterminated.
            _ => (std::mem::take(&mut lines).finish(), true),
        };
        for (stream, message) in chunks {
            if let Err(error) = shipper.ship(&inner.bus, stream, message).await {
                tracing::debug!(%error, "publishing a log line");
            }
        }
        if end {
            return;
        }
    }
}

/// Publishes one container's output lines on one subject, each with the next `seq`, so readers
/// get them in the order the container wrote them.
struct Shipper {
    subject: Subject<LogLine>,
    app: AppName,
    source: LogSource,
    node: NodeId,
    seq: u64,
}

impl Shipper {
    fn new(subject: Subject<LogLine>, app: &AppName, source: LogSource, node: &NodeId) -> Self {
        Self { subject, app: app.clone(), source, node: node.clone(), seq: 0 }
    }

    async fn ship(&mut self, bus: &Bus, stream: Stream, message: String) -> Result<(), BusError> {
        self.seq += 1;
        let line = LogLine {
            app: self.app.clone(),
            time: Timestamp::now(),
            source: self.source.clone(),
            stream,
            node: Some(self.node.clone()),
            seq: self.seq,
            message,
        };
        bus.publish(&self.subject, &bus.envelope(line)).await
    }
}

/// Splits a container's output chunks into lines, per stream. A line longer than `MAX_LINE`
/// with no end in sight is shipped as it is, so one app cannot grow a buffer without bound.
#[derive(Default)]
struct Lines {
    partial: HashMap<bool, Vec<u8>>,
}

impl Lines {
    /// Takes a chunk; returns the complete lines it finished.
    fn push(&mut self, chunk: LogOutput) -> Vec<(Stream, String)> {
        let (stream, bytes) = match chunk {
            LogOutput::StdErr { message } => (Stream::Stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => (Stream::Stdout, message),
            LogOutput::StdIn { .. } => return Vec::new(),
        };
        let buf = self.partial.entry(stream == Stream::Stderr).or_default();
        buf.extend_from_slice(&bytes);
        let mut out = Vec::new();
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push((
                stream,
                cut(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_owned()),
            ));
        }
        if buf.len() > MAX_LINE {
            out.push((stream, cut(String::from_utf8_lossy(&std::mem::take(buf)).into_owned())));
        }
        out
    }

    /// What is left when the output ends: unterminated last lines.
    fn finish(self) -> Vec<(Stream, String)> {
        self.partial
            .into_iter()
            .filter(|(_, rest)| !rest.is_empty())
            .map(|(is_err, rest)| {
                let stream = if is_err { Stream::Stderr } else { Stream::Stdout };
                (stream, cut(String::from_utf8_lossy(&rest).into_owned()))
            })
            .collect()
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_LINE {
        let mut end = MAX_LINE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [line truncated by deis]");
    }
    text
}

/// Follows a one-off container to its end: every output line goes to the run's subject, then
/// its exit status; then the container is removed.
pub async fn one_off(inner: Arc<Inner>, cmd: bus_schema::messages::RunOneOff, name: String) {
    let ns = inner.bus.namespace().clone();
    let options = LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
    let mut output = inner.engine.docker.logs(&name, Some(options));
    let source = LogSource::Run { index: 1 };
    let mut shipper = Shipper::new(ns.run_output(cmd.run_id), &cmd.app, source, &inner.node);
    let mut lines = Lines::default();
    while let Some(Ok(chunk)) = output.next().await {
        for (stream, message) in lines.push(chunk) {
            let _ = shipper.ship(&inner.bus, stream, message).await;
        }
    }
    for (stream, message) in lines.finish() {
        let _ = shipper.ship(&inner.bus, stream, message).await;
    }
    let exit_code = match inner.engine.docker.inspect_container(&name, None).await {
        Ok(info) => info.state.and_then(|s| s.exit_code),
        Err(_) => None,
    };
    let exited = bus_schema::messages::RunExited { run_id: cmd.run_id, exit_code };
    let _ = inner.bus.publish(&ns.run_exited(cmd.run_id), &inner.bus.envelope(exited)).await;
    tracing::info!(container = %name, ?exit_code, "one-off finished");
    let _ = inner.engine.remove(&name).await;
}

/// Follows the engine's events for this node's containers: an exit takes the route away at once
/// and is reported, so the scheduler can restart or replace it.
pub async fn docker_events(inner: Arc<Inner>) {
    let mut backoff = Backoff::default();
    loop {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["die".to_owned()]),
            ("label".to_owned(), vec![format!("{}={}", labels::NODE, inner.node)]),
        ]);
        let mut events =
            inner.engine.docker.events(Some(EventsOptions { filters: Some(filters), ..Default::default() }));
        loop {
            let next = tokio::select! {
                e = events.next() => e,
                _ = inner.shutdown.cancelled() => return,
            };
            match next {
                Some(Ok(event)) => {
                    backoff.reset();
                    let attributes = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                    let Some(key) = labels::container_key(&attributes) else { continue };
                    let name = attributes.get("name").cloned().unwrap_or_default();
                    if !name.starts_with(&inner.engine.prefix) {
                        continue;
                    }
                    let exit_code = attributes.get("exitCode").and_then(|c| c.parse().ok());
                    let tracked = inner.untrack(&key);
                    let Some(tracked) = tracked else { continue };
                    tracked.watchers.cancel();
                    inner.delete_route(&key.app, &name).await;
                    let detail = format!(
                        "exited with code {}",
                        exit_code.map_or("?".to_owned(), |c: i64| c.to_string())
                    );
                    tracing::warn!(container = %name, %detail, "container exited");
                    inner.event(&key, ContainerEventKind::Exited, &tracked.id, exit_code, detail).await;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "engine event stream failed; reconnecting");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}

/// Publishes what this node runs, periodically.
pub async fn inventory(inner: Arc<Inner>) {
    let period = Duration::from_millis(inner.config.inventory_interval_ms.max(200));
    loop {
        match inner.inventory().await {
            Ok(inv) => {
                let subject = inner.bus.namespace().node_inventory(&inner.node);
                if let Err(error) = inner.bus.publish(&subject, &inner.bus.envelope(inv)).await {
                    tracing::debug!(%error, "publishing the inventory");
                }
            }
            Err(error) => tracing::warn!(%error, "listing containers for the inventory"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}

/// When the node's lease is replaced (it was lost in a partition, or etcd lost its data), every
/// healthy web container's route is written again under the new lease.
pub async fn routes_follow_lease(inner: Arc<Inner>) {
    let mut lease = inner.lease.clone();
    loop {
        tokio::select! {
            changed = lease.changed() => if changed.is_err() { return },
            _ = inner.shutdown.cancelled() => return,
        }
        if !matches!(*lease.borrow(), RegistrationState::Registered { .. }) {
            continue;
        }
        let routes: Vec<(ContainerKey, String, u16)> = {
            let tracked = inner.tracked.lock().unwrap_or_else(|p| p.into_inner());
            tracked
                .iter()
                .filter(|(k, t)| k.process_type.is_web() && t.healthy)
                .filter_map(|(k, t)| t.host_port.map(|p| (k.clone(), t.name.clone(), p)))
                .collect()
        };
        for (key, name, port) in routes {
            inner.put_route(&key, &name, port).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> LogOutput {
        LogOutput::StdOut { message: bytes::Bytes::from(s.to_owned()) }
    }

    #[test]
    fn lines_are_split_across_chunks_and_streams() {
        let mut lines = Lines::default();
        assert!(lines.push(out("hel")).is_empty());
        assert_eq!(lines.push(out("lo\r\nwor")), vec![(Stream::Stdout, "hello".to_owned())]);
        let err = LogOutput::StdErr { message: bytes::Bytes::from_static(b"oops\n") };
        assert_eq!(lines.push(err), vec![(Stream::Stderr, "oops".to_owned())]);
        assert_eq!(lines.finish(), vec![(Stream::Stdout, "wor".to_owned())]);
    }

    #[test]
    fn endless_lines_are_cut_not_buffered_forever() {
        let mut lines = Lines::default();
        let long = "x".repeat(MAX_LINE + 10);
        let got = lines.push(out(&long));
        assert_eq!(got.len(), 1);
        assert!(got[0].1.ends_with("[line truncated by deis]"));
        assert!(lines.finish().is_empty());
    }
}
