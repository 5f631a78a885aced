//! Copying trees so that everything a system tree carries survives: file
//! contents (reflinked where the filesystem can, copied elsewhere), owners,
//! modes (setuid included), mtimes, xattrs (so ACLs and capabilities),
//! symlinks, hardlinks within the tree, device nodes, fifos and sockets.

use fs_err as fs;
use rustix::fs::{AtFlags, CWD, FileType, Timespec, Timestamps};
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// Copies the tree at `src` to `dst`, which must not exist yet.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    copy_tree_with(src, dst, &|_, from| from.to_path_buf())
}

/// How a copy changes owners: (uid, gid) → (uid, gid).
pub type OwnerMap<'a> = &'a dyn Fn(u32, u32) -> (u32, u32);

/// Like [`copy_tree`], with every owner passed through `owners`: a stored
/// tree's owners, shifted into the stages' namespace on disk, given back as
/// the in-tree owners (`--export` as root), or the other way.
pub fn copy_tree_mapped(src: &Path, dst: &Path, owners: OwnerMap<'_>) -> io::Result<()> {
    copy_tree_inner(src, dst, &|_, from| from.to_path_buf(), owners)
}

/// Gives every entry of the tree at `root` (the root too) the owner
/// `owners` makes of its own, in place.
pub fn map_owners(root: &Path, owners: OwnerMap<'_>) -> io::Result<()> {
    for entry in WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let md = entry.metadata().map_err(io::Error::other)?;
        let (uid, gid) = owners(md.uid(), md.gid());
        if (uid, gid) == (md.uid(), md.gid()) {
            continue;
        }
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))
            .map_err(|e| annotate(e, entry.path()))?;
        if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
            // chown cleared setuid/setgid: put them back.
            std::fs::set_permissions(
                entry.path(),
                std::fs::Permissions::from_mode(md.mode() & 0o7777),
            )
            .map_err(|e| annotate(e, entry.path()))?;
        }
    }
    Ok(())
}

/// Like [`copy_tree`], but file data is read from `data(rel, path)`: the
/// same file elsewhere (an overlay's merged view is read for the tree, its
/// layers for the data, so that reflinks work: they never cross filesystems).
pub fn copy_tree_with(
    src: &Path,
    dst: &Path,
    data: &dyn Fn(&Path, &Path) -> PathBuf,
) -> io::Result<()> {
    copy_tree_inner(src, dst, data, &|u, g| (u, g))
}

fn copy_tree_inner(
    src: &Path,
    dst: &Path,
    data: &dyn Fn(&Path, &Path) -> PathBuf,
    owners: OwnerMap<'_>,
) -> io::Result<()> {
    let mut first_link: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Directory metadata is applied after their contents, or the writes
    // would change the mtimes again (and a read-only dir would refuse them).
    let mut dirs: Vec<(PathBuf, PathBuf, std::fs::Metadata)> = Vec::new();
    for entry in WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let from = entry.path();
        let rel = from
            .strip_prefix(src)
            .expect("walkdir stays below its root");
        let to = if rel.as_os_str().is_empty() {
            dst.to_path_buf()
        } else {
            dst.join(rel)
        };
        let md = fs::symlink_metadata(from)?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&to)?;
            dirs.push((from.to_path_buf(), to, md));
            continue;
        }
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = first_link.get(&key) {
                fs::hard_link(first, &to)?;
                continue;
            }
            first_link.insert(key, to.clone());
        }
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(from)?, &to).map_err(|e| annotate(e, &to))?;
        } else if ft.is_file() {
            copy_data(&data(rel, from), &to).map_err(|e| annotate(e, &to))?;
        } else {
            let kind = FileType::from_raw_mode(md.mode());
            rustix::fs::mknodat(
                CWD,
                &to,
                kind,
                rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(|e| annotate(e.into(), &to))?;
        }
        apply_metadata(from, &to, &md, owners)?;
    }
    for (from, to, md) in dirs.iter().rev() {
        apply_metadata(from, to, md, owners)?;
    }
    Ok(())
}

/// `from`'s data into the new file `to`: reflinked where the filesystem
/// can, else copied with its holes kept. A disk image is mostly holes (a
/// 2 GiB raw image of a minbase system holds some 800 MiB), and a plain
/// copy (std's, copy_file_range over the whole file) would write them all
/// out as zeros.
fn copy_data(from: &Path, to: &Path) -> io::Result<()> {
    if reflink_copy::reflink(from, to).is_ok() {
        return Ok(());
    }
    // A failed reflink may have left the file it made.
    let _ = std::fs::remove_file(to);
    let src = fs::File::open(from)?;
    let dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let len = src.metadata()?.len();
    let mut pos = 0;
    while pos < len {
        let start = match rustix::fs::seek(src.file(), rustix::fs::SeekFrom::Data(pos)) {
            Ok(start) => start,
            // Nothing but a hole up to the end.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(annotate(e.into(), from)),
        };
        let end = rustix::fs::seek(src.file(), rustix::fs::SeekFrom::Hole(start))
            .map_err(|e| annotate(e.into(), from))?
            .min(len);
        copy_range(src.file(), dst.file(), start, end).map_err(|e| annotate(e, from))?;
        pos = end;
    }
    // A hole at the end is the file's length, not data.
    dst.set_len(len)
}

/// Bytes `start..end` of `src` to the same place in `dst`.
fn copy_range(src: &std::fs::File, dst: &std::fs::File, start: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = start;
    while at < end {
        let want = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = src.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was copied",
            ));
        }
        dst.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Owner, mode, xattrs and times of `from` onto `to` (never following a final symlink).
fn apply_metadata(
    from: &Path,
    to: &Path,
    md: &std::fs::Metadata,
    owners: OwnerMap<'_>,
) -> io::Result<()> {
    let is_link = md.file_type().is_symlink();
    let (uid, gid) = owners(md.uid(), md.gid());
    std::os::unix::fs::lchown(to, Some(uid), Some(gid)).map_err(|e| annotate(e, to))?;
    if !is_link {
        // After chown: changing the owner clears setuid/setgid bits.
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| annotate(e, to))?;
    }
    copy_xattrs(from, to, is_link, owners)?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| annotate(e.into(), to))
}

fn copy_xattrs(from: &Path, to: &Path, is_link: bool, owners: OwnerMap<'_>) -> io::Result<()> {
    let names = match list_xattrs(from) {
        Ok(names) => names,
        // A filesystem without xattrs has none to copy.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            return Ok(());
        }
        Err(e) => return Err(annotate(e, from)),
    };
    for name in names {
        let mut value = get_xattr(from, &name).map_err(|e| annotate(e, from))?;
        if name == b"security.capability" {
            value = map_capability(value, owners);
        }
        match rustix::fs::lsetxattr(to, name.as_slice(), &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            // Symlinks cannot carry user.* xattrs on Linux; the source could
            // not have had any, but tolerate filesystems that report them.
            Err(rustix::io::Errno::PERM) if is_link => {}
            Err(e) => {
                let name = String::from_utf8_lossy(&name).into_owned();
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("setting xattr {name} on {}: {e}", to.display()),
                ));
            }
        }
    }
    Ok(())
}

/// A file capability set by root of a user namespace is stored as revision
/// 3, naming the host uid of that root (`rootid`); where `owners` makes
/// that uid in-tree root again (an export of a stored tree as root), it is
/// the plain revision 2 a root-made file carries.
pub(crate) fn map_capability(value: Vec<u8>, owners: OwnerMap<'_>) -> Vec<u8> {
    const REVISION_MASK: u32 = 0xFF00_0000;
    const REVISION_2: u32 = 0x0200_0000;
    const REVISION_3: u32 = 0x0300_0000;
    if value.len() != 24 {
        return value;
    }
    let word = |at: usize| u32::from_le_bytes(value[at..at + 4].try_into().expect("4 bytes"));
    let (magic, rootid) = (word(0), word(20));
    if magic & REVISION_MASK != REVISION_3 || owners(rootid, 0).0 != 0 || rootid == 0 {
        return value;
    }
    let mut v2 = value[..20].to_vec();
    v2[..4].copy_from_slice(&((magic & !REVISION_MASK) | REVISION_2).to_le_bytes());
    v2
}

/// The names of `path`'s xattrs (never following a final symlink).
pub(crate) fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn holes_stay_holes() {
        use std::os::unix::fs::FileExt;
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        let f = std::fs::File::create(src.join("disk.raw")).unwrap();
        f.set_len(256 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 100 << 20).unwrap();
        drop(f);
        copy_tree(&src, &dst).unwrap();
        let copy = dst.join("disk.raw");
        let data = std::fs::read(&copy).unwrap();
        assert_eq!(data.len(), 256 << 20);
        assert_eq!(&data[..5], b"start");
        assert_eq!(&data[100 << 20..(100 << 20) + 6], b"middle");
        assert!(data[6..100 << 20].iter().all(|&b| b == 0));
        let used = std::fs::metadata(&copy).unwrap().blocks() * 512;
        assert!(
            used < 8 << 20,
            "{used} bytes allocated for 11 bytes of data"
        );
    }

    #[test]
    fn preserves_what_a_system_tree_needs() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("etc/sub")).unwrap();
        std::fs::write(src.join("etc/file"), b"hello").unwrap();
        // chown first: it clears the setuid bit.
        std::os::unix::fs::lchown(src.join("etc/file"), Some(1234), Some(5678)).unwrap();
        std::fs::set_permissions(
            src.join("etc/file"),
            std::fs::Permissions::from_mode(0o4751),
        )
        .unwrap();
        std::fs::hard_link(src.join("etc/file"), src.join("etc/sub/link")).unwrap();
        symlink("../file", src.join("etc/sub/sym")).unwrap();
        rustix::fs::mknodat(
            CWD,
            src.join("fifo"),
            FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        rustix::fs::lsetxattr(
            src.join("etc/file").as_path(),
            "user.strata",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 1000,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: 2000,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(CWD, src.join("etc"), &times, AtFlags::empty()).unwrap();

        let dst = tmp.path().join("dst");
        copy_tree(&src, &dst).unwrap();

        let f = std::fs::metadata(dst.join("etc/file")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4751);
        assert_eq!((f.uid(), f.gid()), (1234, 5678));
        assert_eq!(std::fs::read(dst.join("etc/file")).unwrap(), b"hello");
        let l = std::fs::metadata(dst.join("etc/sub/link")).unwrap();
        assert_eq!(l.ino(), f.ino(), "hardlinks stay hardlinks");
        assert_eq!(
            std::fs::read_link(dst.join("etc/sub/sym")).unwrap(),
            Path::new("../file")
        );
        assert!(
            std::fs::symlink_metadata(dst.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo_like()
        );
        assert_eq!(
            get_xattr(&dst.join("etc/file"), b"user.strata").unwrap(),
            b"v"
        );
        assert_eq!(std::fs::metadata(dst.join("etc")).unwrap().mtime(), 2000);
    }

    #[test]
    fn a_namespace_root_capability_is_exported_as_a_plain_one() {
        let mut v3 = vec![0u8; 24];
        v3[..4].copy_from_slice(&0x0300_0001u32.to_le_bytes());
        v3[4] = 0x20; // cap_net_raw
        v3[20..].copy_from_slice(&0x7000_0000u32.to_le_bytes());
        let back = |u: u32, g: u32| (u.wrapping_sub(0x7000_0000), g);
        let v2 = map_capability(v3.clone(), &back);
        assert_eq!(v2.len(), 20);
        assert_eq!(u32::from_le_bytes(v2[..4].try_into().unwrap()), 0x0200_0001);
        assert_eq!(v2[4], 0x20);
        // Another namespace's capability is kept as it is.
        assert_eq!(map_capability(v3.clone(), &|u, g| (u, g)), v3);
    }

    trait IsFifo {
        fn is_fifo_like(&self) -> bool;
    }
    impl IsFifo for std::fs::FileType {
        fn is_fifo_like(&self) -> bool {
            std::os::unix::fs::FileTypeExt::is_fifo(self)
        }
    }
}
