//! Downloads through the `curl` program, the one place this crate spawns a
//! child. The CLI rather than libcurl keeps TLS and proxy set-up the host's
//! own, and keeps C code out of the build.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::item::CURL_SCHEMES;

/// Why a download failed.
#[derive(Debug)]
pub(crate) enum CurlFailure {
    /// `curl` could not be started at all.
    Spawn(io::Error),
    /// `curl` ran and failed; its error line, or its exit status.
    Failed(String),
}

/// The argv (without the program name) that downloads `url` into `output`.
fn args(url: &str, output: &Path) -> Vec<OsString> {
    let protos = format!("={}", CURL_SCHEMES.join(","));
    let mut argv: Vec<OsString> = [
        // Must come first: a user's ~/.curlrc must not change what a build
        // fetches or how.
        "--disable",
        "--fail",
        "--location",
        "--silent",
        "--show-error",
        "--proto",
        &protos,
        // A redirect may go to another web server, never to a host file.
        "--proto-redir",
        "=http,https",
        // `[` and `{` in a URL (IPv6 literals, odd file names) are literal.
        "--globoff",
        "--connect-timeout",
        "30",
        "--output",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    argv.push(output.into());
    // `--url` rather than a bare argument so a URL can never read as an option.
    argv.push("--url".into());
    argv.push(url.into());
    argv
}

/// Makes the child die when the thread that spawned it does, as stages do
/// (bubblewrap's `--die-with-parent`). A strata killed with SIGKILL then
/// leaves no curl behind that goes on writing into the store's tmp/ after
/// the next run has cleaned it.
fn die_with_parent(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the hook runs between fork and exec, and makes only two
    // syscalls (prctl, getppid), which are async-signal-safe; it allocates
    // nothing (its errors are raw OS errors) and takes no lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died before the prctl took effect.
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
}

/// Downloads `url` into the existing file `output`, overwriting it.
pub(crate) fn download(url: &str, output: &Path) -> Result<(), CurlFailure> {
    let mut cmd = Command::new("curl");
    cmd.args(args(url, output));
    die_with_parent(&mut cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(CurlFailure::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Err(CurlFailure::Failed(if lines.is_empty() {
        format!("curl failed ({})", out.status)
    } else {
        lines.join("; ")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv() {
        let argv = args("http://127.0.0.1:8/a[1].deb", Path::new("/store/tmp/x"));
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            argv.join(" "),
            "--disable --fail --location --silent --show-error \
             --proto =http,https,file --proto-redir =http,https --globoff \
             --connect-timeout 30 --output /store/tmp/x --url http://127.0.0.1:8/a[1].deb"
        );
    }
}
