//! Secrets: a curl item and a stage that name secrets get them, and no
//! channel strata writes to holds them afterwards — stdout, stderr, the
//! --json document, the monitor stream, `inspect`, the store (objects,
//! logs, metadata, kept failures) and the exported tree.

use crate::support::{Env, checksum};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

const PASSWORD: &str = "Pw-0f-the-mirror-7731";
const TOKEN: &str = "T0ken-that-must-not-leak-4410";

/// Serves `body` at /private to requests whose basic auth is
/// `bob:PASSWORD`; 401 otherwise.
fn private_server(body: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // base64("bob:" + PASSWORD)
    let want = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("bob:{PASSWORD}"))
    };
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let mut authorized = false;
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                if line.trim() == format!("Authorization: Basic {want}") {
                    authorized = true;
                }
                line.clear();
            }
            let _ = if authorized {
                write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .and_then(|()| stream.write_all(body))
            } else {
                stream.write_all(b"HTTP/1.0 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            };
        }
    });
    base
}

/// Every file under `dir` (not following links) that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_file()
            && let Ok(bytes) = std::fs::read(entry.path())
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            found.push(entry.path().display().to_string());
        }
    }
    found
}

fn assert_nowhere(env: &Env, outputs: &[&str]) {
    for secret in [PASSWORD, TOKEN] {
        for (i, text) in outputs.iter().enumerate() {
            assert!(!text.contains(secret), "output {i} holds a secret:\n{text}");
        }
        let held = files_holding(&env.path(""), secret);
        // The secrets file itself is the only place it may be.
        assert_eq!(
            held,
            [env.path("secrets.json").display().to_string()],
            "{secret}"
        );
    }
}

fn setup(env: &Env, script_tail: &str) -> (Value, std::path::PathBuf) {
    std::fs::write(
        env.path("secrets.json"),
        json!({"mirror": format!("bob:{PASSWORD}"), "token": TOKEN}).to_string(),
    )
    .unwrap();
    let base = private_server(b"private bytes");
    let item = checksum(b"private bytes");
    let lib = env.script_stage(
        "peek",
        &format!(
            "set -e\nt=/run/strata/tree\n\
             cat /run/strata/secrets/token; echo\n\
             sha256sum < /run/strata/secrets/token | cut -d' ' -f1 > $t/token.sum\n\
             cp /run/strata/inputs/private/* $t/private\n{script_tail}"
        ),
        Value::Null,
    );
    let m = json!({
        "version": "2",
        "sources": {"curl": {"items": {item.clone(): {
            "url": format!("{base}/private"), "secrets": {"name": "mirror"}}}}},
        "pipelines": [{"name": "p", "stages": [{
            "type": "peek",
            "options": {"auth": {"secrets": {"name": "token"}}},
            "inputs": {"private": {"type": "files", "origin": "source", "references": [item]}}
        }]}]
    });
    (m, lib)
}

/// Scans every process's argv and environment for the secrets until
/// dropped; `seen` then names any process that showed one.
struct ArgvWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl ArgvWatch {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut scans, mut seen) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    for what in ["cmdline", "environ"] {
                        let Ok(bytes) = std::fs::read(entry.path().join(what)) else {
                            continue;
                        };
                        for secret in [PASSWORD, TOKEN] {
                            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                                seen.push(format!("{}/{what}", entry.path().display()));
                            }
                        }
                    }
                }
                scans += 1;
            }
            (scans, seen)
        });
        ArgvWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// `strata build` of `m` with the stages of `lib` and the secrets file.
fn build_with(env: &Env, m: &Value, lib: &Path, extra: &[&str]) -> crate::support::Run {
    let secrets = env.path("secrets.json");
    let mut args = vec![
        "--libdir",
        lib.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    env.build(m, &args)
}

/// [`build_with`] with `--json`, parsed.
fn build_with_json(
    env: &Env,
    m: &Value,
    lib: &Path,
    extra: &[&str],
) -> (crate::support::Run, Value) {
    let run = build_with(env, m, lib, &[extra, &["--json"]].concat());
    let doc = serde_json::from_slice(&run.0.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", run.describe()));
    (run, doc)
}

#[test]
fn secrets_reach_what_names_them_and_no_channel_holds_them() {
    let env = Env::new();
    let (m, lib) = setup(&env, "");
    let watch = ArgvWatch::start();
    let secrets = env.path("secrets.json");
    let out = env.out();
    let run = build_with(
        &env,
        &m,
        &lib,
        &[
            "--json",
            "-v",
            "--export",
            "p",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.describe());
    let (scans, seen) = watch.finish();
    assert!(scans > 0);
    assert!(seen.is_empty(), "a process showed a secret: {seen:?}");
    let tree = out.join("p");
    assert_eq!(
        std::fs::read(tree.join("private")).unwrap(),
        b"private bytes"
    );
    let sum = checksum(TOKEN.as_bytes())
        .trim_start_matches("sha256:")
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(tree.join("token.sum"))
            .unwrap()
            .trim(),
        sum,
        "the stage read the secret"
    );
    assert!(
        run.stderr().contains("<redacted>"),
        "the log line was redacted:\n{}",
        run.describe()
    );
    let monitor = build_with(&env, &m, &lib, &["--monitor", "json-seq"]);
    let inspect = env.strata(
        &["inspect", "-", "--libdir", lib.to_str().unwrap()],
        Some(&m.to_string()),
    );
    assert_nowhere(
        &env,
        &[
            &run.stdout(),
            &run.stderr(),
            &monitor.stdout(),
            &monitor.stderr(),
            &inspect.stdout(),
        ],
    );

    // A changed secret is not a changed build: the same ids, all reused.
    std::fs::write(
        &secrets,
        json!({"mirror": format!("bob:{PASSWORD}"), "token": "another-token-value"}).to_string(),
    )
    .unwrap();
    let (again, doc) = build_with_json(&env, &m, &lib, &[]);
    assert_eq!(again.code(), 0, "{}", again.describe());
    assert_eq!(
        doc["pipelines"][0]["stages"][0]["status"], "cached",
        "{doc:#}"
    );
}

#[test]
fn a_failing_stage_with_secrets_keeps_them_out_of_errors_and_kept_failures() {
    let env = Env::new();
    // Printed in two pieces, so that the script itself does not hold it.
    let (head, tail) = PASSWORD.split_at(5);
    let (m, lib) = setup(
        &env,
        &format!("printf 'mirror is bob:%s' '{head}' >&2; echo '{tail}' >&2\nexit 3"),
    );
    // The stage prints the token and then the password, which it was never
    // given, but whose value is a secret all the same.
    let run = build_with(&env, &m, &lib, &["--keep-failed", "--json"]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(run.stderr().contains("exit"), "{}", run.describe());
    assert_nowhere(&env, &[&run.stdout(), &run.stderr()]);
    // Without the file the build says which secret is missing, not a value
    // (the curl item is in the store already; the stage needs its own).
    let run = env.build(&m, &["--libdir", lib.to_str().unwrap()]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains("needs the secret \"token\""),
        "{}",
        run.describe()
    );
}

#[test]
fn credentials_in_a_url_work_are_redacted_and_draw_a_warning() {
    let env = Env::new();
    let base = private_server(b"private bytes");
    let item = checksum(b"private bytes");
    let url = base.replace("http://", &format!("http://bob:{PASSWORD}@"));
    let lib = env.script_stage(
        "take",
        "cp /run/strata/inputs/f/* /run/strata/tree/private",
        Value::Null,
    );
    let m = json!({
        "version": "2",
        "sources": {"curl": {"items": {item.clone(): format!("{url}/private")}}},
        "pipelines": [{"name": "p", "stages": [{
            "type": "take",
            "options": {"mirror": format!("{url}/debian")},
            "inputs": {"f": {"type": "files", "origin": "source", "references": [item]}}
        }]}]
    });
    let run = env.build(&m, &["--json", "--libdir", lib.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(
        run.stderr().contains("the place for them is --secrets"),
        "{}",
        run.describe()
    );
    assert!(!run.stderr().contains(PASSWORD) && !run.stdout().contains(PASSWORD));
    let inspect = env.strata(
        &["inspect", "-", "--libdir", lib.to_str().unwrap()],
        Some(&m.to_string()),
    );
    assert!(
        inspect.stdout().contains("<redacted>@127.0.0.1"),
        "{}",
        inspect.describe()
    );
    assert!(!inspect.stdout().contains(PASSWORD));
    assert!(files_holding(&env.path(""), PASSWORD).is_empty());
}
