//! Bad input: every case is a clear error naming where, exit 2, and the
//! store is left as it was (here: never even created).

use crate::support::{Env, HttpServer, checksum, inline_sources};
use serde_json::{Value, json};

fn mkdir(path: &str) -> Value {
    json!({"type": "mkdir", "options": {"paths": [{"path": path}]}})
}

fn one(stages: Value) -> Value {
    json!({"version": "2", "pipelines": [{"name": "p", "stages": stages}]})
}

fn tree_input(pipeline: &str) -> Value {
    json!({"type": "tree", "origin": "pipeline", "references": [format!("name:{pipeline}")]})
}

/// (case, manifest text, what stderr must say)
fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let item = checksum(b"x");
    let mut v: Vec<(&str, Value, Vec<&str>)> = vec![
        ("not an object", json!([]), vec!["(document)", "object"]),
        (
            "missing version",
            json!({"pipelines": []}),
            vec!["version", "hint: strata reads manifest format version 2"],
        ),
        (
            "wrong version",
            json!({"version": "1", "pipelines": []}),
            vec!["/version", "\"2\""],
        ),
        (
            "pipelines not a list",
            json!({"version": "2", "pipelines": {}}),
            vec!["/pipelines", "array"],
        ),
        (
            "unknown top-level key",
            json!({"version": "2", "pipelines": [], "pipeline": []}),
            vec!["pipeline", "not allowed"],
        ),
        (
            "unknown pipeline key",
            json!({"version": "2", "pipelines": [{"name": "p", "stage": []}]}),
            vec!["/pipelines/0", "stage"],
        ),
        (
            "unknown stage key",
            one(json!([{"type": "mkdir", "option": {}}])),
            vec!["/pipelines/0/stages/0", "option", "in pipeline `p`"],
        ),
        (
            "stage without type",
            one(json!([{"options": {}}])),
            vec!["/pipelines/0/stages/0", "type"],
        ),
        (
            "unknown stage type",
            one(json!([{"type": "mkdri", "options": {}}])),
            vec![
                "/pipelines/0/stages/0/type",
                "unknown stage type `mkdri`",
                "did you mean `mkdir`?",
            ],
        ),
        (
            "options of the wrong type",
            one(json!([{"type": "mkdir", "options": {"paths": "/etc"}}])),
            vec![
                "/pipelines/0/stages/0/options/paths",
                "array",
                "stage 0 (mkdir)",
            ],
        ),
        (
            "unknown option",
            one(json!([{"type": "mkdir", "options": {"paths": [{"path": "/a"}], "mdoe": 1}}])),
            vec!["/pipelines/0/stages/0/options", "mdoe"],
        ),
        (
            "mode as a string",
            one(json!([{"type": "mkdir", "options": {"paths": [{"path": "/a", "mode": "0755"}]}}])),
            vec!["/pipelines/0/stages/0/options/paths/0/mode"],
        ),
        (
            "relative tree path",
            one(json!([mkdir("etc")])),
            vec![
                "/pipelines/0/stages/0/options/paths/0/path",
                "inside its tree",
            ],
        ),
        (
            "path leaving the tree",
            one(json!([mkdir("/../etc")])),
            vec![
                "/pipelines/0/stages/0/options/paths/0/path",
                "inside its tree",
            ],
        ),
        (
            "absolute path resolving outside",
            one(
                json!([{"type": "write", "options": {"files": [{"path": "/a/../../etc/passwd", "content": "x"}]}}]),
            ),
            vec!["/pipelines/0/stages/0/options/files/0/path"],
        ),
        (
            "copy from outside its input",
            one(
                json!([{"type": "copy", "inputs": {"t": tree_input("p")}, "options": {"paths": [{"from": "input://t/../../etc", "to": "tree:///x"}]}}]),
            ),
            vec!["/pipelines/0/stages/0/options/paths/0/from"],
        ),
        (
            "copy to outside the tree",
            json!({"version": "2", "pipelines": [{"name": "a", "stages": [mkdir("/x")]}, {"name": "p", "stages": [{"type": "copy", "inputs": {"t": tree_input("a")}, "options": {"paths": [{"from": "input://t/x", "to": "tree:///../x"}]}}]}]}),
            vec![
                "/pipelines/1/stages/0/options/paths/0/to",
                "in pipeline `p`",
            ],
        ),
        (
            "tar filename with a path",
            one(json!([{"type": "tar", "options": {"filename": "../x.tar"}}])),
            vec!["/pipelines/0/stages/0/options/filename"],
        ),
        (
            "duplicate pipeline names",
            json!({"version": "2", "pipelines": [{"name": "a", "stages": [mkdir("/x")]}, {"name": "a", "stages": [mkdir("/y")]}]}),
            vec!["/pipelines/1/name", "duplicate pipeline name `a`"],
        ),
        (
            "unknown build pipeline",
            json!({"version": "2", "pipelines": [{"name": "p", "build": "name:bulid", "stages": [mkdir("/x")]}, {"name": "build", "stages": [mkdir("/y")]}]}),
            vec![
                "/pipelines/0/build",
                "unknown pipeline `bulid`",
                "did you mean `name:build`?",
            ],
        ),
        (
            "build without name: prefix",
            json!({"version": "2", "pipelines": [{"name": "p", "build": "other", "stages": []}]}),
            vec!["/pipelines/0/build", "name:"],
        ),
        (
            "tree input from an unknown pipeline",
            one(
                json!([{"type": "tar", "inputs": {"tree": tree_input("nope")}, "options": {"filename": "a.tar"}}]),
            ),
            vec![
                "/pipelines/0/stages/0/inputs/tree/references/0",
                "unknown pipeline `nope`",
            ],
        ),
        (
            "files input of an unlisted source",
            one(
                json!([{"type": "copy", "inputs": {"f": {"type": "files", "origin": "source", "references": [item]}}, "options": {"paths": [{"from": "input://f/x", "to": "tree:///x"}]}}]),
            ),
            vec![
                "/pipelines/0/stages/0/inputs/f/references/0",
                "unknown source item",
            ],
        ),
        (
            "input type and origin mismatch",
            one(
                json!([{"type": "tar", "inputs": {"tree": {"type": "tree", "origin": "source", "references": ["sha256:00"]}}, "options": {"filename": "a.tar"}}]),
            ),
            vec![
                "/pipelines/0/stages/0/inputs/tree/origin",
                "cannot have origin `source`",
            ],
        ),
        (
            "input name with traversal",
            one(
                json!([{"type": "tar", "inputs": {"../tree": tree_input("p")}, "options": {"filename": "a.tar"}}]),
            ),
            vec!["/pipelines/0/stages/0/inputs", "../tree"],
        ),
        (
            "cycle",
            json!({"version": "2", "pipelines": [
            {"name": "a", "build": "name:b", "stages": [mkdir("/x")]},
            {"name": "b", "stages": [{"type": "tar", "inputs": {"tree": tree_input("a")}, "options": {"filename": "a.tar"}}]}]}),
            vec!["cycle", "a → b → a"],
        ),
        (
            "pipeline that is its own build root",
            json!({"version": "2", "pipelines": [{"name": "a", "build": "name:a", "stages": [mkdir("/x")]}]}),
            vec!["cycle", "a → a"],
        ),
        (
            "negative source-epoch",
            json!({"version": "2", "pipelines": [{"name": "a", "source-epoch": -1, "stages": []}]}),
            vec!["/pipelines/0/source-epoch"],
        ),
        (
            "unknown source type",
            json!({"version": "2", "pipelines": [], "sources": {"ftp": {"items": {}}}}),
            vec!["/sources/ftp", "ftp"],
        ),
        (
            "malformed checksum",
            json!({"version": "2", "pipelines": [], "sources": {"inline": {"items": {"md5:abc": {"encoding": "base64", "data": ""}}}}}),
            vec!["/sources/inline/items/md5:abc"],
        ),
        (
            "inline item in another encoding",
            json!({"version": "2", "pipelines": [], "sources": {"inline": {"items": {item.clone(): {"encoding": "hex", "data": "78"}}}}}),
            vec!["/sources/inline/items/sha256:", "base64"],
        ),
        (
            "unknown runner",
            json!({"version": "2", "pipelines": [{"name": "a", "runner": "fedora", "stages": [mkdir("/x")]}]}),
            vec!["/pipelines/0/runner", "unknown runner `fedora`"],
        ),
        (
            "a newline in an extra repository's URL (it would start a deb822 field)",
            one(
                json!([{"type": "build", "options": {"host_architecture": "amd64",
                "extra_repositories": [{"url": "http://127.0.0.1/x\nTrusted: yes", "suite": "./"}]}}]),
            ),
            vec!["/pipelines/0/stages/0/options/extra_repositories/0/url"],
        ),
        (
            "a carriage return in a binNMU maintainer (an e-mail header)",
            one(
                json!([{"type": "build", "options": {"host_architecture": "amd64",
                "binnmu": {"changelog": "x", "maintainer": "a <b@c>\r"}}}]),
            ),
            vec!["/pipelines/0/stages/0/options/binnmu/maintainer"],
        ),
        (
            "a newline in DEB_BUILD_OPTIONS",
            one(
                json!([{"type": "build", "options": {"host_architecture": "amd64",
                "build_options": "nocheck\nparallel=2"}}]),
            ),
            vec!["/pipelines/0/stages/0/options/build_options"],
        ),
        (
            "a newline after a bootstrap mirror",
            one(
                json!([{"type": "bootstrap", "options": {"bootstrap_repositories": [
                {"mirror": "http://127.0.0.1/debian\n", "suite": "bookworm"}]}}]),
            ),
            vec!["/pipelines/0/stages/0/options/bootstrap_repositories/0/mirror"],
        ),
        (
            "pipeline name with a slash",
            json!({"version": "2", "pipelines": [{"name": "a/b", "stages": []}]}),
            vec!["/pipelines/0/name"],
        ),
    ];
    let mut out: Vec<(&str, String, Vec<&str>)> =
        v.drain(..).map(|(n, m, e)| (n, m.to_string(), e)).collect();
    out.push((
        "malformed JSON",
        "{\"version\": \"2\",\n \"pipelines\": [}".into(),
        vec!["malformed JSON at line 2, column"],
    ));
    out.push((
        "empty input",
        String::new(),
        vec!["malformed JSON at line 1"],
    ));
    out
}

#[test]
fn bad_manifests_are_clear_errors_before_anything_runs() {
    let env = Env::new();
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (name, text, expected) in &cases {
        for cmd in ["build", "inspect"] {
            let run = env.strata(&[cmd, "-"], Some(text));
            let err = run.stderr();
            let ok = run.code() == 2
                && err.starts_with("error: invalid manifest <stdin>")
                && expected.iter().all(|e| err.contains(e))
                && run.stdout().is_empty()
                && !err.contains("panicked");
            if !ok {
                failures.push(format!(
                    "{cmd} / {name}: expected {expected:?}\n{}",
                    run.describe()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        !env.store().exists(),
        "a bad manifest must not touch the store"
    );
}

#[test]
fn checksum_mismatch_fails_before_any_stage() {
    let env = Env::new();
    let mut sources = inline_sources(&[b"real"]);
    let good = checksum(b"real");
    let bad = checksum(b"other");
    let item = sources["inline"]["items"][&good].take();
    sources["inline"]["items"] = json!({ bad.clone(): item });
    let manifest = json!({"version": "2", "pipelines": [{"name": "p", "stages": [mkdir("/x")]}], "sources": sources});
    let run = env.build(&manifest, &["--checkpoint", "*"]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    let err = run.stderr();
    assert!(
        err.contains(&bad) && err.contains(&good),
        "names expected and actual: {err}"
    );
    assert!(!err.contains("running"), "no stage may run: {err}");
    assert!(env.objects().is_empty());
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
    let inline = env.store().join("sources/inline");
    assert!(!inline.exists() || std::fs::read_dir(inline).unwrap().next().is_none());
}

/// A source that cannot be downloaded is the world's fault, not the
/// manifest's: a build failure (1), while a download that is not what its
/// checksum says means the manifest is wrong (2).
#[test]
fn a_source_that_cannot_be_downloaded_fails_the_build_and_a_mismatch_is_invalid() {
    let server = HttpServer::start(vec![("/other".into(), b"not never".to_vec())]);
    let sum = checksum(b"never");
    for (url, code, says) in [
        (
            "http://127.0.0.1:1/never".to_owned(),
            1,
            "could not download",
        ),
        (server.url("/missing"), 1, "404"),
        (server.url("/other"), 2, "checksum mismatch"),
    ] {
        let env = Env::new();
        let manifest = json!({"version": "2", "pipelines": [{"name": "p", "stages": [mkdir("/x")]}],
            "sources": {"curl": {"items": {sum.clone(): {"url": url}}}}});
        let run = env.build(&manifest, &[]);
        assert_eq!(run.code(), code, "{url}: {}", run.describe());
        let err = run.stderr();
        assert!(err.contains(&sum) && err.contains(says), "{url}: {err}");
        assert!(code == 2 || err.contains(&url), "names the URL: {err}");
        assert!(env.objects().is_empty());
    }
}

#[test]
fn unknown_export_lists_the_pipelines() {
    let env = Env::new();
    let manifest =
        json!({"version": "2", "pipelines": [{"name": "tree", "stages": [mkdir("/x")]}]});
    let out = env.out();
    let run = env.build(
        &manifest,
        &[
            "--export",
            "tre",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr().contains("--export `tre`: no such pipeline"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("pipelines: tree"), "{}", run.stderr());
    let run = env.build(&manifest, &["--export", "tree"]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("--output-directory"),
        "{}",
        run.stderr()
    );
}

#[test]
fn checkpoint_pattern_matching_nothing_is_an_error() {
    let env = Env::new();
    let manifest =
        json!({"version": "2", "pipelines": [{"name": "tree", "stages": [mkdir("/x")]}]});
    let run = env.build(&manifest, &["--checkpoint", "nothing*"]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr().contains("--checkpoint `nothing*` matches no"),
        "{}",
        run.stderr()
    );
}

#[test]
fn missing_manifest_file_is_named() {
    let env = Env::new();
    let run = env.strata(&["build", "/nonexistent/m.json"], None);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("/nonexistent/m.json"),
        "{}",
        run.stderr()
    );
}
