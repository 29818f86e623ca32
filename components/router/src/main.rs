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
        http_proxied: bind_if_set(&config.listen_http_proxied).await?,
        https_proxied: bind_if_set(&config.listen_https_proxied).await?,
        git_proxied: bind_if_set(&config.listen_git_proxied).await?,
    };
    service_kit::serve(|shutdown| router::run(config, listeners, shutdown)).await?;
    Ok(())
}

/// The listener at `address`, or none when it is empty (the front door's are optional).
async fn bind_if_set(address: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if address.is_empty() {
        return Ok(None);
    }
    Ok(Some(service_kit::bind(address).await?))
}
