//! debusine task documents: `strata task compile` and `strata task run`.
//!
//! ```text
//! TASK.json ──model::parse──▶ Task ──compile (+ the store's environments)──▶ manifest
//!   (strict: key paths)                 env: lookup → stored system, or a bootstrap
//!                                            compiled in (recorded once built;
//!                                            incus-lxc added once a task ran there)
//! manifest ──manifest::load, exec::build (checkpoint *, export)──▶ DIR/<pipeline>/
//!          ──artifacts──▶ DIR/artifacts.json
//!          ──on failure──▶ notify: email per notifications.on_failure
//! ```
//!
//! `model` holds the task_data types, `compile` draws task → manifest,
//! `env` the environments the store holds, `artifacts` what a run hands
//! back, `notify` the failure emails.

pub mod artifacts;
pub mod compile;
pub mod env;
pub mod model;
pub mod notify;

use crate::catalog::Catalog;
use crate::exec::{self, BuildError};
use crate::manifest::plan::Plan;
use crate::monitor::Monitor;
use crate::store::{DEFAULT_LOCK_TIMEOUT, Store};
use compile::{Compiled, EnvironmentChoice};
use model::{Invalid, Task};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a task did not run (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The document is not a valid task (exit 2).
    #[error("invalid task {origin}: {invalid}")]
    Invalid {
        /// Where the document came from.
        origin: String,
        /// What and where.
        invalid: Invalid,
    },
    /// The notifications config is unusable (exit 2).
    #[error(transparent)]
    Config(#[from] notify::ConfigError),
    /// The command line does not fit (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The compiled manifest was refused: a task value a stage does not
    /// accept (exit 2).
    #[error("the manifest task {origin} compiles to is not valid:\n{detail}")]
    Manifest {
        /// The task document.
        origin: String,
        /// The manifest errors.
        detail: String,
    },
    /// The store's environments could not be read (exit 1).
    #[error(transparent)]
    Env(#[from] env::EnvError),
}

impl TaskError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            TaskError::Env(_) => 1,
            _ => 2,
        }
    }
}

/// The dpkg architecture of this machine (the default for tasks that do
/// not name one).
pub fn host_architecture() -> String {
    std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| {
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                "x86" => "i386",
                "powerpc64" => "ppc64el",
                other => other,
            }
            .to_owned()
        })
}

/// Parses `text` (from `origin`) and compiles it against the environments
/// of `store` (`None`: there is no store yet, so there are none).
pub fn compile_document(
    text: &str,
    origin: &str,
    store: Option<&Store>,
    limits: &model::Limits,
) -> Result<(Task, Compiled), TaskError> {
    let invalid = |invalid| TaskError::Invalid {
        origin: origin.to_owned(),
        invalid,
    };
    let task = model::parse(text, limits).map_err(invalid)?;
    let envs = match store {
        Some(store) => env::list(store)?,
        None => Vec::new(),
    };
    let compiled = compile::compile(&task, &envs, &host_architecture()).map_err(invalid)?;
    Ok((task, compiled))
}

/// What `strata task run` needs besides the document.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The store root.
    pub store: PathBuf,
    /// Where artifacts and artifacts.json go.
    pub output_directory: PathBuf,
    /// The notifications config (default: [`notify::default_config_path`]).
    pub notifications_config: Option<PathBuf>,
    /// Only errors on stderr.
    pub quiet: bool,
    /// End a stage that runs longer.
    pub stage_timeout: Option<Duration>,
    /// More stages.
    pub libdirs: Vec<PathBuf>,
    /// `--force`: replace the exports and artifacts.json of an earlier run.
    pub force: bool,
    /// What a task may ask for at most.
    pub limits: model::Limits,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunReport {
    /// success, failure (a stage failed) or error (anything else).
    pub result: &'static str,
    /// The run's id: the id of the pipeline whose tree the task hands back.
    pub work_request_id: String,
    /// The artifacts.json document.
    pub document: Value,
    /// One line per notification sent or not.
    pub notifications: Vec<Result<String, String>>,
    /// Ctrl-C or SIGTERM stopped it (exit 130).
    pub interrupted: bool,
}

/// Runs a task document. `Err` when it could not start; a run that failed
/// is an `Ok` report whose result says so.
pub fn run_document(text: &str, origin: &str, opts: &RunOptions) -> Result<RunReport, TaskError> {
    let (task, compiled) = {
        // Let go of before the build, which opens the store itself: it
        // collects at its end only when nobody else holds the store.
        let store =
            Store::open_existing(&opts.store, DEFAULT_LOCK_TIMEOUT).map_err(env::EnvError::from)?;
        compile_document(text, origin, store.as_ref(), &opts.limits)?
    };
    let emails = if task.on_failure().is_empty() {
        Vec::new()
    } else {
        let path = opts
            .notifications_config
            .clone()
            .unwrap_or_else(notify::default_config_path);
        let config = notify::Config::load(&path)?;
        config
            .compose(task.on_failure(), &path)
            .map_err(|invalid| TaskError::Invalid {
                origin: origin.to_owned(),
                invalid,
            })?
    };
    let out = &opts.output_directory;
    for name in compiled
        .exports
        .iter()
        .map(String::as_str)
        .chain(["artifacts.json"])
    {
        if out.join(name).symlink_metadata().is_ok() && !opts.force {
            return Err(TaskError::Usage(format!(
                "{} exists already\n    hint: give --force to replace it (a retried task), or --output-directory a new or empty folder",
                out.join(name).display()
            )));
        }
    }

    let catalog = Catalog::new(opts.libdirs.clone());
    let m = crate::manifest::load_value(
        &compiled.manifest,
        &format!("(compiled from {origin})"),
        &catalog,
    )
    .map_err(|e| TaskError::Manifest {
        origin: origin.to_owned(),
        detail: e.to_string(),
    })?;
    let build = exec::Build::new(&m, &catalog, &opts.store)
        .checkpoint("*")
        .exports(&compiled.exports)
        .output_directory(out)
        .replace_exports(opts.force)
        .stage_timeout(opts.stage_timeout);
    let (m, plan) = (build.manifest(), build.plan());
    let id_of = |name: &str| {
        plan.pipeline_id(m.index(name))
            .map(|i| i.to_string())
            .unwrap_or_default()
    };
    let work_request_id = id_of(compiled.exports.last().expect("a task exports a pipeline"));
    let environment = compiled.environment.as_ref().map(|c| match c {
        EnvironmentChoice::Stored { lookup, id } => {
            json!({"lookup": lookup, "id": id, "reused": true})
        }
        EnvironmentChoice::Bootstrapped { lookup } => {
            json!({"lookup": lookup, "id": id_of("environment"), "reused": false})
        }
    });
    if !opts.quiet
        && let Some(choice) = &compiled.environment
    {
        eprintln!("{}", describe_choice(choice));
    }

    // Tasks report as plain lines: a task run is mostly driven by scripts.
    let monitor = Monitor::plain(opts.quiet);
    let (report, built) = build.run(&monitor);
    let meta_of = |name: &str| {
        report.stages[m.index(name)]
            .last()
            .map_or(Value::Null, |s| s.metadata.clone())
    };
    // The bootstrap's, first in a system image's system pipeline.
    let first_meta_of = |name: &str| {
        report.stages[m.index(name)]
            .first()
            .map_or(Value::Null, |s| s.metadata.clone())
    };
    let interrupted = matches!(built, Err(BuildError::Interrupted));
    let outcome: Result<Vec<artifacts::Artifact>, (&'static str, String)> = match built {
        Err(e) => Err((
            if matches!(e, BuildError::Stage(_)) {
                "failure"
            } else {
                "error"
            },
            e.to_string(),
        )),
        Ok(()) => {
            let store = Store::open(&opts.store, DEFAULT_LOCK_TIMEOUT);
            let store = store.as_ref().map_err(|e| e.to_string());
            if let Some(system) = &compiled.system
                && let Err(e) = store.clone().and_then(|store| {
                    record_system(store, plan, m, &compiled.manifest, system)
                        .map_err(|e| e.to_string())
                })
            {
                eprintln!("warning: the system was built but not recorded as an environment: {e}");
            }
            let env_id = match &compiled.environment {
                Some(EnvironmentChoice::Stored { id, .. }) => Some(id.clone()),
                Some(EnvironmentChoice::Bootstrapped { .. }) => Some(id_of("environment")),
                None => None,
            };
            if let (Some(backend), Some(id)) = (compiled.backend, env_id)
                && let Err(e) = store.clone().and_then(|store| {
                    env::add_backend(store, &id, backend).map_err(|e| e.to_string())
                })
            {
                eprintln!(
                    "warning: the environment ran on {backend} but its record does not say so: {e}"
                );
            }
            let collected = match &task {
                Task::SystemBootstrap(_) => {
                    artifacts::system_tarball(out, &meta_of("system"), &meta_of("tarball"))
                }
                Task::PackageBuild(_) => artifacts::package_build(out, &meta_of("build")),
                Task::Lintian(_) => artifacts::lintian(out),
                Task::SystemImageBuild(d) => {
                    let image = compile::image_file(&d.disk_image);
                    artifacts::system_image(
                        out,
                        &compiled.exports[0],
                        &image.filename,
                        &first_meta_of("system"),
                        &artifacts::ImageFacts {
                            format: image.format,
                            filesystem: "ext4",
                            size: image.size,
                            boot_mechanism: "efi",
                        },
                    )
                }
            };
            collected.map_err(|e| ("error", format!("describing the artifacts: {e}")))
        }
    };
    let (result, error, list) = match outcome {
        Ok(list) => ("success", None, list),
        Err((result, message)) => (result, Some(message), Vec::new()),
    };
    let document = json!({
        "task": task.kind(),
        "work_request_id": work_request_id,
        "result": result,
        "environment": environment,
        "error": error,
        "artifacts": list.iter().map(artifacts::Artifact::to_json).collect::<Vec<_>>(),
    });
    let written = fs_err::create_dir_all(out).and_then(|()| {
        write_new_then_rename(
            out,
            "artifacts.json",
            &serde_json::to_vec_pretty(&document).expect("json"),
        )
    });
    let mut notifications = Vec::new();
    let mut result = result;
    if let Err(e) = written {
        eprintln!("error: writing artifacts.json: {e}");
        result = if result == "success" { "error" } else { result };
    }
    if result != "success" {
        let body = format!(
            "strata task {kind} {work_request_id} completed in {result}.\n\n{}\n",
            error
                .as_deref()
                .unwrap_or("artifacts.json could not be written"),
            kind = task.kind(),
        );
        for email in &emails {
            let sent = notify::send(
                email,
                &work_request_id,
                result,
                &body,
                Duration::from_secs(10),
            );
            notifications.push(match sent {
                Ok(()) => Ok(format!(
                    "notified channel `{}` ({})",
                    email.channel,
                    email
                        .to
                        .iter()
                        .chain(&email.cc)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(e) => Err(format!("notification channel `{}`: {e}", email.channel)),
            });
        }
    }
    Ok(RunReport {
        result,
        work_request_id,
        document,
        notifications,
        interrupted,
    })
}

/// Writes `data` to `dir/name` by creating a new file beside it (a fresh
/// name, O_EXCL: never an existing file or a link someone left there) and
/// renaming it into place: a reader (or a --force rerun) sees the old
/// document or the new one, never half of one, and a link named `name`
/// is replaced, never written through.
fn write_new_then_rename(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut staged = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    staged.write_all(data)?;
    // A task's results are for whoever collects them: not tempfile's 0600.
    staged
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    let dest = dir.join(name);
    staged.persist(&dest).map_err(|e| {
        std::io::Error::new(e.error.kind(), format!("{}: {}", dest.display(), e.error))
    })?;
    Ok(())
}

/// One line saying which environment a task uses.
pub fn describe_choice(choice: &EnvironmentChoice) -> String {
    match choice {
        EnvironmentChoice::Stored { lookup, id } => {
            format!(
                "environment {lookup}: the stored system {}",
                &id[..16.min(id.len())]
            )
        }
        EnvironmentChoice::Bootstrapped { lookup } => {
            format!("environment {lookup}: none stored, bootstrapping one")
        }
    }
}

/// Records the compiled system pipeline `name` as an environment.
fn record_system(
    store: &Store,
    plan: &Plan,
    m: &crate::manifest::Manifest,
    manifest: &Value,
    name: &str,
) -> Result<(), env::EnvError> {
    let pi = m.index(name);
    let Some(id) = plan.pipeline_id(pi) else {
        return Ok(());
    };
    if store.has(id) {
        env::record(store, id, &manifest["pipelines"][pi])?;
    }
    Ok(())
}
