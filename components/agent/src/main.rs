//! The agent binary: one per Docker host.

use std::path::PathBuf;

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
    let config = service_kit::start("agent", args.config.as_deref(), |c: &agent::AgentConfig| &c.log)?;
    service_kit::serve(|shutdown| agent::run(config, shutdown)).await?;
    Ok(())
}
