//! Apps without a Dockerfile: Heroku's buildpack API v2 (`bin/detect`, `bin/compile BUILD_DIR
//! CACHE_DIR ENV_DIR`, `bin/release`) in a container of the stack image, then the compiled app
//! (the slug) committed as a layer on the stack image. Files move in and out of containers as
//! tar archives through the engine's API, never bind mounts: in a cluster the builder and the
//! engine it drives are on different file systems.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    LogsOptionsBuilder, UploadToContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bus_schema::ProcessType;
use bus_schema::messages::Stream;
use futures::StreamExt;

use super::{ContainerGuard, Job, LineSplitter, Output, source};
use crate::config::BuilderConfig;

/// The driver run inside the build container (detect, compile, release).
const COMPILE_SCRIPT: &str = include_str!("../../stack/compile");
/// The entrypoint of every buildpack app's image.
const INIT_SCRIPT: &str = include_str!("../../stack/init");
/// The stack's unprivileged user, who runs buildpacks and apps.
const APP_UID: u64 = 1000;
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the buildpacks and commits the slug as the job's image. Returns the buildpack's default
/// process types.
pub async fn build(
    docker: &Docker,
    config: &BuilderConfig,
    job: &Job,
    out: &Output,
) -> Result<BTreeMap<ProcessType, String>, String> {
    let (buildpacks, forced) = buildpacks(config, job, out).await?;
    let name = format!("{}{}-{}", config.container_prefix, job.app, &job.build_id.simple().to_string()[..12]);
    let env = vec![
        format!("PATH={PATH}"),
        "LANG=C.UTF-8".to_owned(),
        "HOME=/home/app".to_owned(),
        "STACK=deis-stack".to_owned(),
        format!("SOURCE_VERSION={}", job.sha),
    ];
    let body = ContainerCreateBody {
        image: Some(config.stack_image.clone()),
        user: Some(APP_UID.to_string()),
        working_dir: Some("/app".to_owned()),
        cmd: Some(vec!["/bin/bash".to_owned(), "/tmp/deis/compile".to_owned()]),
        env: Some(env),
        labels: Some(job.labels()),
        host_config: Some(HostConfig {
            memory: i64::try_from(config.build_memory_mb.saturating_mul(1024 * 1024)).ok(),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            cap_drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let guard = create(docker, &name, body)
        .await
        .map_err(|e| format!("creating the build container from {} failed: {e}", config.stack_image))?;

    // Everything the build needs goes in before it starts.
    let cache_file = cache_file(config, job);
    let has_cache = tokio::fs::try_exists(&cache_file).await.unwrap_or(false);
    let tmp = tmp_archive(job, &buildpacks, forced, !has_cache);
    if forced {
        // The fetched buildpack is in the archive now; its copy on the builder is not needed.
        for (_, dir) in &buildpacks {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
    }
    let tmp = tmp?;
    upload(docker, &name, "/tmp", tmp).await?;
    upload(docker, &name, "/", app_archive(&job.tree)?).await?;
    if has_cache {
        match tokio::fs::read(&cache_file).await {
            Ok(bytes) => {
                out.say("-----> Restoring the build cache").await;
                upload(docker, &name, "/tmp", bytes).await?;
            }
            Err(e) => tracing::warn!(error = %e, "build cache unreadable; building without it"),
        }
    }

    docker
        .start_container(&name, None)
        .await
        .map_err(|e| format!("starting the build container failed: {e}"))?;
    let code =
        tokio::time::timeout(Duration::from_secs(config.build_timeout_secs), follow(docker, &name, out))
            .await
            .map_err(|_| {
                format!("the build took longer than {}s and was stopped", config.build_timeout_secs)
            })??;
    match code {
        0 => {}
        10 => return Err("no buildpack recognises this app".into()),
        11 => return Err("the buildpack's compile step failed".into()),
        12 => return Err("the buildpack's release step failed".into()),
        n => return Err(format!("the build container exited with status {n}")),
    }

    let release = download(docker, &name, "/tmp/deis/out/release.yml", 1024 * 1024).await?;
    let release = file_from_archive(&release, "release.yml")?;
    let defaults = source::parse_release(&release)?;
    let slug = download(docker, &name, "/app", config.max_archive_bytes()).await?;
    match download(docker, &name, "/tmp/cache", config.max_archive_bytes()).await {
        Ok(cache) => save_cache(&cache_file, &cache).await,
        Err(e) => out.say(&format!("       (the build cache was not kept: {e})")).await,
    }
    drop(guard);

    out.say(&format!("-----> Compiled slug size is {}", human_size(slug.len()))).await;
    commit_slug(docker, config, job, slug).await?;
    Ok(defaults)
}

/// The buildpacks to offer, as (directory name inside the container, files on the builder),
/// and whether `BUILDPACK_URL` chose one.
async fn buildpacks(
    config: &BuilderConfig,
    job: &Job,
    out: &Output,
) -> Result<(Vec<(String, PathBuf)>, bool), String> {
    if let Some(url) = job.config.get("BUILDPACK_URL").map(|u| u.trim()).filter(|u| !u.is_empty()) {
        let dir = fetch_buildpack(config, url, job, out).await?;
        return Ok((vec![("00-custom".to_owned(), dir)], true));
    }
    let mut out = Vec::new();
    for (i, name) in config.buildpacks.iter().enumerate() {
        let dir = config.buildpacks_dir.join(name);
        if !dir.join("bin").join("detect").exists() {
            return Err(format!(
                "the builder is misconfigured: buildpack {} has no bin/detect",
                dir.display()
            ));
        }
        out.push((format!("{i:02}-{name}"), dir));
    }
    Ok((out, false))
}

/// Clones `BUILDPACK_URL` (`<git url>[#<ref>]`) into the builder's data directory.
async fn fetch_buildpack(
    config: &BuilderConfig,
    url: &str,
    job: &Job,
    out: &Output,
) -> Result<PathBuf, String> {
    let (repo, reference) = match url.rsplit_once('#') {
        Some((r, f)) if !f.is_empty() => (r, Some(f)),
        _ => (url, None),
    };
    let scheme = repo.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let allowed = scheme.as_deref().is_some_and(|s| config.buildpack_url_schemes.iter().any(|a| a == s));
    if !allowed || repo.starts_with('-') || reference.is_some_and(|r| r.starts_with('-')) {
        return Err(format!(
            "BUILDPACK_URL '{url}' is not allowed: it must be a git URL using {}",
            config.buildpack_url_schemes.join(", ")
        ));
    }
    let pinned = pin_to_checked_address(config, repo)
        .await
        .map_err(|why| format!("BUILDPACK_URL '{url}' is not allowed: {why}"))?;
    out.say(&format!("-----> Fetching custom buildpack {url}")).await;
    let dir = config.data_dir.join("buildpacks").join(job.build_id.simple().to_string());
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let mut cmd = tokio::process::Command::new(&config.git);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_ALLOW_PROTOCOL", config.buildpack_url_schemes.join(":"))
        // A redirect would lead git to a host nobody checked.
        .args(["-c", "http.followRedirects=false"]);
    for option in &pinned.git_options {
        cmd.arg("-c").arg(option);
    }
    cmd.args(["clone", "--quiet", "--depth", "1"]);
    if let Some(r) = reference {
        cmd.args(["--branch", r]);
    }
    cmd.arg("--").arg(&pinned.url).arg(&dir).kill_on_drop(true);
    let done = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| format!("fetching the buildpack {url} took longer than 120s"))?
        .map_err(|e| format!("running git to fetch the buildpack: {e}"))?;
    if !done.status.success() {
        let why = String::from_utf8_lossy(&done.stderr).trim().to_owned();
        return Err(format!("fetching the buildpack {url} failed: {why}"));
    }
    if !dir.join("bin").join("compile").exists() {
        return Err(format!("{url} is not a buildpack: it has no bin/compile"));
    }
    Ok(dir)
}

/// A buildpack URL whose host passed the outbound check, and how git is made to connect to the
/// address that was checked rather than resolve the name again.
#[derive(Debug, PartialEq, Eq)]
struct Pinned {
    url: String,
    git_options: Vec<String>,
}

/// Resolves the URL's host and checks every address (no loopback, link-local, private or
/// platform network unless the operator allowed it); then pins git to the checked address:
/// curl's resolve list for http(s), the address itself in the URL for git://.
async fn pin_to_checked_address(config: &BuilderConfig, repo: &str) -> Result<Pinned, String> {
    let parsed = url::Url::parse(repo).map_err(|e| format!("not a URL ({e})"))?;
    let scheme = parsed.scheme().to_owned();
    if scheme == "file" {
        // Only ever allowed in tests (see `buildpack_url_schemes`): no network involved.
        return Ok(Pinned { url: repo.to_owned(), git_options: Vec::new() });
    }
    let port = parsed.port_or_known_default().or(match scheme.as_str() {
        "git" => Some(9418),
        _ => None,
    });
    let (Some(host), Some(port)) = (parsed.host_str(), port) else {
        return Err("it names no host and port".into());
    };
    let outbound = service_kit::Outbound::new(&config.outbound)
        .map_err(|e| format!("the builder is misconfigured (outbound): {e}"))?;
    let addrs = outbound.resolve(host, port).await.map_err(|e| e.to_string())?;
    let Some(addr) = addrs.first() else {
        return Err(format!("{host} resolves to no address"));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match scheme.as_str() {
        "http" | "https" => Ok(Pinned {
            url: repo.to_owned(),
            // TLS still verifies the name; only the address is fixed.
            git_options: vec![format!("http.curloptResolve={bare}:{port}:{}", addr.ip())],
        }),
        "git" => {
            let mut pinned = parsed.clone();
            pinned.set_ip_host(addr.ip()).map_err(|()| "cannot pin the address".to_owned())?;
            Ok(Pinned { url: pinned.to_string(), git_options: Vec::new() })
        }
        other => Err(format!("the {other} scheme cannot be checked")),
    }
}

fn cache_file(config: &BuilderConfig, job: &Job) -> PathBuf {
    config.cache_dir().join(format!("{}.tar", job.app))
}

async fn save_cache(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tar.tmp");
    let result = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, path = %path.display(), "could not keep the build cache");
    }
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn tar_err(e: std::io::Error) -> String {
    format!("preparing the build's files: {e}")
}

/// What goes to the build container's `/tmp`: the driver, the buildpacks, the config as
/// `ENV_DIR`, and an empty cache when there is none yet.
fn tmp_archive(
    job: &Job,
    buildpacks: &[(String, PathBuf)],
    forced: bool,
    empty_cache: bool,
) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u64| {
        let mut h = header(tar::EntryType::Directory, mode, uid, 0);
        b.append_data(&mut h, path, std::io::empty())
    };
    dir(&mut b, "deis/", 0o755, 0).map_err(tar_err)?;
    dir(&mut b, "deis/out/", 0o755, APP_UID).map_err(tar_err)?;
    dir(&mut b, "deis/env/", 0o700, APP_UID).map_err(tar_err)?;
    if empty_cache {
        dir(&mut b, "cache/", 0o755, APP_UID).map_err(tar_err)?;
    }
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u64, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, mode, uid, data.len() as u64);
        b.append_data(&mut h, path, data)
    };
    file(&mut b, "deis/compile", 0o755, 0, COMPILE_SCRIPT.as_bytes()).map_err(tar_err)?;
    if forced {
        file(&mut b, "deis/forced", 0o644, 0, b"").map_err(tar_err)?;
    }
    for (key, value) in &job.config {
        // Config keys are validated by the controller as environment variable names.
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        file(&mut b, &format!("deis/env/{key}"), 0o600, APP_UID, value.as_bytes()).map_err(tar_err)?;
    }
    dir(&mut b, "deis/buildpacks/", 0o755, 0).map_err(tar_err)?;
    for (name, path) in buildpacks {
        b.append_dir_all(format!("deis/buildpacks/{name}"), path).map_err(tar_err)?;
    }
    b.into_inner().map_err(tar_err)
}

/// The pushed tree under `app/`, owned by the app user (buildpacks compile in place).
fn app_archive(tree: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755, APP_UID, 0);
    out.append_data(&mut h, "app/", std::io::empty()).map_err(tar_err)?;
    let mut input = tar::Archive::new(tree);
    for entry in input.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        let path = entry.path().map_err(tar_err)?.into_owned();
        let mode = entry.header().mode().map_err(tar_err)?;
        let mut h = header(kind, mode, APP_UID, entry.size());
        let name = Path::new("app").join(&path);
        if kind.is_symlink() {
            let target = entry.link_name().map_err(tar_err)?.map(|t| t.into_owned()).unwrap_or_default();
            out.append_link(&mut h, &name, &target).map_err(tar_err)?;
        } else {
            out.append_data(&mut h, &name, &mut entry).map_err(tar_err)?;
        }
    }
    out.into_inner().map_err(tar_err)
}

fn runner_archive() -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755, 0, 0);
    b.append_data(&mut h, "runner/", std::io::empty()).map_err(tar_err)?;
    let mut h = header(tar::EntryType::Regular, 0o755, 0, INIT_SCRIPT.len() as u64);
    b.append_data(&mut h, "runner/init", INIT_SCRIPT.as_bytes()).map_err(tar_err)?;
    b.into_inner().map_err(tar_err)
}

async fn upload(docker: &Docker, container: &str, path: &str, tar: Vec<u8>) -> Result<(), String> {
    let options = UploadToContainerOptionsBuilder::new().path(path).build();
    docker
        .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
        .await
        .map_err(|e| format!("copying files into the build container ({path}) failed: {e}"))
}

async fn download(docker: &Docker, container: &str, path: &str, max: u64) -> Result<Vec<u8>, String> {
    let options = DownloadFromContainerOptionsBuilder::new().path(path).build();
    let mut stream = docker.download_from_container(container, Some(options));
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("copying {path} out of the build container failed: {e}"))?;
        if (out.len() + chunk.len()) as u64 > max {
            return Err(format!("{path} is larger than {} and was not kept", human_size(max as usize)));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn file_from_archive(tar: &[u8], name: &str) -> Result<String, String> {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        if entry.path().map_err(tar_err)?.as_ref() == Path::new(name) {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(|_| format!("{name} is not UTF-8 text"))?;
            return Ok(text);
        }
    }
    Err(format!("the build left no {name}"))
}

/// Follows the container's output into `out` and returns its exit status.
async fn follow(docker: &Docker, name: &str, out: &Output) -> Result<i64, String> {
    let options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
    let mut logs = docker.logs(name, Some(options));
    let (mut stdout, mut stderr) = (LineSplitter::default(), LineSplitter::default());
    while let Some(item) = logs.next().await {
        match item {
            Ok(bollard::container::LogOutput::StdErr { message }) => {
                for line in stderr.push(&message) {
                    out.line(Stream::Stderr, &line).await;
                }
            }
            Ok(output) => {
                for line in stdout.push(&output.into_bytes()) {
                    out.line(Stream::Stdout, &line).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "following the build's output failed");
                break;
            }
        }
    }
    for (splitter, stream) in [(&mut stdout, Stream::Stdout), (&mut stderr, Stream::Stderr)] {
        if let Some(rest) = splitter.finish() {
            out.line(stream, &rest).await;
        }
    }
    let options = WaitContainerOptionsBuilder::new().condition("not-running").build();
    let mut wait = docker.wait_container(name, Some(options));
    match wait.next().await {
        Some(Ok(r)) => Ok(r.status_code),
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(format!("waiting for the build container failed: {e}")),
        None => Err("the engine did not report how the build ended".into()),
    }
}

/// The app's image: the slug in `/app` of a container of the stack image, committed with the
/// runner as its entrypoint.
async fn commit_slug(
    docker: &Docker,
    config: &BuilderConfig,
    job: &Job,
    slug: Vec<u8>,
) -> Result<(), String> {
    let name =
        format!("{}{}-{}-slug", config.container_prefix, job.app, &job.build_id.simple().to_string()[..12]);
    let body = ContainerCreateBody {
        image: Some(config.stack_image.clone()),
        user: Some("app".to_owned()),
        working_dir: Some("/app".to_owned()),
        entrypoint: Some(vec!["/runner/init".to_owned()]),
        cmd: Some(vec!["/bin/bash".to_owned()]),
        env: Some(vec![
            format!("PATH={PATH}"),
            "LANG=C.UTF-8".to_owned(),
            "HOME=/app".to_owned(),
            format!("SOURCE_VERSION={}", job.sha),
        ]),
        labels: Some(job.labels()),
        ..Default::default()
    };
    let _guard = create(docker, &name, body)
        .await
        .map_err(|e| format!("creating the image's container failed: {e}"))?;
    upload(docker, &name, "/", runner_archive()?).await?;
    upload(docker, &name, "/", slug).await?;
    let options = CommitContainerOptionsBuilder::new()
        .container(&name)
        .repo(&job.repository(config))
        .tag(&job.tag())
        .comment(&format!("{} at {}", job.app, job.sha))
        .author("deis-builder")
        .pause(false)
        .build();
    docker
        .commit_container(options, bollard::models::ContainerConfig::default())
        .await
        .map_err(|e| format!("committing the app's image failed: {e}"))?;
    Ok(())
}

/// Creates a container and returns the guard that removes it. The creation runs in a task of
/// its own: a build abandoned while the engine creates the container (the pusher hung up) still
/// gets the guard, and so the removal, once the container exists.
async fn create(docker: &Docker, name: &str, body: ContainerCreateBody) -> Result<ContainerGuard, String> {
    let (docker, name) = (docker.clone(), name.to_owned());
    tokio::spawn(async move {
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        docker.create_container(Some(options), body).await.map_err(|e| e.to_string())?;
        Ok(ContainerGuard { docker, name })
    })
    .await
    .map_err(|e| e.to_string())?
}

fn human_size(bytes: usize) -> String {
    let mb = bytes as f64 / (1024.0 * 1024.0);
    if mb >= 1.0 { format!("{mb:.1} MB") } else { format!("{:.0} KB", bytes as f64 / 1024.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "bin/run", &b"x\n\n"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn the_app_moves_under_app_owned_by_the_app_user() {
        let tar = app_archive(&tree()).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let entries: Vec<(String, u64, u32)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().uid().unwrap(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(entries[0], ("app/".to_owned(), APP_UID, 0o755));
        assert_eq!(entries[1], ("app/bin/run".to_owned(), APP_UID, 0o755));
    }

    #[test]
    fn config_becomes_env_dir_files_readable_only_by_the_app_user() {
        let job = Job {
            app: bus_schema::AppName::parse("a").unwrap(),
            build_id: uuid::Uuid::nil(),
            sha: "0".repeat(40),
            config: BTreeMap::from([
                ("SECRET".to_owned(), "s3".to_owned()),
                ("bad/../key".to_owned(), "x".to_owned()),
            ]),
            tree: Vec::new(),
        };
        let tar = tmp_archive(&job, &[], true, true).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == "deis/env/SECRET" {
                assert_eq!((e.header().uid().unwrap(), e.header().mode().unwrap()), (APP_UID, 0o600));
            }
            names.push(name);
        }
        assert!(names.contains(&"deis/forced".to_owned()));
        assert!(names.contains(&"cache/".to_owned()));
        assert!(!names.iter().any(|n| n.contains("bad")), "{names:?}");
    }

    #[tokio::test]
    async fn buildpack_urls_to_the_inside_are_refused_and_others_pinned() {
        let config = BuilderConfig::default();
        for inside in [
            "http://127.0.0.1:2379/v2/keys",
            "https://localhost/x.git",
            "git://10.0.0.5/bp.git",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/x",
            "http://0x7f000001/x",
        ] {
            let e = pin_to_checked_address(&config, inside).await.unwrap_err();
            assert!(e.contains("not allowed") || e.contains("address"), "{inside}: {e}");
        }
        let allowed = BuilderConfig {
            outbound: service_kit::OutboundPolicy { denied: vec![], allowed: vec!["127.0.0.0/8".into()] },
            ..Default::default()
        };
        let p = pin_to_checked_address(&allowed, "https://localhost:8443/bp.git").await.unwrap();
        assert_eq!(p.git_options, vec!["http.curloptResolve=localhost:8443:127.0.0.1".to_owned()]);
        let p = pin_to_checked_address(&allowed, "git://localhost/bp.git").await.unwrap();
        assert_eq!(p.url, "git://127.0.0.1/bp.git");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(2 * 1024 * 1024), "2.0 MB");
        assert_eq!(human_size(2048), "2 KB");
    }
}
