//! NATS auth callout for per-user log credentials: a log consumer connects to NATS with a user
//! name and a password (a token the controller issued), and may then subscribe to the public
//! drain subjects (`<root>.drain.<app>`) of exactly the apps it may read, and nothing else.
//!
//! # Flow
//!
//! 1. The server's `authorization { auth_callout { … } }` block names an issuer account key,
//!    the account the service's users live in, and `auth_users`: users the server checks
//!    itself. Every other connection is sent to the service.
//! 2. On such a connection the server makes a one-off user nkey and publishes an
//!    `authorization_request` JWT, signed by its own server nkey, on `$SYS.REQ.USER.AUTH` in
//!    the callout account, with the client's CONNECT user, password and address.
//! 3. [`serve`] (subscribed in a queue group, so several controllers can run it) checks the
//!    request's signature, hands [`Credentials`] to the caller's check, and answers with an
//!    `authorization_response` JWT signed by the issuer account key: about that one-off user
//!    nkey, addressed to that server, carrying either a user JWT or an error. Every request is
//!    answered, a refusal included, so a refused client gets "authorization violation" at once
//!    rather than after the server's auth timeout.
//! 4. The user JWT places the connection in the configured account (its `aud`, config mode),
//!    allows subscribing only to the [`Grant`]'s subjects, denies all publishing, and expires
//!    after the configured TTL.
//!
//! # Why
//!
//! - The platform's own components keep their static users in the config and list them in
//!   `auth_users`, so they never depend on this service (which runs in the controller and
//!   connects as one of them): a controller outage cannot lock the bus.
//! - Log consumers are many, come and go, and their rights follow app permissions that live in
//!   the controller's database; putting them in the server config would mean a reload per
//!   change. The callout asks the controller at connect time instead.
//! - A NATS connection, once authorized, is not re-checked. The user JWT's `exp` is what bounds
//!   how long a revoked credential or a removed app access keeps working: at expiry the server
//!   disconnects the client, whose reconnect goes through the callout again.
//! - An empty `allow` list means "allow everything" to NATS, so a grant without subjects is
//!   written as `deny: [">"]`.
//!
//! The JWT code is our own small implementation of the nats-io/jwt v2 wire format
//! ([`jwt`], [`claims`]) on the `nkeys` crate. Encrypted callout (`xkey`) is not supported:
//! such requests are refused.

pub mod claims;
pub mod jwt;
pub mod service;

pub use claims::Grant;
pub use service::{Bound, CALLOUT_SUBJECT, CalloutConfig, Credentials, QUEUE_GROUP, ServeError, bind, serve};
