//! Per-user log credentials (`deis logs:credentials`): a NATS user name and a random password with
//! which a log consumer reads, straight from the bus, the drain streams of the apps its user may
//! read. The NATS server asks the controller about each connection (auth callout), which calls
//! [`authorize`]; the grant is the apps of that moment, so sharing or unsharing an app, or a
//! transfer, applies to the next connection without issuing anything again.

use std::sync::LazyLock;

use bus_schema::{AppName, Namespace};
use deadpool_postgres::{GenericClient, Pool};

use crate::model::Error;
use crate::model::auth;
use crate::model::validate;

/// What every log consumer's NATS user name starts with. None of the platform's own NATS users
/// (controller, scheduler, agent, router, logger, builder, drain, route, auth) does, so a user
/// cannot take one of their names or their permissions.
pub const NATS_USER_PREFIX: &str = "logs-";

/// The NATS user name of `username`'s log credentials: `logs-<username>`. Usernames are letters,
/// digits and `@.+-_` (checked again here), none of which NATS treats specially in a user name.
pub fn nats_user(username: &str) -> Result<String, Error> {
    validate::username(username)?;
    Ok(format!("{NATS_USER_PREFIX}{username}"))
}

/// The username behind a NATS user name, if it is one of [`nats_user`]'s.
fn username_of(nats_user: &str) -> Option<&str> {
    nats_user.strip_prefix(NATS_USER_PREFIX).filter(|name| validate::username(name).is_ok())
}

/// Newly issued credentials: the password is here once, only its hash is stored.
#[derive(Debug, Clone)]
pub struct Issued {
    pub nats_user: String,
    pub password: String,
    /// The drain subjects the user may read now.
    pub subjects: Vec<String>,
}

/// Issues `username`'s log credentials, replacing any they had (whose password stops working).
pub async fn issue<C: GenericClient>(
    client: &C,
    ns: &Namespace,
    user_id: i64,
    username: &str,
    is_superuser: bool,
) -> Result<Issued, Error> {
    let nats_user = nats_user(username)?;
    let password = auth::new_token();
    client
        .execute(
            "INSERT INTO log_credentials (user_id, token_hash) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET token_hash = EXCLUDED.token_hash, created = now()",
            &[&user_id, &auth::token_hash(&password)],
        )
        .await?;
    let subjects = readable_subjects(client, ns, user_id, is_superuser).await?;
    Ok(Issued { nats_user, password, subjects })
}

/// Revokes a user's log credentials; whether they had any. Also what ends them when the user's
/// password changes or their sessions are ended.
pub async fn revoke<C: GenericClient>(client: &C, user_id: i64) -> Result<bool, Error> {
    Ok(client.execute("DELETE FROM log_credentials WHERE user_id = $1", &[&user_id]).await? > 0)
}

/// The drain subjects of every app the user may read: the rule of `ctx::app_for` with
/// `Access::Use` (and of the apps list): apps they own, apps shared with them, and for an
/// administrator every app, as one wildcard (also the apps made after the grant, and a grant
/// whose size does not grow with the platform).
pub async fn readable_subjects<C: GenericClient>(
    client: &C,
    ns: &Namespace,
    user_id: i64,
    is_superuser: bool,
) -> Result<Vec<String>, Error> {
    if is_superuser {
        return Ok(vec![ns.all_drains().as_str().to_owned()]);
    }
    let rows = client
        .query(
            "SELECT a.name FROM apps a WHERE a.owner_id = $1
               OR EXISTS (SELECT 1 FROM perms p WHERE p.app_id = a.id AND p.user_id = $1)
             ORDER BY a.name",
            &[&user_id],
        )
        .await?;
    let mut subjects = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get("name")?;
        // Every stored name was checked when the app was made; one that no longer parses is
        // left out rather than put into a subject unchecked.
        match AppName::parse(&name) {
            Ok(app) => subjects.push(ns.drain(&app).as_str().to_owned()),
            Err(e) => tracing::warn!(app = %name, error = %e, "an app name that is no subject token"),
        }
    }
    Ok(subjects)
}

/// The hash an unknown user's password is compared with, so that their answer costs what a known
/// user's does (a quicker "no" would tell which users have credentials).
static DUMMY_HASH: LazyLock<Vec<u8>> = LazyLock::new(|| auth::token_hash(&auth::new_token()));

/// Whether two hashes are equal, in time that does not depend on where they differ.
fn same_hash(given: &[u8], expected: &[u8]) -> bool {
    let diff = given.iter().zip(expected.iter()).fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0 && given.len() == expected.len()
}

/// What the NATS auth callout asks about a connecting log consumer: `None` for a user name that is
/// no log consumer's, an unknown or revoked one, or a wrong password; else the drain subjects of
/// every app the user may read now (possibly none). The work is the same whether the user exists
/// or not: one lookup, one hash, one comparison of every byte.
pub async fn authorize(
    db: &Pool,
    ns: &Namespace,
    nats_user: &str,
    password: &str,
) -> Result<Option<Vec<String>>, Error> {
    // A name without the prefix looks up the empty username, which no user has.
    let username = username_of(nats_user).unwrap_or("");
    let client = db.get().await?;
    let row = client
        .query_opt(
            "SELECT u.id, u.is_superuser, c.token_hash FROM log_credentials c
             JOIN users u ON u.id = c.user_id WHERE u.username = $1",
            &[&username],
        )
        .await?;
    let found = match &row {
        Some(row) => Some((
            row.try_get::<_, i64>("id")?,
            row.try_get::<_, bool>("is_superuser")?,
            row.try_get::<_, Vec<u8>>("token_hash")?,
        )),
        None => None,
    };
    let expected = found.as_ref().map_or(DUMMY_HASH.as_slice(), |(_, _, hash)| hash.as_slice());
    let matches = same_hash(&auth::token_hash(password), expected);
    match found {
        Some((user_id, is_superuser, _)) if matches => {
            Ok(Some(readable_subjects(&client, ns, user_id, is_superuser).await?))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform's own NATS users (compose's NATS config).
    const COMPONENT_USERS: &[&str] =
        &["controller", "scheduler", "agent", "router", "logger", "builder", "drain", "route", "auth"];

    #[test]
    fn nats_user_names_are_prefixed_and_safe() {
        assert_eq!(nats_user("alice").unwrap(), "logs-alice");
        assert_eq!(nats_user("a.b+c@d-e_f").unwrap(), "logs-a.b+c@d-e_f");
        for name in COMPONENT_USERS {
            let user = nats_user(name).unwrap();
            assert!(!COMPONENT_USERS.contains(&user.as_str()), "{user}");
            assert_eq!(username_of(&user), Some(*name));
        }
        for bad in ["", "a b", "a*", "a>", "a\n", "a\0", "é", "a,b", "a\"b"] {
            assert!(nats_user(bad).is_err(), "{bad:?}");
        }
        // NATS-safe: no whitespace, wildcards, quotes or control characters can get in.
        let all = nats_user(&"x".repeat(64)).unwrap();
        assert!(all.chars().all(|c| c.is_ascii_graphic() && !"*>\"'\\".contains(c)));
    }

    #[test]
    fn only_prefixed_names_are_log_consumers() {
        assert_eq!(username_of("logs-bob"), Some("bob"));
        for name in ["bob", "logs-", "logs-a b", "drain", "Logs-bob", "logs"] {
            assert_eq!(username_of(name), None, "{name}");
        }
    }

    #[test]
    fn hashes_compare_whole() {
        let a = auth::token_hash("one");
        assert!(same_hash(&a, &auth::token_hash("one")));
        assert!(!same_hash(&a, &auth::token_hash("two")));
        assert!(!same_hash(&a[..31], &a), "a prefix is not the hash");
        assert!(!same_hash(&[], &a));
        assert!(!same_hash(&auth::token_hash("one"), &DUMMY_HASH));
    }
}
