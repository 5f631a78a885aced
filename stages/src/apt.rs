//! Packages installed into a system tree from inside it (the tree is `/`,
//! as for the stages with `"x-strata": {"root": "tree"}`): the tree's own
//! apt-get, with services held back, and no package lists or caches left.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::run_tool;

/// Set in place of the tree's own while packages install: services must not
/// start in a tree that is not running (invoke-rc.d honours it; exit 101 is
/// "action forbidden").
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_RC_D_SAVED: &str = "/usr/sbin/policy-rc.d.strata-saved";
const POLICY_DENY: &str =
    "#!/bin/sh\n# strata customize: no service starts while packages install.\nexit 101\n";

/// `apt-get update`, `install`, `clean`, with services held back, and no
/// lists or caches left in the tree afterwards.
pub fn install(packages: &[String]) -> anyhow::Result<()> {
    let had_policy = Path::new(POLICY_RC_D).symlink_metadata().is_ok();
    if had_policy {
        std::fs::rename(POLICY_RC_D, POLICY_RC_D_SAVED)
            .with_context(|| format!("cannot move {POLICY_RC_D} aside"))?;
    }
    let installed = write_policy().and_then(|()| apt(packages));
    // Put the tree's own policy back even when apt failed: a failed stage's
    // tree is kept for inspection (--checkpoint) and should look as it was.
    let _ = std::fs::remove_file(POLICY_RC_D);
    let restored = if had_policy {
        std::fs::rename(POLICY_RC_D_SAVED, POLICY_RC_D)
            .with_context(|| format!("cannot put {POLICY_RC_D} back"))
    } else {
        Ok(())
    };
    // Cleaned even after a failure, for the same reason.
    let cleaned = clean_apt();
    installed?;
    restored?;
    cleaned
}

fn write_policy() -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(POLICY_RC_D)
        .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
    f.write_all(POLICY_DENY.as_bytes())
        .with_context(|| format!("cannot write {POLICY_RC_D}"))
}

fn apt(packages: &[String]) -> anyhow::Result<()> {
    for argv in apt_argvs(packages) {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .current_dir("/");
        println!("running {}", argv.join(" "));
        run_tool(&mut cmd)?;
    }
    Ok(())
}

/// The apt-get runs, in order.
fn apt_argvs(packages: &[String]) -> Vec<Vec<&str>> {
    let mut install = vec!["apt-get", "install", "-y", "--no-install-recommends"];
    install.extend(packages.iter().map(String::as_str));
    vec![vec!["apt-get", "update"], install, vec!["apt-get", "clean"]]
}

/// Removes the package lists and caches `apt-get clean` leaves: a system
/// image should not ship a day's snapshot of the archive. What apt itself
/// expects to find (`lists/partial`, `lists/lock`) stays, emptied.
fn clean_apt() -> anyhow::Result<()> {
    let lists = Path::new("/var/lib/apt/lists");
    for entry in read_dir(lists)? {
        let name = entry.file_name();
        let path = entry.path();
        if name == "lock" {
            continue;
        }
        if name == "partial" && path.is_dir() {
            for inner in read_dir(&path)? {
                remove(&inner.path())?;
            }
            continue;
        }
        remove(&path)?;
    }
    for entry in read_dir(Path::new("/var/cache/apt"))? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "bin") {
            remove(&path)?;
        }
    }
    Ok(())
}

fn read_dir(dir: &Path) -> anyhow::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).with_context(|| format!("cannot list {}", dir.display())),
    }
}

fn remove(path: &Path) -> anyhow::Result<()> {
    let removed = if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.with_context(|| format!("cannot remove {}", path.display()))
}

/// What dpkg and apt log as they install, with dates in it, and what they
/// keep of the state before: removed as mmdebstrap removes them, so that a
/// tree (and an image made from it) is the same each time it is built.
const LOGS: &[&str] = &[
    "/var/log/dpkg.log",
    "/var/log/alternatives.log",
    "/var/log/apt/history.log",
    "/var/log/apt/term.log",
    "/var/log/apt/eipp.log.xz",
    "/var/cache/ldconfig/aux-cache",
    "/var/cache/debconf/config.dat-old",
    "/var/cache/debconf/templates.dat-old",
    "/var/lib/dpkg/status-old",
    "/var/lib/dpkg/diversions-old",
    "/var/lib/dpkg/statoverride-old",
];

/// Removes the [`LOGS`] that are there.
pub fn forget_logs() -> anyhow::Result<()> {
    for path in LOGS {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {path}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_runs_update_install_clean() {
        let pkgs = vec!["hello".to_owned(), "less".to_owned()];
        assert_eq!(
            apt_argvs(&pkgs),
            [
                vec!["apt-get", "update"],
                vec![
                    "apt-get",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "hello",
                    "less"
                ],
                vec!["apt-get", "clean"],
            ]
        );
    }
}
