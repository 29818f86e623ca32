//! The three claim sets of an auth callout exchange (names as in nats-io/jwt v2): the server's
//! `authorization_request`, our `authorization_response`, and the `user` claims it carries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nkeys::{KeyPair, KeyPairType};
use serde::{Deserialize, Serialize};

use crate::jwt::{self, JwtError};

/// The claims version NATS v2 writes and expects.
const VERSION: u8 = 2;
/// `-1`: no limit on subscriptions, data or payload beyond the server's own (a missing or zero
/// limit would be read as "none allowed" by some server paths).
const NO_LIMIT: i64 = -1;
/// Matches every subject: denying it denies everything.
const ALL: &str = ">";

/// What the server tells us about a connecting client, as far as this service needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The server's public nkey (the request's `iss`, its signature checked).
    pub server_key: String,
    /// `nats.server_id.id`: the response's audience.
    pub server_id: String,
    /// `nats.user_nkey`: a one-off user key the server made for this connection; the response
    /// and the user JWT must be about exactly this key.
    pub user_nkey: String,
    /// `nats.connect_opts.user`.
    pub user: String,
    /// `nats.connect_opts.pass`.
    pub password: String,
    /// `nats.client_info.host`: the client's address as the server saw it.
    pub client_host: String,
}

#[derive(Deserialize)]
struct RequestClaims {
    #[serde(default)]
    iss: String,
    nats: RequestBody,
}

#[derive(Deserialize)]
struct RequestBody {
    server_id: ServerId,
    user_nkey: String,
    #[serde(default)]
    connect_opts: ConnectOpts,
    #[serde(default)]
    client_info: ClientInfo,
    #[serde(default, rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct ServerId {
    id: String,
}

#[derive(Deserialize, Default)]
struct ConnectOpts {
    #[serde(default)]
    user: String,
    #[serde(default)]
    pass: String,
}

#[derive(Deserialize, Default)]
struct ClientInfo {
    #[serde(default)]
    host: String,
}

/// Why a request was not understood.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("claims type {0:?} is not authorization_request")]
    Type(String),
    #[error("user_nkey {0:?} is not a user public key")]
    UserNkey(String),
    #[error("request has no server id")]
    ServerId,
}

impl AuthRequest {
    /// Reads the server's request token, checking its signature against its issuer, which must
    /// be a server nkey. (Servers make their keys at start, so there is no key to pin: what
    /// makes the request genuine is that only the server publishes on the callout subject.)
    pub fn decode(token: &str) -> Result<Self, RequestError> {
        let claims: RequestClaims = jwt::decode(token, KeyPairType::Server)?;
        let body = claims.nats;
        if body.kind != "authorization_request" {
            return Err(RequestError::Type(body.kind));
        }
        let user_key = KeyPair::from_public_key(&body.user_nkey)
            .map_err(|_| RequestError::UserNkey(body.user_nkey.clone()))?;
        if user_key.key_pair_type() != KeyPairType::User {
            return Err(RequestError::UserNkey(body.user_nkey));
        }
        if body.server_id.id.is_empty() {
            return Err(RequestError::ServerId);
        }
        Ok(Self {
            server_key: claims.iss,
            server_id: body.server_id.id,
            user_nkey: body.user_nkey,
            user: body.connect_opts.user,
            password: body.connect_opts.pass,
            client_host: body.client_info.host,
        })
    }
}

/// What an authorized user may do: subscribe to these subjects (wildcards allowed) and
/// nothing else. Publishing is always denied: log consumers only read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub subscribe_allow: Vec<String>,
}

/// One direction of a user's permissions. NATS reads an absent or empty `allow` as "allow
/// everything", so a closed direction must say `deny: [">"]`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Permission {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Permission {
    fn deny_all() -> Self {
        Self { allow: Vec::new(), deny: vec![ALL.to_owned()] }
    }
}

/// The `nats` part of user claims.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UserBody {
    #[serde(rename = "pub")]
    pub publish: Permission,
    #[serde(rename = "sub")]
    pub subscribe: Permission,
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// User claims: who the connection is, which account it joins, what it may do, until when.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UserClaims {
    pub jti: String,
    pub iat: u64,
    pub iss: String,
    /// The connection's one-off user nkey from the request.
    pub sub: String,
    /// In server configuration mode, the NAME of the account the user is placed in.
    pub aud: String,
    pub exp: u64,
    /// Shown as the connection's user name in the server's logs and monitoring.
    pub name: String,
    pub nats: UserBody,
}

impl UserClaims {
    /// Claims for `user` on the connection `user_nkey`, valid for `ttl` from `now`.
    pub fn new(
        issuer: &KeyPair,
        account: &str,
        user_nkey: &str,
        user: &str,
        grant: &Grant,
        now: SystemTime,
        ttl: Duration,
    ) -> Self {
        let iat = unix_seconds(now);
        // Whole seconds on the wire; never zero, which NATS reads as "never expires".
        let exp = iat + ttl.as_secs().max(1);
        Self {
            jti: new_id(),
            iat,
            iss: issuer.public_key(),
            sub: user_nkey.to_owned(),
            aud: account.to_owned(),
            exp,
            name: user.to_owned(),
            nats: UserBody {
                publish: Permission::deny_all(),
                subscribe: subscribe_permission(grant),
                subs: NO_LIMIT,
                data: NO_LIMIT,
                payload: NO_LIMIT,
                kind: "user".to_owned(),
                version: VERSION,
            },
        }
    }
}

/// Turns a grant into subscribe permissions, dropping subjects NATS would refuse (which would
/// make the server reject the whole JWT) and denying everything when nothing is left.
fn subscribe_permission(grant: &Grant) -> Permission {
    let allow: Vec<String> = grant
        .subscribe_allow
        .iter()
        .filter(|subject| {
            let ok = valid_subject(subject);
            if !ok {
                tracing::warn!(subject = %subject, "dropping invalid subject from grant");
            }
            ok
        })
        .cloned()
        .collect();
    if allow.is_empty() { Permission::deny_all() } else { Permission { allow, deny: Vec::new() } }
}

/// A subject or wildcard filter: dot-separated non-empty tokens without whitespace.
fn valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| !token.is_empty() && !token.contains(char::is_whitespace))
}

/// The response to one request: either a user JWT or a reason for refusing.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResponseClaims {
    pub jti: String,
    pub iat: u64,
    pub iss: String,
    /// The request's user nkey.
    pub sub: String,
    /// The request's server id.
    pub aud: String,
    pub nats: ResponseBody,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResponseBody {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwt: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// What the service answers a request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Box<UserClaims>),
    Refuse(String),
}

/// Signs the response to `request`, and the user JWT inside it when allowed.
pub fn encode_response(
    issuer: &KeyPair,
    request: &AuthRequest,
    verdict: &Verdict,
    now: SystemTime,
) -> Result<String, JwtError> {
    let (jwt, error) = match verdict {
        Verdict::Allow(user) => (jwt::encode(user.as_ref(), issuer)?, String::new()),
        Verdict::Refuse(reason) => (String::new(), reason.clone()),
    };
    let response = ResponseClaims {
        jti: new_id(),
        iat: unix_seconds(now),
        iss: issuer.public_key(),
        sub: request.user_nkey.clone(),
        aud: request.server_id.clone(),
        nats: ResponseBody { jwt, error, kind: "authorization_response".to_owned(), version: VERSION },
    };
    jwt::encode(&response, issuer)
}

fn unix_seconds(time: SystemTime) -> u64 {
    // A clock before 1970 is not worth failing a login over; 0 only makes the token older.
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A unique token id. The Go library uses a hash of the claims; NATS does not check it.
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request as the server writes it (shape from nats-io/jwt v2's AuthorizationRequest).
    fn server_request(server: &KeyPair, issuer: &KeyPair, user_nkey: &str) -> String {
        let claims = serde_json::json!({
            "jti": "X", "iat": 1, "iss": server.public_key(), "sub": issuer.public_key(),
            "aud": "nats-authorization-request", "exp": 4_000_000_000u64,
            "nats": {
                "server_id": { "name": "n1", "host": "0.0.0.0", "id": server.public_key(), "version": "2.15.1" },
                "user_nkey": user_nkey,
                "client_info": { "host": "10.0.0.7", "id": 5, "user": "alice", "kind": "Client", "type": "nats" },
                "connect_opts": { "user": "alice", "pass": "s3cret", "lang": "rust", "version": "0.51.0", "protocol": 1 },
                "type": "authorization_request", "version": 2
            }
        });
        jwt::encode(&claims, server).unwrap()
    }

    #[test]
    fn request_roundtrip() {
        let server = KeyPair::new_server();
        let issuer = KeyPair::new_account();
        let user = KeyPair::new_user().public_key();
        let request = AuthRequest::decode(&server_request(&server, &issuer, &user)).unwrap();
        assert_eq!(
            request,
            AuthRequest {
                server_key: server.public_key(),
                server_id: server.public_key(),
                user_nkey: user,
                user: "alice".into(),
                password: "s3cret".into(),
                client_host: "10.0.0.7".into(),
            }
        );
    }

    #[test]
    fn request_signed_by_non_server_key_is_refused() {
        let not_server = KeyPair::new_account();
        let user = KeyPair::new_user().public_key();
        let token = server_request(&not_server, &not_server, &user);
        assert!(matches!(AuthRequest::decode(&token), Err(RequestError::Jwt(_))));
    }

    #[test]
    fn request_with_non_user_nkey_is_refused() {
        let server = KeyPair::new_server();
        let account = KeyPair::new_account().public_key();
        let token = server_request(&server, &server, &account);
        assert!(matches!(AuthRequest::decode(&token), Err(RequestError::UserNkey(_))));
    }

    #[test]
    fn tampered_request_is_refused() {
        let server = KeyPair::new_server();
        let user = KeyPair::new_user().public_key();
        let token = server_request(&server, &server, &user);
        // Flip one character of the body: still base64, no longer what was signed.
        let dot = token.find('.').unwrap();
        let mut bytes = token.into_bytes();
        let i = dot + 10;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let token = String::from_utf8(bytes).unwrap();
        assert!(AuthRequest::decode(&token).is_err());
    }

    fn request() -> AuthRequest {
        AuthRequest {
            server_key: KeyPair::new_server().public_key(),
            server_id: "NSERVERID".into(),
            user_nkey: KeyPair::new_user().public_key(),
            user: "alice".into(),
            password: "pw".into(),
            client_host: "127.0.0.1".into(),
        }
    }

    #[test]
    fn allow_response_carries_a_user_jwt_for_the_connection() {
        let issuer = KeyPair::new_account();
        let req = request();
        let grant = Grant { subscribe_allow: vec!["deis.drain.app-a".into()] };
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let user =
            UserClaims::new(&issuer, "DEIS", &req.user_nkey, "alice", &grant, now, Duration::from_secs(60));
        let token = encode_response(&issuer, &req, &Verdict::Allow(Box::new(user.clone())), now).unwrap();

        let response: ResponseClaims = jwt::decode(&token, KeyPairType::Account).unwrap();
        assert_eq!(response.sub, req.user_nkey);
        assert_eq!(response.aud, "NSERVERID");
        assert_eq!(response.iss, issuer.public_key());
        assert_eq!(response.nats.kind, "authorization_response");
        assert!(response.nats.error.is_empty());

        let inner: UserClaims = jwt::decode(&response.nats.jwt, KeyPairType::Account).unwrap();
        assert_eq!(inner, user);
        assert_eq!(inner.sub, req.user_nkey);
        assert_eq!(inner.aud, "DEIS");
        assert_eq!(inner.exp, 1_060);
        assert_eq!(inner.nats.subscribe.allow, ["deis.drain.app-a"]);
        assert!(inner.nats.subscribe.deny.is_empty());
        assert_eq!(inner.nats.publish, Permission::deny_all());

        // The exact JSON field names the server reads.
        let json = serde_json::to_value(&inner).unwrap();
        assert_eq!(json["nats"]["pub"]["deny"], serde_json::json!([">"]));
        assert_eq!(json["nats"]["sub"]["allow"], serde_json::json!(["deis.drain.app-a"]));
        assert_eq!(json["nats"]["type"], "user");
        assert_eq!(json["nats"]["version"], 2);
        assert_eq!(json["nats"]["subs"], -1);
    }

    #[test]
    fn refusal_carries_the_reason_and_no_jwt() {
        let issuer = KeyPair::new_account();
        let req = request();
        let token = encode_response(&issuer, &req, &Verdict::Refuse("no".into()), SystemTime::now()).unwrap();
        let response: ResponseClaims = jwt::decode(&token, KeyPairType::Account).unwrap();
        assert_eq!(response.nats.error, "no");
        assert!(response.nats.jwt.is_empty());
        let json: serde_json::Value = serde_json::to_value(&response).unwrap();
        assert!(json["nats"].get("jwt").is_none(), "jwt and error must not both be set");
    }

    #[test]
    fn empty_grant_denies_everything() {
        let issuer = KeyPair::new_account();
        for grant in
            [Grant::default(), Grant { subscribe_allow: vec!["".into(), "a b".into(), "a..b".into()] }]
        {
            let user = UserClaims::new(
                &issuer,
                "DEIS",
                "U",
                "bob",
                &grant,
                SystemTime::now(),
                Duration::from_secs(5),
            );
            assert!(user.nats.subscribe.allow.is_empty(), "{grant:?}");
            assert_eq!(user.nats.subscribe.deny, [">"], "{grant:?}");
            assert_eq!(user.nats.publish.deny, [">"]);
        }
    }

    #[test]
    fn zero_ttl_still_expires() {
        let issuer = KeyPair::new_account();
        let now = UNIX_EPOCH + Duration::from_secs(50);
        let user = UserClaims::new(&issuer, "DEIS", "U", "bob", &Grant::default(), now, Duration::ZERO);
        assert_eq!(user.exp, 51);
    }
}
