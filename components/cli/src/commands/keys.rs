//! SSH keys (keys:*): the public keys `git push` authenticates with.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use controller_api::{Key, KeyCreateRequest};

use crate::context::Ctx;
use crate::parse::validate_segment;
use crate::table::{columns, header};

/// The keys `keys:add` looks for, in order: the types ssh-keygen recommends first.
const DEFAULT_KEYS: [&str; 3] = ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"];

pub async fn list(ctx: &Ctx) -> Result<()> {
    let session = ctx.session()?;
    let keys = session.client.keys().await?;
    ctx.show(&keys, |keys| render_keys(&session.settings.username, keys))
}

fn render_keys(username: &str, keys: &[Key]) -> String {
    let rows: Vec<[String; 2]> = keys.iter().map(|k| [k.id.clone(), abbreviate(&k.public)]).collect();
    header(&format!("{username} Keys")) + &columns(&rows)
}

/// `ssh-ed25519 AAAAC3NzaC...Xy0ZsS0aPj`: the type and the two ends of the key material.
fn abbreviate(public: &str) -> String {
    let mut parts = public.split_whitespace();
    let (kind, data) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let chars: Vec<char> = data.chars().collect();
    if chars.len() <= 30 {
        return format!("{kind} {data}");
    }
    let head: String = chars.iter().take(10).collect();
    let tail: String = chars.iter().skip(chars.len() - 10).collect();
    format!("{kind} {head}...{tail}")
}

/// A public key file's key line and its comment, refusing anything that is not an OpenSSH
/// public key (notably a private key passed by mistake).
fn parse_public_key(text: &str) -> Result<(String, Option<String>)> {
    if text.contains("PRIVATE KEY") {
        bail!("this is a private key: pass the public one (the .pub file)");
    }
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .context("the key file is empty")?;
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let data = parts.next().unwrap_or_default();
    let known = ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"].iter().any(|p| kind.starts_with(p));
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if !known || data.is_empty() || !data.chars().all(base64) {
        bail!("not an OpenSSH public key: expected a line like `ssh-ed25519 AAAA… you@host`");
    }
    let comment = parts.collect::<Vec<_>>().join(" ");
    Ok((line.to_owned(), Some(comment).filter(|c| !c.is_empty())))
}

/// The key's id: the comment when it can name the key in a URL, else the file name without
/// `.pub`.
fn default_id(comment: Option<&str>, path: &Path) -> Option<String> {
    if let Some(comment) = comment.filter(|c| validate_segment("key id", c).is_ok()) {
        return Some(comment.to_owned());
    }
    let name = path.file_name()?.to_str()?;
    Some(name.strip_suffix(".pub").unwrap_or(name).to_owned())
}

/// The key to upload: the given path, else the first default key found in `~/.ssh`.
fn find_key(ctx: &Ctx, path: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = path {
        return Ok(ctx.env.cwd.join(path));
    }
    let home = ctx.env.home.as_deref().context("$HOME is not set: pass the key file's path")?;
    let ssh = home.join(".ssh");
    DEFAULT_KEYS.iter().map(|name| ssh.join(name)).find(|p| p.is_file()).with_context(|| {
        format!(
            "no SSH public key found in {} (looked for {}): create one with `ssh-keygen -t ed25519`, \
             or pass its path",
            ssh.display(),
            DEFAULT_KEYS.join(", ")
        )
    })
}

pub async fn add(ctx: &Ctx, path: Option<PathBuf>, id: Option<String>) -> Result<()> {
    let session = ctx.session()?;
    let path = find_key(ctx, path)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    let (public, comment) = parse_public_key(&text).with_context(|| format!("{}", path.display()))?;
    let id = match id {
        Some(id) => id,
        None => default_id(comment.as_deref(), &path).context("cannot name the key: pass --id")?,
    };
    validate_segment("key id", &id)?;
    let key = session.client.key_add(&KeyCreateRequest { id, public }).await?;
    ctx.note(&format!("Uploading {} to deis... done, as {}", path.display(), key.id))?;
    ctx.json_only(&key)
}

pub async fn remove(ctx: &Ctx, id: &str) -> Result<()> {
    validate_segment("key id", id)?;
    ctx.session()?.client.key_remove(id).await?;
    ctx.note(&format!("Removing {id} SSH Key... done"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";

    #[test]
    fn parses_public_keys() {
        let (line, comment) = parse_public_key(&format!("{ED25519}\n")).unwrap();
        assert_eq!(line, ED25519);
        assert_eq!(comment.as_deref(), Some("alice@laptop"));
        let (_, comment) = parse_public_key("ssh-rsa AAAAB3NzaC1yc2E=").unwrap();
        assert_eq!(comment, None);
        let (_, comment) = parse_public_key("ssh-rsa AAAA Alice Smith key").unwrap();
        assert_eq!(comment.as_deref(), Some("Alice Smith key"));
        for bad in [
            "",
            "\n\n",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc",
            "hello world",
            "ssh-ed25519",
            "ssh-rsa AA$A",
        ] {
            assert!(parse_public_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_ids() {
        let path = Path::new("/home/alice/.ssh/id_ed25519.pub");
        assert_eq!(default_id(Some("alice@laptop"), path).as_deref(), Some("alice@laptop"));
        assert_eq!(default_id(Some("Alice Smith"), path).as_deref(), Some("id_ed25519"));
        assert_eq!(default_id(None, path).as_deref(), Some("id_ed25519"));
    }

    #[test]
    fn abbreviates_keys() {
        assert_eq!(abbreviate(ED25519), "ssh-ed25519 AAAAC3NzaC...0dh2l9GKJl");
        assert_eq!(abbreviate("ssh-rsa AAAA"), "ssh-rsa AAAA");
    }
}
