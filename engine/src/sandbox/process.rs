//! The one place that spawns sandboxed programs.
//!
//! Each child gets its own process group, so that Ctrl-C (or SIGTERM) of
//! strata ends the whole groups of the running stages (several run at once
//! with `--jobs`) and nothing else; a child's stdout and stderr share one
//! pipe, read line by line into the stage log and handed to the caller
//! (which passes them on to the monitor).

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
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
    program: &OsStr,
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
            return Outcome::SpawnFailed(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", program.to_string_lossy()),
            ));
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
    // A watchdog ends the group at the deadline.
    let (timed_out, watchdog) = start_watchdog(pgid, true, timeout);
    // Lines are cut at 64 KiB: a stage's output must not grow strata (limits.rs).
    super::limits::for_each_line(reader, super::limits::MAX_LINE, |line| {
        let _ = log_file.write_all(line);
        let _ = log_file.write_all(b"\n");
        on_line(line);
    });
    let status = child.wait();
    groups().retain(|&g| g != pgid);
    watchdog.stop();
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
pub fn run_interactive(program: &OsStr, argv: &[OsString], tty: &std::fs::File) -> Outcome {
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
        Err(e) => Outcome::SpawnFailed(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", program.to_string_lossy()),
        )),
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

/// What a [`run`] child reads on stdin.
#[derive(Debug, Clone, Default)]
pub enum Stdin {
    /// Nothing (`/dev/null`).
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// strata's own stdin, passed through (the child then stays in strata's
    /// process group, so that it can read a terminal and the terminal's
    /// Ctrl-C reaches it).
    Inherit,
}

/// Where a [`run`] child's stdout and stderr go.
#[derive(Clone, Copy, Default)]
pub enum Output<'a> {
    /// Kept and returned.
    #[default]
    Capture,
    /// strata's own stdout and stderr, as they come.
    Inherit,
    /// Both into one log file, and each line handed to `on_line`: a
    /// stage's output ([`run_logged`]).
    Log {
        /// The log file.
        path: &'a Path,
        /// Gets each line (without its newline) as it comes.
        on_line: &'a (dyn Fn(&[u8]) + Sync),
    },
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Capture => f.write_str("Capture"),
            Output::Inherit => f.write_str("Inherit"),
            Output::Log { path, .. } => f
                .debug_struct("Log")
                .field("path", path)
                .finish_non_exhaustive(),
        }
    }
}

/// One program to run, outside of any stage log.
#[derive(Debug, Clone, Default)]
pub struct Invocation<'a> {
    /// The program (looked up on PATH).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its stdin.
    pub stdin: Stdin,
    /// Its stdout and stderr.
    pub output: Output<'a>,
    /// End its process group after this long.
    pub timeout: Option<Duration>,
    /// Runs even after Ctrl-C: clean-up (deleting an instance) must.
    pub cleanup: bool,
}

/// How a [`run`] ended and what it printed (empty unless captured).
#[derive(Debug)]
pub struct Ran {
    /// How it ended.
    pub outcome: Outcome,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}

/// Runs an [`Invocation`] to its end: the same process-group, Ctrl-C and
/// watchdog rules as stages, with stdout and stderr apart.
pub fn run(inv: &Invocation) -> Ran {
    let failed = |e: std::io::Error| Ran {
        outcome: Outcome::SpawnFailed(e),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if interrupted() && !inv.cleanup {
        return Ran {
            outcome: Outcome::Interrupted,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
    }
    if let Output::Log { path, on_line } = inv.output {
        let outcome = run_logged(inv.program.as_ref(), &inv.args, path, on_line, inv.timeout);
        return Ran {
            outcome,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
    }
    let mut cmd = Command::new(&inv.program);
    cmd.args(&inv.args);
    cmd.stdin(match inv.stdin {
        Stdin::Null => Stdio::null(),
        Stdin::Bytes(_) => Stdio::piped(),
        Stdin::Inherit => Stdio::inherit(),
    });
    let (out, err) = match inv.output {
        Output::Inherit => (Stdio::inherit(), Stdio::inherit()),
        _ => (Stdio::piped(), Stdio::piped()),
    };
    cmd.stdout(out).stderr(err);
    let own_group = !matches!(inv.stdin, Stdin::Inherit);
    if own_group {
        cmd.process_group(0);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let program = inv.program.to_string_lossy();
            return failed(std::io::Error::new(e.kind(), format!("{program}: {e}")));
        }
    };
    let pid = i32::try_from(child.id()).unwrap_or(0);
    if own_group && !inv.cleanup {
        groups().push(pid);
        if interrupted() {
            kill_group(pid);
        }
    }
    let feeder = match (&inv.stdin, child.stdin.take()) {
        (Stdin::Bytes(bytes), Some(mut pipe)) => {
            let bytes = bytes.clone();
            // A child that exits without reading gives EPIPE: not our error.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        pipe.map(|mut p| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = p.read_to_end(&mut buf);
                buf
            })
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let (timed_out, watchdog) = start_watchdog(pid, own_group, inv.timeout);
    let status = child.wait();
    if own_group && !inv.cleanup {
        groups().retain(|&g| g != pid);
    }
    watchdog.stop();
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let outcome = match status {
        _ if interrupted() && !inv.cleanup => Outcome::Interrupted,
        _ if timed_out.load(Ordering::SeqCst) => Outcome::TimedOut(inv.timeout.unwrap_or_default()),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Finished(code),
            (None, Some(sig)) => Outcome::Killed(sig),
            (None, None) => Outcome::Finished(-1),
        },
        Err(e) => Outcome::SpawnFailed(e),
    };
    Ran {
        outcome,
        stdout,
        stderr,
    }
}

/// Ends the child (its whole group when it has one) if it outlives `limit`.
struct Watchdog(Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>);

impl Watchdog {
    fn stop(self) {
        if let Some((done, thread)) = self.0 {
            drop(done);
            let _ = thread.join();
        }
    }
}

fn start_watchdog(pid: i32, group: bool, limit: Option<Duration>) -> (Arc<AtomicBool>, Watchdog) {
    let timed_out = Arc::new(AtomicBool::new(false));
    let Some(limit) = limit else {
        return (timed_out, Watchdog(None));
    };
    let (done, finished) = mpsc::channel::<()>();
    let flag = timed_out.clone();
    let thread = std::thread::spawn(move || {
        if finished.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            flag.store(true, Ordering::SeqCst);
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let kill = rustix::process::Signal::KILL;
                let _ = if group {
                    rustix::process::kill_process_group(pid, kill)
                } else {
                    rustix::process::kill_process(pid, kill)
                };
            }
        }
    });
    (timed_out, Watchdog(Some((done, thread))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, stdin: Stdin, timeout: Option<Duration>) -> Ran {
        run(&Invocation {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            stdin,
            timeout,
            ..Invocation::default()
        })
    }

    #[test]
    fn run_keeps_stdout_and_stderr_apart_and_feeds_stdin() {
        let ran = sh(
            "cat; echo err >&2; exit 3",
            Stdin::Bytes(b"in\n".to_vec()),
            None,
        );
        assert!(matches!(ran.outcome, Outcome::Finished(3)), "{ran:?}");
        assert_eq!(ran.stdout, b"in\n");
        assert_eq!(ran.stderr, b"err\n");
    }

    #[test]
    fn run_ends_the_whole_group_at_the_timeout() {
        let started = std::time::Instant::now();
        let ran = sh(
            "sleep 30 & sleep 30",
            Stdin::Null,
            Some(Duration::from_millis(200)),
        );
        assert!(matches!(ran.outcome, Outcome::TimedOut(_)), "{ran:?}");
        // The background sleep held stdout open too: it was ended with the group.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn run_reports_a_missing_program() {
        let ran = run(&Invocation {
            program: "strata-no-such-program".into(),
            ..Invocation::default()
        });
        assert!(matches!(ran.outcome, Outcome::SpawnFailed(_)), "{ran:?}");
    }
}
