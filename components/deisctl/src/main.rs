//! The `deisctl` binary; everything lives in the `deisctl` library so it can be tested.
fn main() -> std::process::ExitCode {
    deisctl::main()
}
