//! The `strata` binary: the command line over the library.

fn main() {
    // A bug must not greet users with a backtrace: say what happened, once.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("strata: internal error: {info}\n    please report this as a bug");
    }));
    // Around and inside a sandbox, strata itself runs (sandbox/net.rs,
    // sandbox/userns.rs): not the CLI.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(strata::sandbox::userns::ENTER_FLAG) => {
            std::process::exit(strata::sandbox::userns::enter_main(&args[2..]))
        }
        Some(strata::sandbox::net::NET_FLAG) => {
            std::process::exit(strata::sandbox::net::net_main(&args[2..]))
        }
        _ => {}
    }
    std::process::exit(strata::cli::main());
}
