//! User namespaces: every stage is root over its tree and nobody on the host.
//!
//! ```text
//!  strata as an ordinary user U                      strata as root
//!  (/etc/subuid  U:S:N, N ≥ 65535)                   (dedicated range R, see root_range)
//!  ─────────────────────────────────                 ──────────────────────────────────
//!  prologue: unshare(CLONE_NEWUSER);                 prologue: nothing; strata stays root
//!    newuidmap/newgidmap write                         on the host (it reads manifests and
//!      0 → U,  1…65535 → S…S+65534                     writes exports wherever root may)
//!    (mmdebstrap --mode=unshare's map,
//!     podman's and osbuild's rootless map)
//!  strata is root of that namespace: it             bwrap (as root) sets up the sandbox, then
//!    mounts overlays (userxattr), writes              `enter` (this file, strata-sandbox
//!    the store, runs bwrap                            bound into the sandbox) forks a child into
//!                                                     a new user + mount namespace
//!  bwrap → `enter` → the stage, root of a             0…65535 → R…R+65535 and execs the stage
//!    namespace nested in that one, 0…65535 →
//!    0…65535 (the same ids on disk)
//!
//!  both: `enter` drops every supplementary group, sets RLIMIT_NPROC and
//!        installs the seccomp filter ([`super::seccomp`]) before it execs
//!        the stage
//!
//!  on disk, in-tree owner k is                       on disk, in-tree owner k is R+k
//!    U (k = 0) or S+k−1
//! ```
//!
//! Either way the stage is root of a user namespace of its own, below the
//! one that owns bwrap's mounts and bwrap's pid 1: the kernel locks the
//! mounts it inherits (a read-only bind — its build root, an input, the
//! host's /usr — cannot be remounted writable or unmounted to show what is
//! beneath), and bwrap's processes, which run without the seccomp filter,
//! are out of its reach (no ptrace, no /proc/1/root). As the user, without
//! the nested namespace, a stage was root of strata's own namespace and
//! could do both: `mount -o remount,bind,rw` an input and write into a
//! stored object.
//!
//! The stage's ids are a range no host account uses, the stage
//! has capabilities only over its own namespaces (it can chown, mknod fifos,
//! mount a tmpfs of its own), and anything owned by the host's root — under
//! the host's `/usr`, which stages see read-only — is `nobody` to it. The
//! store holds trees with owners as the namespace writes them (shifted into
//! the range), so a stage reads and writes them as the in-tree owners; code
//! on the host that gives a tree away (`--export`, incus) shifts them back
//! with [`host_to_tree`].

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// How many ids a tree may use: 0…65535, Debian's whole static and dynamic
/// range (`nobody` is 65534).
pub const TREE_IDS: u32 = 65536;

/// The first host uid and gid of the namespace of stages when strata runs as
/// root and `STRATA_SUBUID` is not set: above the ranges systemd gives
/// containers (up to 0x6FFF0000) and below its "foreign" range.
pub const DEFAULT_ROOT_BASE: u32 = 0x7000_0000;

/// Processes a stage may run at once (RLIMIT_NPROC): a fork bomb fails the
/// stage, not the host.
pub const STAGE_PROCESSES: u64 = 4096;

/// The first argument of `strata-sandbox` that makes it the sandbox's
/// `enter` step.
pub const ENTER_FLAG: &str = "--strata-sandbox-enter";

/// Where `enter` and what it needs are bound inside a sandbox.
const ENTER_DIR: &str = "/run/strata-enter";

/// How stages are kept from the host's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// strata runs as root on the host; each stage gets a namespace whose
    /// ids 0…65535 are the host's `uid…`, `gid…`.
    Shifted {
        /// Host uid of the stage's root.
        uid: u32,
        /// Host gid of the stage's root.
        gid: u32,
    },
    /// strata runs in a user namespace of its own (as an ordinary user);
    /// each stage gets a namespace nested in it with the same ids.
    Inside,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// The mode this process chose in [`enter`]. The library used without
/// strata's prologue (a program or a test that calls `exec::build`) gets
/// the root mode when it runs as root, so that a store is never written
/// both ways; as an ordinary user it must call [`enter`] first (moving a
/// threaded process into a namespace is not possible), and until then —
/// and in strata's own unit tests — `None`: nothing shifts and sandboxes
/// run without `enter`.
pub fn mode() -> Option<Mode> {
    if let Some(mode) = MODE.get() {
        return Some(*mode);
    }
    if cfg!(test) || !rustix::process::geteuid().is_root() {
        return None;
    }
    let (uid, gid) = root_range().ok()?;
    Some(*MODE.get_or_init(|| Mode::Shifted { uid, gid }))
}

/// Why strata could not set up its user namespace.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The user has no subordinate ids.
    #[error(
        "{user} (uid {uid}) has no range of at least 65535 subordinate {what}s in {file}: strata runs every stage as root of a user namespace that maps 65536 ids\n    hint: as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
    )]
    NoRange {
        /// The user's name.
        user: String,
        /// Their uid.
        uid: u32,
        /// uid or gid.
        what: &'static str,
        /// /etc/subuid or /etc/subgid.
        file: PathBuf,
    },
    /// STRATA_SUBUID/STRATA_SUBGID is not a number.
    #[error(
        "{var}={value} is not a host id\n    hint: give the first id of a free range of 65536, such as {DEFAULT_ROOT_BASE}"
    )]
    BadVar {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A system call or a tool failed.
    #[error("{0}")]
    Failed(String),
}

/// A subordinate id range: (first host id, count).
pub type Range = (u32, u32);

/// The range `/etc/subuid`-style `text` gives user `name` (uid `id`): its
/// first line of at least `want` ids.
pub fn subid_range(text: &str, name: &str, id: u32, want: u32) -> Option<Range> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().splitn(3, ':');
        let (who, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = who == name || who.parse::<u32>() == Ok(id);
        let range = (start.parse().ok()?, count.parse().ok()?);
        (matches && range.1 >= want).then_some(range)
    })
}

/// The host ids of the stages' namespace when strata runs as root:
/// `STRATA_SUBUID` and `STRATA_SUBGID` (the first of 65536 ids; the gid
/// defaults to the uid), else [`DEFAULT_ROOT_BASE`].
pub fn root_range() -> Result<(u32, u32), UsernsError> {
    let var = |name: &'static str| -> Result<Option<u32>, UsernsError> {
        match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|start| start.checked_add(TREE_IDS).is_some() && *start > 0)
                .map(Some)
                .ok_or(UsernsError::BadVar {
                    var: name,
                    value: v,
                }),
            Err(_) => Ok(None),
        }
    };
    let uid = var("STRATA_SUBUID")?.unwrap_or(DEFAULT_ROOT_BASE);
    let gid = var("STRATA_SUBGID")?.unwrap_or(uid);
    Ok((uid, gid))
}

/// The prologue of every command that builds or runs stages: chooses the
/// [`Mode`]; as an ordinary user, moves this process into its user
/// namespace (0 → the user, 1…65535 → the user's subordinate ids). Must run
/// before any thread starts (a user namespace is entered per process, and
/// unshare refuses a threaded one).
pub fn enter() -> Result<Mode, UsernsError> {
    if let Some(mode) = MODE.get() {
        return Ok(*mode);
    }
    let mode = if rustix::process::geteuid().is_root() {
        let (uid, gid) = root_range()?;
        Mode::Shifted { uid, gid }
    } else {
        enter_as_user()?;
        Mode::Inside
    };
    let _ = MODE.set(mode);
    Ok(mode)
}

fn enter_as_user() -> Result<(), UsernsError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let user = user_name(uid).unwrap_or_else(|| uid.to_string());
    let range = |file: &str, what: &'static str| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        subid_range(&text, &user, uid, TREE_IDS - 1).ok_or_else(|| UsernsError::NoRange {
            user: user.clone(),
            uid,
            what,
            file: file.into(),
        })
    };
    let (sub_uid, _) = range("/etc/subuid", "uid")?;
    let (sub_gid, _) = range("/etc/subgid", "gid")?;
    // newuidmap and newgidmap (setuid, from `uidmap`) may write another
    // process's map from ranges /etc/subuid grants; a process cannot map
    // more than its own id into its own namespace. So a helper started
    // before the unshare waits for its go, maps us, and exits.
    let pid = std::process::id().to_string();
    let script = r#"read _ || exit 1
newuidmap "$1" 0 "$2" 1 1 "$3" 65535 && newgidmap "$1" 0 "$4" 1 1 "$5" 65535"#;
    let mut helper = std::process::Command::new("/bin/sh")
        .args(["-c", script, "strata-idmap", &pid])
        .args([uid, sub_uid, gid, sub_gid].map(|n| n.to_string()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| UsernsError::Failed(format!("starting /bin/sh for newuidmap: {e}")))?;
    // SAFETY: unshare_unsafe is unsafe only for CLONE_FILES; CLONE_NEWUSER
    // touches no fd table, and the prologue runs before any thread.
    #[allow(unsafe_code)]
    let unshared = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) };
    if let Err(e) = unshared {
        let _ = helper.kill();
        let _ = helper.wait();
        return Err(UsernsError::Failed(format!(
            "unshare(CLONE_NEWUSER): {e}\n    hint: user namespaces must be enabled (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
        )));
    }
    if let Some(mut stdin) = helper.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"go\n");
    }
    let out = helper
        .wait_with_output()
        .map_err(|e| UsernsError::Failed(format!("waiting for newuidmap: {e}")))?;
    if !out.status.success() {
        return Err(UsernsError::Failed(format!(
            "newuidmap/newgidmap could not map {user}'s subordinate ids ({}): {}\n    hint: install `uidmap`, and check /etc/subuid and /etc/subgid",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The name of `uid` in /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_owned())
    })
}

/// What strata sees on disk for in-tree owner (`uid`, `gid`): the shifted
/// ids when it runs as root, the same ids inside its namespace.
pub fn tree_to_host(uid: u32, gid: u32) -> (u32, u32) {
    match mode() {
        Some(Mode::Shifted { uid: bu, gid: bg }) if uid < TREE_IDS && gid < TREE_IDS => {
            (bu + uid, bg + gid)
        }
        _ => (uid, gid),
    }
}

/// The in-tree owner of what strata sees on disk as (`uid`, `gid`): the
/// inverse of [`tree_to_host`]; an id outside the range (which no stage can
/// have written) is `nobody`, as a stage sees it.
pub fn host_to_tree(uid: u32, gid: u32) -> (u32, u32) {
    const NOBODY: u32 = 65534;
    let back = |id: u32, base: u32| {
        id.checked_sub(base)
            .filter(|k| *k < TREE_IDS)
            .unwrap_or(NOBODY)
    };
    match mode() {
        Some(Mode::Shifted { uid: bu, gid: bg }) => (back(uid, bu), back(gid, bg)),
        _ => (uid, gid),
    }
}

/// Gives `path` (not following a final symlink) the in-tree owner
/// (`uid`, `gid`) as it is written on disk: for directories strata makes
/// for a stage to write in.
pub fn chown_for_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let (u, g) = tree_to_host(uid, gid);
    std::os::unix::fs::lchown(path, Some(u), Some(g))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The `enter` step of a sandbox: read-only binds (host path, path inside)
/// and the command that goes before the stage's own argv.
pub type Entry = (Vec<(PathBuf, String)>, Vec<OsString>);

/// The [`Entry`] of this process's sandboxes; `None` without a [`mode`].
pub fn sandbox_entry() -> Option<&'static Entry> {
    static ENTRY: OnceLock<Option<Entry>> = OnceLock::new();
    let mode = mode()?;
    ENTRY
        .get_or_init(|| {
            let exe = helper_program()?;
            Some(entry_for(mode, &exe, super::elf_interpreter(&exe)))
        })
        .as_ref()
}

/// The program that runs `enter` and the network wrapper: `strata-sandbox`
/// (small: it starts once per stage) beside the running program, one folder
/// up (cargo puts examples and tests in `target/*/examples` and `deps`,
/// beside which the binaries are), or on `PATH` (a program that links the
/// library, with strata installed).
pub fn helper_program() -> Option<PathBuf> {
    const NAME: &str = "strata-sandbox";
    let exe = std::env::current_exe().ok()?;
    let near = [exe.parent(), exe.parent().and_then(Path::parent)];
    let path = std::env::var_os("PATH").unwrap_or_default();
    near.into_iter()
        .flatten()
        .map(Path::to_path_buf)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(NAME))
        .find(|p| p.is_file())
}

/// Refuses to start a sandbox that would go without its `enter` step: with
/// a [`mode`], every bwrap command line must carry [`sandbox_entry`]. The
/// callers that start bwrap (the stage runner, the unshare backend) ask
/// first.
pub fn require_entry() -> Result<(), String> {
    if mode().is_some() && sandbox_entry().is_none() {
        return Err(missing_helper());
    }
    Ok(())
}

/// Why a sandbox cannot start without [`helper_program`].
fn missing_helper() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    format!(
        "strata-sandbox is neither beside {} nor on PATH: every stage starts through it (its user namespace, limits and seccomp filter)\n    hint: install strata-sandbox with strata (`make install`, or the .deb), or add its folder to PATH",
        exe.display()
    )
}

fn entry_for(mode: Mode, exe: &Path, interp: Option<PathBuf>) -> Entry {
    let mut binds = vec![(exe.to_path_buf(), format!("{ENTER_DIR}/strata"))];
    let mut argv: Vec<OsString> = Vec::new();
    // Through the host's loader and libraries, like built-in stages: the
    // build root may be older than the host's glibc.
    if let Some(interp) = interp {
        binds.push((interp, format!("{ENTER_DIR}/ld.so")));
        binds.push((super::host_libdir(), format!("{ENTER_DIR}/lib")));
        argv.extend(
            [
                format!("{ENTER_DIR}/ld.so"),
                "--library-path".into(),
                format!("{ENTER_DIR}/lib"),
            ]
            .map(OsString::from),
        );
    }
    argv.push(format!("{ENTER_DIR}/strata").into());
    argv.push(ENTER_FLAG.into());
    match mode {
        Mode::Shifted { uid, gid } => {
            argv.push(uid.to_string().into());
            argv.push(gid.to_string().into());
        }
        // The same ids as strata's namespace: only the nesting matters
        // (see the module's docs).
        Mode::Inside => argv.extend(["0".into(), "0".into()]),
    }
    argv.push(STAGE_PROCESSES.to_string().into());
    argv.push("--".into());
    (binds, argv)
}

/// `strata-sandbox --strata-sandbox-enter UID GID NPROC -- ARGV…`, run by bwrap
/// inside the sandbox: fork a child into a new user and mount namespace
/// whose 0…65535 are UID…, GID… of the namespace bwrap runs in (the host's
/// as root; strata's own, where they are 0, as a user); set the process
/// limit and the seccomp filter; exec ARGV. The parent waits and exits as
/// the child did. Returns only on error (an exit code).
pub fn enter_main(args: &[OsString]) -> i32 {
    match enter_main_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: sandbox: {e}");
            126
        }
    }
}

fn enter_main_inner(args: &[OsString]) -> Result<i32, String> {
    let (opts, argv) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => return Err("usage: --strata-sandbox-enter UID GID NPROC -- ARGV…".into()),
    };
    let [uid, gid, nproc] = opts else {
        return Err("usage: --strata-sandbox-enter UID GID NPROC -- ARGV…".into());
    };
    let num = |s: &OsStr| s.to_str().and_then(|s| s.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (num(uid), num(gid)) else {
        return Err("UID and GID must be numbers".into());
    };
    let nproc: u64 = num(nproc).map_or(STAGE_PROCESSES, u64::from);
    if argv.is_empty() {
        return Err("nothing to run".into());
    }
    // Everything the child needs is made before fork: after it, the child
    // only makes system calls (no allocation, no locks).
    let filter = super::seccomp::to_kernel(&super::seccomp::program()?);
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "an argument holds a NUL".to_owned()))
        .collect::<Result<_, _>>()?;
    let mut cptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    cptrs.push(std::ptr::null());
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: this process is single-threaded (it is the sandbox's first
    // program), so the child may do anything; it still only makes system
    // calls before exec.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // The parent's ends: kept open here, they would hide its exit
        // (no EOF on `go`) and the child would wait forever.
        close(ready_r);
        close(go_w);
        child(ready_w, go_r, nproc, &filter, &cptrs);
    }
    close(ready_w);
    close(go_r);
    let mut byte = [0u8; 1];
    if read(ready_r, &mut byte) != 1 {
        return Ok(wait(pid));
    }
    // Two extents, 0 and 1…: as the user, strata's own namespace maps its 0
    // and its 1… from two places (the user, the subordinate range), and the
    // kernel wants each extent of a child's map inside one of the parent's.
    let map = |file: &str, base: u32| {
        std::fs::write(
            format!("/proc/{pid}/{file}"),
            format!("0 {base} 1\n1 {} {}\n", base + 1, TREE_IDS - 1),
        )
        .map_err(|e| format!("writing /proc/{pid}/{file}: {e}"))
    };
    let mapped = map("uid_map", uid).and_then(|()| map("gid_map", gid));
    if let Err(e) = mapped {
        close(go_w);
        wait(pid);
        return Err(e);
    }
    write(go_w, b"g");
    close(go_w);
    Ok(wait(pid))
}

/// The child of `enter`: into its namespaces, wait for its map, become
/// root there, confine, exec. Never returns.
fn child(
    ready: libc::c_int,
    go: libc::c_int,
    nproc: u64,
    filter: &[libc::sock_filter],
    argv: &[*const libc::c_char],
) -> ! {
    fn fail(msg: &[u8]) -> ! {
        // SAFETY: write and _exit are async-signal-safe; msg is valid.
        #[allow(unsafe_code)]
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(126)
        }
    }
    // SAFETY: plain system calls on integers and valid pointers; no
    // allocation happens between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            fail(b"strata: sandbox: unshare(CLONE_NEWUSER|CLONE_NEWNS) failed\n");
        }
        libc::write(ready, b"r".as_ptr().cast(), 1);
        libc::close(ready);
        let mut byte = 0u8;
        if libc::read(go, (&mut byte as *mut u8).cast(), 1) != 1 {
            fail(b"strata: sandbox: the user namespace was not mapped\n");
        }
        libc::close(go);
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(0, 0, 0) != 0
            || libc::setresuid(0, 0, 0) != 0
        {
            fail(b"strata: sandbox: becoming root of the user namespace failed\n");
        }
    }
    if confine(nproc, filter).is_err() {
        fail(b"strata: sandbox: setting the process limit or the seccomp filter failed\n");
    }
    exec(argv);
    fail(b"strata: sandbox: the stage's program could not be started\n")
}

/// The process limit and the seccomp filter, on the calling process.
fn confine(nproc: u64, filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: nproc,
        rlim_max: nproc,
    };
    // SAFETY: setrlimit reads the struct it is given.
    #[allow(unsafe_code)]
    if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    super::seccomp::install(filter)
}

fn exec(argv: &[*const libc::c_char]) {
    // SAFETY: argv is a NULL-terminated array of valid C strings; execvp
    // only returns on failure.
    #[allow(unsafe_code)]
    unsafe {
        libc::execvp(argv[0], argv.as_ptr());
    }
}

fn pipe() -> Result<(libc::c_int, libc::c_int), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    #[allow(unsafe_code)]
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    Ok((fds[0], fds[1]))
}

fn close(fd: libc::c_int) {
    // SAFETY: closes an fd this process made and owns.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fd);
    }
}

fn read(fd: libc::c_int, buf: &mut [u8]) -> isize {
    // SAFETY: reads into a buffer of the given length.
    #[allow(unsafe_code)]
    unsafe {
        libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
    }
}

fn write(fd: libc::c_int, buf: &[u8]) {
    // SAFETY: writes from a buffer of the given length.
    #[allow(unsafe_code)]
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), buf.len());
    }
}

/// Waits for `pid` and returns an exit code that says how it ended (a
/// signal is 128 + its number, as a shell says it).
fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 126;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_ranges_are_found_by_name_or_uid_and_size() {
        let text = "alice:100000:65536\nbob:200000:1000\n1002:300000:65536\nbob:400000:65536\n";
        assert_eq!(
            subid_range(text, "alice", 1000, 65535),
            Some((100000, 65536))
        );
        // bob's first range is too small for a tree's ids: the next one.
        assert_eq!(subid_range(text, "bob", 1001, 65535), Some((400000, 65536)));
        assert_eq!(
            subid_range(text, "carol", 1002, 65535),
            Some((300000, 65536))
        );
        assert_eq!(subid_range(text, "dave", 1003, 65535), None);
    }

    #[test]
    fn the_enter_step_goes_through_the_host_loader() {
        let (binds, argv) = entry_for(
            Mode::Shifted { uid: 7, gid: 9 },
            Path::new("/x/strata"),
            Some("/lib64/ld-linux-x86-64.so.2".into()),
        );
        assert_eq!(
            binds[0],
            ("/x/strata".into(), "/run/strata-enter/strata".into())
        );
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            argv.join(" "),
            format!(
                "/run/strata-enter/ld.so --library-path /run/strata-enter/lib /run/strata-enter/strata {ENTER_FLAG} 7 9 4096 --"
            )
        );
        let (_, inside) = entry_for(Mode::Inside, Path::new("/x/strata"), None);
        let inside: Vec<String> = inside.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(inside[2..5], ["0", "0", "4096"]);
    }
}
