//! Unpacking a tar archive into a tree with one parser: the `tar` crate
//! reads each member, and the member is judged and written as it is read,
//! beneath the tree's directory descriptor.
//!
//! ```text
//!   archive ──tar crate──> Member (member.rs: its one name, kind, owner, mode, time, xattrs)
//!                            judged by its names: absolute, "..", NUL, hard links out,
//!                            relative symlinks climbing above the root
//!      │
//!      ▼  budget.rs: options.max_size, the free space and inodes (fstatvfs)
//!   parent  openat2(TREE, "usr/bin", RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
//!           (missing parents made one by one, beneath too)
//!   member  openat(O_CREAT|O_EXCL|O_NOFOLLOW) · mkdirat · symlinkat · linkat · mknodat
//!           then owner (fchown / AT_SYMLINK_NOFOLLOW), mode (set-id bits after the
//!           owner, which clears them), xattrs (fsetxattr), mtime (futimens / NOFOLLOW)
//!   at the end, directories: owner, mode, xattrs and mtime, once nothing more is made in
//!           them (as tar does), each checked to be the directory made (device, inode)
//!   on error: what this archive made is removed again, newest first
//! ```
//!
//! A parent is resolved by the kernel beneath the tree, so a symlink that an
//! earlier member (or the tree) put there is followed only while it stays
//! inside; one that points out (absolute, or climbing with `..`, directly or
//! through a chain of links) fails with EXDEV and refuses the member. The
//! final component is never followed: an existing entry there is removed
//! and replaced, as GNU tar does, except that a directory member keeps a
//! symlink it finds in its place (a merged-/usr `bin -> usr/bin` stays a
//! link, as with `tar --keep-directory-symlink` and dpkg); what the archive
//! puts below it then goes where the link leads, beneath the tree or not
//! at all. A hard link must name an earlier member of the same archive.
//!
//! Device nodes are made as asked: a stage is root of a user namespace,
//! where the kernel refuses them (EPERM) and the member fails, as it did
//! with GNU tar; FIFOs are made everywhere.

mod acl;
mod budget;
mod member;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timestamps, Uid};
use rustix::io::Errno;

use crate::Root;
use budget::Budget;
use member::{Found, Kind, Member, Pending};

/// What may stop an archive.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// A member would land outside the tree, or is of a kind or size untar
    /// refuses.
    #[error("member {member} {why}")]
    Refused { member: String, why: String },
    /// Writing a member failed.
    #[error("member {member}: {what}: {source}")]
    Failed {
        member: String,
        what: String,
        source: std::io::Error,
    },
    /// The archive could not be read: corrupt, or cut short.
    #[error("cannot read the archive: {0}")]
    Unreadable(std::io::Error),
}

/// What [`unpack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Members read (PAX and GNU extension headers are part of theirs).
    pub members: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Unpacks the archive `reader` into `tree`; its files may hold at most
/// `max_size` bytes in all. On an error, what it made is removed again.
pub fn unpack(
    reader: impl Read,
    tree: &Root,
    max_size: Option<u64>,
) -> Result<Unpacked, UnpackError> {
    // Modes are given exactly (mkdirat, mknodat and open take them through
    // the umask); the stage is one process and makes nothing else.
    let old = rustix::process::umask(Mode::empty());
    let mut u = Unpacker::new(tree, max_size);
    let done = u.run(reader);
    if done.is_err() {
        u.undo();
    }
    rustix::process::umask(old);
    done
}

/// A directory member, whose owner, mode, xattrs and time wait for the end.
#[derive(Debug)]
struct Dir {
    path: Vec<u8>,
    shown: String,
    /// What was made, so that a member that replaced it later is not changed.
    dev: u64,
    ino: u64,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: rustix::fs::Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Unpacker<'t> {
    tree: &'t Root,
    budget: Budget,
    /// Paths this archive made, oldest first: removed again on an error.
    made: Vec<Vec<u8>>,
    /// Directory members, by (device, inode): a later member naming the same
    /// directory replaces the earlier one's attributes.
    dirs: Vec<Dir>,
    dir_index: HashMap<(u64, u64), usize>,
    /// Non-directories written so far: what a hard link may name.
    linkable: HashSet<Vec<u8>>,
    /// The last parent resolved, by path: archives list a directory's
    /// members together. Nothing but this archive changes the tree, and a
    /// member only ever removes an entry of its own parent, never an
    /// ancestor of it, so the descriptor stays right.
    parent: Option<(Vec<u8>, OwnedFd)>,
    buf: Vec<u8>,
}

/// How content is copied: large enough for most files in one read.
const COPY_BUF: usize = 256 << 10;
/// How much of the archive is read at a time (headers are 512 bytes).
const READ_BUF: usize = 1 << 20;

impl<'t> Unpacker<'t> {
    fn new(tree: &'t Root, max_size: Option<u64>) -> Self {
        Self {
            tree,
            budget: Budget::new(max_size),
            made: Vec::new(),
            dirs: Vec::new(),
            dir_index: HashMap::new(),
            linkable: HashSet::new(),
            parent: None,
            buf: vec![0; COPY_BUF],
        }
    }

    fn run(&mut self, reader: impl Read) -> Result<Unpacked, UnpackError> {
        let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(READ_BUF, reader));
        let mut done = Unpacked {
            members: 0,
            bytes: 0,
        };
        // Raw: extension headers come as entries, read by member.rs.
        let entries = archive.entries().map_err(UnpackError::Unreadable)?;
        let mut pending = Pending::default();
        for entry in entries.raw(true) {
            let mut entry = entry.map_err(UnpackError::Unreadable)?;
            let m = match member::read(&mut entry, &mut pending)? {
                Found::Member(m) => m,
                Found::Nothing => continue,
            };
            for warning in &m.warnings {
                eprintln!("warning: member {}: {warning}", m.shown);
            }
            let inodes = u64::from(!matches!(m.kind, Kind::HardLink { .. }));
            self.budget
                .charge(self.tree.fd(), m.size, inodes)
                .map_err(|short| m.refused(short.why(m.size)))?;
            self.member(&m, &mut entry)?;
            done.members += 1;
            done.bytes += m.size;
        }
        pending.finish()?;
        self.finish_dirs()?;
        Ok(done)
    }

    fn member(&mut self, m: &Member, content: &mut impl Read) -> Result<(), UnpackError> {
        if m.path.is_empty() {
            // The tree's root: only its attributes (member.rs lets only a
            // directory name it).
            let st = rustix::fs::fstat(self.tree.fd()).map_err(|e| m.failed("cannot stat", e))?;
            self.remember_dir(m, &st);
            return Ok(());
        }
        let dir = self.parent_of(m)?;
        let (_, name) = m.split();
        let made = match &m.kind {
            Kind::Dir => self.dir(m, dir.as_fd(), name),
            Kind::File => self.file(m, dir.as_fd(), name, content),
            Kind::Symlink(target) => self.symlink(m, dir.as_fd(), name, target),
            Kind::HardLink { target, shown } => self.hard_link(m, dir.as_fd(), name, target, shown),
            Kind::Char(dev) => self.node(m, dir.as_fd(), name, FileType::CharacterDevice, *dev),
            Kind::Block(dev) => self.node(m, dir.as_fd(), name, FileType::BlockDevice, *dev),
            Kind::Fifo => self.node(m, dir.as_fd(), name, FileType::Fifo, 0),
        };
        self.parent = Some((m.split().0.to_vec(), dir));
        made?;
        if !matches!(m.kind, Kind::Dir) {
            self.linkable.insert(m.path.clone());
        }
        Ok(())
    }

    /// The member's parent directory, resolved beneath the tree (made when
    /// missing), as an `O_PATH` descriptor.
    fn parent_of(&mut self, m: &Member) -> Result<OwnedFd, UnpackError> {
        let (parent, _) = m.split();
        if let Some((path, fd)) = self.parent.take()
            && path == parent
        {
            return Ok(fd);
        }
        let rel: &[u8] = if parent.is_empty() { b"." } else { parent };
        match open_beneath(self.tree.fd(), rel, OFlags::PATH) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) => self.make_parents(m, parent),
            Err(e) => Err(resolve_error(m, parent, e)),
        }
    }

    /// Makes the missing directories of `parent` (mode 0755, as tar makes
    /// them), each beneath the tree, and returns the last.
    fn make_parents(&mut self, m: &Member, parent: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mut dir = open_beneath(self.tree.fd(), b".", OFlags::PATH)
            .map_err(|e| m.failed("cannot open the tree", e))?;
        let mut end = 0;
        while end < parent.len() {
            end = parent[end..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(parent.len(), |i| end + i);
            let prefix = &parent[..end];
            let name = member::split(prefix).1;
            dir = match open_beneath(self.tree.fd(), prefix, OFlags::PATH) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    // `dir` is the prefix's parent, resolved: make it there.
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)).map_err(|e| {
                        match e {
                            // There is something, yet the path leads nowhere: a
                            // symlink to what does not exist.
                            Errno::EXIST => m.refused(format!(
                                "would be unpacked below {}, a symlink that leads nowhere in the tree",
                                String::from_utf8_lossy(prefix)
                            )),
                            e => m.failed(
                                format!(
                                    "cannot make its parent directory {}",
                                    String::from_utf8_lossy(prefix)
                                ),
                                e,
                            ),
                        }
                    })?;
                    self.made.push(prefix.to_vec());
                    rustix::fs::openat(
                        &dir,
                        name,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| m.failed("cannot open the directory it made", e))?
                }
                Err(e) => return Err(resolve_error(m, prefix, e)),
            };
            end += 1;
        }
        Ok(dir)
    }

    fn dir(&mut self, m: &Member, dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), UnpackError> {
        match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => self.made.push(m.path.clone()),
            Err(Errno::EXIST) => {
                let st = lstat(dir, name).map_err(|e| m.failed("cannot stat", e))?;
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {}
                    // Kept, and left as it is: see the module's docs.
                    FileType::Symlink => return Ok(()),
                    _ => {
                        remove(dir, name, &st).map_err(|e| m.failed("cannot replace", e))?;
                        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                            .map_err(|e| m.failed("cannot make the directory", e))?;
                        self.made.push(m.path.clone());
                    }
                }
            }
            Err(e) => return Err(m.failed("cannot make the directory", e)),
        }
        let st = lstat(dir, name).map_err(|e| m.failed("cannot stat", e))?;
        self.remember_dir(m, &st);
        Ok(())
    }

    fn remember_dir(&mut self, m: &Member, st: &rustix::fs::Stat) {
        let d = Dir {
            path: m.path.clone(),
            shown: m.shown.clone(),
            dev: st.st_dev,
            ino: st.st_ino,
            uid: m.uid,
            gid: m.gid,
            mode: m.mode,
            mtime: m.mtime,
            xattrs: m.xattrs.clone(),
        };
        match self.dir_index.get(&(d.dev, d.ino)) {
            Some(&i) => self.dirs[i] = d,
            None => {
                self.dir_index.insert((d.dev, d.ino), self.dirs.len());
                self.dirs.push(d);
            }
        }
    }

    fn file(
        &mut self,
        m: &Member,
        dir: BorrowedFd<'_>,
        name: &[u8],
        content: &mut impl Read,
    ) -> Result<(), UnpackError> {
        let create = || {
            rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                // Set-id bits come after the owner, which would clear them.
                Mode::from_raw_mode(m.mode & 0o777),
            )
        };
        let fd = match create() {
            Err(Errno::EXIST) => {
                self.replace(m, dir, name)?;
                create()
            }
            other => other,
        }
        .map_err(|e| m.failed("cannot create", e))?;
        self.made.push(m.path.clone());
        let mut file = File::from(fd);
        let mut left = m.size;
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = match content.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(UnpackError::Unreadable(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the archive ends inside member {}", m.shown),
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Unreadable(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| m.failed("cannot write", e))?;
            left -= n as u64;
        }
        set_owner_mode(m, &file)?;
        for (name, value) in &m.xattrs {
            let set = rustix::fs::fsetxattr(&file, name.as_slice(), value, xattr_flags());
            xattr_warning(m, name, set);
        }
        rustix::fs::futimens(&file, &times(m)).map_err(|e| m.failed("cannot set the time of", e))
    }

    fn symlink(
        &mut self,
        m: &Member,
        dir: BorrowedFd<'_>,
        name: &[u8],
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let create = || rustix::fs::symlinkat(target, dir, name);
        match create() {
            Err(Errno::EXIST) => {
                self.replace(m, dir, name)?;
                create()
            }
            other => other,
        }
        .map_err(|e| m.failed("cannot make the symlink", e))?;
        self.made.push(m.path.clone());
        self.set_attributes_at(m, dir, name)
    }

    fn hard_link(
        &mut self,
        m: &Member,
        dir: BorrowedFd<'_>,
        name: &[u8],
        target: &[u8],
        target_shown: &str,
    ) -> Result<(), UnpackError> {
        if !self.linkable.contains(target) {
            return Err(m.refused(format!(
                "is a hard link to {target_shown}, which is not an earlier member of the archive"
            )));
        }
        let (tparent, tname) = member::split(target);
        let rel: &[u8] = if tparent.is_empty() { b"." } else { tparent };
        let tdir = open_beneath(self.tree.fd(), rel, OFlags::PATH).map_err(|e| match e {
            Errno::XDEV | Errno::LOOP => m.refused(format!(
                "is a hard link to {target_shown}, which a later member made lead out of the tree"
            )),
            e => m.failed(format!("cannot find its target {target_shown}"), e),
        })?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
        let link = || rustix::fs::linkat(&tdir, tname, dir, name, AtFlags::empty());
        match link() {
            Err(Errno::EXIST) => {
                let same = match (lstat(&tdir, tname), lstat(dir, name)) {
                    (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
                    _ => false,
                };
                if same {
                    return Ok(());
                }
                self.replace(m, dir, name)?;
                link()
            }
            other => other,
        }
        .map_err(|e| m.failed(format!("cannot link it to {target_shown}"), e))?;
        self.made.push(m.path.clone());
        Ok(())
    }

    fn node(
        &mut self,
        m: &Member,
        dir: BorrowedFd<'_>,
        name: &[u8],
        ty: FileType,
        dev: rustix::fs::Dev,
    ) -> Result<(), UnpackError> {
        let create =
            || rustix::fs::mknodat(dir, name, ty, Mode::from_raw_mode(m.mode & 0o777), dev);
        match create() {
            Err(Errno::EXIST) => {
                self.replace(m, dir, name)?;
                create()
            }
            other => other,
        }
        .map_err(|e| {
            let what = match ty {
                FileType::Fifo => "cannot make the FIFO".to_owned(),
                _ => format!(
                    "cannot make the {} device {},{}",
                    if ty == FileType::BlockDevice {
                        "block"
                    } else {
                        "character"
                    },
                    rustix::fs::major(dev),
                    rustix::fs::minor(dev)
                ),
            };
            m.failed(what, e)
        })?;
        self.made.push(m.path.clone());
        self.set_attributes_at(m, dir, name)
    }

    /// Owner, set-id bits, xattrs and time of a symlink or node, without
    /// opening it (a FIFO would block, a device would be opened) and
    /// without following it.
    fn set_attributes_at(
        &self,
        m: &Member,
        dir: BorrowedFd<'_>,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        rustix::fs::chownat(dir, name, uid(m), gid(m), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| m.failed(format!("cannot give it owner {}:{}", m.uid, m.gid), e))?;
        let is_link = matches!(m.kind, Kind::Symlink(_));
        if (!is_link && m.mode & 0o7000 != 0) || !m.xattrs.is_empty() {
            // chmod and lsetxattr take paths: this node's own, through the
            // descriptor of its parent, without following it.
            let at = proc_path(dir, name);
            if !is_link && m.mode & 0o7000 != 0 {
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| m.failed("cannot open", e))?;
                rustix::fs::chmod(proc_path_fd(&fd), Mode::from_raw_mode(m.mode))
                    .map_err(|e| m.failed("cannot set the mode of", e))?;
            }
            for (xname, value) in &m.xattrs {
                let set = rustix::fs::lsetxattr(&at, xname.as_slice(), value, xattr_flags());
                xattr_warning(m, xname, set);
            }
        }
        rustix::fs::utimensat(dir, name, &times(m), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| m.failed("cannot set the time of", e))
    }

    /// Removes what is at the member's place (not a directory with anything
    /// in it), for the member to take it.
    fn replace(&mut self, m: &Member, dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), UnpackError> {
        let st = lstat(dir, name).map_err(|e| m.failed("cannot stat", e))?;
        remove(dir, name, &st).map_err(|e| match e {
            Errno::NOTEMPTY | Errno::EXIST => {
                m.refused("would replace a directory that is not empty".to_owned())
            }
            e => m.failed("cannot replace what is there", e),
        })
    }

    /// Owner, mode, xattrs and time of every directory member, once nothing
    /// more is made in them; deepest first.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            let rel: &[u8] = if d.path.is_empty() { b"." } else { &d.path };
            let fd = match open_beneath(
                self.tree.fd(),
                rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Replaced by a later member (a symlink, a file), or moved
                // out of reach: nothing of it to finish.
                Err(_) => continue,
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| dir_failed(d, "cannot stat", e))?;
            if (st.st_dev, st.st_ino) != (d.dev, d.ino) {
                continue;
            }
            rustix::fs::fchown(&fd, Some(Uid::from_raw(d.uid)), Some(Gid::from_raw(d.gid)))
                .map_err(|e| {
                    dir_failed(d, &format!("cannot give it owner {}:{}", d.uid, d.gid), e)
                })?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(|e| dir_failed(d, "cannot set the mode of", e))?;
            for (name, value) in &d.xattrs {
                if let Err(e) = rustix::fs::fsetxattr(&fd, name.as_slice(), value, xattr_flags()) {
                    eprintln!(
                        "warning: member {}: cannot set xattr {}: {}",
                        d.shown,
                        name.escape_ascii(),
                        std::io::Error::from(e)
                    );
                }
            }
            let t = Timestamps {
                last_access: d.mtime,
                last_modification: d.mtime,
            };
            rustix::fs::futimens(&fd, &t)
                .map_err(|e| dir_failed(d, "cannot set the time of", e))?;
        }
        Ok(())
    }

    /// Removes what this archive made, newest first, after an error: the
    /// tree is left as it was, but for entries a member replaced.
    fn undo(&mut self) {
        self.parent = None;
        for path in self.made.iter().rev() {
            let (parent, name) = member::split(path);
            let rel: &[u8] = if parent.is_empty() { b"." } else { parent };
            let Ok(dir) = open_beneath(self.tree.fd(), rel, OFlags::PATH) else {
                continue;
            };
            if rustix::fs::unlinkat(&dir, name, AtFlags::empty()) == Err(Errno::ISDIR) {
                let _ = rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR);
            }
        }
        self.made.clear();
    }
}

fn open_beneath(tree: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let flags = flags | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            tree,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            // The kernel gives up on `..` when a rename raced the lookup;
            // nothing else renames in a stage's tree, so a retry settles it.
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

fn resolve_error(m: &Member, parent: &[u8], e: Errno) -> UnpackError {
    match e {
        // EXDEV: `..` or an absolute link would leave the tree; ELOOP: a
        // magic link (/proc/self/...), or a loop of links.
        Errno::XDEV | Errno::LOOP => m.refused(
            "would be unpacked through a symlink in the tree that points out of it".to_owned(),
        ),
        Errno::NOTDIR => m.refused(format!(
            "would be unpacked below {}, which is not a directory",
            String::from_utf8_lossy(parent)
        )),
        e => m.failed("cannot open its parent directory", e),
    }
}

fn dir_failed(d: &Dir, what: &str, e: Errno) -> UnpackError {
    UnpackError::Failed {
        member: d.shown.clone(),
        what: what.to_owned(),
        source: e.into(),
    }
}

fn lstat(dir: impl AsFd, name: &[u8]) -> rustix::io::Result<rustix::fs::Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

fn remove(dir: BorrowedFd<'_>, name: &[u8], st: &rustix::fs::Stat) -> rustix::io::Result<()> {
    let flags = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rustix::fs::unlinkat(dir, name, flags)
}

/// Owner, then mode when it has set-id or sticky bits (the file was made
/// with the rest; a new owner clears set-id bits).
fn set_owner_mode(m: &Member, file: &File) -> Result<(), UnpackError> {
    rustix::fs::fchown(file, uid(m), gid(m))
        .map_err(|e| m.failed(format!("cannot give it owner {}:{}", m.uid, m.gid), e))?;
    if m.mode & 0o7000 != 0 {
        rustix::fs::fchmod(file, Mode::from_raw_mode(m.mode))
            .map_err(|e| m.failed("cannot set the mode of", e))?;
    }
    Ok(())
}

fn uid(m: &Member) -> Option<Uid> {
    Some(Uid::from_raw(m.uid))
}

fn gid(m: &Member) -> Option<Gid> {
    Some(Gid::from_raw(m.gid))
}

fn times(m: &Member) -> Timestamps {
    // atime is not in the archive (the tar stage leaves it out): the same
    // as mtime, so that the tree depends only on the archive.
    Timestamps {
        last_access: m.mtime,
        last_modification: m.mtime,
    }
}

fn xattr_flags() -> rustix::fs::XattrFlags {
    rustix::fs::XattrFlags::empty()
}

/// GNU tar warns and goes on when an xattr cannot be set (a `trusted.*`
/// one in a user namespace, a `user.*` one on a symlink); so does untar.
fn xattr_warning(m: &Member, name: &[u8], set: rustix::io::Result<()>) {
    if let Err(e) = set {
        eprintln!(
            "warning: member {}: cannot set xattr {}: {}",
            m.shown,
            name.escape_ascii(),
            std::io::Error::from(e)
        );
    }
}

/// `/proc/self/fd/DIR/NAME`: the entry NAME of the directory open as DIR,
/// for calls that take only paths; the last component is not followed by
/// the `l*` calls.
fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

/// `/proc/self/fd/FD`: what FD (an `O_PATH` descriptor) is open on.
fn proc_path_fd(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}
