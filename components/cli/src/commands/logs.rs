//! `deis logs` (history and follow), the app's log drains (`drains:*`), and credentials for
//! reading logs straight from NATS (`logs:credentials`).

use std::time::Duration;

use anyhow::{Result, bail};
use controller_api::{LogCredentials, LogsQuery};

use crate::cli::{LogsArgs, LogsCredentialsArgs};
use crate::context::{Ctx, out};
use crate::table::{columns, header};

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let since = args.since.as_deref().map(since_time).transpose()?;
    let query = LogsQuery {
        lines: Some(args.lines),
        since,
        process: args.process,
        contains: args.contains,
        follow: args.follow,
    };
    let mut failed = None;
    session
        .client
        .logs(&app, &query, |line| {
            if failed.is_none()
                && let Err(e) = out(&format!("{line}\n"))
            {
                failed = Some(e);
            }
        })
        .await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `--since`: an RFC 3339 time as it is, or an age (`90s`, `10m`, `2h`, `1d`) before now.
fn since_time(value: &str) -> Result<String> {
    if time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).is_ok() {
        return Ok(value.to_owned());
    }
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let n: u64 = match number.parse() {
        Ok(n) => n,
        Err(_) => bail!("--since takes an RFC 3339 time (2026-11-27T10:00:00Z) or an age like 10m, 2h, 1d"),
    };
    let secs = match unit {
        "s" => n,
        "m" | "" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("--since: unknown unit {unit:?}; use s, m, h or d"),
    };
    let at = time::OffsetDateTime::now_utc() - Duration::from_secs(secs);
    Ok(at.format(&time::format_description::well_known::Rfc3339)?)
}

/// `deis logs:credentials [--revoke]`: issues (or revokes) the user's NATS credentials for the
/// drain streams of the apps they may read.
pub async fn credentials(ctx: &Ctx, args: LogsCredentialsArgs) -> Result<()> {
    let session = ctx.session()?;
    if args.revoke {
        session.client.log_credentials_revoke().await?;
        return ctx.note("Revoking log credentials... done");
    }
    let creds = session.client.log_credentials().await?;
    ctx.show(&creds, render_credentials)
}

fn render_credentials(creds: &LogCredentials) -> String {
    let mut text = header("Log Credentials");
    let mut rows = vec![
        ["username:".to_owned(), creds.username.clone()],
        ["password:".to_owned(), creds.password.clone()],
        ["expires in:".to_owned(), format!("{}s per connection", creds.expires_in)],
    ];
    for (i, subject) in creds.subjects.iter().enumerate() {
        rows.push([if i == 0 { "subjects:" } else { "" }.to_owned(), subject.clone()]);
    }
    text.push_str(&columns(&rows));
    text.push('\n');
    match creds.subjects.first() {
        None => text.push_str(
            "You may read no app's logs yet: apps you create, or that are shared with you, are\n\
             granted the next time you connect.\n",
        ),
        Some(subject) => {
            text.push_str("Subscribe to an app's log lines (JSON) with any NATS client, e.g.:\n");
            text.push_str(&format!(
                "  nats sub --server <the platform's NATS> --user {} --password {} '{subject}'\n",
                creds.username, creds.password
            ));
        }
    }
    text.push_str(
        "The password is shown only now. Running this again replaces it; \
         `deis logs:credentials --revoke` ends it.\n",
    );
    text
}

pub async fn drains_list(ctx: &Ctx) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let drains = session.client.drains(&app).await?;
    ctx.show(&drains, |drains| {
        let mut text = header(&format!("{app} Drains"));
        if drains.is_empty() {
            text.push_str("No drains\n");
            return text;
        }
        let mut rows = vec![["URL", "Id", "Owner", "Created"].map(str::to_owned)];
        for d in drains {
            rows.push([d.url.clone(), d.id.clone(), d.owner.clone(), d.created.clone()]);
        }
        text.push_str(&columns(&rows));
        text
    })
}

pub async fn drains_add(ctx: &Ctx, url: &str) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let drain = session.client.drain_add(&app, url).await?;
    ctx.note(&format!("Adding drain {} to {app}... done", drain.url))?;
    ctx.json_only(&drain)
}

pub async fn drains_remove(ctx: &Ctx, url_or_id: &str) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let drains = session.client.drains(&app).await?;
    let Some(drain) = drains.iter().find(|d| d.url == url_or_id.trim() || d.id == url_or_id.trim()) else {
        bail!("{app} has no drain {url_or_id}; `deis drains` lists them");
    };
    session.client.drain_remove(&app, &drain.id).await?;
    ctx.note(&format!("Removing drain {} from {app}... done", drain.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_show_how_to_subscribe() {
        let creds = LogCredentials {
            username: "logs-alice".into(),
            password: "f00d".into(),
            subjects: vec!["deis.drain.shop".into(), "deis.drain.blog".into()],
            expires_in: 600,
        };
        let text = render_credentials(&creds);
        assert!(
            text.starts_with("=== Log Credentials\nusername:    logs-alice\npassword:    f00d\n"),
            "{text}"
        );
        assert!(text.contains("subjects:    deis.drain.shop\n             deis.drain.blog\n"), "{text}");
        assert!(text.contains("--user logs-alice --password f00d 'deis.drain.shop'"), "{text}");
        let none = render_credentials(&LogCredentials { subjects: vec![], ..creds });
        assert!(none.contains("no app's logs yet"), "{none}");
    }

    #[test]
    fn since_takes_times_and_ages() {
        assert_eq!(since_time("2026-11-27T10:00:00Z").unwrap(), "2026-11-27T10:00:00Z");
        let ten_minutes = since_time("10m").unwrap();
        let t = time::OffsetDateTime::parse(&ten_minutes, &time::format_description::well_known::Rfc3339)
            .unwrap();
        let age = time::OffsetDateTime::now_utc() - t;
        assert!(age.whole_seconds() >= 599 && age.whole_seconds() < 700);
        assert!(since_time("yesterday").is_err());
        assert!(since_time("5w").is_err());
    }
}
