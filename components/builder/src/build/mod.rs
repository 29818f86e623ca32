//! Building a pushed commit into an image in the platform registry: with the app's Dockerfile,
//! or with Heroku buildpacks on the stack image. Every line goes to [`Output`] as it happens.
//! A build that fails returns the reason, in words for the person pushing.

mod bases;
mod buildpack;
mod dockerfile;
pub mod output;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bollard::Docker;
use bus_schema::messages::BuildKind;
use bus_schema::{AppName, ProcessType, labels};
use futures::StreamExt;
use uuid::Uuid;

pub use output::{LineSplitter, Output};
use source::Source;

use crate::config::BuilderConfig;

/// One build to do.
#[derive(Debug, Clone)]
pub struct Job {
    pub app: AppName,
    pub build_id: Uuid,
    pub sha: String,
    /// The app's config: `BUILDPACK_URL` and the buildpacks' `ENV_DIR`.
    pub config: BTreeMap<String, String>,
    /// The pushed tree as a tar archive.
    pub tree: Vec<u8>,
}

impl Job {
    pub fn sha8(&self) -> &str {
        self.sha.get(..8).unwrap_or(&self.sha)
    }

    /// Where the image goes: `<registry>/<app>` tagged `git-<sha8>`.
    pub fn repository(&self, config: &BuilderConfig) -> String {
        format!("{}/{}", config.registry.trim_end_matches('/'), self.app)
    }

    pub fn tag(&self) -> String {
        format!("git-{}", self.sha8())
    }

    pub fn image(&self, config: &BuilderConfig) -> String {
        format!("{}:{}", self.repository(config), self.tag())
    }

    /// Labels on everything a build creates, so it can be found and cleaned up.
    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (labels::IMAGE_APP.to_owned(), self.app.to_string()),
            (labels::IMAGE_BUILD.to_owned(), self.build_id.to_string()),
            (labels::IMAGE_GIT_SHA.to_owned(), self.sha.clone()),
        ])
    }
}

/// A finished build: its image is in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub image: String,
    pub kind: BuildKind,
    pub procfile: BTreeMap<ProcessType, String>,
    /// From the start of the build until the image was in the registry.
    pub took: std::time::Duration,
}

/// Builds the job's commit and pushes the image.
pub async fn build(
    docker: &Docker,
    config: &BuilderConfig,
    job: &Job,
    out: &Output,
) -> Result<Built, String> {
    let started = Instant::now();
    let source = Source::from_tar(&job.tree)?;
    let procfile = source.procfile.as_deref().map(source::parse_procfile).transpose()?;
    if let Some(types) = &procfile
        && types.len() > config.max_process_types
    {
        return Err(format!(
            "the Procfile declares {} process types; an app may have at most {}",
            types.len(),
            config.max_process_types
        ));
    }
    let (kind, procfile) = if let Some(dockerfile) = &source.dockerfile {
        out.say("-----> Building Docker image from the Dockerfile").await;
        dockerfile::build(docker, config, job, dockerfile, out).await?;
        // Without a Procfile the image's own CMD runs as the `cmd` process type (Deis v1).
        (BuildKind::Dockerfile, procfile.unwrap_or_default())
    } else {
        let defaults = buildpack::build(docker, config, job, out).await?;
        let mut types = defaults;
        types.extend(procfile.unwrap_or_default());
        if types.is_empty() {
            return Err("the app declares no process types: add a Procfile, like `web: ./server`".into());
        }
        (BuildKind::Buildpack, types)
    };
    let list: Vec<String> = procfile.keys().map(ToString::to_string).collect();
    if !list.is_empty() {
        out.say(&format!("-----> Process types: {}", list.join(", "))).await;
    }
    push(docker, config, job, out).await?;
    Ok(Built { image: job.image(config), kind, procfile, took: started.elapsed() })
}

/// Pushes the built image to the platform registry.
async fn push(docker: &Docker, config: &BuilderConfig, job: &Job, out: &Output) -> Result<(), String> {
    let image = job.image(config);
    out.say(&format!("-----> Pushing image {image}")).await;
    let options = bollard::query_parameters::PushImageOptionsBuilder::new().tag(&job.tag()).build();
    let mut stream = docker.push_image(&job.repository(config), Some(options), None);
    while let Some(step) = stream.next().await {
        match step {
            Ok(info) => {
                if let Some(e) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!("pushing {image} to the registry failed: {e}"));
                }
            }
            Err(e) => return Err(format!("pushing {image} to the registry failed: {e}")),
        }
    }
    out.say("       done").await;
    Ok(())
}

/// Removes a container when dropped, so a build that fails or is abandoned (the pusher hung
/// up) leaves nothing behind.
struct ContainerGuard {
    docker: Docker,
    name: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let name = std::mem::take(&mut self.name);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                let _ = docker.remove_container(&name, Some(options)).await;
            });
        }
    }
}
