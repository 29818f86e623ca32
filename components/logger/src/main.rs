//! The logger binary.

use std::path::PathBuf;

use anyhow::Context;
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
    let config: logger::LoggerConfig =
        service_kit::load_config("logger", args.config.as_deref()).context("loading configuration")?;
    service_kit::telemetry::init_tracing(&config.log);
    let ops = tokio::net::TcpListener::bind(&config.listen_ops)
        .await
        .with_context(|| format!("binding {}", config.listen_ops))?;
    let shutdown = service_kit::Shutdown::new();
    shutdown.trigger_on_signals();
    logger::run(config, ops, shutdown.clone()).await?;
    shutdown.wait(std::time::Duration::from_secs(10)).await;
    Ok(())
}
