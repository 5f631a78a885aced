//! Paths the sandbox binds into a tree (issue 15, class 3): a mount point
//! that is a symlink in the tree (`/etc/resolv.conf` for a network stage)
//! never makes bwrap — which runs as the host's root when strata does —
//! create or touch anything outside the tree. It is resolved in the tree,
//! or refused naming the path. Every build is bounded in time.

use crate::support::{Env, Run, bounded, checksum, inline_sources};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A system just big enough to start a shell stage: the host's dash as
/// /bin/sh and the libraries it loads, the usual top folders, and
/// etc/resolv.conf a symlink to `resolv`.
fn tiny_system(dir: &Path, resolv: &str) -> Vec<u8> {
    let root = dir.join("system");
    for d in ["bin", "etc", "tmp", "var/tmp", "run", "proc", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/dash", root.join("bin/sh")).unwrap();
    let ldd = Command::new("ldd").arg("/bin/dash").output().unwrap();
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') {
            let inside = root.join(word.trim_start_matches('/'));
            std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
            std::fs::copy(word, inside).unwrap();
        }
    }
    std::os::unix::fs::symlink(resolv, root.join("etc/resolv.conf")).unwrap();
    let tarball = dir.join("system.tar");
    let packed = Command::new("tar")
        .args(["--create", "--numeric-owner", "--file"])
        .arg(&tarball)
        .arg("--directory")
        .arg(&root)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success());
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::read(&tarball).unwrap()
}

/// The untar stage of `tarball`.
fn untar(tarball: &[u8]) -> Value {
    let sum = checksum(tarball);
    json!({"type": "untar", "options": {"source": format!("input://tarball/{sum}")},
           "inputs": {"tarball": {"type": "files", "origin": "source", "references": [sum]}}})
}

/// A libdir with `netroot`, a network stage over its tree (chroot
/// semantics) that prints its /etc/resolv.conf; `netbuild`, the same over
/// its build pipeline's tree (read-only); and `relink`, which points the
/// tree's etc/resolv.conf at `$TARGET` from the host's /usr.
fn stages(env: &Env) -> PathBuf {
    let print = "echo stage ran; while read -r l; do echo \"resolv: $l\"; done < /etc/resolv.conf";
    env.script_stage("netroot", print, json!({"network": true, "root": "tree"}));
    env.script_stage("netbuild", print, json!({"network": true}));
    env.script_stage(
        "relink",
        "ln -sfn \"$(sed -n 's/.*\"target\": *\"\\([^\"]*\\)\".*/\\1/p' /run/strata/args.json)\" /run/strata/tree/etc/resolv.conf",
        Value::Null,
    )
}

fn build(env: &Env, m: &Value, lib: &Path) -> Run {
    let args = ["build", "-", "-v", "--libdir", lib.to_str().unwrap()];
    bounded(env, &args, &m.to_string(), Duration::from_secs(120)).0
}

#[test]
fn a_resolv_conf_link_pointing_out_never_leads_bwrap_out() {
    let env = Env::new();
    let lib = stages(&env);
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // bwrap sets mounts up with the host's root at /oldroot.
    let host_target = format!("/oldroot{}/created", outside.display());
    let host_tmp = PathBuf::from(format!("/tmp/strata-it-bind-{}", std::process::id()));
    let refused = |link: &str| {
        format!(
            "the tree's /etc/resolv.conf cannot be a mount point of the sandbox: \
             /etc/resolv.conf is a symlink to {link}, which leads to /oldroot, which the tree \
             does not have; strata makes no directories in a tree for a symlink"
        )
    };

    // Absolute, with `..` above the root: resolved in the tree, where it is
    // the sandbox's own /tmp; the stage reads the host's resolv.conf there.
    let tmp_link = format!("/../..{}", host_tmp.display());
    let system = tiny_system(env.dir.path(), &tmp_link);
    let m = json!({"version": "2", "sources": inline_sources(&[&system]),
        "pipelines": [{"name": "p", "stages": [untar(&system), {"type": "netroot"}]}]});
    let run = build(&env, &m, &lib);
    run.success();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if let Some(first) = host_resolv.lines().find(|l| !l.trim().is_empty()) {
        assert!(
            run.stderr().contains(&format!("resolv: {}", first.trim())),
            "the stage reads the host's resolv.conf through the tree's link:\n{}",
            run.stderr()
        );
    }
    assert!(!host_tmp.exists(), "nothing made at {}", host_tmp.display());

    // Relative, climbing out of the tree to the host's root (a stage made
    // it): refused, naming the path.
    let climbing = format!("../../../../../..{host_target}");
    let m = json!({"version": "2", "sources": inline_sources(&[&system]),
        "pipelines": [{"name": "p", "stages": [untar(&system),
            {"type": "relink", "options": {"target": climbing}}, {"type": "netroot"}]}]});
    let run = build(&env, &m, &lib);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains(&refused(&climbing)),
        "{}",
        run.describe()
    );

    // Absolute, in a build pipeline's (read-only) tree under a network stage.
    let system = tiny_system(env.dir.path(), &host_target);
    let m = json!({"version": "2", "sources": inline_sources(&[&system]),
        "pipelines": [{"name": "env", "stages": [untar(&system)]},
                      {"name": "p", "build": "name:env", "stages": [{"type": "netbuild"}]}]});
    let run = build(&env, &m, &lib);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains(&refused(&host_target)),
        "{}",
        run.describe()
    );

    let left: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(left.is_empty(), "nothing made outside the tree: {left:?}");
    assert!(!host_tmp.exists());
}
