//! An app's config: environment variables (config:*), limits (limits:*) and tags (tags:*). All
//! three live in the same config object, and every change to it makes a new release.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use controller_api::{Config, ConfigUpdate};

use super::one_line;
use crate::context::Ctx;
use crate::dotenv;
use crate::parse::{
    parse_cpu, parse_key_value, parse_limit, parse_memory, parse_tag, validate_key, validate_process_type,
    validate_tag_key,
};
use crate::table::{columns, header};

/// Sends a config change and shows the resulting config with `render`.
async fn update(
    ctx: &Ctx,
    progress: &str,
    update: ConfigUpdate,
    render: impl FnOnce(&Config) -> String,
) -> Result<()> {
    let session = ctx.session()?;
    let config = session.client.config_update(&ctx.app()?, &update).await?;
    ctx.note(&format!("{progress}... done\n"))?;
    ctx.show(&config, render)
}

/// A change that sets each `KEY=value` of `pairs` (split and checked by `parse`); a key given
/// twice takes its last value.
fn setting(
    pairs: &[String],
    parse: impl Fn(&str) -> Result<(String, String)>,
) -> Result<BTreeMap<String, Option<String>>> {
    pairs.iter().map(|pair| parse(pair).map(|(key, value)| (key, Some(value)))).collect()
}

/// A change that unsets each of `keys` (checked by `validate`).
fn unsetting(
    keys: &[String],
    validate: impl Fn(&str) -> Result<()>,
) -> Result<BTreeMap<String, Option<String>>> {
    keys.iter().map(|key| validate(key).map(|()| (key.clone(), None))).collect()
}

// --- environment variables ----------------------------------------------------------------------

pub async fn list(ctx: &Ctx, oneline: bool) -> Result<()> {
    let config = ctx.session()?.client.config(&ctx.app()?).await?;
    ctx.show(&config, |c| if oneline { render_oneline(c) } else { render_values(c) })
}

fn render_values(config: &Config) -> String {
    let rows: Vec<[String; 2]> = config.values.iter().map(|(k, v)| [k.clone(), one_line(v)]).collect();
    header(&format!("{} Config", config.app)) + &columns(&rows)
}

/// `KEY=value KEY2='two words'`: quoted as in a .env file, so it can be pasted into a shell.
fn render_oneline(config: &Config) -> String {
    let pairs: Vec<String> = config.values.iter().map(|(k, v)| format!("{k}={}", dotenv::quote(v))).collect();
    pairs.join(" ") + "\n"
}

pub async fn set(ctx: &Ctx, pairs: &[String]) -> Result<()> {
    let values = setting(pairs, parse_key_value)?;
    update(ctx, "Creating config", ConfigUpdate { values, ..Default::default() }, render_values).await
}

pub async fn unset(ctx: &Ctx, keys: &[String]) -> Result<()> {
    let values = unsetting(keys, validate_key)?;
    update(ctx, "Removing config", ConfigUpdate { values, ..Default::default() }, render_values).await
}

pub async fn pull(ctx: &Ctx, output: &Path, overwrite: bool) -> Result<()> {
    let config = ctx.session()?.client.config(&ctx.app()?).await?;
    let path = ctx.env.cwd.join(output);
    let existing = match fs::read_to_string(&path) {
        Ok(text) => dotenv::parse(&text).with_context(|| format!("could not read {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let merged = merge(existing, &config.values, overwrite);
    write_private(&path, &dotenv::render(merged.iter().map(|(k, v)| (k.as_str(), v.as_str()))))?;
    ctx.note(&format!(
        "Wrote {} config vars of {} to {}",
        config.values.len(),
        config.app,
        output.display()
    ))?;
    ctx.json_only(&config.values)
}

/// Merges the app's values into a .env file's entries, Deis v1's way: keys already in the file
/// keep their local value unless `overwrite`; new keys are appended; local-only keys stay.
fn merge(
    existing: Vec<(String, String)>,
    remote: &BTreeMap<String, String>,
    overwrite: bool,
) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(existing.len() + remote.len());
    for (key, value) in existing {
        // A key repeated in the file keeps its last value, as when the file is sourced.
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => merged.push((key, value)),
        }
    }
    for (key, value) in remote {
        match merged.iter_mut().find(|(k, _)| k == key) {
            Some(entry) if overwrite => entry.1 = value.clone(),
            Some(_) => {}
            None => merged.push((key.clone(), value.clone())),
        }
    }
    merged
}

/// Writes a file that holds secrets: a new file is created 0600; an existing one keeps its mode.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not write {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("could not write {}", path.display()))
}

pub async fn push(ctx: &Ctx, path: &Path) -> Result<()> {
    let full = ctx.env.cwd.join(path);
    let text = fs::read_to_string(&full).with_context(|| format!("could not read {}", full.display()))?;
    let entries = dotenv::parse(&text).with_context(|| format!("could not read {}", full.display()))?;
    if entries.is_empty() {
        bail!("{} has no config vars", path.display());
    }
    let values = entries.into_iter().map(|(k, v)| (k, Some(v))).collect();
    update(ctx, "Creating config", ConfigUpdate { values, ..Default::default() }, render_values).await
}

// --- limits -------------------------------------------------------------------------------------

pub async fn limits_list(ctx: &Ctx) -> Result<()> {
    let config = ctx.session()?.client.config(&ctx.app()?).await?;
    ctx.show(&config, render_limits)
}

fn render_limits(config: &Config) -> String {
    fn section<V: ToString>(title: &str, limits: &BTreeMap<String, V>) -> String {
        let mut out = format!("\n--- {title}\n");
        if limits.is_empty() {
            out.push_str("Unlimited\n");
        }
        let rows: Vec<[String; 2]> = limits.iter().map(|(k, v)| [k.clone(), v.to_string()]).collect();
        out + &columns(&rows)
    }
    header(&format!("{} Limits", config.app))
        + &section("Memory", &config.memory)
        + &section("CPU", &config.cpu)
}

pub async fn limits_set(ctx: &Ctx, cpu: bool, pairs: &[String]) -> Result<()> {
    let mut change = ConfigUpdate::default();
    for pair in pairs {
        if cpu {
            let (kind, shares) = parse_limit(pair, parse_cpu)?;
            change.cpu.insert(kind, Some(shares));
        } else {
            let (kind, memory) = parse_limit(pair, parse_memory)?;
            change.memory.insert(kind, Some(memory));
        }
    }
    update(ctx, "Applying limits", change, render_limits).await
}

pub async fn limits_unset(ctx: &Ctx, cpu: bool, types: &[String]) -> Result<()> {
    let mut change = ConfigUpdate::default();
    for kind in types {
        validate_process_type(kind)?;
        if cpu {
            change.cpu.insert(kind.clone(), None);
        } else {
            change.memory.insert(kind.clone(), None);
        }
    }
    update(ctx, "Removing limits", change, render_limits).await
}

// --- tags ---------------------------------------------------------------------------------------

pub async fn tags_list(ctx: &Ctx) -> Result<()> {
    let config = ctx.session()?.client.config(&ctx.app()?).await?;
    ctx.show(&config, render_tags)
}

fn render_tags(config: &Config) -> String {
    let rows: Vec<[String; 2]> = config.tags.iter().map(|(k, v)| [k.clone(), v.clone()]).collect();
    header(&format!("{} Tags", config.app)) + &columns(&rows)
}

pub async fn tags_set(ctx: &Ctx, pairs: &[String]) -> Result<()> {
    let tags = setting(pairs, parse_tag)?;
    update(ctx, "Applying tags", ConfigUpdate { tags, ..Default::default() }, render_tags).await
}

pub async fn tags_unset(ctx: &Ctx, keys: &[String]) -> Result<()> {
    let tags = unsetting(keys, validate_tag_key)?;
    update(ctx, "Removing tags", ConfigUpdate { tags, ..Default::default() }, render_tags).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            uuid: uuid::Uuid::nil(),
            owner: "alice".into(),
            app: "foo".into(),
            values: BTreeMap::from([("A".into(), "1".into()), ("LONG_KEY".into(), "two words".into())]),
            memory: BTreeMap::from([("web".into(), "512M".into())]),
            cpu: BTreeMap::new(),
            tags: BTreeMap::from([("environ".into(), "prod".into())]),
            created: String::new(),
            updated: String::new(),
        }
    }

    #[test]
    fn renders_config_limits_and_tags() {
        assert_eq!(render_values(&config()), "=== foo Config\nA         1\nLONG_KEY  two words\n");
        assert_eq!(render_oneline(&config()), "A=1 LONG_KEY='two words'\n");
        assert_eq!(
            render_limits(&config()),
            "=== foo Limits\n\n--- Memory\nweb  512M\n\n--- CPU\nUnlimited\n"
        );
        assert_eq!(render_tags(&config()), "=== foo Tags\nenviron  prod\n");
    }

    #[test]
    fn pull_merges_like_deis_v1() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let existing = pairs(&[("LOCAL", "l"), ("A", "old"), ("A", "older")]);
        let remote = BTreeMap::from([("A".to_owned(), "new".to_owned()), ("B".to_owned(), "b".to_owned())]);
        assert_eq!(
            merge(existing.clone(), &remote, false),
            pairs(&[("LOCAL", "l"), ("A", "older"), ("B", "b")])
        );
        assert_eq!(merge(existing, &remote, true), pairs(&[("LOCAL", "l"), ("A", "new"), ("B", "b")]));
    }

    #[test]
    fn pulled_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        write_private(&path, "A=1\n").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "A=1\n");
    }
}
