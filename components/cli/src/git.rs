//! The git side of the CLI: finding the app from the `deis` remote of the current repository,
//! and adding or removing that remote.
//!
//! git is always run directly with separate arguments, never through a shell, so an app name or
//! URL can never be interpreted as shell syntax.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

/// The remote name Deis has always used.
pub const DEFAULT_REMOTE: &str = "deis";

/// The port the router forwards to the builder's SSH server.
const GIT_SSH_PORT: u16 = 2222;

/// The app a git remote URL points at: the last path component without `.git`, for both
/// `ssh://git@host:2222/myapp.git` and scp-like `git@host:myapp.git`.
pub fn app_from_remote_url(url: &str) -> Option<String> {
    let url = url.trim();
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1,
        None => url.split_once(':')?.1,
    };
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let app = last.strip_suffix(".git").unwrap_or(last);
    (!app.is_empty()).then(|| app.to_owned())
}

/// The git remote URL of `app` on the platform whose controller is at `controller`: the builder
/// is reached on the controller's host name, port 2222.
pub fn remote_url(controller: &str, app: &str) -> Result<String> {
    let url =
        url::Url::parse(controller).with_context(|| format!("invalid controller URL '{controller}'"))?;
    // host_str keeps the brackets of an IPv6 address, as an ssh:// URL needs.
    let host = url.host_str().with_context(|| format!("controller URL '{controller}' has no host"))?;
    Ok(format!("ssh://git@{host}:{GIT_SSH_PORT}/{app}.git"))
}

/// git, run in a given directory.
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
}

impl Git {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new("git").args(args).current_dir(&self.dir).output()
    }

    /// Whether the directory is inside a git work tree. No git installed counts as "no".
    pub fn is_repo(&self) -> bool {
        self.run(&["rev-parse", "--is-inside-work-tree"])
            .is_ok_and(|out| out.status.success() && out.stdout.starts_with(b"true"))
    }

    /// The URL of remote `name`, if the directory is a repository that has it.
    pub fn remote_url(&self, name: &str) -> Option<String> {
        let out = self.run(&["remote", "get-url", "--", name]).ok()?;
        let url = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !url.trim().is_empty()).then(|| url.trim().to_owned())
    }

    pub fn add_remote(&self, name: &str, url: &str) -> Result<()> {
        self.checked(&["remote", "add", "--", name, url])
    }

    pub fn remove_remote(&self, name: &str) -> Result<()> {
        self.checked(&["remote", "remove", "--", name])
    }

    fn checked(&self, args: &[&str]) -> Result<()> {
        let out = self.run(args).context("could not run git: is it installed?")?;
        if !out.status.success() {
            bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_from_remote_urls() {
        for (url, app) in [
            ("ssh://git@deis.example.com:2222/myapp.git", "myapp"),
            ("ssh://git@deis.example.com:2222/myapp.git\n", "myapp"),
            ("ssh://git@host/myapp", "myapp"),
            ("ssh://git@[::1]:2222/myapp.git", "myapp"),
            ("git@host:myapp.git", "myapp"),
            ("git@host:team/myapp.git", "myapp"),
            ("git@host:myapp", "myapp"),
            ("https://host/path/myapp.git/", "myapp"),
        ] {
            assert_eq!(app_from_remote_url(url).as_deref(), Some(app), "{url}");
        }
        for url in ["", "myapp", "ssh://host", "git@host:", "ssh://git@host:2222/.git"] {
            assert_eq!(app_from_remote_url(url), None, "{url}");
        }
    }

    #[test]
    fn remote_urls_use_the_controller_host() {
        assert_eq!(
            remote_url("http://deis.example.com", "myapp").unwrap(),
            "ssh://git@deis.example.com:2222/myapp.git"
        );
        assert_eq!(remote_url("https://127.0.0.1:8000/", "a").unwrap(), "ssh://git@127.0.0.1:2222/a.git");
        assert_eq!(remote_url("http://[::1]:8000", "a").unwrap(), "ssh://git@[::1]:2222/a.git");
        assert!(remote_url("not a url", "a").is_err());
    }
}
