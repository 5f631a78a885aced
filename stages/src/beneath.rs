//! Paths that cannot leave their root.
//!
//! A tree being built is full of symlinks written by packages, and some point
//! out of it (`/etc/mtab -> /proc/self/mounts`). Inside the sandbox an
//! absolute link resolves against the build root, not the tree, so following
//! one would touch the wrong system. Every path a stage names is therefore
//! split in two:
//!
//! ```text
//!   /usr/lib/os-release  ->  parent "usr/lib"  resolved with openat2(BENEATH)
//!                            name   "os-release" used relative to that fd
//! ```
//!
//! The parent is resolved by the kernel beneath the root: `..` may not climb
//! above it and absolute symlinks are refused (EXDEV); relative symlinks that
//! stay inside are followed. A stage that runs with the tree as its own `/`
//! (customize) opens it with [`Root::system`] instead, whose parents resolve
//! as that system sees them (`RESOLVE_IN_ROOT`: absolute links and `..`
//! land inside too). The final component is never resolved here, so each
//! stage decides what a symlink there means (usually: refuse it).
//!
//! [`Root::write_file`] is the one way a stage writes a file into a tree.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::{Args, Error};

/// A directory that paths are resolved beneath: the tree, or an input.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    /// For messages: "the tree", "input NAME".
    label: String,
    /// How a path beneath this root is shown: "/", "tree:///", "input://NAME/".
    prefix: String,
    /// BENEATH (absolute links refused) or IN_ROOT (resolved inside).
    resolve: ResolveFlags,
}

/// A path beneath a root, opened as far as its parent directory.
#[derive(Debug)]
pub struct Entry {
    dir: OwnedFd,
    /// The final component, or "." when the path names the directory itself.
    name: String,
    shown: String,
}

impl Root {
    /// Opens `path` as a root; `prefix` is how its paths are shown in errors.
    pub fn open(path: &Path, label: &str, prefix: &str) -> Result<Self, Error> {
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            what: "cannot open",
            path: path.display().to_string(),
            source: e.into(),
        })?;
        Ok(Self {
            fd,
            path: path.to_owned(),
            label: label.to_owned(),
            prefix: prefix.to_owned(),
            resolve: ResolveFlags::BENEATH,
        })
    }

    /// `path` as the root of the system in it, for a stage whose `/` it is:
    /// parents resolve the way that system resolves them, absolute links
    /// and `..` inside it (`/var/run -> /run` is followed, and stays in).
    pub fn system(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            resolve: ResolveFlags::IN_ROOT,
            ..Self::open(path, "the system", "/")?
        })
    }

    /// The stage's tree, whose paths are shown as in the options: `/etc/x`.
    pub fn tree(args: &Args) -> Result<Self, Error> {
        Self::open(&args.tree, "the tree", "/")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root's own descriptor (`O_PATH`), for resolving beneath it.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolves the parent of `path` (relative to the root even when it
    /// starts with `/`) and keeps its final component.
    pub fn entry(&self, path: &str) -> Result<Entry, Error> {
        let (parent, name) = split(path);
        let shown = self.show(&join(&parent, &name));
        let dir = open_dir_at(self.fd.as_fd(), &parent, self.resolve).map_err(|e| match e {
            Errno::NOENT => Error::NoParent {
                parent: self.show(&parent),
                path: shown.clone(),
            },
            Errno::NOTDIR => Error::NotDirectory {
                path: self.show(&parent),
            },
            e => self.resolve_error(e, &shown, "cannot open the parent directory of"),
        })?;
        Ok(Entry { dir, name, shown })
    }

    /// Opens `path` itself as a directory beneath the root, following
    /// symlinks that stay inside.
    pub fn open_dir(&self, path: &str) -> Result<OwnedFd, Error> {
        let (parent, name) = split(path);
        let whole = join(&parent, &name);
        let shown = self.show(&whole);
        open_dir_at(self.fd.as_fd(), &whole, self.resolve).map_err(|e| match e {
            Errno::NOENT => Error::NotFound { path: shown },
            Errno::NOTDIR => Error::NotDirectory { path: shown },
            e => self.resolve_error(e, &shown, "cannot open directory"),
        })
    }

    /// What `path` is once every symlink on the way, the last one too, is
    /// followed the way the system in this root would see it: absolute
    /// links and `..` stay inside the root (`RESOLVE_IN_ROOT`), so
    /// `/sbin/init -> /lib/systemd/systemd` resolves within the tree even on
    /// merged-usr. `None` when it does not exist or a link dangles.
    pub fn stat_in_root(&self, path: &str) -> Result<Option<Stat>, Error> {
        let (parent, name) = split(path);
        let shown = self.show(&join(&parent, &name));
        let opened = rustix::fs::openat2(
            self.fd.as_fd(),
            join(&parent, &name).as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            // In the root nothing escapes; ELOOP is a loop of links here.
            Err(e) => {
                return Err(Error::Io {
                    what: "cannot resolve",
                    path: shown,
                    source: e.into(),
                });
            }
        };
        rustix::fs::fstat(&fd).map(Some).map_err(|e| Error::Io {
            what: "cannot stat",
            path: shown,
            source: e.into(),
        })
    }

    fn resolve_error(&self, e: Errno, shown: &str, what: &'static str) -> Error {
        match e {
            // EXDEV: `..` or an absolute link would leave the root; ELOOP: a
            // magic link (/proc/self/...), which could point anywhere.
            Errno::XDEV | Errno::LOOP => Error::Escapes {
                path: shown.to_owned(),
                root: self.label.clone(),
            },
            e => Error::Io {
                what,
                path: shown.to_owned(),
                source: e.into(),
            },
        }
    }

    fn show(&self, rel: &str) -> String {
        if rel == "." {
            self.prefix.clone()
        } else {
            format!("{}{rel}", self.prefix)
        }
    }
}

/// An archive made at the top of a tree under a hidden name
/// (`/.NAME.strata-tmp`) and renamed to `/NAME` with mode 0644 once
/// complete, so a stage's output archive is whole or absent.
#[derive(Debug)]
pub struct StagedFile {
    entry: Entry,
    name: String,
    /// The file being written (read-write, so it can be read back).
    pub file: std::fs::File,
}

impl StagedFile {
    fn io(&self, what: &'static str) -> impl FnOnce(Errno) -> Error + use<> {
        let path = format!("/{}", self.name);
        move |e: Errno| Error::Io {
            what,
            path,
            source: e.into(),
        }
    }

    /// Gives the finished file its name and mode 0644; on failure it is removed.
    pub fn publish(self) -> Result<(), Error> {
        let done = rustix::fs::fchmod(&self.file, Mode::from_raw_mode(0o644))
            .map_err(self.io("cannot set the mode of"))
            .and_then(|()| {
                rustix::fs::renameat(
                    self.entry.dir(),
                    self.entry.name(),
                    self.entry.dir(),
                    self.name.as_str(),
                )
                .map_err(self.io("cannot move the finished archive to"))
            });
        if done.is_err() {
            self.discard();
        }
        done
    }

    /// Removes the unfinished file (after a failure, whose error matters more).
    pub fn discard(self) {
        let _ = rustix::fs::unlinkat(self.entry.dir(), self.entry.name(), AtFlags::empty());
    }
}

impl Root {
    /// The regular file at `path`, opened for reading without following a
    /// link at its end (nor, through [`Root::entry`], on the way); `None`
    /// when it, or a folder on its way, is missing or it is no regular file.
    pub fn open_regular(&self, path: &str) -> Result<Option<std::fs::File>, Error> {
        let entry = match self.entry(path) {
            Ok(e) => e,
            Err(Error::NoParent { .. } | Error::NotDirectory { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match entry.lstat()? {
            Some(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => {}
            _ => return Ok(None),
        }
        let fd = rustix::fs::openat(
            entry.dir(),
            entry.name(),
            // NONBLOCK: a FIFO swapped in since the check fails, not hangs.
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            what: "cannot read",
            path: entry.shown().to_owned(),
            source: e.into(),
        })?;
        let file = std::fs::File::from(fd);
        // The kind checked above may have changed since: check what was opened.
        match file.metadata() {
            Ok(m) if m.file_type().is_file() => Ok(Some(file)),
            _ => Ok(None),
        }
    }

    /// A [`StagedFile`] that becomes `/name` at the top of this tree.
    pub fn stage_file(&self, name: &str) -> Result<StagedFile, Error> {
        let entry = self.entry(&format!("/.{name}.strata-tmp"))?;
        let fd = rustix::fs::openat(
            entry.dir(),
            entry.name(),
            OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| Error::Io {
            what: "cannot create the archive",
            path: format!("/{name}"),
            source: e.into(),
        })?;
        Ok(StagedFile {
            entry,
            name: name.to_owned(),
            file: std::fs::File::from(fd),
        })
    }

    /// Replaces the contents of the regular file at `path` (creating it)
    /// with what `from` reads, then sets `mode` exactly. Writing in place
    /// keeps an existing file's owner and hard links; anything there that
    /// is not a regular file is refused (a device node would be written to,
    /// a symlink may point out, a FIFO would hang).
    pub fn write_file(&self, path: &str, from: &mut dyn Read, mode: u32) -> Result<(), Error> {
        let entry = self.entry(path)?;
        let io = |what: &'static str| {
            let path = entry.shown().to_owned();
            move |e: Errno| Error::Io {
                what,
                path,
                source: e.into(),
            }
        };
        if let Some(st) = entry.lstat()? {
            let ty = rustix::fs::FileType::from_raw_mode(st.st_mode);
            if ty != rustix::fs::FileType::RegularFile {
                return Err(Error::NotRegular {
                    path: entry.shown().to_owned(),
                    what: describe(ty),
                });
            }
        }
        let fd = rustix::fs::openat(
            entry.dir(),
            entry.name(),
            // NOFOLLOW and NONBLOCK: if a symlink or FIFO appeared since the
            // check, fail rather than follow or hang.
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::TRUNC
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o777),
        )
        .map_err(io("cannot open for writing"))?;
        let mut out = std::fs::File::from(fd);
        std::io::copy(from, &mut out).map_err(|source| Error::Io {
            what: "cannot write",
            path: entry.shown().into(),
            source,
        })?;
        // After the write, which may clear set-id bits, and for an existing
        // file, whose old mode open() leaves alone.
        rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))
            .map_err(io("cannot set the mode of"))?;
        Ok(())
    }
}

fn describe(ty: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match ty {
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink (which is not followed)",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "not a regular file",
    }
}

impl Entry {
    /// The resolved parent directory (an `O_PATH` descriptor).
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The final component; "." when the path names its root or ends in `..`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path as errors should show it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The entry's own status, not following a final symlink; `None` if it
    /// does not exist.
    pub fn lstat(&self) -> Result<Option<Stat>, Error> {
        match rustix::fs::statat(&self.dir, self.name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::Io {
                what: "cannot stat",
                path: self.shown.clone(),
                source: e.into(),
            }),
        }
    }

    /// A path naming this entry for a program that takes paths (cp): the
    /// real, symlink-free path of the resolved parent, plus the final name.
    pub fn real_path(&self) -> Result<PathBuf, Error> {
        let link = format!("/proc/self/fd/{}", self.dir.as_raw_fd());
        let dir = std::fs::read_link(&link).map_err(|source| Error::Io {
            what: "cannot find the real path (through /proc) of",
            path: self.shown.clone(),
            source,
        })?;
        Ok(if self.name == "." {
            dir
        } else {
            dir.join(&self.name)
        })
    }
}

/// Resolves `input://NAME/rel/path` beneath the input's folder (an empty
/// path is the whole input) and `tree:///abs/path` beneath the tree.
pub fn locate(args: &Args, url: &str) -> Result<Entry, Error> {
    if let Some(path) = url.strip_prefix("tree://") {
        if !path.starts_with('/') {
            return Err(Error::BadUrl { url: url.into() });
        }
        let root = Root::open(&args.tree, "the tree", "tree:///")?;
        return root.entry(path);
    }
    let Some(rest) = url.strip_prefix("input://") else {
        return Err(Error::BadUrl { url: url.into() });
    };
    let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
    let input = args.input(name).ok_or_else(|| Error::UnknownInput {
        url: url.into(),
        name: name.into(),
        known: if args.inputs.is_empty() {
            "none".into()
        } else {
            args.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
        },
    })?;
    let root = Root::open(
        &input.path,
        &format!("input {name}"),
        &format!("input://{name}/"),
    )?;
    root.entry(path)
}

/// `rel`'s parent (for openat2) and final component. Empty and `.`
/// components vanish; a path ending in `..` (or naming the root) is its own
/// parent with name ".", so that `..` is judged by the kernel like the rest.
fn split(rel: &str) -> (String, String) {
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match parts.split_last() {
        None => (".".into(), ".".into()),
        Some((&"..", _)) => (parts.join("/"), ".".into()),
        Some((last, [])) => (".".into(), (*last).into()),
        Some((last, parent)) => (parent.join("/"), (*last).into()),
    }
}

fn join(parent: &str, name: &str) -> String {
    match (parent, name) {
        (".", name) => name.to_owned(),
        (parent, ".") => parent.to_owned(),
        (parent, name) => format!("{parent}/{name}"),
    }
}

fn open_dir_at(
    dir: BorrowedFd<'_>,
    rel: &str,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        let opened = rustix::fs::openat2(
            dir,
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve | ResolveFlags::NO_MAGICLINKS,
        );
        match opened {
            // The kernel gives up on `..` when a rename raced the lookup;
            // nothing else renames in a stage's tree, so a retry settles it.
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use rustix::fs::FileType;

    use super::*;

    fn fixture() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tree");
        std::fs::create_dir_all(t.join("etc/sub")).unwrap();
        std::fs::write(t.join("etc/hostname"), "box\n").unwrap();
        symlink("etc", t.join("rel")).unwrap();
        symlink("../../etc", t.join("etc/sub/up")).unwrap();
        symlink("/etc", t.join("abs")).unwrap();
        symlink("../..", t.join("out")).unwrap();
        let root = Root::open(&t, "the tree", "/").unwrap();
        (dir, root)
    }

    fn real(root: &Root, rel: &str) -> PathBuf {
        root.path().canonicalize().unwrap().join(rel)
    }

    #[test]
    fn split_keeps_the_final_component_aside() {
        assert_eq!(split("/etc/hostname"), ("etc".into(), "hostname".into()));
        assert_eq!(split("/hostname"), (".".into(), "hostname".into()));
        assert_eq!(split("//etc/./x/"), ("etc".into(), "x".into()));
        assert_eq!(split("/"), (".".into(), ".".into()));
        assert_eq!(split(""), (".".into(), ".".into()));
        assert_eq!(split("/etc/.."), ("etc/..".into(), ".".into()));
    }

    #[test]
    fn stat_in_root_follows_links_as_the_system_would() {
        let (_d, root) = fixture();
        let is_file = |p: &str| {
            root.stat_in_root(p)
                .unwrap()
                .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
        };
        // Absolute links and `..` resolve against the root, never the host.
        assert_eq!(is_file("/abs/hostname"), Some(true));
        assert_eq!(is_file("/out/etc/hostname"), Some(true));
        assert_eq!(is_file("/rel/sub/up/hostname"), Some(true));
        assert_eq!(is_file("/abs"), Some(false));
        assert_eq!(is_file("/abs/missing"), None);
        assert_eq!(is_file("/etc/hostname/below"), None);
        symlink("/nowhere", root.path().join("dangling")).unwrap();
        assert_eq!(is_file("/dangling"), None);
        symlink("loop", root.path().join("loop")).unwrap();
        let e = root.stat_in_root("/loop").unwrap_err().to_string();
        assert!(e.starts_with("cannot resolve /loop: "), "{e}");
    }

    #[test]
    fn dot_dot_above_the_root_is_refused() {
        let (_d, root) = fixture();
        for path in ["/../x", "/etc/../../x", "/.."] {
            let err = root.entry(path).unwrap_err();
            assert!(matches!(err, Error::Escapes { .. }), "{path}: {err}");
        }
        let err = root.entry("/../x").unwrap_err().to_string();
        assert_eq!(
            err,
            "path /../x escapes the tree through a symlink or \"..\""
        );
    }

    #[test]
    fn a_system_root_resolves_links_as_its_system_does_and_never_out() {
        let (_d, root) = fixture();
        let system = Root::system(root.path()).unwrap();
        // /abs -> /etc and /out -> ../.. both land inside the tree.
        system
            .write_file("/abs/written", &mut b"in".as_slice(), 0o600)
            .unwrap();
        assert_eq!(
            std::fs::read(root.path().join("etc/written")).unwrap(),
            b"in"
        );
        system
            .write_file("/out/etc/again", &mut b"in".as_slice(), 0o644)
            .unwrap();
        assert!(root.path().join("etc/again").is_file());
        assert!(!root.path().parent().unwrap().join("etc/again").exists());
        // The final component is never followed, whichever root.
        let err = system
            .write_file("/abs", &mut b"x".as_slice(), 0o644)
            .unwrap_err();
        assert!(matches!(err, Error::NotRegular { .. }), "{err}");
    }

    #[test]
    fn symlinks_pointing_out_are_refused() {
        let (_d, root) = fixture();
        for path in ["/abs/passwd", "/out/x", "/out/tree/etc/x"] {
            let err = root.entry(path).unwrap_err();
            assert!(matches!(err, Error::Escapes { .. }), "{path}: {err}");
        }
        assert!(matches!(root.open_dir("/abs"), Err(Error::Escapes { .. })));
    }

    #[test]
    fn relative_symlinks_inside_are_followed() {
        let (_d, root) = fixture();
        let e = root.entry("/rel/hostname").unwrap();
        assert_eq!(e.name(), "hostname");
        assert_eq!(e.shown(), "/rel/hostname");
        assert_eq!(e.real_path().unwrap(), real(&root, "etc/hostname"));
        assert!(e.lstat().unwrap().is_some());

        let e = root.entry("/etc/sub/up/hostname").unwrap();
        assert_eq!(e.real_path().unwrap(), real(&root, "etc/hostname"));
        assert!(root.open_dir("/rel/sub").is_ok());
    }

    #[test]
    fn the_root_and_dot_dot_inside_name_directories() {
        let (_d, root) = fixture();
        let e = root.entry("/").unwrap();
        assert_eq!(e.name(), ".");
        assert_eq!(e.real_path().unwrap(), real(&root, ""));
        let e = root.entry("/etc/sub/..").unwrap();
        assert_eq!(e.real_path().unwrap(), real(&root, "etc"));
    }

    #[test]
    fn missing_and_non_directory_parents_are_named() {
        let (_d, root) = fixture();
        let err = root.entry("/nope/x").unwrap_err().to_string();
        assert_eq!(err, "the parent directory /nope of /nope/x does not exist");
        let err = root.entry("/etc/hostname/x").unwrap_err().to_string();
        assert_eq!(
            err,
            "/etc/hostname is not a directory (or one of its components is not)"
        );
        assert!(
            root.entry("/etc/missing")
                .unwrap()
                .lstat()
                .unwrap()
                .is_none()
        );
    }
}
