//! Issue 7: parallel pipelines, the JSON event stream, the human views and
//! the debugging flags. Stages are shell scripts (fast); the live view and
//! `--break` run strata in a real pseudo-terminal (tmux).

use crate::support::{Env, Run, bin_dir, checksum, inline_sources, repo};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The records of an RFC 7464 stream: each is RS, JSON, LF.
fn records(bytes: &[u8]) -> Vec<Value> {
    assert!(
        bytes.is_empty() || bytes[0] == 0x1e,
        "a json-seq stream starts with RS: {}",
        String::from_utf8_lossy(bytes)
    );
    bytes
        .split(|&b| b == 0x1e)
        .skip(1)
        .map(|r| {
            assert!(r.ends_with(b"\n"), "a record ends with LF");
            serde_json::from_slice(r)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(r)))
        })
        .collect()
}

/// Every event checked against schemas/monitor-event.json.
fn validate(events: &[Value]) {
    let text = std::fs::read_to_string(repo().join("schemas/monitor-event.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for event in events {
        let errors: Vec<String> = validator
            .iter_errors(event)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{event}\ndoes not fit the schema: {errors:?}"
        );
    }
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// Index of the first event of `kind` for `pipeline` (and stage `index`).
fn at(events: &[Value], kind: &str, pipeline: &str, index: Option<u64>) -> usize {
    events
        .iter()
        .position(|e| {
            e["event"] == kind && e["pipeline"] == pipeline && index.is_none_or(|i| e["index"] == i)
        })
        .unwrap_or_else(|| panic!("no {kind} of {pipeline} {index:?} in {events:#?}"))
}

fn build_events(env: &Env, m: &Value, extra: &[&str]) -> (Run, Vec<Value>) {
    let mut args = vec!["--monitor", "json-seq"];
    args.extend_from_slice(extra);
    let run = env.build(m, &args);
    let events = records(&run.0.stdout);
    validate(&events);
    (run, events)
}

fn tree_input(pipeline: &str) -> Value {
    json!({"type": "tree", "origin": "pipeline", "references": [format!("name:{pipeline}")]})
}

#[test]
fn the_event_stream_fits_the_schema_and_keeps_order() {
    let env = Env::new();
    let lib = env.script_stage(
        "talk",
        "echo \"hello from $(sed -n 's/.*\"word\": \"\\([a-z]*\\)\".*/\\1/p' /run/strata/args.json)\"\nsleep 0.3\necho bye",
        Value::Null,
    );
    let data = b"source data";
    let m = json!({"version": "2", "pipelines": [
        {"name": "a", "stages": [{"type": "talk", "options": {"word": "a"}}, {"type": "mkdir", "options": {"paths": [{"path": "/a"}]}}]},
        {"name": "b", "stages": [{"type": "talk", "options": {"word": "b"}}]},
        {"name": "c", "stages": [{"type": "copy",
            "inputs": {"a": tree_input("a"), "b": tree_input("b"),
                       "f": {"type": "files", "origin": "source", "references": [{"id": checksum(data)}]}},
            "options": {"paths": [{"from": format!("input://f/{}", checksum(data)), "to": "tree:///f"}]}}]}],
        "sources": inline_sources(&[data])});
    let lib = lib.to_str().unwrap();
    let (run, events) = build_events(
        &env,
        &m,
        &["--libdir", lib, "--jobs", "2", "--checkpoint", "*"],
    );
    run.success();

    assert_eq!(events[0]["event"], "build-start", "{events:#?}");
    assert_eq!(events[0]["jobs"], 2);
    assert_eq!(events[0]["pipelines"][2]["needs"], json!(["a", "b"]));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "build-finish");
    assert_eq!(
        (
            last["success"].clone(),
            last["built"].clone(),
            last["reused"].clone()
        ),
        (json!(true), json!(4), json!(0))
    );

    let fetch = of_kind(&events, "source-fetch");
    assert!(
        fetch
            .iter()
            .any(|e| e["done"] == true && e["bytes"] == data.len() && e["item"] == checksum(data)),
        "{fetch:#?}"
    );
    let first_pipeline = events
        .iter()
        .position(|e| e["event"] == "pipeline-start")
        .unwrap();
    assert!(
        events[..first_pipeline]
            .iter()
            .any(|e| e["event"] == "source-fetch" && e["done"] == true),
        "sources come first"
    );

    // Every stage starts once, then finishes once; its log lines fall between.
    for (p, n) in [("a", 2), ("b", 1), ("c", 1)] {
        for i in 0..n {
            let start = at(&events, "stage-start", p, Some(i));
            let finish = at(&events, "stage-finish", p, Some(i));
            assert!(start < finish, "{p}/{i}");
            assert_eq!(events[finish]["status"], "built");
            assert_eq!(events[finish]["result"], "success");
            assert!(at(&events, "pipeline-start", p, None) < start);
            assert!(finish < at(&events, "pipeline-finish", p, None));
        }
        assert_eq!(
            events[at(&events, "pipeline-finish", p, None)]["result"],
            "success"
        );
    }
    let hello = at(&events, "log", "a", Some(0));
    assert_eq!(events[hello]["line"], "hello from a");
    assert!(
        at(&events, "stage-start", "a", Some(0)) < hello
            && hello < at(&events, "stage-finish", "a", Some(0))
    );
    // c needs a and b: both are done before it starts.
    let c = at(&events, "pipeline-start", "c", None);
    assert!(at(&events, "pipeline-finish", "a", None) < c);
    assert!(at(&events, "pipeline-finish", "b", None) < c);
    // a and b need nothing and there are two jobs: both started before either finished.
    assert!(at(&events, "pipeline-start", "b", None) < at(&events, "pipeline-finish", "a", None));
    assert!(at(&events, "pipeline-start", "a", None) < at(&events, "pipeline-finish", "b", None));
    let times: Vec<f64> = events.iter().map(|e| e["time"].as_f64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "times only go forward"
    );

    // Warm: nothing starts, every stage finishes as cached.
    let (run, warm) = build_events(&env, &m, &["--libdir", lib, "--checkpoint", "*"]);
    run.success();
    assert!(of_kind(&warm, "stage-start").is_empty());
    let finished = of_kind(&warm, "stage-finish");
    assert!(
        !finished.is_empty() && finished.iter().all(|e| e["status"] == "cached"),
        "{warm:#?}"
    );
    assert_eq!(warm.last().unwrap()["reused"], 4);
}

/// A stage that sleeps a second and reports when it ran.
fn timed_stage(env: &Env) -> PathBuf {
    env.script_stage(
        "nap",
        "s=$(date +%s.%N); sleep 1; e=$(date +%s.%N)\nprintf '{\"start\": %s, \"end\": %s}' \"$s\" \"$e\" > /run/strata/meta.json",
        Value::Null,
    )
}

fn intervals(jobs: &str) -> Vec<(f64, f64)> {
    let env = Env::new();
    let lib = timed_stage(&env);
    let m = json!({"version": "2", "pipelines": [
        {"name": "left", "stages": [{"type": "nap", "options": {"side": "left"}}]},
        {"name": "right", "stages": [{"type": "nap", "options": {"side": "right"}}]}]});
    let (run, doc) = env.build_json(&m, &["--libdir", lib.to_str().unwrap(), "--jobs", jobs]);
    run.success();
    (0..2)
        .map(|p| {
            let meta = &doc["pipelines"][p]["stages"][0]["metadata"];
            (
                meta["start"].as_f64().unwrap(),
                meta["end"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn independent_pipelines_run_at_the_same_time() {
    let together = intervals("2");
    let ((s0, e0), (s1, e1)) = (together[0], together[1]);
    assert!(
        s0 < e1 && s1 < e0,
        "with --jobs 2 the naps overlap: {together:?}"
    );
    let apart = intervals("1");
    let ((s0, e0), (s1, e1)) = (apart[0], apart[1]);
    assert!(e0 <= s1 || e1 <= s0, "with --jobs 1 they do not: {apart:?}");
}

fn failing_lib(env: &Env) -> String {
    env.script_stage("ok", "echo fine", Value::Null);
    env.script_stage(
        "bad",
        "echo 'about to fail'\necho 'the reason' >&2\nexit 3",
        Value::Null,
    )
    .to_str()
    .unwrap()
    .to_owned()
}

#[test]
fn a_failing_stage_is_in_the_stream_with_its_status_and_log() {
    let env = Env::new();
    let lib = failing_lib(&env);
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "ok"}, {"type": "bad"}]}]});
    let (run, events) = build_events(&env, &m, &["--libdir", &lib]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    let finish = &events[at(&events, "stage-finish", "p", Some(1))];
    assert_eq!(finish["status"], "failed");
    assert_eq!(finish["result"], "exit status 3");
    let errors = of_kind(&events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    let e = errors[0];
    assert_eq!(e["kind"], "stage");
    assert_eq!(e["pipeline"], "p");
    assert_eq!(e["stage"]["index"], 1);
    assert_eq!(e["stage"]["type"], "bad");
    assert_eq!(e["stage"]["id"], finish["id"]);
    assert_eq!(e["status"], "exit status 3");
    assert_eq!(e["log_tail"], json!(["about to fail", "the reason"]));
    assert_eq!(
        events[at(&events, "pipeline-finish", "p", None)]["result"],
        "failed"
    );
    let last = events.last().unwrap();
    assert_eq!(
        (
            last["event"].clone(),
            last["exit_code"].clone(),
            last["failed"].clone()
        ),
        (json!("build-finish"), json!(1), json!(1))
    );
}

#[test]
fn a_stage_timeout_is_in_the_stream() {
    let env = Env::new();
    let lib = env.script_stage("slow", "echo started\nsleep 60", Value::Null);
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "slow"}]}]});
    let began = Instant::now();
    let (run, events) = build_events(
        &env,
        &m,
        &["--libdir", lib.to_str().unwrap(), "--stage-timeout", "1"],
    );
    assert!(began.elapsed() < Duration::from_secs(20));
    assert_eq!(run.code(), 1, "{}", run.describe());
    let e = of_kind(&events, "error")[0];
    assert_eq!(
        e["status"],
        "timed out after 1s (--stage-timeout) and was ended"
    );
    assert_eq!(e["log_tail"], json!(["started"]));
    assert!(!run.stderr().contains("panicked"));
}

#[test]
fn keep_going_finishes_what_does_not_need_the_failure() {
    let env = Env::new();
    let lib = failing_lib(&env);
    // One at a time, in manifest order: broken fails first.
    let m = json!({"version": "2", "pipelines": [
        {"name": "broken", "stages": [{"type": "bad"}]},
        {"name": "after", "stages": [{"type": "ok", "inputs": {"t": tree_input("broken")}}]},
        {"name": "fine", "stages": [{"type": "ok"}]},
        {"name": "also-broken", "stages": [{"type": "bad", "options": {"again": true}}]}]});
    let result = |events: &[Value], p: &str| {
        events[at(events, "pipeline-finish", p, None)]["result"].clone()
    };

    let (run, events) = build_events(&env, &m, &["--libdir", &lib, "--jobs", "1"]);
    assert_eq!(run.code(), 1);
    assert_eq!(result(&events, "broken"), "failed");
    for p in ["after", "fine", "also-broken"] {
        assert_eq!(
            result(&events, p),
            "skipped",
            "a failure stops new work: {p}"
        );
    }

    let (run, events) = build_events(&env, &m, &["--libdir", &lib, "--jobs", "1", "--keep-going"]);
    assert_eq!(run.code(), 1);
    assert_eq!(result(&events, "broken"), "failed");
    assert_eq!(
        result(&events, "after"),
        "skipped",
        "it needs the failed pipeline"
    );
    assert_eq!(result(&events, "fine"), "success");
    assert_eq!(result(&events, "also-broken"), "failed");
    let failed: Vec<&Value> = of_kind(&events, "error")
        .iter()
        .map(|e| &e["pipeline"])
        .collect();
    assert_eq!(
        failed,
        [&json!("broken"), &json!("also-broken")],
        "every failure is reported"
    );
    let err = run.stderr();
    assert!(
        err.contains("error: stage 0 (bad) of pipeline `broken` failed: exit status 3"),
        "{err}"
    );
    assert!(
        err.contains("error: stage 0 (bad) of pipeline `also-broken` failed: exit status 3"),
        "{err}"
    );
}

#[test]
fn monitor_fd_leaves_stdout_to_json() {
    let env = Env::new();
    let lib = failing_lib(&env);
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "ok"}]}]});
    std::fs::write(env.path("m.json"), m.to_string()).unwrap();
    let events_file = env.path("events");
    let out = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" build \"$1\" --libdir \"$2\" --json --monitor-fd 3 3>\"$3\"")
        .arg(bin_dir().join("strata"))
        .arg(env.path("m.json"))
        .arg(&lib)
        .arg(&events_file)
        .env("STRATA_STORE", env.store())
        .output()
        .unwrap();
    let run = Run(out);
    run.success();
    let doc: Value =
        serde_json::from_str(&run.stdout()).expect("stdout is the --json document alone");
    assert_eq!(doc["success"], true);
    let events = records(&std::fs::read(&events_file).unwrap());
    validate(&events);
    assert_eq!(events.last().unwrap()["event"], "build-finish");
    assert_eq!(events[at(&events, "log", "p", Some(0))]["line"], "fine");

    let both = env.build(&m, &["--libdir", &lib, "--json", "--monitor", "json-seq"]);
    assert_eq!(both.code(), 2);
    assert!(
        both.stderr().contains("both want stdout"),
        "{}",
        both.stderr()
    );
    let bad_fd = env.build(&m, &["--libdir", &lib, "--monitor-fd", "57"]);
    assert_eq!(bad_fd.code(), 2);
    assert!(
        bad_fd.stderr().contains("--monitor-fd 57"),
        "{}",
        bad_fd.stderr()
    );
}

#[test]
fn an_invalid_manifest_is_an_error_event() {
    let env = Env::new();
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "no-such-stage"}]}]});
    let (run, events) = build_events(&env, &m, &[]);
    assert_eq!(run.code(), 2);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["kind"], "manifest");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-stage")
    );
    assert_eq!(events[1]["exit_code"], 2);
}

#[test]
fn keep_failed_keeps_tree_and_inputs_until_store_gc() {
    let env = Env::new();
    let lib = env.script_stage(
        "half",
        "echo partial > /run/strata/tree/partial\necho 'half done'\nexit 4",
        Value::Null,
    );
    let data = b"an input file";
    let m = json!({"version": "2", "pipelines": [
        {"name": "base", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/from-base"}]}}]},
        {"name": "p", "stages": [{"type": "half", "inputs": {
            "t": tree_input("base"),
            "f": {"type": "files", "origin": "source", "references": [{"id": checksum(data)}]}}}]}],
        "sources": inline_sources(&[data])});
    let lib = lib.to_str().unwrap();

    let (run, _) = build_events(&env, &m, &["--libdir", lib, "--checkpoint", "base"]);
    assert_eq!(run.code(), 1);
    assert!(
        !env.store().join("failed").exists(),
        "nothing is kept unless asked"
    );

    let (run, events) = build_events(
        &env,
        &m,
        &["--libdir", lib, "--checkpoint", "base", "--keep-failed"],
    );
    assert_eq!(run.code(), 1);
    let kept = PathBuf::from(
        of_kind(&events, "error")[0]["kept"]
            .as_str()
            .expect("kept in the event"),
    );
    assert!(
        kept.starts_with(env.store().canonicalize().unwrap().join("failed")),
        "{kept:?}"
    );
    assert!(
        run.stderr()
            .contains(&format!("kept in {}", kept.display())),
        "{}",
        run.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("tree/partial")).unwrap(),
        "partial\n"
    );
    assert!(kept.join("inputs/t/from-base").is_dir());
    assert_eq!(
        std::fs::read(kept.join("inputs/f").join(checksum(data))).unwrap(),
        data
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("log")).unwrap(),
        "half done\n"
    );
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(kept.join("args.json")).unwrap()).unwrap();
    assert_eq!(args["meta"]["stage"], "half");
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
    let objects = env.objects();

    let gc = env.strata(&["store", "gc"], None);
    gc.success();
    assert!(
        gc.stderr().contains("removed 1 kept failed stage"),
        "{}",
        gc.stderr()
    );
    assert!(!kept.exists());
    assert_eq!(
        env.objects(),
        objects,
        "gc of kept trees leaves the objects alone"
    );
}

/// A tmux session running one command in a pseudo-terminal (also used by
/// the command-line tests).
pub(crate) struct Tmux {
    name: String,
}

impl Tmux {
    pub(crate) fn start(dir: &Path, command: &str, env: &[(&str, &str)]) -> Tmux {
        crate::support::require("tmux");
        let name = format!(
            "strata-it-{}-{}",
            std::process::id(),
            dir.file_name().unwrap().to_string_lossy()
        );
        let mut cmd = Command::new("tmux");
        cmd.args([
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            "160",
            "-y",
            "50",
            "-c",
        ])
        .arg(dir);
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        cmd.arg(format!("{command}; echo EXIT=$?; sleep 120"));
        // Two tmux clients that both find no server both start one, and one
        // of them fails: tests here start one session at a time, and a
        // client that lost that race to another program tries again.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut tries = 0;
        loop {
            let out = cmd.output().unwrap();
            if out.status.success() {
                break;
            }
            tries += 1;
            assert!(
                tries < 3,
                "tmux new-session: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        Tmux { name }
    }

    /// The screen; with `escapes`, its colours as escape sequences.
    pub(crate) fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", &self.name];
        if escapes {
            args.push("-e");
        }
        let out = Command::new("tmux").args(&args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`.
    #[track_caller]
    pub(crate) fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen(false);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_line(&self, line: &str) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, "-l", line])
            .status()
            .unwrap()
            .success();
        let enter = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, "Enter"])
            .status()
            .unwrap()
            .success();
        assert!(ok && enter);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        crate::support::cleanup("tmux", &["kill-session", "-t", &self.name]);
    }
}

fn strata_command(env: &Env, manifest: &Value, flags: &str) -> String {
    std::fs::write(env.path("m.json"), manifest.to_string()).unwrap();
    format!(
        "{} build m.json --store {} {flags}",
        bin_dir().join("strata").display(),
        env.store().display()
    )
}

#[test]
fn the_live_view_shows_each_state_and_the_totals() {
    let env = Env::new();
    env.script_stage("quick", "echo quick", Value::Null);
    env.script_stage("bad", "echo 'about to fail'\nexit 3", Value::Null);
    let lib = env.script_stage(
        "work",
        "echo halfway-there\nsleep 3\necho finished",
        Value::Null,
    );
    let m = json!({"version": "2", "pipelines": [
        {"name": "base", "stages": [{"type": "quick"}]},
        {"name": "work", "stages": [{"type": "work", "inputs": {"t": tree_input("base")}}]},
        {"name": "broken", "stages": [{"type": "bad"}]}]});
    let lib = lib.to_str().unwrap();
    // base is in the store before the build under test.
    let first = json!({"version": "2", "pipelines": [m["pipelines"][0].clone()]});
    env.build(&first, &["--libdir", lib, "--checkpoint", "*"])
        .success();

    let tmux = Tmux::start(
        env.dir.path(),
        &strata_command(&env, &m, &format!("--libdir {lib} --jobs 3")),
        &[("NO_COLOR", "")],
    );
    let running = tmux.wait_for("halfway-there");
    let line = running
        .lines()
        .find(|l| l.contains("0 work ["))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("running") && line.contains("halfway-there"),
        "a running stage with its last log line:\n{running}"
    );
    let done = tmux.wait_for("EXIT=");
    let line_of = |needle: &str| {
        done.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line_of("0 quick [").contains("cached"), "{done}");
    assert!(line_of("0 work [").contains("done"), "{done}");
    assert!(
        line_of("0 bad [").contains("failed: exit status 3"),
        "{done}"
    );
    assert!(
        line_of("✓ work").contains("done"),
        "the pipeline's own line: {done}"
    );
    assert!(line_of("✗ broken").contains("failed"), "{done}");
    assert!(
        done.contains("built 1, reused 1, failed 1 in "),
        "totals: {done}"
    );
    assert!(
        done.contains("error: stage 0 (bad) of pipeline `broken` failed"),
        "{done}"
    );
    assert!(done.contains("EXIT=1"), "{done}");
    assert!(
        tmux.screen(true).contains("\x1b[32m"),
        "colour on a terminal"
    );
}

#[test]
fn the_live_view_without_colour_and_with_every_log_line() {
    let env = Env::new();
    let lib = env.script_stage(
        "talk",
        "echo line-one\necho line-two\necho line-three",
        Value::Null,
    );
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "talk"}]}]});
    let tmux = Tmux::start(
        env.dir.path(),
        &strata_command(&env, &m, &format!("--libdir {} -v", lib.display())),
        &[("NO_COLOR", "1")],
    );
    let done = tmux.wait_for("EXIT=0");
    for line in [
        "p/talk: line-one",
        "p/talk: line-two",
        "p/talk: line-three",
        "built 1, reused 0",
    ] {
        assert!(done.contains(line), "-v prints every log line: {done}");
    }
    let colours = tmux.screen(true);
    assert!(
        !colours.contains("\x1b[32m") && !colours.contains("\x1b[31m"),
        "NO_COLOR: {colours:?}"
    );
}

#[test]
fn break_opens_a_shell_in_the_stage_sandbox_before_it_runs() {
    let env = Env::new();
    // The stage proves it ran after the shell: it copies what the shell left.
    let lib = env.script_stage(
        "check",
        "cp /run/strata/tree/from-shell /run/strata/tree/seen-by-stage",
        Value::Null,
    );
    let m = json!({"version": "2", "pipelines": [
        {"name": "base", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/made-by-base"}]}}]},
        {"name": "target", "stages": [{"type": "check", "inputs": {"t": tree_input("base")}}]}]});
    let out = env.out();
    let tmux = Tmux::start(
        env.dir.path(),
        &strata_command(
            &env,
            &m,
            &format!(
                "--libdir {} --break check --export target --output-directory {}",
                lib.display(),
                out.display()
            ),
        ),
        &[],
    );
    tmux.wait_for("strata target/check#");
    tmux.type_line("ls /run/strata/inputs/t > /run/strata/tree/from-shell; exit");
    let done = tmux.wait_for("EXIT=");
    assert!(done.contains("EXIT=0"), "{done}");
    assert_eq!(
        std::fs::read_to_string(out.join("target/seen-by-stage")).unwrap(),
        "made-by-base\n"
    );

    // A stored stage runs again to be broken into; `exit 1` in the shell
    // stops the build there.
    drop(tmux);
    let env = Env::new();
    let lib = env.script_stage("check", "true", Value::Null);
    let lib = lib.to_str().unwrap();
    env.build(&m, &["--libdir", lib, "--checkpoint", "*"])
        .success();
    let tmux = Tmux::start(
        env.dir.path(),
        &strata_command(
            &env,
            &m,
            &format!("--libdir {lib} --checkpoint '*' --break check"),
        ),
        &[],
    );
    tmux.wait_for("strata target/check#");
    tmux.type_line("exit 1");
    let done = tmux.wait_for("EXIT=");
    assert!(done.contains("EXIT=1"), "{done}");
    assert!(
        done.contains("stopped at --break: the shell ended with exit status 1"),
        "{done}"
    );
}

#[test]
fn bad_progress_flags_are_usage_errors() {
    let env = Env::new();
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]}]});
    for (flags, says) in [
        (
            &["--break", "nothing"][..],
            "--break `nothing` matches no pipeline, stage type or stage id",
        ),
        (&["--jobs", "0"][..], "--jobs"),
        (&["-q", "-v"][..], "cannot be used with"),
        (&["--monitor", "xml"][..], "json-seq"),
    ] {
        let run = env.build(&m, flags);
        assert_eq!(run.code(), 2, "{flags:?}: {}", run.describe());
        assert!(run.stderr().contains(says), "{flags:?}: {}", run.stderr());
        assert!(!run.stderr().contains("panicked"));
    }
    assert!(env.objects().is_empty());
}

/// An HTTP server on 127.0.0.1 that answers each request after `delay`, on
/// its own thread, and records the most requests it had open at once.
fn slow_server(files: Vec<(String, Vec<u8>)>, delay: Duration) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (files, open, most) = (files.clone(), open.clone(), most.clone());
            std::thread::spawn(move || {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                std::thread::sleep(delay);
                let body = files
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, seen)
}

#[test]
fn sources_download_in_parallel_up_to_jobs() {
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| format!("item {i}\n").into_bytes()).collect();
    let files: Vec<(String, Vec<u8>)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("/{i}"), b.clone()))
        .collect();
    let (port, most) = slow_server(files, Duration::from_millis(700));
    let items: serde_json::Map<String, Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (checksum(b), json!(format!("http://127.0.0.1:{port}/{i}"))))
        .collect();
    let m = json!({"version": "2",
        "pipelines": [{"name": "p", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]}],
        "sources": {"curl": {"items": items}}});

    let env = Env::new();
    let (run, events) = build_events(&env, &m, &["--jobs", "2"]);
    run.success();
    assert_eq!(
        most.swap(0, Ordering::SeqCst),
        2,
        "two downloads at once, never three"
    );
    let done: Vec<&Value> = of_kind(&events, "source-fetch")
        .into_iter()
        .filter(|e| e["done"] == true)
        .collect();
    assert_eq!(done.len(), 3);
    assert!(
        done.iter()
            .all(|e| e["cached"] == false && e["type"] == "curl")
    );

    let env = Env::new();
    env.build(&m, &["--jobs", "1"]).success();
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "--jobs 1 downloads one at a time"
    );
}

#[test]
fn an_interrupt_stops_every_running_stage() {
    use std::io::{BufRead, BufReader};
    let env = Env::new();
    let lib = env.script_stage("slow", "echo started\nsleep 60", Value::Null);
    let m = json!({"version": "2", "pipelines": [
        {"name": "one", "stages": [{"type": "slow", "options": {"n": 1}}]},
        {"name": "two", "stages": [{"type": "slow", "options": {"n": 2}}]}]});
    std::fs::write(env.path("m.json"), m.to_string()).unwrap();
    let mut child = Command::new(bin_dir().join("strata"))
        .args(["build", "--jobs", "2", "--checkpoint", "*", "--libdir"])
        .arg(&lib)
        .arg(env.path("m.json"))
        .env("STRATA_STORE", env.store())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut started = 0;
    let mut line = String::new();
    while started < 2 && stderr.read_line(&mut line).unwrap() > 0 {
        started += usize::from(line.contains(": started"));
        line.clear();
    }
    assert_eq!(started, 2, "both stages run at once");
    let began = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "both were ended, not waited for"
    );
    assert_eq!(status.code(), Some(130));
    assert!(env.objects().is_empty());
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}
