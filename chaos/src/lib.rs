//! chaos: the operators' fault suite. Against the 3-node compose cluster it deploys two apps (one
//! with 1 replica, one with several), then for each scenario puts them under bounded load through
//! the front door, applies a fault (kill, pause or cut off a node, kill a leader, restart
//! Postgres …), measures when the platform noticed and when it served as asked again, heals the
//! fault, and checks the invariants. Each scenario gets a report row; the run is printed as a
//! table and written as JSON.
// Printing progress and the report is this crate's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod cluster;
pub mod invariants;
pub mod load;
pub mod platform;
pub mod report;
pub mod scenarios;
pub mod soak;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use invariants::{Acked, Check, Placement};
use load::{Load, Plan, Sample, Target};
use platform::{DrainSeen, DrainWatch, Platform, Settings};
use report::{Report, RunReport, TargetResult};
use scenarios::{Lossy, MANY, SCENARIOS, poll};

/// How a run is shaped (the CLI's options).
#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    /// The suite's app (`chaos/app`).
    pub app_dir: PathBuf,
    /// Requests per second per app.
    pub rate: u32,
    /// The node the node faults hit.
    pub victim: String,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    /// How long the soak runs.
    pub soak: Duration,
    /// The soak's seed (random unless given, to replay a failure).
    pub seed: Option<u64>,
}

/// The suite's state across scenarios: the platform, its two apps, and every write the
/// platform acknowledged.
#[derive(Debug)]
pub struct Suite {
    pub p: Platform,
    pub run_id: String,
    /// The app with one replica.
    pub one: String,
    /// The app with several replicas (`MANY`), spread over the nodes.
    pub two: String,
    pub repo: PathBuf,
    pub ledger: Vec<Acked>,
    pub victim: String,
    pub rate: u32,
    /// When each app's newest release was made (a push, a pull, a config change): the scheduler
    /// times a deploy from it, and `long-after-deploy` acts only once that time is long past.
    pub released_at: BTreeMap<String, Instant>,
    pub soak: Duration,
    pub seed: Option<u64>,
    watches: BTreeMap<String, DrainWatch>,
    _work: tempfile::TempDir,
}

fn say(what: &str) {
    let now = time::OffsetDateTime::now_utc();
    println!("==> [chaos {:02}:{:02}:{:02}] {what}", now.hour(), now.minute(), now.second());
}

impl Suite {
    /// Signs up, creates the two apps, deploys the first with `git push` and the second from the
    /// first's image, and scales the second out; returns the setup's timings too.
    pub async fn setup(options: &Options) -> anyhow::Result<(Self, BTreeMap<String, f64>)> {
        let run_id = format!("{:04x}", rand::random::<u16>());
        let work = tempfile::Builder::new().prefix("deis-chaos-").tempdir()?;
        say(&format!("run {run_id} against cluster '{}'", options.settings.cluster));
        let p = Platform::connect(options.settings.clone(), &run_id, work.path()).await?;
        let mut suite = Self {
            one: format!("chaos-{run_id}-one"),
            two: format!("chaos-{run_id}-two"),
            repo: PathBuf::new(),
            ledger: Vec::new(),
            victim: options.victim.clone(),
            rate: options.rate,
            released_at: BTreeMap::new(),
            soak: options.soak,
            seed: options.seed,
            watches: BTreeMap::new(),
            run_id,
            p,
            _work: work,
        };
        let mut measures = BTreeMap::new();
        say("waiting until every part of the cluster is healthy");
        poll(Instant::now(), Duration::from_secs(180), Duration::from_millis(500), || suite.parts_whole())
            .await
            .context("the cluster is not healthy (compose/deisctl status says what is down)")?;
        for app in [&suite.one, &suite.two] {
            suite.p.api.app_create(Some(app)).await.with_context(|| format!("creating {app}"))?;
        }
        suite.repo = suite.p.prepare_repo(&options.app_dir).await?;
        say(&format!("git push of {} (chaos/app)", suite.one));
        let start = Instant::now();
        let one = suite.one.clone();
        suite.push(&one).await?;
        let sha = suite.head().await?;
        suite.ledger.push(Acked::Build { app: one.clone(), sha });
        let serving =
            poll(start, Duration::from_secs(180), Duration::from_millis(200), || suite.serving_app(&one))
                .await
                .context("the first push never served")?;
        measures
            .insert("first git push (image built from scratch) → serving (s)".into(), serving.as_secs_f64());
        let image = suite
            .p
            .api
            .builds(&one)
            .await?
            .into_iter()
            .max_by(|a, b| a.created.cmp(&b.created))
            .context("no build after the push")?
            .image;
        let two = suite.two.clone();
        say(&format!("{two}: the same image (deis pull), scaled to web={MANY}"));
        let procfile = BTreeMap::from([("web".to_owned(), "python3 server.py".to_owned())]);
        suite.p.api.build_create(&two, &controller_api::BuildCreateRequest { image, procfile }).await?;
        suite.released_at.insert(two.clone(), Instant::now());
        suite.scale(&two, MANY).await?;
        let start = Instant::now();
        let serving =
            poll(start, Duration::from_secs(180), Duration::from_millis(200), || suite.serving_app(&two))
                .await
                .context("the second app never served")?;
        measures.insert(format!("deis pull + scale web={MANY} → serving (s)"), serving.as_secs_f64());
        Ok((suite, measures))
    }

    /// Destroys the suite's apps (their containers and routes go too).
    pub async fn teardown(&self) {
        for app in [&self.one, &self.two] {
            if let Err(e) = self.p.api.app_destroy(app).await {
                eprintln!("chaos: destroying {app}: {e}");
            }
        }
    }

    async fn head(&self) -> anyhow::Result<String> {
        let out = tokio::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&self.repo)
            .output()
            .await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `git push`, its lines shown as they come; the instant the build was done, if it said so.
    pub async fn push(&mut self, app: &str) -> anyhow::Result<Option<Instant>> {
        let mut built = None;
        self.p
            .push(&self.repo, app, |line| {
                if built.is_none() && line.contains("Built and pushed") {
                    built = Some(Instant::now());
                }
                println!("      | {line}");
            })
            .await?;
        self.released_at.insert(app.to_owned(), Instant::now());
        Ok(built)
    }

    pub async fn scale(&mut self, app: &str, web: u32) -> anyhow::Result<()> {
        self.p.api.scale(app, &BTreeMap::from([("web".to_owned(), web)])).await?;
        self.ledger.push(Acked::Formation { app: app.to_owned(), web });
        Ok(())
    }

    /// Scales, retrying refused attempts (the API may be failing over) for at most `patience`.
    pub async fn scale_retrying(&mut self, app: &str, web: u32, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            match self.scale(app, web).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("scale refused, retrying: {e:#}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.context(format!("scaling {app} to web={web}"))),
            }
        }
    }

    pub fn ledger_web(&self, app: &str) -> Option<u32> {
        self.ledger.iter().rev().find_map(|a| match a {
            Acked::Formation { app: a, web } if a == app => Some(*web),
            _ => None,
        })
    }

    pub async fn config_set(&mut self, app: &str, key: &str, value: &str) -> anyhow::Result<()> {
        let update = controller_api::ConfigUpdate {
            values: BTreeMap::from([(key.to_owned(), Some(value.to_owned()))]),
            ..Default::default()
        };
        self.p.api.config_update(app, &update).await?;
        self.released_at.insert(app.to_owned(), Instant::now());
        self.ledger.push(Acked::Config { app: app.to_owned(), key: key.to_owned(), value: value.to_owned() });
        Ok(())
    }

    pub async fn deployed_version(&self, app: &str) -> anyhow::Result<u32> {
        match self.p.api.deploy_status(app).await? {
            Some(s) if s.state == controller_api::DeployPhase::Deployed => Ok(s.version),
            other => bail!("{app} is not deployed: {other:?}"),
        }
    }

    /// The app's newest release is deployed, newer than `before`, and answers at the front door.
    pub async fn serves_release_above(&self, app: &str, before: u32) -> bool {
        let Ok(version) = self.deployed_version(app).await else { return false };
        if version <= before {
            return false;
        }
        let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(3)).build() else {
            return false;
        };
        let Ok(resp) = http
            .get(format!("http://{}/", self.p.settings.http))
            .header("Host", self.p.host_of(app))
            .send()
            .await
        else {
            return false;
        };
        resp.text().await.is_ok_and(|body| body.starts_with(&format!("chaos {app} v{version} ")))
    }

    async fn placement(&self) -> Option<Placement> {
        invariants::placement(&self.p).await.ok()
    }

    pub async fn serving_app(&self, app: &str) -> bool {
        let Some(at) = self.placement().await else { return false };
        invariants::replicas(&self.p, &at, app).await.is_ok()
            && invariants::routes(&self.p, &at, app).await.is_ok()
    }

    pub async fn serving_all(&self) -> bool {
        let Some(at) = self.placement().await else { return false };
        for app in [&self.one, &self.two] {
            if invariants::replicas(&self.p, &at, app).await.is_err()
                || invariants::routes(&self.p, &at, app).await.is_err()
            {
                return false;
            }
        }
        true
    }

    /// Three live nodes and every announced part healthy.
    pub async fn parts_whole(&self) -> bool {
        let nodes = self.p.live_nodes().await.map(|n| n.len()).unwrap_or(0);
        nodes == 3 && self.p.health().await.is_ok_and(|h| !h.is_empty() && h.values().all(|ok| *ok))
    }

    /// Every part healthy and every app served as asked.
    pub async fn whole(&self) -> bool {
        self.parts_whole().await && self.serving_all().await
    }

    pub async fn hostnames(&self, app: &str) -> anyhow::Result<BTreeSet<String>> {
        let at = invariants::placement(&self.p).await.map_err(anyhow::Error::msg)?;
        Ok(at.containers.iter().filter(|c| c.app == app).map(|c| c.hostname().to_owned()).collect())
    }

    pub fn watch(&self, app: &str) -> Option<Arc<Mutex<DrainSeen>>> {
        self.watches.get(app).map(|w| w.seen.clone())
    }

    fn targets(&self) -> Vec<Target> {
        [&self.one, &self.two]
            .into_iter()
            .map(|a| Target { app: a.clone(), host: self.p.host_of(a) })
            .collect()
    }
}

/// One scenario, start to end: precondition, load, fault, heal, invariants.
pub async fn run_scenario(s: &mut Suite, name: &str) -> Report {
    let started = Instant::now();
    let description = SCENARIOS.iter().find(|(n, _)| *n == name).map(|(_, d)| *d).unwrap_or("unknown");
    let mut r = Report { scenario: name.to_owned(), fault: description.to_owned(), ..Default::default() };
    say(&format!("{name}: {description}"));
    if poll(Instant::now(), Duration::from_secs(180), Duration::from_millis(500), || s.whole())
        .await
        .is_none()
    {
        r.error =
            Some("the cluster was not whole before the fault (every part healthy, every app served)".into());
        r.invariants = final_checks(s, name, &[], &[], Instant::now()).await;
        r.duration_s = started.elapsed().as_secs_f64();
        return r;
    }
    s.watches.clear();
    for app in [s.one.clone(), s.two.clone()] {
        match s.p.watch_drain(&app).await {
            Ok(w) => {
                s.watches.insert(app, w);
            }
            Err(e) => r.notes.push(format!("could not follow {app}'s drain stream: {e:#}")),
        }
    }
    if let Err(e) = scenarios::prepare(s, name).await {
        r.error = Some(format!("preparing: {e:#}"));
        r.invariants = final_checks(s, name, &[], &[], Instant::now()).await;
        r.duration_s = started.elapsed().as_secs_f64();
        return r;
    }
    let targets = s.targets();
    let load = Load::start(Plan {
        front: s.p.settings.http,
        targets: targets.clone(),
        rate: s.rate,
        // Bounded: no scenario needs more; a stuck one ends its load anyway.
        max_duration: Duration::from_secs(420),
        max_requests_per_target: u64::from(s.rate) * 420,
        timeout: Duration::from_secs(5),
        tag: name.to_owned(),
    });
    let load_started = load.started();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcome = scenarios::run(s, name).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    say(&format!("{name}: stopping the load, checking the invariants"));
    let samples = load.stop().await;
    r.load = load::stats(&targets, &samples);
    let mut lossy = Vec::new();
    match outcome {
        Ok(o) => {
            r.detect_s = o.detect.map(|d| d.as_secs_f64());
            r.detected_by = o.detected_by;
            r.recover_s = o.recover.map(|d| d.as_secs_f64());
            r.recovered_when = o.recovered_when;
            r.measures = o.measures;
            r.targets = o.targets;
            r.notes.extend(o.notes);
            r.invariants.extend(o.checks);
            if o.no_failed_gets_for_many
                && let Some(many) = r.load.iter().find(|st| st.app == s.two)
            {
                r.targets.push(TargetResult {
                    name: format!("no failed GET for the app with {MANY} replicas"),
                    met: many.failed == 0,
                    detail: format!("{} of {} failed", many.failed, many.total),
                });
            }
            if o.recover.is_none() && o.fault_at.is_some() {
                r.notes.push("the platform did not recover within the scenario's patience".into());
            }
            lossy = o.lossy;
        }
        Err(e) => r.error = Some(format!("{e:#}")),
    }
    let mut checks = final_checks(s, name, &samples, &lossy, load_started).await;
    checks.append(&mut r.invariants);
    r.invariants = checks;
    r.duration_s = started.elapsed().as_secs_f64();
    say(&format!("{name}: {}", if r.passed() { "pass" } else { "FAIL" }));
    r
}

/// The invariants after a scenario, each given time to settle (a check that needs the cluster to
/// converge is polled, never slept for).
async fn final_checks(
    s: &Suite,
    tag: &str,
    samples: &[Sample],
    lossy: &[Lossy],
    load_started: Instant,
) -> Vec<Check> {
    let mut out = Vec::new();
    let whole =
        poll(Instant::now(), Duration::from_secs(180), Duration::from_millis(500), || s.parts_whole()).await;
    out.push(Check::new(
        "every node live, every part healthy",
        if whole.is_some() { Ok("3 nodes, all parts healthy".into()) } else { Err(whole_detail(s).await) },
    ));
    // Replicas and routes, polled together until both hold (or 120 s).
    let mut last;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match invariants::placement(&s.p).await {
            Ok(at) => {
                let mut rep = Vec::new();
                let mut rou = Vec::new();
                for app in [&s.one, &s.two] {
                    rep.push(invariants::replicas(&s.p, &at, app).await);
                    rou.push(invariants::routes(&s.p, &at, app).await);
                }
                last = (join(rep), join(rou));
            }
            Err(e) => last = (Err(e.clone()), Err(e)),
        }
        if (last.0.is_ok() && last.1.is_ok()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out.push(Check::new("every app runs exactly the replicas asked, on live nodes", last.0));
    out.push(Check::new("every route points at a live, healthy container", last.1));
    out.push(Check::new(
        "no acknowledged build, release, scale or write lost (Postgres)",
        invariants::acknowledged(&s.p, &s.ledger).await,
    ));
    if !samples.is_empty() {
        out.push(Check::new(
            "log lines lost within the documented bound",
            log_check(s, tag, samples, lossy, load_started).await,
        ));
    }
    out
}

fn join(results: Vec<Result<String, String>>) -> Result<String, String> {
    let bad: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    if bad.is_empty() {
        Ok(results.into_iter().filter_map(Result::ok).collect::<Vec<_>>().join("; "))
    } else {
        Err(bad.join("; "))
    }
}

async fn whole_detail(s: &Suite) -> String {
    let nodes = s.p.live_nodes().await.map(|n| n.keys().cloned().collect::<Vec<_>>().join(","));
    let down =
        s.p.health()
            .await
            .map(|h| h.into_iter().filter(|(_, ok)| !ok).map(|(k, _)| k).collect::<Vec<_>>().join(", "));
    format!("live nodes: {nodes:?}; parts not healthy: {down:?}")
}

/// Every request answered 200 has its app line on the app's drain stream, except lines a fault
/// may cost by design (`lossy`); those are counted and reported.
async fn log_check(
    s: &Suite,
    tag: &str,
    samples: &[Sample],
    lossy: &[Lossy],
    load_started: Instant,
) -> Result<String, String> {
    let apps = [s.one.clone(), s.two.clone()];
    let tally = || {
        let mut answered = 0u64;
        let mut lost_allowed = 0u64;
        let mut lost = Vec::new();
        for sample in samples.iter().filter(|x| !x.failed()) {
            let app = &apps[sample.target];
            let Some(seen) = s.watch(app) else { continue };
            answered += 1;
            let present = seen.lock().is_ok_and(|w| w.requests.contains(&(tag.to_owned(), sample.seq)));
            if present {
                continue;
            }
            let at = load_started + sample.sent;
            let allowed = lossy.iter().any(|l| {
                l.app.as_ref().is_none_or(|a| a == app)
                    && at >= l.from
                    && at <= l.until
                    && (l.containers.is_empty()
                        || sample.container.as_ref().is_some_and(|c| l.containers.contains(c)))
            });
            if allowed {
                lost_allowed += 1;
            } else {
                lost.push(format!("{app} #{}", sample.seq));
            }
        }
        (answered, lost_allowed, lost)
    };
    // Lines travel container → agent → NATS → logger → drain: give them time to arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (answered, allowed, lost) = tally();
        if lost.is_empty() || Instant::now() > deadline {
            let why: Vec<&str> = lossy.iter().map(|l| l.why.as_str()).collect();
            let bound = if why.is_empty() {
                "none may be lost".to_owned()
            } else {
                format!("may be lost: {}", why.join("; "))
            };
            return if lost.is_empty() {
                Ok(format!("{answered} answered requests: {allowed} lines lost within the bound ({bound})"))
            } else {
                let shown: Vec<&String> = lost.iter().take(5).collect();
                Err(format!(
                    "{answered} answered requests: {} lines lost beyond the bound ({bound}), e.g. {shown:?}; {allowed} within it",
                    lost.len()
                ))
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `chaos run`: setup, the scenarios in order, teardown, the table and the JSON.
pub async fn run(options: Options, names: Vec<String>) -> anyhow::Result<bool> {
    let names: Vec<String> = if names.iter().any(|n| n == "all") {
        SCENARIOS.iter().map(|(n, _)| (*n).to_owned()).collect()
    } else {
        names
    };
    for n in &names {
        if !SCENARIOS.iter().any(|(known, _)| known == n) {
            bail!("no scenario named '{n}' (chaos list shows them)");
        }
    }
    let started = time::OffsetDateTime::now_utc();
    let (mut suite, setup) = Suite::setup(&options).await?;
    let mut reports = Vec::new();
    for name in &names {
        reports.push(run_scenario(&mut suite, name).await);
    }
    say("removing the suite's apps");
    suite.teardown().await;
    let passed = reports.iter().all(Report::passed);
    let run = RunReport {
        run: suite.run_id.clone(),
        cluster: options.settings.cluster.clone(),
        started: started.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        passed,
        setup,
        scenarios: reports,
    };
    let table = report::table(&run);
    println!("\n{table}");
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&run)?)
            .with_context(|| format!("writing {}", path.display()))?;
        say(&format!("JSON report: {}", path.display()));
    }
    if let Some(path) = &options.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
        say(&format!("Markdown report: {}", path.display()));
    }
    say(if passed { "every scenario passed" } else { "some scenarios FAILED" });
    Ok(passed)
}

/// Where the front door is, for the settings' defaults.
pub fn front(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
