//! Hostile stages (issue 15, classes 1 and 6): what a stage leaves for the
//! engine is read without following links, never blocks and is capped;
//! what strata writes into an output directory never goes through a link
//! someone left there. Every run is bounded: while a hole is open the test
//! fails, it does not hang.

use crate::support::{Env, Run, bounded};
use serde_json::{Value, json};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

/// One pipeline `p` running the libdir stage `hostile`.
fn hostile(env: &Env, script: &str) -> (Value, std::path::PathBuf) {
    let lib = env.script_stage("hostile", script, Value::Null);
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "hostile"}]}]});
    (m, lib)
}

fn build_json(env: &Env, m: &Value, lib: &Path) -> (Run, Duration) {
    bounded(
        env,
        &["build", "-", "--json", "--libdir", lib.to_str().unwrap()],
        &m.to_string(),
        Duration::from_secs(120),
    )
}

#[test]
fn a_meta_json_linked_to_a_host_file_is_refused_and_not_read() {
    let env = Env::new();
    // Root-only, outside anything the stage sees; JSON, so that reading it
    // would have made it the stage's metadata. Env's folder (and this file)
    // goes when the test ends.
    let secret_value = format!("strata-secret-{}", std::process::id());
    let secret = env.path("secret.json");
    std::fs::write(&secret, json!({"secret": secret_value}).to_string()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (m, lib) = hostile(
        &env,
        &format!("ln -s {} /run/strata/meta.json", secret.display()),
    );
    let (run, _) = build_json(&env, &m, &lib);
    assert_eq!(run.code(), 1, "{}", run.describe());
    let all = format!("{}{}", run.stdout(), run.stderr());
    assert!(!all.contains(&secret_value), "the secret leaked:\n{all}");
    assert!(
        run.stderr().contains(
            "stage 0 (hostile) of pipeline `p` failed: its /run/strata/meta.json was not read: \
             meta.json is a symbolic link, which strata does not follow"
        ),
        "{}",
        run.describe()
    );
    let doc: Value = serde_json::from_slice(&run.0.stdout).unwrap();
    assert_eq!(doc["success"], false);
    assert!(
        doc["error"]["status"]
            .as_str()
            .unwrap()
            .contains("meta.json")
    );
    assert!(env.objects().is_empty(), "{:?}", env.objects());
}

#[test]
fn a_fifo_meta_json_fails_at_once() {
    let env = Env::new();
    // Nobody ever writes to it: an open that waits for a writer never ends.
    let (m, lib) = hostile(&env, "mkfifo /run/strata/meta.json");
    let (run, took) = build_json(&env, &m, &lib);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr()
            .contains("meta.json is a FIFO, not a regular file"),
        "{}",
        run.describe()
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn an_oversized_meta_json_names_the_cap() {
    let env = Env::new();
    // 2 MiB of valid JSON: refused for its size, not its syntax.
    let (m, lib) = hostile(
        &env,
        "{ printf '\"'; head -c 2097152 /dev/zero | tr '\\0' a; printf '\"'; } > /run/strata/meta.json",
    );
    let (run, _) = build_json(&env, &m, &lib);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr()
            .contains("meta.json is larger than the 1 MiB cap on files strata reads back"),
        "{}",
        run.describe()
    );
    // The content is not echoed back either.
    assert!(!run.stdout().contains("aaaaaaaa") && !run.stderr().contains("aaaaaaaa"));
}

#[test]
fn a_plain_meta_json_is_still_read() {
    let env = Env::new();
    let (m, lib) = hostile(&env, "echo '{\"said\": \"hello\"}' > /run/strata/meta.json");
    let (run, _) = build_json(&env, &m, &lib);
    run.success();
    let doc: Value = serde_json::from_slice(&run.0.stdout).unwrap();
    assert_eq!(
        doc["pipelines"][0]["stages"][0]["metadata"],
        json!({"said": "hello"}),
        "{doc:#}"
    );
}

/// `strata ARGS` (stdin `input`) refused with exit 2 because its output
/// exists already, then the same with `--force`: that second run.
fn refused_then_forced(env: &Env, args: &[&str], input: &str) -> Run {
    let limit = Duration::from_secs(120);
    let (run, _) = bounded(env, args, input, limit);
    assert_eq!(run.code(), 2, "refused without --force: {}", run.describe());
    assert!(
        run.stderr().contains("exists already"),
        "{}",
        run.describe()
    );
    let forced = [args, &["--force"]].concat();
    bounded(env, &forced, input, limit).0
}

#[test]
fn an_export_never_goes_through_a_link_in_the_output_directory() {
    let env = Env::new();
    let out = env.out();
    std::fs::create_dir_all(&out).unwrap();
    let elsewhere = env.path("elsewhere");
    symlink(&elsewhere, out.join("p")).unwrap();
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [
        {"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]}]});
    let args = [
        "build",
        "-",
        "--export",
        "p",
        "--output-directory",
        out.to_str().unwrap(),
    ];
    let run = refused_then_forced(&env, &args, &m.to_string());
    run.success();
    assert!(
        elsewhere.symlink_metadata().is_err(),
        "the link's target was made"
    );
    let md = out.join("p").symlink_metadata().unwrap();
    assert!(md.is_dir(), "{md:?}");
    assert!(out.join("p/x").is_dir());
    // Nothing of the staging is left beside it.
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["p"]);
}

#[test]
fn artifacts_json_never_goes_through_a_link() {
    let env = Env::new();
    let out = env.out();
    std::fs::create_dir_all(&out).unwrap();
    let target = env.path("written-through");
    symlink(&target, out.join("artifacts.json")).unwrap();
    // A bootstrap from a suite that does not exist, cut at one second: the
    // task fails fast (no network needed) and still writes artifacts.json.
    let task = json!({"task": "SystemBootstrap", "task_data": {
        "bootstrap_options": {"architecture": "amd64", "variant": "minbase"},
        "bootstrap_repositories": [{"suite": "strata-no-such-suite", "components": ["main"]}]}});
    let args = [
        "task",
        "run",
        "-",
        "--output-directory",
        out.to_str().unwrap(),
        "--stage-timeout",
        "1",
        "--quiet",
    ];
    let run = refused_then_forced(&env, &args, &task.to_string());
    assert_eq!(run.code(), 1, "the task fails: {}", run.describe());
    assert!(
        target.symlink_metadata().is_err(),
        "artifacts.json was written through the link"
    );
    let md = out.join("artifacts.json").symlink_metadata().unwrap();
    assert!(md.is_file(), "{md:?}");
    assert_eq!(md.permissions().mode() & 0o777, 0o644);
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("artifacts.json")).unwrap())
            .unwrap();
    assert_ne!(doc["result"], "success", "{doc:#}");
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["artifacts.json"], "no staged file is left");
}
