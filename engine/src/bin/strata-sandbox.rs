//! `strata-sandbox`: the small program strata starts around and inside a
//! sandbox (sandbox/net.rs, sandbox/userns.rs). It is strata's code, in a
//! binary of its own because it starts once per stage: the full `strata`
//! binary costs tens of milliseconds to start (a debug build is over
//! 100 MB), this one a few.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match args.get(1).and_then(|a| a.to_str()) {
        Some(strata::sandbox::userns::ENTER_FLAG) => {
            strata::sandbox::userns::enter_main(&args[2..])
        }
        Some(strata::sandbox::net::NET_FLAG) => strata::sandbox::net::net_main(&args[2..]),
        _ => {
            eprintln!(
                "strata-sandbox: strata runs this program itself, around and inside its sandboxes"
            );
            2
        }
    };
    std::process::exit(code);
}
