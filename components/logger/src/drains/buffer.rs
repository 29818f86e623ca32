//! A drain's bounded buffer. The pipeline appends lines without ever waiting; the drain's task
//! reads a batch from the front, delivers it, and only then removes it, so a batch that fails
//! is still there to be sent again. When the buffer is full new lines are counted as dropped,
//! and the count becomes one notice line at the place of the gap.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bus_schema::envelope::Timestamp;
use bus_schema::messages::LogLine;
use bus_schema::names::AppName;

use super::DrainStats;

/// One entry of the buffer.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub line: LogLine,
    /// A notice about dropped lines rather than one of the app's lines (not counted as a line).
    pub notice: bool,
}

/// Lines dropped since the buffer was last able to take one.
#[derive(Debug, Clone, Copy)]
struct Gap {
    count: u64,
    since: Timestamp,
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<Entry>,
    /// Entries that are app lines (not notices); what the capacity bounds.
    lines: usize,
    gap: Option<Gap>,
    delivered: u64,
    dropped: u64,
}

#[derive(Debug)]
pub(crate) struct Buffer {
    app: AppName,
    capacity: usize,
    state: Mutex<State>,
}

/// What [`Buffer::push`] did with a line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Dropped, and the first line of a new gap (worth one log event).
    DroppedFirst,
    Dropped,
}

impl Buffer {
    pub fn new(app: AppName, capacity: usize) -> Self {
        // A buffer of zero could never deliver anything.
        Self { app, capacity: capacity.max(1), state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; should it ever, the counters are still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends a line, or counts it as dropped when the buffer is full.
    pub fn push(&self, line: &LogLine) -> Pushed {
        let mut st = self.lock();
        if st.lines >= self.capacity {
            st.dropped += 1;
            return match &mut st.gap {
                Some(gap) => {
                    gap.count += 1;
                    Pushed::Dropped
                }
                None => {
                    st.gap = Some(Gap { count: 1, since: Timestamp::now() });
                    Pushed::DroppedFirst
                }
            };
        }
        self.close_gap(&mut st);
        st.entries.push_back(Entry { line: line.clone(), notice: false });
        st.lines += 1;
        Pushed::Queued
    }

    /// Puts the notice for a pending gap at the end of the buffer, where the gap is.
    fn close_gap(&self, st: &mut State) {
        if let Some(gap) = st.gap.take() {
            st.entries.push_back(Entry { line: self.notice(gap), notice: true });
        }
    }

    fn notice(&self, gap: Gap) -> LogLine {
        // Heroku's wording, which log services already recognise.
        let message = format!(
            "Error L10 (output buffer overflow): {} messages dropped since {}.",
            gap.count,
            gap.since.to_rfc3339()
        );
        crate::logger_notice(&self.app, message)
    }

    /// Copies of the first `max` entries (without removing them); empty when there are none.
    /// A pending gap becomes its notice first when there is room again.
    pub fn peek(&self, max: usize) -> Vec<Entry> {
        let mut st = self.lock();
        if st.gap.is_some() && st.lines < self.capacity {
            self.close_gap(&mut st);
        }
        st.entries.iter().take(max).cloned().collect()
    }

    /// How many entries are waiting, notices included (a pending gap counts as one).
    pub fn len(&self) -> usize {
        let st = self.lock();
        st.entries.len() + usize::from(st.gap.is_some())
    }

    /// Removes the first `n` entries once they have been delivered.
    pub fn remove_delivered(&self, n: usize) {
        let mut st = self.lock();
        let n = n.min(st.entries.len());
        let lines = st.entries.drain(..n).filter(|e| !e.notice).count();
        st.lines -= lines;
        st.delivered += lines as u64;
    }

    /// Lines still buffered (and a pending gap), for the warning when a stopped drain gives up.
    pub fn abandon(&self) -> (usize, u64) {
        let mut st = self.lock();
        let lines = st.lines;
        let gap = st.gap.take().map(|g| g.count).unwrap_or(0);
        st.entries.clear();
        st.lines = 0;
        st.dropped += lines as u64;
        (lines, gap)
    }

    pub fn stats(&self) -> DrainStats {
        let st = self.lock();
        DrainStats { delivered: st.delivered, dropped: st.dropped, buffered: st.lines as u64 }
    }
}

#[cfg(test)]
mod tests {
    use bus_schema::messages::{LogSource, Stream};
    use bus_schema::names::ProcessType;

    use super::*;

    fn line(n: u64) -> LogLine {
        LogLine {
            app: AppName::parse("myapp").unwrap(),
            time: Timestamp(1_000 + i64::try_from(n).unwrap()),
            source: LogSource::App { process_type: ProcessType::parse("web").unwrap(), index: 1 },
            stream: Stream::Stdout,
            node: None,
            seq: n,
            message: format!("line {n}"),
        }
    }

    fn messages(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(|e| e.line.message.clone()).collect()
    }

    #[test]
    fn a_full_buffer_counts_drops_and_the_notice_sits_in_the_gap() {
        let buf = Buffer::new(AppName::parse("myapp").unwrap(), 3);
        let pushed: Vec<Pushed> = (0..6).map(|n| buf.push(&line(n))).collect();
        assert_eq!(
            pushed,
            [
                Pushed::Queued,
                Pushed::Queued,
                Pushed::Queued,
                Pushed::DroppedFirst,
                Pushed::Dropped,
                Pushed::Dropped
            ]
        );
        assert_eq!(buf.stats(), DrainStats { delivered: 0, dropped: 3, buffered: 3 });
        // Still full: no notice yet, the batch is the three lines.
        assert_eq!(messages(&buf.peek(10)), ["line 0", "line 1", "line 2"]);
        buf.remove_delivered(2);
        assert_eq!(buf.stats(), DrainStats { delivered: 2, dropped: 3, buffered: 1 });
        // A new line after the gap: the notice goes before it.
        assert_eq!(buf.push(&line(6)), Pushed::Queued);
        let batch = buf.peek(10);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].line.message, "line 2");
        assert!(batch[1].notice);
        assert_eq!(batch[1].line.source, LogSource::Logger);
        assert!(
            batch[1]
                .line
                .message
                .starts_with("Error L10 (output buffer overflow): 3 messages dropped since "),
            "{}",
            batch[1].line.message
        );
        assert_eq!(batch[2].line.message, "line 6");
        buf.remove_delivered(3);
        assert_eq!(buf.stats(), DrainStats { delivered: 4, dropped: 3, buffered: 0 });
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn a_gap_at_the_end_becomes_a_notice_once_there_is_room() {
        let buf = Buffer::new(AppName::parse("myapp").unwrap(), 2);
        for n in 0..5 {
            buf.push(&line(n));
        }
        assert_eq!(buf.len(), 3);
        assert_eq!(messages(&buf.peek(1)), ["line 0"]);
        buf.remove_delivered(1);
        let batch = buf.peek(10);
        assert_eq!(batch.len(), 2);
        assert!(!batch[0].notice && batch[1].notice);
        assert!(batch[1].line.message.contains(": 3 messages dropped"));
        // Peeking again does not add a second notice.
        assert_eq!(buf.peek(10).len(), 2);
        buf.remove_delivered(2);
        assert!(buf.peek(10).is_empty());
        assert_eq!(buf.stats(), DrainStats { delivered: 2, dropped: 3, buffered: 0 });
    }

    #[test]
    fn abandoning_counts_what_was_left_as_dropped() {
        let buf = Buffer::new(AppName::parse("myapp").unwrap(), 2);
        for n in 0..3 {
            buf.push(&line(n));
        }
        assert_eq!(buf.abandon(), (2, 1));
        assert_eq!(buf.stats(), DrainStats { delivered: 0, dropped: 3, buffered: 0 });
    }
}
