//! The `unshare` backend: bubblewrap over a private copy of a system tree.
//!
//! ```text
//! STORE/instances/NAME/
//!   state.json     what envs keeps
//!   tree/          a copy of the image (a stored pipeline tree or an unpacked tarball)
//! ```
//!
//! Every `run` is one sandbox (the sandbox module's [`StageSpec`], with the
//! tree read-write as `/`, its own /tmp and /var/tmp bound so files survive
//! between runs); `start` and `stop` only mark the environment, since no
//! process outlives a run. Push and pull are copies into and out of the tree,
//! resolved beneath its root ([`super::pull`]).

use super::pull;
use super::{
    Backend, BackendError, Completed, EnvState, ExecutionEnvironment, Owner, Pulled, RunOptions,
    Specials, USER_ID, USER_NAME, User, inside_path,
};
use crate::sandbox::process::{self, Invocation, Output};
use crate::sandbox::{Mount, Root, StageSpec};
use crate::store::copy::copy_tree;
use crate::store::{InstancePaths, durable};
use fs_err as fs;
use rustix::fs::OFlags;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// An unshare environment.
#[derive(Debug)]
pub struct Unshare {
    state: EnvState,
    dir: InstancePaths,
}

/// The PATH commands are looked up in, inside.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Unshare {
    /// Makes environment `name` in `dir` (STORE/instances/NAME) from a
    /// copy of the system tree `image`.
    pub fn create(
        dir: &InstancePaths,
        name: &str,
        image: &Path,
        origin: &str,
        artifact_id: &str,
    ) -> Result<Unshare, BackendError> {
        if !image.is_dir() {
            return Err(BackendError::ImageMissing(image.display().to_string()));
        }
        let required = Backend::Unshare.required_path();
        if pull::open_in_root(image, required, OFlags::PATH).is_err() {
            return Err(BackendError::NotASystem {
                image: image.display().to_string(),
                backend: Backend::Unshare,
                path: required,
            });
        }
        let tree = dir.tree();
        if tree.exists() {
            return Err(BackendError::AlreadyExists(name.to_owned()));
        }
        durable::create_dir_all(dir.dir())?;
        // Copy beside, flush it (one syncfs for the whole copy), then
        // rename: a half copy is never an environment, not even after a
        // crash of the machine.
        let staging = dir.tree_staging();
        let _ = std::fs::remove_dir_all(&staging);
        let copied = copy_tree(image, &staging)
            .and_then(|()| durable::sync_filesystem(&staging))
            .and_then(|()| durable::rename(&staging, &tree));
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_dir(dir.dir());
            return Err(e.into());
        }
        Ok(Unshare {
            dir: dir.clone(),
            state: EnvState {
                name: name.to_owned(),
                backend: Backend::Unshare,
                origin: origin.to_owned(),
                artifact_id: artifact_id.to_owned(),
                image: tree.display().to_string(),
                instance: None,
                running: false,
                stop_timeout: super::STOP_TIMEOUT.as_secs(),
                // bwrap over the tree: the host's network is not shared.
                network: false,
                vm: None,
            },
        })
    }

    /// The environment `state` describes, kept in `dir`.
    pub fn open(mut state: EnvState, dir: InstancePaths) -> Unshare {
        // The tree is where the store's layout puts it: a state written
        // before the store was moved names it where it was.
        state.image = dir.tree().display().to_string();
        Unshare { state, dir }
    }

    fn tree(&self) -> PathBuf {
        self.dir.tree()
    }

    fn require_running(&self) -> Result<(), BackendError> {
        if !self.state.running {
            return Err(BackendError::NotStarted(self.state.name.clone()));
        }
        Ok(())
    }

    /// Whether argv\[0\] names an executable inside, looked up on PATH.
    fn find_command(&self, command: &str, path: &str) -> bool {
        let tree = self.tree();
        let exists = |p: &str| {
            pull::real_path(&tree, p).is_ok_and(|real| {
                std::fs::metadata(real).is_ok_and(|m| {
                    std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                        && !m.is_dir()
                })
            })
        };
        if command.contains('/') {
            return command.starts_with('/') && exists(command);
        }
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .any(|d| exists(&format!("{d}/{command}")))
    }

    /// Makes the unprivileged user, once: `useradd` from the tree.
    fn ensure_user(&self) -> Result<(), BackendError> {
        let tree = self.tree();
        let passwd = pull::real_path(&tree, "/etc/passwd")?;
        let known = fs::read_to_string(&passwd)?
            .lines()
            .any(|l| l.starts_with(&format!("{USER_NAME}:")));
        if known {
            return Ok(());
        }
        let script = format!(
            "useradd --create-home --uid {USER_ID} --user-group --shell /bin/sh {USER_NAME}"
        );
        let done = self.bwrap(
            &["/bin/sh".into(), "-c".into(), script.clone()],
            &RunOptions::captured(),
            vec![],
        )?;
        if done.status != 0 {
            return Err(BackendError::Tool {
                command: script,
                detail: done.stderr_text(),
            });
        }
        Ok(())
    }

    fn bwrap(
        &self,
        argv: &[String],
        opts: &RunOptions,
        env: Vec<(String, String)>,
    ) -> Result<Completed, BackendError> {
        let tree = self.tree();
        let mut mounts = Vec::new();
        // bwrap gives every sandbox a fresh /tmp; an environment keeps its own.
        for dir in ["/tmp", "/var/tmp"] {
            if let Ok(real) = pull::real_path(&tree, dir)
                && real.is_dir()
            {
                mounts.push(Mount::Bind(real, dir.to_owned()));
            }
        }
        let spec = StageSpec {
            root: Root::TreeRw(tree),
            mounts,
            network: false,
            loopback_ports: Vec::new(),
            env,
            argv: argv.iter().map(OsString::from).collect(),
            limits: Default::default(),
        };
        let cwd = opts.cwd.as_deref().unwrap_or("/");
        crate::sandbox::userns::require_entry().map_err(std::io::Error::other)?;
        // Before bwrap follows any path in the tree (sandbox/places.rs).
        let places = spec
            .places()
            .map_err(|e| BackendError::Invalid(e.to_string()))?;
        let ran = process::run(&Invocation {
            program: "bwrap".into(),
            args: spec.bwrap_argv_in(cwd, &places),
            stdin: opts.stdin.clone(),
            output: if opts.capture {
                Output::Capture
            } else {
                Output::Inherit
            },
            timeout: opts.timeout,
            cleanup: false,
        });
        Completed::from_ran(&self.state.name, argv, "bwrap", ran, opts.timeout)
    }
}

/// The environment a command starts with, before the caller's additions.
pub(crate) fn base_env(user: User, home: &str) -> Vec<(String, String)> {
    let name = match user {
        User::Root => "root",
        User::Unprivileged => USER_NAME,
    };
    vec![
        ("PATH".into(), PATH.into()),
        ("HOME".into(), home.into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("USER".into(), name.into()),
        ("LOGNAME".into(), name.into()),
    ]
}

/// The home folder of `user`.
pub(crate) fn home(user: User) -> String {
    match user {
        User::Root => "/root".into(),
        User::Unprivileged => format!("/home/{USER_NAME}"),
    }
}

impl ExecutionEnvironment for Unshare {
    fn name(&self) -> &str {
        &self.state.name
    }

    fn backend(&self) -> Backend {
        Backend::Unshare
    }

    fn state(&self) -> &EnvState {
        &self.state
    }

    fn start(&mut self) -> Result<(), BackendError> {
        if self.state.running {
            return Err(BackendError::AlreadyRunning(self.state.name.clone()));
        }
        if !self.tree().is_dir() {
            return Err(BackendError::ImageMissing(self.state.image.clone()));
        }
        self.state.running = true;
        Ok(())
    }

    fn stop(&mut self) -> Result<super::Stopped, BackendError> {
        // Runs end with their sandbox (die-with-parent): nothing to stop.
        self.require_running()?;
        self.state.running = false;
        Ok(super::Stopped::Gracefully)
    }

    fn destroy(&mut self) -> Result<(), BackendError> {
        self.state.running = false;
        let tree = self.tree();
        if tree.exists() {
            fs::remove_dir_all(&tree)?;
            let _ = std::fs::remove_dir_all(self.dir.tree_staging());
        }
        Ok(())
    }

    fn run(&self, argv: &[String], opts: &RunOptions) -> Result<Completed, BackendError> {
        self.require_running()?;
        let Some(command) = argv.first() else {
            return Err(BackendError::EmptyCommand);
        };
        if let Some(cwd) = &opts.cwd {
            inside_path(cwd)?;
        }
        if opts.user == User::Unprivileged {
            self.ensure_user()?;
        }
        let mut env = base_env(opts.user, &home(opts.user));
        for (k, v) in &opts.env {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), v.clone()));
        }
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(PATH.to_owned(), |(_, v)| v.clone());
        if !self.find_command(command, &path) {
            return Err(BackendError::CommandNotFound {
                env: self.state.name.clone(),
                command: command.clone(),
            });
        }
        let argv = match opts.user {
            User::Root => argv.to_vec(),
            // setpriv (util-linux) drops to the user without PAM or a login shell.
            User::Unprivileged => {
                let id = USER_ID.to_string();
                let mut a: Vec<String> = [
                    "setpriv",
                    "--reuid",
                    &id,
                    "--regid",
                    &id,
                    "--init-groups",
                    "--",
                ]
                .map(String::from)
                .to_vec();
                a.extend(argv.iter().cloned());
                a
            }
        };
        let mut opts = opts.clone();
        if opts.cwd.is_none() {
            opts.cwd = Some(home(opts.user));
        }
        self.bwrap(&argv, &opts, env)
    }

    fn file_push(
        &self,
        host: &Path,
        target: &str,
        mode: u32,
        owner: Owner,
    ) -> Result<(), BackendError> {
        self.require_running()?;
        pull::push_file(&self.tree(), host, inside_path(target)?, mode, owner)
    }

    fn file_pull(
        &self,
        source: &str,
        folder: &Path,
        specials: Specials,
    ) -> Result<Pulled, BackendError> {
        self.require_running()?;
        pull::pull_file(&self.tree(), inside_path(source)?, folder, specials)
    }

    fn dir_push(&self, host: &Path, target: &str) -> Result<(), BackendError> {
        self.require_running()?;
        pull::push_dir(&self.tree(), host, inside_path(target)?)
    }

    fn dir_pull(
        &self,
        source: &str,
        folder: &Path,
        specials: Specials,
    ) -> Result<Pulled, BackendError> {
        self.require_running()?;
        pull::pull_dir(&self.tree(), inside_path(source)?, folder, specials)
    }
}
