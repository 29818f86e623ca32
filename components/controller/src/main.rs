//! The controller binary: reads its config, then serves the API until SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "The Deis controller: the platform's API and state")]
struct Args {
    /// A TOML config file; `DEIS_CONTROLLER_*` variables override it.
    #[arg(long, env = "DEIS_CONTROLLER_CONFIG")]
    config: Option<PathBuf>,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    openapi: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.openapi {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", controller::api::openapi_document());
        }
        return Ok(());
    }
    let config: controller::ControllerConfig =
        service_kit::load_config("controller", args.config.as_deref()).context("loading configuration")?;
    service_kit::telemetry::init_tracing(&config.log);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = service_kit::Shutdown::new();
    shutdown.trigger_on_signals();
    controller::run(config, listener, shutdown.clone()).await?;
    shutdown.trigger();
    shutdown.wait(std::time::Duration::from_secs(10)).await;
    Ok(())
}
