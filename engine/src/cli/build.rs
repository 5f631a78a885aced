//! `strata build` and `strata inspect`.

use super::io::{manifest_source, out, read_input};
use super::{ManifestArgs, SizeArg, Usage, fail, parse_size, prologue};
use crate::catalog::Catalog;
use crate::exec;
use crate::manifest::{self, Manifest};
use crate::monitor::{self, Event, JsonSeq, Live, Monitor, Plain, Sink, Verbosity};
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Formats of `--monitor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MonitorFormat {
    /// RFC 7464 JSON text sequences: each event is RS, JSON, LF.
    JsonSeq,
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
    /// Replace an export that exists already (in one step: readers see the old tree or the new one), so a retried build succeeds.
    #[arg(long)]
    force: bool,
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
    /// Secrets that curl items and stage options name as "secrets": {"name": …}: a JSON object of names to values ("user:password") or {"file": PATH}. They never reach an id, the store, a log or a command line.
    #[arg(long, value_name = "FILE")]
    secrets: Option<PathBuf>,
    /// The most a curl source item without a "size" may download (bytes, kB, KiB, MB, MiB, GB, GiB, TB, TiB) [default: 16 GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_source_size: Option<SizeArg>,
}

/// `strata inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
}

/// The manifest at `source` (`-`: stdin), or the exit code and the error
/// (already said).
fn read_manifest(source: &str, catalog: &Catalog) -> Result<Manifest, (i32, String)> {
    let (text, origin) =
        read_input(source, "the manifest").map_err(|code| (code, String::new()))?;
    manifest::load(&text, &origin, catalog).map_err(|e| (fail(&e), e.to_string()))
}

/// Runs `strata inspect`; returns the exit code.
pub fn inspect(args: InspectArgs) -> i32 {
    let source = match manifest_source(args.manifest.manifest.as_deref(), &["inspect"]) {
        Ok(source) => source,
        Err(code) => return code,
    };
    let catalog = args.manifest.catalog();
    let mut m = match read_manifest(&source, &catalog) {
        Ok(m) => m,
        Err((code, _)) => return code,
    };
    let plan = crate::derive::plan(&mut m);
    out(serde_json::to_string_pretty(&plan.describe(&m)).expect("json"));
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

/// Runs `strata build`; returns the exit code.
pub fn build(args: BuildArgs) -> i32 {
    // Before anything is set up: a build that would wait for a manifest
    // typed on the terminal is a usage error.
    let source = match manifest_source(args.manifest.manifest.as_deref(), &["build"]) {
        Ok(source) => source,
        Err(code) => return code,
    };
    if let Err(code) = prologue() {
        return code;
    }
    let monitor = match make_monitor(&args) {
        Ok(m) => m,
        Err(e) => return fail(&Usage(e)),
    };
    let catalog = args.manifest.catalog();
    let m = match read_manifest(&source, &catalog) {
        Ok(m) => m,
        Err((code, message)) => {
            if args.json {
                out(serde_json::json!({"success": false, "error": {"kind": "manifest"}}));
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
    if has_inline_credentials(&m) {
        eprintln!(
            "warning: a URL in the manifest carries credentials (user:password@); strata keeps them out of what it prints and stores, but the place for them is --secrets FILE and \"secrets\": {{\"name\": …}}"
        );
    }
    let mut build = exec::Build::new(
        &m,
        &catalog,
        args.store.unwrap_or_else(crate::store::default_root),
    )
    .checkpoints(args.checkpoints)
    .no_checkpoint(args.no_checkpoint)
    .lock_timeout(std::time::Duration::from_secs(args.lock_timeout))
    .exports(args.exports)
    .stage_timeout(args.stage_timeout.map(std::time::Duration::from_secs))
    .replace_exports(args.force)
    .keep_going(args.keep_going)
    .keep_failed(args.keep_failed)
    .breaks(args.breaks);
    if let Some(size) = args.cache_max_size {
        build = build.cache_max_size(size.0);
    }
    if let Some(SizeArg(Some(bytes))) = args.max_source_size {
        build = build.max_source_size(bytes);
    }
    if let Some(path) = &args.secrets {
        match strata_sources::Secrets::load(path) {
            Ok(secrets) => build = build.secrets(secrets),
            Err(e) => return fail(&Usage(format!("--secrets {e}"))),
        }
    }
    if let Some(dir) = args.output_directory {
        build = build.output_directory(dir);
    }
    if let Some(jobs) = args.jobs {
        build = build.jobs(usize::try_from(jobs).unwrap_or(usize::MAX));
    }
    let (report, result) = build.run(&monitor);
    if args.json {
        let doc = report.to_json(build.manifest(), build.plan(), result.as_ref().err());
        out(serde_json::to_string_pretty(&doc).expect("json"));
    }
    match result {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

/// Whether a curl item or a stage option holds a URL with `user:password@`.
fn has_inline_credentials(m: &Manifest) -> bool {
    fn in_value(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => strata_sources::split_userinfo(s).1.is_some(),
            serde_json::Value::Array(items) => items.iter().any(in_value),
            serde_json::Value::Object(map) => map.values().any(in_value),
            _ => false,
        }
    }
    m.sources.values().any(|s| {
        matches!(
            &s.item,
            strata_sources::Item::Curl {
                inline_user: Some(_),
                ..
            }
        )
    }) || m
        .pipelines
        .iter()
        .flat_map(|p| &p.stages)
        .any(|s| in_value(&s.options))
}
