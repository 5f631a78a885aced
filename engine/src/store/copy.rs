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

/// Like [`copy_tree`], but file data is read from `data(rel, path)`: the
/// same file elsewhere (an overlay's merged view is read for the tree, its
/// layers for the data, so that reflinks work: they never cross filesystems).
pub fn copy_tree_with(
    src: &Path,
    dst: &Path,
    data: &dyn Fn(&Path, &Path) -> PathBuf,
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
            reflink_copy::reflink_or_copy(data(rel, from), &to).map_err(|e| annotate(e, &to))?;
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
        apply_metadata(from, &to, &md)?;
    }
    for (from, to, md) in dirs.iter().rev() {
        apply_metadata(from, to, md)?;
    }
    Ok(())
}

/// Owner, mode, xattrs and times of `from` onto `to` (never following a final symlink).
fn apply_metadata(from: &Path, to: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    let is_link = md.file_type().is_symlink();
    std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid())).map_err(|e| annotate(e, to))?;
    if !is_link {
        // After chown: changing the owner clears setuid/setgid bits.
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| annotate(e, to))?;
    }
    copy_xattrs(from, to, is_link)?;
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

fn copy_xattrs(from: &Path, to: &Path, is_link: bool) -> io::Result<()> {
    let names = match list_xattrs(from) {
        Ok(names) => names,
        // A filesystem without xattrs has none to copy.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            return Ok(());
        }
        Err(e) => return Err(annotate(e, from)),
    };
    for name in names {
        let value = get_xattr(from, &name).map_err(|e| annotate(e, from))?;
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

    trait IsFifo {
        fn is_fifo_like(&self) -> bool;
    }
    impl IsFifo for std::fs::FileType {
        fn is_fifo_like(&self) -> bool {
            std::os::unix::fs::FileTypeExt::is_fifo(self)
        }
    }
}
