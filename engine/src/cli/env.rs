//! `strata env`: execution environments for people and scripts.
//!
//! Exit codes: 0 success; for `run`, the command's own status (124 when it
//! timed out, 127 when it is not found); 1 a backend failure; 2 usage (no
//! such environment, a bad path or name).

use crate::backend::cli::SystemCli;
use crate::backend::envs;
use crate::backend::incus::check_name;
use crate::backend::{
    Backend, BackendError, ExecutionEnvironment, Owner, RunOptions, Specials, Stdin, User,
};
use crate::catalog::Catalog;
use crate::store::{DEFAULT_LOCK_TIMEOUT, Store};
use crate::system::Image;
use crate::system::Source;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `strata env …`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Make an environment from a pipeline's system, a system tarball or an incus image.
    Create(CreateArgs),
    /// Start (boot) an environment.
    Start(NameArgs),
    /// Run a command inside: `strata env run NAME -- ARGV…` (its exit status is strata's).
    Run(RunArgs),
    /// Copy a host file (or folder) into the environment.
    Push(PushArgs),
    /// Copy a file (or with -r a folder) out of the environment into a host folder.
    Pull(PullArgs),
    /// Stop an environment: gracefully, killed after its stop timeout.
    Stop(NameArgs),
    /// Destroy an environment and forget it.
    Delete(NameArgs),
    /// List the environments of the store (created with `env create`).
    List(ListArgs),
    /// List the systems the store holds that tasks can run in (debusine environments).
    Ls(LsArgs),
    /// Remove incus instances and images this store left behind.
    Gc(StoreArg),
}

/// The store.
#[derive(Debug, Args)]
pub struct StoreArg {
    /// The object store [default: as for build].
    #[arg(long, value_name = "DIR", global = true)]
    store: Option<PathBuf>,
}

/// `strata env ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON rather than a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// An environment by name.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The environment.
    name: String,
    #[command(flatten)]
    store: StoreArg,
}

/// `strata env create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The environment's name (letters, digits, `-`).
    name: String,
    /// The manifest holding the system's pipeline (with --pipeline).
    #[arg(value_name = "MANIFEST", requires = "pipeline")]
    manifest: Option<PathBuf>,
    /// The pipeline whose tree is the system.
    #[arg(long, value_name = "NAME", requires = "manifest")]
    pipeline: Option<String>,
    /// A system tarball instead of a pipeline.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["manifest", "image"])]
    tarball: Option<PathBuf>,
    /// An image incus already has (incus backends).
    #[arg(long, value_name = "ALIAS", conflicts_with = "manifest")]
    image: Option<String>,
    /// unshare (bwrap), incus-lxc, incus-vm, qemu (a pipeline that makes a disk image).
    #[arg(long, default_value = "unshare")]
    backend: String,
    /// Start it as well.
    #[arg(long)]
    start: bool,
    /// Seconds `stop` waits before it kills.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    stop_timeout: u64,
    /// Extra stage search path, as for build; repeatable.
    #[arg(long = "libdir", value_name = "DIR")]
    libdirs: Vec<PathBuf>,
    /// Print only errors.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// `strata env run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The environment.
    name: String,
    /// Working directory inside (absolute).
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// KEY=VALUE added to the command's environment; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run as the unprivileged user the environment made.
    #[arg(long)]
    unprivileged: bool,
    /// End the command after this many seconds (exit 124).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    argv: Vec<String>,
    #[command(flatten)]
    store: StoreArg,
}

/// `strata env push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The environment.
    name: String,
    /// The host file or folder.
    host: PathBuf,
    /// Where inside (absolute).
    target: String,
    /// The file's mode, octal.
    #[arg(long, default_value = "644")]
    mode: String,
    /// Owner inside, UID:GID.
    #[arg(long, default_value = "0:0")]
    owner: String,
    #[command(flatten)]
    store: StoreArg,
}

/// `strata env pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The environment.
    name: String,
    /// The file (or folder, with -r) inside.
    source: String,
    /// The host folder it lands in (as FOLDER/BASENAME).
    folder: PathBuf,
    /// Pull a folder.
    #[arg(short, long)]
    recursive: bool,
    /// Also recreate device nodes, FIFOs and sockets, and keep setuid/setgid
    /// bits and file capabilities (left behind by default: on the host they
    /// are privileges the environment would hand out).
    #[arg(long)]
    specials: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// `strata env list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON document on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

fn store(arg: &StoreArg) -> PathBuf {
    arg.store.clone().unwrap_or_else(crate::store::default_root)
}

/// The store, made if it is not there yet.
fn open_store(arg: &StoreArg) -> Result<Store, BackendError> {
    Ok(Store::open(&store(arg), DEFAULT_LOCK_TIMEOUT)?)
}

/// Environment `name` and its store. A store that is not there holds no
/// environment, and asking for one makes no store.
fn open_env(
    arg: &StoreArg,
    name: &str,
) -> Result<(Store, Box<dyn ExecutionEnvironment>), BackendError> {
    check_name(name)?;
    let Some(store) = Store::open_existing(&store(arg), DEFAULT_LOCK_TIMEOUT)? else {
        return Err(BackendError::NoSuchEnvironment(name.to_owned()));
    };
    let env = envs::open(&store, name)?;
    Ok((store, env))
}

/// Runs `strata env …`; returns the exit code.
pub fn main(cmd: EnvCommand) -> i32 {
    if let EnvCommand::Ls(a) = cmd {
        return super::task::env_ls(a.store.store, a.json);
    }
    // Stored systems are read through overlay mounts: like a build.
    if let Err(code) = super::prologue() {
        return code;
    }
    match run(cmd) {
        Ok(code) => code,
        Err(e) => super::fail(&e),
    }
}

fn run(cmd: EnvCommand) -> Result<i32, BackendError> {
    match cmd {
        EnvCommand::Create(a) => create(a),
        EnvCommand::Ls(_) => unreachable!("main answers `env ls` itself"),
        EnvCommand::Start(a) => {
            let (st, mut env) = open_env(&a.store, &a.name)?;
            let result = env.start();
            envs::save(&st, env.state())?;
            result.map(|()| 0)
        }
        EnvCommand::Stop(a) => {
            let (st, mut env) = open_env(&a.store, &a.name)?;
            let how = env.stop()?;
            envs::save(&st, env.state())?;
            if how == crate::backend::Stopped::Killed {
                eprintln!(
                    "{}: did not stop within {}s and was killed",
                    a.name,
                    env.state().stop_timeout
                );
            }
            Ok(0)
        }
        EnvCommand::Delete(a) => {
            let (st, _) = open_env(&a.store, &a.name)?;
            envs::delete(&st, &a.name).map(|()| 0)
        }
        EnvCommand::Run(a) => run_command(a),
        EnvCommand::Push(a) => {
            let (_st, env) = open_env(&a.store, &a.name)?;
            if a.host.is_dir() {
                env.dir_push(&a.host, &a.target)?;
            } else {
                let mode = u32::from_str_radix(&a.mode, 8).map_err(|_| {
                    BackendError::Invalid(format!("--mode `{}` is not an octal mode", a.mode))
                })?;
                let owner = parse_owner(&a.owner)?;
                env.file_push(&a.host, &a.target, mode, owner)?;
            }
            Ok(0)
        }
        EnvCommand::Pull(a) => {
            let (_st, env) = open_env(&a.store, &a.name)?;
            let specials = if a.specials {
                Specials::Keep
            } else {
                Specials::Drop
            };
            let pulled = if a.recursive {
                env.dir_pull(&a.source, &a.folder, specials)?
            } else {
                env.file_pull(&a.source, &a.folder, specials)?
            };
            if pulled.left_out + pulled.cleared > 0 {
                eprintln!(
                    "note: {} device nodes, FIFOs or sockets left out; setuid/setgid or capabilities cleared on {} files (--specials keeps them)",
                    pulled.left_out, pulled.cleared
                );
            }
            super::io::out(pulled.path.display());
            Ok(0)
        }
        EnvCommand::List(a) => {
            let all = match Store::open_existing(&store(&a.store), DEFAULT_LOCK_TIMEOUT)? {
                Some(st) => envs::list(&st)?,
                None => Vec::new(),
            };
            if a.json {
                super::io::out(serde_json::to_string_pretty(&all).expect("states are JSON"));
            } else {
                for s in &all {
                    super::io::out(format!(
                        "{}\t{}\t{}\t{}",
                        s.name,
                        s.backend,
                        if s.running { "running" } else { "stopped" },
                        s.origin
                    ));
                }
            }
            Ok(0)
        }
        EnvCommand::Gc(a) => {
            // Made if missing: instances of a store that was removed are
            // still marked with its path, and collected here.
            let st = open_store(&a)?;
            let all = envs::list(&st)?;
            let gone = crate::backend::incus::gc(st.root(), &SystemCli, &all)?;
            for i in &gone.instances {
                super::io::out(format!("instance {i}"));
            }
            for i in &gone.images {
                super::io::out(format!("image {i}"));
            }
            Ok(0)
        }
    }
}

fn parse_owner(s: &str) -> Result<Owner, BackendError> {
    let bad = || BackendError::Invalid(format!("--owner `{s}` is not UID:GID"));
    let (u, g) = s.split_once(':').ok_or_else(bad)?;
    Ok(Owner {
        uid: u.parse().map_err(|_| bad())?,
        gid: g.parse().map_err(|_| bad())?,
    })
}

fn create(a: CreateArgs) -> Result<i32, BackendError> {
    let st = open_store(&a.store)?;
    let backend = Backend::parse(&a.backend)?;
    let image = match (&a.manifest, &a.pipeline, &a.tarball, &a.image) {
        (Some(manifest), Some(pipeline), None, None) => {
            let text = fs_err::read_to_string(manifest)?;
            Image::Build(Source::Pipeline {
                text,
                origin: manifest.display().to_string(),
                name: pipeline.clone(),
            })
        }
        (None, None, Some(tarball), None) => Image::Build(Source::Tarball(tarball.clone())),
        (None, None, None, Some(alias)) => Image::Alias(alias.clone()),
        _ => {
            return Err(BackendError::Invalid(
                "strata env create needs MANIFEST --pipeline NAME, --tarball FILE or --image ALIAS"
                    .into(),
            ));
        }
    };
    let catalog = Catalog::new(a.libdirs.clone());
    let mut env = crate::system::create_env(
        &st,
        &catalog,
        &a.name,
        backend,
        &image,
        Arc::new(SystemCli),
        a.quiet,
    )?;
    let mut state = env.state().clone();
    state.stop_timeout = a.stop_timeout;
    envs::save(&st, &state)?;
    if a.start {
        env = crate::backend::open(state, &st)?;
        let result = env.start();
        envs::save(&st, env.state())?;
        result?;
    }
    Ok(0)
}

fn run_command(a: RunArgs) -> Result<i32, BackendError> {
    let (st, env) = open_env(&a.store, &a.name)?;
    // The command may run for hours, and it uses nothing a collection
    // removes (the environment's tree is its own copy, an instance has its
    // own image): `strata store gc` need not wait for it.
    st.unlock();
    let mut vars = Vec::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(BackendError::Invalid(format!(
                "--env `{kv}` is not KEY=VALUE"
            )));
        };
        vars.push((k.to_owned(), v.to_owned()));
    }
    let opts = RunOptions {
        cwd: a.cwd.clone(),
        env: vars,
        stdin: Stdin::Inherit,
        capture: false,
        timeout: a.timeout.map(Duration::from_secs_f64),
        user: if a.unprivileged {
            User::Unprivileged
        } else {
            User::Root
        },
    };
    Ok(env.run(&a.argv, &opts)?.status)
}
