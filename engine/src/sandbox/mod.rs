//! Sandboxes for stages: what a stage sees, and the one seam that starts it.
//!
//! [`StageSpec`] says what a sandbox is (root, tree, inputs and arguments as
//! mounts, network, environment, limits); every stage — whatever runs it —
//! is started through a [`runner::StageRunner`] given that spec.
//! [`StageSpec::bwrap_argv`] turns it into `bwrap` arguments, each mount at
//! the place [`StageSpec::places`] found for it, and is pure, so tests
//! check it without running anything. [`process`] is the one place
//! that spawns.
//!
//! Every sandbox gets: a new session, die-with-parent, its own pid, ipc, uts
//! and cgroup namespaces, and its own network namespace (only loopback)
//! unless the stage declares `network`. The root is either the build
//! pipeline's tree, read-only, or — without a build pipeline — the host's
//! `/usr` read-only plus the usual merged-usr links and a short allow-list of
//! `/etc` files. `/proc`, `/dev`, and tmpfs `/tmp`, `/var/tmp` and `/run` are
//! fresh. The environment is cleared and set to the allow-list in
//! [`environment`]. When the root is a tree, every mount point in it is
//! placed in the tree first ([`places`]), so that no symlink there leads
//! bwrap outside it.

pub mod host;
pub mod limits;
pub mod net;
pub mod places;
pub mod process;
pub mod runner;
pub mod seccomp;
pub mod userns;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use places::{PlaceError, Places};

pub use host::{HOST_ETC, HOST_ETC_NETWORK, HostLayout, HostView, USR_LINKS};

/// What the sandbox's `/` is.
#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    /// The host's /usr and a few /etc files.
    Host(HostLayout),
    /// A build pipeline's tree, read-only.
    Tree(PathBuf),
    /// The tree being built, read-write: stages with chroot semantics.
    TreeRw(PathBuf),
    /// A writable throw-away overlay over a build pipeline's tree (stages
    /// that change their environment but must never change the stored one).
    Copy(Overlay),
}

/// One mount, in bwrap's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Mount {
    /// Read-write bind.
    Bind(PathBuf, String),
    /// Read-only bind.
    RoBind(PathBuf, String),
    /// A fresh tmpfs.
    Tmpfs(String),
}

/// What bounds a stage besides its namespaces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// End the stage (everything it started) after this long.
    pub timeout: Option<std::time::Duration>,
}

/// A sandbox, described: what a stage sees. Its tree, inputs and arguments
/// are among the mounts.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    /// The root.
    pub root: Root,
    /// Mounts after the root's, in order.
    pub mounts: Vec<Mount>,
    /// Share the host's network.
    pub network: bool,
    /// Ports on the host's loopback that the stage's own options name (an
    /// extra repository on 127.0.0.1), reached from a private network
    /// besides apt's mirrors and proxies ([`net::loopback_ports`]).
    pub loopback_ports: Vec<u16>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// The command inside.
    pub argv: Vec<OsString>,
    /// Limits.
    pub limits: Limits,
}

/// The environment of a stage: nothing from the host but the proxy
/// variables, and those only for stages with network.
///
/// | variable            | value                                 |
/// |---------------------|---------------------------------------|
/// | `PATH`              | `/usr/sbin:/usr/bin:/sbin:/bin`       |
/// | `HOME`              | `/root`                               |
/// | `LANG`              | `C.UTF-8`                             |
/// | `SOURCE_DATE_EPOCH` | the pipeline's source-epoch, when set |
/// | `STRATA_STAGE`      | the stage type                        |
/// | `*_proxy`, `*_PROXY`| from the host, network stages only    |
pub fn environment(stage: &str, source_epoch: Option<u64>, network: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("STRATA_STAGE".into(), stage.into()),
    ];
    if let Some(epoch) = source_epoch {
        env.push(("SOURCE_DATE_EPOCH".into(), epoch.to_string()));
    }
    if network {
        for key in [
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
        ] {
            if let Ok(v) = std::env::var(key) {
                env.push((key.into(), v));
            }
        }
    }
    env
}

/// One mount bwrap makes after the root's own, in order.
#[derive(Debug)]
struct MountOp {
    /// The flags before it: `--perms 1777 --tmpfs`, `--ro-bind`, …
    flags: &'static [&'static str],
    src: Option<OsString>,
    dest: String,
}

impl StageSpec {
    /// The `bwrap` arguments (without the program name), each mount at its
    /// place ([`StageSpec::places`]).
    pub fn bwrap_argv(&self, places: &Places) -> Vec<OsString> {
        self.bwrap_argv_in("/", places)
    }

    /// Where this sandbox's mount points are: resolved in the tree when the
    /// root is one (a [`Root::Copy`] in its lower tree, which its merged
    /// view shows until the stage writes), as named for the host's root.
    pub fn places(&self) -> Result<Places, PlaceError> {
        let tree = match &self.root {
            Root::Host(_) => return Ok(Places::as_named()),
            Root::Tree(tree) | Root::TreeRw(tree) => tree,
            Root::Copy(overlay) => &overlay.lower,
        };
        let dests: Vec<String> = self.mount_ops().into_iter().map(|m| m.dest).collect();
        Places::resolve(tree, &dests)
    }

    /// The mounts after the root's own, in the order bwrap makes them: the
    /// sandbox's fresh /proc, /dev, /tmp, /var/tmp and /run; the host's
    /// resolv.conf for a network stage over a tree (after /run, where
    /// systemd-resolved's link leads); the spec's mounts; `enter`'s binds.
    fn mount_ops(&self) -> Vec<MountOp> {
        let op = |flags, src: Option<OsString>, dest: &str| MountOp {
            flags,
            src,
            dest: dest.to_owned(),
        };
        let mut ops = vec![
            op(&["--proc"], None, "/proc"),
            op(&["--dev"], None, "/dev"),
            op(&["--perms", "1777", "--tmpfs"], None, "/tmp"),
            op(&["--perms", "1777", "--tmpfs"], None, "/var/tmp"),
            // Open to all, like /tmp: bwrap makes the tmpfs as an owner the
            // stage's own user namespace does not map (it shows as nobody),
            // so 0755 would keep the stage's root from writing there, and
            // tools that lock under /run (adduser's /run/adduser, run by
            // udev's postinst) would fail in a tree-rooted stage.
            op(&["--perms", "1777", "--tmpfs"], None, "/run"),
            op(&["--perms", "0755", "--dir"], None, "/run/strata"),
        ];
        if self.network && !matches!(self.root, Root::Host(_)) {
            // A system's own resolv.conf is not the host's (bootstrap
            // leaves it empty); borrow the host's for this stage only.
            ops.push(op(
                &["--ro-bind-try"],
                Some("/etc/resolv.conf".into()),
                "/etc/resolv.conf",
            ));
        }
        for m in &self.mounts {
            ops.push(match m {
                Mount::Bind(src, dest) => op(&["--bind"], Some(src.into()), dest),
                Mount::RoBind(src, dest) => op(&["--ro-bind"], Some(src.into()), dest),
                Mount::Tmpfs(dest) => op(&["--tmpfs"], None, dest),
            });
        }
        // Isolation (issue 14): the stage starts behind `enter`, which puts
        // it in its user namespace and under its limits (see userns.rs).
        for (host, inside) in userns::sandbox_entry().iter().flat_map(|(binds, _)| binds) {
            ops.push(op(&["--ro-bind"], Some(host.into()), inside));
        }
        ops
    }

    /// The `bwrap` arguments, with the command started in `cwd` and each
    /// mount at its place. A [`Root::Copy`] is bound from its merged dir,
    /// which the runner mounts first ([`Overlay::wrap`]).
    pub fn bwrap_argv_in(&self, cwd: &str, places: &Places) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&[
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "strata",
        ]);
        if !self.network {
            push(&["--unshare-net"]);
        } else if net::private_network() {
            // A network of its own, set up by the wrapper (net.rs).
            push(net::BWRAP_ARGS);
        }
        push(&["--clearenv"]);
        for (k, v) in &self.env {
            push(&["--setenv", k, v]);
        }
        match &self.root {
            Root::Host(HostLayout {
                view: Some(view),
                etc_network,
                ..
            }) => {
                // Mounted once for the build, read-only (host.rs); only the
                // network files are the stage's own.
                a.extend(["--ro-bind".into(), view.into(), "/".into()]);
                for path in etc_network.iter().filter(|_| self.network) {
                    a.extend(["--ro-bind", path, path].map(OsString::from));
                }
            }
            Root::Host(layout) => {
                push(&["--ro-bind", "/usr", "/usr"]);
                for (link, target) in &layout.links {
                    push(&["--symlink", target, link]);
                }
                for dir in &layout.dirs {
                    push(&["--ro-bind", dir, dir]);
                }
                // bwrap makes implicit parents 0700; apt's `_apt` user must
                // be able to read /etc/resolv.conf and the like.
                push(&["--perms", "0755", "--dir", "/etc"]);
                let etc = layout.etc.iter();
                let net = layout.etc_network.iter().filter(|_| self.network);
                for path in etc.chain(net) {
                    push(&["--ro-bind", path, path]);
                }
                push(&["--dir", "/root", "--dir", "/var"]);
            }
            Root::Tree(tree) | Root::TreeRw(tree) | Root::Copy(Overlay { merged: tree, .. }) => {
                let bind = match self.root {
                    Root::Tree(_) => "--ro-bind",
                    _ => "--bind",
                };
                a.extend([bind.into(), tree.into(), "/".into()]);
            }
        }
        for m in self.mount_ops() {
            let dest = places.of(&m.dest);
            if dest != m.dest.as_str()
                && let Some(parent) = Path::new(&dest).parent()
                && parent != Path::new("/")
            {
                // Placed elsewhere (a link's target in a fresh /run): its
                // folders as a system has them, not bwrap's 0700 ones.
                a.extend(["--perms".into(), "0755".into(), "--dir".into()]);
                a.push(parent.into());
            }
            a.extend(m.flags.iter().map(OsString::from));
            a.extend(m.src);
            a.push(dest);
        }
        if matches!(self.root, Root::Host(HostLayout { view: None, .. })) {
            // bwrap's own root is a tmpfs; writes there would vanish, but a
            // stage should learn at once that only its tree is writable.
            a.extend(["--remount-ro".into(), "/".into()]);
        }
        a.extend(["--chdir".into(), cwd.into(), "--".into()]);
        let entry = userns::sandbox_entry();
        a.extend(entry.iter().flat_map(|(_, prefix)| prefix).cloned());
        a.extend(self.argv.iter().cloned());
        a
    }
}

/// A writable overlay over a read-only tree, mounted in a private mount
/// namespace just for one sandbox: it is gone when the sandbox ends, however
/// it ends, and the lower tree is never written.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// The read-only tree.
    pub lower: PathBuf,
    /// Where changes go.
    pub upper: PathBuf,
    /// overlayfs's work dir (same filesystem as `upper`).
    pub work: PathBuf,
    /// Where the merged tree appears (the sandbox's root).
    pub merged: PathBuf,
}

impl Overlay {
    /// `unshare` arguments that mount the overlay in a new mount namespace
    /// and then exec `bwrap bwrap_argv…` inside it.
    pub fn wrap(&self, bwrap_argv: Vec<OsString>) -> Vec<OsString> {
        const SCRIPT: &str = "mount -t overlay overlay -o \"userxattr,lowerdir=$1,upperdir=$2,workdir=$3\" \"$4\" && shift 4 && exec bwrap \"$@\"";
        let mut a: Vec<OsString> = [
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            SCRIPT,
            "strata-overlay",
        ]
        .map(OsString::from)
        .to_vec();
        for p in [&self.lower, &self.upper, &self.work, &self.merged] {
            a.push(p.into());
        }
        a.extend(bwrap_argv);
        a
    }
}

/// The dynamic loader a program asks for (its ELF `PT_INTERP`), if any.
///
/// Built-in stages are built on the host; started through the host's loader
/// with the host's libraries they run in any build root, while the tools
/// they spawn use the root's own libraries.
pub fn elf_interpreter(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::FileExt;
    // Reads the header, the program headers and the interpreter's name
    // only: a stage program is megabytes, and this runs for every stage.
    let file = std::fs::File::open(program).ok()?;
    let read = |offset: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    };
    let head = read(0, 64)?;
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None; // not a little-endian ELF64: a script, or a platform we do not decode
    }
    let u16_at = |d: &[u8], o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |d: &[u8], o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    let phoff = u64_at(&head, 0x20)?;
    let phentsize = usize::from(u16_at(&head, 0x36)?);
    let phnum = usize::from(u16_at(&head, 0x38)?);
    let table = read(phoff, phentsize.checked_mul(phnum)?.min(1 << 16))?;
    for i in 0..phnum {
        let ph = i * phentsize;
        let p_type = u32::from_le_bytes(table.get(ph..ph + 4)?.try_into().ok()?);
        if p_type == 3 {
            let off = u64_at(&table, ph + 8)?;
            // PATH_MAX bounds a name the kernel would take.
            let len = usize::try_from(u64_at(&table, ph + 32)?).ok()?.min(4096);
            let raw = read(off, len)?;
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            return Some(PathBuf::from(
                String::from_utf8_lossy(&raw[..end]).into_owned(),
            ));
        }
    }
    None
}

/// The host's library folder for this architecture (Debian multiarch).
pub fn host_libdir() -> PathBuf {
    let triplet = match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => other,
    };
    PathBuf::from("/usr/lib").join(triplet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: bool) -> StageSpec {
        StageSpec {
            loopback_ports: Vec::new(),
            root: Root::Host(HostLayout {
                links: vec![("/bin".into(), "usr/bin".into())],
                dirs: vec![],
                etc: vec!["/etc/passwd".into()],
                etc_network: vec!["/etc/resolv.conf".into()],
                view: None,
            }),
            mounts: vec![
                Mount::Bind("/w/tree".into(), "/run/strata/tree".into()),
                Mount::RoBind("/w/in".into(), "/run/strata/inputs/x".into()),
            ],
            network,
            env: vec![("PATH".into(), "/usr/bin".into())],
            argv: vec!["/run/strata/runner".into(), "/run/strata/stage".into()],
            limits: Limits::default(),
        }
    }

    fn joined(spec: &StageSpec) -> String {
        spec.bwrap_argv(&Places::as_named())
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn host_root_is_read_only_and_isolated() {
        let s = joined(&spec(false));
        assert!(s.starts_with("--die-with-parent --new-session --unshare-pid"));
        assert!(s.contains("--unshare-net"));
        assert!(s.contains("--clearenv --setenv PATH /usr/bin"));
        assert!(s.contains("--ro-bind /usr /usr --symlink usr/bin /bin"));
        assert!(s.contains("--ro-bind /etc/passwd /etc/passwd"));
        assert!(!s.contains("resolv.conf"), "no DNS config without network");
        assert!(s.contains("--bind /w/tree /run/strata/tree --ro-bind /w/in /run/strata/inputs/x"));
        assert!(s.ends_with("--remount-ro / --chdir / -- /run/strata/runner /run/strata/stage"));
        assert!(
            !s.contains("/root /root"),
            "the host's /root is never bound"
        );
    }

    #[test]
    fn a_mounted_host_view_is_bound_in_one_go() {
        let with_view = |network| {
            let mut sp = spec(network);
            if let Root::Host(layout) = &mut sp.root {
                layout.view = Some("/store/tmp/host-1".into());
            }
            joined(&sp)
        };
        let s = with_view(false);
        assert!(
            s.contains("--ro-bind /store/tmp/host-1 / --proc /proc"),
            "{s}"
        );
        for piecewise in [
            "/usr /usr",
            "--symlink",
            "/etc/passwd",
            "resolv.conf",
            "--remount-ro",
        ] {
            assert!(!s.contains(piecewise), "{piecewise} in {s}");
        }
        assert!(s.ends_with("--chdir / -- /run/strata/runner /run/strata/stage"));
        let s = with_view(true);
        assert!(
            s.contains("--ro-bind /store/tmp/host-1 / --ro-bind /etc/resolv.conf /etc/resolv.conf"),
            "a network stage gets the host's DNS files over the view: {s}"
        );
    }

    #[test]
    fn network_is_shared_only_when_declared() {
        let s = joined(&spec(true));
        assert!(!s.contains("--unshare-net"));
        assert!(s.contains("--ro-bind /etc/resolv.conf /etc/resolv.conf"));
    }

    #[test]
    fn tree_root_is_bound_read_only_at_slash() {
        let mut sp = spec(false);
        sp.root = Root::Tree("/store/objects/abc/tree".into());
        let s = joined(&sp);
        assert!(s.contains("--ro-bind /store/objects/abc/tree / --proc /proc"));
        assert!(!s.contains("--ro-bind /usr /usr"));
    }

    #[test]
    fn a_tree_roots_mounts_go_where_they_were_placed() {
        let t = tempfile::tempdir().unwrap();
        for dir in ["etc", "proc", "dev", "tmp", "var/tmp", "run"] {
            std::fs::create_dir_all(t.path().join(dir)).unwrap();
        }
        std::os::unix::fs::symlink(
            "../run/systemd/resolve/stub-resolv.conf",
            t.path().join("etc/resolv.conf"),
        )
        .unwrap();
        let mut sp = spec(true);
        sp.root = Root::TreeRw(t.path().to_owned());
        let places = sp.places().unwrap();
        let s = sp
            .bwrap_argv(&places)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        // The host's resolv.conf goes where the tree's link leads, in the
        // sandbox's fresh /run, once that is mounted.
        assert!(
            s.contains(
                "--perms 1777 --tmpfs /run --perms 0755 --dir /run/strata --perms 0755 --dir \
                 /run/systemd/resolve --ro-bind-try /etc/resolv.conf \
                 /run/systemd/resolve/stub-resolv.conf --bind /w/tree /run/strata/tree"
            ),
            "{s}"
        );
        assert_eq!(joined(&spec(true)).matches("resolv.conf").count(), 2);
    }

    #[test]
    fn overlays_mount_in_their_own_namespace() {
        let o = Overlay {
            lower: "/s/env".into(),
            upper: "/t/u".into(),
            work: "/t/w".into(),
            merged: "/t/m".into(),
        };
        let argv: Vec<String> = o
            .wrap(vec!["--bind".into()])
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(&argv[..4], ["--mount", "--propagation", "private", "--"]);
        assert!(argv[6].contains("mount -t overlay") && argv[6].ends_with("exec bwrap \"$@\""));
        assert_eq!(&argv[8..], ["/s/env", "/t/u", "/t/w", "/t/m", "--bind"]);
    }

    #[test]
    fn finds_our_own_interpreter() {
        let me = std::env::current_exe().unwrap();
        let interp = elf_interpreter(&me).expect("test binaries are dynamically linked");
        assert!(interp.exists(), "{}", interp.display());
        assert_eq!(elf_interpreter(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn environment_is_an_allow_list() {
        let env = environment("mkdir", Some(5), false);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["PATH", "HOME", "LANG", "STRATA_STAGE", "SOURCE_DATE_EPOCH"]
        );
    }
}
