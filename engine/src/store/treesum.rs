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
//! directory descriptors without following links (`O_NOFOLLOW`), opens
//! only what its directory says is a directory or a regular file
//! (`O_NONBLOCK`, and fstat then says what was opened and gives what the
//! line records: a FIFO never blocks the walk, a device is never opened
//! on purpose), stats the rest without opening it, and reads their xattrs
//! through `/proc/self/fd/DIR/NAME`, which follows nothing after DIR. The
//! tree is not being written while it is walked: a stage's sandbox, its
//! processes with it, is gone before its layer is committed, and nothing
//! writes a stored layer; an entry that changes all the same (a swapped
//! type, a shorter file) fails the walk rather than being recorded.
//!
//! File contents are read by a hasher thread beside the walk, in batches
//! (the walk's own syscalls are the other half of the time); on a minbase
//! tree a walk costs ≈ 0.19 s of CPU, about as much as GNU tar takes to
//! read the same data into a pipe.

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

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

/// Which xattrs a walk removes (by name) rather than records.
pub type Strip<'a> = &'a dyn Fn(&[u8]) -> bool;

/// An xattr's name and value.
type Xattr = (Vec<u8>, Vec<u8>);

/// The treesum of `manifest`.
pub fn digest(manifest: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new_derive_key(CONTEXT);
    hasher.update(manifest);
    format!("{PREFIX}{}", hasher.finalize().to_hex())
}

/// How many threads read and hash file contents beside the one that walks
/// (the walk itself is syscalls; hashing 180 MB is most of the rest).
fn hashers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(2, 4)) - 1
}

/// Walks the tree at `root` (a directory the engine chose; nothing below
/// it is trusted) into its manifest and treesum. `strip`, when given, says
/// which xattrs to remove on the way (they are then not in the manifest):
/// a commit drops overlayfs's bookkeeping in the same walk that sums the
/// layer.
pub fn sum(root: &Path, strip: Option<Strip<'_>>) -> Result<Summed, WalkError> {
    // File contents are read and hashed by `hashers()` threads (and by the
    // walk itself when they are behind); each file's line waits for its
    // digest in `lines`, and the manifest is written in walk order at the end.
    let (jobs_in, jobs_out) = mpsc::sync_channel::<Vec<Job>>(QUEUED);
    let jobs_out = Arc::new(Mutex::new(jobs_out));
    let (done_in, done_out) = mpsc::channel::<(usize, Hashed)>();
    let mut walk = Walk {
        root,
        lines: Vec::new(),
        digests: Vec::new(),
        disk_usage: 0,
        counted: HashSet::new(),
        contents: HashMap::new(),
        strip,
        buf: vec![0; BUF],
        path: b"/".to_vec(),
        jobs: Some(jobs_in),
        batch: Vec::new(),
        batched: 0,
    };
    let walked = std::thread::scope(|scope| {
        for _ in 0..hashers() {
            let jobs = Arc::clone(&jobs_out);
            let done = done_in.clone();
            scope.spawn(move || {
                let mut buf = vec![0; BUF];
                loop {
                    // The lock is held while waiting only, never while hashing.
                    let batch = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(batch) = batch else { return };
                    for job in batch {
                        let hashed = job.hash(&mut buf);
                        if done.send((job.slot, hashed)).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        drop(done_in);
        let walked = walk.run();
        walk.flush();
        // No more jobs: the hashers finish what they hold and end.
        walk.jobs = None;
        walked
    });
    for (slot, hashed) in done_out.try_iter() {
        walk.digests[slot] = Some(hashed);
    }
    walked?;
    let mut manifest = Vec::with_capacity(walk.lines.len() * 128);
    for line in &walk.lines {
        match line {
            Line::Whole(text) => manifest.extend_from_slice(text.as_bytes()),
            Line::File { head, slot, tail } => {
                let (size, hash) = match walk.digests[*slot].take() {
                    Some(Ok(known)) => known,
                    Some(Err(source)) => {
                        // The line starts with the path.
                        let path = head.split(' ').next().unwrap_or_default().to_owned();
                        return Err(WalkError {
                            root: root.to_path_buf(),
                            path,
                            source,
                        });
                    }
                    None => unreachable!("every file was hashed"),
                };
                walk.digests[*slot] = Some(Ok((size, hash)));
                manifest.extend_from_slice(head.as_bytes());
                let _ = write!(Bytes(&mut manifest), "{size}:{}", hash.to_hex());
                manifest.extend_from_slice(tail.as_bytes());
            }
        }
    }
    let treesum = digest(&manifest);
    Ok(Summed {
        manifest,
        treesum,
        disk_usage: walk.disk_usage,
    })
}

/// `write!` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// How much of a file one read takes: a buffer that stays in the cache
/// between the kernel's copy into it and the hash reading it (256 KiB cost
/// a third more time than 64 KiB on a minbase tree).
const BUF: usize = 64 << 10;

/// Files are handed to the hashers in batches of at most this many files
/// or bytes (a handover costs a wake-up: one per small file would cost
/// more than hashing it)…
const BATCH_FILES: usize = 32;
const BATCH_BYTES: u64 = 1 << 20;

/// …and at most this many batches wait for a hasher, so that a walk holds
/// a bounded number of open files (≈ 200); when they are all taken, the
/// walk hashes the batch itself.
const QUEUED: usize = 4;

/// A file's size and content digest, or why it could not be read.
type Hashed = Result<(u64, blake3::Hash), io::Error>;

/// A file to hash: opened by the walk, read by whoever takes it.
struct Job {
    slot: usize,
    fd: OwnedFd,
    size: u64,
}

impl Job {
    /// The size it had when fstat'ed and its content's blake3. The tree is
    /// not being written (a stage's sandbox is gone when its layer is
    /// committed; nothing writes a stored layer), so the read stops at
    /// that size; a file that is shorter was cut while it was read.
    fn hash(&self, buf: &mut [u8]) -> Hashed {
        let mut hasher = blake3::Hasher::new();
        let mut left = self.size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            match rustix::io::read(&self.fd, &mut buf[..want]) {
                Ok(0) => return Err(changed()),
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    left -= n as u64;
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok((self.size, hasher.finalize()))
    }
}

/// One manifest line: whole, or a file's, which waits for its digest.
enum Line {
    Whole(String),
    File {
        head: String,
        slot: usize,
        tail: String,
    },
}

/// One directory being walked: its stream (whose descriptor the entries
/// are opened beneath), the names still to visit (sorted, last first, with
/// the type the directory gives them), and how long the path was there.
struct Frame {
    dir: Dir,
    names: Vec<(CString, FileType)>,
    path_len: usize,
}

struct Walk<'a> {
    root: &'a Path,
    lines: Vec<Line>,
    /// What each file's slot came to (filled as hashers finish).
    digests: Vec<Option<Hashed>>,
    disk_usage: u64,
    counted: HashSet<(u64, u64)>,
    /// The slot of a file with more than one name, by inode: its content
    /// is read once.
    contents: HashMap<(u64, u64), usize>,
    strip: Option<Strip<'a>>,
    buf: Vec<u8>,
    /// The entry being visited, as the manifest writes it (unescaped).
    path: Vec<u8>,
    jobs: Option<mpsc::SyncSender<Vec<Job>>>,
    /// Files opened and not yet handed over, and their bytes.
    batch: Vec<Job>,
    batched: u64,
}

/// What the walk opened of an entry: directories and regular files are
/// opened (their xattrs are read through the descriptor), the rest is not.
enum Opened<'d> {
    Fd(OwnedFd),
    Not { dir: BorrowedFd<'d>, name: CString },
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
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
        if let Some(frame) = self.entry(&st, Opened::Fd(fd))? {
            stack.push(frame);
        }
        while let Some(frame) = stack.last_mut() {
            let Some((name, kind)) = frame.names.pop() else {
                let frame = stack.pop().expect("a frame");
                self.path.truncate(frame.path_len);
                continue;
            };
            self.path.truncate(frame.path_len);
            if self.path.last() != Some(&b'/') {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(name.as_bytes());
            let dir = frame.dir.fd().map_err(|e| self.fail(e.into()))?;
            // What the directory says an entry is decides whether it is
            // opened: only a directory or a regular file ever is (a device
            // never), and fstat then says what was opened.
            let (st, opened) = match kind {
                FileType::Directory | FileType::RegularFile => {
                    let fd = self.open(dir, &name, kind)?;
                    (
                        rustix::fs::fstat(&fd).map_err(|e| self.fail(e.into()))?,
                        Opened::Fd(fd),
                    )
                }
                _ => {
                    let st = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.fail(e.into()))?;
                    match FileType::from_raw_mode(st.st_mode) {
                        // A filesystem that gives no types: as above.
                        k @ (FileType::Directory | FileType::RegularFile) => {
                            let fd = self.open(dir, &name, k)?;
                            let now = rustix::fs::fstat(&fd).map_err(|e| self.fail(e.into()))?;
                            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                                return Err(self.fail(changed()));
                            }
                            (now, Opened::Fd(fd))
                        }
                        _ => (st, Opened::Not { dir, name }),
                    }
                }
            };
            if let FileType::Directory | FileType::RegularFile = kind
                && FileType::from_raw_mode(st.st_mode) != kind
            {
                return Err(self.fail(changed()));
            }
            if let Some(frame) = self.entry(&st, opened)? {
                stack.push(frame);
            }
        }
        Ok(())
    }

    /// Opens directory or regular file `name` in `dir`, without following
    /// a link, never blocking, with O_NOATIME where we may: a walk must not
    /// write the tree's inodes.
    fn open(
        &self,
        dir: BorrowedFd<'_>,
        name: &CString,
        kind: FileType,
    ) -> Result<OwnedFd, WalkError> {
        let flags = match kind {
            FileType::Directory => DIR_FLAGS,
            _ => FILE_FLAGS,
        };
        match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
            other => other,
        }
        .map_err(|e| self.fail(e.into()))
    }

    /// Writes the entry's line (a file's waits for its digest); returns a
    /// directory's frame, to walk what it holds next.
    fn entry(&mut self, st: &Stat, opened: Opened<'_>) -> Result<Option<Frame>, WalkError> {
        let kind = FileType::from_raw_mode(st.st_mode);
        let key = (st.st_dev, st.st_ino);
        if kind == FileType::Directory || st.st_nlink <= 1 || self.counted.insert(key) {
            self.disk_usage += st.st_blocks as u64 * 512;
        }
        let xattrs = self.xattrs(&opened)?;
        let mut head = escape_path(&self.path);
        let letter = match kind {
            FileType::Directory => 'd',
            FileType::RegularFile => 'f',
            FileType::Symlink => 'l',
            FileType::CharacterDevice => 'c',
            FileType::BlockDevice => 'b',
            FileType::Fifo => 'p',
            FileType::Socket => 's',
            FileType::Unknown => '?',
        };
        let _ = write!(
            head,
            " {letter} {:04o} {}:{} ",
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid
        );
        let mut tail = String::from(" ");
        if xattrs.is_empty() {
            tail.push('-');
        }
        for (i, (name, value)) in xattrs.iter().enumerate() {
            if i > 0 {
                tail.push(',');
            }
            tail.push_str(&escape(name));
            tail.push('=');
            tail.push_str(&escape(value));
        }
        tail.push('\n');
        let what = match (kind, opened) {
            (FileType::RegularFile, Opened::Fd(fd)) => {
                let slot = match self.contents.get(&key) {
                    Some(slot) => *slot,
                    None => {
                        let slot = self.hash(fd, st.st_size as u64);
                        if st.st_nlink > 1 {
                            self.contents.insert(key, slot);
                        }
                        slot
                    }
                };
                self.lines.push(Line::File { head, slot, tail });
                return Ok(None);
            }
            (FileType::Directory, Opened::Fd(fd)) => {
                head.push('-');
                head.push_str(&tail);
                self.lines.push(Line::Whole(head));
                let mut dir = Dir::new(fd).map_err(|e| self.fail(e.into()))?;
                let names = self.names(&mut dir)?;
                return Ok(Some(Frame {
                    dir,
                    names,
                    path_len: self.path.len(),
                }));
            }
            (FileType::Symlink, Opened::Not { dir, name }) => {
                let target = rustix::fs::readlinkat(dir, &name, Vec::new())
                    .map_err(|e| self.fail(e.into()))?;
                escape(target.as_bytes())
            }
            (FileType::CharacterDevice | FileType::BlockDevice, _) => format!(
                "{},{}",
                rustix::fs::major(st.st_rdev),
                rustix::fs::minor(st.st_rdev)
            ),
            _ => "-".to_owned(),
        };
        head.push_str(&what);
        head.push_str(&tail);
        self.lines.push(Line::Whole(head));
        Ok(None)
    }

    /// Queues the file for the hashers; returns the slot its digest lands in.
    fn hash(&mut self, fd: OwnedFd, size: u64) -> usize {
        let slot = self.digests.len();
        self.digests.push(None);
        self.batch.push(Job { slot, fd, size });
        self.batched += size;
        if self.batch.len() >= BATCH_FILES || self.batched >= BATCH_BYTES {
            self.flush();
        }
        slot
    }

    /// Hands the batch to a hasher, or hashes it here when they are all
    /// busy (or there are none).
    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        let batch = match &self.jobs {
            _ if batch.is_empty() => return,
            Some(jobs) => match jobs.try_send(batch) {
                Ok(()) => return,
                Err(mpsc::TrySendError::Full(b) | mpsc::TrySendError::Disconnected(b)) => b,
            },
            None => batch,
        };
        for job in batch {
            self.digests[job.slot] = Some(job.hash(&mut self.buf));
        }
    }

    /// The names in a directory with their types, sorted bytewise, last
    /// first (popped in order).
    fn names(&self, dir: &mut Dir) -> Result<Vec<(CString, FileType)>, WalkError> {
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| self.fail(e.into()))?;
            let name = entry.file_name();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push((name.to_owned(), entry.file_type()));
            }
        }
        names.sort_unstable_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()));
        Ok(names)
    }

    /// The entry's xattrs, sorted by name, with those `strip` names removed
    /// from the entry.
    fn xattrs(&self, opened: &Opened<'_>) -> Result<Vec<Xattr>, WalkError> {
        let proc_path;
        let at = match opened {
            Opened::Fd(fd) => XattrsOf::Fd(fd.as_fd()),
            Opened::Not { dir, name } => {
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
pub(crate) enum XattrsOf<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a CString),
}

impl XattrsOf<'_> {
    pub(crate) fn list(&self) -> rustix::io::Result<Vec<Vec<u8>>> {
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

    pub(crate) fn get(&self, name: &[u8]) -> rustix::io::Result<Vec<u8>> {
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
        let paths: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
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
        assert!(text.contains("/etc/motd f 0644 "), "{text}");
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
    fn every_file_gets_its_own_digest_however_the_hashing_is_shared_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // More files and bytes than a batch holds, some big, some linked.
        for i in 0..300u32 {
            let sub = d.join(format!("d{}", i % 7));
            std::fs::create_dir_all(&sub).unwrap();
            let size = (i as usize * 7919) % (300 << 10) + if i == 5 { 3 << 20 } else { 0 };
            let data: Vec<u8> = (0..size).map(|b| (b as u32 ^ i) as u8).collect();
            std::fs::write(sub.join(format!("f{i}")), &data).unwrap();
            if i % 50 == 0 {
                std::fs::hard_link(sub.join(format!("f{i}")), d.join(format!("link{i}"))).unwrap();
            }
        }
        let text = String::from_utf8(sum(d, None).unwrap().manifest).unwrap();
        let mut files = 0;
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f[1] != "f" {
                continue;
            }
            files += 1;
            let data = std::fs::read(d.join(&f[0][1..])).unwrap();
            let want = format!("{}:{}", data.len(), blake3::hash(&data).to_hex());
            assert_eq!(f[4], want, "{}", f[0]);
        }
        assert_eq!(files, 306);
    }

    #[test]
    fn escaping_keeps_one_entry_a_line() {
        assert_eq!(
            escape(b"a b\n\\,=\xff~"),
            "a\\x20b\\x0a\\x5c\\x2c\\x3d\\xff~"
        );
    }
}
