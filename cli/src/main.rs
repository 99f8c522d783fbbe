//! The `skiff` binary: parses the command line, sets up logging and the
//! runtime, and hands over to the libraries. Started as `skiff-pause` (by
//! the agent, for a pod sharing one PID namespace among its containers),
//! it is that pod's pause process instead.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = skiff_agent::pods::sandbox::pause::main_if_pause(&args) {
        return code;
    }
    // Flags, then SKIFF_* variables, then /etc/skiff/config.yaml.
    let cli = match skiff_cli::settings::parse(args) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    skiff_cli::run(cli)
}
