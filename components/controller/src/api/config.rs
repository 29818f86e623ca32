//! `/v1/apps/{app}/config/`: environment, limits and tags. Every change makes a release.

use std::sync::Arc;

use controller_api::{Config, ConfigUpdate};
use warp::http::StatusCode;

use super::error::ApiError;
use super::settle::{self, Settle};
use super::{Answer, json, ts};
use crate::config::Quotas;
use crate::ctx::{Access, AppRow, AuthUser, Ctx, app_for};
use crate::model::releases::{self, ConfigData};
use crate::model::validate;

async fn config_view<C: deadpool_postgres::GenericClient>(
    client: &C,
    app: &AppRow,
) -> Result<Config, ApiError> {
    let release = releases::latest(client, app.id)
        .await?
        .ok_or_else(|| ApiError::Internal("app has no release".into()))?;
    let row = client
        .query_one(
            r#"SELECT uuid, owner, "values", memory, cpu, tags, created FROM configs WHERE uuid = $1"#,
            &[&release.config],
        )
        .await?;
    let data = releases::load_config(client, release.config).await?;
    let created = ts(row.try_get("created")?);
    Ok(Config {
        uuid: row.try_get("uuid")?,
        owner: row.try_get("owner")?,
        app: app.name.clone(),
        values: data.values,
        memory: data.memory,
        cpu: data.cpu,
        tags: data.tags,
        created: created.clone(),
        updated: created,
    })
}

/// The app's current config.
#[utoipa::path(get, path = "/v1/apps/{app}/config/", tag = "config", params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "Config", body = Config)))]
pub async fn get(ctx: Arc<Ctx>, app: String, user: AuthUser) -> Answer {
    let (client, app) = ctx.app_to_read(&user, &app).await?;
    Ok(json(StatusCode::OK, &config_view(&client, &app).await?))
}

/// Set or unset config values, limits or tags (`null` unsets). Makes a new release.
#[utoipa::path(post, path = "/v1/apps/{app}/config/", tag = "config", request_body = ConfigUpdate,
    params(("app" = String, Path, description = "App name")),
    responses((status = 201, description = "New config, in a new release", body = Config),
        (status = 200, description = "Nothing to change: the config as it is, no release made", body = Config)))]
pub async fn update(ctx: Arc<Ctx>, app: String, user: AuthUser, update: ConfigUpdate) -> Answer {
    check(&update, &ctx.config.quotas)?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    // The row lock orders concurrent changes to one app: each sees the one before it.
    let app = app_for(&tx, &user, &app, Access::Use, true).await?;
    let current = releases::latest(&tx, app.id)
        .await?
        .ok_or_else(|| ApiError::Internal("app has no release".into()))?;
    let before = releases::load_config(&tx, current.config).await?;
    let (after, summary) = apply(&before, &update, &user.username);
    if after == before {
        // Nothing to change (say, unsetting a limit that is not set): the request is done
        // already. No release is made, so nothing restarts; scripts that set or unset
        // idempotently (Deis v1 made a release here) succeed.
        let view = config_view(&tx, &app).await?;
        return Ok(json(StatusCode::OK, &view));
    }
    check_total(&before, &after, &ctx.config.quotas)?;
    let config = releases::insert_config(&tx, app.id, &user.username, &after).await?;
    let release = releases::create(&ctx, &tx, &app, &user.username, current.build, config, summary).await?;
    let view = config_view(&tx, &app).await?;
    tx.commit().await?;
    ctx.relay_wake.notify_one();
    let resp = json(StatusCode::CREATED, &view);
    // A release with a build runs; one without (config before the first push) has nothing to wait for.
    Ok(match (release.build, u32::try_from(release.version)) {
        (Some(_), Ok(version)) => settle::mark(resp, Settle::Release { app: app.name.clone(), version }),
        _ => resp,
    })
}

fn check(update: &ConfigUpdate, quotas: &Quotas) -> Result<(), ApiError> {
    for (key, value) in &update.values {
        validate::config_key(key)?;
        if let Some(v) = value {
            validate::config_value(key, v, quotas.config_value_bytes)?;
        }
    }
    for (ptype, value) in &update.memory {
        validate::process_type(ptype)?;
        if let Some(v) = value {
            validate::memory_limit(ptype, v)?;
        }
    }
    for (ptype, value) in &update.cpu {
        validate::process_type(ptype)?;
        if let Some(v) = value {
            validate::cpu_shares(ptype, *v)?;
        }
    }
    for (key, value) in &update.tags {
        validate::tag(key, value.as_deref().unwrap_or("x"))?;
    }
    if update.values.is_empty() && update.memory.is_empty() && update.cpu.is_empty() && update.tags.is_empty()
    {
        return Err(ApiError::Invalid("nothing to change: give values, memory, cpu or tags".into()));
    }
    Ok(())
}

/// How many bytes a config takes: its keys and values (the environment, limits and tags), what
/// every release carries on the bus.
fn config_bytes(c: &ConfigData) -> usize {
    let pairs = |m: &std::collections::BTreeMap<String, String>| -> usize {
        m.iter().map(|(k, v)| k.len() + v.len()).sum()
    };
    pairs(&c.values) + pairs(&c.memory) + pairs(&c.tags) + c.cpu.keys().map(|k| k.len() + 10).sum::<usize>()
}

/// Refuses a merged config over the per-app limit, unless it shrinks: an app over a lowered
/// limit can still unset values.
fn check_total(before: &ConfigData, after: &ConfigData, quotas: &Quotas) -> Result<(), ApiError> {
    let (was, now) = (config_bytes(before), config_bytes(after));
    if now > quotas.config_bytes_per_app && now > was {
        return Err(ApiError::Invalid(format!(
            "the config would be {now} bytes; the limit is {} bytes of keys and values per app",
            quotas.config_bytes_per_app
        )));
    }
    Ok(())
}

/// Applies an update and says what changed, Deis style: "alice set FOO, BAR; unset BAZ".
fn apply(before: &ConfigData, update: &ConfigUpdate, user: &str) -> (ConfigData, String) {
    let mut after = before.clone();
    let mut set = Vec::new();
    let mut unset = Vec::new();
    for (k, v) in &update.values {
        match v {
            Some(v) => {
                if after.values.insert(k.clone(), v.clone()).as_ref() != Some(v) {
                    set.push(k.clone());
                }
            }
            None => {
                if after.values.remove(k).is_some() {
                    unset.push(k.clone());
                }
            }
        }
    }
    let mut limits = Vec::new();
    for (p, v) in &update.memory {
        set_or_remove(&mut after.memory, p, v.as_ref().map(|v| v.to_uppercase()));
        limits.push(format!("{p}={}", v.as_deref().unwrap_or("unlimited")));
    }
    for (p, v) in &update.cpu {
        set_or_remove(&mut after.cpu, p, *v);
        limits.push(format!("{p} cpu={}", v.map(|c| c.to_string()).unwrap_or_else(|| "unlimited".into())));
    }
    let mut tags = Vec::new();
    for (k, v) in &update.tags {
        set_or_remove(&mut after.tags, k, v.clone());
        tags.push(format!("{k}={}", v.as_deref().unwrap_or("(none)")));
    }
    let mut parts = Vec::new();
    if !set.is_empty() {
        parts.push(format!("set {}", set.join(", ")));
    }
    if !unset.is_empty() {
        parts.push(format!("unset {}", unset.join(", ")));
    }
    if !limits.is_empty() {
        parts.push(format!("changed limits {}", limits.join(", ")));
    }
    if !tags.is_empty() {
        parts.push(format!("changed tags {}", tags.join(", ")));
    }
    (after, format!("{user} {}", parts.join("; ")))
}

/// A setting given a value is set; one given `null` is removed (how the API unsets).
fn set_or_remove<V>(map: &mut std::collections::BTreeMap<String, V>, key: &str, value: Option<V>) {
    match value {
        Some(v) => map.insert(key.to_owned(), v),
        None => map.remove(key),
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn summaries_name_what_changed() {
        let before =
            ConfigData { values: BTreeMap::from([("BAZ".into(), "1".into())]), ..Default::default() };
        let update = ConfigUpdate {
            values: BTreeMap::from([
                ("FOO".into(), Some("a".into())),
                ("BAR".into(), Some("b".into())),
                ("BAZ".into(), None),
            ]),
            ..Default::default()
        };
        let (after, summary) = apply(&before, &update, "alice");
        assert_eq!(summary, "alice set BAR, FOO; unset BAZ");
        assert_eq!(after.values.len(), 2);
    }

    #[test]
    fn setting_the_same_value_changes_nothing() {
        let before =
            ConfigData { values: BTreeMap::from([("FOO".into(), "a".into())]), ..Default::default() };
        let update =
            ConfigUpdate { values: BTreeMap::from([("FOO".into(), Some("a".into()))]), ..Default::default() };
        assert_eq!(apply(&before, &update, "a").0, before);
    }

    #[test]
    fn bad_keys_and_limits_are_refused() {
        let bad_key =
            ConfigUpdate { values: BTreeMap::from([("1X".into(), Some("a".into()))]), ..Default::default() };
        assert!(check(&bad_key, &Quotas::default()).is_err());
        let bad_mem = ConfigUpdate {
            memory: BTreeMap::from([("web".into(), Some("lots".into()))]),
            ..Default::default()
        };
        assert!(check(&bad_mem, &Quotas::default()).is_err());
        assert!(check(&ConfigUpdate::default(), &Quotas::default()).is_err());
    }
}
