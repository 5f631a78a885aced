//! `make bench`, store part, on a bookworm minbase system:
//!
//! - growth: a 5-stage pipeline over the bootstrap, every stage kept
//!   (the default): store bytes, and their ratio to one tree (target ≤ 1.2×);
//! - branch: starting a stage from the stored 180 MB tree (mounting the
//!   workspace overlay over its layers), median (target ≤ 20 ms), against
//!   the `cp -a` the old store paid;
//! - flatten: on an XFS loop image (reflinks), flattening the 5-layer stack
//!   against `cp -a` of the merged tree and against `cp -a --reflink=always`
//!   of the flat bootstrap layer;
//! - warm no-op rebuild of the Debian examples (target ≤ 50 ms).
//!
//! `STRATA_BENCH_RUNS` sets the repetitions (default 11 for the fast
//! measures, a third of that for copies).

mod common;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use strata::id::Id;
use strata::store::{Store, layers};

fn main() {
    let (root, strata) = common::strata();
    let runs = common::runs(11);
    // The bench mounts overlays itself (branch, flatten): its own namespace,
    // before any thread.
    layers::enter_private_namespace().expect("run the bench as root");
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("store");
    let build = |manifest: &Value, store: &Path| -> Value {
        let path = scratch.path().join("m.json");
        std::fs::write(&path, manifest.to_string()).unwrap();
        let out = Command::new(&strata)
            .args(["build", "-q", "--json", "--store"])
            .arg(store)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // Growth.
    let mib: u64 = 1 << 20;
    let m = json!({"version": "2", "pipelines": [{"name": "system", "runner": "debian", "source-epoch": 1700000000, "stages": [
        {"type": "bootstrap", "options": {
            "bootstrap_options": {"architecture": "amd64", "variant": "minbase"},
            "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}},
        {"type": "write", "options": {"files": [{"path": "/etc/motd", "content": "layered\n"}]}},
        {"type": "mkdir", "options": {"paths": [{"path": "/srv/data"}]}},
        {"type": "customize", "options": {"script": format!("head -c {mib} /dev/urandom > /srv/data/blob; rm -rf /usr/share/doc/*; echo x >> /etc/passwd")}},
        {"type": "customize", "options": {"hostname": "layers"}}]}]});
    let doc = build(&m, &store);
    let ids: Vec<Id> = (0..5)
        .map(|i| Id::parse(doc["pipelines"][0]["stages"][i]["id"].as_str().unwrap()).unwrap())
        .collect();
    let layout = strata::store::Layout::new(&store);
    let tree = common::du(&layout.object(ids[0].as_str()).layer());
    let total: u64 = ids
        .iter()
        .map(|id| common::du(layout.object(id.as_str()).dir()))
        .sum();
    let changes: u64 = ids[1..]
        .iter()
        .map(|id| common::du(layout.object(id.as_str()).dir()))
        .sum();

    // Branch: the workspace a stage after the last one would start from.
    let opened = Store::open(&store, Duration::from_secs(60)).unwrap();
    let mut branch: Vec<Duration> = (0..runs.max(5) * 2)
        .map(|_| {
            let t = Instant::now();
            let ws = opened.workspace(Some(&ids[4])).unwrap();
            let took = t.elapsed();
            assert!(ws.merged().join("etc/os-release").exists());
            took
        })
        .collect();
    let merged = opened.view(&ids[4]).unwrap();
    let copies = (runs / 3).max(1);
    let mut cp_ext4: Vec<Duration> = (0..copies)
        .map(|i| {
            let dst = scratch.path().join(format!("cp-{i}"));
            let took = cp(&["-a"], merged.path(), &dst);
            std::fs::remove_dir_all(&dst).unwrap();
            took
        })
        .collect();
    drop(merged);
    drop(opened);

    // Flatten on XFS: the same store, copied onto a loop image.
    let xfs = XfsImage::new(scratch.path());
    let xstore = xfs.path().join("store");
    let status = Command::new("cp")
        .args(["-a"])
        .arg(&store)
        .arg(&xstore)
        .status()
        .unwrap();
    assert!(status.success());
    let xopened = Store::open(&xstore, Duration::from_secs(60)).unwrap();
    let stack = xopened.stack(&ids[4]).unwrap();
    let view = xopened.view(&ids[4]).unwrap();
    let (mut flatten, mut cp_xfs, mut reflink) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..copies {
        let dst = xfs.path().join(format!("flat-{i}"));
        let t = Instant::now();
        layers::flatten(view.path(), &stack, &dst).unwrap();
        flatten.push(t.elapsed());
        cp_xfs.push(cp(
            &["-a"],
            view.path(),
            &xfs.path().join(format!("cp-{i}")),
        ));
        reflink.push(cp(
            &["-a", "--reflink=always"],
            &stack[stack.len() - 1],
            &xfs.path().join(format!("reflink-{i}")),
        ));
        for d in ["flat", "cp", "reflink"] {
            std::fs::remove_dir_all(xfs.path().join(format!("{d}-{i}"))).unwrap();
        }
    }
    drop(view);
    drop(xopened);

    // Warm no-op rebuilds of the Debian examples.
    let mut warm = Vec::new();
    for example in ["debian-bookworm-minbase.json", "debian-build-root.json"] {
        let text = std::fs::read_to_string(root.join("manifests").join(example)).unwrap();
        let m: Value = serde_json::from_str(&text).unwrap();
        build(&m, &store);
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let path = scratch.path().join("warm.json");
                std::fs::write(&path, m.to_string()).unwrap();
                let t = Instant::now();
                let out = Command::new(&strata)
                    .args(["build", "-q", "--store"])
                    .arg(&store)
                    .arg(&path)
                    .output()
                    .unwrap();
                let took = t.elapsed();
                assert!(out.status.success());
                took
            })
            .collect();
        warm.push((example, common::median(&mut times)));
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("strata store bench: medians");
    println!(
        "  growth, 5 kept stages over minbase: {:.1} MB for a {:.1} MB tree: {:.3}x (target <= 1.2x; stages' own layers {:.2} MB)",
        total as f64 / 1e6,
        tree as f64 / 1e6,
        total as f64 / tree as f64,
        changes as f64 / 1e6
    );
    println!(
        "  branch from the stored tree (5 layers):  {:>8.2} ms  (target <= 20 ms; cp -a on ext4: {:.0} ms)",
        ms(common::median(&mut branch)),
        ms(common::median(&mut cp_ext4))
    );
    println!(
        "  flatten on XFS (reflinks):               {:>8.0} ms  (cp -a: {:.0} ms, cp --reflink=always of one flat tree: {:.0} ms)",
        ms(common::median(&mut flatten)),
        ms(common::median(&mut cp_xfs)),
        ms(common::median(&mut reflink))
    );
    for (example, t) in warm {
        println!(
            "  warm no-op rebuild, {example:<29} {:>8.2} ms  (target <= 50 ms)",
            ms(t)
        );
    }
}

fn cp(flags: &[&str], from: &Path, to: &Path) -> Duration {
    let t = Instant::now();
    let status = Command::new("cp")
        .args(flags)
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    let took = t.elapsed();
    assert!(status.success());
    took
}

/// A 2 GB XFS image with reflinks, loop-mounted under `dir`.
struct XfsImage {
    mnt: PathBuf,
}

impl XfsImage {
    fn new(dir: &Path) -> XfsImage {
        let img = dir.join("xfs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        let ok = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img)
            .status()
            .expect("mkfs.xfs (xfsprogs)")
            .success()
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt)
                .status()
                .unwrap()
                .success();
        assert!(ok, "could not make and mount an XFS image");
        XfsImage { mnt }
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for XfsImage {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}
