//! Where a sandbox's mount points are in a tree that is its root.
//!
//! bwrap makes each mount point (`/proc`, `/etc/resolv.conf`, `/run`, …)
//! by following its path in the new root before it pivots into it: as the
//! host's root when strata runs as root, with its own setup directory as
//! `/` and the host's root at `/oldroot`. A symlink in the tree at a mount
//! point (`etc/resolv.conf -> /oldroot/home/u/x`, or a relative one
//! climbing as far) would make it create a file, make directories or mount
//! over a path outside the tree. So before bwrap starts, each mount point
//! in the tree is resolved here as the tree's own system sees it (absolute
//! links and `..` stay in the tree, as with `RESOLVE_IN_ROOT`), walking it
//! one component at a time beneath a descriptor of the root without the
//! kernel following any link, and bwrap is given the place found: a path
//! with no symlink left in it to follow.
//!
//! ```text
//!   /proc, a directory                                  → /proc
//!   /etc/resolv.conf -> ../run/systemd/resolve/stub     → /run/systemd/resolve/stub,
//!                                                         in the sandbox's own fresh /run
//!   /etc/resolv.conf -> /../../tmp/x                    → /tmp/x, in its fresh /tmp
//!   /etc/resolv.conf -> ../../../../oldroot/home/u/x    → refused: /oldroot/home/u is not
//!                                                         in the tree
//!   /run/strata/tree (below the mount point /run)       → below /run's place
//! ```
//!
//! A mount point below an earlier one lies in that mount (a fresh tmpfs,
//! or a folder strata made), and is placed below the earlier one's place;
//! so is a link that leads into one. A place may end in one entry that does
//! not exist, which bwrap makes, in the tree, as it always did for a missing
//! mount point; a link leading further into nothing is refused, naming the
//! mount point: strata makes no directories in a tree for a link.
//!
//! The tree is no one else's while its sandbox is set up (a pipeline's
//! stages run one after another; stored trees are read-only), so the place
//! found is the place bwrap uses.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// How many symlinks a mount point's path may go through (the kernel's
/// limit).
const MAX_LINKS: usize = 40;

/// Where each mount point is in the root's tree, when not where it is
/// named.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Places(BTreeMap<String, OsString>);

/// A mount point that cannot be placed in the tree.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("the tree's {path} cannot be a mount point of the sandbox: {why}")]
    Refused { path: String, why: String },
    #[error("cannot resolve the tree's {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl Places {
    /// Every mount point where it is named: the root is no tree (a host
    /// root is bwrap's own tmpfs).
    pub fn as_named() -> Self {
        Self::default()
    }

    /// Where `dest` is mounted.
    pub fn of(&self, dest: &str) -> OsString {
        self.0
            .get(dest)
            .cloned()
            .unwrap_or_else(|| OsString::from(dest))
    }

    /// Places `dests` (absolute, in the order bwrap mounts them) in the
    /// tree at `root`.
    pub fn resolve(root: &Path, dests: &[String]) -> Result<Self, PlaceError> {
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| PlaceError::Io {
            path: "/".into(),
            source: std::io::Error::other(format!("{}: {e}", root.display())),
        })?;
        let mut places = Places::default();
        // (named, placed), of the mount points so far.
        let mut mounted: Vec<(String, Vec<u8>)> = Vec::new();
        for dest in dests {
            let below = mounted
                .iter()
                .filter(|(named, _)| below(dest, named))
                .max_by_key(|(named, _)| named.len());
            let placed = match below {
                Some((named, placed)) => join(placed, &dest.as_bytes()[named.len()..]),
                None => walk(root_fd.as_fd(), dest, &mounted)?,
            };
            if placed != dest.as_bytes() {
                places
                    .0
                    .insert(dest.clone(), OsString::from_vec(placed.clone()));
            }
            mounted.push((dest.clone(), placed));
        }
        Ok(places)
    }
}

/// Whether `path` lies strictly below the directory `dir`.
fn below(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/') || dir == "/")
        && path != dir
}

fn join(dir: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    for c in rest.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(c);
    }
    p
}

/// `dest`'s place in the tree: its components one by one, each looked at
/// without following it; a symlink's target is walked in its stead, from
/// the root when absolute, and `..` never leaves the root.
fn walk(
    root: std::os::fd::BorrowedFd<'_>,
    dest: &str,
    mounted: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, PlaceError> {
    let refuse = |why: String| PlaceError::Refused {
        path: dest.to_owned(),
        why,
    };
    let io = |e: Errno| PlaceError::Io {
        path: dest.to_owned(),
        source: e.into(),
    };
    let mut todo: VecDeque<Vec<u8>> = components(dest.as_bytes()).collect();
    // The directories walked so far (names and descriptors), from the root.
    let mut dirs: Vec<(Vec<u8>, OwnedFd)> = Vec::new();
    // Components below the first one that does not exist.
    let mut missing: Vec<Vec<u8>> = Vec::new();
    // The last entry, when it is no directory.
    let mut leaf: Option<Vec<u8>> = None;
    let mut links = 0;
    let mut first_link: Option<(Vec<u8>, Vec<u8>)> = None;
    while let Some(c) = todo.pop_front() {
        if leaf.is_some() {
            let at = path_of(&dirs, leaf.as_deref());
            return Err(refuse(format!(
                "{} is not a directory",
                String::from_utf8_lossy(&at)
            )));
        }
        if !missing.is_empty() {
            if c == b".." {
                return Err(refuse(
                    "it leads through \"..\" below a directory the tree does not have".into(),
                ));
            }
            missing.push(c);
            continue;
        }
        if c == b".." {
            dirs.pop();
            continue;
        }
        let here = dirs.last().map_or(root, |(_, fd)| fd.as_fd());
        let st = match rustix::fs::statat(here, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => {
                missing.push(c);
                continue;
            }
            Err(e) => return Err(io(e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(refuse(format!(
                        "it goes through more than {MAX_LINKS} symlinks"
                    )));
                }
                let target = rustix::fs::readlinkat(here, c.as_slice(), Vec::new())
                    .map_err(io)?
                    .into_bytes();
                if first_link.is_none() {
                    let mut at = path_of(&dirs, None);
                    at = join(&at, &c);
                    first_link = Some((at, target.clone()));
                }
                if target.starts_with(b"/") {
                    dirs.clear();
                }
                for t in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    todo.push_front(t);
                }
            }
            FileType::Directory => {
                let fd = rustix::fs::openat(
                    here,
                    c.as_slice(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io)?;
                dirs.push((c, fd));
                // A link that led into an earlier mount point: the rest is
                // in that mount, which the tree does not reach.
                let at = path_of(&dirs, None);
                if !todo.is_empty() && mounted.iter().any(|(_, placed)| *placed == at) {
                    if todo.iter().any(|c| c == b"..") {
                        return Err(refuse(format!(
                            "it leads through \"..\" inside the sandbox's own {}",
                            String::from_utf8_lossy(&at)
                        )));
                    }
                    return Ok(todo.iter().fold(at, |p, c| join(&p, c)));
                }
            }
            _ => leaf = Some(c),
        }
    }
    if missing.len() > 1
        && let Some((link, target)) = &first_link
    {
        let found = path_of(&dirs, None);
        let lacking = join(&found, &missing[0]);
        return Err(refuse(format!(
            "{} is a symlink to {}, which leads to {}, which the tree does not have; strata \
             makes no directories in a tree for a symlink",
            String::from_utf8_lossy(link),
            String::from_utf8_lossy(target),
            String::from_utf8_lossy(&lacking)
        )));
    }
    let mut placed = path_of(&dirs, leaf.as_deref());
    for m in &missing {
        placed = join(&placed, m);
    }
    if placed == b"/" {
        return Err(refuse("it leads to the tree's root".into()));
    }
    Ok(placed)
}

/// The non-empty, non-`.` components of `path`.
fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

/// `/` and the names of `dirs`, then `leaf`.
fn path_of(dirs: &[(Vec<u8>, OwnedFd)], leaf: Option<&[u8]>) -> Vec<u8> {
    let mut p = b"/".to_vec();
    for name in dirs.iter().map(|(n, _)| n.as_slice()).chain(leaf) {
        p = join(&p, name);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for dir in ["etc", "proc", "dev", "tmp", "var/tmp", "run", "usr/bin"] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        std::fs::write(d.path().join("etc/hostname"), "box\n").unwrap();
        d
    }

    const FRESH: [&str; 6] = ["/proc", "/dev", "/tmp", "/var/tmp", "/run", "/run/strata"];

    fn place(root: &Path, extra: &[&str]) -> Result<Vec<String>, PlaceError> {
        let dests: Vec<String> = FRESH.iter().chain(extra).map(|s| s.to_string()).collect();
        let places = Places::resolve(root, &dests)?;
        Ok(dests
            .iter()
            .map(|d| places.of(d).to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn plain_trees_place_everything_where_it_is_named() {
        let t = tree();
        let dests = [
            "/etc/resolv.conf",
            "/run/strata/tree",
            "/run/strata-enter/ld.so",
        ];
        let want: Vec<String> = FRESH.iter().chain(&dests).map(|s| s.to_string()).collect();
        let places = Places::resolve(t.path(), &want).unwrap();
        assert_eq!(places, Places::as_named(), "nothing moved");
    }

    #[test]
    fn links_are_followed_inside_the_tree() {
        let t = tree();
        let r = t.path();
        // systemd-resolved's link: into the sandbox's own /run.
        symlink(
            "../run/systemd/resolve/stub-resolv.conf",
            r.join("etc/resolv.conf"),
        )
        .unwrap();
        assert_eq!(
            place(r, &["/etc/resolv.conf"]).unwrap()[6],
            "/run/systemd/resolve/stub-resolv.conf"
        );
        // Absolute, with `..` above the root: the tree's own /tmp.
        std::fs::remove_file(r.join("etc/resolv.conf")).unwrap();
        symlink("/../../tmp/x", r.join("etc/resolv.conf")).unwrap();
        assert_eq!(place(r, &["/etc/resolv.conf"]).unwrap()[6], "/tmp/x");
        // To an existing file through a chain of links.
        std::fs::remove_file(r.join("etc/resolv.conf")).unwrap();
        symlink("hop", r.join("etc/resolv.conf")).unwrap();
        symlink("/usr/../etc/hostname", r.join("etc/hop")).unwrap();
        assert_eq!(place(r, &["/etc/resolv.conf"]).unwrap()[6], "/etc/hostname");
        // A mount point of the sandbox itself behind a link.
        std::fs::remove_dir(r.join("run")).unwrap();
        std::fs::create_dir_all(r.join("var/run")).unwrap();
        symlink("/var/run", r.join("run")).unwrap();
        let got = place(r, &["/run/strata/tree"]).unwrap();
        assert_eq!(got[4], "/var/run");
        assert_eq!(got[5], "/var/run/strata");
        assert_eq!(got[6], "/var/run/strata/tree");
    }

    #[test]
    fn links_leading_into_nothing_or_out_are_refused_by_name() {
        let t = tree();
        let r = t.path();
        symlink("../../../../oldroot/home/u/x", r.join("etc/resolv.conf")).unwrap();
        let e = place(r, &["/etc/resolv.conf"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "the tree's /etc/resolv.conf cannot be a mount point of the sandbox: \
             /etc/resolv.conf is a symlink to ../../../../oldroot/home/u/x, which leads to \
             /oldroot, which the tree does not have; strata makes no directories in a tree \
             for a symlink"
        );
        std::fs::remove_file(r.join("etc/resolv.conf")).unwrap();
        symlink("/oldroot/tmp/x", r.join("etc/resolv.conf")).unwrap();
        assert!(place(r, &["/etc/resolv.conf"]).is_err());
        // One missing entry at the end is made by bwrap, in the tree.
        std::fs::remove_file(r.join("etc/resolv.conf")).unwrap();
        symlink("resolv.real", r.join("etc/resolv.conf")).unwrap();
        assert_eq!(
            place(r, &["/etc/resolv.conf"]).unwrap()[6],
            "/etc/resolv.real"
        );

        std::fs::remove_dir(r.join("proc")).unwrap();
        symlink("/", r.join("proc")).unwrap();
        let e = place(r, &[]).unwrap_err().to_string();
        assert!(e.ends_with("it leads to the tree's root"), "{e}");
        std::fs::remove_file(r.join("proc")).unwrap();
        symlink("proc", r.join("proc")).unwrap();
        let e = place(r, &[]).unwrap_err().to_string();
        assert!(e.ends_with("more than 40 symlinks"), "{e}");
        std::fs::remove_file(r.join("proc")).unwrap();
        std::fs::write(r.join("proc"), "").unwrap();
        assert!(
            place(r, &["/proc/x"]).is_ok(),
            "below the mount point /proc"
        );
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let t = tree();
        let r = t.path();
        std::fs::remove_dir(r.join("var/tmp")).unwrap();
        std::fs::remove_dir(r.join("var")).unwrap();
        std::fs::write(r.join("var"), "").unwrap();
        let e = place(r, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "the tree's /var/tmp cannot be a mount point of the sandbox: /var is not a directory"
        );
    }
}
