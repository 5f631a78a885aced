//! What the benches share: the release binary, the run count, medians.

#![allow(dead_code)] // each bench uses part of this

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The repository root and the release `strata` in it (built by `make bench`).
pub fn strata() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let strata = root.join("target/release/strata");
    assert!(
        strata.is_file(),
        "build first: cargo build --workspace --release (make bench does)"
    );
    (root, strata)
}

/// `STRATA_BENCH_RUNS`, else `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("STRATA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v`.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The bytes `du -s -B1` counts under `path`.
pub fn du(path: &Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `strata build -q --json --checkpoint '*' --store STORE MANIFEST`, which
/// must succeed; its result document.
pub fn build_json(strata: &Path, store: &Path, manifest: &Path) -> serde_json::Value {
    let out = std::process::Command::new(strata)
        .args(["build", "-q", "--json", "--checkpoint", "*", "--store"])
        .arg(store)
        .arg(manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The floor of one sandboxed stage: one bare `bwrap … true`.
pub fn bare_bwrap() {
    bwrap_true(false);
}

/// [`bare_bwrap`] with strata's per-stage user namespace: `true` started
/// through the same `enter` step strata puts before every stage
/// (engine/src/sandbox/userns.rs): a new user namespace mapped to the
/// stages' range, RLIMIT_NPROC and the seccomp filter. The difference to
/// [`bare_bwrap`] is what the namespace costs a stage.
pub fn bare_bwrap_entered() {
    bwrap_true(true);
}

fn bwrap_true(entered: bool) {
    let mut cmd = std::process::Command::new("bwrap");
    cmd.args([
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib64",
        "/lib64",
    ])
    .args([
        "--symlink",
        "usr/lib",
        "/lib",
        // A stage's namespaces (sandbox/mod.rs); not --unshare-all, whose
        // user namespace is strata's `enter` step's job.
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--die-with-parent",
        // A stage's /proc (and `enter` maps its namespace through it).
        "--proc",
        "/proc",
    ]);
    if entered {
        let (binds, prefix) = strata::sandbox::userns::sandbox_entry()
            .expect("strata-sandbox beside the release strata (make bench builds it)");
        for (host, inside) in binds {
            cmd.arg("--ro-bind").arg(host).arg(inside);
        }
        cmd.args(prefix);
    }
    let ok = cmd.arg("/usr/bin/true").status().unwrap().success();
    assert!(ok, "bwrap failed");
}
