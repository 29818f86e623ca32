//! The client's saved session: `~/.deis/client.json` (or `~/.deis/<profile>.json` when
//! `$DEIS_PROFILE` is set), holding the controller URL, the username and the API token.
//!
//! The token is a credential, so the file is written private (0600) inside a private directory
//! (0700), atomically (a temporary file renamed over the old one) so a crash never leaves half a
//! file. Every function takes the home directory explicitly, so tests never touch the real one.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// The profile used when `$DEIS_PROFILE` is not set (Deis v1's file name).
pub const DEFAULT_PROFILE: &str = "client";

/// What `login` saves and every other command reads.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub controller: String,
    pub username: String,
    pub token: String,
}

// Written by hand so the token never lands in a log or an error message.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("controller", &self.controller)
            .field("username", &self.username)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Where the settings of `profile` live under `home`. The profile becomes a file name, so it
/// must be a plain name (no `/`, no leading `.`).
pub fn path(home: &Path, profile: Option<&str>) -> Result<PathBuf> {
    let profile = profile.filter(|p| !p.is_empty()).unwrap_or(DEFAULT_PROFILE);
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if profile.starts_with('.') || !profile.chars().all(ok) {
        bail!("invalid DEIS_PROFILE '{profile}': use letters, digits, '_', '-' and '.'");
    }
    Ok(home.join(".deis").join(format!("{profile}.json")))
}

/// Reads the settings at `path`; `None` when there are none (never logged in, or logged out).
pub fn load(path: &Path) -> Result<Option<Settings>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let settings: Settings = serde_json::from_str(&text).with_context(|| {
        format!("{} is not valid: delete it and run `deis login <url>` again", path.display())
    })?;
    Ok(Some(settings).filter(|s| !s.token.is_empty()))
}

/// Writes the settings to `path` with mode 0600, creating its directory with mode 0700.
pub fn save(path: &Path, settings: &Settings) -> Result<()> {
    let dir = path.parent().context("the settings path has no directory")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("could not create {}", dir.display()))?;
    // NamedTempFile is created 0600 in the same directory, so the rename is atomic and the token
    // is never readable by others, not even for a moment.
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("could not write in {}", dir.display()))?;
    let json = serde_json::to_string_pretty(settings)?;
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")?;
    file.as_file().set_permissions(fs::Permissions::from_mode(0o600))?;
    file.as_file().sync_all()?;
    file.persist(path).with_context(|| format!("could not write {}", path.display()))?;
    Ok(())
}

/// Deletes the settings at `path`; whether there were any.
pub fn remove(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("could not delete {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Settings {
        Settings {
            controller: "http://deis.example.com".into(),
            username: "alice".into(),
            token: "s3cr3t".into(),
        }
    }

    #[test]
    fn paths_follow_the_profile() {
        let home = Path::new("/home/alice");
        assert_eq!(path(home, None).unwrap(), Path::new("/home/alice/.deis/client.json"));
        assert_eq!(path(home, Some("")).unwrap(), Path::new("/home/alice/.deis/client.json"));
        assert_eq!(path(home, Some("staging")).unwrap(), Path::new("/home/alice/.deis/staging.json"));
        for bad in ["../x", "a/b", ".hidden", "sp ace"] {
            assert!(path(home, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_read_with_private_permissions() {
        let home = tempfile::tempdir().unwrap();
        let p = path(home.path(), None).unwrap();
        assert_eq!(load(&p).unwrap(), None);

        save(&p, &sample()).unwrap();
        assert_eq!(load(&p).unwrap(), Some(sample()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);

        // The file is the documented shape, readable by other tools.
        let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"controller": "http://deis.example.com", "username": "alice", "token": "s3cr3t"})
        );

        // Overwriting keeps 0600, even over a file someone loosened.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let other = Settings { username: "bob".into(), ..sample() };
        save(&p, &other).unwrap();
        assert_eq!(load(&p).unwrap(), Some(other));
        assert_eq!(mode(&p), 0o600);

        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
        assert_eq!(load(&p).unwrap(), None);
    }

    #[test]
    fn corrupt_or_tokenless_files() {
        let home = tempfile::tempdir().unwrap();
        let p = path(home.path(), Some("x")).unwrap();
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "not json").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("is not valid"));
        fs::write(&p, r#"{"controller":"http://c","username":"a","token":""}"#).unwrap();
        assert_eq!(load(&p).unwrap(), None);
    }

    #[test]
    fn debug_hides_the_token() {
        assert!(!format!("{:?}", sample()).contains("s3cr3t"));
    }
}
