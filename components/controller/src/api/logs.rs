//! `/v1/apps/{app}/logs/` (the app's history from the loggers, and a live follow from the app's
//! public drain stream) and `/v1/apps/{app}/drains/` (where the loggers forward the stream).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bus_schema::Timestamp;
use bus_schema::drain_url::DrainUrl;
use bus_schema::messages::LogQuery;
use controller_api::{Drain, DrainCreateRequest, Endpoint};
use futures::StreamExt;
use warp::Reply;
use warp::http::StatusCode;

use super::error::{ApiError, unless_taken};
use super::processes::bus;
use super::{Answer, Listing, Paging, Query, json, no_content, ts};
use crate::ctx::{Access, AuthUser, Ctx, app_for};
use crate::model::validate;

/// How long to wait for a logger to answer a history query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most drains one app may have: each costs the loggers a connection and a buffer.
const MAX_DRAINS: i64 = 10;

/// The filters of a logs request, checked.
#[derive(Debug)]
struct Filters {
    lines: u32,
    since: Option<Timestamp>,
    process: Option<String>,
    contains: Option<String>,
    follow: bool,
}

fn filters(q: &Query) -> Result<Filters, ApiError> {
    // `log_lines` is what Deis v1 clients send (`deis logs -n`).
    let lines = match q.get("lines").or_else(|| q.get("log_lines")) {
        None => 100,
        Some(v) => {
            v.parse::<u32>().ok().filter(|n| (1..=LogQuery::MAX_LINES).contains(n)).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "lines must be a whole number from 1 to {}",
                    LogQuery::MAX_LINES
                ))
            })?
        }
    };
    let since = match q.get("since") {
        None => None,
        Some(v) => Some(Timestamp::parse_rfc3339(v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "since must be an RFC 3339 time like 2026-11-27T10:00:00Z, not {v:?}"
            ))
        })?),
    };
    let text = |key: &str, max: usize| -> Result<Option<String>, ApiError> {
        match q.get(key) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) if v.len() > max || v.contains('\0') => {
                Err(ApiError::BadRequest(format!("{key} must be at most {max} characters, without NUL")))
            }
            Some(v) => Ok(Some(v.clone())),
        }
    };
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(v) => return Err(ApiError::BadRequest(format!("follow must be true or false, not {v:?}"))),
    };
    Ok(Filters { lines, since, process: text("process", 64)?, contains: text("contains", 256)?, follow })
}

/// The app's log lines, oldest first, as `deis logs` prints them; with `follow=true` the answer
/// stays open and new lines are streamed as they come.
#[utoipa::path(get, path = "/v1/apps/{app}/logs/", tag = "logs",
    params(
        ("app" = String, Path, description = "App name"),
        ("lines" = Option<u32>, Query, description = "The newest this many lines (default 100, at most 10000)", minimum = 1, maximum = 10000),
        ("since" = Option<String>, Query, description = "Only lines at or after this RFC 3339 time"),
        ("process" = Option<String>, Query, description = "Only this process type (web), process (web.1) or source (router)"),
        ("contains" = Option<String>, Query, description = "Only lines containing this text"),
        ("follow" = Option<bool>, Query, description = "Stream new lines as they come"),
    ),
    responses((status = 200, description = "Lines: `<time> <app>[<process>]: <message>`", body = String, content_type = "text/plain")))]
pub async fn logs(ctx: Arc<Ctx>, app: String, user: AuthUser, query: Query) -> Answer {
    let filters = filters(&query)?;
    ctx.check_app_access(&user, &app).await?;
    let app = validate::app_name(&app)?;
    let bus = bus(&ctx)?.clone();
    let ns = bus.namespace().clone();
    // Listen before asking, so no line falls between the history and the live stream.
    let live = if filters.follow {
        Some(bus.subscribe_drain(&ns.drain(&app)).await.map_err(|e| ApiError::Unavailable(e.to_string()))?)
    } else {
        None
    };
    let request = LogQuery {
        app: app.clone(),
        lines: filters.lines,
        since: filters.since,
        process: filters.process.clone(),
        contains: filters.contains.clone(),
    };
    let reply = bus
        .request(&ns.log_query(), &bus.envelope(request.clone()), QUERY_TIMEOUT)
        .await
        .map_err(|e| ApiError::Unavailable(format!("no logger answered: {e}")))?
        .body;
    if let Some(error) = &reply.error {
        if reply.lines.is_empty() {
            return Err(ApiError::Unavailable(format!("the logger could not read {app}'s history: {error}")));
        }
        tracing::info!(%app, %error, "partial history");
    }
    let mut text = String::with_capacity(reply.lines.len() * 120);
    for line in &reply.lines {
        text.push_str(&line.display());
        text.push('\n');
    }
    let Some(mut live) = live else {
        return Ok(
            warp::reply::with_header(text, "content-type", "text/plain; charset=utf-8").into_response()
        );
    };
    // Lines that were both in the history and already on the live stream are sent once.
    let seen: HashSet<(String, String, String)> =
        reply.lines.iter().map(|l| (l.time.to_rfc3339(), l.source.to_string(), l.message.clone())).collect();
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<bytes::Bytes, std::io::Error>>();
    let _ = tx.unbounded_send(Ok(bytes::Bytes::from(text)));
    tokio::spawn(async move {
        let mut check = tokio::time::interval(Duration::from_secs(15));
        loop {
            tokio::select! {
                record = live.next() => match record {
                    Some(Ok(record)) => {
                        if !request.matches_record(&record) || seen.contains(&(record.time.clone(), record.process.clone(), record.message.clone())) {
                            continue;
                        }
                        let line = format!("{} {}[{}]: {}\n", record.time, record.app, record.process, record.message);
                        if tx.unbounded_send(Ok(bytes::Bytes::from(line))).is_err() {
                            return;
                        }
                    }
                    Some(Err(error)) => tracing::debug!(%error, "unreadable drain record"),
                    None => return,
                },
                // A follower that went away is noticed even when the app is silent.
                _ = check.tick() => if tx.is_closed() { return },
            }
        }
    });
    Ok(warp::reply::with_header(warp::reply::stream(rx), "content-type", "text/plain; charset=utf-8")
        .into_response())
}

/// The app's drains.
#[utoipa::path(get, path = "/v1/apps/{app}/drains/", tag = "logs", params(("app" = String, Path, description = "App name"), Paging),
    responses((status = 200, description = "Drains", body = controller_api::Page<Drain>)))]
pub async fn drains(ctx: Arc<Ctx>, app: String, user: AuthUser, paging: Paging) -> Answer {
    let (client, app) = ctx.app_to_read(&user, &app).await?;
    let listing = Listing {
        columns: "id, owner, url, created",
        from: "drains WHERE app_id = $1",
        order: "created, id",
        params: &[&app.id],
    };
    let path = Endpoint::Drains.path(&[&app.name]);
    listing
        .page(&client, &paging, &path, |r| {
            Ok(Drain {
                id: r.try_get::<_, uuid::Uuid>("id")?.to_string(),
                owner: r.try_get("owner")?,
                app: app.name.clone(),
                url: r.try_get("url")?,
                created: ts(r.try_get("created")?),
            })
        })
        .await
}

/// Add a drain: the loggers forward every line of the app's stream to it.
#[utoipa::path(post, path = "/v1/apps/{app}/drains/", tag = "logs", request_body = DrainCreateRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 201, description = "Added", body = Drain)))]
pub async fn drain_add(ctx: Arc<Ctx>, app: String, user: AuthUser, req: DrainCreateRequest) -> Answer {
    let url = DrainUrl::parse(&req.url).map_err(|e| ApiError::Invalid(e.to_string()))?;
    // Stored as given (trimmed): the logger parses it again with the same rules.
    let url_text = req.url.trim().to_owned();
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Use, false).await?;
    let count: i64 = tx
        .query_one("SELECT count(*) AS count FROM drains WHERE app_id = $1", &[&app.id])
        .await?
        .try_get("count")?;
    if count >= MAX_DRAINS {
        return Err(ApiError::Invalid(format!(
            "{} already has {MAX_DRAINS} drains, the most an app may have",
            app.name
        )));
    }
    let id = uuid::Uuid::new_v4();
    let inserted = tx
        .query_one(
            "INSERT INTO drains (id, app_id, owner, url) VALUES ($1, $2, $3, $4) RETURNING created",
            &[&id, &app.id, &user.username, &url_text],
        )
        .await;
    let row = unless_taken(inserted, || format!("{} already drains to {url}", app.name))?;
    let created = ts(row.try_get("created")?);
    let message = format!("{} added drain {url}", user.username);
    super::commit_synced(tx, &ctx, &app.name, &user.username, "drain", message).await?;
    let out = Drain { id: id.to_string(), owner: user.username, app: app.name, url: url_text, created };
    Ok(json(StatusCode::CREATED, &out))
}

/// Remove a drain.
#[utoipa::path(delete, path = "/v1/apps/{app}/drains/{id}", tag = "logs",
    params(("app" = String, Path, description = "App name"), ("id" = String, Path, description = "The drain's id")),
    responses((status = 204, description = "Removed")))]
pub async fn drain_remove(ctx: Arc<Ctx>, app: String, id: String, user: AuthUser) -> Answer {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::not_found(format!("drain {id}")))?;
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let app = app_for(&tx, &user, &app, Access::Use, false).await?;
    let row = tx
        .query_opt("DELETE FROM drains WHERE app_id = $1 AND id = $2 RETURNING url", &[&app.id, &id])
        .await?;
    let Some(row) = row else {
        return Err(ApiError::not_found(format!("drain {id} of {}", app.name)));
    };
    let url: String = row.try_get("url")?;
    let shown = DrainUrl::parse(&url).map(|u| u.to_string()).unwrap_or_else(|_| "a drain".into());
    let message = format!("{} removed drain {shown}", user.username);
    super::commit_synced(tx, &ctx, &app.name, &user.username, "drain", message).await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::messages::DrainRecord;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn filters_are_checked() {
        let f = filters(&q(&[])).unwrap();
        assert_eq!((f.lines, f.follow), (100, false));
        assert!(filters(&q(&[("lines", "0")])).is_err());
        assert!(filters(&q(&[("lines", "10001")])).is_err());
        assert!(filters(&q(&[("since", "yesterday")])).is_err());
        assert!(filters(&q(&[("follow", "maybe")])).is_err());
        assert!(filters(&q(&[("contains", &"x".repeat(300))])).is_err());
        let f = filters(&q(&[
            ("lines", "500"),
            ("since", "2026-11-27T10:00:00Z"),
            ("follow", "true"),
            ("process", "web"),
        ]))
        .unwrap();
        assert_eq!(f.lines, 500);
        assert!(f.follow && f.since.is_some());
        assert_eq!(f.process.as_deref(), Some("web"));
    }

    #[test]
    fn live_records_pass_the_same_filters() {
        let q = LogQuery {
            app: bus_schema::AppName::parse("a").unwrap(),
            lines: 1,
            since: None,
            process: Some("web".into()),
            contains: Some("GET".into()),
        };
        let rec = |source: &str, process: &str, message: &str| DrainRecord {
            v: 1,
            app: "a".into(),
            time: String::new(),
            source: source.into(),
            process: process.into(),
            stream: "stdout".into(),
            node: None,
            message: message.into(),
        };
        assert!(q.matches_record(&rec("app", "web.2", "GET /")));
        assert!(!q.matches_record(&rec("app", "worker.1", "GET /")));
        assert!(!q.matches_record(&rec("app", "web.1", "POST /")));
        assert!(!q.matches_record(&rec("router", "deis-router", "GET /")));
    }
}
