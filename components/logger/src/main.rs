//! The logger binary.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "The Deis logger: app log history, drains and the public drain stream")]
struct Args {
    /// A TOML config file; `DEIS_LOGGER_*` variables override it.
    #[arg(long, env = "DEIS_LOGGER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = service_kit::start("logger", args.config.as_deref(), |c: &logger::LoggerConfig| &c.log)?;
    let ops = service_kit::bind(&config.listen_ops).await?;
    service_kit::serve(|shutdown| logger::run(config, ops, shutdown)).await?;
    Ok(())
}
