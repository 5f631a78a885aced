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
//!
//! What the environment holds is its own: a command running in it may
//! change the tree while it is pulled, so a path is resolved once and every
//! entry below is reached from its parent's descriptor; a FIFO is opened
//! without blocking and refused by what fstat says of the descriptor. Device
//! nodes, FIFOs, sockets, setuid/setgid bits and file capabilities stay
//! behind unless asked for ([`Specials`]): on the host they would be a
//! privilege the environment handed out.

use super::{BackendError, Owner, Pulled, Specials, basename};
use crate::store::copy::{copy_tree_mapped, map_capability};
use crate::store::treesum::XattrsOf;
use fs_err as fs;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
pub fn pull_file(
    root: &Path,
    source: &str,
    folder: &Path,
    specials: Specials,
) -> Result<Pulled, BackendError> {
    basename(source, folder)?;
    // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a
    // writer; fstat then refuses it before any read.
    let fd = open_in_root(root, source, OFlags::RDONLY | OFlags::NONBLOCK)?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_at(&root.join(source), e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(not_a(source, "regular file"));
    }
    let land = landing(folder)?;
    let landed = land.path().join("file");
    let mut to = fs::File::create_new(&landed)?;
    io::copy(&mut std::fs::File::from(fd), &mut to)?;
    let (mode, cleared) = kept_mode(st.st_mode, specials);
    fs::set_permissions(&landed, std::fs::Permissions::from_mode(mode))?;
    let path = settle(&landed, source, folder, false)?;
    Ok(Pulled {
        path,
        left_out: 0,
        cleared: usize::from(cleared),
    })
}

/// Copies the folder `source` of the tree at `root` to `folder/BASENAME`.
///
/// `source` is resolved once, beneath the root; from there every entry is
/// reached from its parent's descriptor without following links, so a
/// command running in the environment that swaps a folder for a link
/// mid-pull redirects nothing. Links come out as links.
pub fn pull_dir(
    root: &Path,
    source: &str,
    folder: &Path,
    specials: Specials,
) -> Result<Pulled, BackendError> {
    basename(source, folder)?;
    let dir = match open_in_root(root, source, OFlags::RDONLY | OFlags::DIRECTORY) {
        Err(BackendError::Io(e)) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {
            return Err(not_a(source, "directory"));
        }
        other => other?,
    };
    let land = landing(folder)?;
    let landed = land.path().join("dir");
    let mut walk = Walk {
        specials,
        links: HashMap::new(),
        left_out: 0,
        cleared: 0,
    };
    walk.dir(&dir, &landed, source, 0)?;
    let path = settle(&landed, source, folder, true)?;
    Ok(Pulled {
        path,
        left_out: walk.left_out,
        cleared: walk.cleared,
    })
}

/// How deep a pulled folder may nest: one descriptor is open per level.
const MAX_DEPTH: usize = 256;

/// One folder pull: copies from descriptors of the environment's tree to
/// paths in the fresh landing folder (strata's own, private).
struct Walk {
    specials: Specials,
    /// The first landed path of each multiply-linked source inode.
    links: HashMap<(u64, u64), PathBuf>,
    left_out: usize,
    cleared: usize,
}

impl Walk {
    fn dir(
        &mut self,
        from: &OwnedFd,
        to: &Path,
        shown: &str,
        depth: usize,
    ) -> Result<(), BackendError> {
        if depth > MAX_DEPTH {
            return Err(BackendError::Tool {
                command: format!("pull {shown}"),
                detail: format!("folders nest deeper than {MAX_DEPTH} levels"),
            });
        }
        let st = rustix::fs::fstat(from).map_err(|e| io_at(Path::new(shown), e))?;
        fs::create_dir(to)?;
        let names: Vec<std::ffi::CString> = rustix::fs::Dir::read_from(from)
            .map_err(|e| io_at(Path::new(shown), e))?
            .filter_map(|entry| match entry {
                Ok(e) if matches!(e.file_name().to_bytes(), b"." | b"..") => None,
                Ok(e) => Some(Ok(e.file_name().to_owned())),
                Err(e) => Some(Err(io_at(Path::new(shown), e))),
            })
            .collect::<Result<_, _>>()?;
        for name in names {
            let inner = format!("{shown}/{}", name.to_string_lossy());
            let dest = to.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            self.entry(from, &name, &dest, &inner, depth)?;
        }
        // After the contents: writing them would change the times, and a
        // read-only folder would refuse them.
        let (mode, _) = kept_mode(st.st_mode, self.specials);
        self.finish(Some(from), to, &st, mode, shown)
    }

    fn entry(
        &mut self,
        parent: &OwnedFd,
        name: &std::ffi::CStr,
        dest: &Path,
        shown: &str,
        depth: usize,
    ) -> Result<(), BackendError> {
        let at = |e| io_at(Path::new(shown), e);
        let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(at)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind == FileType::Directory {
            let sub = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(at)?;
            return self.dir(&sub, dest, shown, depth + 1);
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                fs::hard_link(first, dest)?;
                return Ok(());
            }
            self.links.insert(key, dest.to_path_buf());
        }
        match kind {
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent, name, Vec::new()).map_err(at)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target.as_bytes()), dest)
                    .map_err(|e| annotate(e, dest))?;
                self.finish(None, dest, &st, 0, shown)
            }
            FileType::RegularFile => {
                let fd = rustix::fs::openat(
                    parent,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(at)?;
                // What the descriptor is, not what the name was a moment ago.
                let st = rustix::fs::fstat(&fd).map_err(at)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Err(not_a(shown, "regular file any more"));
                }
                let mut to = fs::File::create_new(dest)?;
                io::copy(&mut std::fs::File::from(fd.try_clone()?), &mut to)?;
                let (mode, cleared) = kept_mode(st.st_mode, self.specials);
                self.cleared += usize::from(cleared);
                self.finish(Some(&fd), dest, &st, mode, shown)
            }
            _ if self.specials == Specials::Drop => {
                self.left_out += 1;
                Ok(())
            }
            _ => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    dest,
                    kind,
                    Mode::from_raw_mode(st.st_mode & 0o7777),
                    st.st_rdev,
                )
                .map_err(|e| io_at(dest, e))?;
                self.finish(None, dest, &st, st.st_mode & 0o7777, shown)
            }
        }
    }

    /// Owner, mode (not for links), xattrs (read from `fd`, where there is
    /// one) and times of the source onto the landed `to`.
    fn finish(
        &mut self,
        fd: Option<&OwnedFd>,
        to: &Path,
        st: &rustix::fs::Stat,
        mode: u32,
        shown: &str,
    ) -> Result<(), BackendError> {
        let (uid, gid) = crate::sandbox::userns::host_to_tree(st.st_uid, st.st_gid);
        std::os::unix::fs::lchown(to, Some(uid), Some(gid)).map_err(|e| annotate(e, to))?;
        if let Some(fd) = fd {
            // After chown: changing the owner clears setuid/setgid bits.
            fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
            for (name, value) in xattrs(fd).map_err(|e| io_at(Path::new(shown), e))? {
                let value = match (name.as_slice(), self.specials) {
                    // A file capability is a privilege, like setuid.
                    (b"security.capability", Specials::Drop) => {
                        self.cleared += 1;
                        continue;
                    }
                    (b"security.capability", Specials::Keep) => {
                        map_capability(value, &crate::sandbox::userns::host_to_tree)
                    }
                    _ => value,
                };
                rustix::fs::lsetxattr(to, name.as_slice(), &value, XattrFlags::empty())
                    .map_err(|e| io_at(to, e))?;
            }
        } else if !FileType::from_raw_mode(st.st_mode).is_symlink() {
            fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
        }
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime as _,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime as _,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_at(to, e))
    }
}

/// `mode`'s permission bits as a pull keeps them, and whether it cleared
/// setuid/setgid to get there.
pub(crate) fn kept_mode(mode: u32, specials: Specials) -> (u32, bool) {
    let mode = mode & 0o7777;
    match specials {
        Specials::Drop if mode & 0o6000 != 0 => (mode & !0o6000, true),
        _ => (mode, false),
    }
}

/// An xattr's name and value.
type Xattr = (Vec<u8>, Vec<u8>);

/// Every xattr of the open file `fd` (none where the filesystem has none).
fn xattrs(fd: &OwnedFd) -> Result<Vec<Xattr>, Errno> {
    let of = XattrsOf::Fd(fd.as_fd());
    let names = match of.list() {
        Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
        other => other?,
    };
    names
        .into_iter()
        .map(|name| of.get(&name).map(|value| (name, value)))
        .collect()
}

fn not_a(source: &str, what: &str) -> BackendError {
    BackendError::Tool {
        command: format!("pull {source}"),
        detail: format!("it is not a {what}"),
    }
}

fn annotate(e: io::Error, path: &Path) -> BackendError {
    BackendError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// An incus folder pull's archive (made by the instance's tar, so believed
/// in nothing) rewritten for the host's tar: members that would land
/// outside the folder refused, special files left out and setuid/setgid
/// cleared per `specials`. The names the host's tar sees are the ones this
/// parser read, whichever header (GNU or PAX) carried them.
pub fn filter_archive(
    archive: &[u8],
    source: &str,
    specials: Specials,
) -> Result<(Vec<u8>, usize, usize), BackendError> {
    use tar::EntryType;
    let bad = |detail: String| BackendError::Tool {
        command: format!("pull {source}"),
        detail,
    };
    let mut out = tar::Builder::new(Vec::new());
    let (mut left_out, mut cleared) = (0, 0);
    let mut input = tar::Archive::new(archive);
    for entry in input.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(format!("a broken archive: {e}")))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let stays = |p: &Path| {
            p.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
        };
        if !stays(&path) {
            return Err(bad(format!(
                "member `{}` would land outside the folder",
                path.display()
            )));
        }
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo if specials == Specials::Drop => {
                left_out += 1;
                continue;
            }
            EntryType::Regular | EntryType::Directory | EntryType::Continuous => {
                let mode = header.mode().map_err(|e| bad(e.to_string()))?;
                let (kept, was_cleared) = kept_mode(mode, specials);
                cleared += usize::from(was_cleared);
                header.set_mode(kept);
            }
            _ => {}
        }
        let done = match kind {
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(e.to_string()))?
                    .ok_or_else(|| bad(format!("link `{}` names no target", path.display())))?
                    .into_owned();
                if kind == EntryType::Link && !stays(&target) {
                    return Err(bad(format!(
                        "hard link `{}` names `{}`, outside the folder",
                        path.display(),
                        target.display()
                    )));
                }
                out.append_link(&mut header, &path, &target)
            }
            _ => out.append_data(&mut header, &path, &mut entry),
        };
        done.map_err(|e| bad(e.to_string()))?;
    }
    let bytes = out.into_inner().map_err(|e| bad(e.to_string()))?;
    Ok((bytes, left_out, cleared))
}

/// Makes the folder `target` (which must not exist; exit 17 if it does)
/// from the tar on stdin: what an environment's own shell runs for a folder
/// push (`sh -c PUSH_DIR strata-push TARGET`).
pub const PUSH_DIR: &str = r#"[ ! -e "$1" ] || { echo "$1 exists already in the environment" >&2; exit 17; }; mkdir -- "$1" && tar --numeric-owner --same-owner -xpf - -C "$1""#;

/// Prints the folder `$1` as a tar (exit 20 if it is not a folder): what an
/// environment's own shell runs for a folder pull.
pub const PULL_DIR: &str = r#"[ -d "$1" ] || { echo "$1: not a directory" >&2; exit 20; }; tar --numeric-owner -C "$1" -cf - ."#;

/// The host folder `host` as a tar, owners numeric, for [`PUSH_DIR`].
pub fn archive_host_dir(host: &Path) -> Result<Vec<u8>, BackendError> {
    use std::ffi::OsString;
    let archive = crate::sandbox::process::run(&crate::sandbox::process::Invocation {
        program: "tar".into(),
        args: ["--numeric-owner", "-C"]
            .map(OsString::from)
            .into_iter()
            .chain([host.into(), "-cf".into(), "-".into(), ".".into()])
            .collect(),
        ..Default::default()
    });
    if !archive.outcome.success() {
        return Err(BackendError::Tool {
            command: format!("tar -C {} -c .", host.display()),
            detail: String::from_utf8_lossy(&archive.stderr).into_owned(),
        });
    }
    Ok(archive.stdout)
}

/// Lands the archive an environment printed for the folder `source` (see
/// [`PULL_DIR`]) at `folder/BASENAME`: read by [`filter_archive`] first,
/// then unpacked by the host's tar into a fresh landing entry.
pub fn unpack_pulled(
    archive: &[u8],
    source: &str,
    folder: &Path,
    specials: Specials,
) -> Result<Pulled, BackendError> {
    use std::ffi::OsString;
    let (archive, left_out, cleared) = filter_archive(archive, source, specials)?;
    let land = landing(folder)?;
    let landed = land.path().join("dir");
    fs::create_dir(&landed)?;
    let unpacked = crate::sandbox::process::run(&crate::sandbox::process::Invocation {
        program: "tar".into(),
        args: ["--numeric-owner", "--same-owner", "-xpf", "-", "-C"]
            .map(OsString::from)
            .into_iter()
            .chain([landed.clone().into()])
            .collect(),
        stdin: crate::sandbox::process::Stdin::Bytes(archive),
        ..Default::default()
    });
    if !unpacked.outcome.success() {
        return Err(BackendError::Tool {
            command: format!("tar -x -C {}", landed.display()),
            detail: String::from_utf8_lossy(&unpacked.stderr).into_owned(),
        });
    }
    Ok(Pulled {
        path: settle(&landed, source, folder, true)?,
        left_out,
        cleared,
    })
}

/// The contents and mode of the one regular file in `archive`, which an
/// environment printed for `source`: anything else (a FIFO swapped in, a
/// link, a second member, a name that is not the source's) is refused.
pub fn single_file(archive: &[u8], source: &str) -> Result<(Vec<u8>, u32), BackendError> {
    use std::io::Read;
    let bad = |detail: String| BackendError::Tool {
        command: format!("pull {source}"),
        detail,
    };
    let mut input = tar::Archive::new(archive);
    let mut entries = input.entries().map_err(|e| bad(e.to_string()))?;
    let mut entry = entries
        .next()
        .ok_or_else(|| bad("the environment sent nothing".into()))?
        .map_err(|e| bad(format!("a broken archive: {e}")))?;
    let kind = entry.header().entry_type();
    if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
        return Err(not_a(source, "regular file"));
    }
    let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
    if path.components().count() != 1 || path.to_str().is_some_and(|p| p.contains('/')) {
        return Err(bad(format!("the archive holds `{}`", path.display())));
    }
    let mode = entry.header().mode().map_err(|e| bad(e.to_string()))?;
    let mut data = Vec::new();
    entry
        .read_to_end(&mut data)
        .map_err(|e| bad(e.to_string()))?;
    drop(entry);
    if entries.next().is_some_and(|e| e.is_ok()) {
        return Err(bad("the archive holds more than the file".into()));
    }
    Ok((data, mode))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }

    fn names(archive: &[u8]) -> Vec<(String, u32)> {
        tar::Archive::new(archive)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn an_archive_from_an_instance_loses_its_privileges() {
        let mut b = tar::Builder::new(Vec::new());
        member(&mut b, "./", tar::EntryType::Directory, 0o755);
        member(&mut b, "./null", tar::EntryType::Char, 0o666);
        member(&mut b, "./disk", tar::EntryType::Block, 0o660);
        member(&mut b, "./fifo", tar::EntryType::Fifo, 0o644);
        member(&mut b, "./suid", tar::EntryType::Regular, 0o4755);
        member(&mut b, "./shared", tar::EntryType::Directory, 0o2775);
        let archive = b.into_inner().unwrap();
        let (out, left_out, cleared) = filter_archive(&archive, "/x", Specials::Drop).unwrap();
        assert_eq!((left_out, cleared), (3, 2));
        assert_eq!(
            names(&out),
            [
                ("./".into(), 0o755),
                ("suid".into(), 0o755),
                ("shared".into(), 0o775)
            ]
        );
        let (out, left_out, cleared) = filter_archive(&archive, "/x", Specials::Keep).unwrap();
        assert_eq!((left_out, cleared), (0, 0));
        assert_eq!(names(&out).len(), 6);
    }

    #[test]
    fn a_single_file_pull_takes_one_regular_file_and_nothing_else() {
        let one = |build: &dyn Fn(&mut tar::Builder<Vec<u8>>)| {
            let mut b = tar::Builder::new(Vec::new());
            build(&mut b);
            b.into_inner().unwrap()
        };
        let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o4750);
            h.set_size(data.len() as u64);
            h.set_path(path).unwrap();
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        let ok = one(&|b| file(b, "out.bin", b"bytes"));
        assert_eq!(single_file(&ok, "/x").unwrap(), (b"bytes".to_vec(), 0o4750));
        let fifo = one(&|b| member(b, "out.bin", tar::EntryType::Fifo, 0o644));
        let two = one(&|b| {
            file(b, "a", b"1");
            file(b, "b", b"2");
        });
        let deep = one(&|b| file(b, "etc/shadow", b"x"));
        for (bad, why) in [
            (&fifo, "regular file"),
            (&two, "more than the file"),
            (&deep, "holds `etc/shadow`"),
            (&Vec::new(), "sent nothing"),
        ] {
            let err = single_file(bad, "/x").unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn an_archive_member_outside_the_folder_is_refused() {
        for bad in ["../up", "/abs", "a/../../b"] {
            let mut raw = tar::Header::new_old();
            // set_path refuses `..`; write the name field by hand, as a
            // hostile tar would.
            raw.as_old_mut().name[..bad.len()].copy_from_slice(bad.as_bytes());
            raw.set_entry_type(tar::EntryType::Regular);
            raw.set_mode(0o644);
            raw.set_size(0);
            raw.set_cksum();
            let mut archive = raw.as_bytes().to_vec();
            archive.extend([0u8; 1024]);
            let err = filter_archive(&archive, "/x", Specials::Drop).unwrap_err();
            assert!(
                err.to_string().contains("outside the folder"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_folder_pull_leaves_device_nodes_behind() {
        if !rustix::process::geteuid().is_root() {
            return; // mknod of a device needs root on the host
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("srv/d")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("srv/d/null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        std::fs::write(root.join("srv/d/f"), "data").unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let pulled = pull_dir(&root, "/srv/d", &out, Specials::Drop).unwrap();
        assert_eq!(pulled.left_out, 1);
        let names: Vec<_> = std::fs::read_dir(&pulled.path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
        std::fs::remove_dir_all(&pulled.path).unwrap();
        let pulled = pull_dir(&root, "/srv/d", &out, Specials::Keep).unwrap();
        let null = std::fs::symlink_metadata(pulled.path.join("null")).unwrap();
        assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    }
}
