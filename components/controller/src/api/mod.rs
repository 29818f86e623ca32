//! The HTTP API: routes, the shared request plumbing (auth header, bounded body, paging), and
//! the error mapping. Handlers live in one module per resource.

pub mod apps;
pub mod auth;
pub mod builds;
pub mod certs;
pub mod config;
pub mod domains;
pub mod hooks;
pub mod keys;
pub mod logs;
pub mod perms;
pub mod processes;
pub mod settle;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::metrics::StatusLabel;

/// The Deis v1 API version this API keeps to (sent as `DEIS_API_VERSION` on every response).
pub const DEIS_API_VERSION: &str = "1.7";

/// A request body, read up to the size limit (or the reason it could not be).
pub type Body = Result<Bytes, ApiError>;
/// The query string as pairs.
pub type Query = HashMap<String, String>;

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Parses a JSON body into its request type; unknown fields and wrong types are refused.
pub fn parse_body<T: DeserializeOwned>(body: Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the request needs a JSON body".into()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    // Postgres text cannot hold NUL, and no name, key or value of ours needs one: refuse it here,
    // once, instead of failing deep inside a query.
    if has_nul(&value) {
        return Err(ApiError::Invalid("text in the request may not contain NUL (\\u0000) characters".into()));
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Like [`parse_body`], for requests whose body may be left out: empty means the defaults.
pub fn parse_optional_body<T: DeserializeOwned + Default>(body: Body) -> Result<T, ApiError> {
    let body = body?;
    if body.is_empty() { Ok(T::default()) } else { parse_body(body) }
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// RFC 3339 in UTC with microseconds, as every timestamp of the API.
/// Commits a change that etcd follows (an app's domains and log drains, which
/// `domains_sync` copies for the routers and loggers), with its event for the app's log stream:
/// the outbox relay and the sync are both woken once it is committed.
pub async fn commit_synced(
    tx: deadpool_postgres::Transaction<'_>,
    ctx: &Ctx,
    app: &str,
    actor: &str,
    action: &str,
    message: String,
) -> Result<(), ApiError> {
    crate::outbox::event(&tx, &ctx.sender, app, actor, action, message).await?;
    tx.commit().await?;
    ctx.relay_wake.notify_one();
    ctx.domains_wake.notify_one();
    Ok(())
}

pub fn ts(t: time::OffsetDateTime) -> String {
    // Fixed width (microseconds always), so timestamps line up in tables and sort as text.
    let nanos = i64::try_from(t.unix_timestamp_nanos()).unwrap_or(0);
    bus_schema::Timestamp(nanos).to_rfc3339()
}

/// Undoes percent-encoding in a path segment (key ids and usernames may hold `@` or spaces).
/// A segment that decodes to a NUL is refused, like NUL in a body.
pub fn decode_segment(s: &str) -> Result<String, ApiError> {
    let decoded = percent_decode(s);
    if decoded.contains('\0') {
        return Err(ApiError::Invalid("a path segment may not contain NUL (%00)".into()));
    }
    Ok(decoded)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `?limit=&offset=` as Deis v1 paginated.
#[derive(Debug, Clone, Copy, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// How many results per page (1 to 1000; 100 by default).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: i64,
    /// How many results to skip.
    #[param(minimum = 0)]
    pub offset: i64,
}

impl Paging {
    pub fn from_query(q: &Query) -> Result<Self, ApiError> {
        // `page_size` is what Deis v1 clients send for `limit`.
        let num = |key: &str, default: i64, min: i64, max: i64| -> Result<i64, ApiError> {
            let value = q.get(key).or_else(|| if key == "limit" { q.get("page_size") } else { None });
            match value {
                None => Ok(default),
                Some(v) => v.parse::<i64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                    ApiError::BadRequest(format!("{key} must be a whole number from {min} to {max}"))
                }),
            }
        };
        Ok(Self { limit: num("limit", 100, 1, 1000)?, offset: num("offset", 0, 0, i64::from(i32::MAX))? })
    }

    pub fn page<T>(&self, path: &str, count: i64, results: Vec<T>) -> controller_api::Page<T> {
        let next = (self.offset + self.limit < count)
            .then(|| format!("{path}?limit={}&offset={}", self.limit, self.offset + self.limit));
        let previous = (self.offset > 0)
            .then(|| format!("{path}?limit={}&offset={}", self.limit, (self.offset - self.limit).max(0)));
        controller_api::Page { count: u64::try_from(count).unwrap_or(0), next, previous, results }
    }
}

/// Reads a body up to `limit` bytes; a larger one (declared or streamed) is refused with 413.
fn body(limit: u64) -> impl Filter<Extract = (Body,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-length")
        .and(warp::body::stream())
        .then(move |declared: Option<String>, stream| collect_body(declared, stream, limit))
}

async fn collect_body<S, B>(declared: Option<String>, stream: S, limit: u64) -> Body
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if declared.as_deref().and_then(|d| d.parse::<u64>().ok()).is_some_and(|d| d > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    let mut stream = Box::pin(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        if (buf.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::TooLarge(limit));
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}

/// Turns a handler's result into a response.
async fn respond(result: impl Future<Output = Result<Response, ApiError>>) -> Response {
    result.await.unwrap_or_else(ApiError::into_response)
}

/// Every route of the API, plus the ops routes, with errors mapped to `{"detail": …}`.
pub fn routes(
    ctx: Arc<Ctx>,
    ops: BoxedFilter<(Response,)>,
    openapi: Arc<String>,
) -> BoxedFilter<(Response,)> {
    let limit = ctx.config.max_body_bytes;
    let c = {
        let ctx = ctx.clone();
        warp::any().map(move || ctx.clone())
    };
    let authz = warp::header::optional::<String>("authorization");
    let query = warp::query::<Query>();
    let body = body(limit);
    use warp::path;

    // Deis v1 clients check they talk to a controller with `GET /v1/` and want 401 for it.
    let auth_routes = path!("v1")
        .and(warp::get())
        .and(c.clone())
        .and(authz)
        .then(|c, a| respond(auth::api_root(c, a)))
        .or(path!("v1" / "auth" / "register")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|c, a, b| respond(auth::register(c, a, b))))
        .unify()
        .or(path!("v1" / "auth" / "login")
            .and(warp::post())
            .and(c.clone())
            .and(body.clone())
            .then(|c, b| respond(auth::login(c, b))))
        .unify()
        .or(path!("v1" / "auth" / "whoami")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .then(|c, a| respond(auth::whoami(c, a))))
        .unify()
        .or(path!("v1" / "auth" / "passwd")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|c, a, b| respond(auth::passwd(c, a, b))))
        .unify()
        .or(path!("v1" / "auth" / "cancel")
            .and(warp::post().or(warp::delete()).unify())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|c, a, b| respond(auth::cancel(c, a, b))))
        .unify()
        .or(path!("v1" / "auth" / "tokens")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|c, a, b| respond(auth::regenerate(c, a, b))))
        .unify()
        .or(path!("v1" / "users")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .and(query)
            .then(|c, a, q| respond(auth::users(c, a, q))))
        .unify()
        .boxed();

    let app_routes = path!("v1" / "apps")
        .and(warp::get())
        .and(c.clone())
        .and(authz)
        .and(query)
        .then(|c, a, q| respond(apps::list(c, a, q)))
        .or(path!("v1" / "apps")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|c, a, b| respond(apps::create(c, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String)
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .then(|app, c, a| respond(apps::info(c, app, a))))
        .unify()
        .or(path!("v1" / "apps" / String)
            .and(warp::delete())
            .and(c.clone())
            .and(authz)
            .then(|app, c, a| respond(apps::destroy(c, app, a))))
        .unify()
        .or(path!("v1" / "apps" / String)
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(apps::transfer(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "config")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .then(|app, c, a| respond(config::get(c, app, a))))
        .unify()
        .or(path!("v1" / "apps" / String / "config")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(config::update(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "scale")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(builds::scale(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "containers")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .and(query)
            .then(|app, c, a, q| respond(processes::containers(c, app, a, q))))
        .unify()
        .or(path!("v1" / "apps" / String / "containers" / "restart")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(processes::restart(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "containers" / String / "restart")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .then(|app, t, c, a| respond(processes::restart_at(c, app, t, None, a))))
        .unify()
        .or(path!("v1" / "apps" / String / "containers" / String / u32 / "restart")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .then(|app, t, n, c, a| respond(processes::restart_at(c, app, t, Some(n), a))))
        .unify()
        .or(path!("v1" / "apps" / String / "run")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(warp::header::optional::<String>("accept"))
            .and(body.clone())
            .then(|app, c, a, accept, b| respond(processes::run(c, app, a, accept, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "deploy")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .then(|app, c, a| respond(processes::deploy(c, app, a))))
        .unify()
        .boxed();

    let release_routes = path!("v1" / "apps" / String / "builds")
        .and(warp::get())
        .and(c.clone())
        .and(authz)
        .and(query)
        .then(|app, c, a, q| respond(builds::list(c, app, a, q)))
        .or(path!("v1" / "apps" / String / "builds")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(builds::create(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "releases")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .and(query)
            .then(|app, c, a, q| respond(builds::releases(c, app, a, q))))
        .unify()
        .or(path!("v1" / "apps" / String / "releases" / "rollback")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(builds::rollback(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "releases" / String)
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .then(|app, v, c, a| respond(builds::release(c, app, v, a))))
        .unify()
        .boxed();

    let domain_routes = path!("v1" / "apps" / String / "domains")
        .and(warp::get())
        .and(c.clone())
        .and(authz)
        .and(query)
        .then(|app, c, a, q| respond(domains::list(c, app, a, q)))
        .or(path!("v1" / "apps" / String / "domains")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(domains::add(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "domains" / String)
            .and(warp::delete())
            .and(c.clone())
            .and(authz)
            .then(|app, d, c, a| respond(domains::remove(c, app, d, a))))
        .unify()
        .or(path!("v1" / "apps" / String / "logs")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .and(query)
            .then(|app, c, a, q| respond(logs::logs(c, app, a, q))))
        .unify()
        .or(path!("v1" / "apps" / String / "drains")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .and(query)
            .then(|app, c, a, q| respond(logs::drains(c, app, a, q))))
        .unify()
        .or(path!("v1" / "apps" / String / "drains")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(logs::drain_add(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "drains" / String)
            .and(warp::delete())
            .and(c.clone())
            .and(authz)
            .then(|app, id, c, a| respond(logs::drain_remove(c, app, id, a))))
        .unify()
        .or(path!("v1" / "apps" / String / "perms")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .then(|app, c, a| respond(perms::list(c, app, a))))
        .unify()
        .or(path!("v1" / "apps" / String / "perms")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|app, c, a, b| respond(perms::create(c, app, a, b))))
        .unify()
        .or(path!("v1" / "apps" / String / "perms" / String)
            .and(warp::delete())
            .and(c.clone())
            .and(authz)
            .then(|app, u, c, a| respond(perms::delete(c, app, u, a))))
        .unify()
        .or(path!("v1" / "admin" / "perms")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .and(query)
            .then(|c, a, q| respond(perms::admins(c, a, q))))
        .unify()
        .or(path!("v1" / "admin" / "perms")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|c, a, b| respond(perms::admin_create(c, a, b))))
        .unify()
        .or(path!("v1" / "admin" / "perms" / String)
            .and(warp::delete())
            .and(c.clone())
            .and(authz)
            .then(|u, c, a| respond(perms::admin_delete(c, u, a))))
        .unify()
        .boxed();

    let cert_key_routes = path!("v1" / "certs")
        .and(warp::get())
        .and(c.clone())
        .and(authz)
        .and(query)
        .then(|c, a, q| respond(certs::list(c, a, q)))
        .or(path!("v1" / "certs")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|c, a, b| respond(certs::add(c, a, b))))
        .unify()
        .or(path!("v1" / "certs" / String)
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .then(|n, c, a| respond(certs::info(c, n, a))))
        .unify()
        .or(path!("v1" / "certs" / String)
            .and(warp::delete())
            .and(c.clone())
            .and(authz)
            .then(|n, c, a| respond(certs::remove(c, n, a))))
        .unify()
        .or(path!("v1" / "certs" / String / "domain")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|n, c, a, b| respond(certs::attach(c, n, a, b))))
        .unify()
        .or(path!("v1" / "certs" / String / "domain" / String)
            .and(warp::delete())
            .and(c.clone())
            .and(authz)
            .then(|n, d, c, a| respond(certs::detach(c, n, d, a))))
        .unify()
        .or(path!("v1" / "keys")
            .and(warp::get())
            .and(c.clone())
            .and(authz)
            .and(query)
            .then(|c, a, q| respond(keys::list(c, a, q))))
        .unify()
        .or(path!("v1" / "keys")
            .and(warp::post())
            .and(c.clone())
            .and(authz)
            .and(body.clone())
            .then(|c, a, b| respond(keys::add(c, a, b))))
        .unify()
        .or(path!("v1" / "keys" / String)
            .and(warp::delete())
            .and(c.clone())
            .and(authz)
            .then(|k, c, a| respond(keys::remove(c, k, a))))
        .unify()
        .boxed();

    // Only the builder may use these, with its own secret.
    let builder_auth = warp::header::optional::<String>("x-deis-builder-auth");
    let hook_routes = path!("v1" / "hooks" / "key" / String)
        .and(warp::get())
        .and(c.clone())
        .and(builder_auth)
        .then(|f, c, a| respond(hooks::key_owner(c, f, a)))
        .or(path!("v1" / "hooks" / "push")
            .and(warp::post())
            .and(c.clone())
            .and(builder_auth)
            .and(body.clone())
            .then(|c, a, b| respond(hooks::push(c, a, b))))
        .unify()
        .or(path!("v1" / "hooks" / "apps" / String / "builds" / String)
            .and(warp::get())
            .and(c.clone())
            .and(builder_auth)
            .then(|app, b, c, a| respond(hooks::build_status(c, app, b, a))))
        .unify()
        .boxed();

    let doc = path!("v1" / "openapi.json").and(warp::get()).map(move || {
        warp::reply::with_header(openapi.as_str().to_owned(), "content-type", "application/json")
            .into_response()
    });

    let metrics = ctx.metrics.clone();
    let changes = auth_routes
        .or(app_routes)
        .unify()
        .or(release_routes)
        .unify()
        .or(domain_routes)
        .unify()
        .or(cert_key_routes)
        .unify()
        .or(hook_routes)
        .unify()
        .or(doc)
        .unify()
        .or(ops)
        .unify();
    // A change answers once it runs, unless the client asked for the answer at once (settle.rs).
    warp::header::headers_cloned()
        .and(c.clone())
        .and(changes)
        .then(|headers, ctx, resp| settle::settle(ctx, headers, resp))
        .recover(rejection)
        .unify()
        .map(move |mut resp: Response| {
            metrics.responses.get_or_create(&StatusLabel { status: resp.status().as_u16() }).inc();
            // Deis v1 clients compare this with their own API version and warn on every command
            // when it differs or is missing; v1.13 sent both names.
            let headers = resp.headers_mut();
            let version = warp::http::HeaderValue::from_static(DEIS_API_VERSION);
            headers.insert(warp::http::HeaderName::from_static("deis_api_version"), version.clone());
            headers.insert(warp::http::HeaderName::from_static("x_deis_api_version"), version);
            resp
        })
        .boxed()
}

/// Maps warp's own rejections (no such route, wrong method, bad query) to JSON errors.
async fn rejection(r: Rejection) -> Result<Response, Infallible> {
    let err = if r.is_not_found() {
        ApiError::NotFound("no such endpoint; the API is described at /v1/openapi.json".into())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            &controller_api::ErrorBody { detail: "method not allowed on this endpoint".into() },
        ));
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        ApiError::BadRequest(format!("invalid query string: {e}"))
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        ApiError::BadRequest(e.to_string())
    } else {
        ApiError::BadRequest(format!("bad request: {r:?}"))
    };
    Ok(err.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_is_bounded() {
        let q = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Query>()
        };
        let p = Paging::from_query(&q(&[])).unwrap();
        assert_eq!((p.limit, p.offset), (100, 0));
        assert!(Paging::from_query(&q(&[("limit", "0")])).is_err());
        assert!(Paging::from_query(&q(&[("limit", "x")])).is_err());
        assert!(Paging::from_query(&q(&[("offset", "-1")])).is_err());
        assert_eq!(Paging::from_query(&q(&[("page_size", "7")])).unwrap().limit, 7, "Deis v1's name");
        assert!(Paging::from_query(&q(&[("page_size", "0")])).is_err());
        let p = Paging::from_query(&q(&[("limit", "2"), ("offset", "2")])).unwrap();
        let page = p.page("/v1/apps/", 5, vec![1, 2]);
        assert_eq!(page.next.as_deref(), Some("/v1/apps/?limit=2&offset=4"));
        assert_eq!(page.previous.as_deref(), Some("/v1/apps/?limit=2&offset=0"));
    }

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(decode_segment("alice%40laptop").unwrap(), "alice@laptop");
        assert_eq!(decode_segment("a%2").unwrap(), "a%2");
        assert_eq!(decode_segment("%zz").unwrap(), "%zz");
        assert!(decode_segment("a%00b").is_err());
    }

    #[test]
    fn nul_anywhere_in_a_body_is_refused() {
        assert!(matches!(
            parse_body::<serde_json::Value>(Bytes::from_static(br#"{"a": ["x\u0000"]}"#)),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            parse_body::<serde_json::Value>(Bytes::from_static(br#"{"\u0000": 1}"#)),
            Err(ApiError::Invalid(_))
        ));
        assert!(parse_body::<serde_json::Value>(Bytes::from_static(br#"{"a": "\\u0000"}"#)).is_ok());
    }
}
