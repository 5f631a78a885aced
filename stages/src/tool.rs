//! Running the build root's tools (cp, tar, compressors) so that their
//! failure reads as the stage's failure: the program, how it ended, and what
//! it said on stderr.

use std::process::{Command, ExitStatus, Stdio};

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

/// The program `cmd` runs, as messages name it.
pub fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}
