//! The one place that spawns sandboxed programs.
//!
//! Each child gets its own process group, so that Ctrl-C (or SIGTERM) of
//! strata ends the whole group of the running stage and nothing else; its
//! stdout and stderr share one pipe, read line by line into the stage log
//! and, prefixed, onto strata's stderr.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CURRENT_GROUP: AtomicI32 = AtomicI32::new(0);

/// How a sandboxed program ended.
#[derive(Debug)]
pub enum Outcome {
    /// It exited with this status.
    Finished(i32),
    /// A signal ended it.
    Killed(i32),
    /// strata was interrupted (Ctrl-C, SIGTERM) and ended it.
    Interrupted,
    /// It ran longer than allowed and was ended.
    TimedOut(Duration),
    /// It could not be started.
    SpawnFailed(std::io::Error),
}

impl Outcome {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        matches!(self, Outcome::Finished(0))
    }

    /// For error messages: "exit status 3", "killed by signal 9", …
    pub fn describe(&self) -> String {
        match self {
            Outcome::Finished(code) => format!("exit status {code}"),
            Outcome::Killed(sig) => format!("killed by signal {sig}"),
            Outcome::Interrupted => "interrupted".into(),
            Outcome::TimedOut(limit) => format!(
                "timed out after {}s (--stage-timeout) and was ended",
                limit.as_secs()
            ),
            Outcome::SpawnFailed(e) => format!("could not start: {e}"),
        }
    }
}

/// Makes Ctrl-C and SIGTERM end the running child's process group; the
/// build loop sees [`interrupted`] and unwinds, cleaning up as a failure.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        kill_current_group();
    });
}

/// Whether strata was interrupted.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn kill_current_group() {
    let pgid = CURRENT_GROUP.load(Ordering::SeqCst);
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Runs `program argv…`, writing its output to `log` and, each line after
/// `prefix`, to stderr unless `quiet`; ends its process group after `timeout`.
pub fn run_logged(
    program: &str,
    argv: &[OsString],
    log: &Path,
    prefix: &str,
    quiet: bool,
    timeout: Option<Duration>,
) -> Outcome {
    if interrupted() {
        return Outcome::Interrupted;
    }
    let mut log_file = match std::fs::File::create(log) {
        Ok(f) => f,
        Err(e) => return Outcome::SpawnFailed(e),
    };
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return Outcome::SpawnFailed(e),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return Outcome::SpawnFailed(e),
    };
    let mut cmd = Command::new(program);
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::SpawnFailed(std::io::Error::new(e.kind(), format!("{program}: {e}")));
        }
    };
    // The Command still holds the pipe's write ends; drop them so that the
    // reader sees EOF when the child exits.
    drop(cmd);
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    CURRENT_GROUP.store(pgid, Ordering::SeqCst);
    if interrupted() {
        kill_current_group();
    }
    // A watchdog ends the group at the deadline; finishing first tells it to stop.
    let timed_out = Arc::new(AtomicBool::new(false));
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = timeout.map(|limit| {
        let timed_out = timed_out.clone();
        std::thread::spawn(move || {
            if finished.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
                timed_out.store(true, Ordering::SeqCst);
                if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
            }
        })
    });
    let mut stderr = std::io::stderr();
    for line in BufReader::new(reader).split(b'\n') {
        let Ok(line) = line else { break };
        let _ = log_file.write_all(&line);
        let _ = log_file.write_all(b"\n");
        if !quiet {
            let mut out = Vec::with_capacity(prefix.len() + line.len() + 1);
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(&line);
            out.push(b'\n');
            let _ = stderr.write_all(&out);
        }
    }
    let status = child.wait();
    CURRENT_GROUP.store(0, Ordering::SeqCst);
    drop(done);
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    match status {
        _ if interrupted() => Outcome::Interrupted,
        _ if timed_out.load(Ordering::SeqCst) => Outcome::TimedOut(timeout.unwrap_or_default()),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Finished(code),
            (None, Some(sig)) => Outcome::Killed(sig),
            (None, None) => Outcome::Finished(-1),
        },
        Err(e) => Outcome::SpawnFailed(e),
    }
}

/// The last `n` lines of a log file.
pub fn tail(log: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
