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
//! Then the untar stage (run as a program, outside a sandbox, as the stage
//! tests run it) over that system tarball against `tar --extract` with the
//! flags the stage used to run GNU tar with, alternately, into fresh
//! folders; medians. `STRATA_BENCH_TARBALL=FILE` runs only this part, over
//! FILE.
//!
//! Targets (issue 3): strata ≤ 1.10 × bare mmdebstrap cold; warm ≤ 50 ms.
//! (issue 14): rootless, strata ≤ 1.10 × bare `mmdebstrap --mode=unshare`.
//! (issue 15): untar ≤ 1.10 × `tar --extract`.
//! `STRATA_BENCH_RUNS` sets the number of alternations (default 3).

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let runs = common::runs(3);
    if let Some(tarball) = std::env::var_os("STRATA_BENCH_TARBALL") {
        // The stage alone: no strata needed.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        println!("strata untar bench: {runs} alternations, medians");
        untar_bench(root, Path::new(&tarball), runs);
        return;
    }
    let (root, strata) = common::strata();
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
    untar_bench(&root, &out.join("tarball/system.tar.zst"), runs);
}

/// The untar stage over `tarball` against `tar --extract`, alternately,
/// each into a fresh folder beside the tarball's copy; prints the medians.
fn untar_bench(root: &Path, tarball: &Path, runs: usize) {
    let stage = root.join("target/release/strata-stage-untar");
    assert!(
        stage.is_file(),
        "build first: cargo build --workspace --release"
    );
    let scratch = tempfile::tempdir().unwrap();
    let input = scratch.path().join("inputs/tarball");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(tarball, input.join("system")).unwrap();
    let zstd = std::fs::read(tarball)
        .unwrap()
        .starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let settle = || {
        // What the last run left dirty is written out before the next starts.
        assert!(Command::new("sync").status().unwrap().success());
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let tree = scratch.path().join(format!("tar-{i}"));
        std::fs::create_dir(&tree).unwrap();
        settle();
        let t = Instant::now();
        let done = Command::new("tar")
            .arg("--extract")
            .args(zstd.then_some("--zstd"))
            .arg("--file")
            .arg(input.join("system"))
            .arg("--directory")
            .arg(&tree)
            .args([
                "--numeric-owner",
                "--preserve-permissions",
                "--same-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
            ])
            .status()
            .unwrap();
        theirs.push(t.elapsed());
        assert!(done.success());
        std::fs::remove_dir_all(&tree).unwrap();

        let tree = scratch.path().join(format!("stage-{i}"));
        std::fs::create_dir(&tree).unwrap();
        let args = scratch.path().join("args.json");
        let doc = serde_json::json!({
            "tree": tree,
            "options": {"source": "input://tarball/system"},
            "inputs": {"tarball": {"path": input, "data": {}}},
            "paths": {"tree": tree, "inputs": scratch.path().join("inputs"),
                      "meta": scratch.path().join("meta.json")},
            "meta": {"id": "00", "source-epoch": null, "pipeline": "bench", "stage": "untar"},
        });
        std::fs::write(&args, doc.to_string()).unwrap();
        settle();
        let t = Instant::now();
        let out = Command::new(&stage)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("STRATA_ARGS", &args)
            .output()
            .unwrap();
        ours.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&tree).unwrap();
    }
    let (o, t) = (common::median(&mut ours), common::median(&mut theirs));
    println!(
        "  tar --extract of the system tarball: {:>8.2} s",
        t.as_secs_f64()
    );
    println!(
        "  strata untar stage:                  {:>8.2} s   ({:.3}x tar; target <= 1.10x)",
        o.as_secs_f64(),
        o.as_secs_f64() / t.as_secs_f64()
    );
}

/// The mirror the bootstrap stage itself would pick from this machine's apt sources.
fn host_mirror() -> Option<String> {
    let sources = strata_stage::debian::read_apt_sources(Path::new("/etc/apt"));
    strata_stage::debian::default_mirror(&sources).map(|(uri, _)| uri)
}
