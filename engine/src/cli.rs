//! The command line: `strata build`, `inspect`, `store`, `task` and `env`.
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
    /// Environments: the systems tasks run in.
    #[command(subcommand)]
    Env(crate::task::command::EnvCommand),
}

/// `strata store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Print the log a stored stage wrote when it ran.
    Log {
        /// The stage id (or a unique prefix of it).
        id: String,
        /// The object store [default: as for build].
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Remove what --keep-failed kept of failed stages.
    Gc {
        /// The object store [default: as for build].
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
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
}

/// `strata build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// The object store [default: $STRATA_STORE, else /var/cache/strata as root, else $XDG_CACHE_HOME/strata].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Keep these stages in the store: a pipeline name (its last stage), a stage id, a stage type or a glob; repeatable.
    #[arg(long = "checkpoint", value_name = "PATTERN")]
    checkpoints: Vec<String>,
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
        Command::Store(StoreCommand::Log { id, store }) => store_log(&id, store),
        Command::Task(cmd) => crate::task::command::task_main(cmd),
        Command::Env(cmd) => crate::task::command::env_main(cmd),
        Command::Store(StoreCommand::Gc { store }) => store_gc(store),
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
    let catalog = Catalog::new(args.manifest.libdirs.clone());
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
    crate::sandbox::process::install_interrupt_handler();
    let monitor = match make_monitor(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let catalog = Catalog::new(args.manifest.libdirs.clone());
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

fn store_log(id: &str, store: Option<PathBuf>) -> i32 {
    let store = match crate::store::Store::open(&store.unwrap_or_else(default_store)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match store.log(id) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// `strata store gc`: removes what `--keep-failed` kept.
fn store_gc(store: Option<PathBuf>) -> i32 {
    let result = crate::store::Store::open(&store.unwrap_or_else(default_store))
        .and_then(|s| s.remove_failed());
    match result {
        Ok(removed) => {
            for path in &removed {
                eprintln!("removed {}", path.display());
            }
            eprintln!("removed {} kept failed stage(s)", removed.len());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
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
