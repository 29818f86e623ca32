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
    /// The cluster's compose project.
    #[arg(long, env = "DEIS_CLUSTER", default_value = "deis")]
    cluster: String,
    /// The front door's HTTP port on 127.0.0.1.
    #[arg(long, env = "DEIS_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    #[arg(long, env = "DEIS_GIT_PORT", default_value_t = 2222)]
    git_port: u16,
    #[arg(long, env = "DEIS_DOMAIN", default_value = "deis.local")]
    domain: String,
    /// etcd user the suite reads with (deisctl's).
    #[arg(long, env = "DEIS_CHAOS_ETCD_USER", default_value = "deisctl")]
    etcd_user: String,
    #[arg(long, env = "DEIS_CHAOS_ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: String,
    /// The read-only NATS user's password, to follow the apps' drain streams.
    #[arg(long, env = "DEIS_CHAOS_DRAIN_PASSWORD", hide_env_values = true)]
    drain_password: String,
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
                settings: chaos::platform::Settings {
                    cluster: run.cluster,
                    http: chaos::front(run.http_port),
                    git_port: run.git_port,
                    domain: run.domain,
                    etcd_user: run.etcd_user,
                    etcd_password: run.etcd_password,
                    drain_password: run.drain_password,
                },
                app_dir: run.app_dir,
                rate: run.rate,
                victim: run.node,
                json: run.json,
                markdown: run.markdown,
            };
            let passed = chaos::run(options, run.scenarios).await?;
            Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
