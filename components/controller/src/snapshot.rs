//! Answers the scheduler's desired-state requests from Postgres: every app's current release
//! and formation. A new scheduler leader starts from this, then follows the events. It asks
//! page by page (`desired-state-page`, pages cut by size, so no tenant's large config can make
//! the answer too big for the bus); the whole snapshot in one reply is still answered for older
//! schedulers.

use std::collections::BTreeMap;
use std::sync::Arc;

use bus_schema::Bus;
use bus_schema::messages::{AppDesired, DesiredStatePage, DesiredStateSnapshot};
use bus_schema::{AppName, Request, Subject, codec};
use futures::StreamExt;
use service_kit::Shutdown;

use crate::ctx::{APP_ROW_COLUMNS, AppRow, Ctx};
use crate::model::Error;
use crate::model::{releases, validate};

/// Serves both the whole snapshot and its pages, until shutdown.
pub async fn serve(ctx: Arc<Ctx>, bus: Bus, shutdown: Shutdown) {
    let ns = bus.namespace().clone();
    let pages = answer(&ctx, &bus, &shutdown, ns.desired_state_page(), "a desired-state page", |req| {
        let (ctx, after) = (ctx.clone(), req.after.clone());
        async move { page(&ctx, after.as_ref(), ctx.config.snapshot_page_bytes).await }
    });
    let whole = answer(&ctx, &bus, &shutdown, ns.desired_state(), "the desired-state snapshot", |_| {
        let ctx = ctx.clone();
        async move { snapshot(&ctx).await }
    });
    tokio::join!(pages, whole);
}

/// Answers each request on `subject` with what `make` builds from it. When it cannot be built
/// there is no answer: the scheduler asks again, and a partial answer would be worse.
async fn answer<R, F, Fut>(
    ctx: &Ctx,
    bus: &Bus,
    shutdown: &Shutdown,
    subject: Subject<R>,
    what: &str,
    make: F,
) where
    R: Request,
    F: Fn(&R) -> Fut,
    Fut: Future<Output = Result<R::Reply, Error>>,
{
    let mut requests = match bus.subscribe_subject(&subject).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot answer requests for {what}");
            return;
        }
    };
    loop {
        let next = tokio::select! {
            n = requests.next() => n,
            _ = shutdown.cancelled() => return,
        };
        let Some(next) = next else { return };
        let request = match next {
            Ok(r) => r,
            Err((subject, error)) => {
                tracing::warn!(%subject, %error, "malformed request for {what}");
                ctx.metrics.bad_bus_messages.inc();
                continue;
            }
        };
        match make(&request.envelope.body).await {
            Ok(reply) => {
                if let Err(error) = bus.reply(&request, reply).await {
                    tracing::warn!(%error, "answering a request for {what}");
                }
            }
            Err(error) => tracing::warn!(%error, "building {what}"),
        }
    }
}

/// Rows read for one page at most: a page of small apps stops here.
const PAGE_ROWS: i64 = 500;

/// The whole desired state, page after page.
pub async fn snapshot(ctx: &Ctx) -> Result<DesiredStateSnapshot, Error> {
    let mut apps = Vec::new();
    let mut after = None;
    loop {
        let page = page(ctx, after.as_ref(), usize::MAX).await?;
        apps.extend(page.apps);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(DesiredStateSnapshot { apps }),
        }
    }
}

/// The apps after `after` in name order, as many as fit in `budget` bytes (at least one, so a
/// single app larger than the budget still gets through on a page of its own).
pub async fn page(ctx: &Ctx, after: Option<&AppName>, budget: usize) -> Result<DesiredStatePage, Error> {
    let client = ctx.pool.get().await?;
    let after = after.map_or("", AppName::as_str);
    let rows = client
        .query(
            &format!(
                "SELECT {APP_ROW_COLUMNS}, a.structure, a.structure_generation
                 FROM apps a JOIN users u ON u.id = a.owner_id WHERE a.name > $1 ORDER BY a.name
                 LIMIT {PAGE_ROWS}"
            ),
            &[&after],
        )
        .await?;
    // A full batch of rows means there may be more, after the last one read.
    let mut next = if rows.len() == PAGE_ROWS as usize {
        rows.last().map(|r| r.try_get::<_, String>("name")).transpose()?.and_then(|n| AppName::parse(&n).ok())
    } else {
        None
    };
    let mut apps = Vec::new();
    let mut used = 0usize;
    for row in rows {
        let app = AppRow::from_row(&row)?;
        let Some(release) = releases::latest(&client, app.id).await? else { continue };
        let spec = releases::spec_of(&client, &app, &release).await?;
        let structure: BTreeMap<String, u32> =
            serde_json::from_value(row.try_get("structure")?).unwrap_or_default();
        let mut formation = BTreeMap::new();
        for (ptype, n) in structure {
            formation.insert(validate::process_type(&ptype)?, n);
        }
        let generation: i64 = row.try_get("structure_generation")?;
        let desired =
            AppDesired { release: spec, formation, generation: u64::try_from(generation).unwrap_or(0) };
        let size = codec::body_len(&desired).map_err(Error::Internal)?;
        if !apps.is_empty() && used.saturating_add(size) > budget {
            // The page is full: the next one starts after the last app it holds.
            next = apps.last().map(|a: &AppDesired| a.release.app.clone());
            break;
        }
        used = used.saturating_add(size);
        apps.push(desired);
    }
    Ok(DesiredStatePage { apps, next })
}
