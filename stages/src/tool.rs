//! The one place stages start programs: the build root's tools (cp, tar,
//! dpkg, apt, lintian, mmdebstrap), so that their failure reads as the
//! stage's failure: the program, how it ended, and what it said.
//!
//! ```text
//!   run(cmd)        stdout -> the stage's log; stderr kept for the error, then logged
//!   feed(cmd, text) run(cmd) with `text` as its stdin (sfdisk's script)
//!   feed_stderr     feed, stdout dropped, stderr given back (debugfs -f)
//!   status(cmd)     stdout, stderr -> the stage's log, as they are; how it ended
//!   capture(cmd)    stdout -> a String;        stderr kept for the error
//!   Log::run(cmd)   stdout+stderr, as they come -> the stage's log [+ a file]; last lines kept
//! ```

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::Error;

/// A program a stage ran that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot run {program} (is it installed in the build root?): {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },

    #[error("cannot wait for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },

    #[error("{program} failed ({status}){}", said(stderr))]
    Exit {
        program: String,
        status: ExitStatus,
        stderr: String,
    },
}

fn said(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl Failure {
    pub fn spawn(program: &str, source: std::io::Error) -> Self {
        Self::Spawn {
            program: program.to_owned(),
            source,
        }
    }

    pub fn wait(program: &str, source: std::io::Error) -> Self {
        Self::Wait {
            program: program.to_owned(),
            source,
        }
    }

    /// `Ok` if `status` is success; else a failure carrying `stderr`, its
    /// lines joined so the stage's one error line holds all of it.
    pub fn check(program: &str, status: ExitStatus, stderr: &[u8]) -> Result<(), Self> {
        if status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(stderr);
        Err(Self::Exit {
            program: program.to_owned(),
            status,
            stderr: stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// Runs `cmd` to its end with no stdin and stdout going to the stage's log.
/// Its stderr is kept for the error, and passed on to the log when it
/// succeeds (warnings still belong there).
pub fn run(cmd: &mut Command) -> Result<(), Failure> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Failure::spawn(&program(cmd), e))?;
    Failure::check(&program(cmd), out.status, &out.stderr)?;
    if !out.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// [`run`] with `input` as the program's stdin, for tools that read their
/// instructions there (sfdisk's script).
pub fn feed(cmd: &mut Command, input: &[u8]) -> Result<(), Failure> {
    let out = fed(cmd, input, Stdio::inherit())?;
    if !out.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// [`feed`] for a tool that echoes every instruction (debugfs -f): its
/// stdout is dropped, and its stderr given back, for tools that say there
/// what failed and still exit 0.
pub fn feed_stderr(cmd: &mut Command, input: &[u8]) -> Result<String, Failure> {
    let out = fed(cmd, input, Stdio::null())?;
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn fed(cmd: &mut Command, input: &[u8], stdout: Stdio) -> Result<std::process::Output, Failure> {
    let program = program(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::spawn(&program, e))?;
    // Written from a thread: a tool that answers while it reads would
    // otherwise fill its stderr pipe and wait on us as we wait on it.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // A tool that stops reading early says why on stderr, and its
        // exit status tells; a broken pipe here adds nothing to that.
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| Failure::wait(&program, e))?;
    let _ = writer.join();
    Failure::check(&program, out.status, &out.stderr)?;
    Ok(out)
}

/// Runs `cmd` to its end with no stdin and both its streams the stage's
/// own, and gives how it ended. For what runs long and says much (a
/// user's script): nothing is kept, and a process it leaves behind holding
/// the streams does not keep the stage waiting.
pub fn status(cmd: &mut Command) -> Result<ExitStatus, Failure> {
    cmd.stdin(Stdio::null())
        .status()
        .map_err(|e| Failure::spawn(&program(cmd), e))
}

/// Runs `cmd` to its end with no stdin and gives its stdout (lossy UTF-8,
/// as printed); its stderr is kept for the error.
pub fn capture(cmd: &mut Command) -> Result<String, Failure> {
    let out = output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to its end with no stdin and gives its stdout, byte for
/// byte; its stderr is kept for the error, and passed on to the log when
/// it succeeds.
pub fn capture_logged(cmd: &mut Command) -> Result<Vec<u8>, Failure> {
    let out = output(cmd)?;
    if !out.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn output(cmd: &mut Command) -> Result<std::process::Output, Failure> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Failure::spawn(&program(cmd), e))?;
    Failure::check(&program(cmd), out.status, &out.stderr)?;
    Ok(out)
}

/// A log of what commands say, both streams as they come, passed on to
/// the stage's stdout (the engine's log of the stage) and to a file when
/// there is one; the last lines are kept to explain a failure.
#[derive(Debug)]
pub struct Log {
    file: Option<(std::fs::File, String)>,
    /// Marks the stage's own lines (`strata-build:`).
    prefix: &'static str,
    tail: VecDeque<String>,
    keep: usize,
    partial: Vec<u8>,
}

impl Log {
    /// A log to the stage's stdout only, keeping the last `keep` lines.
    pub fn new(prefix: &'static str, keep: usize) -> Self {
        Self {
            file: None,
            prefix,
            tail: VecDeque::new(),
            keep,
            partial: Vec::new(),
        }
    }

    /// A log that is also written to the new file `path`.
    pub fn to_file(path: &Path, prefix: &'static str, keep: usize) -> Result<Self, Error> {
        let file = std::fs::File::create(path).map_err(|source| Error::Io {
            what: "cannot create the log",
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            file: Some((file, path.display().to_string())),
            ..Self::new(prefix, keep)
        })
    }

    /// Lines of the stage's own, each marked with the prefix.
    pub fn say(&mut self, text: &str) -> Result<(), Error> {
        let mut text = text
            .trim_end()
            .lines()
            .map(|l| format!("{}: {l}\n", self.prefix))
            .collect::<String>();
        if text.is_empty() {
            text = format!("{}:\n", self.prefix);
        }
        self.record(text.as_bytes())
    }

    /// Says what it runs, runs `cmd` with both its streams into the log,
    /// and fails unless it exits 0.
    pub fn run(&mut self, cmd: &mut Command) -> Result<(), Error> {
        let shown: Vec<String> = std::iter::once(program(cmd))
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        self.say(&format!("running {}", shown.join(" ")))?;
        let status = self.stream(cmd)?;
        Ok(Failure::check(&program(cmd), status, b"")?)
    }

    /// Runs `cmd` with both its streams into the log, and gives how it
    /// ended: the caller explains a failure (from [`Log::tail`]).
    pub fn stream(&mut self, cmd: &mut Command) -> Result<ExitStatus, Error> {
        let program = program(cmd);
        let pipe_error = |source| Error::Io {
            what: "cannot make a pipe for",
            path: program.clone(),
            source,
        };
        let (mut reader, writer) = std::io::pipe().map_err(pipe_error)?;
        let writer2 = writer.try_clone().map_err(pipe_error)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .spawn();
        // The command keeps the pipe's writing ends until told otherwise,
        // and the read below would never see the end of the output.
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = child.map_err(|e| Failure::spawn(&program, e))?;
        let mut buf = [0u8; 1 << 14];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.record(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        what: "cannot read the output of",
                        path: program,
                        source,
                    });
                }
            }
        }
        self.end_line()?;
        Ok(child.wait().map_err(|e| Failure::wait(&program, e))?)
    }

    fn record(&mut self, bytes: &[u8]) -> Result<(), Error> {
        // The stage's stdout is a convenience: a closed one must not stop
        // the work. The file, when there is one, is the log itself.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
        if let Some((file, path)) = &mut self.file {
            file.write_all(bytes).map_err(|source| Error::Io {
                what: "cannot write the log",
                path: path.clone(),
                source,
            })?;
        }
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).trim_end().to_owned();
                self.partial.clear();
                self.tail.push_back(line);
                if self.tail.len() > self.keep {
                    self.tail.pop_front();
                }
            } else {
                self.partial.push(b);
            }
        }
        Ok(())
    }

    /// Ends a last line the command left open, so the next one starts clean.
    fn end_line(&mut self) -> Result<(), Error> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            self.record(b"\n")
        }
    }

    /// The last lines, joined by newlines.
    pub fn tail(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The program `cmd` runs, as messages name it.
pub fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_last_lines_of_what_ran() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.build");
        let mut log = Log::to_file(&path, "strata-build", 25).unwrap();
        log.run(Command::new("sh").args(["-c", "seq 1 30; echo oops >&2; printf tail"]))
            .unwrap();
        let e = log
            .run(Command::new("sh").args(["-c", "exit 3"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "sh failed (exit status: 3)");
        let tail = log.tail();
        assert_eq!(tail.lines().count(), 25);
        assert!(
            tail.contains("\noops\ntail\nstrata-build: running sh -c exit 3"),
            "{tail}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("strata-build: running sh -c seq 1 30"),
            "{text}"
        );
        assert!(text.contains("\n1\n2\n"));
        let e = log
            .run(&mut Command::new("/nonexistent/tool"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot run /nonexistent/tool"), "{e}");
    }

    #[test]
    fn a_streamed_command_gives_its_status_and_all_it_said() {
        let mut log = Log::new("x", usize::MAX);
        let status = log
            .stream(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 4"]))
            .unwrap();
        assert_eq!(status.code(), Some(4));
        assert_eq!(log.tail(), "out\nerr");
    }

    #[test]
    fn capture_gives_stdout_or_the_failure_with_stderr() {
        assert_eq!(
            capture(Command::new("sh").args(["-c", "echo ' a '"])).unwrap(),
            " a \n"
        );
        let e = capture(Command::new("sh").args(["-c", "echo no >&2; echo more >&2; exit 2"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "sh failed (exit status: 2): no; more");
    }
}
