//! `strata task compile|run` and `strata env ls`: flags and exit codes.
//!
//! Exit codes: 0 success, 1 the task failed (or the store failed), 2 an
//! invalid task, config or command line, 130 interrupted.

use super::io::{out, read_input, task_source};
use crate::store::{DEFAULT_LOCK_TIMEOUT, Store, default_root};
use crate::task::model::Limits;
use crate::task::{self, RunOptions, TaskError, env};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `strata task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Print the manifest a task document becomes (builds nothing).
    Compile {
        /// The task document ({"task": …, "task_data": …}), or `-` for stdin (what a missing TASK means when stdin is not a terminal).
        #[arg(value_name = "TASK")]
        task: Option<String>,
        /// The store whose environments are reused [default: as for build].
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
        /// The largest disk image a SystemImageBuild may lay out: the sum of its partitions, in GiB.
        #[arg(long, value_name = "GIB", default_value_t = Limits::default().max_image_gib, value_parser = clap::value_parser!(u64).range(1..))]
        max_image_size: u64,
    },
    /// Run a task document; write its artifacts and artifacts.json.
    Run(TaskRunArgs),
}

/// `strata task run`.
#[derive(Debug, Args)]
pub struct TaskRunArgs {
    /// The task document, or `-` for stdin (what a missing TASK means when stdin is not a terminal).
    #[arg(value_name = "TASK")]
    task: Option<String>,
    /// Where the artifacts and artifacts.json go.
    #[arg(long, value_name = "DIR")]
    output_directory: PathBuf,
    /// The object store [default: $STRATA_STORE, else /var/cache/strata as root, else $XDG_CACHE_HOME/strata].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// The notification channels [default: $STRATA_NOTIFICATIONS_CONFIG, else /etc/strata/notifications.json].
    #[arg(long, value_name = "FILE")]
    notifications_config: Option<PathBuf>,
    /// Extra stage and runner search path; repeatable.
    #[arg(long = "libdir", value_name = "DIR")]
    libdirs: Vec<PathBuf>,
    /// Replace the artifacts and artifacts.json an earlier run left in the output directory (a retried task).
    #[arg(long)]
    force: bool,
    /// Print only errors.
    #[arg(short, long)]
    quiet: bool,
    /// End a stage that runs longer than this many seconds (a failure).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    stage_timeout: Option<u64>,
    /// The largest disk image a SystemImageBuild may lay out: the sum of its partitions, in GiB.
    #[arg(long, value_name = "GIB", default_value_t = Limits::default().max_image_gib, value_parser = clap::value_parser!(u64).range(1..))]
    max_image_size: u64,
}

/// Runs `strata task …`; returns the exit code.
pub fn task_main(cmd: TaskCommand) -> i32 {
    match cmd {
        TaskCommand::Compile {
            task,
            store,
            max_image_size,
        } => {
            let task = match task_source(task.as_deref(), &["task", "compile"]) {
                Ok(task) => task,
                Err(code) => return code,
            };
            let (text, origin) = match read_input(&task, "the task") {
                Ok(t) => t,
                Err(code) => return code,
            };
            let root = store.unwrap_or_else(default_root);
            let store = match Store::open_existing(&root, DEFAULT_LOCK_TIMEOUT) {
                Ok(store) => store,
                Err(e) => return super::fail(&TaskError::Env(e.into())),
            };
            let limits = Limits {
                max_image_gib: max_image_size,
            };
            match task::compile_document(&text, &origin, store.as_ref(), &limits) {
                Ok((_, compiled)) => {
                    if let Some(choice) = &compiled.environment {
                        eprintln!("{}", task::describe_choice(choice));
                    }
                    out(serde_json::to_string_pretty(&compiled.manifest).expect("json"));
                    0
                }
                Err(e) => super::fail(&e),
            }
        }
        TaskCommand::Run(args) => {
            let task = match task_source(args.task.as_deref(), &["task", "run"]) {
                Ok(task) => task,
                Err(code) => return code,
            };
            // As for `strata build`: the build's mounts are ours alone.
            if let Err(code) = super::prologue() {
                return code;
            }
            let (text, origin) = match read_input(&task, "the task") {
                Ok(t) => t,
                Err(code) => return code,
            };
            let opts = RunOptions {
                store: args.store.unwrap_or_else(default_root),
                output_directory: args.output_directory,
                notifications_config: args.notifications_config,
                quiet: args.quiet,
                stage_timeout: args.stage_timeout.map(std::time::Duration::from_secs),
                libdirs: args.libdirs,
                force: args.force,
                limits: Limits {
                    max_image_gib: args.max_image_size,
                },
            };
            let report = match task::run_document(&text, &origin, &opts) {
                Ok(r) => r,
                Err(e) => return super::fail(&e),
            };
            for n in &report.notifications {
                match n {
                    Ok(line) if !args.quiet => eprintln!("{line}"),
                    Ok(_) => {}
                    Err(line) => eprintln!("warning: {line}"),
                }
            }
            if let Some(error) = report.document["error"].as_str() {
                eprintln!("error: {error}");
            }
            eprintln!(
                "task {} {}: {}; artifacts.json in {}",
                report.document["task"].as_str().unwrap_or(""),
                report
                    .work_request_id
                    .get(..16)
                    .unwrap_or(&report.work_request_id),
                report.result,
                opts.output_directory.display()
            );
            if report.interrupted {
                130
            } else {
                i32::from(report.result != "success")
            }
        }
    }
}

/// `strata env ls`: the environments (systems tasks run in) the store holds.
pub fn env_ls(store: Option<PathBuf>, json: bool) -> i32 {
    let root = store.unwrap_or_else(default_root);
    let listed = Store::open_existing(&root, DEFAULT_LOCK_TIMEOUT)
        .map_err(env::EnvError::from)
        .and_then(|store| match store {
            Some(store) => env::list(&store),
            None => Ok(Vec::new()),
        });
    match listed {
        Ok(envs) => {
            if json {
                let brief: Vec<_> = envs
                    .iter()
                    .map(|e| {
                        serde_json::json!({"id": e.id, "vendor": e.vendor, "codename": e.codename,
                            "variant": e.variant, "architecture": e.architecture,
                            "backends": e.backends, "created": e.created})
                    })
                    .collect();
                out(serde_json::to_string_pretty(&brief).expect("json"));
            } else {
                crate::cli::io::out_raw(&env::table(&envs));
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
