//! The pre-receive hook and the builder talk over a Unix socket in the builder's data directory.
//! The hook (`builder hook`, run by git inside `git receive-pack`) sends one request line: the
//! push's token, the ref updates git gave it on stdin, and where git quarantined the pushed
//! objects. The builder answers with newline-delimited JSON frames: output text as it happens,
//! then the exit code. The hook prints the text (git shows it to the pusher as `remote:` lines)
//! and exits with the code; non-zero makes git reject the push.
//!
//! The hook is synchronous and small on purpose: it starts once per push, holds no config and
//! no connections of its own, and the builder does the work with the connections it already has.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::git::Quarantine;

/// The largest request line the builder reads.
pub const MAX_REQUEST: usize = 64 * 1024;

/// One ref update, as git gives it to a pre-receive hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

/// What the hook sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRequest {
    /// The token the builder gave this push's `git receive-pack`.
    pub token: String,
    pub updates: Vec<RefUpdate>,
    pub quarantine: Quarantine,
}

/// What the builder sends back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookFrame {
    /// Text for the pusher (whole lines, with their newlines).
    Out(String),
    /// The hook's exit code: 0 accepts the push.
    Exit(i32),
}

impl HookFrame {
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Parses the lines git writes to a pre-receive hook's stdin: `<old> <new> <ref>`.
pub fn parse_updates(text: &str) -> Result<Vec<RefUpdate>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(old), Some(new), Some(name), None) => {
                    Ok(RefUpdate { old: old.to_owned(), new: new.to_owned(), name: name.to_owned() })
                }
                _ => Err(format!("unexpected ref update line from git: {line}")),
            }
        })
        .collect()
}

/// `builder hook`: run by git as the pre-receive hook. Returns the exit code.
pub fn run_hook() -> i32 {
    let mut stdout = std::io::stdout();
    let mut say = |text: &str| {
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    };
    let (Some(socket), Some(token)) =
        (std::env::var_os("DEIS_BUILDER_SOCKET"), std::env::var("DEIS_BUILDER_PUSH").ok())
    else {
        say("!     this repository only takes pushes through the Deis builder\n");
        return 1;
    };
    let mut input = String::new();
    if std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).is_err() {
        say("!     could not read the pushed refs from git\n");
        return 1;
    }
    let updates = match parse_updates(&input) {
        Ok(u) => u,
        Err(e) => {
            say(&format!("!     {e}\n"));
            return 1;
        }
    };
    let var = |name: &str| std::env::var(name).ok();
    let request = HookRequest {
        token,
        updates,
        quarantine: Quarantine {
            object_directory: var("GIT_OBJECT_DIRECTORY"),
            alternate_object_directories: var("GIT_ALTERNATE_OBJECT_DIRECTORIES"),
            quarantine_path: var("GIT_QUARANTINE_PATH"),
        },
    };
    let mut stream = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("!     the builder is not answering ({e}); try again\n"));
            return 1;
        }
    };
    let mut line = serde_json::to_vec(&request).unwrap_or_default();
    line.push(b'\n');
    if stream.write_all(&line).is_err() {
        say("!     the builder closed the connection; try again\n");
        return 1;
    }
    // The write side stays open: the builder takes its closing as "the pusher went away".
    let reader = BufReader::new(stream);
    for frame in reader.lines() {
        let Ok(frame) = frame else { break };
        match serde_json::from_str::<HookFrame>(&frame) {
            Ok(HookFrame::Out(text)) => say(&text),
            Ok(HookFrame::Exit(code)) => return code,
            Err(_) => continue,
        }
    }
    say("!     the builder stopped before the build finished; push again\n");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_updates_parse() {
        let old = "0".repeat(40);
        let new = "a".repeat(40);
        let u = parse_updates(&format!("{old} {new} refs/heads/main\n")).unwrap();
        assert_eq!(u, vec![RefUpdate { old, new, name: "refs/heads/main".into() }]);
        assert!(parse_updates("a b\n").is_err());
        assert!(parse_updates("a b c d\n").is_err());
        assert!(parse_updates("").unwrap().is_empty());
    }

    #[test]
    fn frames_are_lines() {
        let line = HookFrame::Out("hi\n".into()).to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: HookFrame = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, HookFrame::Out("hi\n".into()));
    }
}
