//! The agent binary: one per Docker host.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "The Deis agent: runs this host's containers for the scheduler")]
struct Args {
    /// A TOML config file; `DEIS_AGENT_*` variables override it.
    #[arg(long, env = "DEIS_AGENT_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: agent::AgentConfig =
        service_kit::load_config("agent", args.config.as_deref()).context("loading configuration")?;
    service_kit::telemetry::init_tracing(&config.log);
    let shutdown = service_kit::Shutdown::new();
    shutdown.trigger_on_signals();
    agent::run(config, shutdown.clone()).await?;
    shutdown.wait(std::time::Duration::from_secs(10)).await;
    Ok(())
}
