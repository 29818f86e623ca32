//! Passwords (argon2id) and API tokens (random, stored as SHA-256 hashes).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::model::Error;

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
        PasswordHash::new(&stored)
            .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
    })
    .await
    .unwrap_or(false)
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
