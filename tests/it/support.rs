//! Helpers shared by the integration tests: the built binaries, a store per
//! test, manifests built from JSON, a libdir with script stages, and a tiny
//! HTTP server on 127.0.0.1.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// target/debug (or release), where cargo put strata and the stage programs.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for name in ["strata", "strata-stage-mkdir", "strata-stage-tar"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build the workspace first (`cargo build --workspace`; `make test` does)",
            dir.join(name).display()
        );
    }
    dir
}

/// Where `program` is on PATH, if it is.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
}

/// How to get a tool the tests run, for the line a test fails with.
fn how_to_get(program: &str) -> &'static str {
    match program {
        "incus" => "run `bash docs/incus-setup.sh` (`make test` does)",
        _ => "run `make deps` (`make test` does)",
    }
}

/// Fails the calling test with one line naming `program` and how to get
/// it, before the test starts anything that would need cleaning up.
#[track_caller]
pub fn require(program: &str) {
    if on_path(program).is_none() {
        panic!(
            "{program} is not installed (not on PATH): {}",
            how_to_get(program)
        );
    }
}

/// Runs a clean-up command and ignores how it went, a missing program
/// included: it runs from `Drop`, where a panic during a test's unwinding
/// aborts the whole test binary and no other test reports.
pub fn cleanup(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every example manifest (manifests/*.json), sorted.
pub fn example_manifests() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("manifests"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

/// A scratch folder with a store in it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("strata-it-")
                .tempdir()
                .unwrap(),
        }
    }

    /// A scratch folder under `parent` (another filesystem, say).
    pub fn in_dir(parent: &Path) -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("strata-it-")
                .tempdir_in(parent)
                .unwrap(),
        }
    }

    /// `strata build -` of `manifest` with `extra` flags, started and left
    /// running (stdout and stderr piped).
    pub fn spawn_build(&self, manifest: &Value, extra: &[&str]) -> std::process::Child {
        self.spawn_build_with(Command::new(bin_dir().join("strata")), manifest, extra)
    }

    /// [`Env::spawn_build`] with `strata`: a command of another strata
    /// binary, or with its own environment.
    pub fn spawn_build_with(
        &self,
        mut cmd: Command,
        manifest: &Value,
        extra: &[&str],
    ) -> std::process::Child {
        cmd.args(["build", "-"])
            .args(extra)
            .env("STRATA_STORE", self.store())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.to_string().as_bytes())
            .unwrap();
        child
    }

    /// `strata build` of `manifest` with stages from `lib`, exporting
    /// pipeline `export` into `out`.
    pub fn build_export(&self, manifest: &Value, lib: &Path, export: &str, out: &Path) -> Run {
        self.build(manifest, &export_args(lib, export, out))
    }

    /// [`Env::build_export`], started and left running.
    pub fn spawn_build_export(
        &self,
        manifest: &Value,
        lib: &Path,
        export: &str,
        out: &Path,
    ) -> std::process::Child {
        self.spawn_build(manifest, &export_args(lib, export, out))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// `strata ARGS` with stdin `input`.
    pub fn strata(&self, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = Command::new(bin_dir().join("strata"));
        cmd.args(args)
            .env("STRATA_STORE", self.store())
            .env_remove("NO_COLOR")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = input {
            // strata refuses bad flags before it reads stdin; its exit
            // then closes the pipe, and that is the run to look at.
            match child.stdin.take().unwrap().write_all(text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.unwrap(),
            }
        }
        Run(child.wait_with_output().unwrap())
    }

    /// `strata build -` of `manifest` with `extra` flags.
    pub fn build(&self, manifest: &Value, extra: &[&str]) -> Run {
        let mut args = vec!["build", "-"];
        args.extend_from_slice(extra);
        self.strata(&args, Some(&manifest.to_string()))
    }

    /// `strata build --json`, parsed.
    pub fn build_json(&self, manifest: &Value, extra: &[&str]) -> (Run, Value) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let run = self.build(manifest, &args);
        let doc = serde_json::from_slice(&run.0.stdout)
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", run.describe()));
        (run, doc)
    }

    /// Object ids in the store.
    pub fn objects(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.store().join("objects"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Entries left under STORE/tmp.
    pub fn tmp_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.store().join("tmp"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A libdir with one shell-script stage named `name`, whose options
    /// schema accepts anything and declares `needs` under x-strata.
    pub fn script_stage(&self, name: &str, script: &str, needs: Value) -> PathBuf {
        let lib = self.path("lib");
        std::fs::create_dir_all(lib.join("stages")).unwrap();
        std::fs::create_dir_all(lib.join("schemas/stages")).unwrap();
        let exe = lib.join("stages").join(name);
        std::fs::write(&exe, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut schema = json!({"type": "object"});
        if !needs.is_null() {
            schema["x-strata"] = needs;
        }
        std::fs::write(
            lib.join("schemas/stages").join(format!("{name}.json")),
            schema.to_string(),
        )
        .unwrap();
        lib
    }
}

/// `--libdir LIB --export NAME --output-directory OUT`.
pub fn export_args<'a>(lib: &'a Path, export: &'a str, out: &'a Path) -> [&'a str; 6] {
    [
        "--libdir",
        lib.to_str().unwrap(),
        "--export",
        export,
        "--output-directory",
        out.to_str().unwrap(),
    ]
}

/// A finished strata process.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn describe(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.stdout(),
            self.stderr()
        )
    }
    #[track_caller]
    pub fn success(&self) -> &Run {
        assert_eq!(self.code(), 0, "{}", self.describe());
        self
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A checksum reference for `data`.
pub fn checksum(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// `sources.inline` for these blobs.
pub fn inline_sources(blobs: &[&[u8]]) -> Value {
    let items: serde_json::Map<String, Value> = blobs
        .iter()
        .map(|b| {
            (
                checksum(b),
                json!({"encoding": "base64", "data": base64(b)}),
            )
        })
        .collect();
    json!({"inline": {"items": items}})
}

/// Standard, padded base64 (as the manifest's base64 fields take it).
pub fn base64(data: &[u8]) -> String {
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
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A one-thread HTTP server on 127.0.0.1 serving `files` (path → body);
/// counts requests. Its thread ends after 256 connections, or with the test.
pub struct HttpServer {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
}

impl HttpServer {
    pub fn start(files: Vec<(String, Vec<u8>)>) -> HttpServer {
        HttpServer::paced(files, Duration::ZERO)
    }

    /// Sends each body in 64 KiB pieces with `pause` after each, so a
    /// download takes a while.
    pub fn paced(files: Vec<(String, Vec<u8>)>, pause: Duration) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(256) {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
                match files.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        for piece in body.chunks(64 << 10) {
                            if stream.write_all(piece).is_err() {
                                break;
                            }
                            std::thread::sleep(pause);
                        }
                    }
                    None => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            }
        });
        HttpServer { port, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Lists a tarball's members with GNU tar (`tar -tv`, numeric owners).
pub fn tar_listing(path: &Path) -> String {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A store that later test runs reuse (a bootstrap costs minutes):
/// `NAME/store` under cargo's target tmp dir, with `NAME/` made. A store
/// an older strata left there (another format, which this one refuses) is
/// removed first, so a format change does not fail the next run.
pub fn reused_store(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let store = dir.join("store");
    if let Ok(format) = std::fs::read_to_string(store.join("format"))
        && format.trim() != strata::store::FORMAT
    {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    store
}

/// The unprivileged user the isolation tests run strata as, created on
/// first use (idempotent): `strata-it`, no password, with a subordinate
/// id range of its own in /etc/subuid and /etc/subgid. None unless the
/// tests run as root (they cannot make users otherwise).
pub fn test_user() -> Option<TestUser> {
    static USER: std::sync::OnceLock<Option<TestUser>> = std::sync::OnceLock::new();
    USER.get_or_init(|| {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        const NAME: &str = "strata-it";
        // A range apart from strata's default for root (0x70000000) when
        // useradd gave none: 1_200_000_000…+65535.
        let (uid, gid) = strata_tests::ordinary_user(NAME, "1200000000:65536");
        Some(TestUser {
            name: NAME.into(),
            uid,
            gid,
        })
    })
    .clone()
}

/// An ordinary user for the tests (see [`test_user`]).
#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// A scratch folder the user owns (the Env's folder, handed over).
    pub fn env(&self) -> Env {
        let env = Env::new();
        std::os::unix::fs::chown(env.dir.path(), Some(self.uid), Some(self.gid)).unwrap();
        env
    }

    /// `strata ARGS` as this user (through runuser, which drops every
    /// group of root's), with the store of `env` and stdin `input`.
    pub fn strata(&self, env: &Env, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.name, "--", "env"])
            .arg(format!("STRATA_STORE={}", env.store().display()))
            .arg(format!("HOME=/home/{}", self.name))
            .arg(bin_dir().join("strata"))
            .args(args)
            .current_dir("/")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = input {
            let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
        }
        Run(child.wait_with_output().unwrap())
    }
}

/// `strata ARGS` (stdin `input`), killed after `limit`: a run that hangs
/// is a failure, not a stuck test.
pub fn bounded(env: &Env, args: &[&str], input: &str, limit: Duration) -> (Run, Duration) {
    let mut cmd = Command::new(bin_dir().join("strata"));
    cmd.args(args).env("STRATA_STORE", env.store());
    bounded_command(cmd, Some(input), limit)
}

/// `cmd` (stdin `input`), killed after `limit`, its output drained while it
/// runs; how long it took.
pub fn bounded_command(mut cmd: Command, input: Option<&str>, limit: Duration) -> (Run, Duration) {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = input {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
    }
    // Drained while it runs: a full pipe must not pass for a hang.
    let drain = |mut from: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            from.read_to_end(&mut all).unwrap();
            all
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            // Our own child, by its id.
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "{cmd:?} still ran after {limit:?}:\n{}",
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let output = std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (Run(output), took)
}
