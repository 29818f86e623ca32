//! How long a `git push` of a small app takes to become an image in the registry, and then a
//! healthy release, against a peer in the same run: the same files built by a plain `docker
//! build` (`FROM deis/stack`, `COPY . /app`) and `docker push` on the same engine and registry,
//! which is the least any builder must do.
//!
//! `cargo bench -p builder --bench push [-- RUNS]` (3 runs by default). Needs the test services
//! (`./compose/services up`) and the local images (`./compose/images`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use common::{Platform, commit, files, procfile_app, work_tree};
use futures::StreamExt;

fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(bench(runs));
}

async fn bench(runs: usize) {
    let p = Platform::start("bench", true).await;
    let alice = p.user("alice", true).await;
    let app = p.app_name("bench");
    alice.client.app_create(Some(&app)).await.unwrap();
    let bus = p.ctl.bus().await;
    let mut completed = bus.subscribe(&p.ns.all_builds_completed()).await.unwrap();
    let docker = service_kit::docker::connect().await.unwrap();
    let repo = work_tree(&p.dir.path().join("w"), &files(&procfile_app("run 0")));
    // A first push, not measured: the app's first release starts its first container.
    assert!(alice.push(&repo, &app).await.ok);
    let _ = tokio::time::timeout(Duration::from_secs(5), completed.next()).await;

    let mut rows = Vec::new();
    for run in 1..=runs {
        commit(&repo, &files(&procfile_app(&format!("run {run}"))));
        let start = Instant::now();
        let push = async {
            let pushed = alice.push(&repo, &app).await;
            (pushed, start.elapsed())
        };
        let image = async {
            tokio::time::timeout(Duration::from_secs(300), completed.next()).await.unwrap().unwrap().unwrap();
            start.elapsed()
        };
        let ((pushed, healthy), image) = tokio::join!(push, image);
        assert!(pushed.ok, "{}", pushed.stderr);
        let peer = docker_build_and_push(&docker, &repo, &p.builder_config.registry, &app, run).await;
        println!(
            "run {run}: git push → image in registry {:.2}s, → healthy release {:.2}s; docker build + push {:.2}s; ratio {:.2}",
            image.as_secs_f64(),
            healthy.as_secs_f64(),
            peer.as_secs_f64(),
            image.as_secs_f64() / peer.as_secs_f64()
        );
        rows.push((image, healthy, peer));
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let image = median(rows.iter().map(|r| r.0).collect());
    let healthy = median(rows.iter().map(|r| r.1).collect());
    let peer = median(rows.iter().map(|r| r.2).collect());
    println!(
        "median of {runs}: push → image {:.2}s, push → healthy {:.2}s (deploy after the image {:.2}s); docker build + push {:.2}s; push→image / docker = {:.2}",
        image.as_secs_f64(),
        healthy.as_secs_f64(),
        (healthy - image).as_secs_f64(),
        peer.as_secs_f64(),
        image.as_secs_f64() / peer.as_secs_f64()
    );
    p.stop().await;
}

/// The peer: the same tree as a Dockerfile build on the stack, pushed to the same registry.
async fn docker_build_and_push(
    docker: &bollard::Docker,
    repo: &std::path::Path,
    registry: &str,
    app: &str,
    run: usize,
) -> Duration {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in ["Procfile", "serve.sh", "public"] {
        let path = repo.join(entry);
        if path.is_dir() {
            tar.append_dir_all(entry, &path).unwrap();
        } else {
            tar.append_path_with_name(&path, entry).unwrap();
        }
    }
    let dockerfile = format!("FROM deis/stack\nCOPY . /app\nLABEL io.deis.app={app}\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes()).unwrap();
    let context = tar.into_inner().unwrap();
    let repository = format!("{registry}/{app}-peer");
    let tag = format!("run{run}");
    let start = Instant::now();
    let options = BuildImageOptionsBuilder::new().t(&format!("{repository}:{tag}")).rm(true).build();
    let mut build = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = build.next().await {
        let step = step.unwrap();
        assert!(step.error_detail.is_none(), "{step:?}");
    }
    let options = PushImageOptionsBuilder::new().tag(&tag).build();
    let mut push = docker.push_image(&repository, Some(options), None);
    while let Some(step) = push.next().await {
        let step = step.unwrap();
        assert!(step.error_detail.is_none(), "{step:?}");
    }
    start.elapsed()
}
