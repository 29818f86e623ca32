//! The `deis` binary; everything lives in the `deis_cli` library so it can be tested.
fn main() -> std::process::ExitCode {
    deis_cli::main()
}
