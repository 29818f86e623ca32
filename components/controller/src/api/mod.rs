//! The HTTP API: routes, the shared request plumbing (auth header, bounded body, paging), and
//! the error mapping. Handlers live in one module per resource.

pub mod apps;
pub mod auth;
pub mod builds;
pub mod certs;
pub mod config;
pub mod domains;
pub mod error;
pub mod hooks;
pub mod keys;
pub mod logs;
mod openapi;
pub mod perms;
pub mod processes;
pub mod settle;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use controller_api::{BUILDER_AUTH_HEADER, Endpoint, Unmatched};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;
use warp::filters::BoxedFilter;
use warp::filters::path::FullPath;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use self::error::ApiError;
use crate::ctx::{AuthUser, Ctx};
use crate::metrics::StatusLabel;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// The Deis v1 API version this API keeps to (sent as `DEIS_API_VERSION` on every response).
pub const DEIS_API_VERSION: &str = "1.7";

/// The OpenAPI document of the whole API (served at `/v1/openapi.json`).
pub fn openapi_document() -> String {
    openapi::document()
}

/// What a handler answers: a response, or the error to answer instead.
pub type Answer = Result<Response, ApiError>;

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
    ctx.commit_with_event(tx, app, actor, action, message).await?;
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
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    if decoded.contains('\0') {
        return Err(ApiError::Invalid("a path segment may not contain NUL (%00)".into()));
    }
    Ok(decoded)
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

/// One table's rows as a list endpoint pages them: what to read, from where, in which order.
#[derive(Debug)]
pub struct Listing<'a> {
    /// The select list, e.g. `owner, domain, created`.
    pub columns: &'a str,
    /// The table and its filter, e.g. `domains WHERE app_id = $1`.
    pub from: &'a str,
    pub order: &'a str,
    pub params: &'a [&'a (dyn ToSql + Sync)],
}

impl Listing<'_> {
    /// Answers one page: the total count, then the page's rows (`LIMIT`/`OFFSET` are bound as
    /// the next two parameters), each turned into the API's type by `view`.
    pub async fn page<T: Serialize>(
        &self,
        client: &impl GenericClient,
        paging: &Paging,
        path: &str,
        view: impl FnMut(&Row) -> Result<T, tokio_postgres::Error>,
    ) -> Answer {
        let count: i64 = client
            .query_one(&format!("SELECT count(*) AS count FROM {}", self.from), self.params)
            .await?
            .try_get("count")?;
        let n = self.params.len();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {} LIMIT ${} OFFSET ${}",
            self.columns,
            self.from,
            self.order,
            n + 1,
            n + 2
        );
        let mut params = self.params.to_vec();
        params.extend([&paging.limit as &(dyn ToSql + Sync), &paging.offset]);
        let rows = client.query(&sql, &params).await?;
        let results = rows.iter().map(view).collect::<Result<Vec<T>, _>>()?;
        Ok(json(StatusCode::OK, &paging.page(path, count, results)))
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
    // The endpoint table (`controller_api::Endpoint`) is the one place paths are written; every
    // request that is no ops route is matched against it.
    let api = c
        .clone()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(body(limit))
        .then(move |ctx, method: Method, path: FullPath, query, headers, peer, body| {
            let req = Request { ctx, headers, peer, query, body, openapi: openapi.clone() };
            respond(dispatch(req, method, path))
        });
    let metrics = ctx.metrics.clone();
    let changes = ops.or(api).unify();
    // A change answers once it runs, unless the client asked for the answer at once (settle.rs).
    warp::header::headers_cloned()
        .and(c)
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

/// One API request as the handlers take it.
#[derive(Debug)]
pub struct Request {
    pub ctx: Arc<Ctx>,
    headers: HeaderMap,
    /// The connection's other end (the router, in a cluster).
    peer: Option<std::net::SocketAddr>,
    /// The raw query string.
    query: String,
    body: Body,
    openapi: Arc<String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        // Header names are case-insensitive; the map keys them in lower case.
        self.headers.get(name.to_ascii_lowercase().as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    fn authz(&self) -> Option<String> {
        self.header("authorization")
    }

    /// The client's address, for throttling logins.
    fn client_address(&self) -> Option<std::net::IpAddr> {
        // With the header sent several times, the last one holds the last entry.
        let forwarded =
            self.headers.get_all("x-forwarded-for").iter().next_back().and_then(|v| v.to_str().ok());
        auth::client_address(forwarded, self.peer)
    }

    /// The caller, from the `Authorization` header.
    async fn user(&self) -> Result<AuthUser, ApiError> {
        Ok(self.ctx.authenticate(self.authz()).await?)
    }

    /// The body as the handler's request type.
    fn json<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        parse_body(self.body?)
    }

    /// The body as the handler's request type; no body means its defaults.
    fn json_or_default<T: DeserializeOwned + Default>(self) -> Result<T, ApiError> {
        parse_optional_body(self.body)
    }

    fn paging(&self) -> Result<Paging, ApiError> {
        Paging::from_query(&self.query()?)
    }

    fn query(&self) -> Result<Query, ApiError> {
        serde_urlencoded::from_str(&self.query)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
    }
}

/// The request's path parameters, percent-decoded, in the order of the endpoint's template.
struct Params(std::vec::IntoIter<String>);

impl Params {
    fn decode(raw: &[&str]) -> Result<Self, ApiError> {
        let decoded = raw.iter().map(|s| decode_segment(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self(decoded.into_iter()))
    }

    /// The next parameter; the endpoint table guarantees its template has as many as are taken.
    fn next(&mut self) -> String {
        self.0.next().unwrap_or_default()
    }
}

async fn dispatch(req: Request, method: Method, path: FullPath) -> Answer {
    let (endpoint, raw) = Endpoint::recognise(method.as_str(), path.as_str()).map_err(|miss| match miss {
        Unmatched::NotFound => {
            ApiError::NotFound("no such endpoint; the API is described at /v1/openapi.json".into())
        }
        Unmatched::MethodNotAllowed => ApiError::MethodNotAllowed,
    })?;
    let params = Params::decode(&raw)?;
    let span = tracing::debug_span!("request", %endpoint);
    handle(endpoint, params, req).instrument(span).await
}

/// Calls the endpoint's handler with what it takes from the request.
async fn handle(endpoint: Endpoint, mut p: Params, r: Request) -> Answer {
    use Endpoint as E;
    let (a, c) = (r.authz(), r.ctx.clone());
    match endpoint {
        E::ApiRoot => auth::api_root(c, a).await,
        E::OpenApi => {
            Ok(warp::reply::with_header(r.openapi.as_str().to_owned(), "content-type", "application/json")
                .into_response())
        }
        E::Register => auth::register(c, a, r.client_address(), r.body).await,
        E::Login => auth::login(c, r.client_address(), r.body).await,
        E::Whoami => auth::whoami(c, r.user().await?).await,
        E::Passwd => auth::passwd(c, r.user().await?, r.json()?).await,
        E::Cancel | E::CancelV1 => auth::cancel(c, r.user().await?, r.json_or_default()?).await,
        E::RegenerateToken => auth::regenerate(c, r.user().await?, r.json_or_default()?).await,
        E::LogCredentials => auth::log_credentials_issue(c, r.user().await?).await,
        E::LogCredentialsRevoke => auth::log_credentials_revoke(c, r.user().await?).await,
        E::Users => auth::users(c, r.user().await?, r.paging()?).await,
        E::Apps => apps::list(c, r.user().await?, r.paging()?).await,
        E::AppCreate => apps::create(c, r.user().await?, r.json_or_default()?).await,
        E::App => apps::info(c, p.next(), r.user().await?).await,
        E::AppDestroy => apps::destroy(c, p.next(), r.user().await?).await,
        E::AppTransfer => apps::transfer(c, p.next(), r.user().await?, r.json()?).await,
        E::Config => config::get(c, p.next(), r.user().await?).await,
        E::ConfigUpdate => config::update(c, p.next(), r.user().await?, r.json()?).await,
        E::Scale => builds::scale(c, p.next(), r.user().await?, r.json()?).await,
        E::Containers => processes::containers(c, p.next(), r.user().await?, r.paging()?).await,
        E::Restart => processes::restart(c, p.next(), r.user().await?, r.json_or_default()?).await,
        E::RestartType => processes::restart_at(c, p.next(), p.next(), None, r.user().await?).await,
        E::RestartOne => {
            let (app, ptype) = (p.next(), p.next());
            let num = p.next().parse::<u32>().map_err(|_| {
                ApiError::NotFound(format!(
                    "no such endpoint: {} wants a container number",
                    endpoint.template()
                ))
            })?;
            processes::restart_at(c, app, ptype, Some(num), r.user().await?).await
        }
        E::Run => processes::run(c, p.next(), r.user().await?, r.header("accept"), r.body).await,
        E::Deploy => processes::deploy(c, p.next(), r.user().await?).await,
        E::Builds => builds::list(c, p.next(), r.user().await?, r.paging()?).await,
        E::BuildCreate => builds::create(c, p.next(), r.user().await?, r.json()?).await,
        E::Releases => builds::releases(c, p.next(), r.user().await?, r.paging()?).await,
        E::Rollback => builds::rollback(c, p.next(), r.user().await?, r.json_or_default()?).await,
        E::Release => builds::release(c, p.next(), p.next(), r.user().await?).await,
        E::Domains => domains::list(c, p.next(), r.user().await?, r.paging()?).await,
        E::DomainAdd => domains::add(c, p.next(), r.user().await?, r.json()?).await,
        E::DomainRemove => domains::remove(c, p.next(), p.next(), r.user().await?).await,
        E::Logs => logs::logs(c, p.next(), r.user().await?, r.query()?).await,
        E::Drains => logs::drains(c, p.next(), r.user().await?, r.paging()?).await,
        E::DrainAdd => logs::drain_add(c, p.next(), r.user().await?, r.json()?).await,
        E::DrainRemove => logs::drain_remove(c, p.next(), p.next(), r.user().await?).await,
        E::Perms => perms::list(c, p.next(), r.user().await?).await,
        E::PermCreate => perms::create(c, p.next(), r.user().await?, r.json()?).await,
        E::PermDelete => perms::delete(c, p.next(), p.next(), r.user().await?).await,
        E::Admins => perms::admins(c, r.user().await?, r.paging()?).await,
        E::AdminCreate => perms::admin_create(c, r.user().await?, r.body).await,
        E::AdminDelete => perms::admin_delete(c, p.next(), r.user().await?).await,
        E::Certs => certs::list(c, r.user().await?, r.paging()?).await,
        E::CertAdd => certs::add(c, r.user().await?, r.json()?).await,
        E::Cert => certs::info(c, p.next(), r.user().await?).await,
        E::CertRemove => certs::remove(c, p.next(), r.user().await?).await,
        E::CertAttach => certs::attach(c, p.next(), r.user().await?, r.json()?).await,
        E::CertDetach => certs::detach(c, p.next(), p.next(), r.user().await?).await,
        E::Keys => keys::list(c, r.user().await?, r.paging()?).await,
        E::KeyAdd => keys::add(c, r.user().await?, r.json()?).await,
        E::KeyRemove => keys::remove(c, p.next(), r.user().await?).await,
        E::HookKeyOwner => hooks::key_owner(c, p.next(), r.header(BUILDER_AUTH_HEADER)).await,
        E::HookPush => hooks::push(c, r.header(BUILDER_AUTH_HEADER), r.body).await,
        E::HookBuildStatus => hooks::build_status(c, p.next(), p.next(), r.header(BUILDER_AUTH_HEADER)).await,
    }
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
