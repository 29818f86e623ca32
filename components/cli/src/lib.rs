//! The `deis` command-line client: parses the command line, runs the command against the
//! controller's API through `controller_api::Client`, and prints the result as text or JSON.
// Printing is this crate's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
mod commands;
pub mod context;
pub mod dotenv;
pub mod git;
pub mod parse;
pub mod settings;
pub mod table;

use std::process::ExitCode;

use clap::Parser as _;

pub use commands::run;

/// The whole program: parse, run, report. Every failure is printed as `Error: …` on stderr with
/// exit status 1; nothing panics on bad input.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are "errors" to clap but print to stdout and succeed.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
    };
    let outcome = context::Env::from_process().and_then(|env| {
        // One thread is plenty for a CLI that makes one request at a time.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(run(cli, env))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            context::err(&format!("Error: {e:#}\n"));
            ExitCode::FAILURE
        }
    }
}
