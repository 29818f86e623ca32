//! Builds and formations: recording a build releases it, and a formation change is announced
//! to the scheduler through the outbox in the same transaction.

use std::collections::BTreeMap;

use bus_schema::messages::FormationChanged;
use uuid::Uuid;

use super::Error;
use super::releases::{self, ReleaseRow};
use super::{outbox, validate};
use crate::ctx::{Access, AppRow, AuthUser, Ctx, app_for};

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

/// Refuses a Procfile with more process types than an app may have.
pub fn check_procfile(ctx: &Ctx, procfile: &BTreeMap<String, String>) -> Result<(), Error> {
    let limit = ctx.config.quotas.process_types_per_app;
    if procfile.len() > limit {
        return Err(Error::Invalid(format!(
            "the Procfile has {} process types; the limit is {limit} process types per app",
            procfile.len()
        )));
    }
    Ok(())
}

/// Whether an image reference names the platform registry (`registry`, `host:port`): no host
/// (a bare name is looked up there) or that very host.
pub fn in_platform_registry(registry: &str, image: &validate::ImageRef) -> bool {
    let registry = registry.trim().trim_end_matches('/').to_ascii_lowercase();
    image.host.as_deref().is_none_or(|host| host == registry)
}

/// The repository in the platform registry an image of `app` names when it is not the app's
/// own (`<registry>/<app>`): who deploys it must be allowed that other repository too. None when
/// nothing more is to be checked: the app's own image, an administrator, or another registry
/// (which the caller refuses).
pub fn foreign_repository<'a>(
    registry: &str,
    app: &str,
    is_admin: bool,
    image: &'a validate::ImageRef,
) -> Option<&'a str> {
    if is_admin || !in_platform_registry(registry, image) || image.repository == app {
        return None;
    }
    Some(&image.repository)
}

/// An app deploys only images from the platform registry that are its own, or an app's that
/// the user may use as well (one tenant moving an image between their apps, as `deis pull`
/// does); administrators may deploy any. Every other repository is refused alike, whether or
/// not it, its app or its tag exists, so the answer tells nothing about other tenants.
pub async fn check_image_owner<C: deadpool_postgres::GenericClient>(
    client: &C,
    registry: &str,
    app: &str,
    user: &AuthUser,
    image: &validate::ImageRef,
) -> Result<(), Error> {
    let Some(other) = foreign_repository(registry, app, user.is_superuser, image) else {
        return Ok(());
    };
    let refused = || {
        Error::Forbidden(format!(
            "{app} may deploy only its own images from the platform registry ({registry}/{app}) or those \
             of apps you may use, not {other}"
        ))
    };
    if validate::app_name(other).is_err() {
        return Err(refused());
    }
    match app_for(client, user, other, Access::Use, false).await {
        Ok(_) => Ok(()),
        Err(Error::NotFound(_) | Error::Forbidden(_)) => Err(refused()),
        Err(e) => Err(e),
    }
}

/// Records a build and releases it, in one transaction. Idempotent on the build's uuid: a
/// build seen before (a redelivered event) changes nothing and returns `None`.
pub async fn record_build(
    ctx: &Ctx,
    tx: &deadpool_postgres::Transaction<'_>,
    app: &AppRow,
    build: &NewBuild,
) -> Result<Option<ReleaseRow>, Error> {
    check_procfile(ctx, &build.procfile)?;
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

/// Refuses a formation over the app's or its owner's container quota. `before` is how many
/// containers the app had: a change that does not add containers is always allowed (a lowered
/// quota never stops scaling down). Serialised per owner, so two apps of one user scaled at once
/// cannot both slip under the per-user limit.
pub async fn check_containers(
    ctx: &Ctx,
    tx: &deadpool_postgres::Transaction<'_>,
    app: &AppRow,
    before: u64,
    structure: &BTreeMap<String, u32>,
) -> Result<(), Error> {
    let total: u64 = structure.values().map(|n| u64::from(*n)).sum();
    if total <= before {
        return Ok(());
    }
    let quotas = &ctx.config.quotas;
    if total > u64::from(quotas.containers_per_app) {
        return Err(Error::Invalid(format!(
            "{} would run {total} containers; the limit is {} containers per app",
            app.name, quotas.containers_per_app
        )));
    }
    // A transaction-scoped advisory lock (class 7415003) per owner: not a row lock, so nothing
    // else that locks users' rows can deadlock with it.
    let key = i32::try_from(app.owner_id.rem_euclid(i64::from(i32::MAX))).unwrap_or(0);
    tx.execute("SELECT pg_advisory_xact_lock(7415003, $1)", &[&key]).await?;
    let rows = tx
        .query("SELECT structure FROM apps WHERE owner_id = $1 AND id <> $2", &[&app.owner_id, &app.id])
        .await?;
    let mut others: u64 = 0;
    for row in &rows {
        others += structure_of(row.try_get("structure")?).values().map(|n| u64::from(*n)).sum::<u64>();
    }
    if others + total > u64::from(quotas.containers_per_user) {
        return Err(Error::Invalid(format!(
            "{} would run {} containers across their apps; the limit is {} containers per user",
            app.owner,
            others + total,
            quotas.containers_per_user
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn foreign(image: &str, admin: bool) -> Option<String> {
        let image = validate::image_ref(image).unwrap();
        foreign_repository("registry:5000", "mine", admin, &image).map(str::to_owned)
    }

    #[test]
    fn only_the_apps_own_repository_in_the_platform_registry_needs_no_more_checks() {
        for own in ["mine", "mine:v1", "registry:5000/mine:git-1234abcd", "REGISTRY:5000/mine"] {
            assert_eq!(foreign(own, false), None, "{own}");
        }
        for (image, repository) in [
            ("other:v1", "other"),
            ("registry:5000/other:v1", "other"),
            ("library/mine", "library/mine"),
            ("registry:5000/library/mine:v1", "library/mine"),
            ("registry/mine:v1", "registry/mine"),
            ("mine/sub:v1", "mine/sub"),
            ("ab12", "ab12"),
        ] {
            assert_eq!(foreign(image, false).as_deref(), Some(repository), "{image}");
            assert_eq!(foreign(image, true), None, "{image}");
        }
        // Other registries are not this check's to judge (the caller refuses them).
        assert!(!in_platform_registry("registry:5000", &validate::image_ref("127.0.0.1:5000/x").unwrap()));
        assert_eq!(foreign("127.0.0.1:5000/other", false), None);
    }
}
