//! `make bench`: cold and warm builds of manifests/hello.json (three
//! pipelines: mkdir → copy/write from an inline source → tar through a tree
//! input), medians over several runs, alternating with a reference run in the
//! same invocation: one bare `bwrap … true`, the floor of one sandboxed stage.
//! Peak RSS of the engine is read with GNU time.
//!
//! Targets (issue 2): cold ≤ 100 ms, warm ≤ 20 ms, engine ≤ 50 MB RSS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 15;

fn main() {
    let (root, strata) = common::strata();
    let manifest = root.join("manifests/hello.json");
    let scratch = tempfile::tempdir().unwrap();

    let build = |store: &Path| {
        let out = Command::new(&strata)
            .args(["build", "-q", "--checkpoint", "*", "--store"])
            .arg(store)
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let reference = common::bare_bwrap;
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };

    let warm_store = scratch.path().join("warm");
    build(&warm_store);
    let (mut cold, mut warm, mut refs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        let store: PathBuf = scratch.path().join(format!("cold-{i}"));
        refs.push(time(&mut || reference()));
        cold.push(time(&mut || build(&store)));
        warm.push(time(&mut || build(&warm_store)));
    }
    let rss_kb = peak_rss_kb(&strata, &manifest, &scratch.path().join("rss"));

    let (c, w, r) = (
        common::median(&mut cold),
        common::median(&mut warm),
        common::median(&mut refs),
    );
    println!("strata bench: {RUNS} runs each, alternating, medians");
    println!("  reference (one bare bwrap):   {:>8.2} ms", ms(r));
    println!(
        "  cold build (5 stages):        {:>8.2} ms   ({:.1}x reference; target <= 100 ms)",
        ms(c),
        ratio(c, r)
    );
    println!(
        "  warm build (all checkpointed): {:>7.2} ms   ({:.2}x reference; target <= 20 ms)",
        ms(w),
        ratio(w, r)
    );
    match rss_kb {
        Some(kb) => println!(
            "  engine peak RSS (cold build): {:>8.1} MB   (target <= 50 MB)",
            kb as f64 / 1024.0
        ),
        None => {
            println!("  engine peak RSS: not measured (install GNU time: apt-get install time)")
        }
    }
}

fn peak_rss_kb(strata: &Path, manifest: &Path, store: &Path) -> Option<u64> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(strata)
        .args(["build", "-q", "--checkpoint", "*", "--store"])
        .arg(store)
        .arg(manifest)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stderr)
        .trim()
        .lines()
        .last()?
        .parse()
        .ok()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
