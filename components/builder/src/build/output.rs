//! Where a build's lines go, as they happen: to the pusher (the hook prints them as `remote:`
//! lines), to the build's own log subject, and into the app's log stream (`deis logs`).

use std::sync::atomic::{AtomicU64, Ordering};

use bus_schema::messages::{BuildLogLine, LogLine, LogSource, Stream};
use bus_schema::{AppName, Bus, Timestamp};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::hook::HookFrame;

/// The longest line passed on; longer ones are cut (a minified file printed by a build step
/// must not flood the bus).
const MAX_LINE: usize = 4096;

/// A build's output.
#[derive(Debug)]
pub struct Output {
    app: AppName,
    build_id: Uuid,
    bus: Bus,
    seq: AtomicU64,
    to_pusher: mpsc::UnboundedSender<HookFrame>,
}

impl Output {
    pub fn new(app: AppName, build_id: Uuid, bus: Bus, to_pusher: mpsc::UnboundedSender<HookFrame>) -> Self {
        Self { app, build_id, bus, seq: AtomicU64::new(0), to_pusher }
    }

    /// A line of the builder's own (`-----> Building…`).
    pub async fn say(&self, text: &str) {
        for line in text.lines() {
            self.line(Stream::Stdout, line).await;
        }
    }

    /// A line the build printed.
    pub async fn line(&self, stream: Stream, line: &str) {
        let line = clean(line);
        // The pusher may have gone; the build still finishes and is announced.
        let _ = self.to_pusher.send(HookFrame::Out(format!("{line}\n")));
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let ns = self.bus.namespace();
        let build_line =
            BuildLogLine { app: self.app.clone(), build_id: self.build_id, seq, stream, line: line.clone() };
        if let Err(error) =
            self.bus.publish(&ns.build_log(&self.app, self.build_id), &self.bus.envelope(build_line)).await
        {
            tracing::debug!(%error, "build line not published");
        }
        let log_line = LogLine {
            app: self.app.clone(),
            time: Timestamp::now(),
            source: LogSource::Builder,
            stream,
            node: None,
            seq,
            message: line,
        };
        if let Err(error) = self.bus.publish(&ns.log_lines(&self.app), &self.bus.envelope(log_line)).await {
            tracing::debug!(%error, "log line not published");
        }
    }
}

/// One printable line: what a terminal would show last after carriage returns (progress bars),
/// no trailing white space, at most [`MAX_LINE`] characters.
fn clean(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    let line = line.rsplit('\r').find(|s| !s.trim().is_empty()).unwrap_or("");
    let line = line.trim_end();
    if line.len() > MAX_LINE {
        let mut end = MAX_LINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &line[..end])
    } else {
        line.to_owned()
    }
}

/// Cuts a byte stream (a container's output) into lines; a partial line waits for its end.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines in `chunk` (and before it).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        // A line without an end that grows without bound is passed on in pieces.
        if self.partial.len() > MAX_LINE * 4 {
            lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
        }
        lines
    }

    /// What is left when the stream ends.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_newlines_across_chunks() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"ab"), Vec::<String>::new());
        assert_eq!(s.push(b"c\nd\ne"), vec!["abc".to_owned(), "d".to_owned()]);
        assert_eq!(s.finish(), Some("e".to_owned()));
        assert_eq!(s.finish(), None);
        assert_eq!(s.push(&[0xff, b'\n']).len(), 1);
    }

    #[test]
    fn progress_bars_show_their_last_state() {
        assert_eq!(clean("10%\r50%\r100%\r\n"), "100%");
        assert_eq!(clean("  indented  "), "  indented");
        assert!(clean(&"é".repeat(5000)).chars().count() <= MAX_LINE / 2 + 1);
    }
}
