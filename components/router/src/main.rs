//! The router binary.

use std::path::PathBuf;

use anyhow::Context;
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
    let config: router::RouterConfig =
        service_kit::load_config("router", args.config.as_deref()).context("loading configuration")?;
    service_kit::telemetry::init_tracing(&config.log);
    let bind = |addr: &str| {
        let addr = addr.to_owned();
        async move { tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}")) }
    };
    let listeners = router::Listeners {
        http: bind(&config.listen_http).await?,
        https: bind(&config.listen_https).await?,
        ops: bind(&config.listen_ops).await?,
        git: bind(&config.listen_git).await?,
    };
    let shutdown = service_kit::Shutdown::new();
    shutdown.trigger_on_signals();
    router::run(config, listeners, shutdown.clone()).await?;
    shutdown.wait(std::time::Duration::from_secs(10)).await;
    Ok(())
}
