//! The `skiff` binary: parses the command line, sets up logging and the
//! runtime, and hands over to the libraries.

fn main() -> std::process::ExitCode {
    // Flags, then SKIFF_* variables, then /etc/skiff/config.yaml.
    let cli = match skiff_cli::settings::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    skiff_cli::run(cli)
}
