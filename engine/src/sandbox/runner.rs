//! The one seam every stage is started through.
//!
//! ```text
//! scheduler ── StageSpec (root, mounts: tree, inputs, args; network, env, limits)
//!     │
//!     ▼
//! dyn StageRunner ── Bwrap            bubblewrap here (Root::Copy: an overlay
//!     │                               mounted in a namespace of its own first)
//!     └───────────── backend runners  e.g. an incus container (backend/stage.rs)
//! ```
//!
//! The scheduler never knows which runner it has: it asks the backend room
//! for one per pipeline and hands it specs. A new runner is a new
//! implementation of [`StageRunner`] and an arm where runners are chosen.

use super::StageSpec;
use super::process::{self, Outcome};
use std::ffi::OsString;
use std::path::Path;

/// Why a runner could not run a stage (the stage itself failing is an
/// [`Outcome`], not this).
pub type RunnerError = Box<dyn std::error::Error + Send + Sync>;

/// Where a stage's output goes: the log file, and each line to `on_line`
/// (the monitor's log events).
// `on_line` is a closure, which has no Debug.
#[allow(missing_debug_implementations)]
pub struct StageLog<'a> {
    /// The stage log.
    pub path: &'a Path,
    /// Gets each line of the stage's output.
    pub on_line: &'a (dyn Fn(&[u8]) + Sync),
}

/// Starts stages.
pub trait StageRunner: std::fmt::Debug + Send + Sync {
    /// Runs the stage `spec` describes, its output into `log`.
    fn run(&self, spec: &StageSpec, log: &StageLog<'_>) -> Result<Outcome, RunnerError>;

    /// An interactive shell in the same sandbox, on the terminal `tty`
    /// (`--break`).
    fn shell(&self, spec: &StageSpec, tty: &std::fs::File) -> Result<Outcome, RunnerError>;

    /// Whether the runner sees strata's mounts and starts stages in the
    /// stages' user namespace (userns.rs). One that does not (a container
    /// started by a daemon, which shifts owners itself) needs the tree and
    /// inputs as plain directories with in-tree owners.
    fn sees_our_mounts(&self) -> bool {
        true
    }
}

/// bubblewrap on this machine: the default runner.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bwrap;

impl Bwrap {
    /// The program and its arguments for `spec`: bwrap, behind `unshare`
    /// when an overlay is mounted first, behind the network wrapper when
    /// the stage gets a network of its own (net.rs). Inside, bwrap starts
    /// the stage through `enter` (userns.rs), which bwrap_argv adds.
    fn command(spec: &StageSpec) -> Result<(OsString, Vec<OsString>), RunnerError> {
        super::userns::require_entry()?;
        // Before bwrap follows any path in the tree (places.rs).
        let places = spec.places()?;
        let (program, argv) = match &spec.root {
            super::Root::Copy(overlay) => ("unshare", overlay.wrap(spec.bwrap_argv(&places))),
            _ => ("bwrap", spec.bwrap_argv(&places)),
        };
        Ok(if spec.network && super::net::private_network() {
            super::net::wrap(program, argv, &spec.loopback_ports)
        } else {
            (program.into(), argv)
        })
    }
}

impl StageRunner for Bwrap {
    fn run(&self, spec: &StageSpec, log: &StageLog<'_>) -> Result<Outcome, RunnerError> {
        let (program, argv) = Bwrap::command(spec)?;
        Ok(process::run_logged(
            &program,
            &argv,
            log.path,
            log.on_line,
            spec.limits.timeout,
        ))
    }

    fn shell(&self, spec: &StageSpec, tty: &std::fs::File) -> Result<Outcome, RunnerError> {
        let (program, argv) = Bwrap::command(spec)?;
        Ok(process::run_interactive(&program, &argv, tty))
    }
}
