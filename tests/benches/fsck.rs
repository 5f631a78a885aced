//! `make bench`, fsck part: `strata store fsck` of a bookworm minbase
//! bootstrap object (≈ 180 MB, the `system` pipeline of
//! manifests/debian-bookworm-minbase.json, as the debian bench builds it)
//! against `tar -cf /dev/null` of the same tree, run alternately on a warm
//! page cache; medians, and their ratio.
//!
//! GNU tar does not read a file's data when its archive is /dev/null (it
//! knows nothing would keep it), so that reference is a walk of names and
//! metadata; `tar -cf - | cat > /dev/null`, which reads every byte as
//! fsck must, is printed beside it for scale.
//!
//! Target (issue 15): fsck ≤ 2 × `tar -cf /dev/null`.
//! `STRATA_BENCH_RUNS` sets the number of alternations (default 5).

mod common;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let (root, strata) = common::strata();
    let runs = common::runs(5);
    let scratch = tempfile::tempdir().unwrap();

    let text =
        std::fs::read_to_string(root.join("manifests/debian-bookworm-minbase.json")).unwrap();
    let mut system: Value = serde_json::from_str(&text).unwrap();
    system["pipelines"].as_array_mut().unwrap().truncate(1);
    let manifest = scratch.path().join("system.json");
    std::fs::write(&manifest, system.to_string()).unwrap();
    let store = scratch.path().join("store");
    let doc = common::build_json(&strata, &store, &manifest);
    let id = doc["pipelines"][0]["stages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let layer = store.join("objects").join(&id).join("layer");
    let bytes = common::du(&layer);

    let fsck = || {
        let t = Instant::now();
        let out = Command::new(&strata)
            .args(["store", "fsck", "--store"])
            .arg(&store)
            .arg(&id)
            .output()
            .unwrap();
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    };
    let tar = |through_pipe: bool| {
        let t = Instant::now();
        let ok = if through_pipe {
            Command::new("sh")
                .arg("-c")
                .arg("tar -cf - -C \"$1\" . | cat > /dev/null")
                .arg("sh")
                .arg(&layer)
                .status()
                .unwrap()
                .success()
        } else {
            Command::new("tar")
                .args(["-cf", "/dev/null", "-C"])
                .arg(&layer)
                .arg(".")
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        let took = t.elapsed();
        assert!(ok, "tar failed");
        took
    };

    // One of each first: the page cache holds the tree for every run.
    fsck();
    tar(true);
    let (mut ours, mut reference, mut reading) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        reference.push(tar(false));
        ours.push(fsck());
        reading.push(tar(true));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (o, r, p) = (
        common::median(&mut ours),
        common::median(&mut reference),
        common::median(&mut reading),
    );
    println!("strata fsck bench: {runs} alternations, medians, warm page cache");
    println!(
        "  minbase bootstrap object:          {:>8.1} MB",
        bytes as f64 / 1e6
    );
    println!("  tar -cf /dev/null:                 {:>8.1} ms", ms(r));
    println!(
        "  strata store fsck ID:              {:>8.1} ms   ({:.2}x tar -cf /dev/null; target <= 2x)",
        ms(o),
        ms(o) / ms(r)
    );
    println!(
        "  tar -cf - | cat > /dev/null:       {:>8.1} ms   (reads the data, as fsck does; fsck {:.2}x)",
        ms(p),
        ms(o) / ms(p)
    );
}
