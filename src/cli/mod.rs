//! clap front end. Exit codes: 0 success, 1 "checked and found wanting" (verify, --check),
//! 2 error (bad input, refused operation, I/O failure).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Edit SIF and OCI-SIF container images without mounting them.
#[derive(Parser)]
#[command(name = "sifovl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {}
}
