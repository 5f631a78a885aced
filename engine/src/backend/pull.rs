//! Moving files in and out of a tree without letting the tree's symlinks
//! point us anywhere else.
//!
//! ```text
//!  inside path ──openat2(RESOLVE_IN_ROOT)──▶ fd beneath the tree's root
//!       (/etc/x → /../../host: `..` stops at the root, absolute links mean the tree's root)
//!  fd ──copy──▶ FOLDER/.strata-pull-XXXX ──rename──▶ FOLDER/BASENAME
//! ```
//!
//! A pull writes only a fresh temp entry in the host folder and renames it
//! to the source's base name there: never through a host symlink, never
//! outside the folder. Pulls from incus land in the same kind of temp entry
//! and go through [`settle`].

use super::{BackendError, Owner, basename};
use crate::store::copy::copy_tree_mapped;
use fs_err as fs;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Opens `inside` (absolute) beneath `root` as if `root` were `/`.
pub fn open_in_root(root: &Path, inside: &str, flags: OFlags) -> Result<OwnedFd, BackendError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at(root, e))?;
    let rel = inside.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        &root_fd,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => BackendError::NotFound(inside.to_owned()),
        e => io_at(&root.join(rel), e),
    })
}

/// Where `inside` really is on the host, resolved beneath `root`.
pub fn real_path(root: &Path, inside: &str) -> Result<PathBuf, BackendError> {
    let fd = open_in_root(root, inside, OFlags::PATH)?;
    let link = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ));
    let real = fs::read_link(&link)?;
    let canonical_root = fs::canonicalize(root)?;
    if !real.starts_with(&canonical_root) {
        // openat2 guarantees this; a bind mount inside the tree could still surprise us.
        return Err(BackendError::NotFound(inside.to_owned()));
    }
    Ok(real)
}

fn io_at(path: &Path, e: rustix::io::Errno) -> BackendError {
    BackendError::Io(io::Error::new(
        io::Error::from(e).kind(),
        format!("{}: {e}", path.display()),
    ))
}

/// A fresh temp path in `folder`, for a pull to land in before its rename.
pub fn landing(folder: &Path) -> Result<tempfile::TempDir, BackendError> {
    Ok(tempfile::Builder::new()
        .prefix(".strata-pull-")
        .tempdir_in(folder)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", folder.display())))?)
}

/// Moves the pulled `landed` (inside a [`landing`] dir) to `folder/BASENAME
/// of source`, after checking it is the kind of thing asked for: a regular
/// file or a directory, never a symlink.
pub fn settle(
    landed: &Path,
    source: &str,
    folder: &Path,
    want_dir: bool,
) -> Result<PathBuf, BackendError> {
    let name = basename(source, folder)?;
    let meta = fs::symlink_metadata(landed).map_err(|_| BackendError::NotFound(source.into()))?;
    let kind_ok = if want_dir {
        meta.is_dir()
    } else {
        meta.is_file()
    };
    if !kind_ok {
        return Err(BackendError::Tool {
            command: format!("pull {source}"),
            detail: format!(
                "it is not a {}",
                if want_dir {
                    "directory"
                } else {
                    "regular file"
                }
            ),
        });
    }
    let dest = folder.join(name);
    if want_dir && fs::symlink_metadata(&dest).is_ok() {
        return Err(BackendError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists already", dest.display()),
        )));
    }
    fs::rename(landed, &dest)?;
    Ok(dest)
}

/// Copies the file `source` of the tree at `root` to `folder/BASENAME`.
pub fn pull_file(root: &Path, source: &str, folder: &Path) -> Result<PathBuf, BackendError> {
    basename(source, folder)?;
    let fd = open_in_root(root, source, OFlags::RDONLY)?;
    let mut from = std::fs::File::from(fd);
    let meta = from.metadata()?;
    if !meta.is_file() {
        return Err(BackendError::Tool {
            command: format!("pull {source}"),
            detail: "it is not a regular file".into(),
        });
    }
    let land = landing(folder)?;
    let landed = land.path().join("file");
    let mut to = fs::File::create(&landed)?;
    io::copy(&mut from, &mut to)?;
    fs::set_permissions(&landed, meta.permissions())?;
    settle(&landed, source, folder, false)
}

/// Copies the folder `source` of the tree at `root` to `folder/BASENAME`.
pub fn pull_dir(root: &Path, source: &str, folder: &Path) -> Result<PathBuf, BackendError> {
    basename(source, folder)?;
    let real = real_path(root, source)?;
    if !fs::symlink_metadata(&real)?.is_dir() {
        return Err(BackendError::Tool {
            command: format!("pull {source}"),
            detail: "it is not a directory".into(),
        });
    }
    let land = landing(folder)?;
    let landed = land.path().join("dir");
    // copy_tree never follows the symlinks it meets: they are copied as links.
    // Owners come out as in the tree (the store's are the stages' namespace's).
    copy_tree_mapped(&real, &landed, &crate::sandbox::userns::host_to_tree)?;
    settle(&landed, source, folder, true)
}

/// Writes the host file `host` to `target` in the tree at `root`, refusing
/// to write through a symlink there.
pub fn push_file(
    root: &Path,
    host: &Path,
    target: &str,
    mode: u32,
    owner: Owner,
) -> Result<(), BackendError> {
    let (parent, name) = split(target)?;
    let dir = open_in_root(root, parent, OFlags::DIRECTORY | OFlags::RDONLY)?;
    let mut from = fs::File::open(host)?;
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_at(&root.join(target.trim_start_matches('/')), e))?;
    // `owner` is in-tree; on disk it is the stages' namespace's (userns.rs).
    let (uid, gid) = crate::sandbox::userns::tree_to_host(owner.uid, owner.gid);
    rustix::fs::fchown(
        &fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| io_at(Path::new(target), e))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io_at(Path::new(target), e))?;
    let mut to = std::fs::File::from(fd);
    io::copy(from.file_mut(), &mut to)?;
    Ok(())
}

/// Copies the host folder `host` to `target` (which must not exist) in the
/// tree at `root`.
pub fn push_dir(root: &Path, host: &Path, target: &str) -> Result<(), BackendError> {
    let (parent, name) = split(target)?;
    let real_parent = real_path(root, parent)?;
    let dest = real_parent.join(name);
    if fs::symlink_metadata(&dest).is_ok() {
        return Err(BackendError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{target} exists already in the environment"),
        )));
    }
    if !fs::metadata(host)?.is_dir() {
        return Err(BackendError::NotFound(host.display().to_string()));
    }
    copy_tree_mapped(host, &dest, &crate::sandbox::userns::tree_to_host)?;
    Ok(())
}

fn split(target: &str) -> Result<(&str, &str), BackendError> {
    let p = Path::new(target);
    match (
        p.parent().and_then(Path::to_str),
        p.file_name().and_then(|n| n.to_str()),
    ) {
        (Some(parent), Some(name)) if name != ".." => Ok((parent, name)),
        _ => Err(BackendError::PathNotAbsolute(target.to_owned())),
    }
}

/// The uid and gid of a host file (for tests and messages).
pub fn owner_of(path: &Path) -> io::Result<Owner> {
    let m = std::fs::symlink_metadata(path)?;
    Ok(Owner {
        uid: m.uid(),
        gid: m.gid(),
    })
}
