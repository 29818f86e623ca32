//! `chaos list | run <scenario>… | run all`: the fault suite against the compose cluster (run it
//! through `chaos/chaos`, which finds the cluster's ports and credentials).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "chaos", about = "Faults on the 3-node cluster under load, invariants checked after each")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// The scenarios, in the order `run all` runs them.
    List,
    /// Runs scenarios (or `all`) and prints the report.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario names, or `all`.
    #[arg(required = true)]
    scenarios: Vec<String>,
    #[command(flatten)]
    cluster: chaos::platform::ClusterArgs,
    /// The suite's app.
    #[arg(long, default_value = "chaos/app")]
    app_dir: PathBuf,
    /// GETs per second per app, through the front door.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// The node that node faults hit.
    #[arg(long, default_value = "node3")]
    node: String,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the report's table (Markdown) here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// How long the soak scenario runs (30 min by hand: 1800).
    #[arg(long, default_value_t = 120)]
    soak_secs: u64,
    /// The soak's seed, to replay a run (printed by every soak).
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEIS_CHAOS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::List => {
            for (name, what) in chaos::scenarios::SCENARIOS {
                println!("{name:<28} {what}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(run) => {
            let options = chaos::Options {
                settings: run.cluster.settings(),
                app_dir: run.app_dir,
                rate: run.rate,
                victim: run.node,
                json: run.json,
                markdown: run.markdown,
                soak: std::time::Duration::from_secs(run.soak_secs),
                seed: run.seed,
            };
            let passed = chaos::run(options, run.scenarios).await?;
            Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
