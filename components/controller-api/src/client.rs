use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::endpoints::Endpoint;
use crate::types::*;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The controller answered with an error: its status and `detail`.
    #[error("{detail}")]
    Status { status: u16, detail: String },
    /// The controller could not be reached or answered something unreadable.
    #[error("could not reach the controller at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("not logged in: run `deis login <controller-url>` first")]
    NotLoggedIn,
}

impl ApiError {
    /// The HTTP status, when the controller answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the controller said "not found", for callers that treat absence specially.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND.as_u16())
    }
}

/// An error and its causes, so "error sending request" says why ("connection refused").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

/// A typed client of the controller's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    /// The builder's secret, for `/v1/hooks/` (only the builder has one).
    builder_key: Option<String>,
    http: reqwest::Client,
}

/// Sends a request whose answer is streamed, and returns the response once its status says
/// success; an error status becomes the API's `{"detail"}` error.
async fn open_stream(req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, ApiError> {
    let transport = |e: reqwest::Error| ApiError::Transport { url: url.to_owned(), reason: with_causes(&e) };
    let resp = req.send().await.map_err(transport)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let bytes = resp.bytes().await.map_err(transport)?;
    let detail = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|b| b.detail)
        .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()));
    Err(ApiError::Status { status: status.as_u16(), detail })
}

/// Reads a streamed answer as it arrives, passing each complete line (with its `\n`) to
/// `on_line`. Returns what follows the last newline, for the caller to keep or drop.
async fn stream_lines(
    resp: reqwest::Response,
    url: &str,
    mut on_line: impl FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt;
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::Transport { url: url.to_owned(), reason: with_causes(&e) })?;
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            on_line(&line)?;
        }
    }
    Ok(buf)
}

impl Client {
    /// A client of the controller at `base` (e.g. `http://deis.example.com`), with or without a
    /// token.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("deis-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { base: base.trim_end_matches('/').to_owned(), token, builder_key: None, http }
    }

    /// The builder's client: it calls `/v1/hooks/` with the builder's own secret.
    pub fn for_builder(base: &str, builder_key: &str) -> Self {
        Self { builder_key: Some(builder_key.to_owned()), ..Self::new(base, None) }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        auth: bool,
    ) -> Result<T, ApiError> {
        let bytes = self.call_raw(method, path, body, auth).await?;
        let bytes = if bytes.is_empty() { b"null".to_vec() } else { bytes };
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Transport {
            url: format!("{}{path}", self.base),
            reason: format!("unreadable answer: {e}"),
        })
    }

    async fn call_raw<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        auth: bool,
    ) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}{path}", self.base);
        // This client shows its own progress (the CLI waits for a deploy with a spinner): the
        // controller answers a change at once instead of when it runs, as it does for Deis v1
        // clients.
        let mut req = self.http.request(method, &url).header("Prefer", "respond-async");
        if path.starts_with("/v1/hooks/") {
            let key = self.builder_key.as_ref().ok_or(ApiError::NotLoggedIn)?;
            req = req.header(BUILDER_AUTH_HEADER, key);
        } else if auth {
            let token = self.token.as_ref().ok_or(ApiError::NotLoggedIn)?;
            req = req.header("Authorization", format!("token {token}"));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let transport = |e: reqwest::Error| ApiError::Transport { url: url.clone(), reason: with_causes(&e) };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        let detail = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.detail)
            .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()));
        Err(ApiError::Status { status: status.as_u16(), detail })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call::<(), T>(Method::GET, path, None, true).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.call(Method::POST, path, Some(body), true).await
    }

    async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call_raw::<()>(Method::DELETE, path, None, true).await.map(|_| ())
    }

    /// Fetches every page of a list.
    async fn all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ApiError> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page: Page<T> = self.get(&format!("{path}{sep}limit=100&offset={offset}")).await?;
            let n = page.results.len() as u64;
            out.extend(page.results);
            offset += n;
            if page.next.is_none() || n == 0 {
                return Ok(out);
            }
        }
    }

    // --- auth ---------------------------------------------------------------------------------

    pub async fn register(&self, req: &RegisterRequest) -> Result<User, ApiError> {
        self.call(Method::POST, &Endpoint::Register.path(&[]), Some(req), false).await
    }

    pub async fn login(&self, req: &LoginRequest) -> Result<TokenResponse, ApiError> {
        self.call(Method::POST, &Endpoint::Login.path(&[]), Some(req), false).await
    }

    pub async fn whoami(&self) -> Result<User, ApiError> {
        self.get(&Endpoint::Whoami.path(&[])).await
    }

    pub async fn passwd(&self, req: &PasswdRequest) -> Result<(), ApiError> {
        self.call_raw(Method::POST, &Endpoint::Passwd.path(&[]), Some(req), true).await.map(|_| ())
    }

    pub async fn cancel(&self, req: &CancelRequest) -> Result<(), ApiError> {
        self.call_raw(Method::POST, &Endpoint::Cancel.path(&[]), Some(req), true).await.map(|_| ())
    }

    pub async fn regenerate_token(&self, req: &RegenerateTokenRequest) -> Result<TokenResponse, ApiError> {
        self.post(&Endpoint::RegenerateToken.path(&[]), req).await
    }

    /// Issues your log credentials for NATS, replacing any you had.
    pub async fn log_credentials(&self) -> Result<LogCredentials, ApiError> {
        self.call::<(), _>(Method::POST, &Endpoint::LogCredentials.path(&[]), None, true).await
    }

    /// Revokes your log credentials (nothing happens if you had none).
    pub async fn log_credentials_revoke(&self) -> Result<(), ApiError> {
        self.delete(&Endpoint::LogCredentialsRevoke.path(&[])).await
    }

    pub async fn users(&self) -> Result<Vec<User>, ApiError> {
        self.all(&Endpoint::Users.path(&[])).await
    }

    // --- apps ---------------------------------------------------------------------------------

    pub async fn apps(&self) -> Result<Vec<App>, ApiError> {
        self.all(&Endpoint::Apps.path(&[])).await
    }

    pub async fn app_create(&self, name: Option<&str>) -> Result<App, ApiError> {
        self.post(&Endpoint::AppCreate.path(&[]), &AppCreateRequest { id: name.map(str::to_owned) }).await
    }

    pub async fn app(&self, app: &str) -> Result<App, ApiError> {
        self.get(&Endpoint::App.path(&[app])).await
    }

    pub async fn app_destroy(&self, app: &str) -> Result<(), ApiError> {
        self.delete(&Endpoint::AppDestroy.path(&[app])).await
    }

    pub async fn app_transfer(&self, app: &str, owner: &str) -> Result<App, ApiError> {
        self.post(&Endpoint::AppTransfer.path(&[app]), &AppTransferRequest { owner: owner.to_owned() }).await
    }

    // --- config -------------------------------------------------------------------------------

    pub async fn config(&self, app: &str) -> Result<Config, ApiError> {
        self.get(&Endpoint::Config.path(&[app])).await
    }

    pub async fn config_update(&self, app: &str, update: &ConfigUpdate) -> Result<Config, ApiError> {
        self.post(&Endpoint::ConfigUpdate.path(&[app]), update).await
    }

    // --- builds, releases, scale --------------------------------------------------------------

    pub async fn builds(&self, app: &str) -> Result<Vec<Build>, ApiError> {
        self.all(&Endpoint::Builds.path(&[app])).await
    }

    pub async fn build_create(&self, app: &str, req: &BuildCreateRequest) -> Result<Build, ApiError> {
        self.post(&Endpoint::BuildCreate.path(&[app]), req).await
    }

    pub async fn releases(&self, app: &str) -> Result<Vec<Release>, ApiError> {
        self.all(&Endpoint::Releases.path(&[app])).await
    }

    pub async fn release(&self, app: &str, version: u32) -> Result<Release, ApiError> {
        self.get(&Endpoint::Release.path(&[app, &format!("v{version}")])).await
    }

    pub async fn rollback(&self, app: &str, version: Option<u32>) -> Result<Release, ApiError> {
        self.post(&Endpoint::Rollback.path(&[app]), &RollbackRequest { version }).await
    }

    pub async fn scale(&self, app: &str, formation: &BTreeMap<String, u32>) -> Result<App, ApiError> {
        self.post(&Endpoint::Scale.path(&[app]), formation).await
    }

    pub async fn containers(&self, app: &str) -> Result<Vec<Container>, ApiError> {
        self.all(&Endpoint::Containers.path(&[app])).await
    }

    /// Restarts containers one at a time (all, a type, or one container of a type).
    /// The containers that will be restarted, one at a time.
    pub async fn restart(&self, app: &str, req: &RestartRequest) -> Result<Vec<Container>, ApiError> {
        self.post(&Endpoint::Restart.path(&[app]), req).await
    }

    /// Runs a one-off command; `on_event` sees each output line as it arrives. Returns the exit
    /// status (`None` when it is unknown).
    pub async fn run(
        &self,
        app: &str,
        command: &str,
        mut on_event: impl FnMut(&RunEvent),
    ) -> Result<Option<i64>, ApiError> {
        let url = format!("{}{}", self.base, Endpoint::Run.path(&[app]));
        let token = self.token.as_ref().ok_or(ApiError::NotLoggedIn)?;
        // One-offs may run long: no overall timeout, only the connect timeout.
        let req = reqwest::Client::new()
            .post(&url)
            .header("Authorization", format!("token {token}"))
            // The stream; without it the answer comes whole at the end, as Deis v1 clients want.
            .header("Accept", "application/x-ndjson")
            .json(&RunRequest { command: command.to_owned() });
        let mut exit = None;
        // Output after the last newline is not a whole event, so it is dropped.
        stream_lines(open_stream(req, &url).await?, &url, |line| {
            let event: RunEvent = serde_json::from_slice(line).map_err(|e| ApiError::Transport {
                url: url.clone(),
                reason: format!("unreadable run output: {e}"),
            })?;
            if let RunEvent::Exit { exit_code } = &event {
                exit = Some(*exit_code);
            }
            on_event(&event);
            Ok(())
        })
        .await?;
        exit.ok_or_else(|| ApiError::Transport {
            url: url.clone(),
            reason: "the run ended without an exit status".into(),
        })
    }

    /// An app's log lines as `deis logs` prints them (`<time> <app>[<process>]: <message>`), each
    /// passed to `on_line` as it arrives; with `query.follow` this returns only when the
    /// controller ends the answer or the connection drops.
    pub async fn logs(
        &self,
        app: &str,
        query: &LogsQuery,
        mut on_line: impl FnMut(&str),
    ) -> Result<(), ApiError> {
        let url = format!("{}{}?{}", self.base, Endpoint::Logs.path(&[app]), query.to_query_string());
        let token = self.token.as_ref().ok_or(ApiError::NotLoggedIn)?;
        // Following has no end: no overall timeout, only the connect timeout.
        let req = reqwest::Client::new().get(&url).header("Authorization", format!("token {token}"));
        let rest = stream_lines(open_stream(req, &url).await?, &url, |line| {
            on_line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref());
            Ok(())
        })
        .await?;
        // A last line without its newline is still a line.
        if !rest.is_empty() {
            on_line(String::from_utf8_lossy(&rest).as_ref());
        }
        Ok(())
    }

    pub async fn drains(&self, app: &str) -> Result<Vec<Drain>, ApiError> {
        self.all(&Endpoint::Drains.path(&[app])).await
    }

    pub async fn drain_add(&self, app: &str, url: &str) -> Result<Drain, ApiError> {
        self.post(&Endpoint::DrainAdd.path(&[app]), &DrainCreateRequest { url: url.to_owned() }).await
    }

    pub async fn drain_remove(&self, app: &str, id: &str) -> Result<(), ApiError> {
        self.delete(&Endpoint::DrainRemove.path(&[app, id])).await
    }

    /// The rollout of the app's newest release; `None` before its first deploy.
    pub async fn deploy_status(&self, app: &str) -> Result<Option<DeployStatus>, ApiError> {
        self.get(&Endpoint::Deploy.path(&[app])).await
    }

    // --- domains ------------------------------------------------------------------------------

    pub async fn domains(&self, app: &str) -> Result<Vec<Domain>, ApiError> {
        self.all(&Endpoint::Domains.path(&[app])).await
    }

    pub async fn domain_add(&self, app: &str, domain: &str) -> Result<Domain, ApiError> {
        self.post(&Endpoint::DomainAdd.path(&[app]), &DomainCreateRequest { domain: domain.to_owned() }).await
    }

    pub async fn domain_remove(&self, app: &str, domain: &str) -> Result<(), ApiError> {
        self.delete(&Endpoint::DomainRemove.path(&[app, domain])).await
    }

    // --- certs --------------------------------------------------------------------------------

    pub async fn certs(&self) -> Result<Vec<Cert>, ApiError> {
        self.all(&Endpoint::Certs.path(&[])).await
    }

    pub async fn cert_add(&self, req: &CertCreateRequest) -> Result<Cert, ApiError> {
        self.post(&Endpoint::CertAdd.path(&[]), req).await
    }

    pub async fn cert_remove(&self, name: &str) -> Result<(), ApiError> {
        self.delete(&Endpoint::CertRemove.path(&[name])).await
    }

    pub async fn cert_attach(&self, name: &str, domain: &str) -> Result<Cert, ApiError> {
        self.post(&Endpoint::CertAttach.path(&[name]), &CertAttachRequest { domain: domain.to_owned() }).await
    }

    pub async fn cert_detach(&self, name: &str, domain: &str) -> Result<(), ApiError> {
        self.delete(&Endpoint::CertDetach.path(&[name, domain])).await
    }

    // --- keys ---------------------------------------------------------------------------------

    pub async fn keys(&self) -> Result<Vec<Key>, ApiError> {
        self.all(&Endpoint::Keys.path(&[])).await
    }

    pub async fn key_add(&self, req: &KeyCreateRequest) -> Result<Key, ApiError> {
        self.post(&Endpoint::KeyAdd.path(&[]), req).await
    }

    pub async fn key_remove(&self, id: &str) -> Result<(), ApiError> {
        self.delete(&Endpoint::KeyRemove.path(&[id])).await
    }

    // --- perms --------------------------------------------------------------------------------

    pub async fn perms(&self, app: &str) -> Result<AppPerms, ApiError> {
        self.get(&Endpoint::Perms.path(&[app])).await
    }

    pub async fn perm_create(&self, app: &str, username: &str) -> Result<(), ApiError> {
        self.call_raw(
            Method::POST,
            &Endpoint::PermCreate.path(&[app]),
            Some(&PermCreateRequest { username: username.to_owned() }),
            true,
        )
        .await
        .map(|_| ())
    }

    pub async fn perm_delete(&self, app: &str, username: &str) -> Result<(), ApiError> {
        self.delete(&Endpoint::PermDelete.path(&[app, username])).await
    }

    pub async fn admins(&self) -> Result<Vec<AdminPerm>, ApiError> {
        self.all(&Endpoint::Admins.path(&[])).await
    }

    pub async fn admin_create(&self, username: &str) -> Result<(), ApiError> {
        self.call_raw(
            Method::POST,
            &Endpoint::AdminCreate.path(&[]),
            Some(&PermCreateRequest { username: username.to_owned() }),
            true,
        )
        .await
        .map(|_| ())
    }

    pub async fn admin_delete(&self, username: &str) -> Result<(), ApiError> {
        self.delete(&Endpoint::AdminDelete.path(&[username])).await
    }

    // --- builder hooks (the builder's own secret, see `for_builder`) ---------------------------

    /// Who registered the SSH key with this fingerprint (`SHA256:…`).
    pub async fn hook_key_owner(&self, fingerprint: &str) -> Result<HookKeyOwner, ApiError> {
        self.get(&Endpoint::HookKeyOwner.path(&[fingerprint])).await
    }

    /// Whether `username` may push to `app`, and the app's build settings if so.
    pub async fn hook_push(&self, username: &str, app: &str) -> Result<HookPush, ApiError> {
        self.post(
            &Endpoint::HookPush.path(&[]),
            &HookPushRequest { username: username.to_owned(), app: app.to_owned() },
        )
        .await
    }

    /// The release made from a build, and how the app's rollout is going.
    pub async fn hook_build_status(&self, app: &str, build: uuid::Uuid) -> Result<HookBuildStatus, ApiError> {
        self.get(&Endpoint::HookBuildStatus.path(&[app, &build.to_string()])).await
    }
}
