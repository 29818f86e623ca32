//! Failed logins and lockouts in Postgres, shared by every controller instance. The in-memory
//! [`Throttle`](super::auth::Throttle) of each instance still limits guesses being checked at
//! once; this table makes the counts and the lockouts hold whichever instance a request reaches.
//! Same rule as the throttle: `max_failures` in a row lock a key out for the first lockout, each
//! further failure doubles it (at most an hour), and failures are forgotten 15 minutes after the
//! last one.

use std::net::IpAddr;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::Error;
use super::auth::{address_key, login_key};

/// The key a username's failures are kept under.
pub fn user_key(username: &str) -> Vec<u8> {
    let mut key = vec![b'u'];
    key.extend_from_slice(&login_key(username));
    key
}

/// The key a client address's failures are kept under.
pub fn address(ip: IpAddr) -> Vec<u8> {
    let mut key = vec![b'a'];
    key.extend_from_slice(address_key(ip).to_string().as_bytes());
    key
}

/// How long the longest lockout among `keys` still lasts, if any is locked out.
pub async fn wait(pool: &Pool, keys: &[Vec<u8>]) -> Result<Option<Duration>, Error> {
    let db = pool.get().await?;
    let row = db
        .query_one(
            "SELECT max(EXTRACT(EPOCH FROM (locked_until - now())))::float8 AS wait
             FROM login_lockouts WHERE key = ANY($1) AND locked_until > now()",
            &[&keys],
        )
        .await?;
    let wait: Option<f64> = row.try_get("wait")?;
    Ok(wait.filter(|w| *w > 0.0).map(|w| Duration::from_secs_f64(w.min(3600.0)).max(Duration::from_secs(1))))
}

/// Counts a failure of `key`; the lockout it brings, if any.
pub async fn failed(
    pool: &Pool,
    key: &[u8],
    max_failures: u32,
    first_lockout: Duration,
) -> Result<Option<Duration>, Error> {
    let db = pool.get().await?;
    let max = i32::try_from(max_failures.max(1)).unwrap_or(i32::MAX);
    let first = first_lockout.as_secs_f64().max(1.0);
    // One statement, so concurrent failures on several instances each count.
    let row = db
        .query_one(
            "INSERT INTO login_lockouts AS l (key, failures, last_failure)
             VALUES ($1, 1, now())
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN l.last_failure < now() - interval '15 minutes'
                                      AND (l.locked_until IS NULL OR l.locked_until < now() - interval '15 minutes')
                                 THEN 1 ELSE l.failures + 1 END,
                 last_failure = now()
             RETURNING failures",
            &[&key],
        )
        .await?;
    let failures: i32 = row.try_get("failures")?;
    if failures < max {
        return Ok(None);
    }
    let doublings = u32::try_from(failures - max).unwrap_or(0).min(12);
    let lockout = (first * f64::from(1u32 << doublings)).min(3600.0);
    db.execute(
        "UPDATE login_lockouts SET locked_until = now() + make_interval(secs => $2) WHERE key = $1",
        &[&key, &lockout],
    )
    .await?;
    Ok(Some(Duration::from_secs_f64(lockout)))
}

/// Forgets `key`'s failures (a user who logged in).
pub async fn reset(pool: &Pool, key: &[u8]) -> Result<(), Error> {
    pool.get().await?.execute("DELETE FROM login_lockouts WHERE key = $1", &[&key]).await?;
    Ok(())
}
