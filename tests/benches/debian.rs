//! `make bench`, Debian part: the bootstrap stage (manifests/
//! debian-bookworm-minbase.json's `system` pipeline, checkpointed, cold
//! store each time) against a bare `mmdebstrap` of the same options, run
//! alternately in the same invocation; medians. Then a warm re-run, and the
//! size of the system tarball.
//!
//! Then the same as an ordinary user (`strata-bench`, made with a
//! subordinate id range when missing): strata's bootstrap stage, rootless,
//! against a bare `mmdebstrap --mode=unshare` run by the same user.
//!
//! Targets (issue 3): strata ≤ 1.10 × bare mmdebstrap cold; warm ≤ 50 ms.
//! (issue 14): rootless, strata ≤ 1.10 × bare `mmdebstrap --mode=unshare`.
//! `STRATA_BENCH_RUNS` sets the number of alternations (default 3).

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let (root, strata) = common::strata();
    let runs = common::runs(3);
    let scratch = tempfile::tempdir().unwrap();

    // Only the bootstrap pipeline: the tarball is measured separately.
    let text =
        std::fs::read_to_string(root.join("manifests/debian-bookworm-minbase.json")).unwrap();
    let mut full: Value = serde_json::from_str(&text).unwrap();
    let mut system = full.clone();
    system["pipelines"].as_array_mut().unwrap().truncate(1);
    let system_path = scratch.path().join("system.json");
    std::fs::write(&system_path, system.to_string()).unwrap();
    let mirror = host_mirror().expect("a deb mirror in this machine's apt sources");

    let strata_build = |store: &Path, manifest: &Path, extra: &[&str]| {
        let out = Command::new(&strata)
            .args(["build", "-q", "--checkpoint", "*", "--store"])
            .arg(store)
            .args(extra)
            .arg(manifest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let bare = |target: &Path, mode: &str, user: Option<&str>| {
        let mut cmd = match user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "mmdebstrap"]);
                c
            }
            None => Command::new("mmdebstrap"),
        };
        let out = cmd
            .args([
                "--quiet",
                mode,
                "--variant=minbase",
                "--architectures=amd64",
                "--components=main",
                "bookworm",
            ])
            .arg(target)
            .arg(&mirror)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let target = scratch.path().join(format!("bare-{i}"));
        let t = Instant::now();
        bare(&target, "--mode=root", None);
        theirs.push(t.elapsed());
        std::fs::remove_dir_all(&target).unwrap();

        let store = scratch.path().join(format!("store-{i}"));
        let t = Instant::now();
        strata_build(&store, &system_path, &[]);
        ours.push(t.elapsed());
        if i + 1 < runs {
            std::fs::remove_dir_all(&store).unwrap();
        }
    }
    let warm_store = scratch.path().join(format!("store-{}", runs - 1));
    let mut warm: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            strata_build(&warm_store, &system_path, &[]);
            t.elapsed()
        })
        .collect();

    // The system tarball, from the same store (bootstrap cached).
    full["pipelines"][1]["stages"][0]["options"]["compression"] = "zstd".into();
    let full_path = scratch.path().join("full.json");
    std::fs::write(&full_path, full.to_string()).unwrap();
    let out = scratch.path().join("out");
    strata_build(
        &warm_store,
        &full_path,
        &[
            "--export",
            "tarball",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    );
    let size = std::fs::metadata(out.join("tarball/system.tar.zst"))
        .unwrap()
        .len();

    // Rootless: the same user runs both, each into a folder it owns.
    let user = "strata-bench";
    let (uid, gid) = strata_tests::ordinary_user(user, "1200200000:65536");
    // A folder of its own (the scratch folder is root's, 0700).
    let home_dir = tempfile::tempdir().unwrap();
    let home = home_dir.path();
    std::os::unix::fs::chown(home, Some(uid), Some(gid)).unwrap();
    let user_manifest = home.join("system.json");
    std::fs::copy(&system_path, &user_manifest).unwrap();
    let (mut ours_user, mut theirs_user) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let target = home.join(format!("bare-{i}"));
        let t = Instant::now();
        bare(&target, "--mode=unshare", Some(user));
        theirs_user.push(t.elapsed());
        std::fs::remove_dir_all(&target).unwrap();

        let store = home.join(format!("store-{i}"));
        let t = Instant::now();
        let out = Command::new("runuser")
            .args(["-u", user, "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .arg(&strata)
            .args(["build", "-q", "--checkpoint", "*", "--store"])
            .arg(&store)
            .arg(&user_manifest)
            .current_dir(home)
            .output()
            .unwrap();
        ours_user.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&store).unwrap();
    }

    let (o, t, w) = (
        common::median(&mut ours),
        common::median(&mut theirs),
        common::median(&mut warm),
    );
    println!("strata debian bench: {runs} alternations, medians");
    println!(
        "  bare mmdebstrap (minbase):     {:>8.2} s",
        t.as_secs_f64()
    );
    println!(
        "  strata bootstrap stage (cold): {:>8.2} s   ({:.3}x bare; target <= 1.10x)",
        o.as_secs_f64(),
        o.as_secs_f64() / t.as_secs_f64()
    );
    println!(
        "  strata warm re-run:            {:>8.2} ms  (target <= 50 ms)",
        w.as_secs_f64() * 1000.0
    );
    println!(
        "  system tarball (zstd):         {:>8.1} MB",
        size as f64 / 1e6
    );
    let (ou, tu) = (
        common::median(&mut ours_user),
        common::median(&mut theirs_user),
    );
    println!("  as the ordinary user {user}:");
    println!(
        "  bare mmdebstrap --mode=unshare: {:>8.2} s",
        tu.as_secs_f64()
    );
    println!(
        "  strata bootstrap stage (cold):  {:>8.2} s   ({:.3}x bare; target <= 1.10x)",
        ou.as_secs_f64(),
        ou.as_secs_f64() / tu.as_secs_f64()
    );
}

/// The mirror the bootstrap stage itself would pick from this machine's apt sources.
fn host_mirror() -> Option<String> {
    let sources = strata_stage::debian::read_apt_sources(Path::new("/etc/apt"));
    strata_stage::debian::default_mirror(&sources).map(|(uri, _)| uri)
}
