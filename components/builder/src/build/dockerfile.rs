//! Apps with a Dockerfile: a build on the builder's engine, with the pushed tree as the
//! context. An app builds only from images it may use: the stack image, its own images in the
//! platform registry, or a base the operator allowed. Every image the Dockerfile names is
//! checked and resolved by the builder first ([`super::bases`]), and the engine is handed a
//! Dockerfile naming those images by their full id: it never resolves a name itself, so a short
//! id (`FROM ab`) or another app's tag present on the engine cannot be reached.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use bus_schema::messages::Stream;
use futures::StreamExt;
use service_kit::Outbound;

use super::bases::{self, BaseRef};
use super::{Job, LineSplitter, Output};
use crate::config::BuilderConfig;

pub async fn build(
    docker: &Docker,
    config: &BuilderConfig,
    job: &Job,
    dockerfile: &str,
    out: &Output,
) -> Result<(), String> {
    let parsed = bases::parse(dockerfile)?;
    let outbound = Outbound::new(&config.outbound)
        .map_err(|e| format!("the builder is misconfigured (outbound): {e}"))?;
    // The engine fetches ADD's URLs itself: at least the address it names must pass the check.
    for (line, url) in &parsed.add_urls {
        check_add_url(&outbound, url)
            .await
            .map_err(|why| format!("Dockerfile line {line}: ADD {url}: {why}"))?;
    }
    let mut resolved = Vec::with_capacity(parsed.bases.len());
    let mut seen: HashMap<String, String> = HashMap::new();
    for base in &parsed.bases {
        let id = match seen.get(&base.image) {
            Some(id) => id.clone(),
            None => {
                let kind = allowed(config, job, &base.image).ok_or_else(|| refusal(config, job, base))?;
                let id = resolve(docker, base, kind, out).await?;
                seen.insert(base.image.clone(), id.clone());
                id
            }
        };
        resolved.push(id);
    }
    let context = with_dockerfile(&job.tree, &parsed.rewrite(&resolved))?;

    let image = job.image(config);
    let options = BuildImageOptionsBuilder::new()
        .t(&image)
        .rm(true)
        .forcerm(true)
        .labels(&job.labels())
        .memory(i32::try_from(config.build_memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i32::MAX))
        .build();
    let body = bollard::body_full(context.into());
    let mut stream = docker.build_image(options, None, Some(body));
    let mut lines = LineSplitter::default();
    let work = async {
        while let Some(step) = stream.next().await {
            let info = step.map_err(|e| format!("the Docker build failed: {e}"))?;
            if let Some(text) = info.stream {
                for line in lines.push(text.as_bytes()) {
                    out.line(Stream::Stdout, &line).await;
                }
            }
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                if let Some(rest) = lines.finish() {
                    out.line(Stream::Stdout, &rest).await;
                }
                out.line(Stream::Stderr, &message).await;
                return Err(format!("the Docker build failed: {message}"));
            }
        }
        if let Some(rest) = lines.finish() {
            out.line(Stream::Stdout, &rest).await;
        }
        Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(config.build_timeout_secs), work).await.map_err(
        |_| format!("the Docker build took longer than {}s and was stopped", config.build_timeout_secs),
    )?
}

/// Why an image may be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Stack,
    /// One of the app's own images in the platform registry.
    Own,
    /// A base the operator allowed (`allowed_base_images`).
    External,
}

/// `name[:tag][@digest]` → the repository (`name`).
fn repository(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(n, _)| n);
    split_tag(no_digest).0
}

/// The name with `:latest` when it has neither tag nor digest.
fn with_tag(image: &str) -> String {
    if image.contains('@') || split_tag(image).0 != image {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

fn allowed(config: &BuilderConfig, job: &Job, image: &str) -> Option<Allowed> {
    let registry = config.registry.trim_end_matches('/');
    let repo = repository(image);
    // Anything in the platform registry is some app's: only this app's own.
    if let Some(path) = repo.strip_prefix(&format!("{registry}/")) {
        return (path == job.app.as_str()).then_some(Allowed::Own);
    }
    if with_tag(image) == with_tag(&config.stack_image) {
        return Some(Allowed::Stack);
    }
    let external = config.allowed_base_images.iter().any(|pattern| match pattern.strip_suffix("/*") {
        Some(prefix) => repo.starts_with(&format!("{prefix}/")),
        None => repo == pattern || with_tag(image) == with_tag(pattern),
    });
    external.then_some(Allowed::External)
}

fn refusal(config: &BuilderConfig, job: &Job, base: &BaseRef) -> String {
    let registry = config.registry.trim_end_matches('/');
    let extra = if config.allowed_base_images.is_empty() {
        String::new()
    } else {
        format!(", or an allowed base ({})", config.allowed_base_images.join(", "))
    };
    format!(
        "Dockerfile line {}: `{}`: {} is not an image this app may build from. \
         Build from the stack image ({}), one of this app's own images ({registry}/{}:<tag>){extra}",
        base.line,
        base.instruction.chars().take(120).collect::<String>(),
        base.image,
        config.stack_image,
        job.app,
    )
}

/// The full image id the build uses for an allowed image.
async fn resolve(docker: &Docker, base: &BaseRef, kind: Allowed, out: &Output) -> Result<String, String> {
    let image = &base.image;
    let at_line = format!("Dockerfile line {}", base.line);
    if kind != Allowed::Stack {
        // The registry (or the allowed source) is the truth for these, not whatever the engine
        // holds under the name; an allowed base already on the engine is used when it cannot be
        // pulled (clusters without internet load their bases into the engine).
        out.say(&format!("-----> Pulling {image}")).await;
        if let Err(reason) = pull(docker, image).await {
            let local = kind == Allowed::External && docker.inspect_image(image).await.is_ok();
            if !local {
                let place = if kind == Allowed::Own { " from the platform registry" } else { "" };
                return Err(format!(
                    "{at_line}: the base image {image} could not be pulled{place}: {reason}"
                ));
            }
        }
    }
    let inspected = docker
        .inspect_image(image)
        .await
        .map_err(|e| format!("{at_line}: the base image {image} is not on the builder: {e}"))?;
    let id = inspected
        .id
        .filter(|id| id.starts_with("sha256:") && id.len() == 71)
        .ok_or_else(|| format!("{at_line}: the engine gave no image id for {image}"))?;
    let digest = inspected.repo_digests.unwrap_or_default().into_iter().next();
    let shown = digest.unwrap_or_else(|| id.clone());
    out.say(&format!("-----> Base image {image} is {shown}")).await;
    Ok(id)
}

async fn pull(docker: &Docker, image: &str) -> Result<(), String> {
    let options = CreateImageOptionsBuilder::new().from_image(&with_tag(image)).build();
    let mut pull = docker.create_image(Some(options), None, None);
    while let Some(step) = pull.next().await {
        match step {
            Ok(info) => {
                if let Some(m) = info.error_detail.and_then(|d| d.message) {
                    return Err(m);
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The engine fetches `ADD <url>` itself; its host must pass the outbound check. (The engine
/// resolves the name again, so a name whose DNS answer changes in between is not caught: the
/// node's firewall is the second line for build containers.)
async fn check_add_url(outbound: &Outbound, url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.strip_prefix("git@").unwrap_or(rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err("the URL names no host".into());
    }
    outbound.resolve(host, 0).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The pushed tree with its Dockerfile replaced by the rewritten one.
fn with_dockerfile(tree: &[u8], dockerfile: &str) -> Result<Vec<u8>, String> {
    let err = |e: std::io::Error| format!("preparing the build context: {e}");
    let mut out = tar::Builder::new(Vec::new());
    out.follow_symlinks(false);
    let mut input = tar::Archive::new(tree);
    for entry in input.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            continue;
        }
        let path = entry.path().map_err(err)?.into_owned();
        if path == Path::new("Dockerfile") {
            continue;
        }
        let mut header = entry.header().clone();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name().map_err(err)?.map(|t| t.into_owned()).unwrap_or_default();
            out.append_link(&mut header, &path, &target).map_err(err)?;
        } else {
            out.append_data(&mut header, &path, &mut entry).map_err(err)?;
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(dockerfile.len() as u64);
    header.set_mtime(0);
    out.append_data(&mut header, "Dockerfile", dockerfile.as_bytes()).map_err(err)?;
    out.into_inner().map_err(err)
}

/// `name:tag` → (`name`, `tag`), `latest` when there is none (a `:` in a registry's port is not
/// a tag).
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_without_mistaking_ports() {
        assert_eq!(split_tag("python:3.11"), ("python", "3.11"));
        assert_eq!(split_tag("deis/stack"), ("deis/stack", "latest"));
        assert_eq!(split_tag("reg:5000/x"), ("reg:5000/x", "latest"));
        assert_eq!(split_tag("reg:5000/x:1"), ("reg:5000/x", "1"));
    }

    fn job(app: &str) -> Job {
        Job {
            app: bus_schema::AppName::parse(app).unwrap(),
            build_id: uuid::Uuid::nil(),
            sha: "0".repeat(40),
            config: Default::default(),
            tree: Vec::new(),
        }
    }

    #[test]
    fn only_the_stack_the_apps_own_images_and_allowed_bases_are_allowed() {
        let config = BuilderConfig {
            registry: "registry:5000".into(),
            stack_image: "deis/stack".into(),
            allowed_base_images: vec!["python".into(), "mirror.example/*".into()],
            ..Default::default()
        };
        let j = job("mine");
        let a = |image: &str| allowed(&config, &j, image);
        assert_eq!(a("deis/stack"), Some(Allowed::Stack));
        assert_eq!(a("deis/stack:latest"), Some(Allowed::Stack));
        assert_eq!(a("registry:5000/mine:git-12345678"), Some(Allowed::Own));
        assert_eq!(a("registry:5000/mine@sha256:abc"), Some(Allowed::Own));
        assert_eq!(a("python:3.11"), Some(Allowed::External));
        assert_eq!(a("mirror.example/debian:12"), Some(Allowed::External));
        for refused in [
            "ab",
            "16c42732a9d2",
            "sha256:16c42732a9d2",
            "registry:5000/other:git-12345678",
            "registry:5000/mine-not:git-1",
            "registry:5000/python",
            "deis/stack:other",
            "other/python",
            "mirror.example",
        ] {
            assert_eq!(a(refused), None, "{refused}");
        }
    }

    #[test]
    fn the_context_gets_the_rewritten_dockerfile_and_keeps_the_rest() {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [("Dockerfile", "FROM ab\n"), ("src/a.txt", "a")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        let tree = b.into_inner().unwrap();
        let context = with_dockerfile(&tree, "FROM sha256:x\n").unwrap();
        let mut files = Vec::new();
        for e in tar::Archive::new(&context[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            files.push((e.path().unwrap().display().to_string(), text));
        }
        assert_eq!(
            files,
            vec![("src/a.txt".into(), "a".into()), ("Dockerfile".into(), "FROM sha256:x\n".into())]
        );
    }
}
