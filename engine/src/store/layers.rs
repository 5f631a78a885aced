//! Trees as stacks of layers, mounted with overlayfs.
//!
//! ```text
//!   view of object C (read-only)          a stage's workspace over C (read-write)
//!   ┌──────────────────────────┐          ┌──────────────────────────┐
//!   │ merged  (overlay, ro)    │          │ merged  (overlay, rw)    │ ← /run/strata/tree or /
//!   ├──────────────────────────┤          ├──────────────────────────┤
//!   │ objects/C/layer          │          │ tmp/build-PID-…/upper    │ ← the stage's diff
//!   │ objects/B/layer          │          │ objects/C/layer          │
//!   │ objects/A/layer (base)   │          │ objects/B/layer …        │
//!   └──────────────────────────┘          └──────────────────────────┘
//! ```
//!
//! A layer is an overlayfs upper directory: what one stage (or a run of
//! unkept stages) changed, with whiteouts (0/0 character devices) for what
//! it removed and `user.overlay.opaque` on directories it replaced. A
//! stack is listed top first, as overlayfs's `lowerdir` wants it. A stack of
//! one layer is a plain directory and needs no mount.
//!
//! Every mount is made in strata's own mount namespace
//! ([`enter_private_namespace`]), so whatever happens to the process — an
//! error, Ctrl-C, kill -9 — the kernel drops its mounts with it.
//!
//! Overlays are mounted with `userxattr` (overlayfs keeps its bookkeeping in
//! `user.overlay.*`): that is what a mount made inside a user namespace must
//! use (strata as an ordinary user), and root uses it too so that a layer is
//! the same on disk whoever wrote it (store format 3).

use super::StoreError;
use super::copy::copy_tree_with;
use fs_err as fs;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use std::ffi::CString;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Stacks deeper than this are flattened when the next layer is committed.
///
/// Every layer is a lookup overlayfs may have to make for a path missing
/// from the layers above it, and the whole `lowerdir=` list must fit in
/// mount(2)'s one-page option string (≈ 4 KB; a store path is ≈ 100 bytes
/// per layer). 16 keeps lookups cheap and leaves room for long store paths;
/// a pipeline of more stages pays one reflink copy every 16 stages.
pub const MAX_DEPTH: usize = 16;

/// The longest `lowerdir=` list we hand to mount(2) (one page, with room
/// for the other options).
pub const MAX_LOWERDIR: usize = 3500;

/// Moves the calling process into a mount namespace of its own, with `/`
/// private, so its mounts are invisible to the host and die with it. Must
/// run before any thread starts: a namespace is per thread, and threads
/// started later inherit it.
pub fn enter_private_namespace() -> Result<(), StoreError> {
    // Isolation (issue 14): as an ordinary user, first the user namespace
    // that makes strata root over its store (see sandbox/userns.rs).
    crate::sandbox::userns::enter().map_err(|e| StoreError::Io(io::Error::other(e.to_string())))?;
    // SAFETY: unshare_unsafe is unsafe only for CLONE_FILES (fds made on
    // other threads becoming unusable). We pass CLONE_NEWNS alone, which
    // touches no fd table, and this runs before strata starts any thread.
    #[allow(unsafe_code)]
    let unshared = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) };
    unshared.map_err(|e| mount_error("unshare(CLONE_NEWNS)", e))?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| mount_error("making / private", e))
}

fn mount_error(what: &str, e: rustix::io::Errno) -> StoreError {
    let hint = if e == rustix::io::Errno::PERM {
        "\n    hint: strata mounts the store's layers with overlayfs inside its user namespace; check that user namespaces are enabled"
    } else {
        ""
    };
    StoreError::Io(io::Error::other(format!("{what}: {e}{hint}")))
}

/// The overlayfs options strata always mounts with, so that a layer means
/// the same on every kernel whatever its defaults: no redirects, no
/// metacopy (a layer must hold whole files to stand on its own).
/// (`redirect_dir=nofollow`: with `userxattr` overlayfs takes no other value;
/// it makes no redirects either.)
const OPTIONS: &str = "userxattr,redirect_dir=nofollow,metacopy=off,xino=off";

/// Read-only views need no index; workspaces want one: with it, a copy-up
/// keeps a file's hardlinks whole for the stage, and [`Workspace::finish`]
/// finds them to store them whole too.
const VIEW_OPTIONS: &str = "index=off";

fn lowerdir(stack: &[PathBuf]) -> Result<String, StoreError> {
    let mut parts = Vec::with_capacity(stack.len());
    for layer in stack {
        let s = layer.to_str().ok_or_else(|| {
            StoreError::Io(io::Error::other(format!(
                "store path {} is not UTF-8",
                layer.display()
            )))
        })?;
        if s.contains([':', ',', '\\']) {
            return Err(StoreError::Io(io::Error::other(format!(
                "store path {s} contains `:`, `,` or `\\`, which overlayfs cannot take"
            ))));
        }
        parts.push(s);
    }
    Ok(parts.join(":"))
}

fn mount_overlay(options: String, target: &Path) -> Result<(), StoreError> {
    let data = CString::new(options).expect("paths hold no NUL");
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| mount_error(&format!("mounting an overlay on {}", target.display()), e))
}

/// Mounts a workspace's overlay (`options`: its layers and dirs) on
/// `merged`: with an index, `volatile` where the kernel has it, without an
/// index where the filesystem cannot have one (see [`Workspace::open`]).
///
/// The previous stage's overlay outlives its unmount for a moment (the
/// stage's sandbox releases its mount namespace asynchronously), and until
/// it is gone the kernel refuses that overlay's upper dir — now the top
/// layer of this stack — as a lower one with an index (EBUSY, "lowerdir is
/// in-use as upperdir"): that is waited out, a bounded while. A failed
/// attempt may leave `work/work/incompat/volatile` behind, which refuses
/// every later mount on that workdir, so each attempt starts from an empty
/// workdir.
fn mount_workspace(options: &str, work: &Path, merged: &Path) -> Result<(), StoreError> {
    const BUSY_FOR: std::time::Duration = std::time::Duration::from_secs(5);
    let deadline = std::time::Instant::now() + BUSY_FOR;
    let mut fresh = true;
    let mut failed = None;
    for variant in ["index=on,volatile", "index=on", "index=off"] {
        let data = CString::new(format!("{options},{variant}")).expect("paths hold no NUL");
        loop {
            if !fresh {
                fs::remove_dir_all(work)?;
                fs::create_dir(work)?;
            }
            fresh = false;
            match rustix::mount::mount(
                "overlay",
                merged,
                "overlay",
                MountFlags::empty(),
                data.as_c_str(),
            ) {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::BUSY) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    Err(mount_error(
        &format!("mounting an overlay on {}", merged.display()),
        failed.expect("an attempt failed"),
    ))
}

fn unmount(target: &Path) {
    // Detach: a straggling reader must not turn cleanup into an error.
    let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
}

/// Whether a stack of these layers can be mounted in one go.
pub fn fits(stack: &[PathBuf]) -> bool {
    stack.len() <= MAX_DEPTH && lowerdir(stack).is_ok_and(|s| s.len() <= MAX_LOWERDIR)
}

/// A read-only tree: a plain directory or a mounted stack, unmounted and
/// removed when dropped.
#[derive(Debug)]
pub struct View {
    path: PathBuf,
    _dir: Option<Mounted>,
}

impl View {
    /// The stack `stack` (top first) as one tree. A single layer is used in
    /// place; more are mounted under `work` (a fresh dir in STORE/tmp).
    pub fn open(stack: &[PathBuf], work: tempfile::TempDir) -> Result<View, StoreError> {
        if let [one] = stack {
            return Ok(View {
                path: one.clone(),
                _dir: None,
            });
        }
        let merged = work.path().join("merged");
        fs::create_dir(&merged)?;
        let mut options = format!("lowerdir={},{OPTIONS},{VIEW_OPTIONS}", lowerdir(stack)?);
        if stack.is_empty() {
            // overlayfs wants at least two lower layers without an upper.
            let empty = work.path().join("empty");
            fs::create_dir(&empty)?;
            options = format!("lowerdir={0}:{0},{OPTIONS},{VIEW_OPTIONS}", empty.display());
        }
        mount_overlay(options, &merged)?;
        Ok(View {
            path: merged.clone(),
            _dir: Some(Mounted { merged, _dir: work }),
        })
    }

    /// Where the tree is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug)]
struct Mounted {
    merged: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount(&self.merged);
    }
}

/// A writable tree over a stack: the stage writes `merged`, its changes land
/// in `upper`. Unmounted (and removed with its work dir) when dropped.
#[derive(Debug)]
pub struct Workspace {
    dir: tempfile::TempDir,
    mounted: bool,
    /// A plain directory holding the whole tree, no overlay: for stages
    /// that run where strata's mounts cannot be seen (an incus instance
    /// takes the tree as a disk device, and incusd lives in the host's
    /// mount namespace). Its commit is a whole tree.
    flat: bool,
}

impl Workspace {
    /// A workspace over `stack` (top first; empty for a new tree) in `dir`,
    /// a fresh dir under STORE/tmp.
    pub fn open(stack: &[PathBuf], dir: tempfile::TempDir) -> Result<Workspace, StoreError> {
        let d = dir.path();
        for sub in ["upper", "work", "merged"] {
            fs::create_dir(d.join(sub))?;
        }
        // The merged root shows the upper root's owner and mode: start it
        // as the tree's root is (an empty tree's root is in-tree root's),
        // not as mkdir made it.
        let upper = d.join("upper");
        match stack.first() {
            Some(top) => {
                let md = fs::metadata(top)?;
                std::os::unix::fs::lchown(&upper, Some(md.uid()), Some(md.gid()))?;
                fs::set_permissions(&upper, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
            }
            None => {
                crate::sandbox::userns::chown_for_tree(&upper, 0, 0)?;
                fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))?
            }
        }
        let lower = if stack.is_empty() {
            let empty = d.join("empty");
            fs::create_dir(&empty)?;
            empty.display().to_string()
        } else {
            lowerdir(stack)?
        };
        let options = format!(
            "lowerdir={lower},upperdir={},workdir={},{OPTIONS}",
            upper.display(),
            d.join("work").display()
        );
        // `volatile`: overlayfs would sync the whole upper filesystem when
        // the workspace is unmounted (≈ 100 ms a stage on a busy disk); the
        // store makes what it commits durable itself, and a workspace left
        // by a crash is thrown away, never mounted again. A filesystem
        // without file handles cannot index: mount without (hardlinks
        // written in place through one name then split).
        let merged = d.join("merged");
        mount_workspace(&options, &d.join("work"), &merged)?;
        Ok(Workspace {
            dir,
            mounted: true,
            flat: false,
        })
    }

    /// A flat workspace in `dir`: a copy of the tree at `from` (or an empty
    /// tree) in a plain directory.
    pub fn flat(from: Option<&Path>, dir: tempfile::TempDir) -> Result<Workspace, StoreError> {
        let upper = dir.path().join("upper");
        match from {
            // For incus, which shifts owners itself: in-tree owners.
            Some(from) => {
                super::copy::copy_tree_mapped(from, &upper, &crate::sandbox::userns::host_to_tree)?
            }
            None => {
                fs::create_dir(&upper)?;
                fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(Workspace {
            dir,
            mounted: false,
            flat: true,
        })
    }

    /// Whether this is a [`Workspace::flat`] one, whose upper dir is the whole tree.
    pub fn is_flat(&self) -> bool {
        self.flat
    }

    /// The tree the stage works on.
    pub fn merged(&self) -> PathBuf {
        if self.flat {
            return self.upper();
        }
        self.dir.path().join("merged")
    }

    /// The stage's changes (stable once [`Workspace::unmount`] ran).
    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// Unmounts the merged tree and mends the hardlinks overlayfs split:
    /// when a stage wrote in place to one name of a file hardlinked in a
    /// lower layer, overlayfs copied up that name only, and the other names
    /// would keep the old data. Each such name is linked in the upper layer
    /// to the copied-up file, so the layer stores the tree the stage saw
    /// through the names it used. `lower` is the stack below (top first).
    pub fn finish(&mut self, lower: &[PathBuf]) -> Result<(), StoreError> {
        if self.flat {
            return Ok(());
        }
        let split = split_links(&self.upper(), lower, &self.merged())?;
        self.unmount();
        for link in split {
            let upper = self.upper();
            let mut dir = upper.clone();
            for (name, md) in &link.parents {
                dir.push(name);
                if std::fs::symlink_metadata(&dir).is_err() {
                    fs::create_dir(&dir)?;
                    std::os::unix::fs::lchown(&dir, Some(md.uid()), Some(md.gid()))?;
                    fs::set_permissions(&dir, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
                }
            }
            fs::hard_link(upper.join(&link.target), upper.join(&link.name))?;
        }
        Ok(())
    }

    /// Unmounts the merged tree, so the upper layer can be moved away.
    pub fn unmount(&mut self) {
        if self.mounted {
            unmount(&self.merged());
            self.mounted = false;
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// A name to link to a copied-up file.
struct SplitLink {
    /// The copied-up name (relative to the upper dir).
    target: PathBuf,
    /// The other name.
    name: PathBuf,
    /// The directories from the root to `name`'s parent, with their metadata
    /// in the merged tree (to make them in the upper dir as they are).
    parents: Vec<(std::ffi::OsString, std::fs::Metadata)>,
}

/// The names a copy-up split off their file (see [`Workspace::finish`]).
/// Only files copied up (they carry `user.overlay.origin`) whose lower
/// file had other names count: a file the stage replaced (rename over, as
/// dpkg does) leaves the other names with the old file, rightly.
fn split_links(
    upper: &Path,
    lower: &[PathBuf],
    merged: &Path,
) -> Result<Vec<SplitLink>, StoreError> {
    let mut copied: std::collections::HashMap<u64, PathBuf> = std::collections::HashMap::new();
    for entry in walkdir::WalkDir::new(upper).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(upper).expect("below the root");
        // A copied-up file of several names is linked from the work dir's
        // index (index=on), so it has two links and an origin.
        let md = entry.metadata().map_err(io::Error::other)?;
        if md.nlink() < 2
            || !list_xattrs(entry.path())?
                .iter()
                .any(|n| n == b"user.overlay.origin")
        {
            continue;
        }
        let below = lower
            .iter()
            .map(|l| l.join(rel))
            .find_map(|p| std::fs::symlink_metadata(p).ok());
        if below.is_some_and(|md| md.is_file() && md.nlink() > 1) {
            // With the index, the merged view shows every name of the file
            // with its origin's inode number.
            let ino = fs::symlink_metadata(merged.join(rel))?.ino();
            copied.insert(ino, rel.to_path_buf());
        }
    }
    if copied.is_empty() {
        return Ok(Vec::new());
    }
    let mut split = Vec::new();
    for entry in walkdir::WalkDir::new(merged).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let md = entry.metadata().map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(merged).expect("below the root");
        let Some(target) = copied.get(&md.ino()) else {
            continue;
        };
        if std::fs::symlink_metadata(upper.join(rel)).is_ok() {
            continue;
        }
        let mut parents = Vec::new();
        let mut dir = merged.to_path_buf();
        for part in rel.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            parents.push((part.as_os_str().to_owned(), fs::symlink_metadata(&dir)?));
        }
        split.push(SplitLink {
            target: target.clone(),
            name: rel.to_path_buf(),
            parents,
        });
    }
    Ok(split)
}

/// Copies the merged tree at `from` (the overlay of `stack`, top first)
/// into a new flat layer at `to`. File data is reflinked from the layer that
/// holds it where the filesystem can (a reflink cannot start from the
/// overlay: that would cross filesystems), copied elsewhere.
pub fn flatten(from: &Path, stack: &[PathBuf], to: &Path) -> Result<(), StoreError> {
    let data = |rel: &Path, merged: &Path| -> PathBuf {
        // The topmost layer holding the path holds the file the merged view
        // shows: anything above it that hid it would hide it from the view too.
        let want = std::fs::symlink_metadata(merged).map(|m| m.len()).ok();
        stack
            .iter()
            .map(|layer| layer.join(rel))
            .find(|p| std::fs::symlink_metadata(p).is_ok())
            .filter(|p| {
                std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && Some(m.len()) == want)
            })
            .unwrap_or_else(|| merged.to_path_buf())
    };
    copy_tree_with(from, to, &data).map_err(StoreError::from)
}

/// Whether xattr `name` is overlayfs's private bookkeeping, to remove from
/// a finished upper dir before it is stored: the mount's random `uuid` on
/// the root, `origin`, `impure`, `nlink` and the like. They mean nothing
/// once the mount is gone, and one left on a bottom layer (read in place,
/// not through an overlay) would reach stages and tarballs — with a random
/// uuid in it. What a lower layer needs stays: `opaque` (and xattr
/// whiteouts), except in a `bottom` layer, which has nothing below to hide.
/// The commit removes them in the walk that records the layer's treesum
/// (`treesum::sum`).
pub fn is_bookkeeping(name: &[u8], bottom: bool) -> bool {
    const KEEP: &[&[u8]] = &[
        b"user.overlay.opaque",
        b"user.overlay.whiteout",
        b"user.overlay.whiteouts",
    ];
    name.starts_with(b"user.overlay.") && (bottom || !KEEP.contains(&name))
}

/// The names of `path`'s xattrs; none where the filesystem has none.
fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    match super::copy::list_xattrs(path) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            Ok(Vec::new())
        }
        Err(e) => Err(io::Error::other(format!("{}: {e}", path.display()))),
        ok => ok,
    }
}

/// Disk usage of a directory tree in bytes: allocated blocks, each inode
/// once (hardlinks counted once, as du does).
pub fn disk_usage(root: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if let Ok(md) = entry.metadata()
            && (md.nlink() == 1 || md.is_dir() || seen.insert((md.dev(), md.ino())))
        {
            total += md.blocks() * 512;
        }
    }
    total
}
