//! `/v1/certs/`: TLS certificates for custom domains, checked (PEM, key match, expiry) on upload.

use std::sync::Arc;

use controller_api::{Cert, CertAttachRequest, CertCreateRequest, Endpoint};
use deadpool_postgres::GenericClient;
use warp::http::StatusCode;

use super::error::{ApiError, unless_taken};
use super::{Answer, Paging, json, no_content, ts};
use crate::ctx::{Access, AuthUser, Ctx, app_for};
use crate::model::validate;

/// The columns [`CertRow::from_row`] reads, for `certs c JOIN users u ON u.id = c.owner_id`.
const CERT_COLUMNS: &str = "c.id, c.name, u.username AS owner, c.common_name, c.san, c.starts, c.expires, \
     c.issuer, c.fingerprint, c.created, c.owner_id";

/// A certificate as stored (without its PEM and key), with its owner's name.
#[derive(Debug, Clone)]
struct CertRow {
    id: i64,
    name: String,
    owner: String,
    owner_id: i64,
    common_name: String,
    /// Subject alternative names (empty when the stored JSON is not a list of strings).
    san: Vec<String>,
    starts: time::OffsetDateTime,
    expires: time::OffsetDateTime,
    issuer: String,
    fingerprint: String,
    created: time::OffsetDateTime,
}

impl CertRow {
    /// Reads a row of [`CERT_COLUMNS`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            owner: row.try_get("owner")?,
            owner_id: row.try_get("owner_id")?,
            common_name: row.try_get("common_name")?,
            san: serde_json::from_value(row.try_get("san")?).unwrap_or_default(),
            starts: row.try_get("starts")?,
            expires: row.try_get("expires")?,
            issuer: row.try_get("issuer")?,
            fingerprint: row.try_get("fingerprint")?,
            created: row.try_get("created")?,
        })
    }
}

async fn cert_view<C: GenericClient>(client: &C, cert: &CertRow) -> Result<Cert, ApiError> {
    let domains = client
        .query("SELECT domain FROM cert_domains WHERE cert_id = $1 ORDER BY domain", &[&cert.id])
        .await?
        .iter()
        .map(|r| r.try_get("domain"))
        .collect::<Result<_, _>>()?;
    Ok(Cert {
        name: cert.name.clone(),
        owner: cert.owner.clone(),
        common_name: cert.common_name.clone(),
        san: cert.san.clone(),
        starts: ts(cert.starts),
        expires: ts(cert.expires),
        issuer: cert.issuer.clone(),
        fingerprint: cert.fingerprint.clone(),
        domains,
        created: ts(cert.created),
        updated: ts(cert.created),
    })
}

/// Loads a certificate the user may manage (its owner or an administrator).
async fn owned<C: GenericClient>(client: &C, user: &AuthUser, name: &str) -> Result<CertRow, ApiError> {
    let by_name = client
        .query_opt(
            &format!(
                "SELECT {CERT_COLUMNS} FROM certs c JOIN users u ON u.id = c.owner_id WHERE c.name = $1"
            ),
            &[&name],
        )
        .await?;
    let row = match by_name {
        Some(row) => row,
        // Deis v1 clients name a certificate by the common name `certs:list` shows: the user's
        // own certificate with that common name, when exactly one has it.
        None => {
            let mut rows = client
                .query(
                    &format!(
                        "SELECT {CERT_COLUMNS} FROM certs c JOIN users u ON u.id = c.owner_id
                         WHERE lower(c.common_name) = lower($1) AND c.owner_id = $2 LIMIT 2"
                    ),
                    &[&name, &user.id],
                )
                .await?;
            match rows.len() {
                1 => rows.remove(0),
                0 => return Err(ApiError::not_found(format!("certificate '{name}'"))),
                _ => {
                    return Err(ApiError::Conflict(format!(
                        "several of your certificates have the common name '{name}'; use its name (certs:list)"
                    )));
                }
            }
        }
    };
    let cert = CertRow::from_row(&row)?;
    if cert.owner_id != user.id && !user.is_superuser {
        return Err(ApiError::Forbidden(format!("certificate '{name}' belongs to another user")));
    }
    Ok(cert)
}

/// Certificates (yours; every one for administrators).
#[utoipa::path(get, path = "/v1/certs/", tag = "certs", params(Paging),
    responses((status = 200, description = "Certificates", body = controller_api::Page<Cert>)))]
pub async fn list(ctx: Arc<Ctx>, user: AuthUser, paging: Paging) -> Answer {
    let client = ctx.pool.get().await?;
    let count: i64 = client
        .query_one(
            "SELECT count(*) AS count FROM certs c WHERE $1 OR c.owner_id = $2",
            &[&user.is_superuser, &user.id],
        )
        .await?
        .try_get("count")?;
    let rows = client
        .query(
            &format!(
                "SELECT {CERT_COLUMNS} FROM certs c JOIN users u ON u.id = c.owner_id WHERE $1 OR c.owner_id = $2
                 ORDER BY c.name LIMIT $3 OFFSET $4"
            ),
            &[&user.is_superuser, &user.id, &paging.limit, &paging.offset],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(cert_view(&client, &CertRow::from_row(row)?).await?);
    }
    Ok(json(StatusCode::OK, &paging.page(&Endpoint::Certs.path(&[]), count, out)))
}

/// Upload a certificate and its key.
#[utoipa::path(post, path = "/v1/certs/", tag = "certs", request_body = CertCreateRequest,
    responses((status = 201, description = "Added", body = Cert)))]
pub async fn add(ctx: Arc<Ctx>, user: AuthUser, req: CertCreateRequest) -> Answer {
    let info = validate::certificate(&req.certificate, &req.key)?;
    let fits = |n: &str| {
        !n.is_empty() && n.len() <= 253 && n.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    };
    let domain = req.common_name.as_deref().map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase());
    let name = match req.name.clone().or_else(|| domain.clone()) {
        Some(name) => name.trim().to_owned(),
        // By default the certificate is named after the first host it names.
        None => std::iter::once(&info.common_name)
            .chain(info.san.iter())
            .map(|n| n.trim_start_matches("*.").to_ascii_lowercase())
            .find(|n| fits(n))
            .unwrap_or_default(),
    };
    if !fits(&name) {
        return Err(ApiError::Invalid(format!(
            "certificate name '{name}' must be 1 to 253 letters, digits and -._"
        )));
    }
    let san = serde_json::to_value(&info.san).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut client = ctx.pool.get().await?;
    // One transaction: a certificate whose binding to its common name fails is not kept, so
    // adding it again once the domain exists works (and is not a 409).
    let mut tx = client.transaction().await?;
    let inserted = tx
        .execute(
            "INSERT INTO certs (name, owner_id, common_name, san, certificate, key, starts, expires, issuer, fingerprint)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[&name, &user.id, &info.common_name, &san, &req.certificate, &req.key, &info.starts, &info.expires, &info.issuer, &info.fingerprint],
        )
        .await;
    unless_taken(inserted, || format!("a certificate named '{name}' exists already"))?;
    let cert = owned(&tx, &user, &name).await?;
    let mut attached = domain.filter(|d| !d.is_empty());
    if attached.is_none() {
        // Deis v1 served a certificate for its common name's domain as soon as it was added:
        // bound when that domain is one of the user's and has no certificate yet.
        let cn = info.common_name.trim().trim_end_matches('.').to_ascii_lowercase();
        let free = tx
            .query_opt(
                "SELECT 1 FROM domains d WHERE d.domain = $1
                 AND NOT EXISTS (SELECT 1 FROM cert_domains cd WHERE cd.domain = d.domain)",
                &[&cn],
            )
            .await?
            .is_some();
        if free {
            // A savepoint: a binding that fails (a race for the domain) leaves the add whole.
            let sp = tx.transaction().await?;
            if attach_to(&sp, &user, &cert, &name, &cn).await.is_ok() {
                sp.commit().await?;
                attached = Some(cn);
            }
        }
    } else if let Some(domain) = &attached {
        // Deis v1 served a certificate for its common name as soon as it was added.
        if let Err(error) = attach_to(&tx, &user, &cert, &name, domain).await {
            return Err(match error {
                ApiError::NotFound(_)
                | ApiError::Invalid(_)
                | ApiError::Conflict(_)
                | ApiError::Forbidden(_) => ApiError::Invalid(format!(
                    "certificate '{name}' was not added: it cannot serve {domain}: {error}"
                )),
                other => other,
            });
        }
    }
    let view = cert_view(&tx, &cert).await?;
    tx.commit().await?;
    if attached.is_some() {
        ctx.domains_wake.notify_one();
    }
    Ok(json(StatusCode::CREATED, &view))
}

/// One certificate.
#[utoipa::path(get, path = "/v1/certs/{name}", tag = "certs", params(("name" = String, Path, description = "Certificate name")),
    responses((status = 200, description = "The certificate", body = Cert)))]
pub async fn info(ctx: Arc<Ctx>, name: String, user: AuthUser) -> Answer {
    let client = ctx.pool.get().await?;
    let cert = owned(&client, &user, &name).await?;
    Ok(json(StatusCode::OK, &cert_view(&client, &cert).await?))
}

/// Remove a certificate; its domains go back to plain HTTP.
#[utoipa::path(delete, path = "/v1/certs/{name}", tag = "certs", params(("name" = String, Path, description = "Certificate name")),
    responses((status = 204, description = "Removed")))]
pub async fn remove(ctx: Arc<Ctx>, name: String, user: AuthUser) -> Answer {
    let client = ctx.pool.get().await?;
    let cert = owned(&client, &user, &name).await?;
    client.execute("DELETE FROM certs WHERE id = $1", &[&cert.id]).await?;
    ctx.domains_wake.notify_one();
    Ok(no_content())
}

/// Serve a domain with this certificate. The certificate must cover the domain.
#[utoipa::path(post, path = "/v1/certs/{name}/domain/", tag = "certs", request_body = CertAttachRequest,
    params(("name" = String, Path, description = "Certificate name")),
    responses((status = 201, description = "Attached", body = Cert)))]
pub async fn attach(ctx: Arc<Ctx>, name: String, user: AuthUser, req: CertAttachRequest) -> Answer {
    let domain = req.domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let client = ctx.pool.get().await?;
    let cert = owned(&client, &user, &name).await?;
    attach_to(&client, &user, &cert, &name, &domain).await?;
    ctx.domains_wake.notify_one();
    Ok(json(StatusCode::CREATED, &cert_view(&client, &cert).await?))
}

/// Serves `domain` with the certificate `cert`, if the user may use the domain's app and the
/// certificate covers it.
async fn attach_to<C: GenericClient>(
    client: &C,
    user: &AuthUser,
    cert: &CertRow,
    name: &str,
    domain: &str,
) -> Result<(), ApiError> {
    let app: String = client
        .query_opt(
            "SELECT a.name FROM domains d JOIN apps a ON a.id = d.app_id WHERE d.domain = $1",
            &[&domain],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("domain {domain} (add it to an app first)")))?
        .try_get("name")?;
    app_for(client, user, &app, Access::Use, false).await?;
    let mut names = cert.san.clone();
    names.push(cert.common_name.to_ascii_lowercase());
    if !validate::cert_covers(&names, domain) {
        return Err(ApiError::Invalid(format!(
            "certificate '{name}' does not cover {domain} (it covers {})",
            names.join(", ")
        )));
    }
    let inserted = client
        .execute("INSERT INTO cert_domains (cert_id, domain) VALUES ($1, $2)", &[&cert.id, &domain])
        .await;
    unless_taken(inserted, || format!("{domain} already has a certificate"))?;
    Ok(())
}

/// Stop serving a domain with this certificate.
#[utoipa::path(delete, path = "/v1/certs/{name}/domain/{domain}", tag = "certs",
    params(("name" = String, Path, description = "Certificate name"), ("domain" = String, Path, description = "The domain")),
    responses((status = 204, description = "Detached")))]
pub async fn detach(ctx: Arc<Ctx>, name: String, domain: String, user: AuthUser) -> Answer {
    let domain = domain.to_ascii_lowercase();
    let client = ctx.pool.get().await?;
    let cert = owned(&client, &user, &name).await?;
    let n = client
        .execute("DELETE FROM cert_domains WHERE cert_id = $1 AND domain = $2", &[&cert.id, &domain])
        .await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("{domain} on certificate '{name}'")));
    }
    ctx.domains_wake.notify_one();
    Ok(no_content())
}
