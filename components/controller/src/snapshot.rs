//! Answers the scheduler's desired-state requests from Postgres: every app's current release
//! and formation. A new scheduler leader starts from this, then follows the events.

use std::collections::BTreeMap;
use std::sync::Arc;

use bus_schema::Bus;
use bus_schema::messages::{AppDesired, DesiredStateSnapshot};
use futures::StreamExt;
use service_kit::Shutdown;

use crate::ctx::{APP_ROW_COLUMNS, AppRow, Ctx};
use crate::model::Error;
use crate::model::{releases, validate};

pub async fn serve(ctx: Arc<Ctx>, bus: Bus, shutdown: Shutdown) {
    let subject = bus.namespace().desired_state();
    let mut requests = match bus.subscribe_subject(&subject).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot answer desired-state requests");
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
                tracing::warn!(%subject, %error, "malformed desired-state request");
                ctx.metrics.bad_bus_messages.inc();
                continue;
            }
        };
        match snapshot(&ctx).await {
            Ok(snapshot) => {
                if let Err(error) = bus.reply(&request, snapshot).await {
                    tracing::warn!(%error, "answering a desired-state request");
                }
            }
            // No answer: the scheduler retries, and a partial snapshot would be worse.
            Err(error) => tracing::warn!(%error, "building the desired-state snapshot"),
        }
    }
}

pub async fn snapshot(ctx: &Ctx) -> Result<DesiredStateSnapshot, Error> {
    let client = ctx.pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {APP_ROW_COLUMNS}, a.structure, a.structure_generation
                 FROM apps a JOIN users u ON u.id = a.owner_id ORDER BY a.name"
            ),
            &[],
        )
        .await?;
    let mut apps = Vec::with_capacity(rows.len());
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
        apps.push(AppDesired {
            release: spec,
            formation,
            generation: u64::try_from(generation).unwrap_or(0),
        });
    }
    Ok(DesiredStateSnapshot { apps })
}
