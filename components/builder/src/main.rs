//! The builder binary: the SSH server for `git push`, and (`builder hook`) the pre-receive hook
//! git runs inside each push, which hands the push to the running builder.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "The Deis builder: git push over SSH → image in the registry → release")]
struct Args {
    /// A TOML config file; `DEIS_BUILDER_*` variables override it.
    #[arg(long, env = "DEIS_BUILDER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run by git as each repository's pre-receive hook (not by hand).
    Hook,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Hook) = args.command {
        // The hook stays synchronous and small: it starts once per push.
        std::process::exit(builder::hook::run_hook());
    }
    let config = service_kit::start("builder", args.config.as_deref(), |c: &builder::BuilderConfig| &c.log)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listeners = builder::Listeners {
            ssh: service_kit::bind(&config.listen_ssh).await?,
            ops: service_kit::bind(&config.listen_ops).await?,
        };
        service_kit::serve(|shutdown| builder::run(config, listeners, shutdown)).await?;
        Ok(())
    })
}
