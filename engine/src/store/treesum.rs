//! Tree digests: what a stored layer held when it was committed, so that
//! `strata store fsck` ([`super::fsck`]) can tell when it no longer does.
//!
//! ```text
//! objects/<id>/meta/info.json  "treesum": "blake3:<hex>"   derive_key(CONTEXT, ↓)
//! objects/<id>/meta/treesum    the manifest: one line per entry, in walk order
//!   /                  d 0755 0:0 - -
//!   /bin               l 0777 0:0 usr/bin -
//!   /etc               d 0755 0:0 - user.overlay.opaque=y
//!   /etc/motd          f 0644 0:0 13:<blake3 hex of the content> -
//!   /etc/my\x20file    f 0600 0:42 0:<blake3 hex> security.capability=\x01\x00…
//!   /run/ctl           c 0000 0:0 0,0 -
//!   path               type mode uid:gid what xattrs
//! ```
//!
//! - Walk order: depth first, a directory before what it holds, names
//!   sorted bytewise. The root is `/`.
//! - type: `d` directory, `f` regular file, `l` symlink, `c`/`b` character
//!   or block device (`what` is `major,minor`), `p` FIFO, `s` socket.
//! - mode: the permission bits with setuid, setgid and sticky, in octal.
//! - uid:gid as on disk (as strata sees them: as an ordinary user, through
//!   the namespace strata enters, `sandbox/userns.rs`).
//! - what: a file's size and the blake3 of its content, a link's target,
//!   a device's number, `-` for the rest. Every name of a hardlinked file
//!   is a file of its own here (its content is read once).
//! - xattrs: `name=value` sorted by name, `,`-separated, `-` when none.
//! - Times and link counts are left out: they change when nothing that a
//!   tree means does.
//! - Every byte of a name, target or value outside `!`…`~`, and `\`, `,`
//!   and `=`, is written `\xNN`: a line is one entry, its fields split at
//!   spaces, and a hostile name prints as harmless text.
//!
//! The manifest costs about 150 bytes an entry (≈ 1.5 MB for a 180 MB
//! minbase tree); it is what lets fsck name the path that changed, and
//! what changed in it, rather than only the object.
//!
//! The walk reads what a stage wrote, so it opens everything beneath
//! directory descriptors without following links, opens only directories
//! and regular files (`O_NONBLOCK`, checked again with fstat: a FIFO never
//! blocks it, a device is never opened), and reads xattrs of other entries
//! through `/proc/self/fd/DIR/NAME`, which follows nothing after DIR.

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The blake3 derive-key context of a treesum: names its format. A change
/// to the manifest's lines changes every treesum: bump it (fsck then finds
/// every object stored before, so a store format bump goes with it).
pub const CONTEXT: &str = "strata 2026-11 treesum v1";

/// How a treesum is written in info.json: `blake3:` and 64 hex digits.
pub const PREFIX: &str = "blake3:";

/// A walked tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summed {
    /// The manifest (module docs).
    pub manifest: Vec<u8>,
    /// `blake3:<hex>` of the manifest.
    pub treesum: String,
    /// Bytes on disk: allocated blocks, each inode once (as `du`).
    pub disk_usage: u64,
}

/// A walk that could not finish: the path (below the root) and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{path}: {source}", root.display())]
pub struct WalkError {
    /// The tree walked.
    pub root: PathBuf,
    /// The entry, as the manifest writes it (`/` for the root).
    pub path: String,
    /// Why.
    pub source: io::Error,
}

/// The treesum of `manifest`.
pub fn digest(manifest: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new_derive_key(CONTEXT);
    hasher.update(manifest);
    format!("{PREFIX}{}", hasher.finalize().to_hex())
}

/// Walks the tree at `root` (a directory the engine chose; nothing below
/// it is trusted) into its manifest and treesum. `strip`, when given, says
/// which xattrs to remove on the way (they are then not in the manifest):
/// a commit drops overlayfs's bookkeeping in the same walk that sums the
/// layer.
pub fn sum(root: &Path, strip: Option<&dyn Fn(&[u8]) -> bool>) -> Result<Summed, WalkError> {
    let mut walk = Walk {
        root,
        manifest: Vec::with_capacity(64 << 10),
        disk_usage: 0,
        counted: HashSet::new(),
        contents: HashMap::new(),
        strip,
        buf: vec![0; 256 << 10],
        path: b"/".to_vec(),
    };
    walk.run()?;
    let treesum = digest(&walk.manifest);
    Ok(Summed {
        manifest: walk.manifest,
        treesum,
        disk_usage: walk.disk_usage,
    })
}

/// One directory being walked: its descriptor, the names still to visit
/// (sorted, last first), and how long the path was when it was entered.
struct Frame {
    fd: OwnedFd,
    names: Vec<CString>,
    path_len: usize,
}

struct Walk<'a> {
    root: &'a Path,
    manifest: Vec<u8>,
    disk_usage: u64,
    counted: HashSet<(u64, u64)>,
    /// Size and content digest of files with more than one name, by inode.
    contents: HashMap<(u64, u64), (u64, blake3::Hash)>,
    strip: Option<&'a dyn Fn(&[u8]) -> bool>,
    buf: Vec<u8>,
    /// The entry being visited, as the manifest writes it (unescaped).
    path: Vec<u8>,
}

/// What the walk opened of an entry: directories and regular files are
/// opened (their xattrs are read through the descriptor), the rest is not.
enum Opened {
    Fd(OwnedFd),
    Not { dir: OwnedFd, name: CString },
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Walk<'_> {
    fn fail(&self, source: io::Error) -> WalkError {
        WalkError {
            root: self.root.to_path_buf(),
            path: escape_path(&self.path),
            source,
        }
    }

    fn run(&mut self) -> Result<(), WalkError> {
        let fd = rustix::fs::open(self.root, DIR_FLAGS, Mode::empty())
            .map_err(|e| self.fail(e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.fail(e.into()))?;
        let mut stack = Vec::new();
        self.entry(&st, Opened::Fd(fd), &mut stack)?;
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.pop() else {
                let frame = stack.pop().expect("a frame");
                self.path.truncate(frame.path_len);
                continue;
            };
            let path_len = frame.path_len;
            self.path.truncate(path_len);
            if self.path.last() != Some(&b'/') {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(name.as_bytes());
            let dir = frame.fd.as_fd();
            let st = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.fail(e.into()))?;
            let opened = match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => Opened::Fd(self.open(dir, &name, DIR_FLAGS, &st)?),
                FileType::RegularFile => Opened::Fd(self.open(
                    dir,
                    &name,
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    &st,
                )?),
                _ => Opened::Not {
                    dir: rustix::io::dup(dir).map_err(|e| self.fail(e.into()))?,
                    name,
                },
            };
            self.entry(&st, opened, &mut stack)?;
        }
        Ok(())
    }

    /// Opens `name` in `dir` as `flags` say (O_NOATIME where we may: a walk
    /// must not write the tree's inodes), and makes sure it is what was
    /// stat'ed: a directory or file swapped in between is refused.
    fn open(
        &self,
        dir: BorrowedFd<'_>,
        name: &CString,
        flags: OFlags,
        st: &rustix::fs::Stat,
    ) -> Result<OwnedFd, WalkError> {
        let fd = match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
            other => other,
        }
        .map_err(|e| self.fail(e.into()))?;
        let now = rustix::fs::fstat(&fd).map_err(|e| self.fail(e.into()))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
            || FileType::from_raw_mode(now.st_mode) != FileType::from_raw_mode(st.st_mode)
        {
            return Err(self.fail(changed()));
        }
        Ok(fd)
    }

    /// Writes the entry's line; a directory's names are pushed for later.
    fn entry(
        &mut self,
        st: &rustix::fs::Stat,
        opened: Opened,
        stack: &mut Vec<Frame>,
    ) -> Result<(), WalkError> {
        let kind = FileType::from_raw_mode(st.st_mode);
        let key = (st.st_dev, st.st_ino);
        if kind == FileType::Directory || st.st_nlink <= 1 || self.counted.insert(key) {
            self.disk_usage += st.st_blocks as u64 * 512;
        }
        let xattrs = self.xattrs(&opened)?;
        let mut line = escape_path(&self.path);
        let (letter, what) = match kind {
            FileType::Directory => ('d', "-".to_owned()),
            FileType::RegularFile => {
                let Opened::Fd(fd) = &opened else {
                    unreachable!("files are opened")
                };
                let (size, hash) = match self.contents.get(&key) {
                    Some(known) => *known,
                    None => {
                        let known = self.content(fd, st)?;
                        if st.st_nlink > 1 {
                            self.contents.insert(key, known);
                        }
                        known
                    }
                };
                ('f', format!("{size}:{}", hash.to_hex()))
            }
            FileType::Symlink => {
                let Opened::Not { dir, name } = &opened else {
                    unreachable!("links are not opened")
                };
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| self.fail(e.into()))?;
                ('l', escape(target.as_bytes()))
            }
            FileType::CharacterDevice | FileType::BlockDevice => (
                if kind == FileType::CharacterDevice {
                    'c'
                } else {
                    'b'
                },
                format!(
                    "{},{}",
                    rustix::fs::major(st.st_rdev),
                    rustix::fs::minor(st.st_rdev)
                ),
            ),
            FileType::Fifo => ('p', "-".to_owned()),
            FileType::Socket => ('s', "-".to_owned()),
            FileType::Unknown => ('?', "-".to_owned()),
        };
        let _ = write!(
            line,
            " {letter} {:04o} {}:{} {what} ",
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid
        );
        if xattrs.is_empty() {
            line.push('-');
        }
        for (i, (name, value)) in xattrs.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&escape(name));
            line.push('=');
            line.push_str(&escape(value));
        }
        line.push('\n');
        self.manifest.extend_from_slice(line.as_bytes());
        if let (FileType::Directory, Opened::Fd(fd)) = (kind, opened) {
            let names = self.names(&fd)?;
            stack.push(Frame {
                fd,
                names,
                path_len: self.path.len(),
            });
        }
        Ok(())
    }

    /// The names in a directory, sorted bytewise, last first (popped in order).
    fn names(&self, fd: &OwnedFd) -> Result<Vec<CString>, WalkError> {
        let mut dir = rustix::fs::Dir::read_from(fd).map_err(|e| self.fail(e.into()))?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| self.fail(e.into()))?;
            let name = entry.file_name();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        Ok(names)
    }

    /// Size and blake3 of a regular file's content, read through `fd`.
    fn content(
        &mut self,
        fd: &OwnedFd,
        st: &rustix::fs::Stat,
    ) -> Result<(u64, blake3::Hash), WalkError> {
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        loop {
            match rustix::io::read(fd, &mut self.buf[..]) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&self.buf[..n]);
                    size += n as u64;
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        // The size it had when stat'ed: one that changed was being written.
        if size != st.st_size as u64 {
            return Err(self.fail(changed()));
        }
        Ok((size, hasher.finalize()))
    }

    /// The entry's xattrs, sorted by name, with those `strip` names removed
    /// from the entry.
    fn xattrs(&self, opened: &Opened) -> Result<Vec<(Vec<u8>, Vec<u8>)>, WalkError> {
        let proc_path;
        let at = match opened {
            Opened::Fd(fd) => XattrsOf::Fd(fd.as_fd()),
            Opened::Not { dir, name } => {
                use std::os::fd::AsRawFd;
                let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                p.extend_from_slice(name.as_bytes());
                proc_path = CString::new(p).expect("names hold no NUL");
                XattrsOf::Path(&proc_path)
            }
        };
        let mut names = match at.list() {
            Ok(names) => names,
            // A filesystem without xattrs: none.
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(self.fail(e.into())),
        };
        names.sort_unstable();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if self.strip.is_some_and(|strip| strip(&name)) {
                at.remove(&name).map_err(|e| {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    self.fail(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("removing xattr {name}: {e}"),
                    ))
                })?;
                continue;
            }
            match at.get(&name) {
                Ok(value) => out.push((name, value)),
                // Gone since it was listed (never in a stored layer).
                Err(Errno::NODATA) => return Err(self.fail(changed())),
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        Ok(out)
    }
}

fn changed() -> io::Error {
    io::Error::other("changed while strata read it (something is writing the stored tree)")
}

/// Where an entry's xattrs are read: its descriptor, or a path that
/// follows nothing after the directory's descriptor.
enum XattrsOf<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a CString),
}

impl XattrsOf<'_> {
    fn list(&self) -> rustix::io::Result<Vec<Vec<u8>>> {
        let mut buf = vec![0u8; 256];
        loop {
            let listed = match self {
                XattrsOf::Fd(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
                XattrsOf::Path(p) => rustix::fs::llistxattr(p.as_c_str(), &mut buf[..]),
            };
            match listed {
                Ok(n) => {
                    return Ok(buf[..n]
                        .split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect());
                }
                Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
                Err(e) => return Err(e),
            }
        }
    }

    fn get(&self, name: &[u8]) -> rustix::io::Result<Vec<u8>> {
        let name = CString::new(name).expect("xattr names hold no NUL");
        let mut buf = vec![0u8; 256];
        loop {
            let got = match self {
                XattrsOf::Fd(fd) => rustix::fs::fgetxattr(fd, &name, &mut buf[..]),
                XattrsOf::Path(p) => rustix::fs::lgetxattr(p.as_c_str(), &name, &mut buf[..]),
            };
            match got {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
                Err(e) => return Err(e),
            }
        }
    }

    fn remove(&self, name: &[u8]) -> rustix::io::Result<()> {
        let name = CString::new(name).expect("xattr names hold no NUL");
        match self {
            XattrsOf::Fd(fd) => rustix::fs::fremovexattr(fd, &name),
            XattrsOf::Path(p) => rustix::fs::lremovexattr(p.as_c_str(), &name),
        }
    }
}

/// A path as the manifest writes it.
fn escape_path(path: &[u8]) -> String {
    escape(path)
}

/// `bytes` with every byte outside `!`…`~`, and `\`, `,` and `=`, as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b'!'..=b'~').contains(&b) && !matches!(b, b'\\' | b',' | b'=') {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc/sub")).unwrap();
        std::fs::write(d.join("etc/motd"), "hello\n").unwrap();
        std::fs::write(d.join("etc/my file"), "x").unwrap();
        std::fs::hard_link(d.join("etc/motd"), d.join("etc/sub/motd")).unwrap();
        symlink("../etc/motd", d.join("etc/sub/link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_tree_walks_into_lines_in_sorted_order() {
        let dir = tree();
        let summed = sum(dir.path(), None).unwrap();
        let text = String::from_utf8(summed.manifest.clone()).unwrap();
        let paths: Vec<&str> = text
            .lines()
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/",
                "/etc",
                "/etc/motd",
                "/etc/my\\x20file",
                "/etc/sub",
                "/etc/sub/link",
                "/etc/sub/motd",
                "/fifo"
            ]
        );
        let motd = blake3::hash(b"hello\n").to_hex();
        assert!(text.contains(&format!("/etc/motd f 0644 ")), "{text}");
        assert!(text.contains(&format!(" 6:{motd} -\n")), "{text}");
        // Both names of the hardlinked file carry its content.
        assert_eq!(text.matches(&format!(" 6:{motd} ")).count(), 2, "{text}");
        assert!(text.contains("/etc/sub/link l 0777 "), "{text}");
        assert!(text.contains(" ../etc/motd -\n"), "{text}");
        assert!(text.contains("/fifo p 0600 "), "{text}");
        assert_eq!(summed.treesum, digest(&summed.manifest));
        assert!(summed.treesum.starts_with(PREFIX));
        assert_eq!(sum(dir.path(), None).unwrap(), summed, "stable");
    }

    #[test]
    fn every_change_changes_the_treesum() {
        let dir = tree();
        let d = dir.path();
        let before = sum(d, None).unwrap().treesum;
        let changes: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| {
                std::fs::set_permissions(d.join("etc/motd"), PermissionsExt::from_mode(0o600))
                    .unwrap()
            }),
            Box::new(|| std::fs::write(d.join("etc/motd"), "hellO\n").unwrap()),
            Box::new(|| {
                std::os::unix::fs::lchown(d.join("etc/my file"), Some(1), Some(1)).unwrap()
            }),
            Box::new(|| {
                std::fs::remove_file(d.join("etc/sub/link")).unwrap();
                symlink("../etc/motD", d.join("etc/sub/link")).unwrap();
            }),
            Box::new(|| {
                rustix::fs::lsetxattr(
                    d.join("etc/sub").as_path(),
                    "user.a",
                    b"b",
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap()
            }),
            Box::new(|| std::fs::write(d.join("new"), "").unwrap()),
            Box::new(|| std::fs::remove_file(d.join("fifo")).unwrap()),
        ];
        let mut seen = HashSet::from([before]);
        for (i, change) in changes.iter().enumerate() {
            change();
            let now = sum(d, None).unwrap().treesum;
            assert!(seen.insert(now), "change {i} left the treesum as it was");
        }
    }

    #[test]
    fn strip_removes_xattrs_in_the_same_walk() {
        let dir = tree();
        let d = dir.path();
        for (path, name) in [("etc", "user.overlay.origin"), ("etc/motd", "user.keep")] {
            rustix::fs::lsetxattr(
                d.join(path).as_path(),
                name,
                b"v",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }
        let strip = |n: &[u8]| n.starts_with(b"user.overlay.");
        let summed = sum(d, Some(&strip)).unwrap();
        let text = String::from_utf8(summed.manifest.clone()).unwrap();
        assert!(!text.contains("user.overlay.origin"), "{text}");
        assert!(text.contains("user.keep=v"), "{text}");
        assert!(
            crate::store::copy::list_xattrs(&d.join("etc"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(sum(d, None).unwrap(), summed, "what was stripped is gone");
    }

    #[test]
    fn links_are_not_followed_and_fifos_do_not_block() {
        let dir = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        // The root itself may not be a link either.
        let link = dir.path().join("etc/out");
        symlink(outside.path(), &link).unwrap();
        let text = String::from_utf8(sum(dir.path(), None).unwrap().manifest).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(sum(&link, None).is_err());
    }

    #[test]
    fn escaping_keeps_one_entry_a_line() {
        assert_eq!(escape(b"a b\n\\,=\xff~"), "a\\x20b\\x0a\\x5c\\x2c\\x3d\\xff~");
    }
}
