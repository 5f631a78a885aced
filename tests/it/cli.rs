//! The command line as a newcomer meets it: no silent wait for a manifest
//! typed on a terminal, a quiet end when stdout's reader goes away, exports
//! a retried build may replace, errors that say their cause once, the
//! version, completions and man pages.

use crate::progress::Tmux;
use crate::support::{Env, bin_dir, repo};
use serde_json::{Value, json};
use std::process::{Command, Stdio};

fn mkdir_manifest(path: &str) -> Value {
    json!({"version": "2", "pipelines": [{"name": "p", "stages": [
        {"type": "mkdir", "options": {"paths": [{"path": path}]}}]}]})
}

/// Each command that reads a document, started with none on a terminal,
/// ends at once with 2 and its usage instead of waiting for input.
#[test]
fn no_document_on_a_terminal_is_a_usage_error_not_a_wait() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("run")).unwrap();
    let strata = bin_dir().join("strata");
    for (args, usage, value) in [
        (
            "build",
            "Usage: strata build [OPTIONS] [MANIFEST]",
            "MANIFEST",
        ),
        (
            "inspect",
            "Usage: strata inspect [OPTIONS] [MANIFEST]",
            "MANIFEST",
        ),
        (
            "task compile",
            "Usage: strata task compile [OPTIONS] [TASK]",
            "TASK",
        ),
        (
            "task run --output-directory out",
            "Usage: strata task run [OPTIONS] --output-directory <DIR> [TASK]",
            "TASK",
        ),
    ] {
        // STRATA_STORE: the default store is no business of a test's.
        let command = format!(
            "STRATA_STORE={} {} {args}",
            env.store().display(),
            strata.display()
        );
        let tmux = Tmux::start(&env.path("run"), &command, &[]);
        let screen = tmux.wait_for("EXIT=");
        // The screen wraps long lines: compare it joined.
        let flat = screen.replace('\n', "");
        assert!(screen.contains("EXIT=2"), "{args}:\n{screen}");
        assert!(
            flat.contains(&format!("error: no {value} given, and stdin is a terminal")),
            "{args}:\n{screen}"
        );
        assert!(flat.contains(usage), "{args}:\n{screen}");
        assert!(flat.contains("give `-` to read"), "{args}:\n{screen}");
    }
    assert!(!env.out().exists() && !env.path("run/out").exists());
}

/// A pipe is not a terminal: with no MANIFEST, stdin is read as before.
#[test]
fn piped_stdin_is_still_read_without_a_dash() {
    let env = Env::new();
    let m = mkdir_manifest("/x");
    let run = env.strata(&["inspect"], Some(&m.to_string()));
    run.success();
    let doc: Value = serde_json::from_str(&run.stdout()).unwrap();
    assert!(doc["pipelines"][0]["id"].is_string(), "{doc:#}");
    env.strata(&["build", "--checkpoint", "*"], Some(&m.to_string()))
        .success();
    assert_eq!(env.objects().len(), 1, "{:?}", env.objects());
}

/// Runs strata with a stdout whose reader is already gone.
fn with_closed_stdout(env: &Env, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(bin_dir().join("strata"))
        .args(args)
        .env("STRATA_STORE", env.store())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `strata inspect … | head` and friends: when stdout's reader has gone,
/// strata ends quietly with SIGPIPE's status, not with a panic.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let env = Env::new();
    env.build(&mkdir_manifest("/x"), &["--checkpoint", "*"])
        .success();
    let hello = repo().join("manifests/hello.json");
    let m = env.path("m.json");
    std::fs::write(&m, mkdir_manifest("/y").to_string()).unwrap();
    for args in [
        vec!["inspect", hello.to_str().unwrap()],
        vec!["store", "ls"],
        vec!["store", "du"],
        vec!["completions", "bash"],
        vec!["build", m.to_str().unwrap(), "--json", "-q"],
        vec!["env", "ls", "--json"],
    ] {
        let (code, stderr) = with_closed_stdout(&env, &args);
        assert_eq!(code, 141, "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("internal error"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr, "", "{args:?} ends quietly");
    }
}

fn strs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

/// A retried build finds its export there: `--force` replaces it whole;
/// without it, the refusal says what to do.
#[test]
fn force_replaces_an_existing_export() {
    let env = Env::new();
    let out = env.out();
    let args = |force: bool| {
        let mut a = vec![
            "--export".to_owned(),
            "p".to_owned(),
            "--output-directory".to_owned(),
            out.to_str().unwrap().to_owned(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let first = args(false);
    env.build(&mkdir_manifest("/first"), &strs(&first))
        .success();
    assert!(out.join("p/first").is_dir());

    let refused = env.build(&mkdir_manifest("/second"), &strs(&first));
    assert_eq!(refused.code(), 2, "{}", refused.describe());
    assert!(
        refused.stderr().contains("exists already") && refused.stderr().contains("--force"),
        "{}",
        refused.stderr()
    );
    assert!(out.join("p/first").is_dir(), "a refusal changes nothing");

    let forced = args(true);
    env.build(&mkdir_manifest("/second"), &strs(&forced))
        .success();
    assert!(out.join("p/second").is_dir());
    assert!(
        !out.join("p/first").exists(),
        "the old export is gone whole"
    );
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["p"], "nothing staged is left beside it");
}

/// A stage error whose message quotes its I/O cause says it once (thiserror
/// also reports it as the source, and `{:#}` printed both).
#[test]
fn a_stage_error_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let args = dir.path().join("missing/args.json");
    let out = Command::new(bin_dir().join("strata-stage-mkdir"))
        .env("STRATA_ARGS", &args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cause = std::io::Error::from_raw_os_error(2).to_string();
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: cannot read the stage arguments {}: {cause}",
            args.display()
        )
    );
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

/// `strata --version` names the revision it was built from, here a git
/// checkout.
#[test]
fn the_version_names_the_git_revision() {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "the tests run in a git checkout");
    let rev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let run = Env::new().strata(&["--version"], None);
    run.success();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(run.stdout(), format!("strata {version} (git {rev})\n"));
}

/// Completions for every shell name the subcommands; bash's parses.
#[test]
fn completions_for_each_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = env.strata(&["completions", shell], None);
        run.success();
        for word in ["build", "inspect", "store", "task", "env", "--checkpoint"] {
            assert!(run.stdout().contains(word), "{shell}: no {word}");
        }
        if shell == "bash" {
            let script = env.path("strata.bash");
            std::fs::write(&script, run.stdout()).unwrap();
            let ok = Command::new("bash")
                .arg("-n")
                .arg(&script)
                .status()
                .unwrap();
            assert!(ok.success(), "bash -n refuses the completions");
        }
    }
    let bad = env.strata(&["completions", "tcsh"], None);
    assert_eq!(bad.code(), 2, "{}", bad.describe());
}

/// `--help` and the man pages give the same exit-code table as the README.
#[test]
fn the_exit_codes_are_documented_alike() {
    let run = Env::new().strata(&["--help"], None);
    run.success();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for (status, meaning) in strata::cli::docs::EXIT_CODES {
        assert!(
            run.stdout().contains(&format!("  {status:<4} {meaning}")),
            "--help: {status}"
        );
        assert!(
            readme.contains(&format!("| {status} | {meaning} |")),
            "README.md has no row `| {status} | {meaning} |`"
        );
    }
}
