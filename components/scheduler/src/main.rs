//! The scheduler binary: run several; one leads.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "The Deis scheduler: placement, rolling deploys, failover")]
struct Args {
    /// A TOML config file; `DEIS_SCHEDULER_*` variables override it.
    #[arg(long, env = "DEIS_SCHEDULER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: scheduler::SchedulerConfig =
        service_kit::load_config("scheduler", args.config.as_deref()).context("loading configuration")?;
    service_kit::telemetry::init_tracing(&config.log);
    let shutdown = service_kit::Shutdown::new();
    shutdown.trigger_on_signals();
    scheduler::run(config, shutdown.clone()).await?;
    shutdown.wait(std::time::Duration::from_secs(10)).await;
    Ok(())
}
