//! Passwords (argon2id), API tokens (random, stored as SHA-256 hashes), and what slows down
//! guessing them: login throttling, the same cost for unknown users as for known ones, and
//! secrets compared in constant time.

mod throttle;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::model::Error;

pub use throttle::Throttle;

/// Argon2 verifications run since start (tests check that a login always runs one).
static VERIFIES: AtomicU64 = AtomicU64::new(0);

/// Hashes a password for storage. Runs on a blocking thread: argon2 is slow on purpose.
pub async fn hash_password(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
}

/// Checks a password against a stored hash.
pub async fn verify_password(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || {
        VERIFIES.fetch_add(1, Ordering::Relaxed);
        PasswordHash::new(&stored)
            .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// How many argon2 verifications have run.
pub fn verifies() -> u64 {
    VERIFIES.load(Ordering::Relaxed)
}

/// The hash of a random password nobody knows, made once with the same parameters as every
/// user's, so checking a password against it costs what checking a real one does.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(new_token().as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_else(
        |e| {
            tracing::error!(error = %e, "making the dummy password hash");
            String::new()
        },
    )
});

/// The hash a login's password is checked against: the user's, or for a user that does not
/// exist the dummy one, so that both cost one argon2 verification and answer in the same time
/// (a quicker "no" would tell an attacker which usernames exist).
pub fn hash_to_verify(stored: Option<String>) -> String {
    stored.unwrap_or_else(|| DUMMY_HASH.clone())
}

/// Checks a login: true only for a user that exists and the right password.
pub async fn verify_login(password: String, stored: Option<String>) -> bool {
    let known = stored.is_some();
    let matches = verify_password(password, hash_to_verify(stored)).await;
    matches && known
}

/// Whether a secret someone sent equals the expected one, in time that does not depend on
/// where they differ (both are hashed first, so their lengths do not show either).
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// The key a username's failed logins are counted under: a fixed-size digest, so that long
/// names sent by an attacker cost no more memory than short ones.
pub fn login_key(username: &str) -> [u8; 32] {
    Sha256::digest(username.as_bytes()).into()
}

/// The key a client address's failed logins are counted under. An IPv6 client usually holds a
/// whole /64, so that is one key; an IPv4-mapped address counts as its IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A new API token: 32 random bytes as hex. Returned to the user once, stored only hashed.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Extracts the token from `Authorization: token <key>` (Deis v1), also accepting `Bearer`.
pub fn parse_authorization(header: Option<&str>) -> Result<&str, Error> {
    let header = header.ok_or_else(|| {
        Error::Unauthorized(
            "authentication required: send `Authorization: token <key>` (see `deis login`)".into(),
        )
    })?;
    let (scheme, token) = header.trim().split_once(' ').ok_or_else(|| {
        Error::Unauthorized("malformed Authorization header: expected `token <key>`".into())
    })?;
    if !(scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) {
        return Err(Error::Unauthorized(format!(
            "unsupported authorization scheme '{scheme}': expected `token`"
        )));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Unauthorized("empty token".into()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_themselves() {
        let hash = hash_password("s3cret".into()).await.unwrap();
        assert!(verify_password("s3cret".into(), hash.clone()).await);
        assert!(!verify_password("s3cret!".into(), hash).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
    }

    #[tokio::test]
    async fn an_unknown_user_costs_one_verification_against_a_real_hash() {
        // The dummy is a hash made like every user's: same algorithm and parameters.
        let real = hash_password("s3cret".into()).await.unwrap();
        let dummy = hash_to_verify(None);
        let (real, dummy_parsed) = (PasswordHash::new(&real).unwrap(), PasswordHash::new(&dummy).unwrap());
        assert_eq!(dummy_parsed.algorithm, real.algorithm);
        assert_eq!(dummy_parsed.version, real.version);
        assert_eq!(dummy_parsed.params, real.params);
        assert_eq!(hash_to_verify(None), dummy, "made once");
        assert_eq!(hash_to_verify(Some("stored".into())), "stored");

        let before = verifies();
        assert!(!verify_login("s3cret".into(), None).await, "an unknown user never logs in");
        assert!(verifies() > before, "an unknown user's login runs argon2 like a known one's");
        let stored = hash_password("s3cret".into()).await.unwrap();
        assert!(verify_login("s3cret".into(), Some(stored.clone())).await);
        assert!(!verify_login("nope".into(), Some(stored)).await);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("code-1234", "code-1234"));
        assert!(!same_secret("code-1235", "code-1234"));
        assert!(!same_secret("code-123", "code-1234"));
        assert!(!same_secret("", "code-1234"));
    }

    #[test]
    fn addresses_are_keyed_by_what_a_client_holds() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(address_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(address_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(address_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(address_key(ip("2001:db8:1:2:ffff::1")), address_key(ip("2001:db8:1:2::9")));
        assert_ne!(login_key("alice"), login_key("alice2"));
    }

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(token_hash(&a), token_hash(&a));
    }

    #[test]
    fn authorization_headers() {
        assert_eq!(parse_authorization(Some("token abc")).unwrap(), "abc");
        assert_eq!(parse_authorization(Some("Bearer abc")).unwrap(), "abc");
        assert!(parse_authorization(None).is_err());
        assert!(parse_authorization(Some("Basic abc")).is_err());
        assert!(parse_authorization(Some("token")).is_err());
        assert!(parse_authorization(Some("token  ")).is_err());
    }
}
