//! `/v1/keys/`: SSH public keys for `git push`, fingerprints unique across the platform.

use std::sync::Arc;

use controller_api::{Endpoint, Key, KeyCreateRequest};
use warp::http::StatusCode;

use super::error::ApiError;
use super::{Answer, Listing, Paging, json, no_content, ts};
use crate::ctx::{AuthUser, Ctx};
use crate::model::is_unique_violation;
use crate::model::validate;

/// The columns [`key_view`] reads, from `keys`.
const KEY_COLUMNS: &str = "name, public, fingerprint, created";

fn key_view(owner: &str, r: &tokio_postgres::Row) -> Result<Key, tokio_postgres::Error> {
    let created = ts(r.try_get("created")?);
    Ok(Key {
        id: r.try_get("name")?,
        owner: owner.to_owned(),
        public: r.try_get("public")?,
        fingerprint: r.try_get("fingerprint")?,
        created: created.clone(),
        updated: created,
    })
}

/// Your SSH keys.
#[utoipa::path(get, path = "/v1/keys/", tag = "keys", params(Paging),
    responses((status = 200, description = "Keys", body = controller_api::Page<Key>)))]
pub async fn list(ctx: Arc<Ctx>, user: AuthUser, paging: Paging) -> Answer {
    let client = ctx.pool.get().await?;
    let listing =
        Listing { columns: KEY_COLUMNS, from: "keys WHERE user_id = $1", order: "name", params: &[&user.id] };
    listing.page(&client, &paging, &Endpoint::Keys.path(&[]), |r| key_view(&user.username, r)).await
}

/// Add an SSH public key.
#[utoipa::path(post, path = "/v1/keys/", tag = "keys", request_body = KeyCreateRequest,
    responses((status = 201, description = "Added", body = Key)))]
pub async fn add(ctx: Arc<Ctx>, user: AuthUser, req: KeyCreateRequest) -> Answer {
    let name = req.id.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::Invalid("a key's id must be 1 to 128 printable characters without '/'".into()));
    }
    let (public, fingerprint) = validate::ssh_public_key(&req.public)?;
    let client = ctx.pool.get().await?;
    let inserted = client
        .query_one(
            &format!(
                "INSERT INTO keys (user_id, name, public, fingerprint) VALUES ($1, $2, $3, $4)
                 RETURNING {KEY_COLUMNS}"
            ),
            &[&user.id, &name, &public, &fingerprint],
        )
        .await;
    match inserted {
        Ok(row) => Ok(json(StatusCode::CREATED, &key_view(&user.username, &row)?)),
        Err(e) if is_unique_violation(&e) => {
            let detail = match e.as_db_error().and_then(|d| d.constraint()) {
                Some(c) if c.contains("fingerprint") => {
                    format!("the key {fingerprint} is already registered")
                }
                _ => format!("you already have a key named '{name}'"),
            };
            Err(ApiError::Conflict(detail))
        }
        Err(e) => Err(e.into()),
    }
}

/// Remove one of your SSH keys.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Removed")))]
pub async fn remove(ctx: Arc<Ctx>, id: String, user: AuthUser) -> Answer {
    let client = ctx.pool.get().await?;
    let n = client.execute("DELETE FROM keys WHERE user_id = $1 AND name = $2", &[&user.id, &id]).await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("key '{id}'")));
    }
    Ok(no_content())
}
