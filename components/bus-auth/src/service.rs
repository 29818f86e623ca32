//! The callout service: answers every authorization request the server sends on
//! `$SYS.REQ.USER.AUTH`, asking the caller's check which subjects the user may read.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use async_nats::{Client, Subscriber};
use futures::StreamExt;
use nkeys::KeyPair;
use tokio_util::sync::CancellationToken;

use crate::claims::{AuthRequest, Grant, UserClaims, Verdict, encode_response};

/// Where the server sends its requests (in the callout account, config mode).
pub const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// Every instance joins this queue group, so each request is answered once however many
/// controllers run the service.
pub const QUEUE_GROUP: &str = "deis-bus-auth";
/// Requests handled at once per instance: the check may hash a password or read a database,
/// and a burst of reconnects (every consumer's JWT expiring) must not queue behind one slow one.
const MAX_IN_FLIGHT: usize = 64;

/// What a connecting client presented, for the caller's check.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// The client's address as the server saw it (for logs and rate limits).
    pub client_host: String,
}

impl fmt::Debug for Credentials {
    // Never print the password: these end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("client_host", &self.client_host)
            .finish()
    }
}

/// How the service signs and places users.
#[derive(Debug, Clone)]
pub struct CalloutConfig {
    /// The account nkey (with seed) named as `issuer` in the server's `auth_callout` block.
    pub issuer: KeyPair,
    /// The NAME of the account authorized users are placed in (server configuration mode).
    pub account: String,
    /// How long a user JWT is valid: the server disconnects the client at expiry and the
    /// client's reconnect is checked afresh, so this bounds how long a revoked credential or a
    /// removed app keeps streaming.
    pub ttl: Duration,
}

/// The service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("subscribing to {CALLOUT_SUBJECT}: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("flushing the callout subscription: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// A callout subscription in place and known to the server, not yet answering.
#[derive(Debug)]
pub struct Bound {
    client: Client,
    config: CalloutConfig,
    requests: Subscriber,
}

/// Subscribes (in the queue group) and waits until the server has the subscription, so a
/// client connecting after this returns is answered rather than timed out.
pub async fn bind(client: Client, config: CalloutConfig) -> Result<Bound, ServeError> {
    let requests = client.queue_subscribe(CALLOUT_SUBJECT, QUEUE_GROUP.to_owned()).await?;
    client.flush().await?;
    Ok(Bound { client, config, requests })
}

impl Bound {
    /// Answers requests until `cancel` fires, then finishes the ones in flight and returns.
    ///
    /// `authorize` returns `Ok(Some(grant))` to let the user in with that grant, `Ok(None)` to
    /// refuse (wrong user or password), `Err(reason)` when it could not decide (the user is
    /// refused; the reason is logged, never sent).
    pub async fn serve<F, Fut>(self, authorize: F, cancel: CancellationToken)
    where
        F: Fn(Credentials) -> Fut,
        Fut: Future<Output = Result<Option<Grant>, String>>,
    {
        let Self { client, config, requests } = self;
        tracing::info!(
            subject = CALLOUT_SUBJECT,
            issuer = %config.issuer.public_key(),
            account = %config.account,
            "auth callout service answering"
        );
        requests
            .take_until(cancel.cancelled())
            .for_each_concurrent(MAX_IN_FLIGHT, |message| handle(&client, &config, &authorize, message))
            .await;
        tracing::info!("auth callout service stopped");
    }
}

/// [`bind`] then [`Bound::serve`].
pub async fn serve<F, Fut>(
    client: Client,
    config: CalloutConfig,
    authorize: F,
    cancel: CancellationToken,
) -> Result<(), ServeError>
where
    F: Fn(Credentials) -> Fut,
    Fut: Future<Output = Result<Option<Grant>, String>>,
{
    bind(client, config).await?.serve(authorize, cancel).await;
    Ok(())
}

async fn handle<F, Fut>(client: &Client, config: &CalloutConfig, authorize: &F, message: async_nats::Message)
where
    F: Fn(Credentials) -> Fut,
    Fut: Future<Output = Result<Option<Grant>, String>>,
{
    let Some(reply) = message.reply else {
        tracing::warn!("auth callout request without a reply subject: ignored");
        return;
    };
    let encrypted = message.headers.as_ref().is_some_and(|headers| headers.get("Nats-Server-Xkey").is_some());
    let answer = if encrypted {
        // The block has an `xkey`; this service does not decrypt. An empty answer is the
        // server's "refused, no reason" and at least fails fast instead of timing out.
        tracing::warn!("encrypted auth callout request (xkey configured): not supported, refusing");
        Vec::new()
    } else {
        answer(config, &message.payload, authorize, SystemTime::now()).await
    };
    if let Err(error) = client.publish(reply, answer.into()).await {
        tracing::warn!(%error, "could not send auth callout response");
    }
}

/// The response to one request payload. Anything unreadable gets an empty answer, which the
/// server takes as a refusal without reason: a signed refusal needs the request's user nkey
/// and server id, which a malformed request may not give.
pub(crate) async fn answer<F, Fut>(
    config: &CalloutConfig,
    payload: &[u8],
    authorize: &F,
    now: SystemTime,
) -> Vec<u8>
where
    F: Fn(Credentials) -> Fut,
    Fut: Future<Output = Result<Option<Grant>, String>>,
{
    let Ok(token) = std::str::from_utf8(payload) else {
        tracing::warn!("auth callout request is not UTF-8: refusing");
        return Vec::new();
    };
    let request = match AuthRequest::decode(token) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%error, "unreadable auth callout request: refusing");
            return Vec::new();
        }
    };
    let verdict = decide(config, &request, authorize, now).await;
    match encode_response(&config.issuer, &request, &verdict, now) {
        Ok(token) => token.into_bytes(),
        Err(error) => {
            tracing::warn!(%error, "could not sign auth callout response: refusing");
            Vec::new()
        }
    }
}

async fn decide<F, Fut>(
    config: &CalloutConfig,
    request: &AuthRequest,
    authorize: &F,
    now: SystemTime,
) -> Verdict
where
    F: Fn(Credentials) -> Fut,
    Fut: Future<Output = Result<Option<Grant>, String>>,
{
    // Reasons stay vague: the client only sees "authorization violation" anyway, and the
    // server logs them with the connection.
    if request.user.is_empty() || request.password.is_empty() {
        tracing::info!(host = %request.client_host, "auth callout: no user or password: refused");
        return Verdict::Refuse("user and password required".to_owned());
    }
    let credentials = Credentials {
        user: request.user.clone(),
        password: request.password.clone(),
        client_host: request.client_host.clone(),
    };
    match authorize(credentials).await {
        Ok(Some(grant)) => {
            tracing::debug!(user = %request.user, host = %request.client_host, subjects = ?grant.subscribe_allow, "auth callout: authorized");
            let user = UserClaims::new(
                &config.issuer,
                &config.account,
                &request.user_nkey,
                &request.user,
                &grant,
                now,
                config.ttl,
            );
            Verdict::Allow(Box::new(user))
        }
        Ok(None) => {
            tracing::info!(user = %request.user, host = %request.client_host, "auth callout: invalid credentials: refused");
            Verdict::Refuse("invalid credentials".to_owned())
        }
        Err(reason) => {
            tracing::warn!(user = %request.user, %reason, "auth callout: check failed: refused");
            Verdict::Refuse("authorization unavailable".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use nkeys::KeyPairType;

    use super::*;
    use crate::claims::{ResponseClaims, UserClaims};
    use crate::jwt;

    fn config() -> CalloutConfig {
        CalloutConfig { issuer: KeyPair::new_account(), account: "DEIS".into(), ttl: Duration::from_secs(30) }
    }

    fn request(server: &KeyPair, user_nkey: &str, user: &str, pass: &str) -> Vec<u8> {
        let claims = serde_json::json!({
            "iss": server.public_key(), "sub": "A", "aud": "nats-authorization-request",
            "nats": {
                "server_id": { "id": server.public_key() },
                "user_nkey": user_nkey,
                "client_info": { "host": "10.1.2.3" },
                "connect_opts": { "user": user, "pass": pass, "protocol": 1 },
                "type": "authorization_request", "version": 2
            }
        });
        jwt::encode(&claims, server).unwrap().into_bytes()
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        futures::executor::block_on(future)
    }

    fn response(bytes: &[u8]) -> ResponseClaims {
        jwt::decode(std::str::from_utf8(bytes).unwrap(), KeyPairType::Account).unwrap()
    }

    #[test]
    fn allowed_user_gets_a_jwt_for_its_connection() {
        let config = config();
        let server = KeyPair::new_server();
        let user_nkey = KeyPair::new_user().public_key();
        let seen = RefCell::new(Vec::new());
        let authorize = |c: Credentials| {
            seen.borrow_mut().push(c);
            async { Ok(Some(Grant { subscribe_allow: vec!["deis.drain.a".into()] })) }
        };
        let out = block_on(answer(
            &config,
            &request(&server, &user_nkey, "alice", "pw"),
            &authorize,
            SystemTime::now(),
        ));
        let response = response(&out);
        assert_eq!(response.sub, user_nkey);
        assert_eq!(response.aud, server.public_key());
        let user: UserClaims = jwt::decode(&response.nats.jwt, KeyPairType::Account).unwrap();
        assert_eq!(user.sub, user_nkey);
        assert_eq!(user.aud, "DEIS");
        assert_eq!(user.name, "alice");
        assert_eq!(user.exp - user.iat, 30);
        assert_eq!(
            *seen.borrow(),
            [Credentials { user: "alice".into(), password: "pw".into(), client_host: "10.1.2.3".into() }]
        );
    }

    #[test]
    fn refusals_are_signed_errors() {
        let config = config();
        let server = KeyPair::new_server();
        let user_nkey = KeyPair::new_user().public_key();
        let cases: [(&str, Result<Option<Grant>, String>); 2] =
            [("invalid credentials", Ok(None)), ("authorization unavailable", Err("db down".into()))];
        for (reason, result) in cases {
            let authorize = |_| {
                let result = result.clone();
                async move { result }
            };
            let out = block_on(answer(
                &config,
                &request(&server, &user_nkey, "alice", "pw"),
                &authorize,
                SystemTime::now(),
            ));
            let response = response(&out);
            assert_eq!(response.nats.error, reason);
            assert!(response.nats.jwt.is_empty());
            assert_eq!(response.sub, user_nkey);
        }
    }

    #[test]
    fn missing_password_is_refused_without_asking() {
        let config = config();
        let server = KeyPair::new_server();
        let user_nkey = KeyPair::new_user().public_key();
        let authorize = |_| async { panic!("must not be asked") };
        let out = block_on(answer(
            &config,
            &request(&server, &user_nkey, "alice", ""),
            &authorize,
            SystemTime::now(),
        ));
        assert!(!response(&out).nats.error.is_empty());
    }

    #[test]
    fn malformed_requests_get_an_empty_answer() {
        let config = config();
        let authorize = |_| async { panic!("must not be asked") };
        let server = KeyPair::new_server();
        let mut tampered = request(&server, &KeyPair::new_user().public_key(), "alice", "pw");
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let inputs: [&[u8]; 5] = [b"", b"not a jwt", &[0xff, 0xfe], b"a.b.c", &tampered];
        for input in inputs {
            let out = block_on(answer(&config, input, &authorize, SystemTime::now()));
            assert!(out.is_empty(), "{input:?}");
        }
    }
}
