//! The `skiff` binary: parses the command line, sets up logging and the
//! runtime, and hands over to the libraries. Started as `skiff-pause` (by
//! the agent, for a pod sharing one PID namespace among its containers),
//! it is that pod's pause process instead.

/// mimalloc for a master, the system allocator for everything else
/// (`skiff_cli::allocator`).
#[global_allocator]
static ALLOCATOR: skiff_cli::allocator::RoleAllocator = skiff_cli::allocator::RoleAllocator;

/// Chooses [`ALLOCATOR`]'s allocator from the subcommand before anything
/// allocates.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array.00098")]
static CHOOSE_ALLOCATOR: unsafe extern "C" fn(
    std::ffi::c_int,
    *const *const std::ffi::c_char,
    *const *const std::ffi::c_char,
) = skiff_cli::allocator::choose_from_arguments;

fn main() -> std::process::ExitCode {
    if let Err(e) = skiff_cli::allocator::check_environment() {
        eprintln!("skiff: {e}");
        return std::process::ExitCode::from(2);
    }
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
