//! `make bench`: the engine's own cost (issue 13). A 3-stage, 2-pipeline
//! manifest — mkdir, then a copy from an inline source, then tar of that
//! tree — built cold, against one bare `bwrap … true` in the same run, and
//! where the time goes: each `--monitor-fd` event is stamped as it arrives,
//! so the gaps between them are the engine's phases.
//!
//! Beside it, the same bare bwrap with strata's per-stage user namespace
//! (the `enter` step of engine/src/sandbox/userns.rs): what isolation
//! costs a stage.
//!
//! Targets: cold ≤ 60 ms on a 2-core machine (issue 13); the user namespace
//! ≤ 5 ms a stage (issue 14).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const CONTENT: &str = "Hello from strata.\n";

/// Composed with strata's own library API.
fn manifest() -> serde_json::Value {
    use serde_json::json;
    use strata::manifest::{Input, Manifest, Pipeline, SourceItem, Stage};
    let source = SourceItem::inline(CONTENT.as_bytes());
    let sum = source.checksum.as_str().to_owned();
    Manifest::new()
        .add_source(source.clone())
        .add_pipeline(
            Pipeline::new("tree")
                .with_source_epoch(1_700_000_000)
                .add_stage(Stage::new("mkdir", json!({"paths": [{"path": "/etc"}]})))
                .add_stage(
                    Stage::new(
                        "copy",
                        json!({"paths": [{"from": format!("input://files/{sum}"), "to": "tree:///etc/hello"}]}),
                    )
                    .add_input("files", Input::files([&source.checksum])),
                ),
        )
        .add_pipeline(
            Pipeline::new("tarball")
                .with_source_epoch(1_700_000_000)
                .add_stage(
                    Stage::new("tar", json!({"filename": "tree.tar"}))
                        .add_input("tree", Input::tree("tree")),
                ),
        )
        .to_value()
}

/// One cold build: its wall time and the phases between its events.
fn cold_build(strata: &Path, manifest: &Path, store: &Path) -> (Duration, Vec<(String, Duration)>) {
    // The events come on the child's stderr (`-q`: nothing else is said
    // there but an error, which is no event and is passed over).
    let (reader, writer) = std::io::pipe().unwrap();
    // Each event is placed by the time strata stamped it with, not by when
    // it arrived: a record is only known to be whole when the next one's
    // separator comes.
    let epoch = SystemTime::now();
    let started = Instant::now();
    let mut child = Command::new(strata)
        .args(["build", "-q", "--monitor-fd", "2", "--store"])
        .arg(store)
        .arg(manifest)
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut stamps: Vec<(String, Instant)> = vec![("exec".into(), started)];
    for record in BufReader::new(reader).split(0x1e) {
        let record = record.unwrap();
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&record) else {
            continue;
        };
        let kind = event["event"].as_str().unwrap_or("?").to_owned();
        let what = match kind.as_str() {
            "stage-start" | "stage-finish" => format!(
                "{kind} {}/{}",
                event["pipeline"].as_str().unwrap_or(""),
                event["index"]
            ),
            _ => kind,
        };
        let at = event["time"].as_f64().expect("events are stamped");
        let since = Duration::from_secs_f64(at)
            .saturating_sub(epoch.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        stamps.push((what, started + since));
    }
    assert!(child.wait().unwrap().success(), "the build failed");
    let wall = started.elapsed();
    stamps.push(("exit".into(), started + wall));
    let phases = stamps
        .windows(2)
        .map(|w| (format!("{} → {}", w[0].0, w[1].0), w[1].1 - w[0].1))
        .collect();
    (wall, phases)
}

fn main() {
    let (_, strata) = common::strata();
    let scratch = tempfile::tempdir().unwrap();
    let manifest = scratch.path().join("overhead.json");
    std::fs::write(&manifest, manifest_text()).unwrap();
    let runs = common::runs(15);
    let time = |f: fn()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let (mut walls, mut refs, mut entered) = (Vec::new(), Vec::new(), Vec::new());
    let mut phases: Vec<Vec<(String, Duration)>> = Vec::new();
    for i in 0..runs {
        refs.push(time(common::bare_bwrap));
        entered.push(time(common::bare_bwrap_entered));
        let (wall, p) = cold_build(&strata, &manifest, &scratch.path().join(format!("s{i}")));
        walls.push(wall);
        phases.push(p);
    }
    let wall = common::median(&mut walls);
    let r = common::median(&mut refs);
    let e = common::median(&mut entered);
    println!(
        "strata bench (engine overhead): {runs} cold builds of 3 stages in 2 pipelines, alternating with one bare bwrap, medians"
    );
    println!("  reference (one bare bwrap):  {:>8.2} ms", ms(r));
    println!(
        "  bare bwrap + the stage's user namespace: {:>8.2} ms   (+{:.2} ms a stage; target <= 5 ms)",
        ms(e),
        ms(e.saturating_sub(r))
    );
    println!(
        "  cold build:                  {:>8.2} ms   ({:.1}x reference; target <= 60 ms)",
        ms(wall),
        wall.as_secs_f64() / r.as_secs_f64()
    );
    println!("  where the time goes (median of each gap between monitor events):");
    let names: Vec<String> = phases[0].iter().map(|(n, _)| n.clone()).collect();
    for (k, name) in names.iter().enumerate() {
        let mut d: Vec<Duration> = phases
            .iter()
            .filter_map(|p| p.get(k).filter(|(n, _)| n == name).map(|(_, d)| *d))
            .collect();
        if !d.is_empty() {
            println!("    {:>8.2} ms  {name}", ms(common::median(&mut d)));
        }
    }
}

fn manifest_text() -> String {
    serde_json::to_string_pretty(&manifest()).unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
