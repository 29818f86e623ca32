//! `/v1/apps/{app}/builds/`, `/releases/` and `/scale/`: what runs, and how many of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use controller_api::{App, Build, BuildCreateRequest, Endpoint, Release, RollbackRequest, ScaleRequest};
use uuid::Uuid;
use warp::http::StatusCode;

use super::error::ApiError;
use super::settle::{self, Settle};
use super::{Answer, Listing, Paging, json, ts};
use crate::ctx::{Access, AuthUser, Ctx, app_for};
use crate::model::builds::{NewBuild, record_build};
use crate::model::releases::{self, ReleaseRow};
use crate::model::validate;

fn release_view(app: &str, r: &ReleaseRow) -> Release {
    Release {
        uuid: r.uuid,
        owner: r.owner.clone(),
        app: app.to_owned(),
        version: u32::try_from(r.version).unwrap_or(0),
        build: r.build,
        image: r.image.clone(),
        config: r.config,
        summary: r.summary.clone(),
        created: ts(r.created),
        updated: ts(r.created),
    }
}

/// The columns [`build_view`] reads, from `builds`.
const BUILD_COLUMNS: &str = "uuid, owner, image, sha, procfile, kind, created";

fn build_view(app: &str, row: &tokio_postgres::Row) -> Result<Build, tokio_postgres::Error> {
    let created = ts(row.try_get("created")?);
    Ok(Build {
        uuid: row.try_get("uuid")?,
        owner: row.try_get("owner")?,
        app: app.to_owned(),
        image: row.try_get("image")?,
        sha: row.try_get("sha")?,
        procfile: serde_json::from_value(row.try_get("procfile")?).unwrap_or_default(),
        kind: row.try_get("kind")?,
        created: created.clone(),
        updated: created,
    })
}

/// The app's builds, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/builds/", tag = "builds", params(("app" = String, Path, description = "App name"), Paging),
    responses((status = 200, description = "Builds", body = controller_api::Page<Build>)))]
pub async fn list(ctx: Arc<Ctx>, app: String, user: AuthUser, paging: Paging) -> Answer {
    let (client, app) = ctx.app_to_read(&user, &app).await?;
    let listing = Listing {
        columns: BUILD_COLUMNS,
        from: "builds WHERE app_id = $1",
        order: "created DESC",
        params: &[&app.id],
    };
    let path = Endpoint::Builds.path(&[&app.name]);
    listing.page(&client, &paging, &path, |r| build_view(&app.name, r)).await
}

/// Deploy an image that is already in the platform registry.
#[utoipa::path(post, path = "/v1/apps/{app}/builds/", tag = "builds", request_body = BuildCreateRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 201, description = "Built and released", body = Build)))]
pub async fn create(ctx: Arc<Ctx>, app: String, user: AuthUser, req: BuildCreateRequest) -> Answer {
    let image = validate::image_ref(&req.image)?;
    crate::model::builds::check_procfile(&ctx, &req.procfile)?;
    for (ptype, command) in &req.procfile {
        validate::process_type(ptype)?;
        if command.contains('\0') || command.len() > 4096 {
            return Err(ApiError::Invalid(format!("the command of {ptype} is not acceptable")));
        }
    }
    ctx.check_app_access(&user, &app).await?;
    // Whose image it is is decided before the registry is asked, so the answer to another
    // app's image is the same whether or not the tag exists.
    {
        let client = ctx.pool.get().await?;
        crate::model::builds::check_image_owner(&client, &ctx.config.registry, &app, &user, &image).await?;
    }
    let image = ensure_in_registry(&ctx, &req.image, &image).await?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let row = app_for(&tx, &user, &app, Access::Use, true).await?;
    let build = NewBuild {
        uuid: Uuid::now_v7(),
        owner: user.username.clone(),
        image,
        sha: String::new(),
        procfile: req.procfile,
        kind: "image",
    };
    let release = record_build(&ctx, &tx, &row, &build).await?;
    let out =
        tx.query_one(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE uuid = $1"), &[&build.uuid]).await?;
    let out = build_view(&row.name, &out)?;
    tx.commit().await?;
    ctx.relay_wake.notify_one();
    let resp = json(StatusCode::CREATED, &out);
    Ok(match release.map(|r| u32::try_from(r.version)) {
        Some(Ok(version)) => settle::mark(resp, Settle::Release { app: row.name.clone(), version }),
        _ => resp,
    })
}

/// Checks that an image is in the platform registry (its manifest answers), and returns its
/// full reference. A name without a registry host is looked up in the platform registry.
async fn ensure_in_registry(ctx: &Ctx, image: &str, parsed: &validate::ImageRef) -> Result<String, ApiError> {
    let registry = ctx.config.registry.trim_end_matches('/');
    if !crate::model::builds::in_platform_registry(registry, parsed) {
        return Err(ApiError::Invalid(format!(
            "image '{image}' is in another registry; only images in the platform registry ({registry}) can be deployed"
        )));
    }
    let (name, reference) = (parsed.repository.as_str(), parsed.reference());
    let url = format!("http://{registry}/v2/{name}/manifests/{reference}");
    let resp = ctx
        .http
        .head(&url)
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the platform registry at {registry} is unreachable: {e}")))?;
    match resp.status().as_u16() {
        200 => Ok(format!("{registry}/{name}:{reference}").replace(":sha256:", "@sha256:")),
        404 => Err(ApiError::Invalid(format!(
            "image {name}:{reference} is not in the platform registry ({registry}); push it there first"
        ))),
        s => Err(ApiError::Unavailable(format!("the platform registry answered {s} for {name}:{reference}"))),
    }
}

/// The app's releases, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/releases/", tag = "releases", params(("app" = String, Path, description = "App name"), Paging),
    responses((status = 200, description = "Releases", body = controller_api::Page<Release>)))]
pub async fn releases(ctx: Arc<Ctx>, app: String, user: AuthUser, paging: Paging) -> Answer {
    let (client, app) = ctx.app_to_read(&user, &app).await?;
    let (count, rows) = releases::list(&client, app.id, paging.limit, paging.offset).await?;
    let out = rows.iter().map(|r| release_view(&app.name, r)).collect();
    Ok(json(StatusCode::OK, &paging.page(&Endpoint::Releases.path(&[&app.name]), count, out)))
}

fn parse_version(v: &str) -> Result<i32, ApiError> {
    v.strip_prefix('v')
        .unwrap_or(v)
        .parse::<i32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::NotFound(format!("release '{v}' not found: versions look like v3")))
}

/// One release.
#[utoipa::path(get, path = "/v1/apps/{app}/releases/{version}/", tag = "releases",
    params(("app" = String, Path, description = "App name"), ("version" = String, Path, description = "Version, like v3")),
    responses((status = 200, description = "The release", body = Release)))]
pub async fn release(ctx: Arc<Ctx>, app: String, version: String, user: AuthUser) -> Answer {
    let n = parse_version(&version)?;
    let (client, app) = ctx.app_to_read(&user, &app).await?;
    let r = releases::by_version(&client, app.id, n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("release v{n}")))?;
    Ok(json(StatusCode::OK, &release_view(&app.name, &r)))
}

/// Roll back: a new release with the build and config of an earlier one (the previous by default).
#[utoipa::path(post, path = "/v1/apps/{app}/releases/rollback/", tag = "releases", request_body = RollbackRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 201, description = "The new release", body = Release)))]
pub async fn rollback(ctx: Arc<Ctx>, app: String, user: AuthUser, req: RollbackRequest) -> Answer {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Use, true).await?;
    let current = releases::latest(&tx, app.id)
        .await?
        .ok_or_else(|| ApiError::Internal("app has no release".into()))?;
    let target = match req.version {
        Some(v) => i32::try_from(v).map_err(|_| ApiError::Invalid(format!("no release v{v}")))?,
        None => current.version - 1,
    };
    if target < 1 {
        return Err(ApiError::Invalid("there is no earlier release to roll back to".into()));
    }
    if target >= current.version {
        return Err(ApiError::Invalid(format!(
            "can only roll back to an earlier release than the current v{}",
            current.version
        )));
    }
    let old = releases::by_version(&tx, app.id, target)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("release v{target}")))?;
    if old.build.is_none() && current.build.is_some() {
        // Deis v1 refused it too: a release without a build has nothing to run, and rolling a
        // running app back to it would leave its containers with no release to follow. (Before
        // the first build nothing runs, so rolling config back is harmless and allowed.)
        return Err(ApiError::Invalid(format!(
            "no build associated with release v{target}: it has nothing to run, so it cannot be rolled back to"
        )));
    }
    let summary = format!("{} rolled back to v{target}", user.username);
    let new = releases::create(&ctx, &tx, &app, &user.username, old.build, old.config, summary).await?;
    tx.commit().await?;
    ctx.relay_wake.notify_one();
    let resp = json(StatusCode::CREATED, &release_view(&app.name, &new));
    Ok(match (new.build, u32::try_from(new.version)) {
        (Some(_), Ok(version)) => settle::mark(resp, Settle::Release { app: app.name.clone(), version }),
        _ => resp,
    })
}

/// Change how many containers of each process type run (`{"web": 3}`).
#[utoipa::path(post, path = "/v1/apps/{app}/scale/", tag = "apps", request_body = BTreeMap<String, u32>,
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "The app with its new formation", body = App)))]
pub async fn scale(ctx: Arc<Ctx>, app: String, user: AuthUser, req: ScaleRequest) -> Answer {
    if req.is_empty() {
        return Err(ApiError::Invalid(
            "nothing to scale: give process types and counts, like {\"web\": 3}".into(),
        ));
    }
    for (ptype, n) in &req {
        validate::process_type(ptype)?;
        if *n > 100 {
            return Err(ApiError::Invalid(format!("{ptype}={n}: at most 100 containers per process type")));
        }
    }
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Use, true).await?;
    let current = releases::latest(&tx, app.id)
        .await?
        .ok_or_else(|| ApiError::Internal("app has no release".into()))?;
    let Some(build) = current.build else {
        return Err(ApiError::Invalid(format!(
            "{} has no build yet: deploy with `git push` or `deis builds:create` first",
            app.name
        )));
    };
    let row = tx.query_one("SELECT procfile FROM builds WHERE uuid = $1", &[&build]).await?;
    let procfile: BTreeMap<String, String> =
        serde_json::from_value(row.try_get("procfile")?).unwrap_or_default();
    let known: Vec<String> =
        if procfile.is_empty() { vec!["cmd".into()] } else { procfile.into_keys().collect() };
    for ptype in req.keys() {
        if !known.contains(ptype) {
            return Err(ApiError::Invalid(format!(
                "{} has no process type '{ptype}'; it has: {}",
                app.name,
                known.join(", ")
            )));
        }
    }
    let row = tx.query_one("SELECT structure FROM apps WHERE id = $1", &[&app.id]).await?;
    let mut structure = crate::model::builds::structure_of(row.try_get("structure")?);
    let before: u64 = structure.values().map(|n| u64::from(*n)).sum();
    for (ptype, n) in &req {
        structure.insert(ptype.clone(), *n);
    }
    crate::model::builds::check_containers(&ctx, &tx, &app, before, &structure).await?;
    crate::model::builds::set_structure(&ctx, &tx, &app, &user.username, structure.clone()).await?;
    let what: Vec<String> = req.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let out = super::apps::load(&ctx, &tx, &app.name).await?;
    let message = format!("{} scaled {}", user.username, what.join(" "));
    ctx.commit_with_event(tx, &app.name, &user.username, "scale", message).await?;
    let asked: BTreeMap<String, u32> =
        req.keys().filter_map(|k| Some((k.clone(), *structure.get(k)?))).collect();
    Ok(settle::mark(
        json(StatusCode::OK, &out),
        Settle::Formation { app: app.name.clone(), structure: asked },
    ))
}
