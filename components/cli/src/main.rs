//! The `deis` command line client.
fn main() {}
