//! The controller binary: reads its config, then serves the API until SIGTERM.

use std::path::PathBuf;

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
    let config =
        service_kit::start("controller", args.config.as_deref(), |c: &controller::ControllerConfig| &c.log)?;
    let listener = service_kit::bind(&config.listen).await?;
    service_kit::serve(|shutdown| async move {
        controller::run(config, listener, shutdown.clone()).await?;
        // Had the API server stopped without a signal, the background tasks would not know to stop.
        shutdown.trigger();
        Ok::<_, controller::ControllerError>(())
    })
    .await?;
    Ok(())
}
