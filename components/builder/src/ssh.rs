//! The SSH server `git push` talks to. A key is let in when a user registered it (`deis
//! keys:add`), asked of the controller by fingerprint; the only command is `git-receive-pack
//! '<app>.git'`, for users with access to the app. The channel's stdin, stdout and stderr are
//! those of the system's `git receive-pack`, and its exit status is the channel's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_schema::AppName;
use controller_api::HookKeyOwner;
use russh::keys::{HashAlg, PrivateKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Builder;
use crate::git;
use crate::push::PushContext;

/// The server configuration: the persisted host key, public keys only.
pub fn config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        keys: vec![host_key],
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::KeyboardInteractive][..]),
        auth_rejection_time: std::time::Duration::from_millis(300),
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        inactivity_timeout: Some(std::time::Duration::from_secs(3600)),
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    }
}

/// Loads the host key, generating and saving it on first start (so clients' `known_hosts`
/// stays valid across restarts).
pub async fn host_key(path: &Path) -> Result<PrivateKey, String> {
    if let Ok(text) = tokio::fs::read_to_string(path).await {
        return PrivateKey::from_openssh(&text).map_err(|e| format!("host key {}: {e}", path.display()));
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    let key = PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| format!("encoding the host key: {e}"))?;
    let tmp = path.with_extension("tmp");
    let write = async {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true).mode(0o600);
        let mut file = tokio::fs::OpenOptions::from(options).open(&tmp).await?;
        file.write_all(text.as_bytes()).await?;
        file.sync_all().await?;
        tokio::fs::rename(&tmp, path).await
    };
    write.await.map_err(|e| format!("saving the host key {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the SSH host key");
    Ok(key)
}

/// Makes one handler per connection.
#[derive(Debug, Clone)]
pub struct Server {
    pub builder: Arc<Builder>,
}

impl Server {
    fn handler(&self, peer: Option<SocketAddr>, state: Arc<ConnState>) -> Connection {
        Connection {
            builder: self.builder.clone(),
            peer,
            user: None,
            refused_keys: Vec::new(),
            told: false,
            channels: HashMap::new(),
            state,
        }
    }
}

impl russh::server::Server for Server {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        self.handler(peer, Arc::new(ConnState::new()))
    }
}

/// What the connection's watchdog knows of it.
#[derive(Debug)]
struct ConnState {
    authenticated: AtomicBool,
    /// Pushes running on the connection: while one runs (its build streams output or is busy),
    /// the connection is not idle.
    busy: AtomicUsize,
    last_activity: Mutex<Instant>,
}

impl ConnState {
    fn new() -> Self {
        Self {
            authenticated: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            last_activity: Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_activity.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// Counts a push as running until dropped.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: &Arc<ConnState>) -> Self {
        state.busy.fetch_add(1, Ordering::Relaxed);
        Busy(state.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Connections open per client address.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

struct AddressSlot(Arc<PerAddress>, IpAddr);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves SSH on `listener` until `stop`: at most `ssh_max_connections_per_address` connections
/// per client address; a client that has not logged in within `ssh_auth_timeout_secs` (the
/// banner exchange included) is dropped, and so is a logged-in connection with no push running
/// and nothing received for `ssh_idle_timeout_secs`. Silent sockets cannot pile up.
pub async fn serve(
    server: Server,
    config: Arc<russh::server::Config>,
    listener: &TcpListener,
    stop: CancellationToken,
) {
    let limits = &server.builder.config;
    let auth_timeout = Duration::from_secs(limits.ssh_auth_timeout_secs.max(1));
    let idle_timeout = Duration::from_secs(limits.ssh_idle_timeout_secs.max(1));
    let max_per_address = limits.ssh_max_connections_per_address.max(1);
    let per_address = Arc::new(PerAddress::default());
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accepting an SSH connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let Some(slot) = per_address.take(peer.ip(), max_per_address) else {
            tracing::info!(%peer, max_per_address, "SSH connection refused: too many from this address");
            server.builder.metrics.refused("too_many_connections");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let handler = server.handler(Some(peer), state.clone());
        let (config, stop, metrics) = (config.clone(), stop.clone(), server.builder.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            // The banner exchange is inside the login time too.
            let session =
                match tokio::time::timeout(auth_timeout, russh::server::run_stream(config, socket, handler))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "SSH connection setup failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "SSH client sent no banner in time; dropped");
                        metrics.metrics.refused("login_timeout");
                        return;
                    }
                };
            let handle = session.handle();
            let mut session = std::pin::pin!(session);
            let tick =
                (auth_timeout.min(idle_timeout) / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
            let why = loop {
                tokio::select! {
                    _ = &mut session => return,
                    _ = stop.cancelled() => break "the builder is shutting down",
                    _ = tokio::time::sleep(tick) => {}
                }
                if !state.authenticated.load(Ordering::Relaxed) {
                    if started.elapsed() >= auth_timeout {
                        metrics.metrics.refused("login_timeout");
                        break "no login in time";
                    }
                } else if state.busy.load(Ordering::Relaxed) == 0 && state.idle_for() >= idle_timeout {
                    break "idle for too long";
                }
            };
            tracing::info!(%peer, reason = why, "closing SSH connection");
            let _ = handle.disconnect(russh::Disconnect::ByApplication, why.to_owned(), String::new()).await;
            // A client that does not close its side is dropped after a grace.
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut session).await;
        });
    }
}

/// One SSH connection.
pub struct Connection {
    builder: Arc<Builder>,
    peer: Option<SocketAddr>,
    /// Who the key belongs to, once authenticated.
    user: Option<HookKeyOwner>,
    /// Fingerprints offered that no user registered, to say so if nothing else works.
    refused_keys: Vec<String>,
    /// Whether that has been said (clients retry keyboard-interactive; once is enough).
    told: bool,
    channels: HashMap<ChannelId, Channel<Msg>>,
    state: Arc<ConnState>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(&mut self, _user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        match self.builder.controller.hook_key_owner(&fingerprint).await {
            Ok(owner) => {
                tracing::info!(peer = ?self.peer, user = %owner.username, %fingerprint, "SSH key accepted");
                self.user = Some(owner);
                self.state.authenticated.store(true, Ordering::Relaxed);
                self.state.touch();
                Ok(Auth::Accept)
            }
            Err(error) => {
                if error.is_not_found() {
                    tracing::info!(peer = ?self.peer, %fingerprint, "SSH key not registered");
                } else {
                    tracing::warn!(peer = ?self.peer, %fingerprint, %error, "could not look up an SSH key");
                }
                self.builder.metrics.refused("unknown_key");
                self.refused_keys.push(fingerprint);
                Ok(Auth::reject())
            }
        }
    }

    /// Offered only after every key was refused: it carries no secret and never succeeds, but
    /// lets the client print why the push is refused instead of a bare "Permission denied".
    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if response.is_some() || self.told {
            return Ok(Auth::reject());
        }
        self.told = true;
        let keys =
            if self.refused_keys.is_empty() { "none".to_owned() } else { self.refused_keys.join(", ") };
        Ok(Auth::Partial {
            name: "Deis".into(),
            instructions: format!(
                "No SSH key you offered is registered with Deis (offered: {keys}).\n\
                 Add yours with `deis keys:add ~/.ssh/id_ed25519.pub` and push again.\n"
            )
            .into(),
            prompts: Vec::new().into(),
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.state.touch();
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        let Some(ch) = self.channels.remove(&channel) else { return Ok(()) };
        session.channel_success(channel)?;
        let name = self.user.as_ref().map_or("there", |u| u.username.as_str()).to_owned();
        tokio::spawn(refuse(
            ch,
            format!("Hi {name}! The Deis builder takes `git push` only; it offers no shell.\n"),
        ));
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ch) = self.channels.remove(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let Some(user) = self.user.clone() else {
            tokio::spawn(refuse(ch, "not authenticated\n".into()));
            return Ok(());
        };
        self.state.touch();
        match git::parse_command(data) {
            Ok(app) => {
                let builder = self.builder.clone();
                let busy = Busy::new(&self.state);
                tokio::spawn(async move {
                    serve_push(builder, user.username, app, ch).await;
                    drop(busy);
                });
            }
            Err(refusal) => {
                tracing::info!(user = %user.username, %refusal, "SSH command refused");
                self.builder.metrics.refused("command");
                tokio::spawn(refuse(ch, format!("{refusal}\n")));
            }
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!(subsystem = %name, "SSH subsystem refused");
        session.channel_failure(channel)?;
        Ok(())
    }
}

/// Tells the client why, on stderr, and ends the channel with status 1.
async fn refuse(ch: Channel<Msg>, text: String) {
    let _ = ch.extended_data(1, text.as_bytes()).await;
    let _ = ch.exit_status(1).await;
    let _ = ch.eof().await;
    let _ = ch.close().await;
}

/// Runs `git receive-pack` for an authorised push, with the channel as its stdio.
async fn serve_push(builder: Arc<Builder>, user: String, app: AppName, ch: Channel<Msg>) {
    let span = tracing::info_span!("push", app = %app, user = %user);
    async move {
        let settings = match builder.controller.hook_push(&user, app.as_str()).await {
            Ok(s) => s,
            Err(error) => {
                tracing::info!(%error, "push refused");
                builder.metrics.refused("no_access");
                let text = match error.status() {
                    Some(403) | Some(404) => format!("{error}\n"),
                    _ => format!("the builder cannot check your access right now ({error}); try again\n"),
                };
                return refuse(ch, text).await;
            }
        };
        if let Some(uuid) = settings.app_uuid {
            crate::destroyed::forget_other_app(&builder, &app, uuid).await;
        }
        let prepared = match git::ensure_repo(&builder.config.git, &builder.config.repos_dir(), &app).await {
            Ok(repo) => match settings.app_uuid {
                Some(uuid) => git::record_app(&repo, uuid).await.map(|()| repo),
                None => Ok(repo),
            },
            Err(e) => Err(e),
        };
        let repo = match prepared {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, "cannot prepare the repository");
                return refuse(ch, format!("the builder cannot prepare the repository: {error}\n")).await;
            }
        };
        let abandoned = tokio_util::sync::CancellationToken::new();
        let token = builder.add_push(PushContext {
            app: app.clone(),
            user,
            settings,
            repo: repo.clone(),
            lock: tokio::sync::Mutex::new(None),
            abandoned: abandoned.clone(),
        });
        let status = run_receive_pack(&builder, &repo, &token, ch, abandoned).await;
        // Forgetting the push releases the app's build lock, now that git has recorded the ref.
        builder.forget_push(&token);
        tracing::info!(status, "receive-pack finished");
    }
    .instrument(span)
    .await
}

/// Connects the channel to `git receive-pack` and returns its exit status. When the client
/// hangs up first, `abandoned` is cancelled (the build stops) and git is killed.
async fn run_receive_pack(
    builder: &Builder,
    repo: &Path,
    token: &str,
    ch: Channel<Msg>,
    abandoned: tokio_util::sync::CancellationToken,
) -> u32 {
    let cfg = &builder.config;
    let mut child =
        match git::receive_pack(&cfg.git, repo, &builder.hook_exe, &cfg.hook_socket(), token).spawn() {
            Ok(c) => c,
            Err(error) => {
                refuse(ch, format!("the builder cannot run git: {error}\n")).await;
                return 1;
            }
        };
    let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        refuse(ch, "the builder cannot run git\n".into()).await;
        return 1;
    };
    let (mut read, write) = ch.split();
    let mut out_writer = write.make_writer();
    let mut err_writer = write.make_writer_ext(Some(1));
    let hung_up = abandoned.clone();
    let to_git = tokio::spawn(async move {
        let mut stdin = Some(stdin);
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    if let Some(pipe) = stdin.as_mut()
                        && pipe.write_all(&data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                // Dropping stdin closes it: git sees the end of the client's input.
                ChannelMsg::Eof => stdin = None,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        // The channel closed before git finished: the pusher went away.
        hung_up.cancel();
    });
    let from_git = async {
        let out = tokio::io::copy(&mut stdout, &mut out_writer);
        let err = tokio::io::copy(&mut stderr, &mut err_writer);
        let _ = tokio::join!(out, err);
        let _ = out_writer.flush().await;
        let _ = err_writer.flush().await;
    };
    let finished = async {
        from_git.await;
        child.wait().await
    };
    let waited = tokio::select! {
        w = finished => w,
        _ = abandoned.cancelled() => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let status = match waited {
        Ok(s) => s.code().and_then(|c| u32::try_from(c).ok()).unwrap_or(1),
        Err(_) => 1,
    };
    to_git.abort();
    let _ = write.exit_status(status).await;
    let _ = write.eof().await;
    let _ = write.close().await;
    status
}
