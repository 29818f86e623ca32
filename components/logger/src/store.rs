//! Per-app history on disk: a folder per app holding numbered, append-only segment files of JSON
//! lines. One writer per app (the app's pipeline task) appends whole batches and starts a new
//! segment past a size; retention drops the oldest segments by total size and by age. Readers
//! read the files directly, newest segment first, so a query never waits for the writer. A line
//! torn by a crash is cut off when the app's log is opened again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bus_schema::Timestamp;
use bus_schema::messages::{LogLine, LogQuery, LogSource, Stream};
use bus_schema::names::{AppName, NodeId};
use serde::{Deserialize, Serialize};

use crate::config::Retention;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// A line as stored: the app is the folder, so it is not repeated.
#[derive(Serialize)]
struct Out<'a> {
    t: i64,
    src: &'a LogSource,
    st: Stream,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a NodeId>,
    seq: u64,
    msg: &'a str,
}

#[derive(Deserialize)]
struct In {
    t: i64,
    src: LogSource,
    st: Stream,
    #[serde(default)]
    node: Option<NodeId>,
    seq: u64,
    msg: String,
}

impl In {
    fn into_line(self, app: &AppName) -> LogLine {
        LogLine {
            app: app.clone(),
            time: Timestamp(self.t),
            source: self.src,
            stream: self.st,
            node: self.node,
            seq: self.seq,
            message: self.msg,
        }
    }
}

/// The folder holding an app's segments.
pub fn app_dir(root: &Path, app: &AppName) -> PathBuf {
    // App names are validated DNS labels, so they are safe as one path component.
    root.join("apps").join(app.as_str())
}

/// The apps that have history under `root`.
pub fn apps(root: &Path) -> Vec<AppName> {
    let Ok(entries) = fs::read_dir(root.join("apps")) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| AppName::parse(e.file_name().to_string_lossy().into_owned()).ok())
        .collect()
}

/// An app's segments, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut segments: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let number = name.strip_suffix(".log")?.parse::<u64>().ok()?;
            Some((number, e.path()))
        })
        .collect();
    segments.sort_unstable_by_key(|(n, _)| *n);
    Ok(segments)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.log"))
}

struct Segment {
    number: u64,
    path: PathBuf,
    file: File,
    size: u64,
}

/// The writer of one app's history.
pub struct AppLog {
    dir: PathBuf,
    retention: Retention,
    current: Option<Segment>,
    next_retention: Instant,
    encoded: Vec<u8>,
}

impl std::fmt::Debug for AppLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLog").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl AppLog {
    /// Opens an app's history for appending, creating it if new and cutting off a line torn by
    /// a crash at the end of the newest segment.
    pub fn open(root: &Path, app: &AppName, retention: Retention) -> Result<Self, StoreError> {
        let dir = app_dir(root, app);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let current = match segments(&dir)?.pop() {
            Some((number, path)) => {
                let mut file =
                    OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
                let size = repair_tail(&mut file).map_err(io_err(&path))?;
                Some(Segment { number, path, file, size })
            }
            None => None,
        };
        Ok(Self { dir, retention, current, next_retention: Instant::now(), encoded: Vec::new() })
    }

    /// Appends lines in the order given, with one write, and applies retention now and then.
    pub fn append(&mut self, lines: &[LogLine]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.encoded.clear();
        for line in lines {
            let out = Out {
                t: line.time.0,
                src: &line.source,
                st: line.stream,
                node: line.node.as_ref(),
                seq: line.seq,
                msg: &line.message,
            };
            // A struct of plain fields always serializes.
            if serde_json::to_writer(&mut self.encoded, &out).is_ok() {
                self.encoded.push(b'\n');
            }
        }
        let needs_new = self.current.as_ref().is_none_or(|s| s.size >= self.retention.segment_bytes);
        if needs_new {
            let number = self.current.as_ref().map_or(1, |s| s.number + 1);
            let path = segment_path(&self.dir, number);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
            self.current = Some(Segment { number, path, file, size: 0 });
        }
        if let Some(segment) = self.current.as_mut() {
            segment.file.write_all(&self.encoded).map_err(io_err(&segment.path))?;
            segment.size += self.encoded.len() as u64;
        }
        if Instant::now() >= self.next_retention {
            self.next_retention = Instant::now() + Duration::from_secs(10);
            self.enforce_retention()?;
        }
        Ok(())
    }

    /// Removes the oldest segments beyond the size budget and those older than the age limit.
    /// Returns how many went.
    pub fn enforce_retention(&mut self) -> Result<usize, StoreError> {
        let max_age = Duration::from_secs(self.retention.max_age_hours.saturating_mul(3600));
        let now = SystemTime::now();
        let segments = segments(&self.dir)?;
        let mut sized: Vec<(u64, PathBuf, u64, SystemTime)> = segments
            .into_iter()
            .filter_map(|(n, p)| {
                let meta = fs::metadata(&p).ok()?;
                Some((n, p, meta.len(), meta.modified().unwrap_or(now)))
            })
            .collect();
        let mut total: u64 = sized.iter().map(|s| s.2).sum();
        let mut removed = 0;
        let current = self.current.as_ref().map(|s| s.number);
        sized.sort_unstable_by_key(|s| s.0);
        for (number, path, len, modified) in sized {
            let too_old = now.duration_since(modified).is_ok_and(|age| age > max_age);
            let too_big = total > self.retention.max_bytes_per_app && Some(number) != current;
            if !too_old && !too_big {
                continue;
            }
            if Some(number) == current {
                // The newest segment itself is past the age limit: the app has been silent.
                self.current = None;
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            total = total.saturating_sub(len);
            removed += 1;
        }
        Ok(removed)
    }
}

/// Cuts a file back to its last complete line; returns the resulting size.
fn repair_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Look back in blocks for the last newline.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(pos) = block[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + pos as u64 + 1;
            if keep != len {
                tracing::warn!(cut = len - keep, "cutting a torn line off the end of a log segment");
                file.set_len(keep)?;
            }
            file.seek(SeekFrom::End(0))?;
            return Ok(keep);
        }
        if start == 0 {
            file.set_len(0)?;
            return Ok(0);
        }
        end = start;
    }
}

/// What a history read found.
#[derive(Debug, Default)]
pub struct History {
    /// Oldest first.
    pub lines: Vec<LogLine>,
    /// Stored lines that could not be parsed (damage), skipped.
    pub damaged: usize,
    /// The answer stopped early to stay under the byte budget.
    pub truncated: bool,
}

/// Reads the newest lines of an app that pass the query's filters, up to `query.lines` (capped
/// at [`LogQuery::MAX_LINES`]) and about `max_bytes` of messages, oldest first.
pub fn read(root: &Path, app: &AppName, query: &LogQuery, max_bytes: usize) -> Result<History, StoreError> {
    let want = query.lines.min(LogQuery::MAX_LINES) as usize;
    let dir = app_dir(root, app);
    let mut newest_first: Vec<LogLine> = Vec::new();
    let mut history = History::default();
    let mut bytes = 0usize;
    if want == 0 {
        return Ok(history);
    }
    'segments: for (_, path) in segments(&dir)?.into_iter().rev() {
        let text = match fs::read(&path) {
            Ok(text) => text,
            // Retention removed it while we were reading: older history is gone anyway.
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut oldest_in_segment = None;
        for raw in text.split(|&b| b == b'\n').rev() {
            if raw.is_empty() {
                continue;
            }
            let Ok(stored) = serde_json::from_slice::<In>(raw) else {
                history.damaged += 1;
                continue;
            };
            oldest_in_segment = Some(stored.t);
            let line = stored.into_line(app);
            if !query.matches(&line) {
                continue;
            }
            bytes += line.message.len() + 64;
            if bytes > max_bytes {
                history.truncated = true;
                break 'segments;
            }
            newest_first.push(line);
            if newest_first.len() >= want {
                break 'segments;
            }
        }
        // Segments are in arrival order: once one starts before `since`, older ones hold
        // nothing newer.
        if let (Some(since), Some(oldest)) = (query.since, oldest_in_segment)
            && oldest < since.0
        {
            break;
        }
    }
    newest_first.reverse();
    history.lines = newest_first;
    Ok(history)
}

/// Deletes an app's whole history (the app was destroyed).
pub fn remove_app(root: &Path, app: &AppName) -> Result<(), StoreError> {
    let dir = app_dir(root, app);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::names::ProcessType;

    fn app() -> AppName {
        AppName::parse("shop").unwrap()
    }

    fn line(n: u64, process: &str, index: u32) -> LogLine {
        LogLine {
            app: app(),
            time: Timestamp(1_000_000_000 * n as i64),
            source: LogSource::App { process_type: ProcessType::parse(process).unwrap(), index },
            stream: Stream::Stdout,
            node: None,
            seq: n,
            message: format!("line {n}"),
        }
    }

    fn query(lines: u32) -> LogQuery {
        LogQuery { app: app(), lines, since: None, process: None, contains: None }
    }

    fn retention() -> Retention {
        Retention { segment_bytes: 1024, max_bytes_per_app: 1 << 30, max_age_hours: 24 }
    }

    #[test]
    fn lines_come_back_in_order_across_segments_and_reopens() {
        let root = tempfile::tempdir().unwrap();
        let mut log = AppLog::open(root.path(), &app(), retention()).unwrap();
        for n in 0..100 {
            log.append(&[line(n, "web", 1)]).unwrap();
        }
        drop(log);
        let mut log = AppLog::open(root.path(), &app(), retention()).unwrap();
        log.append(&[line(100, "web", 1), line(101, "web", 1)]).unwrap();
        assert!(segments(&app_dir(root.path(), &app())).unwrap().len() > 3, "small segments rotate");
        let all = read(root.path(), &app(), &query(1000), usize::MAX).unwrap();
        let seqs: Vec<u64> = all.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (0..102).collect::<Vec<_>>());
        let last = read(root.path(), &app(), &query(5), usize::MAX).unwrap();
        assert_eq!(last.lines.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![97, 98, 99, 100, 101]);
    }

    #[test]
    fn filters_by_process_text_and_time() {
        let root = tempfile::tempdir().unwrap();
        let mut log = AppLog::open(root.path(), &app(), retention()).unwrap();
        let lines: Vec<LogLine> =
            (0..40).map(|n| line(n, if n % 2 == 0 { "web" } else { "worker" }, 1)).collect();
        log.append(&lines).unwrap();
        let web =
            read(root.path(), &app(), &LogQuery { process: Some("web".into()), ..query(100) }, usize::MAX)
                .unwrap();
        assert_eq!(web.lines.len(), 20);
        assert!(web.lines.iter().all(|l| l.seq % 2 == 0));
        let tagged =
            read(root.path(), &app(), &LogQuery { process: Some("worker.1".into()), ..query(3) }, usize::MAX)
                .unwrap();
        assert_eq!(tagged.lines.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![35, 37, 39]);
        let text = read(
            root.path(),
            &app(),
            &LogQuery { contains: Some("line 3".into()), ..query(100) },
            usize::MAX,
        )
        .unwrap();
        assert_eq!(text.lines.len(), 11, "line 3 and line 30..39");
        let since = read(
            root.path(),
            &app(),
            &LogQuery { since: Some(Timestamp(35_000_000_000)), ..query(100) },
            usize::MAX,
        )
        .unwrap();
        assert_eq!(since.lines.first().map(|l| l.seq), Some(35));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_damage_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        let mut log = AppLog::open(root.path(), &app(), retention()).unwrap();
        log.append(&[line(1, "web", 1), line(2, "web", 1)]).unwrap();
        drop(log);
        let path = segment_path(&app_dir(root.path(), &app()), 1);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"t\":3,\"src\":").unwrap();
        drop(f);
        let mut log = AppLog::open(root.path(), &app(), retention()).unwrap();
        log.append(&[line(3, "web", 1)]).unwrap();
        let got = read(root.path(), &app(), &query(10), usize::MAX).unwrap();
        assert_eq!(got.lines.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(got.damaged, 0);
    }

    #[test]
    fn retention_keeps_the_newest_within_the_budget() {
        let root = tempfile::tempdir().unwrap();
        let r = Retention { segment_bytes: 1024, max_bytes_per_app: 4096, max_age_hours: 24 };
        let mut log = AppLog::open(root.path(), &app(), r).unwrap();
        for n in 0..400 {
            log.append(&[line(n, "web", 1)]).unwrap();
        }
        log.enforce_retention().unwrap();
        let dir = app_dir(root.path(), &app());
        let total: u64 = segments(&dir).unwrap().iter().map(|(_, p)| fs::metadata(p).unwrap().len()).sum();
        assert!(total <= 4096 + 1024, "{total} bytes kept");
        let got = read(root.path(), &app(), &query(10_000), usize::MAX).unwrap();
        assert_eq!(got.lines.last().map(|l| l.seq), Some(399), "the newest line is kept");
        assert!(got.lines.len() < 400);
    }

    #[test]
    fn the_byte_budget_truncates_from_the_oldest_side() {
        let root = tempfile::tempdir().unwrap();
        let mut log = AppLog::open(root.path(), &app(), retention()).unwrap();
        log.append(&(0..50).map(|n| line(n, "web", 1)).collect::<Vec<_>>()).unwrap();
        let got = read(root.path(), &app(), &query(50), 10 * 70).unwrap();
        assert!(got.truncated);
        assert_eq!(got.lines.last().map(|l| l.seq), Some(49));
        assert!(got.lines.len() < 50);
    }

    #[test]
    fn removing_an_app_removes_its_history() {
        let root = tempfile::tempdir().unwrap();
        let mut log = AppLog::open(root.path(), &app(), retention()).unwrap();
        log.append(&[line(1, "web", 1)]).unwrap();
        assert_eq!(apps(root.path()), vec![app()]);
        remove_app(root.path(), &app()).unwrap();
        assert!(apps(root.path()).is_empty());
        assert!(read(root.path(), &app(), &query(10), usize::MAX).unwrap().lines.is_empty());
    }
}
