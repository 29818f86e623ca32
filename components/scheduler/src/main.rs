//! The scheduler binary: run several; one leads.

use std::path::PathBuf;

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
    let config =
        service_kit::start("scheduler", args.config.as_deref(), |c: &scheduler::SchedulerConfig| &c.log)?;
    service_kit::serve(|shutdown| scheduler::run(config, shutdown)).await?;
    Ok(())
}
