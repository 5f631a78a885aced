//! Execution environments: one API over bubblewrap, incus containers and
//! incus VMs (debusine's executor/instance design).
//!
//! ```text
//!              create(image)            start            run / push / pull        stop        destroy
//!  image ──────────────────▶ created ─────────▶ running ─────────────────▶ … ───▶ stopped ─────▶ gone
//!  (stored tree or tarball)     │                  ▲                               │
//!                               │                  └───────────── start ───────────┘
//!  unshare:   STORE/instances/NAME/tree (a copy), every run one bwrap over it
//!  incus-lxc: image `artifact/<id>` ─▶ instance `strata-NAME` (profile debusine)
//!  incus-vm:  the same, `--vm`, booted from a disk image
//!  qemu:      STORE/instances/NAME/qemu/: a qcow2 overlay over the pinned image, qemu daemonized,
//!             commands through a guest agent on a virtio-serial socket (qemu/agent.rs)
//! ```
//!
//! Every backend implements [`ExecutionEnvironment`]; [`Backend`] is the
//! closed family. What an environment is between two strata invocations is
//! its [`EnvState`], kept as `STORE/instances/NAME/state.json` by [`envs`].
//! Paths inside an environment are absolute; a pull writes only beneath the
//! host folder it is given, whatever symlinks the environment holds.
//! Every incus invocation goes through [`cli::Cli`], so tests can record
//! argv where incus cannot run (VMs here).

pub mod cli;
pub mod envs;
pub mod image;
pub mod incus;
pub mod pull;
pub mod qemu;
pub mod stage;
pub mod unshare;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The unprivileged user every environment creates, for `RunOptions::user`.
pub const USER_NAME: &str = "strata";
/// Its uid and gid.
pub const USER_ID: u32 = 4242;

pub use crate::kind::Backend;

/// Who a command runs as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum User {
    /// root.
    #[default]
    Root,
    /// The unprivileged [`USER_NAME`] the environment created.
    Unprivileged,
}

/// What a command's stdin is.
pub use crate::sandbox::process::Stdin;

/// The options of [`ExecutionEnvironment::run`], as `subprocess.run` has them.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Working directory inside (absolute); default: the user's home.
    pub cwd: Option<String>,
    /// Variables added to the environment's defaults (PATH, HOME, LANG).
    pub env: Vec<(String, String)>,
    /// stdin.
    pub stdin: Stdin,
    /// Keep stdout and stderr (`true`) or pass them through to strata's own.
    pub capture: bool,
    /// End the command after this long ([`BackendError::TimedOut`]).
    pub timeout: Option<Duration>,
    /// root or the unprivileged user.
    pub user: User,
}

impl RunOptions {
    /// Captured output, everything else defaulted.
    pub fn captured() -> RunOptions {
        RunOptions {
            capture: true,
            ..RunOptions::default()
        }
    }
}

/// A finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Its exit status (128 + N when signal N ended it).
    pub status: i32,
    /// Its stdout (empty when not captured).
    pub stdout: Vec<u8>,
    /// Its stderr (empty when not captured).
    pub stderr: Vec<u8>,
}

impl Completed {
    /// What a run of `argv` in environment `env` through `tool` came to:
    /// the exit status (128 + N for signal N) or the error that ended it.
    /// `limit` is the timeout the caller set, for the message.
    pub fn from_ran(
        env: &str,
        argv: &[String],
        tool: &str,
        ran: crate::sandbox::process::Ran,
        limit: Option<Duration>,
    ) -> Result<Completed, BackendError> {
        use crate::sandbox::process::Outcome;
        let status = match ran.outcome {
            Outcome::Finished(code) => code,
            Outcome::Killed(sig) => 128 + sig,
            Outcome::Interrupted => return Err(BackendError::Interrupted),
            Outcome::TimedOut(ran_for) => {
                return Err(BackendError::TimedOut {
                    env: env.to_owned(),
                    command: argv.join(" "),
                    secs: limit.unwrap_or(ran_for).as_secs_f64(),
                });
            }
            Outcome::SpawnFailed(e) => {
                return Err(BackendError::Tool {
                    command: tool.into(),
                    detail: e.to_string(),
                });
            }
        };
        Ok(Completed {
            status,
            stdout: ran.stdout,
            stderr: ran.stderr,
        })
    }

    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A file's owner inside an environment (numeric).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `run`, push or pull before `start`.
    #[error("environment `{0}` is not started\n    hint: strata env start {0}")]
    NotStarted(String),
    /// `start` of a running environment.
    #[error("environment `{0}` is already running")]
    AlreadyRunning(String),
    /// `create` of a name in use.
    #[error(
        "environment `{0}` exists already\n    hint: strata env delete {0}, or choose another name"
    )]
    AlreadyExists(String),
    /// No such environment.
    #[error("no environment `{0}`\n    hint: strata env list")]
    NoSuchEnvironment(String),
    /// The image is not there.
    #[error("image missing: {0}")]
    ImageMissing(String),
    /// The image is there but not a system this backend can start.
    #[error("{image} is not a system {backend} can start: it has no {path}")]
    NotASystem {
        /// The image (a path or an alias).
        image: String,
        /// The backend.
        backend: Backend,
        /// What is missing.
        path: &'static str,
    },
    /// Importing the image failed.
    #[error("import of {image} failed: {detail}")]
    ImportFailed {
        /// The image.
        image: String,
        /// Why.
        detail: String,
    },
    /// argv\[0\] is not a command inside.
    #[error("command not found in environment `{env}`: {command}")]
    CommandNotFound {
        /// The environment.
        env: String,
        /// The command.
        command: String,
    },
    /// The command ran longer than its timeout and was ended.
    #[error("`{command}` in environment `{env}` timed out after {secs:.1}s and was ended")]
    TimedOut {
        /// The environment.
        env: String,
        /// The command.
        command: String,
        /// The timeout.
        secs: f64,
    },
    /// A path inside the environment must be absolute.
    #[error("path inside the environment must be absolute: {0}")]
    PathNotAbsolute(String),
    /// A pull would have written outside the host folder it was given.
    #[error("pull of {source_path} refused: it would write outside {folder}")]
    PullEscapes {
        /// What was pulled.
        source_path: String,
        /// The host folder.
        folder: PathBuf,
    },
    /// The file or folder to pull or push is not there.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// An empty argv.
    #[error("nothing to run: the command line is empty")]
    EmptyCommand,
    /// A value given by the user that cannot be used (a name, a mode, …).
    #[error("{0}")]
    Invalid(String),
    /// A backend name nobody knows.
    #[error(transparent)]
    UnknownBackend(#[from] crate::kind::UnknownBackend),
    /// qemu.
    #[error("the {0} backend is not implemented yet")]
    NotImplemented(Backend),
    /// A running environment's VM is not there any more.
    #[error(
        "environment `{env}` is not running any more: {detail}\n    hint: strata env start {env}"
    )]
    Gone {
        /// The environment.
        env: String,
        /// What happened, with the console's last lines.
        detail: String,
    },
    /// The environment did not come up.
    #[error("environment `{env}` did not become ready within {secs}s: {detail}")]
    NotReady {
        /// The environment.
        env: String,
        /// How long we waited.
        secs: u64,
        /// The last state seen.
        detail: String,
    },
    /// An incus (or other tool) invocation failed.
    #[error("`{command}` failed: {detail}")]
    Tool {
        /// The command line, shortened.
        command: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// Building the image failed.
    #[error("{0}")]
    Build(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// File I/O on the host (fs-err names the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An environment of some backend, started or not.
pub trait ExecutionEnvironment: std::fmt::Debug {
    /// Its name (without the `strata-` instance prefix).
    fn name(&self) -> &str;
    /// Its backend.
    fn backend(&self) -> Backend;
    /// Its persistent state.
    fn state(&self) -> &EnvState;
    /// Boots it (incus: until systemd says running or degraded).
    fn start(&mut self) -> Result<(), BackendError>;
    /// Stops it: gracefully, then killed after the stop timeout.
    fn stop(&mut self) -> Result<Stopped, BackendError>;
    /// Removes everything of it.
    fn destroy(&mut self) -> Result<(), BackendError>;
    /// Runs `argv` inside.
    fn run(&self, argv: &[String], opts: &RunOptions) -> Result<Completed, BackendError>;
    /// Copies the host file `host` to `target` with `mode` and `owner`.
    fn file_push(
        &self,
        host: &Path,
        target: &str,
        mode: u32,
        owner: Owner,
    ) -> Result<(), BackendError>;
    /// Copies the regular file `source` to `folder/BASENAME`.
    fn file_pull(
        &self,
        source: &str,
        folder: &Path,
        specials: Specials,
    ) -> Result<Pulled, BackendError>;
    /// Copies the host folder `host` to `target` (created; modes and owners kept).
    fn dir_push(&self, host: &Path, target: &str) -> Result<(), BackendError>;
    /// Copies the folder `source` to `folder/BASENAME`.
    fn dir_pull(
        &self,
        source: &str,
        folder: &Path,
        specials: Specials,
    ) -> Result<Pulled, BackendError>;
}

/// What a pull does with what only a system needs and a host folder should
/// not get from an environment it does not trust: device nodes, FIFOs,
/// sockets, and setuid/setgid bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Specials {
    /// Leaves special files out and clears setuid/setgid (the default).
    #[default]
    Drop,
    /// Recreates them as they are inside (`strata env pull --specials`).
    Keep,
}

/// Where a pull landed, and what [`Specials::Drop`] changed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// `FOLDER/BASENAME`.
    pub path: PathBuf,
    /// Device nodes, FIFOs and sockets left out.
    pub left_out: usize,
    /// Files whose setuid/setgid bits were cleared.
    pub cleared: usize,
}

/// How `stop` ended an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It shut down when asked.
    Gracefully,
    /// It did not within the stop timeout and was killed.
    Killed,
}

/// What an environment is, kept between strata invocations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvState {
    /// Its name.
    pub name: String,
    /// Its backend.
    pub backend: Backend,
    /// What it was made from (a pipeline or tarball, for people).
    pub origin: String,
    /// The content id of the system it was made from.
    pub artifact_id: String,
    /// unshare: the tree; incus: the image alias.
    pub image: String,
    /// incus: the instance name.
    #[serde(default)]
    pub instance: Option<String>,
    /// Whether it is started.
    pub running: bool,
    /// Seconds `stop` waits before it kills.
    pub stop_timeout: u64,
    /// incus: whether the instance keeps the `debusine` NIC; `start` then
    /// waits for its lease and gives it a resolver. (States written before
    /// the field existed had the NIC.)
    #[serde(default = "has_network")]
    pub network: bool,
    /// qemu: the VM (disk format, boot mechanism, size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<qemu::Vm>,
}

fn has_network() -> bool {
    true
}

impl EnvState {
    /// The stop timeout as a duration.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout)
    }
}

/// The default graceful-stop timeout.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks that `path` is absolute and has no `..`.
pub fn inside_path(path: &str) -> Result<&str, BackendError> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(BackendError::PathNotAbsolute(path.to_owned()));
    }
    Ok(path)
}

/// The last component of an inside path, refusing `/` and `..`.
pub(crate) fn basename<'a>(source: &'a str, folder: &Path) -> Result<&'a str, BackendError> {
    match Path::new(source).file_name().and_then(|n| n.to_str()) {
        Some(n) if n != ".." && n != "." => Ok(n),
        _ => Err(BackendError::PullEscapes {
            source_path: source.to_owned(),
            folder: folder.to_path_buf(),
        }),
    }
}

/// Opens an environment from its state, with the real incus CLI.
pub fn open(
    state: EnvState,
    store: &crate::store::Store,
) -> Result<Box<dyn ExecutionEnvironment>, BackendError> {
    match state.backend {
        Backend::Unshare => {
            let dir = store.layout().instance(&state.name);
            Ok(Box::new(unshare::Unshare::open(state, dir)))
        }
        Backend::IncusLxc | Backend::IncusVm => Ok(Box::new(incus::Incus::open(
            state,
            store.root(),
            std::sync::Arc::new(cli::SystemCli),
        ))),
        Backend::Qemu => {
            let dir = store.layout().instance(&state.name);
            Ok(Box::new(qemu::Qemu::open(state, &dir)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in [
            Backend::Unshare,
            Backend::IncusLxc,
            Backend::IncusVm,
            Backend::Qemu,
        ] {
            assert_eq!(Backend::parse(b.as_str()).unwrap(), b);
        }
        assert_eq!(Backend::parse("bwrap").unwrap(), Backend::Unshare);
        let err = Backend::parse("docker").unwrap_err().to_string();
        assert!(err.contains("unknown backend `docker`"), "{err}");
    }

    #[test]
    fn inside_paths_are_absolute_without_dotdot() {
        assert!(inside_path("/etc/passwd").is_ok());
        for bad in ["etc/passwd", "", "/etc/../root", "./x"] {
            assert!(
                matches!(inside_path(bad), Err(BackendError::PathNotAbsolute(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_pull_needs_a_base_name_to_land_under() {
        let folder = Path::new("/host/out");
        assert_eq!(basename("/var/log/dpkg.log", folder).unwrap(), "dpkg.log");
        for bad in ["/", "/var/.."] {
            assert!(
                matches!(basename(bad, folder), Err(BackendError::PullEscapes { .. })),
                "{bad}"
            );
        }
    }
}
