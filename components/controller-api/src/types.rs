use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Every error body: `{"detail": "…"}` with a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub detail: String,
}

/// A page of a list, as Deis v1 paginates (`?limit=`, `?offset=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// Total number of items.
    pub count: u64,
    /// URL of the next page, if any.
    pub next: Option<String>,
    /// URL of the previous page, if any.
    pub previous: Option<String>,
    pub results: Vec<T>,
}

// --- auth -------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    /// The operator's one-time admin code: the registration makes the first administrator
    /// (refused once one exists; a wrong code is refused too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: token <token>`.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswdRequest {
    /// The current password; an admin changing another user's password may omit it.
    #[serde(default)]
    pub password: Option<String>,
    pub new_password: String,
    /// Another user's name (admins only).
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Another user to remove (admins only); yourself when absent.
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RegenerateTokenRequest {
    /// Another user's token (admins only); yours when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Regenerate every user's token (admins only).
    #[serde(default)]
    pub all: bool,
}

/// Credentials for reading your apps' logs straight from NATS (`deis logs:credentials`): connect
/// with this user name and password and subscribe to the subjects. Issuing them again replaces
/// them; `passwd`, `auth:cancel` and `auth:regenerate` end them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogCredentials {
    /// The NATS user name: `logs-<your username>`.
    pub username: String,
    /// The NATS password, a random token. Shown only now: the controller keeps only its hash.
    pub password: String,
    /// The drain subjects (`<root>.drain.<app>`) of the apps you may read now. Each connection
    /// is granted the apps of the moment it connects.
    pub subjects: Vec<String>,
    /// How long one connection's grant lasts, in seconds; the server then closes the connection
    /// and a reconnect is granted the apps of that moment.
    pub expires_in: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub is_superuser: bool,
    /// RFC 3339.
    pub date_joined: String,
}

// --- apps -------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AppCreateRequest {
    /// The app's name; a generated one when absent.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppTransferRequest {
    /// The new owner's username.
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct App {
    pub uuid: Uuid,
    /// The app's name.
    pub id: String,
    pub owner: String,
    /// `<app>.<platform domain>`.
    pub url: String,
    /// The formation: process type → containers wanted.
    pub structure: BTreeMap<String, u32>,
    pub created: String,
    pub updated: String,
}

// --- config -----------------------------------------------------------------------------------

/// A change to an app's config. In every map, `null` unsets the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    /// Environment variables.
    #[serde(default)]
    pub values: BTreeMap<String, Option<String>>,
    /// Memory limit per process type, e.g. `"512M"`, `"1G"`.
    #[serde(default)]
    pub memory: BTreeMap<String, Option<String>>,
    /// CPU shares per process type (1024 is one CPU's share). Deis v1 clients send the number as
    /// a string (`"512"`); both are taken.
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    pub cpu: BTreeMap<String, Option<u32>>,
    /// Node labels the app must run on.
    #[serde(default)]
    pub tags: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Config {
    pub uuid: Uuid,
    pub owner: String,
    pub app: String,
    pub values: BTreeMap<String, String>,
    pub memory: BTreeMap<String, String>,
    pub cpu: BTreeMap<String, u32>,
    pub tags: BTreeMap<String, String>,
    pub created: String,
    pub updated: String,
}

// --- builds and releases ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildCreateRequest {
    /// An image already in the platform registry (`deis builds:create` / `deis pull`).
    pub image: String,
    /// Process types and commands; `{"cmd": ""}` (the image's own command) when absent.
    #[serde(default)]
    pub procfile: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Build {
    pub uuid: Uuid,
    pub owner: String,
    pub app: String,
    pub image: String,
    /// The git commit, empty for image builds.
    pub sha: String,
    pub procfile: BTreeMap<String, String>,
    /// `buildpack`, `dockerfile` or `image`.
    pub kind: String,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub uuid: Uuid,
    pub owner: String,
    pub app: String,
    pub version: u32,
    /// The build this release runs, if any (v1 has none).
    pub build: Option<Uuid>,
    /// The image this release runs, empty when there is no build yet.
    pub image: String,
    /// The config this release runs with.
    pub config: Uuid,
    pub summary: String,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Roll back to this version; the one before the current release when absent.
    #[serde(default)]
    pub version: Option<u32>,
}

// --- domains, certs, keys, perms ----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainCreateRequest {
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Domain {
    pub owner: String,
    pub app: String,
    pub domain: String,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertCreateRequest {
    /// A name for the certificate; its common name when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// PEM certificate (chain).
    pub certificate: String,
    /// PEM private key matching the certificate.
    pub key: String,
    /// A domain to serve it for at once (Deis v1's `certs:add --common-name`); it names the
    /// certificate when `name` is absent.
    #[serde(default)]
    pub common_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertAttachRequest {
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cert {
    pub name: String,
    pub owner: String,
    pub common_name: String,
    /// Subject alternative names.
    pub san: Vec<String>,
    pub starts: String,
    pub expires: String,
    pub issuer: String,
    pub fingerprint: String,
    /// Domains this certificate serves.
    pub domains: Vec<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreateRequest {
    /// A name for the key (its comment, e.g. `alice@laptop`, by default).
    pub id: String,
    /// An OpenSSH public key line: `ssh-ed25519 AAAA… comment`.
    pub public: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Key {
    pub id: String,
    pub owner: String,
    pub public: String,
    /// `SHA256:…`, unique across the platform.
    pub fingerprint: String,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermCreateRequest {
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppPerms {
    /// Users the app is shared with (besides its owner).
    pub users: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminPerm {
    pub username: String,
    pub is_superuser: bool,
}

/// The formation change of `deis scale web=3 worker=1`: process type → containers wanted.
pub type ScaleRequest = BTreeMap<String, u32>;

// --- processes ----------------------------------------------------------------------------------

/// One running (or starting, or crashed) container of an app, as `deis ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Container {
    pub app: String,
    /// The release it runs, like `v3`.
    pub release: String,
    /// The process type (`web`, `worker` …).
    #[serde(rename = "type")]
    pub process_type: String,
    /// Its number within the type (`web.2` is 2).
    pub num: u32,
    /// `up`, `starting` or `crashed`.
    pub state: String,
    /// The node it runs on.
    pub node: String,
    /// When it started, RFC 3339.
    pub started: String,
}

/// How the app's newest release is rolling out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeployStatus {
    /// The release being rolled out (or last rolled out).
    pub version: u32,
    pub state: DeployPhase,
    /// The release still serving after a failure, if any.
    pub serving: Option<u32>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// Where a release's rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeployPhase {
    /// New containers are starting; the previous release still serves.
    Deploying,
    /// Every process type of the release runs as asked.
    Deployed,
    /// The release did not become healthy within the deploy timeout.
    Failed,
}

impl DeployPhase {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeployPhase::Deploying => "deploying",
            DeployPhase::Deployed => "deployed",
            DeployPhase::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DeployPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `deis ps:restart [web[.2]]`: which containers to restart (all when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    #[serde(default, rename = "type")]
    pub process_type: Option<String>,
    #[serde(default)]
    pub num: Option<u32>,
}

/// `deis run <command>`: run a one-off command in the app's current release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// A shell line, run by the app's own shell inside a new container.
    pub command: String,
}

/// One line of a `deis run` answer, which is newline-delimited JSON: output lines as they come,
/// then the exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    Line {
        line: String,
        /// `stdout` or `stderr`.
        stream: String,
    },
    Exit {
        /// The command's exit status; null when it could not be read.
        exit_code: Option<i64>,
    },
}

/// A log drain of an app: the logger forwards every line of the app's stream to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Drain {
    pub id: String,
    pub owner: String,
    pub app: String,
    /// `syslog://host:port`, `syslog+tls://host:port`, `https://…` or `http://…`.
    pub url: String,
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainCreateRequest {
    pub url: String,
}

/// Which log lines `GET /v1/apps/{app}/logs/` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    /// The newest this many lines (100 when absent, at most 10,000).
    pub lines: Option<u32>,
    /// Only lines at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only lines of this process type (`web`), process (`web.1`) or source (`router`).
    pub process: Option<String>,
    /// Only lines containing this text.
    pub contains: Option<String>,
    /// Keep the answer open and stream new lines as they come.
    pub follow: bool,
}

impl LogsQuery {
    /// The query string, percent-encoded.
    pub fn to_query_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(n) = self.lines {
            pairs.push(("lines", n.to_string()));
        }
        if let Some(s) = &self.since {
            pairs.push(("since", s.clone()));
        }
        if let Some(p) = &self.process {
            pairs.push(("process", p.clone()));
        }
        if let Some(c) = &self.contains {
            pairs.push(("contains", c.clone()));
        }
        if self.follow {
            pairs.push(("follow", "true".into()));
        }
        pairs.into_iter().map(|(k, v)| format!("{k}={}", percent_encode(&v))).collect::<Vec<_>>().join("&")
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// --- builder hooks ----------------------------------------------------------------------------
//
// Deis v1's `/v1/hooks/`: what only the builder asks, authenticated with the builder's own
// secret (`X-Deis-Builder-Auth`), never a user's token.

/// The header the builder authenticates with on `/v1/hooks/`.
pub const BUILDER_AUTH_HEADER: &str = "X-Deis-Builder-Auth";

/// Who registered an SSH key (`deis keys:add`): the builder's SSH login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HookKeyOwner {
    pub username: String,
    /// The key's id (its name) in the user's key list.
    pub key_id: String,
    /// `SHA256:…`.
    pub fingerprint: String,
}

/// May this user push to this app? (`git push` over SSH).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookPushRequest {
    pub username: String,
    pub app: String,
}

/// Yes: what the build needs to know about the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HookPush {
    pub app: String,
    /// The app's identity: an app made later under a destroyed app's name has another, so the
    /// builder never hands it the old app's repository. Absent from older controllers.
    #[serde(default)]
    pub app_uuid: Option<Uuid>,
    pub username: String,
    /// The app's current config (`BUILDPACK_URL` and the build's environment).
    pub config: BTreeMap<String, String>,
    /// Where the app answers once released, like `http://myapp.deis.local`.
    pub url: String,
}

/// What became of a build the builder announced: its release and that release's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HookBuildStatus {
    pub build: Uuid,
    /// The release made from the build, once the controller has recorded it.
    pub release: Option<u32>,
    /// How the app's newest release is rolling out, when the scheduler answered (its version
    /// may be newer than this build's release if another deploy followed).
    pub deploy: Option<DeployStatus>,
    /// Why the rollout is unknown (the scheduler did not answer), when it is.
    pub deploy_unknown: Option<String>,
    /// Where the app answers, like `http://myapp.deis.local`.
    pub url: String,
}

/// A map of optional whole numbers, each given as a JSON number or a string of digits.
fn number_or_numeric_string<'de, D>(deserializer: D) -> Result<BTreeMap<String, Option<u32>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u32),
        Text(String),
    }
    let raw: BTreeMap<String, Option<NumberOrString>> = BTreeMap::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(k, v)| {
            let n = match v {
                None => None,
                Some(NumberOrString::Number(n)) => Some(n),
                Some(NumberOrString::Text(t)) => Some(t.trim().parse::<u32>().map_err(|_| {
                    serde::de::Error::custom(format!("cpu for {k} must be a whole number, not '{t}'"))
                })?),
            };
            Ok((k, n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limits_come_as_numbers_or_as_deis_v1_strings() {
        let update: ConfigUpdate =
            serde_json::from_str(r#"{"cpu": {"web": "512", "worker": 256, "clock": null}}"#).unwrap();
        assert_eq!(
            update.cpu,
            BTreeMap::from([("web".into(), Some(512)), ("worker".into(), Some(256)), ("clock".into(), None)])
        );
        let err = serde_json::from_str::<ConfigUpdate>(r#"{"cpu": {"web": "lots"}}"#).unwrap_err();
        assert!(err.to_string().contains("cpu for web must be a whole number"), "{err}");
        assert!(serde_json::from_str::<ConfigUpdate>(r#"{"cpu": {"web": -1}}"#).is_err());
    }
}
