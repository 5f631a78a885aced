//! The one place that spawns sandboxed programs.
//!
//! Each child gets its own process group, so that Ctrl-C (or SIGTERM) of
//! strata ends the whole groups of the running stages (several run at once
//! with `--jobs`) and nothing else; a child's stdout and stderr share one
//! pipe, read line by line into the stage log and handed to the caller
//! (which passes them on to the monitor).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The process groups of the children running now, one per running stage.
static RUNNING_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

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

/// Makes Ctrl-C and SIGTERM end the running children's process groups; the
/// build loop sees [`interrupted`] and unwinds, cleaning up as a failure.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        kill_running_groups();
    });
}

/// Whether strata was interrupted.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    RUNNING_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kill_running_groups() {
    for &pgid in groups().iter() {
        kill_group(pgid);
    }
}

fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Runs `program argv…`, writing its output to `log` and handing each line
/// to `on_line`; ends its process group after `timeout`.
pub fn run_logged(
    program: &str,
    argv: &[OsString],
    log: &Path,
    on_line: &dyn Fn(&[u8]),
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
    groups().push(pgid);
    // An interrupt between the check above and the push found no group to end.
    if interrupted() {
        kill_group(pgid);
    }
    // A watchdog ends the group at the deadline; finishing first tells it to stop.
    let timed_out = Arc::new(AtomicBool::new(false));
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = timeout.map(|limit| {
        let timed_out = timed_out.clone();
        std::thread::spawn(move || {
            if finished.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
                timed_out.store(true, Ordering::SeqCst);
                kill_group(pgid);
            }
        })
    });
    for line in BufReader::new(reader).split(b'\n') {
        let Ok(line) = line else { break };
        let _ = log_file.write_all(&line);
        let _ = log_file.write_all(b"\n");
        on_line(&line);
    }
    let status = child.wait();
    groups().retain(|&g| g != pgid);
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

/// Runs `program argv…` on the terminal `tty` (its stdin, stdout and
/// stderr) and waits: the `--break` shell. It stays in strata's process
/// group, so the build's Ctrl-C handling covers it as it covers strata.
pub fn run_interactive(program: &str, argv: &[OsString], tty: &std::fs::File) -> Outcome {
    let stdio = || tty.try_clone().map(Stdio::from);
    let (stdin, stdout, stderr) = match (stdio(), stdio(), stdio()) {
        (Ok(i), Ok(o), Ok(e)) => (i, o, e),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Outcome::SpawnFailed(e),
    };
    let status = Command::new(program)
        .args(argv)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .status();
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Finished(code),
            (None, Some(sig)) => Outcome::Killed(sig),
            (None, None) => Outcome::Finished(-1),
        },
        Err(e) => Outcome::SpawnFailed(std::io::Error::new(e.kind(), format!("{program}: {e}"))),
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
