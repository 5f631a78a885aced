//! The `qemu` backend: a system image booted by qemu-system-x86_64, as an
//! ordinary user, commands through a guest agent on a virtio-serial port.
//!
//! ```text
//! STORE/instances/NAME/
//!   state.json         EnvState, with `vm`: disk format, boot mechanism, memory, cpus
//!   qemu/
//!     base.raw|qcow2   the image, pinned: a hard link to it, or a sparse copy (never written)
//!     overlay.qcow2    the VM's disk: copy-on-write over base (qemu-img create -b base)
//!     vmlinuz, initrd.img   boot `direct`: qemu loads them, with the recorded command line
//!     OVMF_VARS.fd     boot `efi`: the firmware's variables (OVMF_CODE is the system's, read-only)
//!     agent.sock       the agent's virtio-serial port (agent.rs draws the protocol)
//!     qemu.pid         qemu runs daemonized: environments outlive the strata that started them
//!     console.log      the serial console; its tail goes into boot and crash errors
//!     qemu.args        qemu's arguments as `start` gave them, for people
//! ```
//!
//! start:  pick the accelerator (KVM where a tiny guest really runs on it,
//!         else TCG; `STRATA_QEMU_ACCEL` overrides), start qemu, poll the
//!         agent until it answers, make the unprivileged user.
//! stop:   `systemctl poweroff` through the agent, wait for qemu to end
//!         within the stop timeout, else SIGKILL.
//! No root on the host: user-mode networking (`-netdev user`, no host
//! port at all: the agent needs none), or no NIC for environments without
//! network.

pub mod agent;

use super::pull::{self, landing, settle};
use super::{
    Backend, BackendError, Completed, EnvState, ExecutionEnvironment, Owner, Pulled, RunOptions,
    Specials, Stopped, USER_ID, USER_NAME, User, basename, inside_path,
};
use crate::sandbox::process::{self, Invocation, Outcome, Stdin};
use crate::store::InstancePaths;
use agent::{AgentError, Reply, Request, Session};
use fs_err as fs;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The firmware `efi` boots with (Debian's `ovmf`), read-only.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The template of its variable store, copied per environment.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// How long `start` waits for the agent. A Debian system reaches it in
/// about 8 s under TCG here; several VMs booting at once on two cores take
/// longer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a request waits for the agent to take it (an earlier,
/// abandoned command may still be running in it).
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one push or pull may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// The kernel command line of `direct` boots made by [`DiskImage::direct`].
/// `quiet`: every console line is an emulated UART's worth of traps under
/// TCG; panics and systemd's failures still print.
pub const DIRECT_CMDLINE: &str = "root=/dev/vda rw console=ttyS0 panic=1 quiet";

/// The disk image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A raw image.
    Raw,
    /// qcow2.
    Qcow2,
}

impl DiskFormat {
    fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// How the VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "lowercase")]
pub enum Boot {
    /// OVMF boots the disk: a GPT image with an ESP and a bootloader (what
    /// SystemImageBuild makes).
    Efi,
    /// qemu loads the kernel and initrd kept in the instance folder and
    /// gives them `cmdline`; the disk is only the root filesystem.
    Direct {
        /// The kernel command line.
        cmdline: String,
    },
}

/// What a qemu environment records of its VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// The pinned image's format.
    pub format: DiskFormat,
    /// How it boots.
    pub boot: Boot,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
}

/// What a qemu environment is made from.
#[derive(Debug, Clone)]
pub struct DiskImage {
    /// The disk image (never written).
    pub disk: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// `efi`, or `direct` with the kernel and initrd to load.
    pub boot: BootFrom,
}

/// Where a boot's files come from.
#[derive(Debug, Clone)]
pub enum BootFrom {
    /// The firmware boots the disk.
    Efi,
    /// Kernel and initrd from the host.
    Direct {
        /// The kernel.
        kernel: PathBuf,
        /// The initrd.
        initrd: PathBuf,
        /// Its command line.
        cmdline: String,
    },
}

impl DiskImage {
    /// A root filesystem image booted directly with `kernel` and `initrd`.
    pub fn direct(disk: &Path, format: DiskFormat, kernel: &Path, initrd: &Path) -> DiskImage {
        DiskImage {
            disk: disk.to_path_buf(),
            format,
            boot: BootFrom::Direct {
                kernel: kernel.to_path_buf(),
                initrd: initrd.to_path_buf(),
                cmdline: DIRECT_CMDLINE.to_owned(),
            },
        }
    }
}

/// The accelerator qemu runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's own translator.
    Tcg,
}

impl Accel {
    fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The files of one VM (the drawing above).
#[derive(Debug, Clone)]
pub struct Files(PathBuf);

impl Files {
    /// The VM files of the environment in `dir`.
    pub fn of(dir: &InstancePaths) -> Files {
        Files(dir.dir().join("qemu"))
    }
    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.0
    }
    fn base(&self, format: DiskFormat) -> PathBuf {
        self.0.join(format!("base.{}", format.as_str()))
    }
    fn overlay(&self) -> PathBuf {
        self.0.join("overlay.qcow2")
    }
    fn kernel(&self) -> PathBuf {
        self.0.join("vmlinuz")
    }
    fn initrd(&self) -> PathBuf {
        self.0.join("initrd.img")
    }
    fn vars(&self) -> PathBuf {
        self.0.join("OVMF_VARS.fd")
    }
    /// The agent's socket.
    pub fn sock(&self) -> PathBuf {
        self.0.join("agent.sock")
    }
    fn pid(&self) -> PathBuf {
        self.0.join("qemu.pid")
    }
    /// qemu's arguments, one a line, as `start` gave them.
    pub fn args(&self) -> PathBuf {
        self.0.join("qemu.args")
    }
    /// The serial console's log.
    pub fn console(&self) -> PathBuf {
        self.0.join("console.log")
    }
}

/// qemu's command line for `vm` (pure, for tests).
pub fn qemu_argv(files: &Files, name: &str, vm: &Vm, accel: Accel, network: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(OsString::from));
    let path = |p: PathBuf| p.display().to_string();
    push(&["-name", &format!("strata-{name}")]);
    push(&["-machine", "q35", "-accel", accel.as_str()]);
    // TCG's `max` has every feature it can emulate; KVM passes the host's.
    push(&["-cpu", if accel == Accel::Kvm { "host" } else { "max" }]);
    push(&[
        "-smp",
        &vm.cpus.to_string(),
        "-m",
        &vm.memory_mib.to_string(),
    ]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    // A guest that reboots or panics (panic=1) ends qemu: reported, not looped.
    push(&["-no-reboot"]);
    push(&["-daemonize", "-pidfile", &path(files.pid())]);
    push(&["-serial", &format!("file:{}", path(files.console()))]);
    push(&[
        "-drive",
        &format!(
            "file={},format=qcow2,if=virtio,discard=unmap",
            path(files.overlay())
        ),
    ]);
    push(&["-device", "virtio-rng-pci"]);
    push(&["-device", "virtio-serial-pci,id=vs"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=agent,path={},server=on,wait=off",
            path(files.sock())
        ),
    ]);
    push(&[
        "-device",
        &format!(
            "virtserialport,bus=vs.0,chardev=agent,name={}",
            agent::PORT_NAME
        ),
    ]);
    if network {
        // User-mode: no root, no bridge, no port on the host.
        push(&[
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]);
    }
    match &vm.boot {
        Boot::Efi => {
            push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            ]);
            push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", path(files.vars())),
            ]);
        }
        Boot::Direct { cmdline } => {
            push(&["-kernel", &path(files.kernel())]);
            push(&["-initrd", &path(files.initrd())]);
            push(&["-append", cmdline]);
        }
    }
    a
}

/// A qemu environment.
#[derive(Debug)]
pub struct Qemu {
    state: EnvState,
    files: Files,
}

impl Qemu {
    /// Makes environment `name` in `dir` from `image`: pins the image,
    /// makes the overlay (and copies the boot files). Does not start it.
    pub fn create(
        dir: &InstancePaths,
        name: &str,
        image: &DiskImage,
        origin: &str,
        artifact_id: &str,
        network: bool,
    ) -> Result<Qemu, BackendError> {
        if !image.disk.is_file() {
            return Err(BackendError::ImageMissing(image.disk.display().to_string()));
        }
        let files = Files::of(dir);
        if files.dir().exists() {
            return Err(BackendError::AlreadyExists(name.to_owned()));
        }
        check_socket_path(&files.sock())?;
        crate::store::durable::create_dir_all(files.dir())?;
        let made = make_files(&files, image);
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(files.dir());
            let _ = std::fs::remove_dir(dir.dir());
            return Err(e);
        }
        let boot = match &image.boot {
            BootFrom::Efi => Boot::Efi,
            BootFrom::Direct { cmdline, .. } => Boot::Direct {
                cmdline: cmdline.clone(),
            },
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(2)) as u32;
        Ok(Qemu {
            state: EnvState {
                name: name.to_owned(),
                backend: Backend::Qemu,
                origin: origin.to_owned(),
                artifact_id: artifact_id.to_owned(),
                image: image.disk.display().to_string(),
                instance: None,
                running: false,
                stop_timeout: super::STOP_TIMEOUT.as_secs(),
                network,
                vm: Some(Vm {
                    format: image.format,
                    boot,
                    memory_mib: 1024,
                    cpus,
                }),
            },
            files,
        })
    }

    /// The environment `state` describes, kept in `dir`.
    pub fn open(state: EnvState, dir: &InstancePaths) -> Qemu {
        Qemu {
            state,
            files: Files::of(dir),
        }
    }

    /// Sets how long `stop` waits before it kills.
    pub fn set_stop_timeout(&mut self, timeout: Duration) {
        self.state.stop_timeout = timeout.as_secs().max(1);
    }

    /// The VM's files.
    pub fn files(&self) -> &Files {
        &self.files
    }

    fn vm(&self) -> Result<&Vm, BackendError> {
        self.state.vm.as_ref().ok_or_else(|| {
            BackendError::Invalid(format!(
                "environment `{}` records no VM (its state.json has no `vm`)",
                self.state.name
            ))
        })
    }

    /// qemu's pid, while the qemu of this environment runs.
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.files.pid()).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        // The pid file outlives qemu; a reused pid is someone else's.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let sock = self.files.sock().display().to_string();
        let ours = cmdline
            .split(|&b| b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(&sock));
        ours.then_some(pid)
    }

    fn alive(&self) -> bool {
        self.pid().is_some()
    }

    fn require_running(&self) -> Result<(), BackendError> {
        if !self.state.running {
            return Err(BackendError::NotStarted(self.state.name.clone()));
        }
        Ok(())
    }

    /// The last lines of the serial console, for errors.
    fn console_tail(&self) -> String {
        let lines = process::tail(&self.files.console(), 15);
        if lines.is_empty() {
            return "the console printed nothing".into();
        }
        let text: String = lines
            .iter()
            .map(|l| {
                let clean: String = l
                    .chars()
                    .filter(|c| !c.is_control() || *c == '\t')
                    .collect();
                format!("\n    | {clean}")
            })
            .collect();
        format!("last lines of {}:{text}", self.files.console().display())
    }

    fn gone(&self) -> BackendError {
        BackendError::Gone {
            env: self.state.name.clone(),
            detail: format!(
                "its qemu has exited (the guest powered off, rebooted or crashed); {}",
                self.console_tail()
            ),
        }
    }

    fn agent_error(&self, e: AgentError, argv: &[String], limit: Option<Duration>) -> BackendError {
        match e {
            AgentError::Gone => self.gone(),
            AgentError::Interrupted => BackendError::Interrupted,
            AgentError::Deadline => BackendError::TimedOut {
                env: self.state.name.clone(),
                command: argv.join(" "),
                secs: limit.unwrap_or(SYNC_TIMEOUT).as_secs_f64(),
            },
            AgentError::Io(e) => BackendError::Tool {
                command: format!("the agent of environment `{}`", self.state.name),
                detail: e.to_string(),
            },
            AgentError::Invalid(why) => BackendError::Invalid(why),
            AgentError::Protocol(p) => BackendError::Tool {
                command: format!("the agent of environment `{}`", self.state.name),
                detail: format!("it broke the protocol: {p}"),
            },
        }
    }

    /// Runs `req` through the agent. The guest ends the command at its
    /// timeout; the host gives it a margin to say so, then stops waiting.
    /// Without a timeout it waits as long as qemu runs.
    fn request(&self, req: &Request<'_>) -> Result<Reply, BackendError> {
        let deadline = req
            .timeout
            .map(|t| Instant::now() + SYNC_TIMEOUT + t + Duration::from_secs(30));
        self.request_until(req, Instant::now() + SYNC_TIMEOUT, deadline)
    }

    fn request_until(
        &self,
        req: &Request<'_>,
        sync: Instant,
        deadline: Option<Instant>,
    ) -> Result<Reply, BackendError> {
        let alive = || self.alive();
        let fail = |e| self.agent_error(e, req.argv, req.timeout);
        let mut session = Session::connect(&self.files.sock(), &alive).map_err(fail)?;
        session.run(req, sync, deadline).map_err(fail)
    }

    /// Runs `argv` as root with `stdin`, captured, within `limit` (push,
    /// pull, useradd: an agent that died mid-request must not leave strata
    /// waiting on a qemu that runs on).
    fn root(
        &self,
        argv: &[&str],
        stdin: &[u8],
        what: &str,
        limit: Duration,
    ) -> Result<Completed, BackendError> {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        let env = super::unshare::base_env(User::Root, "/root");
        let req = Request {
            argv: &argv,
            env: &env,
            cwd: "/",
            uid: 0,
            stdin,
            timeout: Some(limit),
        };
        let now = Instant::now();
        match self.request_until(&req, now + limit.min(SYNC_TIMEOUT), Some(now + limit))? {
            Reply::Ran {
                status,
                stdout,
                stderr,
            } => Ok(Completed {
                status,
                stdout,
                stderr,
            }),
            Reply::NoCommand => Err(BackendError::Tool {
                command: what.to_owned(),
                detail: format!("`{}` is not a command in the guest", argv[0]),
            }),
        }
    }

    /// Waits until the agent answers; qemu ending first is an error.
    fn wait_ready(&self, limit: Duration) -> Result<(), BackendError> {
        let started = Instant::now();
        let alive = || self.alive();
        loop {
            if !self.alive() {
                return Err(BackendError::NotReady {
                    env: self.state.name.clone(),
                    secs: started.elapsed().as_secs(),
                    detail: format!("qemu exited while it booted; {}", self.console_tail()),
                });
            }
            if started.elapsed() > limit {
                return Err(BackendError::NotReady {
                    env: self.state.name.clone(),
                    secs: limit.as_secs(),
                    detail: format!(
                        "its agent ({}) never answered; {}\n    hint: the image needs the agent: backend::qemu::agent::customize_options",
                        agent::UNIT_NAME,
                        self.console_tail()
                    ),
                });
            }
            // One connection and one PING: qemu reads nothing from the
            // socket before the guest opens its port, so the PING waits
            // there for the agent (more would only fill the socket and
            // block strata's writes). A connection that fails (qemu still
            // setting up) is tried again.
            match Session::connect(&self.files.sock(), &alive) {
                Ok(mut session) => match session.sync(started + limit) {
                    Ok(()) => return Ok(()),
                    Err(AgentError::Interrupted) => return Err(BackendError::Interrupted),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                },
                Err(AgentError::Interrupted) => return Err(BackendError::Interrupted),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// SIGKILLs qemu and waits (bounded) until it is gone.
    fn kill(&self) -> Result<(), BackendError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        if !wait_until(Duration::from_secs(10), || !self.alive()) {
            return Err(BackendError::Tool {
                command: format!("kill -KILL {pid}"),
                detail: format!(
                    "qemu of environment `{}` is still there 10 s later",
                    self.state.name
                ),
            });
        }
        Ok(())
    }

    fn clean_runtime_files(&self) {
        let _ = std::fs::remove_file(self.files.pid());
        let _ = std::fs::remove_file(self.files.sock());
    }

    /// Makes the unprivileged user, as every backend does.
    fn ensure_user(&self) -> Result<(), BackendError> {
        let script = format!(
            "id -u {USER_NAME} >/dev/null 2>&1 || useradd --create-home --uid {USER_ID} --user-group --shell /bin/sh {USER_NAME}"
        );
        let done = self.root(&["sh", "-c", &script], b"", "useradd", SYNC_TIMEOUT)?;
        if done.status != 0 {
            return Err(BackendError::Tool {
                command: script,
                detail: done.stderr_text(),
            });
        }
        Ok(())
    }
}

/// Polls `done` every 50 ms for at most `limit`.
fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if done() {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unix socket's path must fit `sun_path` (108 bytes with its NUL).
fn check_socket_path(sock: &Path) -> Result<(), BackendError> {
    if sock.as_os_str().len() > 107 {
        return Err(BackendError::Invalid(format!(
            "{} is too long for a unix socket (at most 107 bytes)\n    hint: a store at a shorter path, or a shorter environment name",
            sock.display()
        )));
    }
    Ok(())
}

/// Pins the image and makes the overlay and boot files of a new VM.
fn make_files(files: &Files, image: &DiskImage) -> Result<(), BackendError> {
    let base = files.base(image.format);
    pin(&image.disk, &base)?;
    // The backing file is named relative to the overlay: the instance
    // folder can move with its store.
    let name = format!("base.{}", image.format.as_str());
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            image.format.as_str(),
            "-b",
            &name,
            &files.overlay().display().to_string(),
        ],
        "\n    hint: apt-get install qemu-utils",
    )?;
    match &image.boot {
        BootFrom::Efi => {
            if !Path::new(OVMF_CODE).is_file() {
                return Err(BackendError::ImageMissing(format!(
                    "{OVMF_CODE} (the firmware an efi boot needs)\n    hint: apt-get install ovmf"
                )));
            }
            fs::copy(OVMF_VARS, files.vars())?;
        }
        BootFrom::Direct { kernel, initrd, .. } => {
            fs::copy(kernel, files.kernel())?;
            fs::copy(initrd, files.initrd())?;
        }
    }
    Ok(())
}

/// Makes `to` the image `from` without ever writing `from`: a hard link
/// where the filesystem allows (no byte copied), else a sparse copy.
fn pin(from: &Path, to: &Path) -> Result<(), BackendError> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    tool(
        "cp",
        &[
            "--sparse=always",
            "--reflink=auto",
            "--",
            &from.display().to_string(),
            &to.display().to_string(),
        ],
        "",
    )?;
    Ok(())
}

/// Runs a host tool to its end; a failure quotes its stderr.
fn tool(program: &str, args: &[&str], hint: &str) -> Result<(), BackendError> {
    let ran = process::run(&Invocation {
        program: program.into(),
        args: args.iter().map(OsString::from).collect(),
        timeout: Some(Duration::from_secs(600)),
        ..Invocation::default()
    });
    if ran.outcome.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&ran.stderr).trim().to_owned();
    Err(BackendError::Tool {
        command: format!("{program} {}", args.join(" ")),
        detail: format!(
            "{}{hint}",
            if stderr.is_empty() {
                ran.outcome.describe()
            } else {
                stderr
            }
        ),
    })
}

/// The accelerator: `STRATA_QEMU_ACCEL` when set, else KVM when a tiny
/// guest runs on it (an openable /dev/kvm is not enough: on some hosts KVM
/// does not run guests), else TCG. The probe's answer is kept in
/// `cache_dir` until the host reboots.
pub fn accel(cache_dir: &Path) -> Result<Accel, BackendError> {
    match std::env::var("STRATA_QEMU_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        Ok(other) => {
            return Err(BackendError::Invalid(format!(
                "STRATA_QEMU_ACCEL is `{other}`: it takes kvm or tcg"
            )));
        }
        Err(_) => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok(Accel::Tcg);
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache = cache_dir.join(".qemu-accel");
    if let Ok(text) = std::fs::read_to_string(&cache)
        && let Some((id, answer)) = text.trim().split_once(' ')
        && id == boot_id.trim()
    {
        return Ok(if answer == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        });
    }
    let answer = if probe_kvm(cache_dir) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let _ = std::fs::write(&cache, format!("{} {}\n", boot_id.trim(), answer.as_str()));
    Ok(answer)
}

/// Whether a guest of seven instructions reaches its `out` under KVM within
/// two seconds (TCG takes 0.2 s for it; a working KVM less).
fn probe_kvm(dir: &Path) -> bool {
    // mov al,1; out 0xf4,al; hlt; jmp $ — as a boot sector. isa-debug-exit
    // turns the write into qemu's exit status (1 << 1) | 1 = 3.
    let mut sector = vec![0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE];
    sector.resize(510, 0);
    sector.extend([0x55, 0xAA]);
    let Ok(file) = tempfile::Builder::new()
        .prefix(".kvm-probe-")
        .tempfile_in(dir)
    else {
        return false;
    };
    if std::fs::write(file.path(), &sector).is_err() {
        return false;
    }
    let drive = format!("file={},format=raw,if=ide", file.path().display());
    let ran = process::run(&Invocation {
        program: "qemu-system-x86_64".into(),
        args: [
            "-accel",
            "kvm",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-m",
            "16",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=1",
            "-drive",
            &drive,
        ]
        .map(OsString::from)
        .to_vec(),
        timeout: Some(Duration::from_secs(2)),
        ..Invocation::default()
    });
    matches!(ran.outcome, Outcome::Finished(3))
}

/// Shell scripts the agent runs for push and pull (argv after `sh -c`).
const PUSH_FILE: &str = r#"d=$(dirname -- "$1") && [ -d "$d" ] || { echo "$d: no such directory" >&2; exit 20; }; t=$(mktemp -- "$1.strata-push.XXXXXX") && cat > "$t" && chown -- "$2" "$t" && chmod -- "$3" "$t" && mv -f -- "$t" "$1" || { rm -f -- "$t"; exit 1; }"#;
/// Resolves inside (the guest is its own root), refuses what is not a
/// regular file, and hands the file over as a one-member tar: tar never
/// opens a FIFO swapped in after the check, it archives it as one.
const PULL_FILE: &str = r#"p=$(readlink -e -- "$1") || exit 20; [ -f "$p" ] || exit 21; cd -- "${p%/*}/" && exec tar --numeric-owner -cf - -- "${p##*/}""#;

impl ExecutionEnvironment for Qemu {
    fn name(&self) -> &str {
        &self.state.name
    }

    fn backend(&self) -> Backend {
        Backend::Qemu
    }

    fn state(&self) -> &EnvState {
        &self.state
    }

    fn start(&mut self) -> Result<(), BackendError> {
        // A guest that powered itself off left the state saying running.
        if self.state.running && self.alive() {
            return Err(BackendError::AlreadyRunning(self.state.name.clone()));
        }
        let vm = self.vm()?.clone();
        if !self.files.overlay().is_file() {
            return Err(BackendError::ImageMissing(
                self.files.overlay().display().to_string(),
            ));
        }
        self.clean_runtime_files();
        let _ = std::fs::remove_file(self.files.console());
        let cache_dir = self.files.dir().parent().and_then(Path::parent);
        let accel = accel(cache_dir.unwrap_or(self.files.dir()))?;
        let argv = qemu_argv(
            &self.files,
            &self.state.name,
            &vm,
            accel,
            self.state.network,
        );
        // For people who debug a VM: how strata started it (nothing secret).
        let lines: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        fs::write(self.files.args(), lines.join("\n") + "\n")?;
        // -daemonize: this returns once the VM is set up and qemu detached.
        let ran = process::run(&Invocation {
            program: "qemu-system-x86_64".into(),
            args: argv,
            timeout: Some(Duration::from_secs(60)),
            ..Invocation::default()
        });
        if !ran.outcome.success() {
            let hint = match ran.outcome {
                Outcome::SpawnFailed(_) => "\n    hint: apt-get install qemu-system-x86",
                _ => "",
            };
            return Err(BackendError::Tool {
                command: "qemu-system-x86_64".into(),
                detail: format!(
                    "{} ({}; its arguments are in {}){hint}",
                    String::from_utf8_lossy(&ran.stderr).trim(),
                    ran.outcome.describe(),
                    self.files.args().display(),
                ),
            });
        }
        self.state.running = true;
        let ready = self
            .wait_ready(READY_TIMEOUT)
            .and_then(|()| self.ensure_user());
        if let Err(e) = ready {
            // A VM that never became usable only burns CPU.
            let _ = self.kill();
            self.state.running = false;
            return Err(e);
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<Stopped, BackendError> {
        self.require_running()?;
        if !self.alive() {
            self.state.running = false;
            self.clean_runtime_files();
            return Ok(Stopped::Gracefully);
        }
        // Asked through the agent, which answers before systemd stops it;
        // an agent that does not answer is waited for no longer than the
        // stop timeout lets qemu live anyway.
        let limit = self.state.stop_timeout();
        let started = Instant::now();
        let ask = limit.clamp(Duration::from_secs(1), Duration::from_secs(10));
        let _ = self.root(
            &["systemctl", "--no-block", "poweroff"],
            b"",
            "poweroff",
            ask,
        );
        let left = limit.saturating_sub(started.elapsed());
        let how = if wait_until(left, || !self.alive()) {
            Stopped::Gracefully
        } else {
            self.kill()?;
            Stopped::Killed
        };
        self.state.running = false;
        self.clean_runtime_files();
        Ok(how)
    }

    fn destroy(&mut self) -> Result<(), BackendError> {
        self.kill()?;
        self.state.running = false;
        if self.files.dir().exists() {
            fs::remove_dir_all(self.files.dir())?;
        }
        Ok(())
    }

    fn run(&self, argv: &[String], opts: &RunOptions) -> Result<Completed, BackendError> {
        self.require_running()?;
        if argv.is_empty() {
            return Err(BackendError::EmptyCommand);
        }
        let home = super::unshare::home(opts.user);
        let cwd = match &opts.cwd {
            Some(cwd) => inside_path(cwd)?.to_owned(),
            None => home.clone(),
        };
        let mut env = super::unshare::base_env(opts.user, &home);
        for (k, v) in &opts.env {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), v.clone()));
        }
        let stdin = match &opts.stdin {
            Stdin::Null => Vec::new(),
            Stdin::Bytes(b) => b.clone(),
            Stdin::Inherit => {
                // The agent takes stdin whole, before the command starts: a
                // terminal gets nothing rather than a wait for its EOF.
                use std::io::IsTerminal;
                let mut all = Vec::new();
                if !std::io::stdin().is_terminal() {
                    std::io::stdin().read_to_end(&mut all)?;
                }
                all
            }
        };
        let started = Instant::now();
        let reply = self.request(&Request {
            argv,
            env: &env,
            cwd: &cwd,
            uid: match opts.user {
                User::Root => 0,
                User::Unprivileged => USER_ID,
            },
            stdin: &stdin,
            timeout: opts.timeout,
        })?;
        match reply {
            Reply::NoCommand => Err(BackendError::CommandNotFound {
                env: self.state.name.clone(),
                command: argv[0].clone(),
            }),
            // `timeout -s KILL` inside ends the command with 137 at its limit.
            Reply::Ran { status: 137, .. }
                if opts.timeout.is_some_and(|t| started.elapsed() >= t) =>
            {
                Err(BackendError::TimedOut {
                    env: self.state.name.clone(),
                    command: argv.join(" "),
                    secs: opts.timeout.unwrap_or_default().as_secs_f64(),
                })
            }
            Reply::Ran {
                status,
                stdout,
                stderr,
            } => {
                if opts.capture {
                    return Ok(Completed {
                        status,
                        stdout,
                        stderr,
                    });
                }
                use std::io::Write;
                std::io::stdout().write_all(&stdout)?;
                std::io::stderr().write_all(&stderr)?;
                Ok(Completed {
                    status,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                })
            }
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
        let bytes = fs::read(host)?;
        let owner = format!("{}:{}", owner.uid, owner.gid);
        let mode = format!("{mode:04o}");
        let done = self.root(
            &["sh", "-c", PUSH_FILE, "strata-push", target, &owner, &mode],
            &bytes,
            "push",
            TRANSFER_TIMEOUT,
        )?;
        match done.status {
            0 => Ok(()),
            20 => Err(BackendError::NotFound(target.to_owned())),
            _ => Err(BackendError::Tool {
                command: format!("push {target}"),
                detail: done.stderr_text().trim().to_owned(),
            }),
        }
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
        let done = self.root(
            &["sh", "-c", PULL_FILE, "strata-pull", source],
            b"",
            "pull",
            TRANSFER_TIMEOUT,
        )?;
        match done.status {
            0 => {}
            20 => return Err(BackendError::NotFound(source.to_owned())),
            21 => {
                return Err(BackendError::Tool {
                    command: format!("pull {source}"),
                    detail: "it is not a regular file".into(),
                });
            }
            _ => {
                return Err(BackendError::Tool {
                    command: format!("pull {source}"),
                    detail: done.stderr_text().trim().to_owned(),
                });
            }
        }
        let (data, mode) = pull::single_file(&done.stdout, source)?;
        let (kept, cleared) = pull::kept_mode(mode, specials);
        let land = landing(folder)?;
        let landed = land.path().join("file");
        fs::write(&landed, &data)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&landed, std::fs::Permissions::from_mode(kept))?;
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
        let done = self.root(
            &["sh", "-c", pull::PUSH_DIR, "strata-push", target],
            &archive,
            "push",
            TRANSFER_TIMEOUT,
        )?;
        match done.status {
            0 => Ok(()),
            17 => Err(BackendError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{target} exists already in the environment"),
            ))),
            _ => Err(BackendError::Tool {
                command: format!("push {} {target}", host.display()),
                detail: done.stderr_text().trim().to_owned(),
            }),
        }
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
        let done = self.root(
            &["sh", "-c", pull::PULL_DIR, "strata-pull", source],
            b"",
            "pull",
            TRANSFER_TIMEOUT,
        )?;
        if done.status != 0 {
            return Err(BackendError::NotFound(source.to_owned()));
        }
        pull::unpack_pulled(&done.stdout, source, folder, specials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(boot: Boot) -> Vm {
        Vm {
            format: DiskFormat::Raw,
            boot,
            memory_mib: 1024,
            cpus: 2,
        }
    }

    fn joined(a: &[OsString]) -> String {
        a.iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_direct_boot_without_network_has_no_nic_and_no_port() {
        let files = Files("/s/instances/e/qemu".into());
        let direct = vm(Boot::Direct {
            cmdline: DIRECT_CMDLINE.into(),
        });
        let argv = joined(&qemu_argv(&files, "e", &direct, Accel::Tcg, false));
        assert!(
            argv.contains("-accel tcg -cpu max -smp 2 -m 1024"),
            "{argv}"
        );
        assert!(argv.contains("-kernel /s/instances/e/qemu/vmlinuz -initrd /s/instances/e/qemu/initrd.img -append root=/dev/vda rw console=ttyS0 panic=1 quiet"), "{argv}");
        assert!(
            argv.contains("socket,id=agent,path=/s/instances/e/qemu/agent.sock,server=on,wait=off"),
            "{argv}"
        );
        assert!(
            argv.contains("-daemonize -pidfile /s/instances/e/qemu/qemu.pid"),
            "{argv}"
        );
        assert!(
            !argv.contains("-netdev") && !argv.contains("hostfwd"),
            "{argv}"
        );
        assert!(
            argv.contains("-nodefaults"),
            "no default NIC either: {argv}"
        );
        assert!(!argv.contains("pflash"), "{argv}");
    }

    #[test]
    fn an_efi_boot_with_network_has_user_mode_networking_and_the_firmware() {
        let files = Files("/s/instances/e/qemu".into());
        let argv = joined(&qemu_argv(&files, "e", &vm(Boot::Efi), Accel::Kvm, true));
        assert!(argv.contains("-accel kvm -cpu host"), "{argv}");
        assert!(
            argv.contains("-netdev user,id=net0 -device virtio-net-pci,netdev=net0"),
            "{argv}"
        );
        assert!(
            argv.contains(&format!("unit=0,readonly=on,file={OVMF_CODE}")),
            "{argv}"
        );
        assert!(
            argv.contains("unit=1,file=/s/instances/e/qemu/OVMF_VARS.fd"),
            "{argv}"
        );
        assert!(!argv.contains("-kernel"), "{argv}");
    }

    #[test]
    fn the_boot_mechanism_is_recorded_by_name() {
        let direct = serde_json::to_value(vm(Boot::Direct {
            cmdline: "root=/dev/vda".into(),
        }))
        .unwrap();
        assert_eq!(direct["boot"]["mechanism"], "direct");
        assert_eq!(direct["boot"]["cmdline"], "root=/dev/vda");
        assert_eq!(direct["format"], "raw");
        let efi = serde_json::to_value(vm(Boot::Efi)).unwrap();
        assert_eq!(efi["boot"], serde_json::json!({"mechanism": "efi"}));
    }

    #[test]
    fn a_socket_path_too_long_for_sun_path_is_refused() {
        assert!(check_socket_path(Path::new("/short/agent.sock")).is_ok());
        let long = PathBuf::from(format!("/{}/agent.sock", "x".repeat(100)));
        let err = check_socket_path(&long).unwrap_err().to_string();
        assert!(err.contains("too long for a unix socket"), "{err}");
    }
}
