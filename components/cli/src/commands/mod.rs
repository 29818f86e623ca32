//! Runs a parsed command: one function per command, grouped by topic in the submodules, plus
//! the helpers several of them share.

mod apps;
mod auth;
mod config;
mod domains;
mod keys;
mod logs;
mod perms;
mod releases;

use anyhow::{Result, bail};
use clap::CommandFactory as _;

use crate::cli::{Cli, Command};
use crate::context::{self, Ctx, Env, ask};

/// Runs one command line in `env`.
pub async fn run(cli: Cli, env: Env) -> Result<()> {
    let ctx = Ctx { env, app: cli.app, json: cli.json };
    match cli.command {
        Command::Register(args) => auth::register(&ctx, args).await,
        Command::Login(args) => auth::login(&ctx, args).await,
        Command::Logout => auth::logout(&ctx),
        Command::Whoami => auth::whoami(&ctx).await,
        Command::Passwd(args) => auth::passwd(&ctx, args).await,
        Command::Cancel(args) => auth::cancel(&ctx, args).await,
        Command::Regenerate(args) => auth::regenerate(&ctx, args).await,

        Command::AppsCreate(args) => apps::create(&ctx, args).await,
        Command::AppsList => apps::list(&ctx).await,
        Command::AppsInfo => apps::info(&ctx).await,
        Command::AppsOpen => apps::open(&ctx).await,
        Command::AppsLogs(args) => logs::logs(&ctx, args).await,
        Command::LogsCredentials(args) => logs::credentials(&ctx, args).await,
        Command::DrainsList => logs::drains_list(&ctx).await,
        Command::DrainsAdd { url } => logs::drains_add(&ctx, &url).await,
        Command::DrainsRemove { url } => logs::drains_remove(&ctx, &url).await,
        Command::AppsDestroy(args) => apps::destroy(&ctx, args).await,
        Command::AppsTransfer { username } => apps::transfer(&ctx, &username).await,
        Command::GitRemote { remote } => apps::git_remote(&ctx, &remote).await,

        Command::ConfigList { oneline } => config::list(&ctx, oneline).await,
        Command::ConfigSet { pairs } => config::set(&ctx, &pairs).await,
        Command::ConfigUnset { keys } => config::unset(&ctx, &keys).await,
        Command::ConfigPull { output, overwrite } => config::pull(&ctx, &output, overwrite).await,
        Command::ConfigPush { path } => config::push(&ctx, &path).await,
        Command::LimitsList => config::limits_list(&ctx).await,
        Command::LimitsSet { kind, pairs } => config::limits_set(&ctx, kind.cpu, &pairs).await,
        Command::LimitsUnset { kind, types } => config::limits_unset(&ctx, kind.cpu, &types).await,
        Command::TagsList => config::tags_list(&ctx).await,
        Command::TagsSet { pairs } => config::tags_set(&ctx, &pairs).await,
        Command::TagsUnset { keys } => config::tags_unset(&ctx, &keys).await,

        Command::ReleasesList => releases::list(&ctx).await,
        Command::ReleasesInfo { version } => releases::info(&ctx, &version).await,
        Command::ReleasesRollback { version } => releases::rollback(&ctx, version.as_deref()).await,
        Command::PsScale { pairs } => releases::scale(&ctx, &pairs).await,
        Command::PsList => releases::ps(&ctx).await,
        Command::AppsRun { command } => releases::run(&ctx, &command.join(" ")).await,
        Command::PsRestart { target } => releases::restart(&ctx, target.as_deref()).await,
        Command::BuildsList => releases::builds_list(&ctx).await,
        Command::BuildsCreate { image, procfile } => releases::builds_create(&ctx, &image, &procfile).await,

        Command::DomainsList => domains::list(&ctx).await,
        Command::DomainsAdd { domain } => domains::add(&ctx, &domain).await,
        Command::DomainsRemove { domain } => domains::remove(&ctx, &domain).await,
        Command::CertsList => domains::certs_list(&ctx).await,
        Command::CertsAdd { cert, key, name } => domains::certs_add(&ctx, &cert, &key, name).await,
        Command::CertsRemove { name } => domains::certs_remove(&ctx, &name).await,
        Command::CertsAttach { name, domain } => domains::certs_attach(&ctx, &name, &domain).await,
        Command::CertsDetach { name, domain } => domains::certs_detach(&ctx, &name, &domain).await,

        Command::KeysList => keys::list(&ctx).await,
        Command::KeysAdd { path, id } => keys::add(&ctx, path, id).await,
        Command::KeysRemove { id } => keys::remove(&ctx, &id).await,

        Command::PermsList { admin } => perms::list(&ctx, admin).await,
        Command::PermsCreate { username, admin } => perms::create(&ctx, &username, admin).await,
        Command::PermsDelete { username, admin } => perms::delete(&ctx, &username, admin).await,
        Command::UsersList => perms::users(&ctx).await,

        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "deis", &mut script);
            context::out(&String::from_utf8_lossy(&script))
        }
    }
}

/// Makes the user confirm a destructive action by typing `name`, or by passing `--confirm=name`.
/// Without a terminal and without `--confirm`, it refuses: a script must say what it destroys.
fn confirm(ctx: &Ctx, action: &str, name: &str, given: Option<&str>) -> Result<()> {
    match given {
        Some(given) if given == name => Ok(()),
        Some(given) => bail!("--confirm={given} does not match '{name}'"),
        None if !ctx.env.interactive => {
            bail!("refusing to {action} {name} without confirmation: re-run with --confirm={name}")
        }
        None => {
            context::err(&format!(
                " !    WARNING: Potentially Destructive Action\n \
                 !    This command will {action}: {name}\n \
                 !    To proceed, type \"{name}\" or re-run this command with --confirm={name}\n\n"
            ));
            let answer = ask("> ")?;
            if answer != name {
                bail!("confirmation '{answer}' did not match '{name}': nothing was done");
            }
            Ok(())
        }
    }
}

/// Shows a value in a listing, escaping control characters so one value stays on one line.
fn one_line(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn ctx(interactive: bool) -> Ctx {
        let env = Env { home: None, profile: None, cwd: PathBuf::from("/"), interactive };
        Ctx { env, app: None, json: false }
    }

    #[test]
    fn confirmation_rules() {
        assert!(confirm(&ctx(false), "destroy the application", "foo", Some("foo")).is_ok());
        let err = confirm(&ctx(false), "destroy the application", "foo", Some("bar")).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        let err = confirm(&ctx(false), "destroy the application", "foo", None).unwrap_err();
        assert!(err.to_string().contains("--confirm=foo"), "{err}");
    }

    #[test]
    fn one_line_escapes_controls() {
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(one_line("plain = text"), "plain = text");
    }
}
