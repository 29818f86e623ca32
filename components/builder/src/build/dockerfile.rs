//! Apps with a Dockerfile: a build on the builder's engine, with the pushed tree as the
//! context. Nothing is pulled from the internet: every base image must be on the engine already
//! or in the platform registry, and a missing one is named.

use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, TagImageOptionsBuilder,
};
use bus_schema::messages::Stream;
use futures::StreamExt;

use super::{Job, LineSplitter, Output, source};
use crate::config::BuilderConfig;

pub async fn build(
    docker: &Docker,
    config: &BuilderConfig,
    job: &Job,
    dockerfile: &str,
    out: &Output,
) -> Result<(), String> {
    for base in source::base_images(dockerfile) {
        ensure_base(docker, config, &base, out).await?;
    }
    let image = job.image(config);
    let options = BuildImageOptionsBuilder::new()
        .t(&image)
        .rm(true)
        .forcerm(true)
        .memory(i32::try_from(config.build_memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i32::MAX))
        .build();
    let body = bollard::body_full(job.tree.clone().into());
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

/// Makes sure a base image is on the engine: already there, or pulled from the platform
/// registry (`FROM <registry>/x`, or `FROM x` when the registry has `x`).
async fn ensure_base(
    docker: &Docker,
    config: &BuilderConfig,
    base: &str,
    out: &Output,
) -> Result<(), String> {
    if docker.inspect_image(base).await.is_ok() {
        return Ok(());
    }
    let registry = config.registry.trim_end_matches('/');
    let in_registry = if base.starts_with(&format!("{registry}/")) {
        base.to_owned()
    } else {
        format!("{registry}/{base}")
    };
    out.say(&format!("-----> Pulling base image {in_registry} from the platform registry")).await;
    let options = CreateImageOptionsBuilder::new().from_image(&in_registry).build();
    let mut pull = docker.create_image(Some(options), None, None);
    let mut failed = None;
    while let Some(step) = pull.next().await {
        match step {
            Ok(info) => {
                if let Some(m) = info.error_detail.and_then(|d| d.message) {
                    failed = Some(m);
                }
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    if let Some(reason) = failed {
        return Err(format!(
            "the base image {base} is not on the builder and not in the platform registry ({registry}): {reason}. \
             Push it to {registry} first"
        ));
    }
    if in_registry != base {
        let (repo, tag) = split_tag(base);
        let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        docker
            .tag_image(&in_registry, Some(options))
            .await
            .map_err(|e| format!("tagging {in_registry} as {base}: {e}"))?;
    }
    Ok(())
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
}
