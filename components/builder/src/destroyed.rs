//! Destroyed apps leave nothing on the builder: their repository, build cache, custom
//! buildpacks and images (on the builder's engine and, where the registry allows deletion, in
//! the platform registry) go, so a new app of the same name starts empty.
//!
//! The builder follows the desired-state stream with a durable consumer of its own: a destroy
//! that happens while the builder is down is delivered when it comes back. A destroy is applied
//! only to a repository created before it (the repository records when it was made), so a late
//! delivery never removes the repository of a new app that took the name in between. And a push
//! checks the app's identity against the one its repository records ([`forget_other_app`]), so
//! a destroy the builder has not seen yet never hands the old app's repository to the new one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use bus_schema::streams::{ConsumerId, ensure_consumer};
use bus_schema::{AppName, DesiredChange, Timestamp, labels};
use futures::StreamExt;
use tracing::Instrument;

use crate::Builder;
use crate::git;

/// Follows destroyed apps until shutdown, rebinding the consumer whenever the bus goes away.
pub async fn follow(builder: Arc<Builder>) {
    let ns = builder.bus.namespace();
    let spec = ns.consumer(ConsumerId::BuilderDesired);
    let options = builder.config.nats.stream_options();
    let mut backoff = service_kit::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let stop = builder.shutdown.token().clone();
    loop {
        let messages = match ensure_consumer(builder.bus.jetstream(), ns, &spec, &options).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match messages {
            Ok(mut messages) => {
                backoff.reset();
                loop {
                    let next = tokio::select! {
                        next = messages.next() => next,
                        _ = stop.cancelled() => return,
                    };
                    let msg = match next {
                        Some(Ok(msg)) => msg,
                        Some(Err(error)) => {
                            tracing::warn!(%error, "the desired-state stream failed; rebinding");
                            break;
                        }
                        None => break,
                    };
                    match DesiredChange::decode(&msg.payload) {
                        Ok(DesiredChange::Destroyed(envelope)) => {
                            let app = envelope.body.app.clone();
                            remove_app(&builder, &app, envelope.time)
                                .instrument(tracing::info_span!("destroyed", app = %app))
                                .await;
                        }
                        Ok(_) => {}
                        Err(error) => tracing::error!(%error, "dropping a malformed desired-state change"),
                    }
                    let _ = msg.ack().await;
                }
            }
            Err(error) => tracing::debug!(%error, "cannot bind the builder's desired-state consumer yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Removes what the builder keeps of an app destroyed at `destroyed_at`. Holding the app's
/// build lock, so no build of it runs meanwhile.
pub async fn remove_app(builder: &Builder, app: &AppName, destroyed_at: Timestamp) {
    let lock = builder.app_lock(app);
    let _guard = lock.lock().await;
    let config = &builder.config;
    let repo = git::repo_path(&config.repos_dir(), app);
    match git::created_at(&repo).await {
        Some(created) if created > destroyed_at.0 => {
            // A new app took the name after this destroy: its repository (and what it built)
            // stays.
            tracing::info!("the repository is newer than the destroy; kept");
            return;
        }
        _ => {}
    }
    remove_everything(builder, app).await;
}

/// Before a push to `app`, whose identity the controller says is `uuid`: a repository recorded
/// for another app of that name (destroyed since, whether or not its destroy has reached the
/// builder yet) goes with its cache and images, and the repository is then recorded as this
/// app's. Holding the app's build lock.
pub async fn forget_other_app(builder: &Builder, app: &AppName, uuid: uuid::Uuid) {
    let lock = builder.app_lock(app);
    let _guard = lock.lock().await;
    let repo = git::repo_path(&builder.config.repos_dir(), app);
    match git::app_uuid(&repo).await {
        Some(recorded) if recorded != uuid => {
            tracing::info!(%recorded, current = %uuid, "the repository is a destroyed app's of the same name; removing it");
            remove_everything(builder, app).await;
        }
        _ => {}
    }
}

/// The repository, build cache, engine images and registry tags of an app.
async fn remove_everything(builder: &Builder, app: &AppName) {
    let config = &builder.config;
    let repo = git::repo_path(&config.repos_dir(), app);
    remove_dir(&repo).await;
    let cache = config.cache_dir().join(format!("{app}.tar"));
    match tokio::fs::remove_file(&cache).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(%error, "could not remove the build cache"),
    }
    remove_engine_images(builder, app).await;
    remove_registry_tags(config.registry.trim_end_matches('/'), app).await;
    tracing::info!("removed the destroyed app's repository, build cache and images");
}

async fn remove_dir(path: &Path) {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(%error, path = %path.display(), "could not remove"),
    }
}

/// Every image on the builder's engine built for the app (by label) or named in its
/// repository of the platform registry. The app's tags go at once (forced, so a container of the
/// app still stopping does not keep them); the images themselves go once no container uses them:
/// the scheduler stops the app's containers at the same time as this runs, so an image still in
/// use is tried again for a while in the background.
async fn remove_engine_images(builder: &Builder, app: &AppName) {
    let docker = &builder.docker;
    let repository = format!("{}/{app}", builder.config.registry.trim_end_matches('/'));
    let own_prefix = format!("{repository}:");
    let mut tags = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    for (key, value) in [("label", format!("{}={app}", labels::IMAGE_APP)), ("reference", repository.clone())]
    {
        let filters = std::collections::HashMap::from([(key.to_owned(), vec![value])]);
        let options = ListImagesOptionsBuilder::new().all(false).filters(&filters).build();
        match docker.list_images(Some(options)).await {
            Ok(images) => {
                for image in images {
                    tags.extend(image.repo_tags.iter().filter(|t| t.starts_with(&own_prefix)).cloned());
                    // An image tagged for other repositories too keeps those tags and itself:
                    // only this app's tags go.
                    if image.repo_tags.iter().all(|t| t.starts_with(&own_prefix)) {
                        ids.insert(image.id);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not list the app's images"),
        }
    }
    let options = RemoveImageOptionsBuilder::new().force(true).build();
    for tag in tags {
        match docker.remove_image(&tag, Some(options.clone()), None).await {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => tracing::warn!(%error, image = %tag, "could not untag an image"),
        }
    }
    let in_use = remove_images(docker, ids).await;
    if !in_use.is_empty() {
        let (docker, stop) = (docker.clone(), builder.shutdown.token().clone());
        let task = remove_when_unused(docker, in_use, stop).in_current_span();
        builder.shutdown.spawn(task);
    }
}

/// Removes images by id; returns those a container still uses (the engine's 409).
async fn remove_images(docker: &bollard::Docker, ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let options = RemoveImageOptionsBuilder::new().force(true).build();
    let mut in_use = Vec::new();
    for id in ids {
        match docker.remove_image(&id, Some(options.clone()), None).await {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                in_use.push(id)
            }
            Err(error) => tracing::warn!(%error, image = %id, "could not remove an image"),
        }
    }
    in_use
}

/// Tries the images again every two seconds for two minutes: long enough for the scheduler to
/// stop the destroyed app's containers; an image still used after that is left to the operator's
/// `docker image prune` (it has no tag left, so nothing can start from it by name).
async fn remove_when_unused(
    docker: bollard::Docker,
    mut ids: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
) {
    for _ in 0..60 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => return,
        }
        ids = remove_images(&docker, ids).await;
        if ids.is_empty() {
            return;
        }
    }
    tracing::warn!(images = ?ids, "images of a destroyed app are still used by containers; left untagged");
}

/// Deletes the app's manifests from the platform registry (Docker registry API v2). A registry
/// started without `storage.delete.enabled` answers 405: that is said, and the tags stay.
pub async fn remove_registry_tags(registry: &str, app: &AppName) {
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build() {
        Ok(c) => c,
        Err(error) => return tracing::warn!(%error, "no HTTP client for the registry"),
    };
    let base = format!("http://{registry}/v2/{app}");
    let tags: Vec<String> = match http.get(format!("{base}/tags/list")).send().await {
        Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
            Ok(v) => v["tags"]
                .as_array()
                .map(|t| t.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            Err(error) => return tracing::warn!(%error, "the registry's tag list is unreadable"),
        },
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => return,
        Ok(r) => return tracing::warn!(status = %r.status(), "the registry refused the tag list"),
        Err(error) => return tracing::warn!(%error, "the registry is unreachable; its tags of the app stay"),
    };
    const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
    for tag in tags {
        let digest = match http.head(format!("{base}/manifests/{tag}")).header("Accept", ACCEPT).send().await
        {
            Ok(r) => {
                r.headers().get("Docker-Content-Digest").and_then(|d| d.to_str().ok()).map(str::to_owned)
            }
            Err(_) => None,
        };
        let Some(digest) = digest.filter(|d| d.starts_with("sha256:")) else {
            tracing::warn!(%tag, "the registry gave no digest for a tag; it stays");
            continue;
        };
        match http.delete(format!("{base}/manifests/{digest}")).send().await {
            Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(r) if r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED => {
                return tracing::warn!(
                    "the platform registry does not allow deletion (storage.delete.enabled): the app's images stay in it"
                );
            }
            Ok(r) => tracing::warn!(%tag, status = %r.status(), "the registry refused to delete a tag"),
            Err(error) => tracing::warn!(%tag, %error, "deleting a tag from the registry failed"),
        }
    }
}
