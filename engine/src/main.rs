//! The `strata` binary: the command line over the library.

fn main() {
    // A bug must not greet users with a backtrace: say what happened, once.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("strata: internal error: {info}\n    please report this as a bug");
    }));
    std::process::exit(strata::cli::main());
}
