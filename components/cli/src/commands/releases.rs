//! What runs: releases (releases:*), the formation (ps:scale) and builds (builds:*).

use anyhow::Result;
use controller_api::{Build, BuildCreateRequest, Container, DeployPhase, DeployStatus, Release};

use super::apps::render_structure;
use crate::context::Ctx;
use crate::parse::{parse_formation, parse_procfile, parse_version};
use crate::table::{columns, header};

pub async fn list(ctx: &Ctx) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let mut releases = session.client.releases(&app).await?;
    releases.sort_by_key(|r| std::cmp::Reverse(r.version));
    ctx.show(&releases, |releases| render_list(&app, releases))
}

fn render_list(app: &str, releases: &[Release]) -> String {
    let rows: Vec<[String; 3]> =
        releases.iter().map(|r| [format!("v{}", r.version), r.created.clone(), r.summary.clone()]).collect();
    header(&format!("{app} Releases")) + &columns(&rows)
}

pub async fn info(ctx: &Ctx, version: &str) -> Result<()> {
    let version = parse_version(version)?;
    let (session, app) = ctx.app_session()?;
    let release = session.client.release(&app, version).await?;
    // The rollout state comes from the scheduler; a release without one just shows none.
    let deploy = session.client.deploy_status(&app).await.ok().flatten().filter(|d| d.version == version);
    ctx.show(&release, |r| {
        let mut out = render_info(r);
        if let Some(d) = &deploy {
            out.push_str(&format!("status:   {}\n", render_deploy(d)));
        }
        out
    })
}

/// `deis ps`: the containers, grouped by type, and the rollout of the newest release.
pub async fn ps(ctx: &Ctx) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let containers = session.client.containers(&app).await?;
    let deploy = session.client.deploy_status(&app).await?;
    ctx.show(&containers, |c| render_ps(&app, c, deploy.as_ref()))
}

/// `deis run <command>`: streams the output, then exits with the command's status.
pub async fn run(ctx: &Ctx, command: &str) -> Result<()> {
    use std::io::Write as _;
    let (session, app) = ctx.app_session()?;
    ctx.note(&format!("Running `{command}`...\n"))?;
    let json = ctx.json;
    let exit = session
        .client
        .run(&app, command, |event| {
            if json {
                println!("{}", serde_json::to_string(event).unwrap_or_default());
                return;
            }
            if let controller_api::RunEvent::Line { line, stream } = event {
                if stream == "stderr" {
                    let _ = writeln!(std::io::stderr(), "{line}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{line}");
                }
            }
        })
        .await?;
    match exit {
        Some(0) => Ok(()),
        Some(code) => std::process::exit(i32::try_from(code).unwrap_or(1)),
        None => anyhow::bail!("the command's exit status is unknown (its container vanished)"),
    }
}

/// `deis ps:restart [web[.2]]`.
pub async fn restart(ctx: &Ctx, target: Option<&str>) -> Result<()> {
    let req = parse_restart_target(target)?;
    let reply = ctx.session()?.client.restart(&ctx.app()?, &req).await?;
    ctx.note(&format!("Restarting {} container(s), one at a time... requested\n", reply.len()))?;
    ctx.json_only(&reply)
}

fn parse_restart_target(target: Option<&str>) -> Result<controller_api::RestartRequest> {
    let Some(target) = target else { return Ok(controller_api::RestartRequest::default()) };
    let (ptype, num) = match target.split_once('.') {
        Some((t, n)) => (
            t,
            Some(n.parse::<u32>().map_err(|_| anyhow::anyhow!("'{target}' is not a container like web.2"))?),
        ),
        None => (target, None),
    };
    crate::parse::validate_process_type(ptype)?;
    Ok(controller_api::RestartRequest { process_type: Some(ptype.to_owned()), num })
}

fn render_deploy(d: &DeployStatus) -> String {
    match (d.state, d.serving, &d.reason) {
        (DeployPhase::Failed, Some(serving), Some(reason)) => {
            format!("v{} failed: {reason} (v{serving} keeps serving)", d.version)
        }
        (DeployPhase::Failed, None, Some(reason)) => format!("v{} failed: {reason}", d.version),
        (state, _, _) => format!("v{} {state}", d.version),
    }
}

fn render_ps(app: &str, containers: &[Container], deploy: Option<&DeployStatus>) -> String {
    let mut out = header(&format!("{app} Processes"));
    let mut types: Vec<&str> = containers.iter().map(|c| c.process_type.as_str()).collect();
    types.dedup();
    for t in types {
        out.push_str(&format!("--- {t}:\n"));
        for c in containers.iter().filter(|c| c.process_type == t) {
            out.push_str(&format!(
                "{t}.{} {} ({}) on {} since {}\n",
                c.num, c.state, c.release, c.node, c.started
            ));
        }
    }
    if containers.is_empty() {
        out.push_str("(no containers)\n");
    }
    if let Some(d) = deploy {
        out.push_str(&format!("\nRelease {}\n", render_deploy(d)));
    }
    out
}

fn render_info(release: &Release) -> String {
    let or_none = |s: &str| if s.is_empty() { "(none)".to_owned() } else { s.to_owned() };
    let rows = [
        ["build:".to_owned(), release.build.map_or_else(|| "(none)".to_owned(), |b| b.to_string())],
        ["config:".to_owned(), release.config.to_string()],
        ["created:".to_owned(), release.created.clone()],
        ["image:".to_owned(), or_none(&release.image)],
        ["owner:".to_owned(), release.owner.clone()],
        ["summary:".to_owned(), release.summary.clone()],
        ["updated:".to_owned(), release.updated.clone()],
        ["uuid:".to_owned(), release.uuid.to_string()],
        ["version:".to_owned(), format!("v{}", release.version)],
    ];
    header(&format!("{} Release v{}", release.app, release.version)) + &columns(&rows)
}

pub async fn rollback(ctx: &Ctx, version: Option<&str>) -> Result<()> {
    let version = version.map(parse_version).transpose()?;
    let release = ctx.session()?.client.rollback(&ctx.app()?, version).await?;
    let target = version.map_or_else(|| "the previous release".to_owned(), |v| format!("v{v}"));
    ctx.note(&format!("Rolling back to {target}... done, v{}", release.version))?;
    ctx.json_only(&release)
}

pub async fn scale(ctx: &Ctx, pairs: &[String]) -> Result<()> {
    let formation = parse_formation(pairs)?;
    let app = ctx.session()?.client.scale(&ctx.app()?, &formation).await?;
    ctx.note("Scaling processes... done\n")?;
    ctx.show(&app, |app| render_structure(&app.id, app))
}

pub async fn builds_list(ctx: &Ctx) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let mut builds = session.client.builds(&app).await?;
    // Newest first, like releases; RFC 3339 times in one zone sort as strings.
    builds.sort_by(|a, b| b.created.cmp(&a.created));
    ctx.show(&builds, |builds| render_builds(&app, builds))
}

fn render_builds(app: &str, builds: &[Build]) -> String {
    let rows: Vec<[String; 4]> = builds
        .iter()
        .map(|b| [b.uuid.to_string(), b.created.clone(), b.kind.clone(), b.image.clone()])
        .collect();
    header(&format!("{app} Builds")) + &columns(&rows)
}

pub async fn builds_create(ctx: &Ctx, image: &str, procfile: &[String]) -> Result<()> {
    let procfile = parse_procfile(&procfile.join("\n"))?;
    let request = BuildCreateRequest { image: image.to_owned(), procfile };
    let build = ctx.session()?.client.build_create(&ctx.app()?, &request).await?;
    ctx.note(&format!("Creating build... done, build {} of {}", build.uuid, build.image))?;
    ctx.json_only(&build)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: u32, summary: &str) -> Release {
        Release {
            uuid: uuid::Uuid::nil(),
            owner: "alice".into(),
            app: "foo".into(),
            version,
            build: None,
            image: String::new(),
            config: uuid::Uuid::nil(),
            summary: summary.into(),
            created: format!("2026-11-27T10:00:0{version}Z"),
            updated: String::new(),
        }
    }

    #[test]
    fn release_listing_is_deis_v1_style() {
        let text = render_list("foo", &[release(3, "alice set FOO"), release(2, "alice added a domain")]);
        assert_eq!(
            text,
            "=== foo Releases\nv3  2026-11-27T10:00:03Z  alice set FOO\nv2  2026-11-27T10:00:02Z  alice added a domain\n"
        );
        let info = render_info(&release(1, "alice created initial release"));
        assert!(info.starts_with("=== foo Release v1\nbuild:    (none)\n"), "{info}");
        assert!(info.contains("image:    (none)\n"), "{info}");
        assert!(info.ends_with("version:  v1\n"), "{info}");
    }
}
