//! The command line: `strata build`, `inspect`, `store`, `task` and `env`
//! (in [`crate::cli_env`]).
//!
//! Exit codes: 0 success, 1 build failure, 2 invalid manifest or usage,
//! 130 interrupted.

use crate::catalog::Catalog;
use crate::exec::{self, BuildOptions};
use crate::manifest::{self, Manifest, ManifestError};
use crate::monitor::{self, Event, JsonSeq, Live, Monitor, Plain, Sink, Verbosity};
use crate::plan::Plan;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

/// strata builds Debian systems, images and packages from JSON manifests.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
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
    Task(crate::task::command::TaskCommand),
    /// Execution environments: containers from systems strata built, and
    /// the systems tasks run in (`env ls`).
    #[command(subcommand)]
    Env(crate::cli_env::EnvCommand),
}

/// `strata store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Print the log a stored stage wrote when it ran.
    Log {
        /// The stage id (or a unique prefix of it).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List what the store holds, least recently used first: id, pipeline/stage, size, last use.
    Ls {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the store's size, its limit, and how many objects and sources it holds.
    Du {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove least recently used entries until the store fits its limit (waits for running builds).
    Gc {
        /// The limit for this collection [default: the one the store remembers].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<SizeArg>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a stored object and the objects that stand on it (waits for running builds).
    Rm {
        /// The stage id (or a unique prefix of it).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store, and how long to wait for it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The object store [default: as for build].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Give up waiting for a store or object lock after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    lock_timeout: u64,
}

/// A size flag's value: bytes, or `None` for `unlimited`.
#[derive(Debug, Clone, Copy)]
pub struct SizeArg(Option<u64>);

fn parse_size(text: &str) -> Result<SizeArg, String> {
    crate::store::gc::parse_size(text).map(SizeArg)
}

/// Formats of `--monitor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MonitorFormat {
    /// RFC 7464 JSON text sequences: each event is RS, JSON, LF.
    JsonSeq,
}

/// Where the manifest comes from and where stages are found.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The manifest file, or `-` (the default) for stdin.
    #[arg(value_name = "MANIFEST", default_value = "-")]
    pub manifest: String,
    /// Extra stage and runner search path (DIR/stages, DIR/schemas/stages, DIR/runners); repeatable.
    #[arg(long = "libdir", value_name = "DIR")]
    pub libdirs: Vec<PathBuf>,
    /// Let a --libdir stage or runner shadow the built-in one of its name.
    #[arg(long)]
    pub allow_shadow: bool,
}

/// `strata build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// The object store [default: $STRATA_STORE, else /var/cache/strata as root, else $XDG_CACHE_HOME/strata].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Keep these stages in the store: a pipeline name (its last stage), a stage id, a stage type or a glob; repeatable (every stage is kept unless --no-checkpoint).
    #[arg(long = "checkpoint", value_name = "PATTERN")]
    checkpoints: Vec<String>,
    /// Keep only the stages --checkpoint names (by default every stage is kept: each costs only what it changed).
    #[arg(long)]
    no_checkpoint: bool,
    /// Limit the store to SIZE (bytes, kB, KiB, MB, MiB, GB, GiB, TB, TiB, or `unlimited`); remembered by the store.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    cache_max_size: Option<SizeArg>,
    /// Give up waiting for a store or object lock after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    lock_timeout: u64,
    /// Copy this pipeline's final tree to OUTPUT/NAME; repeatable.
    #[arg(long = "export", value_name = "NAME")]
    exports: Vec<String>,
    /// Where exports go.
    #[arg(long, value_name = "DIR")]
    output_directory: Option<PathBuf>,
    /// Print a JSON result document on stdout.
    #[arg(long)]
    json: bool,
    /// Print only errors.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Print every stage's full log (when stderr is not a terminal it is always printed).
    #[arg(short, long)]
    verbose: bool,
    /// End a stage that runs longer than this many seconds (a build failure).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    stage_timeout: Option<u64>,
    /// Run up to N independent pipelines at once [default: the number of cores].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// After a failure, finish the pipelines that do not need the failed one.
    #[arg(short, long)]
    keep_going: bool,
    /// Write events for programs to stdout in this format (or to --monitor-fd).
    #[arg(long, value_name = "FORMAT")]
    monitor: Option<MonitorFormat>,
    /// Write the --monitor events to this open file descriptor instead of stdout.
    #[arg(long, value_name = "N")]
    monitor_fd: Option<u32>,
    /// Open a shell in this stage's sandbox before it runs: a pipeline name (its last stage), a stage id, type or glob; repeatable.
    #[arg(long = "break", value_name = "STAGE")]
    breaks: Vec<String>,
    /// Keep a failed stage's tree, inputs, arguments and log in the store, and print where.
    #[arg(long)]
    keep_failed: bool,
}

/// `strata inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
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
        Command::Build(args) => build(args),
        Command::Inspect(args) => inspect(args),
        Command::Store(cmd) => store_command(cmd),
        Command::Task(cmd) => crate::task::command::task_main(cmd),
        Command::Env(cmd) => crate::cli_env::main(cmd),
    }
}

/// The manifest, or the exit code and the error (already printed).
fn read_manifest(args: &ManifestArgs, catalog: &Catalog) -> Result<Manifest, (i32, String)> {
    let fail = |message: String| {
        eprintln!("error: {message}");
        (2, message)
    };
    let (text, origin) = if args.manifest == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            return Err(fail(format!("reading the manifest from stdin: {e}")));
        }
        (text, "<stdin>".to_owned())
    } else {
        match fs_err::read_to_string(&args.manifest) {
            Ok(text) => (text, args.manifest.clone()),
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    manifest::load(&text, &origin, catalog).map_err(|e: ManifestError| fail(e.to_string()))
}

fn inspect(args: InspectArgs) -> i32 {
    let catalog =
        Catalog::new(args.manifest.libdirs.clone()).allowing_shadow(args.manifest.allow_shadow);
    let m = match read_manifest(&args.manifest, &catalog) {
        Ok(m) => m,
        Err((code, _)) => return code,
    };
    let plan = Plan::new(&m);
    println!(
        "{}",
        serde_json::to_string_pretty(&plan.describe(&m)).expect("json")
    );
    0
}

/// The monitor `strata build` asked for: a human view on stderr (live on
/// a terminal, plain lines otherwise, none when quiet) and the json-seq
/// events when `--monitor` or `--monitor-fd` is given.
fn make_monitor(args: &BuildArgs) -> Result<Monitor, String> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if !args.quiet {
        let verbosity = if args.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        // A --break shell takes the terminal, so the live view stays out of its way.
        if std::io::stderr().is_terminal() && args.breaks.is_empty() {
            sinks.push(Box::new(Live::new(verbosity, monitor::color_allowed())));
        } else {
            sinks.push(Box::new(Plain::new()));
        }
    }
    match (args.monitor, args.monitor_fd) {
        (_, Some(fd)) => sinks.push(Box::new(JsonSeq::on_fd(fd).map_err(|e| e.to_string())?)),
        (Some(MonitorFormat::JsonSeq), None) => {
            if args.json {
                return Err("--monitor json-seq and --json both want stdout\n    hint: send the events elsewhere with --monitor-fd N".into());
            }
            sinks.push(Box::new(JsonSeq::new(Box::new(std::io::stdout()))));
        }
        (None, None) => {}
    }
    let wants_logs = !sinks.is_empty();
    Ok(Monitor::new(sinks, wants_logs))
}

fn build(args: BuildArgs) -> i32 {
    // First, before the interrupt handler's thread: the namespace is per
    // thread, and every mount the build makes must die with it.
    if let Err(e) = crate::store::layers::enter_private_namespace() {
        eprintln!("error: {e}");
        return 1;
    }
    crate::sandbox::process::install_interrupt_handler();
    let monitor = match make_monitor(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let catalog =
        Catalog::new(args.manifest.libdirs.clone()).allowing_shadow(args.manifest.allow_shadow);
    let m = match read_manifest(&args.manifest, &catalog) {
        Ok(m) => m,
        Err((code, message)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"success": false, "error": {"kind": "manifest"}})
                );
            }
            monitor.error(&serde_json::json!({"kind": "manifest", "message": message}));
            monitor.emit(Event::BuildFinish {
                success: false,
                exit_code: code,
                duration: 0.0,
                built: 0,
                reused: 0,
                failed: 0,
            });
            return code;
        }
    };
    let plan = Plan::new(&m);
    let opts = BuildOptions {
        store: args.store.unwrap_or_else(default_store),
        checkpoints: args.checkpoints,
        no_checkpoint: args.no_checkpoint,
        cache_max_size: args.cache_max_size.map(|s| s.0),
        lock_timeout: std::time::Duration::from_secs(args.lock_timeout),
        exports: args.exports,
        output_directory: args.output_directory,
        stage_timeout: args.stage_timeout.map(std::time::Duration::from_secs),
        jobs: args.jobs.map_or_else(exec::schedule::default_jobs, |j| {
            usize::try_from(j).unwrap_or(usize::MAX)
        }),
        keep_going: args.keep_going,
        keep_failed: args.keep_failed,
        breaks: args.breaks,
    };
    let (report, result) = exec::build(&m, &plan, &catalog, &opts, &monitor);
    if args.json {
        let doc = report.to_json(&m, &plan, result.as_ref().err());
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn store_command(cmd: StoreCommand) -> i32 {
    use crate::store::{Store, gc};
    let (args, exclusive) = match &cmd {
        StoreCommand::Log { store, .. }
        | StoreCommand::Ls { store }
        | StoreCommand::Du { store } => (store, false),
        StoreCommand::Gc { store, .. } | StoreCommand::Rm { store, .. } => (store, true),
    };
    let root = args.store.clone().unwrap_or_else(default_store);
    let timeout = std::time::Duration::from_secs(args.lock_timeout);
    // Stored trees belong to the stages' namespace's ids: as a user, only
    // inside it can strata remove them (sandbox/userns.rs); first, before
    // any thread.
    if exclusive && let Err(e) = crate::sandbox::userns::enter() {
        eprintln!("error: {e}");
        return 1;
    }
    let opened = if exclusive {
        Store::open_exclusive(&root, timeout)
    } else {
        Store::open(&root, timeout)
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let result: Result<(), (i32, String)> = match cmd {
        StoreCommand::Log { id, .. } => match store.log(&id) {
            Ok(text) => {
                print!("{text}");
                Ok(())
            }
            Err(e) => Err((2, e)),
        },
        StoreCommand::Ls { .. } => {
            println!("{:<64}  {:<32}  {:>10}  LAST USE", "ID", "MADE BY", "SIZE");
            for e in gc::entries(&store) {
                let by = match &e.kind {
                    gc::Kind::Object {
                        pipeline,
                        stage,
                        ty,
                        ..
                    } => format!("{pipeline}/{stage} {ty}"),
                    gc::Kind::Source => "source".to_owned(),
                };
                println!(
                    "{:<64}  {by:<32}  {:>10}  {}",
                    e.id,
                    gc::human(e.size),
                    utc(e
                        .last_use
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()))
                );
            }
            Ok(())
        }
        StoreCommand::Du { .. } => {
            let entries = gc::entries(&store);
            let objects = entries
                .iter()
                .filter(|e| matches!(e.kind, gc::Kind::Object { .. }))
                .count();
            let limit = store.max_size().map_or("unlimited".to_owned(), gc::human);
            println!(
                "{} ({} bytes) in {objects} objects and {} sources; limit {limit}",
                gc::human(gc::total(&entries)),
                gc::total(&entries),
                entries.len() - objects
            );
            Ok(())
        }
        StoreCommand::Gc { max_size, .. } => {
            // What --keep-failed kept is never worth keeping past a gc.
            match store.remove_failed() {
                Ok(kept) => {
                    for path in &kept {
                        eprintln!("removed {}", path.display());
                    }
                    if !kept.is_empty() {
                        eprintln!("removed {} kept failed stage(s)", kept.len());
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            }
            match max_size.map_or_else(|| store.max_size(), |s| s.0) {
                None => {
                    eprintln!(
                        "store has no size limit: nothing more to collect (give --max-size SIZE)"
                    );
                    Ok(())
                }
                Some(max) => match gc::collect(&store, max) {
                    Ok(removed) => {
                        for e in &removed {
                            eprintln!("removed {} ({})", e.id, gc::human(e.size));
                        }
                        let left = gc::total(&gc::entries(&store));
                        eprintln!(
                            "removed {} entries; the store holds {} (limit {})",
                            removed.len(),
                            gc::human(left),
                            gc::human(max)
                        );
                        Ok(())
                    }
                    Err(e) => Err((1, e.to_string())),
                },
            }
        }
        StoreCommand::Rm { id, .. } => match store.resolve(&id) {
            Ok(full) => match gc::remove_object(&store, &full) {
                Ok(removed) => {
                    for e in &removed {
                        eprintln!("removed {} ({})", e.id, gc::human(e.size));
                    }
                    Ok(())
                }
                Err(e) => Err((1, e.to_string())),
            },
            Err(e) => Err((2, e.to_string())),
        },
    };
    match result {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// `2026-11-25 23:40:00 UTC` for unix seconds.
fn utc(secs: u64) -> String {
    let t = crate::clock::Utc::from_unix(secs);
    let (h, m, s) = t.hms;
    format!(
        "{:04}-{:02}-{:02} {h:02}:{m:02}:{s:02} UTC",
        t.year, t.month, t.day
    )
}

/// `$STRATA_STORE`, else `/var/cache/strata` as root, else `$XDG_CACHE_HOME/strata`.
pub fn default_store() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_STORE") {
        return dir.into();
    }
    if rustix::process::geteuid().is_root() {
        return "/var/cache/strata".into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("strata")
}
