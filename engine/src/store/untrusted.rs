//! Reading back what a stage left: its `/run/strata/meta.json`, the files
//! its metadata names in its output. The engine reads them as root on the
//! host, the stage wrote them as root of its own namespace, so nothing in
//! them is believed:
//!
//! ```text
//! DIR (the engine's own)   opened, links followed: the engine chose it
//!   a/                     every step below: openat(O_NOFOLLOW), a directory
//!     name                 openat(O_NOFOLLOW | O_NONBLOCK), then fstat:
//!                          a regular file or refused (a link, a FIFO, a device);
//!                          read at most the cap, which the error names
//! ```
//!
//! O_NONBLOCK is what keeps a FIFO from hanging the open (it succeeds at
//! once, with or without a writer); the fstat then refuses it before any
//! read. Names come from the stage and must be plain ([`plain_name`]).

use rustix::fs::{FileType, Mode, OFlags};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

/// The most the engine reads of a file a stage left (meta.json, a
/// `.changes`): metadata, not payload.
pub const READ_CAP: u64 = 1 << 20;

/// Why a file a stage left was not read.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedError {
    /// A name that is a path, or empty, `.` or `..`.
    #[error("`{name}` is not a plain file name (no `/`, not empty, `.` or `..`)")]
    NotPlainName {
        /// The name as given.
        name: String,
    },
    /// The file (or a directory on the way to it) is a symbolic link.
    #[error("{path} is a symbolic link, which strata does not follow")]
    Symlink {
        /// Relative to the directory it was read in.
        path: String,
    },
    /// Not a regular file.
    #[error("{path} is a {kind}, not a regular file")]
    NotRegular {
        /// Relative to the directory it was read in.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than the cap.
    #[error("{path} is larger than the {} cap on files strata reads back ({size} bytes)", human(*cap))]
    TooLarge {
        /// Relative to the directory it was read in.
        path: String,
        /// Its size (at least).
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// Relative to the directory it was read in.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// A cap as a person reads it: `1 MiB`, else bytes.
fn human(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes}-byte")
    }
}

/// `name` when it names an entry of a directory, never a path: a stage
/// reporting `../x.changes` or `/etc/shadow` is refused here.
pub fn plain_name(name: &str) -> Result<&str, UntrustedError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(UntrustedError::NotPlainName { name: name.into() });
    }
    Ok(name)
}

/// Opens `rel` (plain names joined by `/`) under `dir` as described in the
/// module docs: `None` when it does not exist, an error when anything on
/// the way is a link or it is not a regular file.
pub fn open_regular(dir: &Path, rel: &str) -> Result<Option<File>, UntrustedError> {
    let io_err = |source: io::Error| UntrustedError::Io {
        path: rel.into(),
        source,
    };
    let names: Vec<&str> = rel.split('/').collect();
    if names.iter().any(|n| plain_name(n).is_err()) {
        return Err(UntrustedError::NotPlainName { name: rel.into() });
    }
    let (last, parents) = names.split_last().expect("split yields one name at least");
    let mut at: OwnedFd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UntrustedError::Io {
        path: dir.display().to_string(),
        source: e.into(),
    })?;
    let refused = |e: rustix::io::Errno, upto: usize| {
        let path = names[..=upto].join("/");
        match e {
            rustix::io::Errno::LOOP => Some(UntrustedError::Symlink { path }),
            // A parent that is a file: nothing by that name, as for ENOENT.
            rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => None,
            e => Some(UntrustedError::Io {
                path,
                source: e.into(),
            }),
        }
    };
    for (i, name) in parents.iter().enumerate() {
        at = match rustix::fs::openat(
            &at,
            *name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // O_DIRECTORY answers ENOTDIR for a link as for a file: tell
            // them apart, so that a link is named as one.
            Err(rustix::io::Errno::NOTDIR)
                if rustix::fs::statat(&at, *name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink) =>
            {
                return Err(UntrustedError::Symlink {
                    path: names[..=i].join("/"),
                });
            }
            Err(e) => return refused(e, i).map_or(Ok(None), Err),
        };
    }
    let fd = match rustix::fs::openat(
        &at,
        *last,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A socket cannot be opened at all.
        Err(rustix::io::Errno::NXIO) => {
            return Err(UntrustedError::NotRegular {
                path: rel.into(),
                kind: "socket",
            });
        }
        Err(e) => return refused(e, parents.len()).map_or(Ok(None), Err),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(e.into()))?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => return Ok(Some(File::from(fd))),
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Socket => "socket",
        FileType::Symlink => "symbolic link",
        FileType::Unknown => "file of an unknown type",
    };
    Err(UntrustedError::NotRegular {
        path: rel.into(),
        kind,
    })
}

/// The content of `rel` under `dir`, opened as [`open_regular`] does and
/// at most `cap` bytes long; `None` when it does not exist.
pub fn read_capped(dir: &Path, rel: &str, cap: u64) -> Result<Option<Vec<u8>>, UntrustedError> {
    let Some(file) = open_regular(dir, rel)? else {
        return Ok(None);
    };
    let too_large = |size| UntrustedError::TooLarge {
        path: rel.into(),
        size,
        cap,
    };
    let size = file
        .metadata()
        .map_err(|source| UntrustedError::Io {
            path: rel.into(),
            source,
        })?
        .len();
    if size > cap {
        return Err(too_large(size));
    }
    // The size may still grow while we read (a process of the stage's that
    // outlived it): read one byte past the cap, never more.
    let mut data = Vec::with_capacity(size as usize);
    file.take(cap + 1)
        .read_to_end(&mut data)
        .map_err(|source| UntrustedError::Io {
            path: rel.into(),
            source,
        })?;
    if data.len() as u64 > cap {
        return Err(too_large(data.len() as u64));
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    #[test]
    fn reads_regular_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/meta.json"), "{}").unwrap();
        std::fs::write(d.join("secret"), "secret").unwrap();
        symlink(d.join("secret"), d.join("link")).unwrap();
        symlink("sub", d.join("sublink")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();

        assert_eq!(
            read_capped(d, "sub/meta.json", READ_CAP).unwrap().unwrap(),
            b"{}"
        );
        assert!(read_capped(d, "missing", READ_CAP).unwrap().is_none());
        assert!(read_capped(d, "nodir/missing", READ_CAP).unwrap().is_none());
        let err = read_capped(d, "link", READ_CAP).unwrap_err();
        assert!(matches!(err, UntrustedError::Symlink { .. }), "{err}");
        let err = read_capped(d, "sublink/meta.json", READ_CAP).unwrap_err();
        assert!(matches!(err, UntrustedError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("sublink"), "{err}");
        let started = Instant::now();
        let err = read_capped(d, "fifo", READ_CAP).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.to_string(), "fifo is a FIFO, not a regular file");
        let err = read_capped(d, "sub", READ_CAP).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        let err = read_capped(d, "sub/meta.json", 1).unwrap_err();
        assert!(err.to_string().contains("1-byte cap"), "{err}");
        assert_eq!(human(READ_CAP), "1 MiB");
        for bad in ["../secret", "/etc/passwd", "sub/../secret", ".", "", "a//b"] {
            let err = read_capped(d, bad, READ_CAP).unwrap_err();
            assert!(
                matches!(err, UntrustedError::NotPlainName { .. }),
                "{bad}: {err}"
            );
        }
    }
}
