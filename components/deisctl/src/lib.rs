//! deisctl, the operators' tool (Deis v1's name and commands): the health of every part and node
//! of the cluster read from etcd (`status`, `nodes`), the parts' containers (`list`, `start`,
//! `stop`, `restart`, `logs`), platform settings (`config platform set|get`), and `announce`, the
//! small daemon on each host that keeps its parts' health in etcd.
// Printing is this crate's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod announce;
pub mod config;
pub mod etcd;
pub mod parts;
pub mod probe;
pub mod settings;
pub mod status;
pub mod store;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bus_schema::NodeId;
use bus_schema::discovery::Keys;
use clap::{Parser, Subcommand};
use service_kit::Shutdown;

pub use config::DeisctlConfig;
use parts::{Parts, Target};

#[derive(Debug, Parser)]
#[command(name = "deisctl", about = "Operate a Deis cluster: health, parts, platform settings")]
pub struct Cli {
    /// A TOML config file; `DEIS_DEISCTL_*` variables override it (etcd endpoints, credentials,
    /// the cluster's compose project).
    #[arg(long, global = true)]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every part and node, healthy or not, from etcd. Exits 1 when any is not healthy.
    Status {
        /// Wait up to this many seconds for every part to be healthy, printing progress.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        /// Parts that must be present before waiting can end (compose/up passes how many it started).
        #[arg(long, value_name = "N", default_value_t = 0)]
        expect: usize,
    },
    /// The parts' containers and their state on the engine.
    List,
    /// The nodes: up (their agent holds the lease) or down, with address and capacity.
    Nodes,
    /// Platform settings: `config platform set domain=example.com https_only=true`.
    Config {
        /// Only `platform` today.
        scope: String,
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Starts a part: `platform`, a node (`node2`: the whole host), a component (`router`) or one
    /// instance (`router@node2`).
    Start { part: String },
    /// Stops a part (a node: everything on it, then the node).
    Stop { part: String },
    /// Stops, then starts a part.
    Restart { part: String },
    /// A part's container logs, each line tagged with the part.
    Logs {
        part: String,
        /// Only the last N lines of each container.
        #[arg(long, short = 'n', value_name = "N")]
        tail: Option<u32>,
        /// Keep following.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// The store (Ceph): `deisctl store status` prints its health in a line or two and exits 1
    /// unless it is HEALTH_OK.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Prints a new NATS account key pair, the seed on the first line and the public key on the
    /// second: compose/up makes the key that signs users' log credentials with it.
    Nkey,
    /// Runs on each host: probes its parts and keeps their health in etcd under one lease.
    Announce {
        /// The node this host is; parts are named `<component>@<node>`.
        #[arg(long)]
        node: Option<String>,
        /// `<component>[@<instance>]=<probe>`, the probe being `http://…`, `tcp:<host>:<port>` or
        /// `key:<key below the prefix>`.
        #[arg(required = true)]
        parts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Health, monitors in quorum, OSDs up, placement groups and space used.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Sets `name=value` settings (all or none).
    Set {
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Prints settings (all of them without names).
    Get { names: Vec<String> },
}

/// The whole program: parse, run, report errors as `Error: …` with exit status 1.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config: DeisctlConfig =
        service_kit::load_config("deisctl", cli.config.as_deref()).context("loading configuration")?;
    service_kit::telemetry::init_tracing(&config.log);
    let keys = Keys::new(&config.etcd.prefix);
    match cli.command {
        Command::Status { wait, expect } => {
            status(&config, &keys, wait.map(Duration::from_secs), expect).await
        }
        Command::Nodes => nodes(&config, &keys).await,
        Command::Store { action: StoreAction::Status } => store_status(&config).await,
        Command::Nkey => {
            let pair = nkeys::KeyPair::new_account();
            let seed = pair.seed().map_err(|e| anyhow::anyhow!("encoding the seed: {e}"))?;
            println!("{seed}\n{}", pair.public_key());
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            let parts = docker_parts(&config).await?;
            let all = parts.list().await?;
            if all.is_empty() {
                bail!("no containers of cluster '{}' on this engine; is it up (compose/up)?", config.cluster);
            }
            println!("{:<20}  {:<6}  {:<10}  {:<28}  CONTAINER", "PART", "NODE", "STATE", "STATUS");
            for c in &all {
                println!(
                    "{:<20}  {:<6}  {:<10}  {:<28}  {}",
                    c.part(),
                    c.node.as_deref().unwrap_or("-"),
                    c.state,
                    c.status,
                    c.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { scope, action } => {
            if scope != "platform" {
                bail!("unknown config scope '{scope}': only `platform` has settings");
            }
            config_platform(&config, &keys, action).await
        }
        Command::Start { part } => {
            let target = Target::parse(&part)?;
            docker_parts(&config).await?.start(&target, |m| println!("{m}")).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { part } => {
            let target = Target::parse(&part)?;
            docker_parts(&config).await?.stop(&target, |m| println!("{m}")).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart { part } => {
            let target = Target::parse(&part)?;
            let parts = docker_parts(&config).await?;
            parts.stop(&target, |m| println!("{m}")).await?;
            parts.start(&target, |m| println!("{m}")).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs { part, tail, follow } => {
            let target = Target::parse(&part)?;
            docker_parts(&config)
                .await?
                .logs(&target, tail, follow, |part, line| println!("{part}| {line}"))
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Announce { node, parts } => {
            let node = node.map(NodeId::parse).transpose().context("--node")?;
            let watched = parts
                .iter()
                .map(|spec| announce::Watched::parse(spec, node.as_ref()))
                .collect::<Result<Vec<_>, _>>()?;
            let shutdown = Shutdown::new();
            shutdown.trigger_on_signals();
            tracing::info!(node = ?node, parts = watched.len(), "announcing");
            announce::run(&config, node, watched, shutdown).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Asks the store's running containers in turn (a node may be down) for `ceph status`.
async fn store_summary(parts: &Parts, all: &[parts::Container]) -> Result<store::Summary, String> {
    let stores: Vec<&parts::Container> =
        all.iter().filter(|c| c.component == "store" && c.running()).collect();
    if stores.is_empty() {
        return Err("no store container is running".into());
    }
    let mut failures = Vec::new();
    for c in stores {
        let argv = ["timeout", "25", "ceph", "status", "--format", "json", "--connect-timeout", "20"];
        match parts.exec(c, &argv).await {
            Ok((Some(0), out)) => {
                return store::Summary::parse(&out).map_err(|e| format!("{}: {e}", c.part()));
            }
            Ok((code, _)) => failures.push(format!("{}: ceph status exited with {code:?}", c.part())),
            Err(e) => failures.push(format!("{}: {e}", c.part())),
        }
    }
    Err(format!("no store container could say the store's health:\n  {}", failures.join("\n  ")))
}

async fn store_status(config: &DeisctlConfig) -> anyhow::Result<ExitCode> {
    let parts = docker_parts(config).await?;
    let all = parts.list().await?;
    let summary = store_summary(&parts, &all)
        .await
        .map_err(|e| anyhow::anyhow!("cluster '{}': {e}", config.cluster))?;
    for line in summary.lines() {
        println!("{line}");
    }
    Ok(if summary.healthy() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// After the status table: the store's own health in a line or two, when this deisctl reaches
/// the engine its containers run on.
async fn print_store_health(config: &DeisctlConfig, observed: &status::Observed) {
    if !observed.containers.iter().any(|c| c.component == "store" && c.running()) {
        return;
    }
    let Ok(docker) = service_kit::docker::connect().await else { return };
    let parts = Parts::new(docker, &config.cluster);
    match store_summary(&parts, &observed.containers).await {
        Ok(summary) => {
            for line in summary.lines() {
                println!("store: {line}");
            }
        }
        Err(e) => println!("store: health unknown: {e}"),
    }
}

async fn docker_parts(config: &DeisctlConfig) -> anyhow::Result<Parts> {
    let docker = service_kit::docker::connect()
        .await
        .context("the cluster's containers are managed through the host's Docker engine")?;
    Ok(Parts::new(docker, &config.cluster))
}

/// etcd, refusing to wait forever: an operator wants an answer, not a retry loop.
async fn etcd(config: &DeisctlConfig) -> anyhow::Result<etcd_client::Client> {
    etcd::connect_once(&config.etcd).await.map_err(|failures| {
        anyhow::anyhow!(
            "no etcd member answers (is the cluster up? are the credentials right?):\n  {}",
            failures.join("\n  ")
        )
    })
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn observe(
    config: &DeisctlConfig,
    keys: &Keys,
    etcd: &mut etcd_client::Client,
) -> anyhow::Result<status::Observed> {
    let mut observed =
        status::read(etcd, keys, unix_now()).await.context("reading the cluster's health from etcd")?;
    // The engine adds parts that never announced themselves and says why a part is down; without
    // it (deisctl run off the host) etcd alone answers.
    if let Ok(docker) = service_kit::docker::connect().await {
        observed.containers = Parts::new(docker, &config.cluster).list().await.unwrap_or_default();
    }
    Ok(observed)
}

async fn status(
    config: &DeisctlConfig,
    keys: &Keys,
    wait: Option<Duration>,
    expect: usize,
) -> anyhow::Result<ExitCode> {
    let mut etcd = etcd(config).await?;
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let observed = observe(config, keys, &mut etcd).await?;
        for bad in &observed.malformed {
            eprintln!("warning: {bad}");
        }
        let rows = status::rows(&observed);
        let healthy = rows.len() >= expect && rows.iter().all(|r| r.state.ok());
        let Some(patience) = wait.filter(|_| !healthy) else {
            print!("{}", status::render(&rows));
            print_store_health(config, &observed).await;
            return Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        };
        if started.elapsed() > patience {
            print!("{}", status::render(&rows));
            print_store_health(config, &observed).await;
            bail!("not every part is healthy after {} s", patience.as_secs());
        }
        let progress = status::summary(&rows);
        if progress != last {
            println!("  [{:>3}s] {progress}", started.elapsed().as_secs());
            last = progress;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn nodes(config: &DeisctlConfig, keys: &Keys) -> anyhow::Result<ExitCode> {
    let mut etcd = etcd(config).await?;
    let observed = observe(config, keys, &mut etcd).await?;
    let rows: Vec<status::Row> =
        status::rows(&observed).into_iter().filter(|r| r.component == parts::NODE).collect();
    if rows.is_empty() {
        bail!("no node has registered in etcd under {}", keys.nodes());
    }
    let mut text = status::render(&rows);
    // The summary counts nodes here, not parts.
    text = text.replace(" parts healthy", " nodes up");
    print!("{text}");
    Ok(if rows.iter().all(|r| r.state.ok()) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn config_platform(
    config: &DeisctlConfig,
    keys: &Keys,
    action: ConfigAction,
) -> anyhow::Result<ExitCode> {
    match action {
        ConfigAction::Set { assignments } => {
            let parsed =
                assignments.iter().map(|a| settings::parse_assignment(a)).collect::<Result<Vec<_>, _>>()?;
            let mut etcd = etcd(config).await?;
            settings::set(&mut etcd, keys, &parsed).await.context("writing settings to etcd")?;
            for (name, value) in &parsed {
                println!("{name}={value}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigAction::Get { names } => {
            for name in &names {
                if !settings::KNOWN.iter().any(|(known, _)| known == name) {
                    return Err(settings::SettingError::Unknown(name.clone()).into());
                }
            }
            let mut etcd = etcd(config).await?;
            let all = settings::get_all(&mut etcd, keys).await.context("reading settings from etcd")?;
            let mut missing = false;
            for (name, _) in
                settings::KNOWN.iter().filter(|(n, _)| names.is_empty() || names.iter().any(|x| x == n))
            {
                match all.get(*name) {
                    Some(value) => println!("{name}={value}"),
                    None if names.is_empty() => println!("{name} (not set)"),
                    None => {
                        eprintln!("{name} is not set");
                        missing = true;
                    }
                }
            }
            Ok(if missing { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
    }
}
