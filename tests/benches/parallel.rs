//! `make bench`: two independent pipelines of equal cost (each one stage
//! that sleeps 1 s in its sandbox), built with `--jobs 2` and with
//! `--jobs 1`, alternating, medians. Nothing is checkpointed, so every run
//! runs both stages.
//!
//! Target (issue 7): `--jobs 2` ≤ 0.6× `--jobs 1`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 7;

fn main() {
    let (_, strata) = common::strata();
    let scratch = tempfile::tempdir().unwrap();
    let lib = scratch.path().join("lib");
    for dir in ["stages", "schemas/stages"] {
        std::fs::create_dir_all(lib.join(dir)).unwrap();
    }
    let stage = lib.join("stages/nap");
    std::fs::write(&stage, "#!/bin/sh\nsleep 1\n").unwrap();
    std::fs::set_permissions(&stage, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(lib.join("schemas/stages/nap.json"), r#"{"type": "object"}"#).unwrap();
    let manifest = scratch.path().join("two.json");
    std::fs::write(
        &manifest,
        r#"{"version": "2", "pipelines": [
            {"name": "left", "stages": [{"type": "nap", "options": {"side": "left"}}]},
            {"name": "right", "stages": [{"type": "nap", "options": {"side": "right"}}]}]}"#,
    )
    .unwrap();

    let build = |jobs: &str, store: &Path| {
        let t = Instant::now();
        let out = Command::new(&strata)
            .args(["build", "-q", "--no-checkpoint", "--jobs", jobs, "--libdir"])
            .arg(&lib)
            .arg("--store")
            .arg(store)
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    let runs = common::runs(RUNS);
    let store = scratch.path().join("store");
    let (mut parallel, mut serial) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        serial.push(build("1", &store));
        parallel.push(build("2", &store));
    }
    let (p, s) = (common::median(&mut parallel), common::median(&mut serial));
    println!("strata bench: two independent 1 s pipelines, {runs} runs each, alternating, medians");
    println!("  --jobs 1: {:>8.1} ms", ms(s));
    println!(
        "  --jobs 2: {:>8.1} ms   ({:.3}x --jobs 1; target <= 0.6)",
        ms(p),
        p.as_secs_f64() / s.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
