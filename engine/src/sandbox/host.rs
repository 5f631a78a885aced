//! The host's root as a build root: what of it a stage sees, and that view
//! mounted once per build.
//!
//! A stage without a build pipeline runs over the host's `/usr`, the
//! merged-/usr links and an allow-list of `/etc` entries ([`HostLayout`]).
//! bwrap can assemble that for every stage, a bind and a read-only remount
//! per entry, each re-reading the mount table: about twenty mounts, most of
//! a bare stage's sandbox set-up. [`HostView`] makes the same tree once, in
//! strata's own mount namespace, every mount in it read-only, nosuid and
//! nodev already; each stage then binds it as `/` (bwrap finds nothing left
//! to remount), and only its own mounts (`/proc`, `/dev`, the tmpfs
//! folders, `/run/strata`) are made per stage.
//!
//! ```text
//! STORE/tmp/host-PID-…/   a tmpfs, read-only once made
//!   usr/                  the host's /usr (bind, ro)
//!   bin -> usr/bin …      the host's merged-/usr links
//!   etc/passwd …          each allow-listed entry (bind, ro)
//!   etc/resolv.conf …     empty mount points: bound per stage, network stages only
//!   proc dev tmp run root var/tmp    mount points for the stage's own mounts
//! ```

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, UnmountFlags};

/// Host `/etc` files bound into a host build root (read-only, when present).
pub const HOST_ETC: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/debian_version",
    "/etc/os-release",
    "/etc/dpkg",
    "/etc/apt",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mmdebstrap",
];

/// Host `/etc` files bound only for stages that declare network.
pub const HOST_ETC_NETWORK: &[&str] = &["/etc/resolv.conf", "/etc/hosts", "/etc/gai.conf"];

/// Top-level names that merged-/usr systems make symlinks into /usr.
pub const USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// How the host's root is laid out, as far as a host build root needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostLayout {
    /// `/bin` → `usr/bin` and the like, as found on the host.
    pub links: Vec<(String, String)>,
    /// Top-level dirs that are real directories on the host (not merged-usr).
    pub dirs: Vec<String>,
    /// The `/etc` entries that exist.
    pub etc: Vec<String>,
    /// The network-only `/etc` entries that exist.
    pub etc_network: Vec<String>,
    /// Where this layout is mounted already ([`HostView`]), bound as the
    /// sandbox's `/` in one go instead of piece by piece.
    pub view: Option<PathBuf>,
}

impl HostLayout {
    /// Reads the layout off this machine.
    pub fn detect() -> HostLayout {
        let mut layout = HostLayout::default();
        for name in USR_LINKS {
            let path = Path::new("/").join(name);
            match std::fs::read_link(&path) {
                Ok(target) => layout
                    .links
                    .push((path.display().to_string(), target.display().to_string())),
                Err(_) if path.is_dir() => layout.dirs.push(path.display().to_string()),
                Err(_) => {}
            }
        }
        let existing = |list: &[&str]| {
            list.iter()
                .filter(|p| Path::new(p).exists())
                .map(|p| p.to_string())
                .collect()
        };
        layout.etc = existing(HOST_ETC);
        layout.etc_network = existing(HOST_ETC_NETWORK);
        layout
    }
}

/// A [`HostLayout`] mounted once, read-only, for every host-root stage of a
/// build. Unmounted (the tmpfs with everything on it) when dropped.
#[derive(Debug)]
pub struct HostView {
    dir: tempfile::TempDir,
}

/// The folders a host-root sandbox mounts its own things on.
const MOUNT_POINTS: &[&str] = &["proc", "dev", "tmp", "run", "root", "var", "var/tmp"];

impl HostView {
    /// Mounts `layout` in `dir` (an empty folder, removed with the view).
    /// The caller must be in a mount namespace of its own
    /// (`enter_private_namespace` in the store's layers): these mounts are
    /// not for the host to see.
    pub fn mount(dir: tempfile::TempDir, layout: &HostLayout) -> io::Result<HostView> {
        let root = dir.path();
        let opts = CString::new("mode=0755").expect("no NUL");
        rustix::mount::mount(
            "tmpfs",
            root,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            opts.as_c_str(),
        )
        .map_err(|e| mount_error("mounting a tmpfs on", root, e))?;
        // From here the tmpfs (and all on it) goes when the view does.
        let view = HostView { dir };
        let root = view.dir.path();
        let mut dirs = std::fs::DirBuilder::new();
        dirs.mode(0o755).recursive(true);
        dirs.create(root.join("usr"))?;
        bind_ro(Path::new("/usr"), &root.join("usr"))?;
        for (link, target) in &layout.links {
            std::os::unix::fs::symlink(target, inside(root, link))?;
        }
        for dir in &layout.dirs {
            dirs.create(inside(root, dir))?;
            bind_ro(Path::new(dir), &inside(root, dir))?;
        }
        dirs.create(root.join("etc"))?;
        for entry in layout.etc.iter().chain(&layout.etc_network) {
            let at = inside(root, entry);
            // A mount point of the kind the bind needs (a link is bound as
            // what it leads to, as bwrap binds it).
            if Path::new(entry).is_dir() {
                dirs.create(&at)?;
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&at)?;
            }
            if layout.etc.contains(entry) {
                bind_ro(Path::new(entry), &at)?;
            }
        }
        for dir in MOUNT_POINTS {
            dirs.create(root.join(dir))?;
        }
        remount_ro(root, MountFlags::empty())?;
        Ok(view)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for HostView {
    fn drop(&mut self) {
        // Detach takes the binds on the tmpfs with it; the folder is then
        // empty for the TempDir to remove.
        let _ = rustix::mount::unmount(self.dir.path(), UnmountFlags::DETACH);
    }
}

/// `root` + the absolute `path`.
fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Binds `src` on `dest`, then makes the bind read-only, nosuid and nodev.
fn bind_ro(src: &Path, dest: &Path) -> io::Result<()> {
    rustix::mount::mount_bind_recursive(src, dest)
        .map_err(|e| mount_error("binding on", dest, e))?;
    // The source's atime flags are kept: in a user namespace they are
    // locked, and a remount that changed them would be refused.
    let flags = rustix::fs::statvfs(dest)
        .map_err(|e| mount_error("reading the flags of", dest, e))?
        .f_flag;
    let mut keep = MountFlags::empty();
    for (st, ms) in [
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
    ] {
        if flags.contains(st) {
            keep |= ms;
        }
    }
    remount_ro(dest, keep)
}

fn remount_ro(dest: &Path, keep: MountFlags) -> io::Result<()> {
    rustix::mount::mount_remount(
        dest,
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | keep,
        c"",
    )
    .map_err(|e| mount_error("making read-only", dest, e))
}

fn mount_error(what: &str, path: &Path, e: rustix::io::Errno) -> io::Error {
    io::Error::other(format!("host root view: {what} {}: {e}", path.display()))
}
