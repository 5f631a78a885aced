//! The seam between strata and the incus CLI: every incus invocation is an
//! [`Invocation`] handed to a [`Cli`]. [`SystemCli`] runs it through the
//! sandbox's one spawner; [`RecordingCli`] records argv and answers from a
//! script, for tests where incus cannot run (VMs need vhost_vsock).

use crate::sandbox::process::{self, Invocation, Outcome, Ran};
use std::sync::Mutex;

/// Runs incus (and only incus) for the incus backends.
pub trait Cli: std::fmt::Debug + Send + Sync {
    /// Runs `inv` (its program is `incus`) to its end.
    fn run(&self, inv: &Invocation) -> Ran;
}

/// The real incus, through [`process::run`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemCli;

impl Cli for SystemCli {
    fn run(&self, inv: &Invocation) -> Ran {
        process::run(inv)
    }
}

/// A scripted answer: exit status and stdout.
pub type Answer = (i32, String);

type Script = Box<dyn Fn(&[String]) -> Answer + Send + Sync>;

/// Records every argv (program first) and answers with `script`.
pub struct RecordingCli {
    calls: Mutex<Vec<Vec<String>>>,
    script: Script,
}

impl std::fmt::Debug for RecordingCli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingCli")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl RecordingCli {
    /// Answers every call with `script(argv)`.
    pub fn new(script: impl Fn(&[String]) -> Answer + Send + Sync + 'static) -> RecordingCli {
        RecordingCli {
            calls: Mutex::new(Vec::new()),
            script: Box::new(script),
        }
    }

    /// The calls so far, each `program arg…`.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Cli for RecordingCli {
    fn run(&self, inv: &Invocation) -> Ran {
        let mut argv = vec![inv.program.to_string_lossy().into_owned()];
        argv.extend(inv.args.iter().map(|a| a.to_string_lossy().into_owned()));
        let (status, stdout) = (self.script)(&argv);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(argv);
        }
        Ran {
            outcome: Outcome::Finished(status),
            stdout: stdout.into_bytes(),
            stderr: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_cli_records_argv_and_answers_from_its_script() {
        let cli = RecordingCli::new(|argv| (argv.len() as i32, "ok".into()));
        let ran = cli.run(&Invocation {
            program: "incus".into(),
            args: vec!["list".into()],
            ..Invocation::default()
        });
        assert!(matches!(ran.outcome, Outcome::Finished(2)));
        assert_eq!(ran.stdout, b"ok");
        assert_eq!(cli.calls(), [["incus", "list"]]);
    }
}
