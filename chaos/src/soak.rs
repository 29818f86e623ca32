//! The soak: for a set time, random user operations (push, config:set, scale up and down,
//! restart, rollback, run) at random intervals on the suite's two apps under load, mixed with
//! faults (an app container or a controller SIGKILLed), and after every step the platform must
//! settle: every app runs the replicas asked, routed and answering, and what the step made (a
//! release, an exit status) is there. Jepsen's generators in miniature: the bugs it is for show
//! only when operations are spread over time (a scale two minutes after a deploy once took an
//! app down). The seed is printed; `--seed` with the same `--soak-secs` replays the same steps.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Suite;
use crate::invariants::{Acked, Check};
use crate::scenarios::{MANY, Outcome, poll};

/// What one step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Push,
    ConfigSet,
    Scale(u32),
    Restart,
    Rollback,
    Run,
    CrashContainer,
    KillController,
}

impl Step {
    fn pick(rng: &mut StdRng) -> Self {
        match rng.random_range(0..8) {
            0 => Self::Push,
            1 => Self::ConfigSet,
            2 => Self::Scale(rng.random_range(1..=MANY)),
            3 => Self::Restart,
            4 => Self::Rollback,
            5 => Self::Run,
            6 => Self::CrashContainer,
            _ => Self::KillController,
        }
    }
}

/// How long a step may take to settle.
const SETTLE: Duration = Duration::from_secs(90);

pub async fn soak(s: &mut Suite) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let seed = s.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    println!(
        "      soak seed {seed}: replay with chaos/chaos run soak --seed {seed} --soak-secs {}",
        s.soak.as_secs()
    );
    out.notes.push(format!(
        "seed {seed} (replay: chaos/chaos run soak --seed {seed} --soak-secs {})",
        s.soak.as_secs()
    ));
    let until = Instant::now() + s.soak;
    let mut steps = 0u32;
    let mut slowest = Duration::ZERO;
    let mut done: Vec<String> = Vec::new();
    while Instant::now() < until {
        // Random gaps, so operations land at every point of a deploy's life.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..4_000))).await;
        let step = Step::pick(&mut rng);
        let started = Instant::now();
        let result = act(s, step, &mut rng).await.with_context(|| format!("step {} ({step:?})", steps + 1));
        let settled = match result {
            Ok(()) => settle(s).await,
            Err(e) => Err(e),
        };
        steps += 1;
        done.push(format!("{step:?}"));
        match settled {
            Ok(()) => {
                let took = started.elapsed();
                slowest = slowest.max(took);
                println!("      soak step {steps}: {step:?} settled in {:.1} s", took.as_secs_f64());
            }
            Err(e) => {
                out.checks.push(Check::new(
                    "every soak step settles: replicas as asked, routed and answering, its release serving",
                    Err(format!("{e:#} (seed {seed}; steps so far: {})", done.join(", "))),
                ));
                restore(s).await;
                return Ok(out);
            }
        }
    }
    out.checks.push(Check::new(
        "every soak step settles: replicas as asked, routed and answering, its release serving",
        Ok(format!("{steps} steps ({}), slowest {:.1} s", done.join(", "), slowest.as_secs_f64())),
    ));
    out.measures.insert("soak steps".into(), f64::from(steps));
    out.measures.insert("soak: slowest step to settle (s)".into(), crate::scenarios::secs(slowest));
    restore(s).await;
    Ok(out)
}

/// Does one step; for steps that make a release, waits until it serves.
async fn act(s: &mut Suite, step: Step, rng: &mut StdRng) -> anyhow::Result<()> {
    let one = s.one.clone();
    let two = s.two.clone();
    match step {
        Step::Push => {
            let before = deployed(s, &one).await?;
            let sha = s.p.commit(&s.repo, "soak").await?;
            s.push(&one).await?;
            s.ledger.push(Acked::Build { app: one.clone(), sha });
            serves_above(s, &one, before).await
        }
        Step::ConfigSet => {
            let before = deployed(s, &two).await?;
            let value = format!("{:08x}", rng.random::<u32>());
            let update = config("SOAK", &value);
            retrying(|| s.p.api.config_update(&two, &update)).await?;
            s.ledger.push(Acked::Config { app: two.clone(), key: "SOAK".into(), value });
            serves_above(s, &two, before).await
        }
        Step::Scale(web) => {
            s.scale_retrying(&two, web, Duration::from_secs(30)).await?;
            Ok(())
        }
        Step::Restart => {
            let req = controller_api::RestartRequest { process_type: Some("web".into()), num: None };
            retrying(|| s.p.api.restart(&two, &req)).await?;
            Ok(())
        }
        Step::Rollback => {
            // On the pushed app only: its config is never set, so a rollback loses nothing the
            // ledger holds.
            let before = deployed(s, &one).await?;
            // `rollback` goes back one release; v1 (before any build) runs nothing.
            let releases = retrying(|| s.p.api.releases(&one)).await?;
            let runnable = releases.iter().any(|r| r.version + 1 == before && !r.image.is_empty());
            if !runnable {
                println!("      (no earlier release of {one} with an image: nothing to roll back to)");
                return Ok(());
            }
            retrying(|| s.p.api.rollback(&one, None)).await?;
            serves_above(s, &one, before).await
        }
        Step::Run => {
            let marker = format!("soak-{:08x}", rng.random::<u32>());
            let mut seen = false;
            let exit =
                s.p.api
                    .run(&two, &format!("echo {marker}"), |e| {
                        if let controller_api::RunEvent::Line { line, .. } = e {
                            seen |= line.contains(&marker);
                        }
                    })
                    .await?;
            anyhow::ensure!(exit == Some(0), "deis run exited with {exit:?}");
            anyhow::ensure!(seen, "deis run's output lacked {marker}");
            Ok(())
        }
        Step::CrashContainer => {
            let app = if rng.random_bool(0.5) { one } else { two };
            let mut running = Vec::new();
            for node in s.p.live_nodes().await?.keys() {
                running.extend(
                    s.p.cluster.app_containers(node).await?.into_iter().filter(|c| c.app == app && c.running),
                );
            }
            if running.is_empty() {
                return Ok(());
            }
            let victim = running.swap_remove(rng.random_range(0..running.len()));
            s.p.cluster.crash(&victim).await?;
            Ok(())
        }
        Step::KillController => {
            let node = ["node1", "node2", "node3"][rng.random_range(0..3)];
            let part = s.p.cluster.part("controller", node).await?;
            s.p.cluster.kill(std::slice::from_ref(&part)).await?;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..3_000))).await;
            s.p.cluster.start_container(&part).await?;
            Ok(())
        }
    }
}

fn config(key: &str, value: &str) -> controller_api::ConfigUpdate {
    controller_api::ConfigUpdate {
        values: std::collections::BTreeMap::from([(key.to_owned(), Some(value.to_owned()))]),
        ..Default::default()
    }
}

/// An API call retried for up to 20 s: a step may land while a controller is down.
async fn retrying<T, F, Fut>(mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, controller_api::ApiError>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline && retryable(&e) => {
                tracing::debug!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A controller that is down, restarting or failing over: 5xx or no answer (409, a deploy under
/// way, is retried too).
fn retryable(e: &controller_api::ApiError) -> bool {
    e.status().is_none_or(|status| status >= 500 || status == 409)
}

/// The app's deployed release, waiting (up to `SETTLE`) while a deploy is still under way.
async fn deployed(s: &Suite, app: &str) -> anyhow::Result<u32> {
    let deadline = Instant::now() + SETTLE;
    loop {
        match s.deployed_version(app).await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn serves_above(s: &Suite, app: &str, before: u32) -> anyhow::Result<()> {
    poll(Instant::now(), SETTLE, Duration::from_millis(200), || s.serves_release_above(app, before))
        .await
        .map(|_| ())
        .with_context(|| {
            format!("{app}: no release newer than v{before} served within {} s", SETTLE.as_secs())
        })
}

/// Every app runs the replicas asked, routed and answering.
async fn settle(s: &Suite) -> anyhow::Result<()> {
    poll(Instant::now(), SETTLE, Duration::from_millis(250), || s.serving_all())
        .await
        .map(|_| ())
        .with_context(|| format!("the apps were not served as asked within {} s", SETTLE.as_secs()))
}

/// Leaves the apps as the other scenarios expect them: the many-replica app at `MANY`.
async fn restore(s: &mut Suite) {
    let two = s.two.clone();
    if s.ledger_web(&two) != Some(MANY)
        && let Err(e) = s.scale_retrying(&two, MANY, Duration::from_secs(30)).await
    {
        eprintln!("chaos: soak: scaling {two} back to web={MANY}: {e:#}");
    }
    let _ = poll(Instant::now(), SETTLE, Duration::from_millis(250), || s.serving_all()).await;
}
