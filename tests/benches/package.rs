//! `make bench`, package part: building tests/fixtures/packages/hello-strata
//! through strata's `build` stage (environment cached, so only the build
//! runs) against the same build run by hand — the same tools (apt-get
//! build-dep, dpkg-buildpackage) in the same stored environment, in a
//! throw-away overlay, in bubblewrap — alternating, medians; then a warm
//! re-run. Targets (issue 4): ≤ 1.10× by hand cold; warm ≤ 50 ms.
//! `STRATA_BENCH_RUNS` sets the number of alternations (default 3).

mod common;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let (root, strata) = common::strata();
    let runs = common::runs(3);
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("store");
    let dist = root.join("tests/fixtures/packages/dist");
    let dsc = std::fs::read(dist.join("hello-strata_1.0.dsc")).unwrap();
    let tar = std::fs::read(dist.join("hello-strata_1.0.tar.xz")).unwrap();

    let manifest = |n: usize| -> Value {
        // A distinct build_options per run makes every build cold while the
        // environment stays cached.
        let sum = |d: &[u8]| format!("sha256:{}", hex(&Sha256::digest(d)));
        let b64 = |d: &[u8]| base64(d);
        json!({"version": "2", "pipelines": [
            {"name": "env", "runner": "debian", "source-epoch": 1700000000, "stages": [{"type": "bootstrap", "options": {
                "bootstrap_options": {"architecture": "amd64", "variant": "buildd", "extra_packages": ["debhelper", "lintian"]},
                "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}}]},
            {"name": "build", "build": "name:env", "runner": "debian", "source-epoch": 1700000000, "stages": [{"type": "build",
                "inputs": {"source": {"type": "files", "origin": "source", "references": [sum(&dsc), sum(&tar)]}},
                "options": {"host_architecture": "amd64", "build_options": format!("run{n}")}}]}],
            "sources": {"inline": {"items": {sum(&dsc): {"encoding": "base64", "data": b64(&dsc)}, sum(&tar): {"encoding": "base64", "data": b64(&tar)}}}}})
    };
    let build = |m: &Value| {
        let path = scratch.path().join("m.json");
        std::fs::write(&path, m.to_string()).unwrap();
        common::build_json(&strata, &store, &path)
    };
    let doc = build(&manifest(1000));
    let env_id = doc["pipelines"][0]["id"].as_str().unwrap().to_owned();
    // The environment is one stage, so its object's layer is the whole tree.
    let object = strata::store::Layout::new(&store).object(&env_id);
    let info: Value = serde_json::from_slice(&std::fs::read(object.info()).unwrap()).unwrap();
    assert!(
        info["parent"].is_null(),
        "a one-stage pipeline's layer has no parent: {info}"
    );
    let env_tree = object.layer();

    let by_hand = |n: usize| {
        let work = scratch.path().join(format!("hand-{n}"));
        for d in ["upper", "work", "root", "src"] {
            std::fs::create_dir_all(work.join(d)).unwrap();
        }
        std::fs::copy(
            dist.join("hello-strata_1.0.dsc"),
            work.join("src/hello-strata_1.0.dsc"),
        )
        .unwrap();
        std::fs::copy(
            dist.join("hello-strata_1.0.tar.xz"),
            work.join("src/hello-strata_1.0.tar.xz"),
        )
        .unwrap();
        let script = format!(
            "set -e; mkdir -p /build; cd /src; dpkg-source -x hello-strata_1.0.dsc /build/hello; apt-get update -q; \
             apt-get build-dep -y -q --no-install-recommends /build/hello; cd /build/hello; \
             DEB_BUILD_OPTIONS=hand{n} dpkg-buildpackage --build=any -us -uc"
        );
        let mount = "mount -t overlay overlay -o \"lowerdir=$1,upperdir=$2,workdir=$3\" \"$4\" && shift 4 && exec \"$@\"";
        let out = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                mount,
                "bench",
            ])
            .arg(&env_tree)
            .arg(work.join("upper"))
            .arg(work.join("work"))
            .arg(work.join("root"))
            .arg("bwrap")
            .arg("--bind")
            .arg(work.join("root"))
            .args([
                "/", "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
            ])
            .args([
                "--ro-bind",
                "/etc/resolv.conf",
                "/etc/resolv.conf",
                "--bind",
            ])
            .arg(work.join("src"))
            .args([
                "/src",
                "--clearenv",
                "--setenv",
                "PATH",
                "/usr/sbin:/usr/bin:/sbin:/bin",
                "--setenv",
                "HOME",
                "/root",
            ])
            .args([
                "--setenv",
                "DEBIAN_FRONTEND",
                "noninteractive",
                "--setenv",
                "SOURCE_DATE_EPOCH",
                "1700000000",
                "--",
            ])
            .args(["/bin/sh", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&work).unwrap();
    };

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for n in 0..runs {
        let t = Instant::now();
        by_hand(n);
        theirs.push(t.elapsed());
        let t = Instant::now();
        build(&manifest(n));
        ours.push(t.elapsed());
    }
    let m = manifest(0);
    let mut warm: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            build(&m);
            t.elapsed()
        })
        .collect();
    let (o, t, w) = (
        common::median(&mut ours),
        common::median(&mut theirs),
        common::median(&mut warm),
    );
    println!("strata package bench: {runs} alternations, medians (environment cached)");
    println!(
        "  by hand (build-dep + dpkg-buildpackage): {:>7.2} s",
        t.as_secs_f64()
    );
    println!(
        "  strata build stage (cold):               {:>7.2} s   ({:.3}x by hand; target <= 1.10x)",
        o.as_secs_f64(),
        o.as_secs_f64() / t.as_secs_f64()
    );
    println!(
        "  strata warm re-run:                      {:>7.2} ms  (target <= 50 ms)",
        w.as_secs_f64() * 1000.0
    );
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}
