//! Releases: numbered v1, v2, … per app without gaps, each pairing a build with a config. Every
//! way of making one (new app, config change, build, rollback) goes through [`create`], inside
//! the caller's transaction with the app's row locked, and writes its events to the outbox.

use std::collections::BTreeMap;

use bus_schema::messages::{Limits, ReleaseCreated, ReleaseSpec};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::ctx::{AppRow, Ctx};
use crate::model::Error;
use crate::model::outbox;
use crate::model::validate;

/// An app's config, one version of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigData {
    pub values: BTreeMap<String, String>,
    pub memory: BTreeMap<String, String>,
    pub cpu: BTreeMap<String, u32>,
    pub tags: BTreeMap<String, String>,
}

/// A release as stored.
#[derive(Debug, Clone)]
pub struct ReleaseRow {
    pub uuid: Uuid,
    pub version: i32,
    pub owner: String,
    pub build: Option<Uuid>,
    pub image: String,
    pub config: Uuid,
    pub summary: String,
    pub created: time::OffsetDateTime,
}

/// The columns [`ReleaseRow::from_row`] reads, for `releases r LEFT JOIN builds b ON b.uuid = r.build_uuid`.
const RELEASE_COLUMNS: &str = "r.uuid, r.version, r.owner, r.build_uuid AS build, COALESCE(b.image, '') AS image, \
     r.config_uuid AS config, r.summary, r.created";

impl ReleaseRow {
    /// Reads a row of [`RELEASE_COLUMNS`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            uuid: row.try_get("uuid")?,
            version: row.try_get("version")?,
            owner: row.try_get("owner")?,
            build: row.try_get("build")?,
            image: row.try_get("image")?,
            config: row.try_get("config")?,
            summary: row.try_get("summary")?,
            created: row.try_get("created")?,
        })
    }
}

pub async fn latest<C: deadpool_postgres::GenericClient>(
    client: &C,
    app_id: i64,
) -> Result<Option<ReleaseRow>, Error> {
    let sql = format!(
        "SELECT {RELEASE_COLUMNS} FROM releases r LEFT JOIN builds b ON b.uuid = r.build_uuid
         WHERE r.app_id = $1 ORDER BY r.version DESC LIMIT 1"
    );
    Ok(client.query_opt(&sql, &[&app_id]).await?.as_ref().map(ReleaseRow::from_row).transpose()?)
}

pub async fn by_version<C: deadpool_postgres::GenericClient>(
    client: &C,
    app_id: i64,
    version: i32,
) -> Result<Option<ReleaseRow>, Error> {
    let sql = format!(
        "SELECT {RELEASE_COLUMNS} FROM releases r LEFT JOIN builds b ON b.uuid = r.build_uuid
         WHERE r.app_id = $1 AND r.version = $2"
    );
    Ok(client.query_opt(&sql, &[&app_id, &version]).await?.as_ref().map(ReleaseRow::from_row).transpose()?)
}

pub async fn list<C: deadpool_postgres::GenericClient>(
    client: &C,
    app_id: i64,
    limit: i64,
    offset: i64,
) -> Result<(i64, Vec<ReleaseRow>), Error> {
    let count: i64 = client
        .query_one("SELECT count(*) AS count FROM releases WHERE app_id = $1", &[&app_id])
        .await?
        .try_get("count")?;
    let sql = format!(
        "SELECT {RELEASE_COLUMNS} FROM releases r LEFT JOIN builds b ON b.uuid = r.build_uuid
         WHERE r.app_id = $1 ORDER BY r.version DESC LIMIT $2 OFFSET $3"
    );
    let rows = client.query(&sql, &[&app_id, &limit, &offset]).await?;
    Ok((count, rows.iter().map(ReleaseRow::from_row).collect::<Result<_, _>>()?))
}

pub async fn load_config<C: deadpool_postgres::GenericClient>(
    client: &C,
    uuid: Uuid,
) -> Result<ConfigData, Error> {
    let row = client
        .query_one(r#"SELECT "values", memory, cpu, tags FROM configs WHERE uuid = $1"#, &[&uuid])
        .await?;
    fn parse<T: serde::de::DeserializeOwned>(row: &tokio_postgres::Row, column: &str) -> Result<T, Error> {
        serde_json::from_value(row.try_get(column)?)
            .map_err(|e| Error::Internal(format!("stored config: {e}")))
    }
    Ok(ConfigData {
        values: parse(&row, "values")?,
        memory: parse(&row, "memory")?,
        cpu: parse(&row, "cpu")?,
        tags: parse(&row, "tags")?,
    })
}

pub async fn insert_config(
    tx: &Transaction<'_>,
    app_id: i64,
    owner: &str,
    config: &ConfigData,
) -> Result<Uuid, Error> {
    let uuid = Uuid::now_v7();
    let j = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| Error::Internal(format!("config to JSON: {e}")))
    };
    tx.execute(
        r#"INSERT INTO configs (uuid, app_id, owner, "values", memory, cpu, tags) VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        &[
            &uuid,
            &app_id,
            &owner,
            &j(serde_json::to_value(&config.values))?,
            &j(serde_json::to_value(&config.memory))?,
            &j(serde_json::to_value(&config.cpu))?,
            &j(serde_json::to_value(&config.tags))?,
        ],
    )
    .await?;
    Ok(uuid)
}

/// Creates the next release of an app. The caller holds the app's row lock (`FOR UPDATE`), which
/// makes the version gap-free and unique under any concurrency; the unique index is the backstop.
pub async fn create(
    ctx: &Ctx,
    tx: &Transaction<'_>,
    app: &AppRow,
    owner: &str,
    build: Option<Uuid>,
    config: Uuid,
    summary: String,
) -> Result<ReleaseRow, Error> {
    let version: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) + 1 AS version FROM releases WHERE app_id = $1",
            &[&app.id],
        )
        .await?
        .try_get("version")?;
    let uuid = Uuid::now_v7();
    tx.execute(
        "INSERT INTO releases (uuid, app_id, owner, version, build_uuid, config_uuid, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&uuid, &app.id, &owner, &version, &build, &config, &summary],
    )
    .await?;
    let release = by_version(tx, app.id, version)
        .await?
        .ok_or_else(|| Error::Internal("release vanished inside its own transaction".into()))?;

    let spec = spec_of(tx, app, &release).await?;
    outbox::enqueue(
        tx,
        &ctx.sender,
        ReleaseCreated { release: spec, summary: summary.clone(), created_by: owner.to_owned() },
    )
    .await?;
    outbox::event(
        tx,
        &ctx.sender,
        &app.name,
        owner,
        "release",
        format!("release v{version} created by {owner}: {summary}"),
    )
    .await?;
    Ok(release)
}

/// Everything the scheduler needs to run a release.
pub async fn spec_of<C: deadpool_postgres::GenericClient>(
    client: &C,
    app: &AppRow,
    release: &ReleaseRow,
) -> Result<ReleaseSpec, Error> {
    let config = load_config(client, release.config).await?;
    let mut processes = BTreeMap::new();
    if let Some(build) = release.build {
        let row = client.query_one("SELECT procfile, kind FROM builds WHERE uuid = $1", &[&build]).await?;
        let procfile: BTreeMap<String, String> = serde_json::from_value(row.try_get("procfile")?)
            .map_err(|e| Error::Internal(format!("stored procfile: {e}")))?;
        let kind: String = row.try_get("kind")?;
        for (ptype, command) in procfile {
            processes.insert(validate::process_type(&ptype)?, command);
        }
        if processes.is_empty() && kind != "buildpack" {
            // Dockerfile and image builds without a Procfile run the image's own command.
            processes.insert(validate::process_type("cmd")?, String::new());
        }
    }
    let mut limits: BTreeMap<bus_schema::ProcessType, Limits> = BTreeMap::new();
    for (ptype, mem) in &config.memory {
        let entry = limits.entry(validate::process_type(ptype)?).or_default();
        entry.memory_mb = Some(validate::memory_limit(ptype, mem)?);
    }
    for (ptype, shares) in &config.cpu {
        limits.entry(validate::process_type(ptype)?).or_default().cpu_shares = Some(u64::from(*shares));
    }
    Ok(ReleaseSpec {
        app: validate::app_name(&app.name)?,
        version: u32::try_from(release.version).unwrap_or(0),
        image: release.image.clone(),
        processes,
        config: config.values,
        limits,
        tags: config.tags,
    })
}
