//! The command line: `strata build`, `strata inspect`, `strata store` and
//! `strata env` (in [`crate::cli_env`]).
//!
//! Exit codes: 0 success, 1 build failure, 2 invalid manifest or usage,
//! 130 interrupted.

use crate::catalog::Catalog;
use crate::exec::{self, BuildOptions};
use crate::manifest::{self, Manifest, ManifestError};
use crate::monitor::Monitor;
use crate::plan::Plan;
use clap::{Args, Parser, Subcommand};
use std::io::Read;
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
    /// Execution environments: containers from systems strata built.
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
        /// The object store [default: as for build].
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
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
    #[arg(short, long)]
    quiet: bool,
    /// End a stage that runs longer than this many seconds (a build failure).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    stage_timeout: Option<u64>,
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
        Command::Env(cmd) => crate::cli_env::main(cmd),
    }
}

fn read_manifest(args: &ManifestArgs, catalog: &Catalog) -> Result<Manifest, i32> {
    let (text, origin) = if args.manifest == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("error: reading the manifest from stdin: {e}");
            return Err(2);
        }
        (text, "<stdin>".to_owned())
    } else {
        match fs_err::read_to_string(&args.manifest) {
            Ok(text) => (text, args.manifest.clone()),
            Err(e) => {
                eprintln!("error: {e}");
                return Err(2);
            }
        }
    };
    manifest::load(&text, &origin, catalog).map_err(|e: ManifestError| {
        eprintln!("error: {e}");
        2
    })
}

fn inspect(args: InspectArgs) -> i32 {
    let catalog = Catalog::new(args.manifest.libdirs.clone());
    let m = match read_manifest(&args.manifest, &catalog) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let plan = Plan::new(&m);
    println!(
        "{}",
        serde_json::to_string_pretty(&plan.describe(&m)).expect("json")
    );
    0
}

fn build(args: BuildArgs) -> i32 {
    crate::sandbox::process::install_interrupt_handler();
    let catalog = Catalog::new(args.manifest.libdirs.clone());
    let m = match read_manifest(&args.manifest, &catalog) {
        Ok(m) => m,
        Err(code) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"success": false, "error": {"kind": "manifest"}})
                );
            }
            return code;
        }
    };
    let plan = Plan::new(&m);
    let opts = BuildOptions {
        store: args.store.unwrap_or_else(default_store),
        checkpoints: args.checkpoints,
        exports: args.exports,
        output_directory: args.output_directory,
        quiet: args.quiet,
        stage_timeout: args.stage_timeout.map(std::time::Duration::from_secs),
    };
    let monitor = Monitor::new(args.quiet);
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
