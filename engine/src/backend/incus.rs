//! The `incus-lxc` and `incus-vm` backends: the incus CLI, through [`Cli`].
//!
//! ```text
//! image alias artifact/<id>  ──incus init (--vm) --profile debusine──▶  instance strata-NAME
//!                                                                        config user.strata.store = STORE
//!                                                                               user.strata.env   = NAME   (strata env)
//!                                                                               user.strata.pid   = PID    (a stage's instance)
//! start:   incus start; poll `systemctl is-system-running` until running/degraded; make the user
//! run:     incus exec --mode non-interactive [--cwd] [--env]… [--user --group] -- [timeout -s KILL N] argv
//! push:    incus file push --uid --gid --mode              (folders: tar on stdin)
//! pull:    readlink -e inside, incus file pull into a temp entry in the host folder, check, rename
//!          (folders: tar on stdout, unpacked by GNU tar into the temp entry)
//! stop:    incus stop --timeout T, then incus stop --force
//! gc:      instances of this store whose env state or owning process is gone; images of this
//!          store that no instance and no environment uses
//! ```

use super::cli::Cli;
use super::pull::{self, landing, settle};
use super::{
    Backend, BackendError, Completed, EnvState, ExecutionEnvironment, Owner, Pulled, RunOptions,
    Specials, Stopped, USER_ID, USER_NAME, User, basename, inside_path,
};
use crate::sandbox::process::{Invocation, Outcome, Output, Ran, Stdin};
use fs_err as fs;
use serde_json::Value;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Instance names strata makes start with this.
pub const PREFIX: &str = "strata-";
/// The profile every instance gets (debusine's: a NIC on its NAT bridge).
pub const PROFILE: &str = "debusine";
/// Applied after [`PROFILE`] to instances without network: it masks the
/// NIC, so they have only loopback (docs/incus-setup.sh makes it).
pub const OFFLINE_PROFILE: &str = "strata-offline";
/// How long `start` waits for systemd.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `start` waits for a networked instance's DHCP lease.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(60);

/// An incus container or VM.
#[derive(Debug)]
pub struct Incus {
    state: EnvState,
    store: PathBuf,
    cli: Arc<dyn Cli>,
}

/// Runs `incus args…` through `cli`, capturing; an error names the command.
pub fn incus(cli: &dyn Cli, args: &[&str]) -> Result<Ran, BackendError> {
    incus_with(cli, args, Stdin::Null, false)
}

fn incus_with(
    cli: &dyn Cli,
    args: &[&str],
    stdin: Stdin,
    cleanup: bool,
) -> Result<Ran, BackendError> {
    let ran = cli.run(&Invocation {
        program: "incus".into(),
        args: args.iter().map(OsString::from).collect(),
        stdin,
        output: Output::Capture,
        timeout: None,
        cleanup,
    });
    match ran.outcome {
        Outcome::Interrupted => Err(BackendError::Interrupted),
        Outcome::SpawnFailed(e) => Err(BackendError::Tool {
            command: "incus".into(),
            detail: format!("{e}\n    hint: install incus (docs/incus.md, docs/incus-setup.sh)"),
        }),
        _ => Ok(ran),
    }
}

/// Like [`incus`], but a non-zero exit is an error quoting incus's stderr.
pub fn incus_ok(cli: &dyn Cli, args: &[&str]) -> Result<Ran, BackendError> {
    let ran = incus(cli, args)?;
    if !ran.outcome.success() {
        return Err(tool_error(args, &ran));
    }
    Ok(ran)
}

fn tool_error(args: &[&str], ran: &Ran) -> BackendError {
    let stderr = String::from_utf8_lossy(&ran.stderr).trim().to_owned();
    BackendError::Tool {
        command: format!("incus {}", args.join(" ")),
        detail: if stderr.is_empty() {
            ran.outcome.describe()
        } else {
            stderr
        },
    }
}

/// Whether incus knows the image `alias`.
pub fn image_exists(cli: &dyn Cli, alias: &str) -> Result<bool, BackendError> {
    Ok(incus(cli, &["image", "info", alias])?.outcome.success())
}

/// The canonical form of a store path, as instances record it.
pub fn store_key(store: &Path) -> String {
    std::fs::canonicalize(store)
        .unwrap_or_else(|_| store.to_path_buf())
        .display()
        .to_string()
}

/// Checks an environment name: it becomes part of an instance name.
pub fn check_name(name: &str) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && name.len() + PREFIX.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(BackendError::Invalid(format!(
            "bad environment name `{name}`: letters, digits and `-`, at most 56 characters, not ending in `-`"
        )))
    }
}

/// What [`Incus::create`] makes.
#[derive(Debug, Clone, Copy)]
pub struct InstanceSpec<'a> {
    /// The environment's name; the instance is `strata-NAME`.
    pub name: &'a str,
    /// Container or VM.
    pub backend: Backend,
    /// The image it starts from.
    pub alias: &'a str,
    /// Where the image came from, for people.
    pub origin: &'a str,
    /// The pipeline id the image was made from, if any.
    pub artifact_id: &'a str,
    /// A stage's instance: the strata process it belongs to (GC removes it
    /// once that process is gone).
    pub owner_pid: Option<u32>,
    /// Whether it keeps the profile's NIC; without, only loopback.
    pub network: bool,
}

impl Incus {
    /// Creates (does not start) instance `strata-NAME` as `spec` says.
    pub fn create(
        store: &Path,
        spec: &InstanceSpec<'_>,
        cli: Arc<dyn Cli>,
    ) -> Result<Incus, BackendError> {
        let InstanceSpec {
            name,
            backend,
            alias,
            origin,
            artifact_id,
            owner_pid,
            network,
        } = *spec;
        check_name(name)?;
        if !image_exists(cli.as_ref(), alias)? {
            return Err(BackendError::ImageMissing(format!(
                "incus has no image `{alias}`"
            )));
        }
        let instance = format!("{PREFIX}{name}");
        let store_cfg = format!("user.strata.store={}", store_key(store));
        let mark = match owner_pid {
            Some(pid) => format!("user.strata.pid={pid}"),
            None => format!("user.strata.env={name}"),
        };
        let mut args = vec![
            "init",
            alias,
            &instance,
            "--profile",
            PROFILE,
            "-c",
            &store_cfg,
            "-c",
            &mark,
        ];
        if !network {
            args.extend(["--profile", OFFLINE_PROFILE]);
        }
        if backend == Backend::IncusVm {
            args.push("--vm");
        }
        let ran = incus(cli.as_ref(), &args)?;
        if !ran.outcome.success() {
            let err = String::from_utf8_lossy(&ran.stderr);
            if err.contains("already exists") {
                return Err(BackendError::AlreadyExists(name.to_owned()));
            }
            let lower = err.to_lowercase();
            if lower.contains("profile") && lower.contains("not found") {
                return Err(BackendError::Tool {
                    command: format!("incus {}", args.join(" ")),
                    detail: format!(
                        "{}\n    hint: profiles `{PROFILE}` and `{OFFLINE_PROFILE}` come from docs/incus-setup.sh; run it",
                        err.trim()
                    ),
                });
            }
            return Err(tool_error(&args, &ran));
        }
        Ok(Incus {
            state: EnvState {
                name: name.to_owned(),
                backend,
                origin: origin.to_owned(),
                artifact_id: artifact_id.to_owned(),
                image: alias.to_owned(),
                instance: Some(instance),
                running: false,
                stop_timeout: super::STOP_TIMEOUT.as_secs(),
                network,
                vm: None,
            },
            store: store.to_path_buf(),
            cli,
        })
    }

    /// The environment `state` describes.
    pub fn open(state: EnvState, store: &Path, cli: Arc<dyn Cli>) -> Incus {
        Incus {
            state,
            store: store.to_path_buf(),
            cli,
        }
    }

    /// Sets how long `stop` waits before it kills.
    pub fn set_stop_timeout(&mut self, timeout: Duration) {
        self.state.stop_timeout = timeout.as_secs().max(1);
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        self.state.instance.as_deref().unwrap_or("")
    }

    /// What autopkgtest's incus virt server is given: the image alias.
    pub fn autopkgtest_virt_args(&self) -> Vec<String> {
        vec![self.state.image.clone()]
    }

    /// The store this environment belongs to.
    pub fn store(&self) -> &Path {
        &self.store
    }

    fn require_running(&self) -> Result<(), BackendError> {
        if !self.state.running {
            return Err(BackendError::NotStarted(self.state.name.clone()));
        }
        Ok(())
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), BackendError> {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            let ran = incus(
                self.cli.as_ref(),
                &[
                    "exec",
                    self.instance(),
                    "--mode",
                    "non-interactive",
                    "--",
                    "systemctl",
                    "is-system-running",
                ],
            )?;
            let state = String::from_utf8_lossy(&ran.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if !state.is_empty() {
                last = state;
            } else if !ran.stderr.is_empty() {
                last = String::from_utf8_lossy(&ran.stderr).trim().to_owned();
            }
            if started.elapsed() > limit {
                return Err(BackendError::NotReady {
                    env: self.state.name.clone(),
                    secs: limit.as_secs(),
                    detail: last,
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Readies a networked instance: waits for its DHCP lease (a default
    /// route) and, unless the image has a resolver of its own, points
    /// /etc/resolv.conf at the gateway, where incus's dnsmasq answers. The
    /// images have systemd-networkd, which takes the lease but writes no
    /// resolv.conf without systemd-resolved.
    fn connect(&self, limit: Duration) -> Result<(), BackendError> {
        let started = Instant::now();
        let gateway = loop {
            let ran = self.exec(&["cat", "/proc/net/route"], Stdin::Null)?;
            if let Some(gateway) = default_gateway(&String::from_utf8_lossy(&ran.stdout)) {
                break gateway;
            }
            if started.elapsed() > limit {
                return Err(BackendError::NotReady {
                    env: self.state.name.clone(),
                    secs: limit.as_secs(),
                    detail: "it got no default route (no DHCP lease on the `debusine` profile's NIC)\n    hint: docs/incus-setup.sh gives debusinebr0 addresses and NAT".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let script = "grep -qs '^nameserver' /etc/resolv.conf || { rm -f /etc/resolv.conf; echo \"nameserver $1\" > /etc/resolv.conf; }";
        let argv = ["sh", "-c", script, "sh", &gateway.to_string()];
        let ran = self.exec(&argv, Stdin::Null)?;
        if !ran.outcome.success() {
            return Err(tool_error(&argv, &ran));
        }
        Ok(())
    }

    fn exec(&self, argv: &[&str], stdin: Stdin) -> Result<Ran, BackendError> {
        let mut args = vec!["exec", self.instance(), "--mode", "non-interactive", "--"];
        args.extend_from_slice(argv);
        incus_with(self.cli.as_ref(), &args, stdin, false)
    }
}

/// The gateway of the default route in /proc/net/route, which prints each
/// address as the hex of a native-endian u32 holding its bytes.
fn default_gateway(route: &str) -> Option<std::net::Ipv4Addr> {
    route.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"00000000") {
            return None;
        }
        let hex = u32::from_str_radix(fields.get(2)?, 16).ok()?;
        (hex != 0).then(|| std::net::Ipv4Addr::from(hex.to_ne_bytes()))
    })
}

impl ExecutionEnvironment for Incus {
    fn name(&self) -> &str {
        &self.state.name
    }

    fn backend(&self) -> Backend {
        self.state.backend
    }

    fn state(&self) -> &EnvState {
        &self.state
    }

    fn start(&mut self) -> Result<(), BackendError> {
        if self.state.running {
            return Err(BackendError::AlreadyRunning(self.state.name.clone()));
        }
        let args = ["start", self.instance()];
        let ran = incus(self.cli.as_ref(), &args)?;
        if !ran.outcome.success() {
            let err = String::from_utf8_lossy(&ran.stderr);
            if err.contains("already running") {
                return Err(BackendError::AlreadyRunning(self.state.name.clone()));
            }
            if err.contains("not found") {
                return Err(BackendError::NoSuchEnvironment(self.state.name.clone()));
            }
            return Err(tool_error(&args, &ran));
        }
        self.state.running = true;
        self.wait_ready(READY_TIMEOUT)?;
        if self.state.network {
            self.connect(NETWORK_TIMEOUT)?;
        }
        let script = format!(
            "id -u {USER_NAME} >/dev/null 2>&1 || useradd --create-home --uid {USER_ID} --user-group --shell /bin/sh {USER_NAME}"
        );
        let ran = self.exec(&["sh", "-c", &script], Stdin::Null)?;
        if !ran.outcome.success() {
            return Err(tool_error(&["exec", "--", "sh", "-c", &script], &ran));
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<Stopped, BackendError> {
        self.require_running()?;
        let timeout = self.state.stop_timeout.to_string();
        let graceful = incus(
            self.cli.as_ref(),
            &["stop", self.instance(), "--timeout", &timeout],
        )?;
        let how = if graceful.outcome.success() {
            Stopped::Gracefully
        } else {
            incus_ok(self.cli.as_ref(), &["stop", self.instance(), "--force"])?;
            Stopped::Killed
        };
        self.state.running = false;
        Ok(how)
    }

    fn destroy(&mut self) -> Result<(), BackendError> {
        let args = ["delete", "--force", self.instance()];
        // An operation on the instance still running server-side (a start
        // whose client was interrupted) makes a delete fail for a moment.
        let mut attempts = 0;
        loop {
            let ran = incus_with(self.cli.as_ref(), &args, Stdin::Null, true)?;
            let stderr = String::from_utf8_lossy(&ran.stderr);
            if ran.outcome.success() || stderr.contains("not found") {
                break;
            }
            attempts += 1;
            if attempts == 120 {
                return Err(tool_error(&args, &ran));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        self.state.running = false;
        Ok(())
    }

    fn run(&self, argv: &[String], opts: &RunOptions) -> Result<Completed, BackendError> {
        self.require_running()?;
        if argv.is_empty() {
            return Err(BackendError::EmptyCommand);
        }
        let mut args: Vec<String> = vec![
            "exec".into(),
            self.instance().into(),
            "--mode".into(),
            "non-interactive".into(),
        ];
        let home = super::unshare::home(opts.user);
        let cwd = match &opts.cwd {
            Some(cwd) => inside_path(cwd)?.to_owned(),
            None => home.clone(),
        };
        args.extend(["--cwd".into(), cwd]);
        if opts.user == User::Unprivileged {
            let id = USER_ID.to_string();
            args.extend(["--user".into(), id.clone(), "--group".into(), id]);
            for (k, v) in [
                ("HOME", home.as_str()),
                ("USER", USER_NAME),
                ("LOGNAME", USER_NAME),
            ] {
                args.extend(["--env".into(), format!("{k}={v}")]);
            }
        }
        for (k, v) in &opts.env {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }
        args.push("--".into());
        // A killed `incus exec` leaves its command running inside: the
        // timeout is enforced inside, and by the host watchdog as a backstop.
        if let Some(limit) = opts.timeout {
            let secs = format!("{:.3}", limit.as_secs_f64());
            args.extend(["timeout", "-s", "KILL", &secs].map(String::from));
        }
        args.extend(argv.iter().cloned());
        let started = Instant::now();
        let ran = self.cli.run(&Invocation {
            program: "incus".into(),
            args: args.iter().map(OsString::from).collect(),
            stdin: opts.stdin.clone(),
            output: if opts.capture {
                Output::Capture
            } else {
                Output::Inherit
            },
            timeout: opts.timeout.map(|t| t + Duration::from_secs(10)),
            cleanup: false,
        });
        // `timeout -s KILL` inside ends the command with 137 at the limit;
        // incus says 127 and "Command not found" for a missing program.
        match ran.outcome {
            Outcome::Finished(137) if opts.timeout.is_some_and(|t| started.elapsed() >= t) => {
                Err(BackendError::TimedOut {
                    env: self.state.name.clone(),
                    command: argv.join(" "),
                    secs: opts.timeout.unwrap_or_default().as_secs_f64(),
                })
            }
            Outcome::Finished(127)
                if String::from_utf8_lossy(&ran.stderr).contains("Error: Command not found") =>
            {
                Err(BackendError::CommandNotFound {
                    env: self.state.name.clone(),
                    command: argv[0].clone(),
                })
            }
            _ => Completed::from_ran(&self.state.name, argv, "incus exec", ran, opts.timeout),
        }
    }

    fn file_push(
        &self,
        host: &Path,
        target: &str,
        mode: u32,
        owner: Owner,
    ) -> Result<(), BackendError> {
        self.require_running()?;
        inside_path(target)?;
        if !host.is_file() {
            return Err(BackendError::NotFound(host.display().to_string()));
        }
        let (uid, gid, mode) = (
            owner.uid.to_string(),
            owner.gid.to_string(),
            format!("{mode:04o}"),
        );
        let dest = format!("{}{target}", self.instance());
        let host = host.to_string_lossy();
        incus_ok(
            self.cli.as_ref(),
            &[
                "file", "push", "--uid", &uid, "--gid", &gid, "--mode", &mode, &host, &dest,
            ],
        )?;
        Ok(())
    }

    fn file_pull(
        &self,
        source: &str,
        folder: &Path,
        specials: Specials,
    ) -> Result<Pulled, BackendError> {
        self.require_running()?;
        inside_path(source)?;
        basename(source, folder)?;
        // Resolve inside (the instance is its own root), then pull what it
        // names: only a regular file, since incus would read a FIFO or a
        // device for as long as it gives. What the instance prints is its
        // own say, so it is checked before it becomes an argument.
        let script = r#"p=$(readlink -e -- "$1") && [ -f "$p" ] && printf '%s' "$p""#;
        let resolved = self.exec(&["sh", "-c", script, "strata-pull", source], Stdin::Null)?;
        if !resolved.outcome.success() {
            return Err(BackendError::NotFound(source.to_owned()));
        }
        let real = resolved_path(&resolved.stdout, source)?;
        let land = landing(folder)?;
        let landed = land.path().join("file");
        let from = format!("{}{real}", self.instance());
        let to = landed.to_string_lossy();
        incus_ok(self.cli.as_ref(), &["file", "pull", &from, &to])?;
        // incus keeps the mode the instance gave the file.
        let mode = fs::symlink_metadata(&landed)
            .map_err(|_| BackendError::NotFound(source.into()))?
            .permissions()
            .mode();
        let (kept, cleared) = pull::kept_mode(mode, specials);
        if cleared {
            fs::set_permissions(&landed, std::fs::Permissions::from_mode(kept))?;
        }
        Ok(Pulled {
            path: settle(&landed, source, folder, false)?,
            left_out: 0,
            cleared: usize::from(cleared),
        })
    }

    fn dir_push(&self, host: &Path, target: &str) -> Result<(), BackendError> {
        self.require_running()?;
        inside_path(target)?;
        if !host.is_dir() {
            return Err(BackendError::NotFound(host.display().to_string()));
        }
        let archive = pull::archive_host_dir(host)?;
        let ran = self.exec(
            &["sh", "-c", pull::PUSH_DIR, "strata-push", target],
            Stdin::Bytes(archive),
        )?;
        // By status, not by message: incus may lose the stderr of a command
        // that ends without reading its stdin.
        if matches!(ran.outcome, Outcome::Finished(17)) {
            return Err(BackendError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{target} exists already in the environment"),
            )));
        }
        if !ran.outcome.success() {
            return Err(tool_error(&["exec", "--", "tar", "-x", target], &ran));
        }
        Ok(())
    }

    fn dir_pull(
        &self,
        source: &str,
        folder: &Path,
        specials: Specials,
    ) -> Result<Pulled, BackendError> {
        self.require_running()?;
        inside_path(source)?;
        basename(source, folder)?;
        let ran = self.exec(
            &["sh", "-c", pull::PULL_DIR, "strata-pull", source],
            Stdin::Null,
        )?;
        if !ran.outcome.success() {
            return Err(BackendError::NotFound(source.to_owned()));
        }
        // The instance's tar made the archive: one parser reads it and
        // writes what the host's tar unpacks.
        pull::unpack_pulled(&ran.stdout, source, folder, specials)
    }
}

/// The path an instance printed for `source`, if it is one: absolute, one
/// line, no control characters, no `..`.
fn resolved_path(printed: &[u8], source: &str) -> Result<String, BackendError> {
    let bad = || BackendError::Tool {
        command: format!("pull {source}"),
        detail: "the instance resolved it to something that is not a plain absolute path".into(),
    };
    let text = std::str::from_utf8(printed).map_err(|_| bad())?;
    if text.chars().any(char::is_control) || inside_path(text).is_err() || text == "/" {
        return Err(bad());
    }
    Ok(text.to_owned())
}

/// What [`gc`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Instances deleted.
    pub instances: Vec<String>,
    /// Image aliases (or fingerprints) deleted.
    pub images: Vec<String>,
}

/// Removes the instances and images of `store` that nothing uses any more:
/// an environment's instance whose state is gone from `STORE/instances`, a
/// stage's instance whose strata process has ended, and images imported
/// for this store (or for a store that no longer exists) that no instance
/// and no environment uses.
pub fn gc(store: &Path, cli: &dyn Cli, envs: &[EnvState]) -> Result<Collected, BackendError> {
    let key = store_key(store);
    let mut out = Collected::default();
    let list = incus_ok(cli, &["list", "--format", "json"])?;
    let instances: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap_or_default();
    let mut used_images = std::collections::BTreeSet::new();
    for inst in &instances {
        let name = inst["name"].as_str().unwrap_or_default();
        let config = &inst["config"];
        let ours = name.starts_with(PREFIX) && config["user.strata.store"].as_str() == Some(&key);
        let leaked = ours
            && match (
                config["user.strata.env"].as_str(),
                config["user.strata.pid"].as_str(),
            ) {
                (Some(env), _) => !envs
                    .iter()
                    .any(|s| s.name == env && s.instance.as_deref() == Some(name)),
                (None, Some(pid)) => !pid_alive(pid),
                (None, None) => false,
            };
        if leaked {
            let ran = incus_with(cli, &["delete", "--force", name], Stdin::Null, true)?;
            if ran.outcome.success() {
                out.instances.push(name.to_owned());
                continue;
            }
        }
        if let Some(fp) = config["volatile.base_image"].as_str() {
            used_images.insert(fp.to_owned());
        }
    }
    let images = incus_ok(cli, &["image", "list", "--format", "json"])?;
    let images: Vec<Value> = serde_json::from_slice(&images.stdout).unwrap_or_default();
    for image in &images {
        let fp = image["fingerprint"].as_str().unwrap_or_default();
        // This store's images, and those of stores that are gone (a
        // removed scratch store can never collect its own).
        let owner = image["properties"]["strata.store"].as_str();
        let ours = owner == Some(key.as_str()) || owner.is_some_and(|o| !Path::new(o).exists());
        if !ours || used_images.contains(fp) {
            continue;
        }
        let aliases: Vec<&str> = image["aliases"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        if aliases.iter().any(|a| {
            envs.iter()
                .any(|s| s.backend != Backend::Unshare && s.image == *a)
        }) {
            continue;
        }
        if incus(cli, &["image", "delete", fp])?.outcome.success() {
            out.images
                .push(aliases.first().map_or(fp.to_owned(), |a| (*a).to_owned()));
        }
    }
    Ok(out)
}

fn pid_alive(pid: &str) -> bool {
    pid.parse::<u32>()
        .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists())
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_path_an_instance_prints_is_checked_before_use() {
        assert_eq!(
            resolved_path(b"/srv/out.bin", "/x").unwrap(),
            "/srv/out.bin"
        );
        for bad in [
            &b"relative"[..],
            b"/",
            b"/srv/../etc/shadow",
            b"/srv/a\n/etc/shadow",
            b"/srv/\x1b[2J",
            b"\xff\xfe",
            b"",
        ] {
            assert!(resolved_path(bad, "/x").is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn the_default_gateway_is_read_from_proc_net_route() {
        let head =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let route = format!(
            "{head}host0\t00000000\t0107D30A\t0003\t0\t0\t1024\t00000000\t0\t0\t0\nhost0\t0007D30A\t00000000\t0001\t0\t0\t1024\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(
            default_gateway(&route),
            Some(std::net::Ipv4Addr::new(10, 211, 7, 1))
        );
        // Before the lease: only the header, or only a link route.
        assert_eq!(default_gateway(head), None);
        let link_only =
            format!("{head}host0\t0007D30A\t00000000\t0001\t0\t0\t1024\t00FFFFFF\t0\t0\t0\n");
        assert_eq!(default_gateway(&link_only), None);
    }
}
