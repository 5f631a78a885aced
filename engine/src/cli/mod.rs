//! The command line, one room:
//!
//! ```text
//! mod.rs    the clap tree, main, the prologue of commands that build,
//!           and the one mapping from every error to its exit code (Failure)
//! build.rs  build, inspect          store.rs  store log|ls|du|gc|rm|fsck
//! task.rs   task compile|run        env.rs    env create|start|run|…|ls
//! docs.rs   man pages, completions, the exit-status table
//! io.rs     the one reader of "a file or -", and a stdout that may close early
//! ```
//!
//! Exit codes: the table in [`docs::EXIT_STATUS`] (0 success,
//! 1 build failure, 2 invalid manifest or usage, 130 interrupted, 141
//! stdout closed early), which `--help`, the man pages and the README give.

pub mod build;
pub mod docs;
pub mod env;
pub mod io;
pub mod store;
pub mod task;

use crate::backend::BackendError;
use crate::catalog::Catalog;
use crate::exec::BuildError;
use crate::manifest::ManifestError;
use crate::sandbox::userns::UsernsError;
use crate::store::StoreError;
use crate::task::TaskError;
use build::{BuildArgs, InspectArgs};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use store::StoreCommand;

/// strata builds Debian systems, images and packages from JSON manifests.
#[derive(Debug, Parser)]
#[command(name = "strata", version = env!("STRATA_VERSION"), about,
          after_help = self::docs::EXIT_STATUS)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a manifest.
    Build(BuildArgs),
    /// Print a manifest back with the id of every stage and pipeline.
    Inspect(InspectArgs),
    /// Look into the object store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// debusine task documents (SystemBootstrap, PackageBuild, Lintian).
    #[command(subcommand)]
    Task(self::task::TaskCommand),
    /// Execution environments: containers from systems strata built, and
    /// the systems tasks run in (`env ls`).
    #[command(subcommand)]
    Env(self::env::EnvCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(self::docs::CompletionsArgs),
    /// Write a man page per command into DIR (for packaging: `make install` runs it).
    #[command(hide = true)]
    Manpages(self::docs::ManpagesArgs),
}

/// A size flag's value: bytes, or `None` for `unlimited`.
#[derive(Debug, Clone, Copy)]
pub struct SizeArg(Option<u64>);

fn parse_size(text: &str) -> Result<SizeArg, String> {
    crate::store::gc::parse_size(text).map(SizeArg)
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Build(args) => build::build(args),
        Command::Inspect(args) => build::inspect(args),
        Command::Store(cmd) => store::main(cmd),
        Command::Task(cmd) => self::task::task_main(cmd),
        Command::Env(cmd) => self::env::main(cmd),
        Command::Completions(args) => self::docs::completions(&args),
        Command::Manpages(args) => self::docs::manpages(&args),
    }
}

/// Where the manifest comes from and where stages are found.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The manifest file, or `-` for stdin (what a missing MANIFEST means when stdin is not a terminal).
    #[arg(value_name = "MANIFEST")]
    pub manifest: Option<String>,
    /// Extra stage and runner search path (DIR/stages, DIR/schemas/stages, DIR/runners); repeatable.
    #[arg(long = "libdir", value_name = "DIR")]
    pub libdirs: Vec<PathBuf>,
    /// Let a --libdir stage or runner shadow the built-in one of its name.
    #[arg(long)]
    pub allow_shadow: bool,
}

impl ManifestArgs {
    /// The stages and runners these arguments name.
    pub fn catalog(&self) -> Catalog {
        Catalog::new(self.libdirs.clone()).allowing_shadow(self.allow_shadow)
    }
}

/// What every command that builds or opens stored trees does first: a
/// mount namespace of its own (its overlay mounts die with it, however it
/// ends) — before any thread, since the namespace is per thread — then the
/// Ctrl-C handler. Returns the exit code when it cannot.
pub fn prologue() -> Result<(), i32> {
    if let Err(e) = crate::store::layers::enter_private_namespace() {
        return Err(fail(&e));
    }
    crate::sandbox::process::install_interrupt_handler();
    Ok(())
}

/// An error a command ends with: how it is said, and its exit code. The
/// one mapping from every error type to an exit code (the table in
/// [`docs::EXIT_STATUS`]).
pub trait Failure: std::fmt::Display {
    /// The process's exit code.
    fn exit_code(&self) -> i32;
}

impl Failure for BuildError {
    fn exit_code(&self) -> i32 {
        BuildError::exit_code(self)
    }
}

impl Failure for TaskError {
    fn exit_code(&self) -> i32 {
        TaskError::exit_code(self)
    }
}

impl Failure for UsernsError {
    fn exit_code(&self) -> i32 {
        1
    }
}

impl Failure for ManifestError {
    fn exit_code(&self) -> i32 {
        2
    }
}

impl Failure for StoreError {
    fn exit_code(&self) -> i32 {
        match self {
            // An id that names nothing: the command line is wrong.
            StoreError::NotFound(_) => 2,
            _ => 1,
        }
    }
}

impl Failure for BackendError {
    fn exit_code(&self) -> i32 {
        match self {
            BackendError::NoSuchEnvironment(_)
            | BackendError::AlreadyExists(_)
            | BackendError::PathNotAbsolute(_)
            | BackendError::UnknownBackend(_)
            | BackendError::Invalid(_)
            | BackendError::EmptyCommand => 2,
            BackendError::Interrupted => 130,
            BackendError::TimedOut { .. } => 124,
            BackendError::CommandNotFound { .. } => 127,
            _ => 1,
        }
    }
}

/// A usage error said in words: exit 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Failure for Usage {
    fn exit_code(&self) -> i32 {
        2
    }
}

/// Says `e` once on stderr and returns its exit code.
pub fn fail(e: &dyn Failure) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}
