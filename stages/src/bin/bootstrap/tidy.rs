//! The new system made fit to keep (no host name, resolver or apt caches
//! of the build's), or emptied when the bootstrap failed.

use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use strata_stage::{Args, Error, Root};

use crate::repos::Repo;

/// What mmdebstrap leaves that the new system must not have.
pub fn tidy(args: &Args, repos: &[Repo]) -> anyhow::Result<()> {
    let tree = Root::tree(args)?;
    remove(&tree, "/etc/hostname")?;
    // Empty, not the build host's: later stages bind the host's over it
    // when they need the network.
    remove(&tree, "/etc/resolv.conf")?;
    let resolv = tree.entry("/etc/resolv.conf")?;
    rustix::fs::openat(
        resolv.dir(),
        resolv.name(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| Error::Io {
        what: "cannot create",
        path: resolv.shown().to_owned(),
        source: e.into(),
    })?;

    let keep = |n: &str| ["lock", "partial", "auxfiles"].contains(&n);
    empty_dir(&tree, "/var/lib/apt/lists", |n| !keep(n))?;
    empty_dir(&tree, "/var/cache/apt", |n| n.ends_with(".bin"))?;
    empty_dir(&tree, "/var/cache/apt/archives", |n| n.ends_with(".deb"))?;
    empty_dir(&tree, "/var/cache/apt/archives/partial", |_| true)?;

    for r in repos {
        if let Some(k) = &r.final_signed_by
            && tree
                .entry(k)
                .ok()
                .and_then(|e| e.lstat().ok().flatten())
                .is_none()
        {
            println!(
                "W: the new system's apt checks {} with {k}, which it does not have; \
                 install it (keyring_package, or keyring with install) or apt there will refuse the repository",
                r.mirror
            );
        }
    }
    Ok(())
}

/// Removes `path` beneath the tree if it is there (a symlink itself, not
/// what it points to).
pub fn remove(tree: &Root, path: &str) -> Result<(), Error> {
    let entry = match tree.entry(path) {
        Ok(e) => e,
        Err(Error::NoParent { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if entry.lstat()?.is_none() {
        return Ok(());
    }
    rustix::fs::unlinkat(entry.dir(), entry.name(), AtFlags::empty()).map_err(|e| Error::Io {
        what: "cannot remove",
        path: entry.shown().to_owned(),
        source: e.into(),
    })
}

/// Removes the files (not folders) of folder `path` whose names `pick` picks.
pub fn empty_dir(tree: &Root, path: &str, pick: impl Fn(&str) -> bool) -> Result<(), Error> {
    let io = |what: &'static str, source: rustix::io::Errno| Error::Io {
        what,
        path: path.to_owned(),
        source: source.into(),
    };
    let dir = match tree.open_dir(path) {
        Ok(d) => d,
        Err(Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let readable = rustix::fs::openat(
        &dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("cannot open folder", e))?;
    let names: Vec<String> = rustix::fs::Dir::read_from(&readable)
        .map_err(|e| io("cannot list", e))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type() != FileType::Directory)
        .filter_map(|e| e.file_name().to_str().ok().map(str::to_owned))
        .filter(|n| n != "." && n != ".." && pick(n))
        .collect();
    for name in names {
        match rustix::fs::unlinkat(&readable, name.as_str(), AtFlags::empty()) {
            // A folder whose type the listing did not know.
            Ok(()) | Err(rustix::io::Errno::ISDIR) => {}
            Err(e) => return Err(io("cannot remove a file in", e)),
        }
    }
    Ok(())
}

/// Empties the tree after a failure, unless something is still mounted in
/// it (mmdebstrap unmounts /proc, /sys, /dev on its way out; if it could
/// not, deleting through them would be worse than a partial tree).
pub fn wipe(tree: &Path) {
    let prefix = format!("{}/", tree.display());
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|p| p.starts_with(&prefix))
        })
        .unwrap_or(true);
    if mounted {
        eprintln!("leaving the partial tree alone: something is still mounted in it");
        return;
    }
    let Ok(entries) = std::fs::read_dir(tree) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(e) = removed {
            eprintln!(
                "cannot remove {} from the partial tree: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tidying_leaves_no_hostname_host_resolv_conf_or_apt_caches() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for d in [
            "etc",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
        ] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        std::fs::write(t.join("etc/hostname"), "host\n").unwrap();
        std::os::unix::fs::symlink("/etc/resolv.conf", t.join("etc/resolv.conf")).unwrap();
        for f in [
            "var/lib/apt/lists/lock",
            "var/lib/apt/lists/x_Packages",
            "var/cache/apt/pkgcache.bin",
            "var/cache/apt/archives/a.deb",
            "var/cache/apt/archives/lock",
            "var/cache/apt/archives/partial/b.deb",
        ] {
            std::fs::write(t.join(f), "x").unwrap();
        }
        let args: Args = serde_json::from_value(json!({
            "tree": t, "paths": {"tree": t, "inputs": "/nonexistent", "meta": t.join("meta.json")},
            "meta": {"id": "x", "pipeline": "p", "stage": "bootstrap"}
        }))
        .unwrap();
        tidy(&args, &[]).unwrap();
        assert!(!t.join("etc/hostname").exists());
        let resolv = std::fs::symlink_metadata(t.join("etc/resolv.conf")).unwrap();
        assert!(resolv.is_file() && resolv.len() == 0);
        let names = |d: &str| {
            let mut n: Vec<String> = std::fs::read_dir(t.join(d))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names("var/lib/apt/lists"), ["lock", "partial"]);
        assert_eq!(names("var/cache/apt"), ["archives"]);
        assert_eq!(names("var/cache/apt/archives"), ["lock", "partial"]);
        assert!(names("var/cache/apt/archives/partial").is_empty());

        wipe(t);
        assert!(std::fs::read_dir(t).unwrap().next().is_none());
    }
}
