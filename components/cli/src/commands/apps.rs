//! Apps: apps:create, apps:list, apps:info, apps:destroy, apps:transfer, and git:remote.

use anyhow::{Result, bail};
use controller_api::{App, Domain};

use super::confirm;
use crate::cli::{AppsCreateArgs, AppsDestroyArgs};
use crate::context::{self, Ctx};
use crate::git::{self, Git};
use crate::parse::{validate_app, validate_segment};
use crate::table::header;

pub async fn create(ctx: &Ctx, args: AppsCreateArgs) -> Result<()> {
    let session = ctx.session()?;
    let name = args.name.or_else(|| ctx.app.clone());
    if let Some(name) = &name {
        validate_app(name)?;
    }
    let app = session.client.app_create(name.as_deref()).await?;
    ctx.note(&format!("Creating Application... done, created {}", app.id))?;
    let git = ctx.git();
    if !args.no_remote && git.is_repo() {
        let url = git::remote_url(&session.settings.controller, &app.id)?;
        // The app exists now whatever happens to the remote, so a clash is a warning, not a failure.
        if let Err(e) = add_remote(ctx, &git, &args.remote, &url) {
            context::err(&format!("Warning: {e:#}\n"));
        }
    }
    ctx.json_only(&app)
}

/// Adds git remote `name` pointing at `url`; an existing remote is left alone when it already
/// points there, and refused when it points elsewhere (it might be another app's).
fn add_remote(ctx: &Ctx, git: &Git, name: &str, url: &str) -> Result<()> {
    match git.remote_url(name) {
        Some(existing) if existing == url => ctx.note(&format!("Git remote {name} already points at {url}")),
        Some(existing) => bail!(
            "git remote {name} already exists and points at {existing}: remove it with \
             `git remote remove {name}`, or choose another name with --remote"
        ),
        None => {
            git.add_remote(name, url)?;
            ctx.note(&format!("Git remote {name} added\nremote available at {url}"))
        }
    }
}

pub async fn git_remote(ctx: &Ctx, remote: &str) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let git = ctx.git();
    if !git.is_repo() {
        bail!("{} is not inside a git repository", ctx.env.cwd.display());
    }
    // Checking the app exists (and is ours to see) avoids a remote that can only fail on push.
    let app = session.client.app(&app).await?;
    add_remote(ctx, &git, remote, &git::remote_url(&session.settings.controller, &app.id)?)
}

pub async fn list(ctx: &Ctx) -> Result<()> {
    let mut apps = ctx.session()?.client.apps().await?;
    apps.sort_by(|a, b| a.id.cmp(&b.id));
    ctx.show(&apps, |apps| {
        let mut out = header("Apps");
        for app in apps {
            out.push_str(&app.id);
            out.push('\n');
        }
        out
    })
}

/// `deis open`: the app's URL, handed to the desktop's browser when there is one. The URL is an
/// argument to `xdg-open`, never part of a shell line.
pub async fn open(ctx: &Ctx) -> Result<()> {
    let app = ctx.session()?.client.app(&ctx.app()?).await?;
    let url = format!("http://{}", app.url);
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let has_display = set("DISPLAY") || set("WAYLAND_DISPLAY");
    let opened = has_display
        && std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if opened {
        ctx.note(&format!("Opening {url}\n"))?;
    } else {
        println!("{url}");
    }
    Ok(())
}

pub async fn info(ctx: &Ctx) -> Result<()> {
    let session = ctx.session()?;
    let app = session.client.app(&ctx.app()?).await?;
    if ctx.json {
        return ctx.json_only(&app);
    }
    let domains = session.client.domains(&app.id).await?;
    context::out(&render_info(&app, &domains))
}

fn render_info(app: &App, domains: &[Domain]) -> String {
    let mut out = header(&format!("{} Application", app.id));
    out.push_str(&crate::table::columns(&[
        ["uuid:".to_owned(), app.uuid.to_string()],
        ["url:".to_owned(), app.url.clone()],
        ["owner:".to_owned(), app.owner.clone()],
        ["id:".to_owned(), app.id.clone()],
        ["created:".to_owned(), app.created.clone()],
        ["updated:".to_owned(), app.updated.clone()],
    ]));
    out.push('\n');
    out.push_str(&render_structure(&app.id, app));
    out.push('\n');
    out.push_str(&header(&format!("{} Domains", app.id)));
    for domain in domains {
        out.push_str(&domain.domain);
        out.push('\n');
    }
    out
}

/// `=== app Processes` and one `type: count` line per process type of the formation.
pub fn render_structure(name: &str, app: &App) -> String {
    let mut out = header(&format!("{name} Processes"));
    if app.structure.is_empty() {
        out.push_str("(none: deploy with `git push deis main`, then `deis scale web=1`)\n");
    }
    for (kind, count) in &app.structure {
        out.push_str(&format!("{kind}: {count}\n"));
    }
    out
}

pub async fn destroy(ctx: &Ctx, args: AppsDestroyArgs) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    confirm(ctx, "destroy the application", &app, args.confirm.as_deref())?;
    session.client.app_destroy(&app).await?;
    ctx.note(&format!("Destroying {app}... done"))?;
    // Like Deis v1, drop the `deis` remote when it pointed at the app just destroyed.
    let git = ctx.git();
    let remote_app = git.remote_url(git::DEFAULT_REMOTE).as_deref().and_then(git::app_from_remote_url);
    if remote_app.as_deref() == Some(app.as_str()) {
        match git.remove_remote(git::DEFAULT_REMOTE) {
            Ok(()) => ctx.note(&format!("Git remote {} removed", git::DEFAULT_REMOTE))?,
            Err(e) => context::err(&format!("Warning: {e:#}\n")),
        }
    }
    Ok(())
}

pub async fn transfer(ctx: &Ctx, username: &str) -> Result<()> {
    validate_segment("username", username)?;
    let (session, app) = ctx.app_session()?;
    let updated = session.client.app_transfer(&app, username).await?;
    ctx.note(&format!("Transferring {app} to {username}... done"))?;
    ctx.json_only(&updated)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn info_shows_app_formation_and_domains() {
        let app = App {
            uuid: uuid::Uuid::nil(),
            id: "foo".into(),
            owner: "alice".into(),
            url: "foo.example.com".into(),
            structure: BTreeMap::from([("web".into(), 2), ("worker".into(), 1)]),
            created: "2026-11-27T10:00:00Z".into(),
            updated: "2026-11-27T11:00:00Z".into(),
        };
        let domain = Domain {
            owner: "alice".into(),
            app: "foo".into(),
            domain: "www.foo.com".into(),
            created: String::new(),
            updated: String::new(),
        };
        let text = render_info(&app, &[domain]);
        assert!(
            text.starts_with("=== foo Application\nuuid:     00000000-0000-0000-0000-000000000000\n"),
            "{text}"
        );
        assert!(text.contains("url:      foo.example.com\n"), "{text}");
        assert!(text.contains("=== foo Processes\nweb: 2\nworker: 1\n"), "{text}");
        assert!(text.ends_with("=== foo Domains\nwww.foo.com\n"), "{text}");
    }
}
