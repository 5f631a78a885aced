//! The `strata` binary: the command line over the library.

fn main() {
    // A bug must not greet users with a backtrace: say what happened, once.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("strata: internal error: {info}\n    please report this as a bug");
    }));
    // The sandbox's first program is strata itself (userns.rs): not the CLI.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == strata::sandbox::userns::ENTER_FLAG)
    {
        std::process::exit(strata::sandbox::userns::enter_main(&args[2..]));
    }
    std::process::exit(strata::cli::main());
}
