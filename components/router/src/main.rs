//! The router binary.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "The Deis router: routes apps' HTTP traffic and passes git pushes to the builder")]
struct Args {
    /// A TOML config file; `DEIS_ROUTER_*` variables override it.
    #[arg(long, env = "DEIS_ROUTER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = service_kit::start("router", args.config.as_deref(), |c: &router::RouterConfig| &c.log)?;
    let listeners = router::Listeners {
        http: service_kit::bind(&config.listen_http).await?,
        https: service_kit::bind(&config.listen_https).await?,
        ops: service_kit::bind(&config.listen_ops).await?,
        git: service_kit::bind(&config.listen_git).await?,
    };
    service_kit::serve(|shutdown| router::run(config, listeners, shutdown)).await?;
    Ok(())
}
