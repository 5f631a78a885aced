//! Stage runners of pipelines whose stages run on a backend other than
//! bwrap (`"backend": "incus-lxc"` beside `build`), and the choice of
//! runner for a pipeline ([`stage_runner`]).
//!
//! ```text
//! derive: pipeline P {build: name:B, backend: incus-lxc}
//!          + pipeline "B+incus-image" {tarball-to-incus over name:B}   (added; P depends on it)
//! run:   each stage of P:
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
use crate::sandbox::process::{Invocation, Outcome, Output};
use crate::sandbox::runner::{Bwrap, RunnerError, StageLog, StageRunner};
use crate::sandbox::userns::Mode;
use crate::sandbox::{Mount, Root, StageSpec};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The image a pipeline's stages boot from: its build pipeline's system.
#[derive(Debug, Clone)]
pub struct StageImage {
    /// The store (the image is marked with it, for gc).
    pub store: PathBuf,
    /// The id of the build pipeline: the image is `artifact/<id>`.
    pub build_id: Id,
    /// The tree holding the image files (tarball-to-incus output).
    pub files: PathBuf,
}

/// The runner for a pipeline's stages on `backend` (bwrap when none is
/// named); `image` is what backends that boot a system start from.
pub fn stage_runner(
    backend: Option<Backend>,
    image: Option<StageImage>,
) -> Result<Box<dyn StageRunner>, BackendError> {
    match backend {
        None | Some(Backend::Unshare) => Ok(Box::new(Bwrap)),
        // incusd mounts a stage's tree with shift=true, which reads the
        // owners on disk as the host's. An ordinary user's store holds the
        // ids of strata's own namespace (in-tree root is the user, the rest
        // the user's subordinate ids): the container would see the tree
        // under the wrong owners, and what it writes would land as the
        // host's root, in a store the user could no longer clean. Refused
        // before any instance starts, rather than build a wrong tree.
        Some(Backend::IncusLxc) if crate::sandbox::userns::mode() == Some(Mode::Inside) => {
            Err(BackendError::Invalid(
                "stages on incus-lxc need strata to run as root: incusd would map the tree's owners as the host's, and as an ordinary user strata's store holds the ids of its own user namespace\n    hint: drop \"backend\" to run the stages with bwrap, or run as root; `strata env` on incus-lxc works as a member of incus-admin".into(),
            ))
        }
        Some(Backend::IncusLxc) => match image {
            Some(image) => Ok(Box::new(IncusStage {
                image,
                cli: Arc::new(SystemCli),
            })),
            None => Err(BackendError::ImageMissing(
                "the build pipeline has no stages, so no image".into(),
            )),
        },
        Some(other) => Err(BackendError::NotImplemented(other)),
    }
}

/// Runs each stage in a fresh incus container booted from the pipeline's
/// image; the instance is gone afterwards.
#[derive(Debug)]
pub struct IncusStage {
    /// What the containers boot.
    pub image: StageImage,
    /// The incus command line.
    pub cli: Arc<dyn Cli>,
}

impl StageRunner for IncusStage {
    fn run(&self, spec: &StageSpec, log: &StageLog<'_>) -> Result<Outcome, RunnerError> {
        if matches!(spec.root, Root::TreeRw(_)) {
            return Err("this stage runs with the tree as `/` (chroot semantics), which only bwrap does; drop \"backend\" from the pipeline".into());
        }
        match run_stage(&self.image, spec, log, self.cli.clone()) {
            Err(BackendError::Interrupted) => Ok(Outcome::Interrupted),
            Err(e) => Err(e.into()),
            Ok(outcome) => Ok(outcome),
        }
    }

    fn shell(&self, _spec: &StageSpec, _tty: &std::fs::File) -> Result<Outcome, RunnerError> {
        Err("--break opens its shell with bwrap; a stage on incus-lxc has none".into())
    }

    fn sees_our_mounts(&self) -> bool {
        // incusd cannot see strata's mounts: tree and inputs must be plain dirs.
        false
    }
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

/// Runs one stage in a fresh incus container through `cli`; the instance
/// is gone afterwards.
fn run_stage(
    image: &StageImage,
    spec: &StageSpec,
    log: &StageLog<'_>,
    cli: Arc<dyn Cli>,
) -> Result<Outcome, BackendError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let alias = image::alias(&image.build_id);
    image::import(cli.as_ref(), &image.store, &image.files, &alias)?;
    let pid = std::process::id();
    let name = format!("stage-{pid}-{}", COUNTER.fetch_add(1, Ordering::SeqCst));
    let instance_spec = InstanceSpec {
        name: &name,
        backend: Backend::IncusLxc,
        alias: &alias,
        origin: "a stage",
        artifact_id: image.build_id.as_str(),
        owner_pid: Some(pid),
        network: spec.network,
    };
    let instance = Incus::create(&image.store, &instance_spec, cli.clone());
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
                network: spec.network,
                vm: None,
            };
            drop(Destroy(Incus::open(state, &image.store, cli)));
            return Err(e);
        }
    };
    let mut guard = Destroy(instance);
    (log.on_line)(
        format!(
            "running in incus instance {} (image {alias})",
            guard.0.instance()
        )
        .as_bytes(),
    );
    guard.0.start()?;
    let inst = guard.0.instance().to_owned();
    for (i, mount) in spec.mounts.iter().enumerate() {
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
    for (k, v) in &spec.env {
        args.push("--env".into());
        args.push(format!("{k}={v}").into());
    }
    args.push("--".into());
    args.extend(spec.argv.iter().cloned());
    let ran = cli.run(&Invocation {
        program: "incus".into(),
        args,
        output: Output::Log {
            path: log.path,
            on_line: log.on_line,
        },
        timeout: spec.limits.timeout,
        ..Invocation::default()
    });
    Ok(ran.outcome)
}
