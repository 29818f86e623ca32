//! Builds and formations: recording a build releases it, and a formation change is announced
//! to the scheduler through the outbox in the same transaction.

use std::collections::BTreeMap;

use bus_schema::messages::FormationChanged;
use uuid::Uuid;

use super::Error;
use super::releases::{self, ReleaseRow};
use super::{outbox, validate};
use crate::ctx::{AppRow, Ctx};

/// A build to record, from the API or from the builder's build-completed event.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub uuid: Uuid,
    pub owner: String,
    pub image: String,
    pub sha: String,
    pub procfile: BTreeMap<String, String>,
    pub kind: &'static str,
}

/// Records a build and releases it, in one transaction. Idempotent on the build's uuid: a
/// build seen before (a redelivered event) changes nothing and returns `None`.
pub async fn record_build(
    ctx: &Ctx,
    tx: &deadpool_postgres::Transaction<'_>,
    app: &AppRow,
    build: &NewBuild,
) -> Result<Option<ReleaseRow>, Error> {
    let procfile = serde_json::to_value(&build.procfile).map_err(|e| Error::Internal(e.to_string()))?;
    let inserted = tx
        .execute(
            "INSERT INTO builds (uuid, app_id, owner, image, sha, procfile, kind) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (uuid) DO NOTHING",
            &[&build.uuid, &app.id, &build.owner, &build.image, &build.sha, &procfile, &build.kind],
        )
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    let current =
        releases::latest(tx, app.id).await?.ok_or_else(|| Error::Internal("app has no release".into()))?;
    let what = if build.sha.is_empty() { build.image.clone() } else { format!("{:.8}", build.sha) };
    let summary = format!("{} deployed {what}", build.owner);
    // Process types the new build no longer has are scaled to zero; new ones start at zero,
    // except `web`/`cmd` on an app's first build, which start at one (as Deis v1 did).
    let first_build = current.build.is_none();
    let row = tx.query_one("SELECT structure FROM apps WHERE id = $1", &[&app.id]).await?;
    let mut structure = structure_of(row.try_get("structure")?);
    let types: Vec<String> =
        if build.procfile.is_empty() { vec!["cmd".into()] } else { build.procfile.keys().cloned().collect() };
    structure.retain(|k, _| types.contains(k));
    for t in &types {
        let start = u32::from(first_build && (t == "web" || t == "cmd"));
        structure.entry(t.clone()).or_insert(start);
    }
    // The formation goes out first: a scheduler that saw the release before it would find a
    // first build with nothing to run, call the release deployed at once, and the push would
    // say "deployed" before a container even started.
    set_structure(ctx, tx, app, &build.owner, structure).await?;
    let release =
        releases::create(ctx, tx, app, &build.owner, Some(build.uuid), current.config, summary).await?;
    Ok(Some(release))
}

/// Stores a formation and announces it.
pub async fn set_structure(
    ctx: &Ctx,
    tx: &deadpool_postgres::Transaction<'_>,
    app: &AppRow,
    user: &str,
    structure: BTreeMap<String, u32>,
) -> Result<(), Error> {
    let value = serde_json::to_value(&structure).map_err(|e| Error::Internal(e.to_string()))?;
    let generation: i64 = tx
        .query_one(
            "UPDATE apps SET structure = $1, structure_generation = structure_generation + 1, updated = now()
             WHERE id = $2 RETURNING structure_generation",
            &[&value, &app.id],
        )
        .await?
        .try_get("structure_generation")?;
    let mut formation = BTreeMap::new();
    for (ptype, n) in &structure {
        formation.insert(validate::process_type(ptype)?, *n);
    }
    outbox::enqueue(
        tx,
        &ctx.sender,
        FormationChanged {
            app: validate::app_name(&app.name)?,
            formation,
            generation: u64::try_from(generation).unwrap_or(0),
            changed_by: user.to_owned(),
        },
    )
    .await?;
    Ok(())
}

/// The formation of an app as stored (`{"web": 2}`); an unreadable one is empty.
pub fn structure_of(value: serde_json::Value) -> BTreeMap<String, u32> {
    serde_json::from_value(value).unwrap_or_default()
}
