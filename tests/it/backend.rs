//! Execution environments for real: one contract suite run against every
//! backend that can run here (unshare = bwrap, incus-lxc = the incus CLI),
//! then what only incus has (hostname template, graceful stop vs kill, GC),
//! incus-vm against a recorded CLI, and `strata env` on the command line.
//!
//! One minbase+systemd-sysv system is bootstrapped for the whole module into
//! a store under cargo's target tmp dir, which later runs reuse. Instances
//! are named `strata-test-…` and removed by the test that made them.

use crate::support::{Run, bin_dir, bounded_command, cleanup, require};
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use strata::backend::cli::RecordingCli;
use strata::backend::envs;
use strata::backend::image;
use strata::backend::incus::{Incus, InstanceSpec};
use strata::backend::qemu as vm;
use strata::backend::{
    Backend, BackendError, ExecutionEnvironment, Owner, RunOptions, Specials, Stdin, Stopped, User,
};
use strata::catalog::Catalog;
use strata::store::{DEFAULT_LOCK_TIMEOUT, Store};
use strata::system::{self, Image, Source};

/// The system every environment here starts from.
pub fn system_manifest() -> Value {
    json!({"version": "2", "pipelines": [{"name": "system", "runner": "debian", "source-epoch": 1700000000,
        "stages": [{"type": "bootstrap", "options": {
            "bootstrap_options": {"architecture": "amd64", "variant": "minbase", "extra_packages": ["systemd-sysv"]},
            "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}}]}]})
}

struct Shared {
    store: PathBuf,
    manifest: String,
}

fn catalog() -> Catalog {
    Catalog::new(vec![]).with_builtin_dir(bin_dir())
}

/// The module's store, with the system built and checkpointed.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let store = crate::support::reused_store("backend");
        let manifest = system_manifest().to_string();
        let out = Command::new(bin_dir().join("strata"))
            .args(["build", "-", "--checkpoint", "*", "-q", "--store"])
            .arg(&store)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(manifest.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Shared { store, manifest }
    })
}

/// The store at `root`, open (envs and systems take the open store).
fn open(root: &Path) -> Store {
    Store::open(root, DEFAULT_LOCK_TIMEOUT).unwrap()
}

fn source() -> Source {
    Source::Pipeline {
        text: shared().manifest.clone(),
        origin: "backend-test".into(),
        name: "system".into(),
    }
}

/// The system's incus image, imported once.
fn incus_alias() -> &'static str {
    static ALIAS: OnceLock<String> = OnceLock::new();
    require("incus");
    ALIAS.get_or_init(|| {
        let sh = shared();
        let store = open(&sh.store);
        let system = system::build_system(&store, &catalog(), &source(), true, true).unwrap();
        let alias = image::alias(&system.id);
        image::import(
            &strata::backend::cli::SystemCli,
            &sh.store,
            system.image_files.as_ref().unwrap(),
            &alias,
        )
        .unwrap();
        alias
    })
}

#[track_caller]
fn incus(args: &[&str]) -> std::process::Output {
    require("incus");
    Command::new("incus").args(args).output().unwrap()
}

/// Removes environment `name` of `store` whatever state a failed earlier
/// run left. It never panics: it runs from `Drop`, and for the unshare
/// backend on a machine without incus too.
fn scrub(store: &Path, name: &str) {
    let store = open(store);
    let _ = envs::delete(&store, name);
    let _ = std::fs::remove_dir_all(store.layout().instance(name).dir());
    cleanup("incus", &["delete", "--force", &format!("strata-{name}")]);
}

/// An environment that is destroyed when dropped (unless it is the shared
/// qemu VM, which a guardian ends with the test process).
struct TestEnv {
    env: Box<dyn ExecutionEnvironment>,
    store: PathBuf,
    keep: bool,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !self.keep {
            scrub(&self.store, &self.env.state().name.clone());
        }
    }
}

impl std::ops::Deref for TestEnv {
    type Target = dyn ExecutionEnvironment;
    fn deref(&self) -> &Self::Target {
        self.env.as_ref()
    }
}

impl std::ops::DerefMut for TestEnv {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.env.as_mut()
    }
}

fn suffix(b: Backend) -> &'static str {
    match b {
        Backend::Unshare => "u",
        Backend::IncusLxc => "l",
        Backend::IncusVm => "v",
        Backend::Qemu => "q",
    }
}

/// A new environment `test-SHORT-B` on backend `b`, not started.
fn create(b: Backend, short: &str) -> TestEnv {
    let sh = shared();
    let name = format!("test-{short}-{}", suffix(b));
    if b == Backend::Qemu {
        return create_qemu(&name);
    }
    if b != Backend::Unshare {
        require("incus");
    }
    scrub(&sh.store, &name);
    let image = match b {
        Backend::Unshare => Image::Build(source()),
        _ => Image::Alias(incus_alias().to_owned()),
    };
    let env = system::create_env(
        &open(&sh.store),
        &catalog(),
        &name,
        b,
        &image,
        Arc::new(strata::backend::cli::SystemCli),
        true,
    )
    .unwrap();
    TestEnv {
        env,
        store: sh.store.clone(),
        keep: false,
    }
}

fn started(b: Backend, short: &str) -> TestEnv {
    if b == Backend::Qemu {
        return shared_qemu();
    }
    let mut env = create(b, short);
    env.start().unwrap();
    env
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn sh(env: &dyn ExecutionEnvironment, script: &str) -> String {
    let done = env
        .run(&argv(&["sh", "-c", script]), &RunOptions::captured())
        .unwrap();
    assert_eq!(done.status, 0, "{script}: {}", done.stderr_text());
    done.stdout_text()
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("strata-test-")
        .tempdir()
        .unwrap()
}

// ---- the contract: every function runs against every backend below ----

fn lifecycle(b: Backend) {
    let mut env = create(b, "life");
    let err = env
        .run(&argv(&["true"]), &RunOptions::captured())
        .unwrap_err();
    assert!(matches!(err, BackendError::NotStarted(_)), "{err}");
    env.start().unwrap();
    let err = env.start().unwrap_err();
    assert!(matches!(err, BackendError::AlreadyRunning(_)), "{err}");
    assert_eq!(sh(&*env, "echo up"), "up\n");
    assert_eq!(env.stop().unwrap(), Stopped::Gracefully);
    let err = env
        .run(&argv(&["true"]), &RunOptions::captured())
        .unwrap_err();
    assert!(matches!(err, BackendError::NotStarted(_)), "{err}");
    // A stopped environment starts again, with what it had.
    env.start().unwrap();
    sh(&*env, "echo kept > /root/kept");
    assert_eq!(sh(&*env, "cat /root/kept"), "kept\n");
    env.destroy().unwrap();
    match b {
        Backend::Unshare => assert!(!Path::new(&env.state().image).exists()),
        Backend::Qemu => {
            let dir = open(&env.store).layout().instance(&env.state().name);
            assert!(!dir.dir().join("qemu").exists(), "the VM's files are gone");
        }
        _ => assert!(
            !incus(&["info", env.state().instance.as_deref().unwrap()])
                .status
                .success(),
            "the instance is gone"
        ),
    }
}

fn run_options(b: Backend) {
    let env = started(b, "run");
    let done = env
        .run(
            &argv(&["sh", "-c", "echo out; echo err >&2; exit 7"]),
            &RunOptions::captured(),
        )
        .unwrap();
    assert_eq!(
        (done.status, done.stdout_text(), done.stderr_text()),
        (7, "out\n".into(), "err\n".into())
    );
    let opts = RunOptions {
        stdin: Stdin::Bytes(b"line one\nline two\n".to_vec()),
        ..RunOptions::captured()
    };
    let done = env.run(&argv(&["wc", "-l"]), &opts).unwrap();
    assert_eq!(done.stdout_text().trim(), "2");
    let opts = RunOptions {
        cwd: Some("/etc".into()),
        env: vec![("STRATA_TEST".into(), "a value".into())],
        ..RunOptions::captured()
    };
    let done = env
        .run(&argv(&["sh", "-c", "pwd; echo \"$STRATA_TEST\""]), &opts)
        .unwrap();
    assert_eq!(done.stdout_text(), "/etc\na value\n");
    let opts = RunOptions {
        user: User::Unprivileged,
        ..RunOptions::captured()
    };
    let done = env
        .run(
            &argv(&["sh", "-c", "id -un; id -u; echo $HOME; pwd"]),
            &opts,
        )
        .unwrap();
    assert_eq!(
        done.stdout_text(),
        "strata\n4242\n/home/strata\n/home/strata\n"
    );
    let done = env
        .run(&argv(&["sh", "-c", "touch /root/x"]), &opts)
        .unwrap();
    assert_ne!(done.status, 0, "the user is not root");
    let err = env
        .run(&argv(&["strata-no-such-command"]), &RunOptions::captured())
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::CommandNotFound { command, .. } if command == "strata-no-such-command"),
        "{err}"
    );
    let err = env.run(&[], &RunOptions::captured()).unwrap_err();
    assert!(matches!(err, BackendError::EmptyCommand), "{err}");
    let opts = RunOptions {
        cwd: Some("etc".into()),
        ..RunOptions::captured()
    };
    let err = env.run(&argv(&["true"]), &opts).unwrap_err();
    assert!(matches!(err, BackendError::PathNotAbsolute(_)), "{err}");
}

fn run_timeout(b: Backend) {
    let env = started(b, "timeout");
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(1)),
        ..RunOptions::captured()
    };
    let started = Instant::now();
    let err = env.run(&argv(&["sleep", "77"]), &opts).unwrap_err();
    assert!(matches!(err, BackendError::TimedOut { .. }), "{err}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Nothing of it is left running inside.
    let done = env
        .run(
            &argv(&["sh", "-c", "ps -eo args | grep -c '^sleep 77' || true"]),
            &RunOptions::captured(),
        )
        .unwrap();
    assert_eq!(done.stdout_text().trim(), "0");
    // A command that finishes in time is not affected.
    assert_eq!(env.run(&argv(&["true"]), &opts).unwrap().status, 0);
}

fn push_pull_files(b: Backend) {
    let env = started(b, "files");
    let host = scratch();
    let file = host.path().join("data.txt");
    std::fs::write(&file, "pushed bytes\n").unwrap();
    env.file_push(
        &file,
        "/srv/data.txt",
        0o640,
        Owner {
            uid: 4242,
            gid: 4242,
        },
    )
    .unwrap();
    assert_eq!(
        sh(&*env, "stat -c '%a %u %g' /srv/data.txt; cat /srv/data.txt"),
        "640 4242 4242\npushed bytes\n"
    );
    sh(
        &*env,
        "printf 'made inside' > /srv/out.bin; chmod 0604 /srv/out.bin",
    );
    let back = scratch();
    let pulled = env
        .file_pull("/srv/out.bin", back.path(), Specials::Drop)
        .unwrap()
        .path;
    assert_eq!(pulled, back.path().join("out.bin"));
    assert_eq!(std::fs::read_to_string(&pulled).unwrap(), "made inside");
    assert_eq!(std::fs::metadata(&pulled).unwrap().mode() & 0o7777, 0o604);
    // A pull replaces what the host folder had under that name.
    sh(&*env, "printf 'second' > /srv/out.bin");
    env.file_pull("/srv/out.bin", back.path(), Specials::Drop)
        .unwrap();
    assert_eq!(std::fs::read_to_string(&pulled).unwrap(), "second");

    let err = env
        .file_push(&file, "srv/relative", 0o644, Owner::default())
        .unwrap_err();
    assert!(matches!(err, BackendError::PathNotAbsolute(_)), "{err}");
    let err = env
        .file_pull("/srv/strata-missing", back.path(), Specials::Drop)
        .unwrap_err();
    assert!(matches!(err, BackendError::NotFound(_)), "{err}");
    assert_eq!(
        entries(back.path()),
        ["out.bin"],
        "a failed pull leaves nothing"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn push_pull_dirs(b: Backend) {
    let env = started(b, "dirs");
    let host = scratch();
    let d = host.path().join("tree");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/secret"), "s3").unwrap();
    std::fs::set_permissions(d.join("sub/secret"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(d.join("sub"), PermissionsExt::from_mode(0o751)).unwrap();
    std::os::unix::fs::symlink("sub/secret", d.join("link")).unwrap();
    env.dir_push(&d, "/srv/pushed").unwrap();
    assert_eq!(
        sh(
            &*env,
            "cd /srv/pushed && find . -printf '%P %m %U %l\\n' | sort"
        ),
        " 755 0 \nlink 777 0 sub/secret\nsub 751 0 \nsub/secret 600 0 \n"
    );
    let err = env.dir_push(&d, "/srv/pushed").unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");

    sh(
        &*env,
        "mkdir -p /srv/made/deep && echo x > /srv/made/deep/f && chmod 0710 /srv/made/deep && chown 4242:4242 /srv/made/deep/f",
    );
    let back = scratch();
    let pulled = env
        .dir_pull("/srv/made", back.path(), Specials::Drop)
        .unwrap()
        .path;
    assert_eq!(pulled, back.path().join("made"));
    assert_eq!(
        std::fs::read_to_string(pulled.join("deep/f")).unwrap(),
        "x\n"
    );
    assert_eq!(
        std::fs::metadata(pulled.join("deep")).unwrap().mode() & 0o7777,
        0o710
    );
    assert_eq!(
        std::fs::metadata(pulled.join("deep/f")).unwrap().uid(),
        4242
    );
    let err = env
        .dir_pull("/srv/strata-missing", back.path(), Specials::Drop)
        .unwrap_err();
    assert!(matches!(err, BackendError::NotFound(_)), "{err}");
}

fn pulls_never_follow_symlinks_out(b: Backend) {
    let env = started(b, "escape");
    // A file on the host that a symlink inside names, by a path that does
    // not exist inside the environment.
    let host_side = scratch();
    let secret = host_side.path().join("host-secret");
    std::fs::write(&secret, "host only").unwrap();
    let secret = secret.display().to_string();
    sh(
        &*env,
        &format!(
            "mkdir -p /srv/esc && ln -s '{secret}' /srv/esc/abs && ln -s '../../../../../../../..{secret}' /srv/esc/rel && ln -s / /srv/esc/root"
        ),
    );
    let back = scratch();
    for link in ["/srv/esc/abs", "/srv/esc/rel"] {
        let err = env
            .file_pull(link, back.path(), Specials::Drop)
            .unwrap_err();
        assert!(matches!(err, BackendError::NotFound(_)), "{link}: {err}");
    }
    assert!(
        entries(back.path()).is_empty(),
        "{:?}",
        entries(back.path())
    );
    // In a folder pull, links come out as links, never followed.
    let pulled = env
        .dir_pull("/srv/esc", back.path(), Specials::Drop)
        .unwrap()
        .path;
    assert_eq!(
        std::fs::read_link(pulled.join("abs"))
            .unwrap()
            .display()
            .to_string(),
        secret
    );
    assert!(
        std::fs::symlink_metadata(pulled.join("root"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(entries(back.path()), ["esc"]);
    // A pull of `/` has no base name to land under.
    let err = env.dir_pull("/", back.path(), Specials::Drop).unwrap_err();
    assert!(matches!(err, BackendError::PullEscapes { .. }), "{err}");
}

/// Runs `pull`; if it has not returned in 60 s the whole test binary ends
/// with a failure: while a pull can still hang on a FIFO, the test fails
/// instead of hanging.
fn watchdog<T>(what: &str, pull: impl FnOnce() -> T) -> T {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = done.clone();
    let what = what.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        if !watch.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("pulling {what} hung for 60 s");
            std::process::exit(101);
        }
    });
    let out = pull();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    out
}

fn pulls_leave_privileges_behind(b: Backend) {
    let env = started(b, "special");
    sh(
        &*env,
        "rm -rf /srv/sp && mkdir -p /srv/sp && mkfifo /srv/sp/fifo && printf x > /srv/sp/suid && chmod 4755 /srv/sp/suid && printf y > /srv/sp/sgid && chmod 2711 /srv/sp/sgid && ln -s fifo /srv/sp/to-fifo",
    );
    let back = scratch();
    let folder = back.path();
    // A FIFO is refused, without waiting for a writer that never comes.
    for fifo in ["/srv/sp/fifo", "/srv/sp/to-fifo"] {
        let err = watchdog(fifo, || env.file_pull(fifo, folder, Specials::Drop)).unwrap_err();
        assert!(
            matches!(&err, BackendError::NotFound(_) | BackendError::Tool { .. }),
            "{fifo}: {err}"
        );
    }
    assert!(entries(folder).is_empty(), "{:?}", entries(folder));
    // A setuid file comes out without the bit.
    let pulled = env
        .file_pull("/srv/sp/suid", folder, Specials::Drop)
        .unwrap();
    assert_eq!(pulled.cleared, 1);
    assert_eq!(
        std::fs::metadata(&pulled.path).unwrap().mode() & 0o7777,
        0o755
    );
    // A folder pull leaves the FIFO out and clears setuid and setgid.
    let pulled = watchdog("/srv/sp", || {
        env.dir_pull("/srv/sp", folder, Specials::Drop)
    })
    .unwrap();
    assert_eq!((pulled.left_out, pulled.cleared), (1, 2));
    assert_eq!(entries(&pulled.path), ["sgid", "suid", "to-fifo"]);
    let mode = |name: &str| std::fs::metadata(pulled.path.join(name)).unwrap().mode() & 0o7777;
    assert_eq!((mode("suid"), mode("sgid")), (0o755, 0o711));
    std::fs::remove_dir_all(&pulled.path).unwrap();
    // Asked for, they come out as they are.
    let pulled = watchdog("/srv/sp", || {
        env.dir_pull("/srv/sp", folder, Specials::Keep)
    })
    .unwrap();
    assert_eq!((pulled.left_out, pulled.cleared), (0, 0));
    let fifo = std::fs::symlink_metadata(pulled.path.join("fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
    let mode = |name: &str| std::fs::metadata(pulled.path.join(name)).unwrap().mode() & 0o7777;
    assert_eq!((mode("suid"), mode("sgid")), (0o4755, 0o2711));
}

fn refuses_an_image_that_is_no_system(b: Backend) {
    let sh = shared();
    let m = json!({"version": "2", "pipelines": [{"name": "bare", "stages": [
        {"type": "mkdir", "options": {"paths": [{"path": "/etc"}, {"path": "/sbin"}]}}]}]});
    let name = format!("test-bare-{}", suffix(b));
    scrub(&sh.store, &name);
    let source = Source::Pipeline {
        text: m.to_string(),
        origin: "bare.json".into(),
        name: "bare".into(),
    };
    let err = system::create_env(
        &open(&sh.store),
        &catalog(),
        &name,
        b,
        &Image::Build(source),
        Arc::new(strata::backend::cli::SystemCli),
        true,
    )
    .unwrap_err();
    assert!(
        matches!(&err, BackendError::NotASystem { path, .. } if *path == b.required_path()),
        "{err}"
    );
    assert!(err.to_string().contains(b.required_path()), "{err}");
    assert!(
        envs::load(&open(&sh.store), &name).is_err(),
        "no environment is left"
    );
    if matches!(b, Backend::IncusLxc | Backend::IncusVm) {
        let loaded = strata::manifest::load(&m.to_string(), "bare.json", &catalog()).unwrap();
        let id = strata::manifest::plan::Plan::new(&loaded)
            .pipeline_id(0)
            .unwrap()
            .clone();
        assert!(
            !incus(&["image", "info", &image::alias(&id)])
                .status
                .success(),
            "nothing was imported"
        );
        assert!(!incus(&["info", &format!("strata-{name}")]).status.success());
    }
}

macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod unshare {
            $( #[test] fn $test() { super::$test(strata::backend::Backend::Unshare) } )*
        }
        mod incus_lxc {
            $( #[test] fn $test() { super::$test(strata::backend::Backend::IncusLxc) } )*
        }
        mod qemu {
            $( #[test] fn $test() { super::$test(strata::backend::Backend::Qemu) } )*
        }
    };
}

contract!(
    lifecycle,
    run_options,
    run_timeout,
    push_pull_files,
    push_pull_dirs,
    pulls_never_follow_symlinks_out,
    pulls_leave_privileges_behind,
    refuses_an_image_that_is_no_system,
);

// ---- qemu ----

/// The system the qemu tests boot: the shared one's bootstrap with a
/// kernel, and the guest agent.
fn qemu_manifest() -> Value {
    json!({"version": "2", "pipelines": [{"name": "system", "runner": "debian", "source-epoch": 1700000000,
        "stages": [{"type": "bootstrap", "options": {
            "bootstrap_options": {"architecture": "amd64", "variant": "minbase", "extra_packages": ["systemd-sysv", "linux-image-amd64"]},
            "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}},
            {"type": "customize", "options": qemu_customize()}]}]})
}

/// The agent, and a small initrd: Debian's default (MODULES=most) is a
/// 35 MB one whose unpacking and udev run take most of a TCG boot; the
/// VM needs only its disk's driver and filesystem.
fn qemu_customize() -> Value {
    let mut options = vm::agent::customize_options();
    // The kernel came with the bootstrap: its initramfs is made again.
    let script = format!(
        "{}update-initramfs -u -k all\n",
        options["script"].as_str().unwrap()
    );
    options["script"] = json!(script);
    options
}

/// A root filesystem image of the qemu system and the kernel and initrd
/// to boot it with.
struct QemuImage {
    disk: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    id: String,
}

/// Made once per system id, beside the module's store: the image stages
/// (partition, mkfs, bootloader) are not there yet, so the test makes an
/// ext4 filesystem from the tree with `mkfs.ext4 -d` and boots it directly.
fn qemu_image() -> &'static QemuImage {
    static IMAGE: OnceLock<QemuImage> = OnceLock::new();
    require("qemu-system-x86_64");
    IMAGE.get_or_init(|| {
        let sh = shared();
        let store = open(&sh.store);
        let source = Source::Pipeline {
            text: qemu_manifest().to_string(),
            origin: "backend-test-qemu".into(),
            name: "system".into(),
        };
        let system = system::build_system(&store, &catalog(), &source, false, true).unwrap();
        let dir = sh.store.parent().unwrap().join("qemu-image").join(system.id.as_str());
        let image = QemuImage {
            disk: dir.join("root.raw"),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            id: system.id.to_string(),
        };
        if image.disk.exists() {
            return image;
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The stored tree holds the stages' namespace's owners: unpacked
        // with the in-tree ones (as root), then made a filesystem.
        let root = dir.join("root");
        std::fs::create_dir(&root).unwrap();
        let maps = in_tree_owner_maps(&system.tree, &dir);
        let script = format!(
            "tar --numeric-owner {} -C \"$1\" -cf - . | tar --numeric-owner -xpf - -C \"$2\" && cp -L \"$2\"/boot/vmlinuz-* \"$3\"/vmlinuz && cp -L \"$2\"/boot/initrd.img-* \"$3\"/initrd.img && mkfs.ext4 -q -F -L root -d \"$2\" \"$3\"/root.partial 2G && mv \"$3\"/root.partial \"$3\"/root.raw",
            maps.join(" ")
        );
        let status = Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(&system.tree)
            .arg(&root)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "making the qemu test image failed");
        std::fs::remove_dir_all(&root).unwrap();
        image
    })
}

/// A new qemu environment `name` from the test image, not started, without
/// a NIC.
fn create_qemu(name: &str) -> TestEnv {
    let image = qemu_image();
    let sh = shared();
    scrub(&sh.store, name);
    let env = envs::create(
        &open(&sh.store),
        name,
        Backend::Qemu,
        envs::Prepared::Disk {
            image: vm::DiskImage::direct(
                &image.disk,
                vm::DiskFormat::Raw,
                &image.kernel,
                &image.initrd,
            ),
            origin: "the qemu test image".into(),
            id: image.id.clone(),
            network: false,
        },
        Arc::new(strata::backend::cli::SystemCli),
    )
    .unwrap();
    TestEnv {
        env,
        store: sh.store.clone(),
        keep: false,
    }
}

/// One booted qemu environment for the contract tests that only need a
/// running system (each boot is ~10 s of TCG): each test gets its own
/// handle on it. A guardian process kills its qemu once this test
/// process has ended, however it ends; the next run scrubs its files.
fn shared_qemu() -> TestEnv {
    static STATE: OnceLock<strata::backend::EnvState> = OnceLock::new();
    let sh = shared();
    let state = STATE.get_or_init(|| {
        let mut env = create_qemu("test-shared-q");
        env.keep = true;
        env.start().unwrap();
        let pid = open(&sh.store)
            .layout()
            .instance("test-shared-q")
            .dir()
            .join("qemu/qemu.pid");
        // Backgrounded by a shell that exits at once: init reaps it.
        let status = Command::new("sh")
            .args([
                "-c",
                "(while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -9 \"$(cat \"$2\")\") &",
                "guardian",
                &std::process::id().to_string(),
            ])
            .arg(pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        env.state().clone()
    });
    TestEnv {
        env: strata::backend::open(state.clone(), &open(&sh.store)).unwrap(),
        store: sh.store.clone(),
        keep: true,
    }
}

fn as_qemu(env: &TestEnv) -> vm::Qemu {
    let store = open(&env.store);
    vm::Qemu::open(
        env.state().clone(),
        &store.layout().instance(&env.state().name),
    )
}

#[test]
fn qemu_stop_is_graceful_and_kills_after_the_timeout() {
    let mut env = create_qemu("test-stop-q");
    let t = Instant::now();
    env.start().unwrap();
    eprintln!("qemu: start to ready in {:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(sh(&*env, "echo up"), "up\n");
    eprintln!("qemu: first run in {:?}", t.elapsed());
    // The agent answers while the rest of the boot still runs; a shutdown
    // in the middle of it takes long under TCG on a loaded machine.
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(120)),
        ..RunOptions::captured()
    };
    env.run(&argv(&["systemctl", "is-system-running", "--wait"]), &opts)
        .unwrap();
    let mut vm = as_qemu(&env);
    vm.set_stop_timeout(Duration::from_secs(60));
    let t = Instant::now();
    assert_eq!(vm.stop().unwrap(), Stopped::Gracefully);
    eprintln!("qemu: graceful stop in {:?}", t.elapsed());
    assert!(vm.pid().is_none(), "qemu is gone");
    vm.set_stop_timeout(Duration::from_secs(3));
    vm.start().unwrap();
    // A unit that never stops: shutdown waits for it until strata kills.
    let done = vm
        .run(
            &argv(&[
                "systemd-run",
                "--unit=strata-stubborn",
                "-p",
                "TimeoutStopSec=infinity",
                "-p",
                "KillSignal=SIGCONT",
                "-p",
                "SendSIGKILL=no",
                "sleep",
                "600",
            ]),
            &RunOptions::captured(),
        )
        .unwrap();
    assert_eq!(done.status, 0, "{}", done.stderr_text());
    let t = Instant::now();
    assert_eq!(vm.stop().unwrap(), Stopped::Killed);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert!(vm.pid().is_none(), "qemu is gone");
    env.env = Box::new(vm);
}

#[test]
fn qemu_a_guest_that_powered_itself_off_is_reported_not_waited_for() {
    let mut env = create_qemu("test-gone-q");
    let t = Instant::now();
    env.start().unwrap();
    eprintln!("qemu: start to ready in {:?}", t.elapsed());
    // The guest may go down before its agent has answered.
    match env.run(
        &argv(&["systemctl", "--no-block", "poweroff"]),
        &RunOptions::captured(),
    ) {
        Ok(done) => assert_eq!(done.status, 0, "{}", done.stderr_text()),
        Err(BackendError::Gone { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    let vm = as_qemu(&env);
    let t = Instant::now();
    while vm.pid().is_some() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(vm.pid().is_none(), "the guest powered off");
    let t = Instant::now();
    let err = env
        .run(&argv(&["true"]), &RunOptions::captured())
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(err, BackendError::Gone { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("console.log"), "the console's tail: {text}");
    // It starts again, and stop of a VM already gone is no error.
    env.start().unwrap();
    assert_eq!(sh(&*env, "echo again"), "again\n");
    assert_eq!(env.stop().unwrap(), Stopped::Gracefully);
}

// ---- incus only ----

#[test]
fn incus_hostname_and_hosts_come_from_the_templates() {
    let env = started(Backend::IncusLxc, "host");
    let instance = env.state().instance.clone().unwrap();
    assert_eq!(sh(&*env, "hostname").trim(), instance);
    assert_eq!(sh(&*env, "cat /etc/hostname").trim(), instance);
    let hosts = sh(&*env, "cat /etc/hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("127.0.1.1") && l.contains(&instance)),
        "{hosts}"
    );
    assert!(hosts.contains("ff02::2"), "{hosts}");
    // An environment has the network: a lease on debusinebr0 and a
    // resolver, the bridge's dnsmasq.
    let resolv = sh(&*env, "cat /etc/resolv.conf");
    let gateway = sh(&*env, "awk '$2 == \"00000000\" {print $3}' /proc/net/route");
    assert!(resolv.starts_with("nameserver "), "{resolv}");
    assert!(!gateway.trim().is_empty(), "no default route");
    assert_eq!(
        env_as_incus(&env).autopkgtest_virt_args(),
        [incus_alias().to_owned()]
    );
}

fn env_as_incus(env: &TestEnv) -> Incus {
    Incus::open(
        env.state().clone(),
        &env.store,
        Arc::new(strata::backend::cli::SystemCli),
    )
}

#[test]
fn incus_stop_is_graceful_and_kills_after_the_timeout() {
    let mut env = started(Backend::IncusLxc, "stop");
    let mut inc = env_as_incus(&env);
    inc.set_stop_timeout(Duration::from_secs(3));
    let t = Instant::now();
    assert_eq!(inc.stop().unwrap(), Stopped::Gracefully);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    inc.start().unwrap();
    // A unit that never stops: shutdown waits for it until incus kills.
    let done = inc
        .run(
            &argv(&[
                "systemd-run",
                "--unit=strata-stubborn",
                "-p",
                "TimeoutStopSec=infinity",
                "-p",
                "KillSignal=SIGCONT",
                "-p",
                "SendSIGKILL=no",
                "sleep",
                "600",
            ]),
            &RunOptions::captured(),
        )
        .unwrap();
    assert_eq!(done.status, 0, "{}", done.stderr_text());
    let t = Instant::now();
    assert_eq!(inc.stop().unwrap(), Stopped::Killed);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(25),
        "{took:?}"
    );
    let state = incus(&["list", inc.instance(), "--format", "csv", "-c", "s"]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "STOPPED");
    env.env = Box::new(inc);
}

#[test]
fn incus_gc_removes_a_leaked_instance_and_only_that() {
    let store = scratch();
    let alias = incus_alias().to_owned();
    let cli = Arc::new(strata::backend::cli::SystemCli);
    let make = |name: &str| {
        scrub(store.path(), name);
        system::create_env(
            &open(store.path()),
            &catalog(),
            name,
            Backend::IncusLxc,
            &Image::Alias(alias.clone()),
            cli.clone(),
            true,
        )
        .unwrap()
    };
    let _kept = make("test-gc-kept");
    let _leaked = make("test-gc-leaked");
    // The state of one goes missing, as after a crash: its instance leaked.
    let opened = open(store.path());
    std::fs::remove_dir_all(opened.layout().instance("test-gc-leaked").dir()).unwrap();
    let all = envs::list(&opened).unwrap();
    let gone = strata::backend::incus::gc(store.path(), cli.as_ref(), &all).unwrap();
    assert_eq!(gone.instances, ["strata-test-gc-leaked"]);
    // Images of stores that are gone may go too; the shared one's store exists.
    assert!(!gone.images.iter().any(|i| i == incus_alias()), "{gone:?}");
    assert!(incus(&["image", "info", incus_alias()]).status.success());
    assert!(!incus(&["info", "strata-test-gc-leaked"]).status.success());
    assert!(incus(&["info", "strata-test-gc-kept"]).status.success());

    // The same through `strata env gc`.
    let _leaked = make("test-gc-leaked");
    std::fs::remove_dir_all(opened.layout().instance("test-gc-leaked").dir()).unwrap();
    let out = Command::new(bin_dir().join("strata"))
        .args(["env", "gc", "--store"])
        .arg(store.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "instance strata-test-gc-leaked\n"
    );
    assert!(!incus(&["info", "strata-test-gc-leaked"]).status.success());
    assert!(incus(&["info", "strata-test-gc-kept"]).status.success());
    scrub(store.path(), "test-gc-kept");
}

/// incus VMs need vhost_vsock, which this machine's kernel lacks: this test
/// runs the incus-vm backend against a recorded CLI and checks the argv it
/// would give incus. It does not boot a VM.
#[test]
fn incus_vm_gives_incus_the_expected_commands_recorded_not_run() {
    let cli = Arc::new(RecordingCli::new(|argv| {
        match argv.get(1).map(String::as_str) {
            Some("exec") if argv.contains(&"is-system-running".to_string()) => {
                (0, "running\n".into())
            }
            // Its lease: a default route via 10.233.71.1.
            Some("exec") if argv.contains(&"/proc/net/route".to_string()) => (
                0,
                "Iface\tDestination\tGateway\nenp5s0\t00000000\t0147E90A\n".into(),
            ),
            _ => (0, String::new()),
        }
    }));
    let store = scratch();
    let spec = InstanceSpec {
        name: "test-vm",
        backend: Backend::IncusVm,
        alias: "artifact/abc",
        origin: "a test",
        artifact_id: "abc",
        owner_pid: None,
        network: true,
    };
    let mut vm = Incus::create(store.path(), &spec, cli.clone()).unwrap();
    vm.start().unwrap();
    vm.run(
        &argv(&["echo", "hi"]),
        &RunOptions {
            cwd: Some("/tmp".into()),
            env: vec![("A".into(), "1".into())],
            user: User::Unprivileged,
            timeout: Some(Duration::from_secs(5)),
            ..RunOptions::captured()
        },
    )
    .unwrap();
    let host = store.path().join("f");
    std::fs::write(&host, "x").unwrap();
    vm.file_push(&host, "/etc/f", 0o600, Owner { uid: 1, gid: 2 })
        .unwrap();
    vm.stop().unwrap();
    vm.destroy().unwrap();
    let calls: Vec<String> = cli.calls().iter().map(|c| c.join(" ")).collect();
    let key = strata::backend::incus::store_key(store.path());
    let expected = [
        "incus image info artifact/abc".to_owned(),
        format!("incus init artifact/abc strata-test-vm --profile debusine -c user.strata.store={key} -c user.strata.env=test-vm --vm"),
        "incus start strata-test-vm".into(),
        "incus exec strata-test-vm --mode non-interactive -- systemctl is-system-running".into(),
        "incus exec strata-test-vm --mode non-interactive -- cat /proc/net/route".into(),
        "incus exec strata-test-vm --mode non-interactive -- sh -c grep -qs '^nameserver' /etc/resolv.conf || { rm -f /etc/resolv.conf; echo \"nameserver $1\" > /etc/resolv.conf; } sh 10.233.71.1".into(),
        "incus exec strata-test-vm --mode non-interactive -- sh -c id -u strata >/dev/null 2>&1 || useradd --create-home --uid 4242 --user-group --shell /bin/sh strata".into(),
        "incus exec strata-test-vm --mode non-interactive --cwd /tmp --user 4242 --group 4242 --env HOME=/home/strata --env USER=strata --env LOGNAME=strata --env A=1 -- timeout -s KILL 5.000 echo hi".into(),
        format!("incus file push --uid 1 --gid 2 --mode 0600 {} strata-test-vm/etc/f", host.display()),
        "incus stop strata-test-vm --timeout 30".into(),
        "incus delete --force strata-test-vm".into(),
    ];
    assert_eq!(calls, expected);
}

// ---- strata env on the command line ----

fn strata_env(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(bin_dir().join("strata"));
    // Before the command's own arguments: everything after `--` is argv.
    cmd.arg("env")
        .arg(args[0])
        .arg("--store")
        .arg(&shared().store)
        .args(&args[1..]);
    // Bounded: an environment command that hangs fails the test.
    bounded_command(cmd, stdin, Duration::from_secs(600)).0
}

/// Removes an environment made through the CLI, also when the test fails.
struct Scrub(PathBuf, String);

impl Drop for Scrub {
    fn drop(&mut self) {
        scrub(&self.0, &self.1);
    }
}

fn cli_round_trip(b: Backend) {
    if b != Backend::Unshare {
        require("incus");
    }
    let sh = shared();
    let name = format!("test-cli-{}", suffix(b));
    scrub(&sh.store, &name);
    let _cleanup = Scrub(sh.store.clone(), name.clone());
    if b != Backend::Unshare {
        incus_alias(); // imported once, for the whole module
    }
    let dir = scratch();
    cli_contract(b, &name, &sh.manifest, dir.path(), &strata_env);
}

/// `strata env` on the command line, from create to delete, of environment
/// `name` on backend `b` made from pipeline `system` of `manifest`.
/// `strata_env(ARGS, STDIN)` runs `strata env ARGS` with some store (as root
/// or as an ordinary user: the same story either way); `dir` is a folder
/// the one it runs as may read and write.
pub(crate) fn cli_contract(
    b: Backend,
    name: &str,
    manifest: &str,
    dir: &Path,
    strata_env: &dyn Fn(&[&str], Option<&str>) -> Run,
) {
    let name = name.to_owned();
    let mpath = dir.join("system.json");
    std::fs::write(&mpath, manifest).unwrap();
    strata_env(
        &[
            "create",
            &name,
            mpath.to_str().unwrap(),
            "--pipeline",
            "system",
            "--backend",
            b.as_str(),
            "--start",
            "-q",
        ],
        None,
    )
    .success();
    let list = strata_env(&["list"], None);
    assert!(
        list.stdout()
            .lines()
            .any(|l| l.starts_with(&format!("{name}\t{b}\trunning\t"))),
        "{}",
        list.stdout()
    );
    let run = strata_env(
        &[
            "run",
            &name,
            "--cwd",
            "/tmp",
            "--",
            "sh",
            "-c",
            "cat; pwd; exit 5",
        ],
        Some("from stdin\n"),
    );
    assert_eq!(run.code(), 5, "{}", run.describe());
    assert_eq!(run.stdout(), "from stdin\n/tmp\n");
    let run = strata_env(&["run", &name, "--", "strata-no-such-command"], None);
    assert_eq!(run.code(), 127, "{}", run.describe());
    // Passed through, the message is incus's own ("Error: Command not found") or ours.
    assert!(
        run.stderr().to_lowercase().contains("command not found"),
        "{}",
        run.stderr()
    );

    let host = dir;
    std::fs::write(host.join("in.txt"), "cli push\n").unwrap();
    strata_env(
        &[
            "push",
            &name,
            host.join("in.txt").to_str().unwrap(),
            "/srv/in.txt",
            "--mode",
            "600",
        ],
        None,
    )
    .success();
    strata_env(
        &[
            "run",
            &name,
            "--",
            "sh",
            "-c",
            "cp /srv/in.txt /srv/out.txt",
        ],
        None,
    )
    .success();
    let pull = strata_env(
        &["pull", &name, "/srv/out.txt", host.to_str().unwrap()],
        None,
    );
    pull.success();
    assert_eq!(
        pull.stdout().trim(),
        host.join("out.txt").display().to_string()
    );
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "cli push\n"
    );
    let pull = strata_env(
        &["pull", &name, "srv/out.txt", host.to_str().unwrap()],
        None,
    );
    assert_eq!(pull.code(), 2, "{}", pull.describe());
    assert!(
        pull.stderr().contains("must be absolute"),
        "{}",
        pull.stderr()
    );

    strata_env(&["stop", &name], None).success();
    let run = strata_env(&["run", &name, "--", "true"], None);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(run.stderr().contains("is not started"), "{}", run.stderr());
    strata_env(&["delete", &name], None).success();
    let run = strata_env(&["run", &name, "--", "true"], None);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr().contains(&format!("no environment `{name}`")),
        "{}",
        run.stderr()
    );
    if b != Backend::Unshare {
        assert!(!incus(&["info", &format!("strata-{name}")]).status.success());
    }
}

#[test]
fn cli_env_round_trip_unshare() {
    cli_round_trip(Backend::Unshare);
}

#[test]
fn cli_env_round_trip_incus_lxc() {
    cli_round_trip(Backend::IncusLxc);
}

#[test]
fn cli_env_create_from_a_system_tarball() {
    let sh = shared();
    let name = "test-tarball-u";
    scrub(&sh.store, name);
    let _cleanup = Scrub(sh.store.clone(), name.to_owned());
    let dir = scratch();
    let tarball = dir.path().join("system.tar");
    let store = open(&sh.store);
    let system = system::build_system(&store, &catalog(), &source(), false, true).unwrap();
    // A stored tree holds the owners of the stages' namespace (store
    // format 4); the tarball carries the in-tree ones, as `--export` does.
    let maps = in_tree_owner_maps(&system.tree, dir.path());
    let tar = Command::new("tar")
        .args(["--numeric-owner"])
        .args(&maps)
        .arg("-C")
        .arg(&system.tree)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    strata_env(
        &[
            "create",
            name,
            "--tarball",
            tarball.to_str().unwrap(),
            "--start",
            "-q",
        ],
        None,
    )
    .success();
    let run = strata_env(&["run", name, "--", "cat", "/etc/debian_version"], None);
    run.success();
    assert!(run.stdout().starts_with("12."), "{}", run.stdout());
    let list = strata_env(&["list", "--json"], None);
    let doc: Value = serde_json::from_str(&list.stdout()).unwrap();
    let me = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap();
    assert!(
        me["origin"].as_str().unwrap().starts_with("tarball "),
        "{me}"
    );
    strata_env(&["delete", name], None).success();
}

#[test]
fn cli_env_bad_input_is_refused_clearly() {
    let sh = shared();
    let dir = scratch();
    let mpath = dir.path().join("system.json");
    std::fs::write(&mpath, &sh.manifest).unwrap();
    let m = mpath.to_str().unwrap();
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["create", "Bad_Name", m, "--pipeline", "system"],
            2,
            "bad environment name `Bad_Name`",
        ),
        (
            &[
                "create",
                "test-bad",
                m,
                "--pipeline",
                "system",
                "--backend",
                "docker",
            ],
            2,
            "unknown backend `docker`",
        ),
        (
            &["create", "test-bad", m, "--pipeline", "nope"],
            1,
            "no pipeline `nope`",
        ),
        (
            &[
                "create",
                "test-bad",
                m,
                "--pipeline",
                "system",
                "--backend",
                "qemu",
            ],
            1,
            "is not a system qemu can start: it has no /*.qcow2 or /*.raw (a disk image)",
        ),
        (
            &["create", "test-bad", "--tarball", "/nonexistent/system.tar"],
            1,
            "image missing: /nonexistent/system.tar",
        ),
        (
            &["push", "test-none", m, "/srv/x"],
            2,
            "no environment `test-none`",
        ),
    ];
    for (args, code, message) in cases {
        let run = strata_env(args, None);
        assert_eq!(run.code(), code, "{args:?}: {}", run.describe());
        assert!(run.stderr().contains(message), "{args:?}: {}", run.stderr());
        assert!(!run.stderr().contains("panicked"), "{}", run.stderr());
    }
    assert!(
        envs::load(&open(&sh.store), "test-bad").is_err(),
        "nothing was made"
    );
}

#[test]
fn pipeline_backends_are_checked_and_incus_adds_the_image_pipeline() {
    let env = crate::support::Env::new();
    let stage = json!({"type": "mkdir", "options": {"paths": [{"path": "/x"}]}});
    for (pipeline, pointer, message) in [
        (
            json!({"name": "p", "backend": "incus-lxc", "stages": [stage]}),
            "/pipelines/0/backend",
            "needs a `build` pipeline",
        ),
        (
            json!({"name": "p", "backend": "incus-vm", "build": "name:p", "stages": [stage]}),
            "/pipelines/0/backend",
            "cannot run on backend `incus-vm` yet",
        ),
        (
            json!({"name": "p", "backend": "docker", "stages": [stage]}),
            "/pipelines/0/backend",
            "docker",
        ),
    ] {
        let m = json!({"version": "2", "pipelines": [pipeline]});
        let run = env.strata(&["inspect", "-"], Some(&m.to_string()));
        assert_eq!(run.code(), 2, "{}", run.describe());
        assert!(
            run.stderr().contains(pointer) && run.stderr().contains(message),
            "{}",
            run.stderr()
        );
    }
    let m = json!({"version": "2", "pipelines": [
        {"name": "env", "stages": [stage]},
        {"name": "p", "build": "name:env", "backend": "incus-lxc", "stages": [stage]}]});
    let run = env.strata(&["inspect", "-"], Some(&m.to_string()));
    run.success();
    let doc: Value = serde_json::from_str(&run.stdout()).unwrap();
    let names: Vec<&str> = doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["env", "p", "env+incus-image"]);
    assert_eq!(doc["pipelines"][1]["backend"], "incus-lxc");
    let image = &doc["pipelines"][2]["stages"][0];
    assert_eq!(image["type"], "tarball-to-incus");
    assert_eq!(image["options"]["artifact_id"], doc["pipelines"][0]["id"]);
    // Where a stage runs does not feed its id.
    let mut plain = m.clone();
    plain["pipelines"][1]
        .as_object_mut()
        .unwrap()
        .remove("backend");
    let run = env.strata(&["inspect", "-"], Some(&plain.to_string()));
    let plain_doc: Value = serde_json::from_str(&run.success().stdout()).unwrap();
    assert_eq!(plain_doc["pipelines"][1]["id"], doc["pipelines"][1]["id"]);
}

/// GNU tar `--owner-map` and `--group-map` files (in `dir`) that give the
/// ids strata's namespace wrote in the stored tree at `tree` (in-tree id k
/// is 0x70000000 + k when strata runs as root without STRATA_SUBUID) back
/// as the in-tree ids.
fn in_tree_owner_maps(tree: &Path, dir: &Path) -> Vec<String> {
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;
    const BASE: u32 = 0x7000_0000;
    let (mut uids, mut gids) = (BTreeSet::new(), BTreeSet::new());
    let mut walk = vec![tree.to_path_buf()];
    while let Some(path) = walk.pop() {
        let md = std::fs::symlink_metadata(&path).unwrap();
        uids.insert(md.uid());
        gids.insert(md.gid());
        if md.is_dir() {
            walk.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    let write = |name: &str, ids: &BTreeSet<u32>| -> String {
        let text: String = ids
            .iter()
            .filter(|id| **id >= BASE)
            .map(|id| format!("+{id} +{}\n", id - BASE))
            .collect();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file.display().to_string()
    };
    vec![
        format!("--owner-map={}", write("owner-map", &uids)),
        format!("--group-map={}", write("group-map", &gids)),
    ]
}
