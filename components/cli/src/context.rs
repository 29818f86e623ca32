//! What every command runs with: the environment (home, profile, directory, terminal), the
//! global flags, and the helpers built on them: the logged-in API client, the app to act on,
//! printing and prompting.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use controller_api::Client;
use serde::Serialize;

use crate::git::{self, Git};
use crate::parse::validate_app;
use crate::settings::{self, Settings};

/// The parts of the process environment the CLI depends on, gathered once so that everything
/// else takes them as values (and tests can make their own).
#[derive(Debug, Clone)]
pub struct Env {
    /// `$HOME`; only required by commands that need the saved session.
    pub home: Option<PathBuf>,
    /// `$DEIS_PROFILE`.
    pub profile: Option<String>,
    /// Where git is run to find the app.
    pub cwd: PathBuf,
    /// Whether stdin is a terminal: only then do commands ask questions.
    pub interactive: bool,
}

impl Env {
    pub fn from_process() -> Result<Self> {
        Ok(Self {
            home: std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from),
            profile: std::env::var("DEIS_PROFILE").ok(),
            cwd: std::env::current_dir().context("could not read the current directory")?,
            interactive: std::io::stdin().is_terminal(),
        })
    }
}

/// A logged-in session: the saved settings and a client carrying their token.
#[derive(Debug)]
pub struct Session {
    pub settings: Settings,
    pub client: Client,
}

/// The context of one command.
#[derive(Debug)]
pub struct Ctx {
    pub env: Env,
    /// `--app`.
    pub app: Option<String>,
    /// `--json`.
    pub json: bool,
}

impl Ctx {
    pub fn settings_path(&self) -> Result<PathBuf> {
        let home = self.env.home.as_deref().context("$HOME is not set: cannot find ~/.deis")?;
        settings::path(home, self.env.profile.as_deref())
    }

    /// The saved session, or the "not logged in" error every command but login gives.
    pub fn session(&self) -> Result<Session> {
        let settings = settings::load(&self.settings_path()?)?
            .ok_or_else(|| anyhow!("not logged in: run `deis login <url>`"))?;
        let client = Client::new(&settings.controller, Some(settings.token.clone()));
        Ok(Session { settings, client })
    }

    /// The saved session, then the app to act on: what most commands start with.
    pub fn app_session(&self) -> Result<(Session, String)> {
        let session = self.session()?;
        Ok((session, self.app()?))
    }

    pub fn git(&self) -> Git {
        Git::new(&self.env.cwd)
    }

    /// The app to act on: `--app`, else the one the `deis` git remote points at.
    pub fn app(&self) -> Result<String> {
        let app = match &self.app {
            Some(app) => app.clone(),
            None => self
                .git()
                .remote_url(git::DEFAULT_REMOTE)
                .as_deref()
                .and_then(git::app_from_remote_url)
                .ok_or_else(|| {
                    anyhow!(
                        "no app given: use --app=<app>, or run this inside a git repository with a \
                         `deis` remote (`deis git:remote --app=<app>` adds one)"
                    )
                })?,
        };
        validate_app(&app)?;
        Ok(app)
    }

    /// Prints a result: its JSON with `--json`, else the text `human` makes of it.
    pub fn show<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
        if self.json {
            out(&format!("{}\n", serde_json::to_string_pretty(value)?))
        } else {
            out(&human(value))
        }
    }

    /// Prints a result's JSON with `--json`; nothing otherwise (for commands whose text output
    /// is their progress lines).
    pub fn json_only<T: Serialize>(&self, value: &T) -> Result<()> {
        self.show(value, |_| String::new())
    }

    /// Prints a progress or confirmation line. It goes to stderr with `--json`, so stdout stays
    /// pure JSON for scripts.
    pub fn note(&self, line: &str) -> Result<()> {
        if self.json {
            err(&format!("{line}\n"));
            Ok(())
        } else {
            out(&format!("{line}\n"))
        }
    }

    /// A flag's value, else asked on the terminal; without a terminal, a clear error naming the
    /// flag (scripts must never hang on a prompt).
    pub fn value_or_ask(
        &self,
        value: Option<String>,
        flag: &str,
        ask: impl FnOnce() -> Result<String>,
    ) -> Result<String> {
        match value {
            Some(value) => Ok(value),
            None if self.env.interactive => ask(),
            None => bail!("missing --{flag} (stdin is not a terminal, so it cannot be asked for)"),
        }
    }
}

/// Writes to stdout. A closed pipe (`deis apps | head -1`) is not an error worth reporting.
pub fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes to stderr, ignoring failures: there is nowhere left to report them.
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes()).and_then(|()| stderr.flush());
}

/// Asks for one line on the terminal (the question goes to stderr).
pub fn ask(question: &str) -> Result<String> {
    err(question);
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("no answer: stdin was closed");
    }
    Ok(line.trim().to_owned())
}

/// Asks for a password on the terminal without echoing it.
pub fn ask_password(question: &str) -> Result<String> {
    rpassword::prompt_password(question).context("could not read the password")
}
