//! NATS JWTs (nats-io/jwt v2 wire form): `b64(header).b64(claims).b64(ed25519 signature)`,
//! base64url without padding, signed by an nkey whose public key is the claims' `iss`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::{KeyPair, KeyPairType};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The only header NATS v2 writes; the server refuses any other algorithm for v2 claims.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Why a token could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is not three dot-separated parts")]
    Shape,
    #[error("token part is not base64url: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("token JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported token header (typ {typ:?}, alg {alg:?})")]
    Header { typ: String, alg: String },
    #[error("token has no issuer")]
    NoIssuer,
    #[error("issuer {0:?} is not a {1:?} nkey")]
    IssuerType(String, KeyPairType),
    #[error("bad signature: {0}")]
    Signature(nkeys::error::Error),
    #[error("signing failed: {0}")]
    Sign(nkeys::error::Error),
}

#[derive(serde::Deserialize)]
struct Header {
    #[serde(default)]
    typ: String,
    #[serde(default)]
    alg: String,
}

/// Claims every token carries, read before the typed body so the signature can be checked
/// against the issuer first.
#[derive(serde::Deserialize)]
struct Issuer {
    #[serde(default)]
    iss: String,
}

/// Signs `claims` with `signer`. The caller fills `iss` with `signer.public_key()`: the claims
/// types own their fields, this only frames and signs.
pub fn encode<T: Serialize>(claims: &T, signer: &KeyPair) -> Result<String, JwtError> {
    let header = URL_SAFE_NO_PAD.encode(HEADER);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
    let signed = format!("{header}.{body}");
    let signature = signer.sign(signed.as_bytes()).map_err(JwtError::Sign)?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// Reads a token whose signature must verify against its own `iss`, which must be an nkey of
/// `issuer_type`. Whether that issuer is trusted is the caller's decision.
pub fn decode<T: DeserializeOwned>(token: &str, issuer_type: KeyPairType) -> Result<T, JwtError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let parsed: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header)?)?;
    // Case-insensitive like the Go library; "ed25519" is the v1 name, still accepted there.
    let alg = parsed.alg.to_ascii_lowercase();
    if !parsed.typ.eq_ignore_ascii_case("JWT") || (alg != "ed25519-nkey" && alg != "ed25519") {
        return Err(JwtError::Header { typ: parsed.typ, alg: parsed.alg });
    }
    // The signed bytes are the two first parts exactly as received.
    let signed = &token[..header.len() + 1 + body.len()];
    let body = URL_SAFE_NO_PAD.decode(body)?;
    let signature = URL_SAFE_NO_PAD.decode(signature)?;
    let issuer: Issuer = serde_json::from_slice(&body)?;
    if issuer.iss.is_empty() {
        return Err(JwtError::NoIssuer);
    }
    let key = KeyPair::from_public_key(&issuer.iss).map_err(JwtError::Signature)?;
    if key.key_pair_type() != issuer_type {
        return Err(JwtError::IssuerType(issuer.iss, issuer_type));
    }
    key.verify(signed.as_bytes(), &signature).map_err(JwtError::Signature)?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Claims {
        iss: String,
        sub: String,
    }

    fn claims(kp: &KeyPair) -> Claims {
        Claims { iss: kp.public_key(), sub: "someone".into() }
    }

    #[test]
    fn roundtrip() {
        let kp = KeyPair::new_account();
        let token = encode(&claims(&kp), &kp).unwrap();
        assert!(token.starts_with("eyJ"), "NATS recognises JWTs by this prefix");
        let back: Claims = decode(&token, KeyPairType::Account).unwrap();
        assert_eq!(back, claims(&kp));
    }

    #[test]
    fn tampered_body_is_refused() {
        let kp = KeyPair::new_account();
        let token = encode(&claims(&kp), &kp).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&Claims { iss: kp.public_key(), sub: "root".into() }).unwrap());
        parts[1] = &other;
        let forged = parts.join(".");
        assert!(matches!(decode::<Claims>(&forged, KeyPairType::Account), Err(JwtError::Signature(_))));
    }

    #[test]
    fn issuer_swapped_is_refused() {
        // Signed by one key but claiming another issuer: the signature cannot match.
        let signer = KeyPair::new_account();
        let claimed = KeyPair::new_account();
        let token = encode(&claims(&claimed), &signer).unwrap();
        assert!(matches!(decode::<Claims>(&token, KeyPairType::Account), Err(JwtError::Signature(_))));
    }

    #[test]
    fn wrong_issuer_type_is_refused() {
        let kp = KeyPair::new_user();
        let token = encode(&claims(&kp), &kp).unwrap();
        assert!(matches!(decode::<Claims>(&token, KeyPairType::Server), Err(JwtError::IssuerType(..))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in ["", ".", "..", "a.b.c", "eyJ.eyJ.", "a.b.c.d", "\u{e9}.\u{e9}.\u{e9}"] {
            assert!(decode::<Claims>(input, KeyPairType::Server).is_err(), "{input:?}");
        }
    }
}
