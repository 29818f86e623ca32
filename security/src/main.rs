//! `security list | run <attack>… | run all`: the tenants' isolation tier against the compose
//! cluster (run it through `compose/security`, which boots a cluster and finds its credentials).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "security", about = "Attacks of one tenant on another, replayed on the 3-node cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// The attacks, in the order `run all` runs them.
    List,
    /// Runs attacks (or `all`) and prints the report.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Attack names, or `all`.
    #[arg(required = true)]
    attacks: Vec<String>,
    #[command(flatten)]
    cluster: chaos::platform::ClusterArgs,
    #[arg(long, env = "DEIS_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
    /// The router's NATS password (the bus-credentials attack uses its account).
    #[arg(long, env = "DEIS_SECURITY_ROUTER_NATS_PASSWORD", hide_env_values = true)]
    router_nats_password: String,
    /// The tier's app.
    #[arg(long, default_value = "security/app")]
    app_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEIS_SECURITY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::List => {
            for (name, what) in security::ATTACKS {
                println!("{name:<18} {what}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(run) => {
            let options = security::Options {
                settings: run.cluster.settings(),
                app_dir: run.app_dir,
                nats_port: run.nats_port,
                router_nats_password: run.router_nats_password,
            };
            let held = security::run(options, run.attacks).await?;
            Ok(if held { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
