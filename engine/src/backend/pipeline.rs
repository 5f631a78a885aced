//! Pipelines whose stages run on a backend other than bwrap
//! (`"backend": "incus-lxc"` beside `build`).
//!
//! ```text
//! load:  pipeline P {build: name:B, backend: incus-lxc}
//!          + pipeline "B+incus-image" {tarball-to-incus over name:B}   (added; P depends on it)
//! exec:  each stage of P:
//!          image artifact/<id of B>   ← incus image import of B+incus-image's files (once)
//!          instance strata-stage-PID-N ← incus init --profile debusine [--profile strata-offline];
//!                                          start; wait for systemd
//!                                          (a stage that declares network: its lease and
//!                                          resolver, as `Incus::start` readies every networked
//!                                          instance; the others have only loopback)
//!          every sandbox mount of the stage → a disk device (shift=true), hot-plugged after
//!            boot (systemd mounts a fresh /run over anything added before)
//!          incus exec -- runner [ld.so --library-path …] stage     (output → the stage log)
//!          incus delete --force                                      (also on failure and Ctrl-C)
//! ```
//!
//! `shift=true` (idmapped mounts) rather than a privileged instance: root
//! inside writes the tree as root on the host, so owners come out as with
//! bwrap, while the instance stays unprivileged.
//!
//! Network follows the stage's declaration, as with bwrap: the `debusine`
//! profile's NIC on the NAT bridge for stages that declare `network`, none
//! (the `strata-offline` profile masks it) for the others.

use super::cli::{Cli, SystemCli};
use super::image;
use super::incus::{Incus, InstanceSpec, incus_ok};
use super::{Backend, BackendError, EnvState, ExecutionEnvironment};
use crate::id::Id;
use crate::manifest::{Input, InputType, Manifest, Origin, Pipeline, Reference, Stage};
use crate::plan::Plan;
use crate::sandbox::Mount;
use crate::sandbox::process::{Invocation, Outcome, Output};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The pipeline that makes the incus image of build pipeline `build`.
pub fn image_pipeline_name(build: &str) -> String {
    format!("{build}+incus-image")
}

/// Adds, for every pipeline whose stages run in incus, the pipeline making
/// its build pipeline's image, and makes the pipeline depend on it.
pub fn expand(m: &mut Manifest) {
    let wanted: Vec<(usize, String)> = m
        .pipelines
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.backend, Some(Backend::IncusLxc)))
        .filter_map(|(i, p)| p.build_name().map(|b| (i, b.to_owned())))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let plan = Plan::new(m);
    for (pi, build) in wanted {
        let name = image_pipeline_name(&build);
        if !m.pipelines.iter().any(|p| p.name == name) {
            let bi = m.index(&build);
            let Some(id) = plan.pipeline_id(bi) else {
                continue; // an empty build pipeline: exec reports it
            };
            let stage = Stage {
                ty: image::IMAGE_STAGE.to_owned(),
                options: image::stage_options(id, &format!("strata build environment {build}")),
                inputs: BTreeMap::from([(
                    "tree".to_owned(),
                    Input {
                        ty: InputType::Tree,
                        origin: Origin::Pipeline,
                        references: vec![Reference {
                            id: format!("name:{build}"),
                            options: serde_json::json!({}),
                        }],
                    },
                )]),
                // A built-in stage under the built-in runner.
                program: Some(serde_json::json!({
                    "stage": crate::catalog::STAGE_SET,
                    "runner": crate::catalog::STAGE_SET,
                })),
            };
            m.pipelines.push(Pipeline {
                name: name.clone(),
                build: None,
                runner: None,
                source_epoch: m.pipelines[bi].source_epoch,
                backend: None,
                image: None,
                stages: vec![stage],
            });
        }
        m.pipelines[pi].image = Some(name);
    }
}

/// One stage to run in an instance, as the scheduler prepared it for bwrap.
// `on_line` is a closure, which has no Debug.
#[allow(missing_debug_implementations)]
pub struct StageRun<'a> {
    /// The store (the image is marked with it, for gc).
    pub store: &'a Path,
    /// The id of the build pipeline: the image is `artifact/<id>`.
    pub build_id: &'a Id,
    /// The tree holding the image files (tarball-to-incus output).
    pub image_files: &'a Path,
    /// The sandbox's mounts: each becomes a disk device.
    pub mounts: &'a [Mount],
    /// The stage's whole environment.
    pub env: &'a [(String, String)],
    /// The command (runner, loader, stage).
    pub argv: &'a [OsString],
    /// The stage log.
    pub log: &'a Path,
    /// Gets each line of the stage's output (the monitor's log events).
    pub on_line: &'a (dyn Fn(&[u8]) + Sync),
    /// `--stage-timeout`.
    pub timeout: Option<Duration>,
    /// The stage declares network.
    pub network: bool,
}

/// Deletes the instance however the stage ends.
struct Destroy(Incus);

impl Drop for Destroy {
    fn drop(&mut self) {
        if let Err(e) = self.0.destroy() {
            eprintln!(
                "warning: instance {} was not deleted: {e}\n    hint: strata env gc removes it",
                self.0.instance()
            );
        }
    }
}

/// Runs one stage in a fresh incus container; the instance is gone afterwards.
pub fn run_stage(run: &StageRun<'_>) -> Result<Outcome, BackendError> {
    run_stage_with(run, Arc::new(SystemCli))
}

/// [`run_stage`] through `cli`.
pub fn run_stage_with(run: &StageRun<'_>, cli: Arc<dyn Cli>) -> Result<Outcome, BackendError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let alias = image::alias(run.build_id);
    image::import(cli.as_ref(), run.store, run.image_files, &alias)?;
    let pid = std::process::id();
    let name = format!("stage-{pid}-{}", COUNTER.fetch_add(1, Ordering::SeqCst));
    let spec = InstanceSpec {
        name: &name,
        backend: Backend::IncusLxc,
        alias: &alias,
        origin: "a stage",
        artifact_id: run.build_id.as_str(),
        owner_pid: Some(pid),
        network: run.network,
    };
    let instance = Incus::create(run.store, &spec, cli.clone());
    let instance = match instance {
        Ok(instance) => instance,
        Err(e) => {
            // Interrupted while incus was still making it: incus goes on
            // making it, so delete it all the same.
            let state = EnvState {
                name: name.clone(),
                backend: Backend::IncusLxc,
                origin: String::new(),
                artifact_id: String::new(),
                image: alias,
                instance: Some(format!("{}{name}", super::incus::PREFIX)),
                running: false,
                stop_timeout: 0,
                network: run.network,
            };
            drop(Destroy(Incus::open(state, run.store, cli)));
            return Err(e);
        }
    };
    let mut guard = Destroy(instance);
    (run.on_line)(
        format!(
            "running in incus instance {} (image {alias})",
            guard.0.instance()
        )
        .as_bytes(),
    );
    guard.0.start()?;
    let inst = guard.0.instance().to_owned();
    for (i, mount) in run.mounts.iter().enumerate() {
        let (src, dest, ro) = match mount {
            Mount::Bind(src, dest) => (src, dest, false),
            Mount::RoBind(src, dest) => (src, dest, true),
            Mount::Tmpfs(_) => continue, // the instance has its own /tmp and /run
        };
        let device = format!("strata{i}");
        let source = format!("source={}", src.display());
        let path = format!("path={dest}");
        let mut args = vec![
            "config",
            "device",
            "add",
            &inst,
            &device,
            "disk",
            &source,
            &path,
            "shift=true",
        ];
        if ro {
            args.push("readonly=true");
        }
        incus_ok(cli.as_ref(), &args)?;
    }
    let mut args: Vec<OsString> = ["exec", &inst, "--mode", "non-interactive", "--cwd", "/"]
        .map(OsString::from)
        .to_vec();
    for (k, v) in run.env {
        args.push("--env".into());
        args.push(format!("{k}={v}").into());
    }
    args.push("--".into());
    args.extend(run.argv.iter().cloned());
    let ran = cli.run(&Invocation {
        program: "incus".into(),
        args,
        output: Output::Log {
            path: run.log,
            on_line: run.on_line,
        },
        timeout: run.timeout,
        ..Invocation::default()
    });
    Ok(ran.outcome)
}
