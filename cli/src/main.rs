//! The `skiff` binary: parses the command line, sets up logging and the
//! runtime, and hands over to the libraries.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = skiff_cli::Cli::parse();
    skiff_cli::run(cli)
}
