//! Downloads through the `curl` program, the one place this crate spawns a
//! child. The CLI rather than libcurl keeps TLS and proxy set-up the host's
//! own, and keeps C code out of the build. `file://` items are read here
//! instead, as the invoking user.
//!
//! ```text
//!  url, credentials ──stdin (--config -)──▶ curl ──stdout──▶ counted copy ──▶ tmp file
//!                                            │                 └─ past the cap: curl killed
//!                                            └─ a transient failure: again after 1 s, 2 s, 4 s
//! ```
//!
//! What a server sends is bounded three ways: a size cap per item (the
//! item's `size`, else the store's default), `--max-time` for the whole
//! transfer and a low-speed limit for a server that trickles. The URL and
//! any credentials reach curl on its stdin, never its argv, which `ps`
//! shows to every user.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::fs::{FileType, Mode, OFlags};

/// How much a download may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes an item may have.
    pub max_bytes: u64,
    /// The longest one attempt may take.
    pub max_time: Duration,
    /// How often a transient failure is tried again.
    pub retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_time: Duration::from_secs(3600),
            retries: 3,
        }
    }
}

/// An item's size cap when its manifest entry gives no `size`: 16 GiB,
/// more than any Debian image or ISO.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// A server slower than this many bytes a second for [`LOW_SPEED_TIME`]
/// is given up on.
const LOW_SPEED_LIMIT: u32 = 1024;
const LOW_SPEED_TIME: u32 = 60;

/// Why a download failed.
#[derive(Debug)]
pub(crate) enum CurlFailure {
    /// `curl` could not be started at all.
    Spawn(io::Error),
    /// `curl` ran and failed; its error line, or its exit status.
    Failed(String),
    /// More bytes came than the cap allows.
    TooLarge(u64),
    /// Writing the downloaded bytes failed.
    Io(io::Error),
}

/// The argv (without the program name); the URL and credentials come on
/// stdin ([`config`]).
fn args(limits: &Limits) -> Vec<OsString> {
    let protos = "=http,https";
    [
        // Must come first: a user's ~/.curlrc must not change what a build
        // fetches or how.
        "--disable",
        "--fail",
        "--location",
        "--silent",
        "--show-error",
        "--proto",
        protos,
        // A redirect may go to another web server, never to a host file.
        "--proto-redir",
        protos,
        // `[` and `{` in a URL (IPv6 literals, odd file names) are literal.
        "--globoff",
        "--connect-timeout",
        "30",
        "--max-time",
        &limits.max_time.as_secs().max(1).to_string(),
        "--speed-limit",
        &LOW_SPEED_LIMIT.to_string(),
        "--speed-time",
        &LOW_SPEED_TIME.to_string(),
        // Refused before the body when the server says its length; the
        // counted copy catches a server that does not.
        "--max-filesize",
        &limits.max_bytes.to_string(),
        "--config",
        "-",
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// curl's config-file text naming the URL and, where given, `user:password`.
fn config(url: &str, user: Option<&str>) -> String {
    // Quoted config strings take backslash escapes; parse_curl refused
    // control characters in the URL, secrets are checked when read.
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut text = format!("url = {}\n", quote(url));
    if let Some(user) = user {
        text.push_str(&format!("user = {}\n", quote(user)));
    }
    text
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

/// Downloads `url` into `output` (truncated first), with `user` as HTTP
/// credentials; returns the bytes written. `item` names the download in
/// curl's argv[0] (`curl sha256:…`), which `ps` shows in place of the URL.
pub(crate) fn download(
    url: &str,
    user: Option<&str>,
    output: &mut File,
    limits: &Limits,
    item: &str,
) -> Result<u64, CurlFailure> {
    match file_url_path(url) {
        Some(Ok(path)) => return read_file(&path, output, limits.max_bytes),
        Some(Err(why)) => return Err(CurlFailure::Failed(why)),
        None => {}
    }
    let mut attempt = 0;
    loop {
        output.set_len(0).map_err(CurlFailure::Io)?;
        io::Seek::rewind(output).map_err(CurlFailure::Io)?;
        match once(url, user, output, limits, item) {
            Err(Attempt::Transient(_)) if attempt < limits.retries => {
                // 1 s, 2 s, 4 s: a busy mirror or a dropped connection.
                std::thread::sleep(Duration::from_secs(1 << attempt));
                attempt += 1;
            }
            Err(Attempt::Transient(message) | Attempt::Final(message)) => {
                return Err(CurlFailure::Failed(message));
            }
            Err(Attempt::Other(failure)) => return Err(failure),
            Ok(bytes) => return Ok(bytes),
        }
    }
}

enum Attempt {
    /// Worth trying again: a timeout, a reset connection, HTTP 408, 429, 5xx.
    Transient(String),
    /// Not: a 404, a bad certificate, a refused protocol.
    Final(String),
    Other(CurlFailure),
}

fn once(
    url: &str,
    user: Option<&str>,
    output: &mut File,
    limits: &Limits,
    item: &str,
) -> Result<u64, Attempt> {
    let mut cmd = Command::new("curl");
    cmd.arg0(format!("curl {item}"));
    cmd.args(args(limits));
    die_with_parent(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Attempt::Other(CurlFailure::Spawn(e)))?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(config(url, user).as_bytes());
    drop(stdin);
    // Read stderr on its own thread: a chatty curl must not block on it
    // while we wait on stdout.
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.by_ref().take(64 << 10).read_to_end(&mut text);
        text
    });
    let mut stdout = child.stdout.take().expect("piped");
    let copied = copy_capped(&mut stdout, output, limits.max_bytes);
    if copied.is_err() {
        let _ = child.kill();
    }
    drop(stdout);
    let status = child.wait();
    let stderr = String::from_utf8_lossy(&errors.join().unwrap_or_default()).into_owned();
    let bytes = copied.map_err(Attempt::Other)?;
    written.map_err(|e| Attempt::Other(CurlFailure::Io(e)))?;
    let status = status.map_err(|e| Attempt::Other(CurlFailure::Io(e)))?;
    if status.success() {
        return Ok(bytes);
    }
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let message = if lines.is_empty() {
        format!("curl failed ({status})")
    } else {
        lines.join("; ")
    };
    // 63: --max-filesize refused what the server announced.
    if status.code() == Some(63) {
        return Err(Attempt::Other(CurlFailure::TooLarge(limits.max_bytes)));
    }
    if is_transient(status.code(), &message) {
        Err(Attempt::Transient(message))
    } else {
        Err(Attempt::Final(message))
    }
}

/// curl's exit codes (and HTTP statuses, which `--fail` reports as 22) that
/// a later attempt may not meet: the set curl's own `--retry` uses.
fn is_transient(code: Option<i32>, message: &str) -> bool {
    match code {
        // timeout, partial file, empty reply, send/receive errors, TLS connect
        Some(28 | 18 | 52 | 55 | 56 | 35) => true,
        Some(22) => ["408", "429", "500", "502", "503", "504"]
            .iter()
            .any(|s| message.contains(&format!("error: {s}"))),
        _ => false,
    }
}

/// Copies at most `cap` bytes of `from` to `to`; one byte more is an error.
fn copy_capped(from: &mut impl Read, to: &mut File, cap: u64) -> Result<u64, CurlFailure> {
    let copied = io::copy(&mut from.by_ref().take(cap), to).map_err(CurlFailure::Io)?;
    let mut one = [0u8; 1];
    match from.read(&mut one) {
        Ok(0) => Ok(copied),
        Ok(_) => Err(CurlFailure::TooLarge(cap)),
        Err(e) => Err(CurlFailure::Io(e)),
    }
}

/// The path a `file://` URL names (host empty or `localhost`),
/// percent-decoded; `None` for another scheme. The one reader of file URLs:
/// curl items and task documents both use it.
pub fn file_url_path(url: &str) -> Option<Result<std::path::PathBuf, String>> {
    use std::os::unix::ffi::OsStringExt;
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("file") {
        return None;
    }
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Some(Err(format!("`{url}`: a file URL is file:///absolute/path")));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let Some(byte) = path
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            else {
                return Some(Err(format!("`{url}`: a cut-off or bad %-escape")));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(Ok(std::ffi::OsString::from_vec(out).into()))
}

/// Reads the local file `path` as the invoking user: a regular file only
/// (a FIFO would never end, `/dev/zero` never stops), opened without
/// blocking, at most `cap` bytes.
fn read_file(path: &std::path::Path, output: &mut File, cap: u64) -> Result<u64, CurlFailure> {
    let shown = |what: &str| CurlFailure::Failed(format!("{}: {what}", path.display()));
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| shown(&e.to_string()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| shown(&e.to_string()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(shown("not a regular file"));
    }
    output.set_len(0).map_err(CurlFailure::Io)?;
    copy_capped(&mut File::from(fd), output, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_carries_no_url_and_bounds_the_transfer() {
        let argv = args(&Limits {
            max_bytes: 1000,
            max_time: Duration::from_secs(60),
            retries: 3,
        });
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            argv.join(" "),
            "--disable --fail --location --silent --show-error \
             --proto =http,https --proto-redir =http,https --globoff \
             --connect-timeout 30 --max-time 60 --speed-limit 1024 --speed-time 60 \
             --max-filesize 1000 --config -"
        );
    }

    #[test]
    fn the_url_and_user_go_through_a_quoted_config() {
        assert_eq!(
            config("http://127.0.0.1:8/a\"b\\c", Some("u:p\"w")),
            "url = \"http://127.0.0.1:8/a\\\"b\\\\c\"\nuser = \"u:p\\\"w\"\n"
        );
    }

    #[test]
    fn file_urls_are_decoded_paths() {
        let path = |u| file_url_path(u).unwrap().unwrap();
        assert_eq!(path("file:///srv/a%20b"), std::path::Path::new("/srv/a b"));
        assert_eq!(path("FILE://localhost/x%25"), std::path::Path::new("/x%"));
        assert!(file_url_path("FILE://localhost/x%2").unwrap().is_err());
        assert!(file_url_path("file://relative").unwrap().is_err());
        assert!(file_url_path("http://127.0.0.1/x").is_none());
    }

    #[test]
    fn a_local_file_is_regular_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = tempfile::tempfile().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        let p = f.as_path();
        assert_eq!(read_file(p, &mut out, 5).unwrap(), 5);
        assert!(matches!(
            read_file(p, &mut out, 4),
            Err(CurlFailure::TooLarge(4))
        ));
        assert!(
            matches!(read_file(std::path::Path::new("/dev/zero"), &mut out, 1 << 20), Err(CurlFailure::Failed(m)) if m.contains("not a regular file"))
        );
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            read_file(&fifo, &mut out, 10),
            Err(CurlFailure::Failed(_))
        ));
    }

    #[test]
    fn transient_failures_are_the_ones_worth_waiting_for() {
        assert!(is_transient(
            Some(22),
            "curl: (22) The requested URL returned error: 503"
        ));
        assert!(is_transient(Some(28), "timed out"));
        assert!(!is_transient(
            Some(22),
            "curl: (22) The requested URL returned error: 404"
        ));
        assert!(!is_transient(Some(7), "connection refused"));
    }
}
