//! The command line: every `deis` command, its arguments and help text, as clap derive types.
//!
//! Commands keep Deis v1's `group:action` names (`apps:create`, `config:set`). The bare group
//! names (`deis apps`, `deis config`) and the v1 shortcuts (`create`, `scale`, `pull`, …) are
//! aliases, so they show in `deis help` next to the command they stand for.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "deis",
    version,
    about = "The Deis command-line client: create, configure, deploy and scale apps.",
    after_help = "Run `deis login <controller-url>` first. The app is taken from --app, or else from \
                  the `deis` git remote of the current repository.",
    infer_subcommands = false
)]
pub struct Cli {
    /// The app to act on (default: the app of this git repository's `deis` remote).
    #[arg(short, long, global = true, value_name = "APP")]
    pub app: Option<String>,

    /// Print the raw JSON result instead of text, for scripts.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // --- auth ---------------------------------------------------------------------------------
    /// Register a new user with a controller, and log in.
    #[command(name = "register", visible_alias = "auth:register")]
    Register(RegisterArgs),

    /// Log in to a controller.
    #[command(name = "login", visible_alias = "auth:login")]
    Login(LoginArgs),

    /// Log out: forget the saved token.
    #[command(name = "logout", visible_alias = "auth:logout")]
    Logout,

    /// Show who you are logged in as, and where.
    #[command(name = "whoami", visible_alias = "auth:whoami")]
    Whoami,

    /// Change your password (or, as an admin, another user's).
    #[command(name = "passwd", visible_alias = "auth:passwd")]
    Passwd(PasswdArgs),

    /// Delete your account (or, as an admin, another user's).
    #[command(name = "auth:cancel")]
    Cancel(CancelArgs),

    /// Replace your API token (or, as an admin, another user's or everyone's).
    #[command(name = "auth:regenerate")]
    Regenerate(RegenerateArgs),

    // --- apps ---------------------------------------------------------------------------------
    /// Create an app, and add its `deis` git remote.
    #[command(name = "apps:create", visible_alias = "create")]
    AppsCreate(AppsCreateArgs),

    /// List the apps you can see.
    #[command(name = "apps:list", visible_alias = "apps")]
    AppsList,

    /// Show an app: its URL, owner, formation and domains.
    #[command(name = "apps:info", visible_alias = "info")]
    AppsInfo,

    /// Open the app's URL in a browser (prints it when there is none).
    #[command(name = "apps:open", visible_alias = "open")]
    AppsOpen,

    /// Show the app's logs: its containers' output, the router's access lines, builds and the
    /// controller's events. `deis logs -n 500`, `deis logs -f`.
    #[command(name = "apps:logs", visible_alias = "logs")]
    AppsLogs(LogsArgs),

    /// Destroy an app and everything it runs.
    #[command(name = "apps:destroy", visible_alias = "destroy")]
    AppsDestroy(AppsDestroyArgs),

    /// Give an app to another user.
    #[command(name = "apps:transfer")]
    AppsTransfer {
        /// The new owner.
        username: String,
    },

    // --- config -------------------------------------------------------------------------------
    /// List an app's environment variables.
    #[command(name = "config:list", visible_alias = "config")]
    ConfigList {
        /// Print them on one line, `KEY=value KEY=value`.
        #[arg(long)]
        oneline: bool,
    },

    /// Set environment variables: `deis config:set KEY=value ...` (makes a new release).
    #[command(name = "config:set")]
    ConfigSet {
        /// `KEY=value` pairs; the value may contain `=`.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },

    /// Unset environment variables: `deis config:unset KEY ...` (makes a new release).
    #[command(name = "config:unset")]
    ConfigUnset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },

    /// Write the app's environment to a .env file.
    ///
    /// Without --overwrite, values already in the file are kept and only new keys are added.
    #[command(name = "config:pull")]
    ConfigPull {
        /// The file to write.
        #[arg(short, long, default_value = ".env")]
        output: PathBuf,
        /// Replace values already in the file with the app's.
        #[arg(long)]
        overwrite: bool,
    },

    /// Set every variable of a .env file on the app (makes a new release).
    #[command(name = "config:push")]
    ConfigPush {
        /// The file to read.
        #[arg(short, long, default_value = ".env")]
        path: PathBuf,
    },

    // --- releases, builds, scale --------------------------------------------------------------
    /// List an app's releases, newest first.
    #[command(name = "releases:list", visible_alias = "releases")]
    ReleasesList,

    /// Show one release: `deis releases:info v3`.
    #[command(name = "releases:info")]
    ReleasesInfo {
        /// The version, `v3` or `3`.
        version: String,
    },

    /// Roll back to an earlier release (the one before the current, by default).
    #[command(name = "releases:rollback", visible_alias = "rollback")]
    ReleasesRollback {
        /// The version to roll back to, `v3` or `3`.
        version: Option<String>,
    },

    /// Run a one-off command in a new container of the app's current release, showing its output;
    /// exits with the command's status. `deis run -- ls -la`.
    #[command(name = "apps:run", visible_alias = "run")]
    AppsRun {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
        command: Vec<String>,
    },

    /// List an app's containers, and how its newest release is rolling out.
    #[command(name = "ps:list", visible_alias = "ps")]
    PsList,

    /// Restart containers one at a time: all of them, a type (`web`) or one (`web.2`).
    #[command(name = "ps:restart")]
    PsRestart {
        /// `web` or `web.2`; every container when absent.
        target: Option<String>,
    },

    /// Set how many containers of each process type run: `deis scale web=3 worker=1`.
    #[command(name = "ps:scale", visible_alias = "scale")]
    PsScale {
        #[arg(required = true, value_name = "TYPE=COUNT")]
        pairs: Vec<String>,
    },

    /// List an app's builds.
    #[command(name = "builds:list", visible_alias = "builds")]
    BuildsList,

    /// Deploy an image from the platform registry as a new build (and release).
    #[command(name = "builds:create", visible_alias = "pull")]
    BuildsCreate {
        /// The image, e.g. `registry.example.com/myapp:v2`.
        image: String,
        /// Process types and commands, Procfile style: `--procfile 'web: gunicorn app:app'`.
        /// May be repeated, or hold several lines.
        #[arg(long)]
        procfile: Vec<String>,
    },

    // --- domains and certs --------------------------------------------------------------------
    /// List an app's custom domains.
    #[command(name = "domains:list", visible_alias = "domains")]
    DomainsList,

    /// Add a custom domain to an app.
    #[command(name = "domains:add")]
    DomainsAdd { domain: String },

    /// Remove a custom domain from an app.
    #[command(name = "domains:remove")]
    DomainsRemove { domain: String },

    /// Get credentials for reading your apps' logs straight from NATS (`--revoke` ends them).
    ///
    /// Prints a NATS user name, a password (shown only now) and the subjects you may subscribe
    /// to. Asking again replaces them.
    #[command(
        name = "logs:credentials",
        after_help = "Each connection is granted the apps you may read when it connects: apps \
                      shared with you later need no new credentials. `passwd`, `auth:regenerate` \
                      and `auth:cancel` end them too."
    )]
    LogsCredentials(LogsCredentialsArgs),

    /// List the app's log drains.
    #[command(name = "drains:list", visible_alias = "drains")]
    DrainsList,

    /// Forward the app's logs to a drain: syslog://host:port, syslog+tls://host:port or https://…
    #[command(name = "drains:add")]
    DrainsAdd { url: String },

    /// Stop forwarding the app's logs to a drain (its URL or id).
    #[command(name = "drains:remove")]
    DrainsRemove { url: String },

    /// List SSL certificates.
    #[command(name = "certs:list", visible_alias = "certs")]
    CertsList,

    /// Add an SSL certificate from PEM files.
    #[command(name = "certs:add")]
    CertsAdd {
        /// The certificate (chain) PEM file.
        cert: PathBuf,
        /// The private key PEM file.
        key: PathBuf,
        /// A name for the certificate (its common name by default).
        #[arg(long)]
        name: Option<String>,
    },

    /// Remove an SSL certificate.
    #[command(name = "certs:remove")]
    CertsRemove { name: String },

    /// Serve a domain with a certificate.
    #[command(name = "certs:attach")]
    CertsAttach { name: String, domain: String },

    /// Stop serving a domain with a certificate.
    #[command(name = "certs:detach")]
    CertsDetach { name: String, domain: String },

    // --- keys ---------------------------------------------------------------------------------
    /// List your SSH keys.
    #[command(name = "keys:list", visible_alias = "keys")]
    KeysList,

    /// Add an SSH public key (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub, then id_rsa.pub).
    #[command(name = "keys:add")]
    KeysAdd {
        /// The public key file.
        path: Option<PathBuf>,
        /// A name for the key (default: the key's comment, else the file name).
        #[arg(long)]
        id: Option<String>,
    },

    /// Remove an SSH key.
    #[command(name = "keys:remove")]
    KeysRemove { id: String },

    // --- perms and users ----------------------------------------------------------------------
    /// List who an app is shared with (or, with --admin, the platform administrators).
    #[command(name = "perms:list", visible_alias = "perms")]
    PermsList {
        #[arg(long)]
        admin: bool,
    },

    /// Share an app with a user (or, with --admin, make them an administrator).
    #[command(name = "perms:create")]
    PermsCreate {
        username: String,
        #[arg(long)]
        admin: bool,
    },

    /// Stop sharing an app with a user (or, with --admin, revoke their administrator rights).
    #[command(name = "perms:delete")]
    PermsDelete {
        username: String,
        #[arg(long)]
        admin: bool,
    },

    /// List every user (administrators only).
    #[command(name = "users:list", visible_alias = "users")]
    UsersList,

    // --- limits and tags ----------------------------------------------------------------------
    /// List an app's memory and CPU limits.
    #[command(name = "limits:list", visible_alias = "limits")]
    LimitsList,

    /// Set limits: `deis limits:set web=512M` (memory) or `deis limits:set --cpu web=512`.
    #[command(name = "limits:set")]
    LimitsSet {
        #[command(flatten)]
        kind: LimitKind,
        #[arg(required = true, value_name = "TYPE=LIMIT")]
        pairs: Vec<String>,
    },

    /// Unset limits: `deis limits:unset web` (memory) or `deis limits:unset --cpu web`.
    #[command(name = "limits:unset")]
    LimitsUnset {
        #[command(flatten)]
        kind: LimitKind,
        #[arg(required = true, value_name = "TYPE")]
        types: Vec<String>,
    },

    /// List an app's tags (the node labels its containers must run on).
    #[command(name = "tags:list", visible_alias = "tags")]
    TagsList,

    /// Set tags: `deis tags:set environ=prod`.
    #[command(name = "tags:set")]
    TagsSet {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },

    /// Unset tags: `deis tags:unset environ`.
    #[command(name = "tags:unset")]
    TagsUnset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },

    // --- git and shell ------------------------------------------------------------------------
    /// Add the app's `deis` git remote to the current repository.
    #[command(name = "git:remote")]
    GitRemote {
        /// The remote's name.
        #[arg(short, long, default_value = crate::git::DEFAULT_REMOTE)]
        remote: String,
    },

    /// Print a shell completion script: `deis completions bash > /etc/bash_completion.d/deis`.
    #[command(name = "completions")]
    Completions { shell: clap_complete::Shell },
}

/// `register` takes what `login` does, and an email address.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub login: LoginArgs,
    #[arg(long)]
    pub email: Option<String>,
    /// The operator's one-time code that makes this user the first administrator.
    #[arg(long, value_name = "CODE")]
    pub admin_code: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The controller, e.g. `http://deis.example.com`.
    pub controller: String,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Change this user's password instead of yours (administrators only).
    #[arg(long)]
    pub username: Option<String>,
    /// The current password.
    #[arg(long)]
    pub password: Option<String>,
    #[arg(long)]
    pub new_password: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Delete this user instead of yourself (administrators only).
    #[arg(long)]
    pub username: Option<String>,
    /// Skip the question by naming the user to delete.
    #[arg(long, value_name = "USERNAME")]
    pub confirm: Option<String>,
}

#[derive(Debug, Args)]
pub struct RegenerateArgs {
    /// Regenerate this user's token instead of yours (administrators only).
    #[arg(long, conflicts_with = "all")]
    pub username: Option<String>,
    /// Regenerate every user's token (administrators only).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct AppsCreateArgs {
    /// The app's name (default: --app, else one the controller makes up).
    pub name: Option<String>,
    /// Do not add a git remote.
    #[arg(long)]
    pub no_remote: bool,
    /// The git remote's name.
    #[arg(long, default_value = crate::git::DEFAULT_REMOTE, conflicts_with = "no_remote")]
    pub remote: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// How many of the newest lines to show.
    #[arg(short = 'n', long = "lines", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub lines: u32,
    /// Keep showing new lines as they come (Ctrl-C to stop).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only this process type (`web`), process (`web.1`) or source (`router`, `builder`).
    #[arg(short = 'p', long = "process", visible_alias = "ps")]
    pub process: Option<String>,
    /// Only lines at or after this time: RFC 3339 (`2026-11-27T10:00:00Z`) or an age (`10m`, `2h`, `1d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines containing this text.
    #[arg(long)]
    pub contains: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsCredentialsArgs {
    /// Revoke your log credentials instead: new connections with them are refused.
    #[arg(long)]
    pub revoke: bool,
}

#[derive(Debug, Args)]
pub struct AppsDestroyArgs {
    /// Skip the question by naming the app to destroy.
    #[arg(long, value_name = "APP")]
    pub confirm: Option<String>,
}

/// Which limit `limits:set`/`limits:unset` act on: memory unless `--cpu`.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct LimitKind {
    /// Memory limits, e.g. `web=512M` (the default).
    #[arg(short, long)]
    pub memory: bool,
    /// CPU shares, e.g. `web=512` (1024 is one CPU).
    #[arg(short, long)]
    pub cpu: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Command {
        let mut argv = vec!["deis"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().command
    }

    #[test]
    fn shortcuts_and_bare_groups_are_aliases() {
        assert!(matches!(parse(&["apps"]), Command::AppsList));
        assert!(matches!(parse(&["config"]), Command::ConfigList { oneline: false }));
        assert!(matches!(
            parse(&["create", "foo"]),
            Command::AppsCreate(AppsCreateArgs { name: Some(_), .. })
        ));
        assert!(matches!(parse(&["scale", "web=2"]), Command::PsScale { .. }));
        assert!(matches!(parse(&["rollback"]), Command::ReleasesRollback { version: None }));
        assert!(matches!(parse(&["pull", "img"]), Command::BuildsCreate { .. }));
        assert!(matches!(
            parse(&["logs:credentials"]),
            Command::LogsCredentials(LogsCredentialsArgs { revoke: false })
        ));
        assert!(matches!(
            parse(&["logs:credentials", "--revoke"]),
            Command::LogsCredentials(LogsCredentialsArgs { revoke: true })
        ));
        assert!(matches!(parse(&["logs"]), Command::AppsLogs(_)), "`logs` stays `apps:logs`");
        assert!(matches!(
            parse(&["limits:set", "--cpu", "web=512"]),
            Command::LimitsSet { kind: LimitKind { cpu: true, .. }, .. }
        ));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["deis", "config:set", "A=1", "-a", "foo", "--json"]).unwrap();
        assert_eq!(cli.app.as_deref(), Some("foo"));
        assert!(cli.json);
        assert!(Cli::try_parse_from(["deis", "config:set"]).is_err());
        assert!(Cli::try_parse_from(["deis", "limits:set", "--cpu", "--memory", "web=1"]).is_err());
    }
}
