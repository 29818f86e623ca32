//! Git repositories the tier pushes: made from a folder, with extra files, committed on `main`.

use std::path::Path;

use anyhow::{Context as _, bail};

/// A repository at `dest` holding every file of `source` plus `extra` (name, contents), with one
/// commit on `main`.
pub async fn from_dir(source: &Path, dest: &Path, extra: &[(&str, &str)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(source).with_context(|| format!("reading {}", source.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), dest.join(entry.file_name()))?;
        }
    }
    from_files(dest, extra).await
}

/// A repository at `dest` with the given files (on top of what is there), committed on `main`.
pub async fn from_files(dest: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)?;
    for (name, contents) in files {
        std::fs::write(dest.join(name), contents)?;
    }
    if !dest.join(".git").exists() {
        git(dest, &["init", "-q", "-b", "main"]).await?;
    }
    git(dest, &["add", "-A"]).await?;
    git(
        dest,
        &[
            "-c",
            "user.name=security",
            "-c",
            "user.email=security@security.invalid",
            "commit",
            "-qm",
            "the tier's app",
        ],
    )
    .await?;
    Ok(())
}

/// Runs git with arguments (no shell) in a folder.
async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("git").args(args).current_dir(dir).output().await?;
    if !out.status.success() {
        bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
