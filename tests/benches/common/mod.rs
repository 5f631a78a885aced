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

/// The floor of one sandboxed stage: one bare `bwrap … true`.
pub fn bare_bwrap() {
    let ok = std::process::Command::new("bwrap")
        .args([
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
            "--unshare-all",
            "--die-with-parent",
        ])
        .arg("/usr/bin/true")
        .status()
        .unwrap()
        .success();
    assert!(ok, "bwrap failed");
}
