//! git on the builder: the one SSH command allowed, one bare repository per app with our static
//! pre-receive hook, and reading a pushed commit. git is always run with argument vectors; the
//! only names that reach a path are validated [`AppName`]s.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bus_schema::AppName;
use tokio::process::Command;

/// The pre-receive hook written into every repository. It is static: it only hands the push
/// to the builder (`builder hook`), which builds it; a failed build makes the hook fail, so git
/// rejects the push and leaves the branch where it was. The builder sets the variables for the
/// `git receive-pack` it starts; a push that did not come through the builder has none and fails.
pub const PRE_RECEIVE_HOOK: &str = "#!/bin/sh\n\
# Written by the Deis builder: hands this push to the builder, which builds it.\n\
exec \"$DEIS_BUILDER_HOOK_EXE\" hook\n";

/// Why an SSH command was refused, in words for the person pushing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRefused {
    #[error("only `git push` is supported here (git-receive-pack '<app>.git'); `{0}` is not")]
    NotReceivePack(String),
    #[error("'{0}' is not an app: {1}")]
    BadApp(String, String),
}

/// Parses the command an SSH client asks to run. Only `git-receive-pack '<app>.git'` (with or
/// without the leading `/` of an `ssh://` URL, and with or without `.git`) is allowed.
pub fn parse_command(command: &[u8]) -> Result<AppName, CommandRefused> {
    let text = String::from_utf8_lossy(command);
    let shown: String = text.chars().take(80).collect();
    let rest = text
        .strip_prefix("git-receive-pack ")
        .or_else(|| text.strip_prefix("git receive-pack "))
        .ok_or_else(|| CommandRefused::NotReceivePack(shown.clone()))?
        .trim();
    let path = rest
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
        .unwrap_or(rest);
    let path = path.strip_prefix('/').unwrap_or(path);
    let name = path.strip_suffix(".git").unwrap_or(path);
    AppName::parse(name).map_err(|e| CommandRefused::BadApp(name.chars().take(80).collect(), e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("running git {what}: {reason}")]
    Run { what: String, reason: String },
    #[error("preparing the repository {path}: {reason}")]
    Repo { path: String, reason: String },
    #[error("the pushed tree is larger than {0} bytes")]
    TooLarge(u64),
}

/// The app's bare repository, created on its first push. The hook is written every time, so a
/// builder upgrade updates every repository's hook.
pub async fn ensure_repo(git: &str, repos: &Path, app: &AppName) -> Result<PathBuf, GitError> {
    let path = repo_path(repos, app);
    let repo_err =
        |reason: String| GitError::Repo { path: path.display().to_string(), reason: reason.clone() };
    if !path.join("HEAD").exists() {
        tokio::fs::create_dir_all(repos).await.map_err(|e| repo_err(e.to_string()))?;
        // Two first pushes to an app can race here (`git init` of the same path fails half-way
        // for one of them). Each initialises a repository of its own beside the final path and
        // renames it into place: the rename is atomic, the loser's fails on the winner's
        // directory and its copy goes, and no half-made repository is ever seen under the name.
        let fresh = repos.join(format!(".{app}.git.{}", uuid::Uuid::new_v4()));
        let out = Command::new(git)
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&fresh)
            .output()
            .await
            .map_err(|e| repo_err(e.to_string()));
        // When it was made, so a destroy of the app that took the name before is told apart
        // from one of this app (see `destroyed`).
        let marked = match out {
            Ok(out) if out.status.success() => {
                tokio::fs::write(fresh.join(CREATED_FILE), bus_schema::Timestamp::now().0.to_string())
                    .await
                    .map(|()| out)
                    .map_err(|e| repo_err(e.to_string()))
            }
            other => other,
        };
        let placed = match marked {
            Ok(out) if out.status.success() => tokio::fs::rename(&fresh, &path)
                .await
                .map_err(|e| if path.join("HEAD").exists() { None } else { Some(repo_err(e.to_string())) }),
            Ok(out) => Err(Some(repo_err(String::from_utf8_lossy(&out.stderr).trim().to_owned()))),
            Err(e) => Err(Some(e)),
        };
        if placed.is_err() {
            let _ = tokio::fs::remove_dir_all(&fresh).await;
        }
        if let Err(Some(error)) = placed {
            return Err(error);
        }
    }
    let hook = path.join("hooks").join("pre-receive");
    tokio::fs::create_dir_all(path.join("hooks")).await.map_err(|e| repo_err(e.to_string()))?;
    // A name of its own per push: two pushes at once would otherwise rename each other's file.
    let tmp = path.join("hooks").join(format!(".pre-receive.{}", uuid::Uuid::new_v4()));
    tokio::fs::write(&tmp, PRE_RECEIVE_HOOK).await.map_err(|e| repo_err(e.to_string()))?;
    set_mode(&tmp, 0o755).await.map_err(|e| repo_err(e.to_string()))?;
    tokio::fs::rename(&tmp, &hook).await.map_err(|e| repo_err(e.to_string()))?;
    Ok(path)
}

/// The file in a repository that says when the builder made it (Unix time in nanoseconds).
const CREATED_FILE: &str = "deis-created";

/// The file in a repository naming the app (its uuid) the repository belongs to.
const APP_FILE: &str = "deis-app";

/// The app a repository was recorded for, if it says.
pub async fn app_uuid(repo: &Path) -> Option<uuid::Uuid> {
    tokio::fs::read_to_string(repo.join(APP_FILE)).await.ok()?.trim().parse().ok()
}

/// Records the app a repository belongs to (once: a repository already recorded keeps its app).
pub async fn record_app(repo: &Path, uuid: uuid::Uuid) -> Result<(), GitError> {
    if app_uuid(repo).await.is_some() {
        return Ok(());
    }
    tokio::fs::write(repo.join(APP_FILE), uuid.to_string())
        .await
        .map_err(|e| GitError::Repo { path: repo.display().to_string(), reason: e.to_string() })
}

/// Where the app's bare repository is.
pub fn repo_path(repos: &Path, app: &AppName) -> PathBuf {
    repos.join(format!("{app}.git"))
}

/// When the repository was made, if it says (repositories made by older builders do not).
pub async fn created_at(repo: &Path) -> Option<i64> {
    tokio::fs::read_to_string(repo.join(CREATED_FILE)).await.ok()?.trim().parse().ok()
}

async fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await
}

/// Where the objects of a push in progress are: git's quarantine, which a pre-receive hook sees
/// through these variables (the objects are not in the repository until the hook accepts them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quarantine {
    pub object_directory: Option<String>,
    pub alternate_object_directories: Option<String>,
    pub quarantine_path: Option<String>,
}

impl Quarantine {
    /// Whether every directory named is inside the repository (the hook is ours, but the
    /// builder still reads only from the app's own repository).
    pub fn is_inside(&self, repo: &Path) -> bool {
        let inside = |p: &str| {
            Path::new(p).components().all(|c| c != std::path::Component::ParentDir)
                && Path::new(p).starts_with(repo)
        };
        let alternates = self.alternate_object_directories.as_deref().unwrap_or_default();
        self.object_directory.as_deref().is_none_or(inside)
            && self.quarantine_path.as_deref().is_none_or(inside)
            && alternates.split(':').filter(|a| !a.is_empty()).all(inside)
    }

    fn apply(&self, cmd: &mut Command) {
        if let Some(d) = &self.object_directory {
            cmd.env("GIT_OBJECT_DIRECTORY", d);
        }
        if let Some(d) = &self.alternate_object_directories {
            cmd.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", d);
        }
        if let Some(d) = &self.quarantine_path {
            cmd.env("GIT_QUARANTINE_PATH", d);
        }
    }
}

fn git_in(git: &str, repo: &Path) -> Command {
    let mut cmd = Command::new(git);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_DIR", repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", repo)
        .stdin(Stdio::null());
    cmd
}

/// The tree of a pushed commit as a tar archive (`git archive`), read through the quarantine.
pub async fn archive(
    git: &str,
    repo: &Path,
    sha: &str,
    quarantine: &Quarantine,
    max_bytes: u64,
) -> Result<Vec<u8>, GitError> {
    use tokio::io::AsyncReadExt;
    let mut cmd = git_in(git, repo);
    quarantine.apply(&mut cmd);
    cmd.args(["archive", "--format=tar", sha]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let run_err = |reason: String| GitError::Run { what: format!("archive {sha}"), reason };
    let mut child = cmd.spawn().map_err(|e| run_err(e.to_string()))?;
    let mut stdout = child.stdout.take().ok_or_else(|| run_err("no stdout".into()))?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stdout.read(&mut chunk).await.map_err(|e| run_err(e.to_string()))?;
        if n == 0 {
            break;
        }
        if (buf.len() + n) as u64 > max_bytes {
            let _ = child.kill().await;
            return Err(GitError::TooLarge(max_bytes));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let out = child.wait_with_output().await.map_err(|e| run_err(e.to_string()))?;
    if !out.status.success() {
        return Err(run_err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(buf)
}

/// The commit a branch points at now, or `None` when the branch does not exist yet.
pub async fn branch_head(git: &str, repo: &Path, branch: &str) -> Result<Option<String>, GitError> {
    let out = git_in(git, repo)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{branch}^{{commit}}"))
        .output()
        .await
        .map_err(|e| GitError::Run { what: "rev-parse".into(), reason: e.to_string() })?;
    if out.status.success() {
        Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    } else {
        Ok(None)
    }
}

/// The `git receive-pack` for one authorised push. Its environment is cleared and holds only
/// what git and our hook need: the hook finds the builder through the socket and proves which
/// push it belongs to with the token.
pub fn receive_pack(git: &str, repo: &Path, hook_exe: &Path, socket: &Path, token: &str) -> Command {
    let mut cmd = Command::new(git);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LANG", "C.UTF-8")
        .env("DEIS_BUILDER_HOOK_EXE", hook_exe)
        .env("DEIS_BUILDER_SOCKET", socket)
        .env("DEIS_BUILDER_PUSH", token)
        .arg("receive-pack")
        .arg(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Whether a string is a full commit id (40 hex digits, or 64 for SHA-256 repositories).
pub fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn first_pushes_racing_all_get_the_one_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repos = dir.path().join("repos");
        let app = AppName::parse("race").unwrap();
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let (repos, app) = (repos.clone(), app.clone());
                tokio::spawn(async move { ensure_repo("git", &repos, &app).await })
            })
            .collect();
        for t in tries {
            let path = t.await.unwrap().unwrap();
            assert!(path.join("HEAD").exists() && path.join("hooks/pre-receive").exists());
        }
        let names: Vec<String> = std::fs::read_dir(&repos)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["race.git"], "no half-made or left-over copies");
    }

    #[test]
    fn only_receive_pack_of_an_app_is_allowed() {
        for ok in [
            "git-receive-pack '/myapp.git'",
            "git-receive-pack 'myapp.git'",
            "git-receive-pack 'myapp'",
            "git receive-pack '/myapp.git'",
            "git-receive-pack \"myapp.git\"",
        ] {
            assert_eq!(parse_command(ok.as_bytes()).unwrap().as_str(), "myapp", "{ok}");
        }
        assert!(matches!(
            parse_command(b"git-upload-pack 'myapp.git'"),
            Err(CommandRefused::NotReceivePack(_))
        ));
        assert!(matches!(parse_command(b"rm -rf /"), Err(CommandRefused::NotReceivePack(_))));
        for bad in [
            "git-receive-pack '../other.git'",
            "git-receive-pack 'a/b.git'",
            "git-receive-pack 'My App.git'",
            "git-receive-pack 'deis.git'",
            "git-receive-pack ''",
            "git-receive-pack 'x.git'; rm -rf /",
        ] {
            assert!(matches!(parse_command(bad.as_bytes()), Err(CommandRefused::BadApp(..))), "{bad}");
        }
        let _ = parse_command(&[0xff, 0xfe, 0x00]);
    }

    #[test]
    fn quarantine_paths_must_stay_in_the_repository() {
        let repo = Path::new("/data/repos/app.git");
        let q = |o: &str, a: &str| Quarantine {
            object_directory: Some(o.into()),
            alternate_object_directories: Some(a.into()),
            quarantine_path: None,
        };
        assert!(q("/data/repos/app.git/objects/incoming-x", "/data/repos/app.git/objects").is_inside(repo));
        assert!(!q("/data/repos/other.git/objects", "").is_inside(repo));
        assert!(!q("/data/repos/app.git/../other.git/objects", "").is_inside(repo));
        assert!(!q("/data/repos/app.git/objects", "/etc").is_inside(repo));
        assert!(Quarantine::default().is_inside(repo));
    }

    #[test]
    fn shas() {
        assert!(is_sha(&"a".repeat(40)));
        assert!(!is_sha(&"g".repeat(40)));
        assert!(!is_sha("abc"));
    }
}
