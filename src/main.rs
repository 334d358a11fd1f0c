//! The `sifovl` command line. Thin: parse, call the library, print, pick the exit code.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
