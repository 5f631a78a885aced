//! Package builds for real: dpkg-buildpackage in a throw-away copy of a
//! bootstrapped buildd environment, lintian in that environment. One store
//! for the whole module's story, so the environment is bootstrapped once.

use crate::support::{Env, checksum, inline_sources, repo};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn dist(file: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures/packages/dist").join(file)).unwrap()
}

/// The buildd environment builds run in.
pub fn env_pipeline() -> Value {
    json!({"name": "env", "runner": "debian", "source-epoch": 1700000000, "stages": [{"type": "bootstrap", "options": {
        "bootstrap_options": {"architecture": "amd64", "variant": "buildd", "extra_packages": ["debhelper", "lintian"]},
        "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}}]})
}

/// env → build (the source package `name` through a files input) [→ lint].
pub fn manifest(name: &str, options: Value, lint: Option<Value>) -> Value {
    let dsc = dist(&format!("{name}_1.0.dsc"));
    let tar = dist(&format!("{name}_1.0.tar.xz"));
    source_manifest(&dsc, &tar, options, lint)
}

/// env → build (the source package of `dsc` and its one `tar`, through a
/// files input) [→ lint].
pub fn source_manifest(dsc: &[u8], tar: &[u8], options: Value, lint: Option<Value>) -> Value {
    let mut options = options;
    options["host_architecture"] = json!("amd64");
    let mut pipelines = vec![
        env_pipeline(),
        json!({"name": "build", "build": "name:env", "runner": "debian", "source-epoch": 1700000000, "stages": [{"type": "build",
            "inputs": {"source": {"type": "files", "origin": "source", "references": [checksum(dsc), checksum(tar)]}},
            "options": options}]}),
    ];
    if let Some(lint) = lint {
        pipelines.push(json!({"name": "lint", "build": "name:env", "runner": "debian", "source-epoch": 1700000000, "stages": [{"type": "lintian",
            "inputs": {"input": {"type": "tree", "origin": "pipeline", "references": ["name:build"]}},
            "options": lint}]}));
    }
    json!({"version": "2", "pipelines": pipelines, "sources": inline_sources(&[dsc, tar])})
}

fn statuses(doc: &Value) -> Vec<String> {
    doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["stages"].as_array().unwrap().iter().map(move |s| {
                format!(
                    "{}:{}",
                    p["name"].as_str().unwrap(),
                    s["status"].as_str().unwrap()
                )
            })
        })
        .collect()
}

fn build(env: &Env, m: &Value, export: &str) -> (Value, PathBuf) {
    let out = env.path(&format!(
        "out-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let (run, doc) = env.build_json(
        m,
        &[
            "--checkpoint",
            "*",
            "--export",
            export,
            "--output-directory",
            out.to_str().unwrap(),
        ],
    );
    run.success();
    (doc, out.join(export))
}

fn deb_field(deb: &Path, field: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The text of member `path` of the binary package `deb`.
pub fn deb_file(deb: &Path, path: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO './{path}'",
            deb.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{path} in {}", deb.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn package_builds_in_a_clean_environment_and_caches() {
    let env = Env::new();

    // A plain arch:any build.
    let m = manifest("hello-strata", json!({}), None);
    let (doc, out) = build(&env, &m, "build");
    let names = files(&out);
    let deb = out.join("hello-strata_1.0_amd64.deb");
    assert!(deb.is_file(), "{names:?}");
    assert_eq!(deb_field(&deb, "Package"), "hello-strata");
    assert_eq!(deb_field(&deb, "Version"), "1.0");
    let changes = std::fs::read_to_string(out.join("hello-strata_1.0_amd64.changes")).unwrap();
    assert!(changes.contains("hello-strata_1.0_amd64.deb"), "{changes}");
    assert!(names.iter().any(|n| n.ends_with(".buildinfo")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".build")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with("_all.deb")),
        "only arch:any by default: {names:?}"
    );
    let meta = &doc["pipelines"][1]["stages"][0]["metadata"];
    assert_eq!(meta["status"], "success");
    let pkgs = meta["binary_packages"].as_array().unwrap();
    assert!(
        pkgs.iter().any(|p| p["name"] == "hello-strata"
            && p["version"] == "1.0"
            && p["architecture"] == "amd64"),
        "{meta:#}"
    );

    // Warm: nothing runs.
    let (run, warm) = env.build_json(&m, &["--checkpoint", "*"]);
    run.success();
    assert!(
        statuses(&warm).iter().all(|s| s.ends_with(":cached")),
        "{:?}",
        statuses(&warm)
    );

    // Only build_options changed: the build reruns, the environment does not.
    let m = manifest(
        "hello-strata",
        json!({"build_options": "nocheck terse", "build_profiles": ["nodoc"], "build_components": ["any", "all", "source"]}),
        None,
    );
    let (doc, out) = build(&env, &m, "build");
    assert_eq!(statuses(&doc), ["env:cached", "build:built"]);
    let names = files(&out);
    assert!(
        names.contains(&"hello-strata_1.0.dsc".to_owned()),
        "source built: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("hello-strata-doc")),
        "profile nodoc drops the doc package: {names:?}"
    );
    let build_env = deb_file(
        &out.join("hello-strata_1.0_amd64.deb"),
        "usr/share/hello-strata/build-env",
    );
    assert!(
        build_env.contains("nocheck") && build_env.contains("terse"),
        "{build_env}"
    );
    assert!(build_env.contains("nodoc"), "{build_env}");

    // A binNMU.
    let m = manifest(
        "hello-strata",
        json!({"binnmu": {"changelog": "Rebuild for strata", "suffix": "+b7"}}),
        None,
    );
    let (_, out) = build(&env, &m, "build");
    let deb = out.join("hello-strata_1.0+b7_amd64.deb");
    assert!(deb.is_file(), "{:?}", files(&out));
    assert_eq!(deb_field(&deb, "Version"), "1.0+b7");
    let changelog = std::fs::read_to_string(out.join("hello-strata_1.0+b7_amd64.changes")).unwrap();
    assert!(changelog.contains("Rebuild for strata"), "{changelog}");

    // Cross-building without a cross toolchain is refused clearly.
    let mut m = manifest("hello-strata", json!({"build_architecture": null}), None);
    m["pipelines"][1]["stages"][0]["options"]["host_architecture"] = json!("arm64");
    let run = env.build(&m, &["--checkpoint", "*"]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains("crossbuild-essential-arm64"),
        "{}",
        run.stderr()
    );

    // Failing builds name the cause and keep nothing of themselves.
    let before = env.objects().len();
    for (name, expected) in [
        ("fails-strata", "strata-fixture: deliberate failure"),
        ("unmet-strata", "strata-no-such-build-dependency"),
    ] {
        let run = env.build(&manifest(name, json!({}), None), &["--checkpoint", "*"]);
        assert_eq!(run.code(), 1, "{name}: {}", run.describe());
        let err = run.stderr();
        let error_part = &err[err.find("error:").unwrap()..];
        assert!(error_part.contains(expected), "{name}: {error_part}");
    }
    assert_eq!(env.objects().len(), before, "failed builds commit nothing");
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}

#[test]
fn a_binnmu_cannot_build_arch_all() {
    let env = Env::new();
    let m = manifest(
        "hello-strata",
        json!({"binnmu": {"changelog": "x"}, "build_components": ["any", "all"]}),
        None,
    );
    let run = env.build(&m, &[]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr().contains("/pipelines/1/stages/0/options"),
        "{}",
        run.stderr()
    );
}

#[test]
fn lintian_reports_known_tags_and_fails_at_the_asked_severity() {
    let env = Env::new();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/fixtures/packages/lint-strata/EXPECTED.json")).unwrap(),
    )
    .unwrap();
    let all = json!({"build_components": ["any", "all", "source"]});
    let m = manifest(
        "lint-strata",
        all.clone(),
        Some(json!({"fail_on_severity": "none"})),
    );
    let (doc, out) = build(&env, &m, "lint");
    let analysis: Value =
        serde_json::from_slice(&std::fs::read(out.join("analysis.json")).unwrap()).unwrap();
    let counts = &analysis["summary"]["tags_count_by_severity"];
    for (severity, n) in expected.as_object().unwrap() {
        assert_eq!(&counts[severity], n, "{severity}: {counts:#}");
    }
    assert!(
        analysis["summary"]["overridden_tags_found"]
            .to_string()
            .contains("bogus-mail-host"),
        "{analysis:#}"
    );
    assert!(
        analysis["tags"].as_array().unwrap().iter().any(
            |t| t["severity"] == "error" && !t["explanation"].as_str().unwrap_or("").is_empty()
        )
    );
    assert!(
        std::fs::read_to_string(out.join("lintian.txt"))
            .unwrap()
            .contains("E: ")
    );
    assert_eq!(
        doc["pipelines"][2]["stages"][0]["metadata"]["tags_count_by_severity"]["error"],
        expected["error"],
        "{:#}",
        doc["pipelines"][2]
    );

    // fail_on_severity: error and warning fail (the analysis is in the log); the build is reused.
    for severity in ["error", "warning"] {
        let m = manifest(
            "lint-strata",
            all.clone(),
            Some(json!({"fail_on_severity": severity})),
        );
        let (run, doc) = env.build_json(&m, &["--checkpoint", "*"]);
        assert_eq!(run.code(), 1, "{severity}: {}", run.describe());
        assert!(
            run.stderr().contains("lintian found"),
            "{severity}: {}",
            run.stderr()
        );
        assert!(
            run.stderr().contains("bogus-mail-host"),
            "the analysis is in the log: {}",
            run.stderr()
        );
        assert_eq!(statuses(&doc)[..2], ["env:cached", "build:cached"]);
    }
    // Only build_options changed: build and lint rerun, never the environment.
    let mut opts = all.clone();
    opts["build_options"] = json!("nocheck");
    let (doc, _) = build(
        &env,
        &manifest(
            "lint-strata",
            opts,
            Some(json!({"fail_on_severity": "none"})),
        ),
        "lint",
    );
    assert_eq!(statuses(&doc), ["env:cached", "build:built", "lint:built"]);
}

/// Debian's own `hello` 2.10-3: a 3.0 (quilt) source whose upstream tarball
/// carries its signature (`hello_2.10.orig.tar.gz.asc`), and a revision
/// after the first, so its `.changes` leaves the upstream files out. Pinned
/// by content: the archive never changes a published file.
const HELLO_DSC: &str = "hello_2.10-3.dsc";
const HELLO_DSC_SHA256: &str = "75296f5ef618ae2f1849e22b142a2b5ab52c452ebefa4e7b0564c44617db3790";

/// The Debian mirror in this machine's apt sources, read as the stages read
/// it, so no host name stands in the repository.
fn host_mirror() -> String {
    let sources = strata_stage::debian::read_apt_sources(Path::new("/etc/apt"));
    strata_stage::debian::default_mirror(&sources)
        .expect("this machine's apt sources name a Debian mirror")
        .0
}

/// Where the archive keeps source package `name`'s files: `pool/main/h/hello/`
/// (`lib` packages go under four letters: `pool/main/libf/libfoo/`).
fn pool_dir(mirror: &str, name: &str) -> String {
    let prefix = if name.starts_with("lib") && name.len() > 3 {
        &name[..4]
    } else {
        &name[..1]
    };
    format!("{mirror}/pool/main/{prefix}/{name}")
}

/// `(sha256, size, name)` of each file a .dsc lists.
fn dsc_files(dsc: &str) -> Vec<(String, u64, String)> {
    let field = dsc
        .split("\nChecksums-Sha256:\n")
        .nth(1)
        .expect("the .dsc has a Checksums-Sha256 field");
    field
        .lines()
        .take_while(|l| l.starts_with(' '))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{l:?}");
            (f[0].to_owned(), f[1].parse().unwrap(), f[2].to_owned())
        })
        .collect()
}

fn fetch(url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn an_archive_package_with_a_signed_upstream_tarball_builds_whole_and_lints() {
    let env = Env::new();
    let pool = pool_dir(&host_mirror(), "hello");
    let dsc = fetch(&format!("{pool}/{HELLO_DSC}"));
    assert_eq!(
        crate::support::sha256_hex(&dsc),
        HELLO_DSC_SHA256,
        "{pool}/{HELLO_DSC} is not the one this test knows"
    );
    let listed = dsc_files(&String::from_utf8(dsc.clone()).unwrap());
    assert!(
        listed
            .iter()
            .any(|(_, _, n)| n == "hello_2.10.orig.tar.gz.asc"),
        "{listed:?}"
    );
    // The engine fetches each file from the mirror and checks it against
    // the sum the .dsc gives.
    let mut items = serde_json::Map::new();
    items.insert(
        format!("sha256:{HELLO_DSC_SHA256}"),
        json!(format!("{pool}/{HELLO_DSC}")),
    );
    for (sum, _, name) in &listed {
        items.insert(format!("sha256:{sum}"), json!(format!("{pool}/{name}")));
    }
    let references: Vec<&String> = items.keys().collect();
    let m = json!({"version": "2", "pipelines": [
        env_pipeline(),
        {"name": "build", "build": "name:env", "runner": "debian", "source-epoch": 1700000000, "stages": [{"type": "build",
            "inputs": {"source": {"type": "files", "origin": "source", "references": references}},
            "options": {"host_architecture": "amd64", "build_components": ["any", "source"]}}]},
        {"name": "lint", "build": "name:env", "runner": "debian", "source-epoch": 1700000000, "stages": [{"type": "lintian",
            "inputs": {"input": {"type": "tree", "origin": "pipeline", "references": ["name:build"]}},
            "options": {"fail_on_severity": "none"}}]}],
        "sources": {"curl": {"items": items}}});

    let out = env.path("out");
    let run = env.build(
        &m,
        &[
            "--export",
            "build",
            "--export",
            "lint",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    );
    run.success();
    let built = out.join("build");
    let names = files(&built);
    let changes = std::fs::read_to_string(built.join("hello_2.10-3_amd64.changes")).unwrap();
    assert!(
        !changes.contains("hello_2.10.orig.tar.gz"),
        "a -3 revision's .changes leaves the upstream tarball out, which is what this test is about: {changes}"
    );
    // The .dsc the build wrote, and every file it lists, as it lists them.
    let rebuilt = std::fs::read_to_string(built.join(HELLO_DSC)).unwrap();
    let rebuilt_files = dsc_files(&rebuilt);
    assert_eq!(rebuilt_files.len(), 3, "{rebuilt}");
    for (sum, size, name) in &rebuilt_files {
        let bytes = std::fs::read(built.join(name)).unwrap_or_else(|e| {
            panic!("{name}, listed by {HELLO_DSC}, is not in the output ({e}): {names:?}")
        });
        assert_eq!(bytes.len() as u64, *size, "{name}");
        assert_eq!(&crate::support::sha256_hex(&bytes), sum, "{name}");
    }
    for (sum, _, name) in listed.iter().filter(|(_, _, n)| n.contains(".orig.")) {
        assert!(
            rebuilt_files.iter().any(|(s, _, n)| s == sum && n == name),
            "the upstream {name} is kept as it came: {rebuilt}"
        );
    }

    // lintian reads the source package whole: it skips none of it.
    let err = run.stderr();
    assert!(!err.contains("Skipping"), "{err}");
    let analysis: Value =
        serde_json::from_slice(&std::fs::read(out.join("lint/analysis.json")).unwrap()).unwrap();
    assert_eq!(
        analysis["summary"]["package_filename"]["hello source"], HELLO_DSC,
        "{analysis:#}"
    );
    assert!(
        analysis["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["package"] == "hello source"),
        "lintian said something of the source: {analysis:#}"
    );
}

/// A private repository: apt in the build gets its credentials from an
/// auth.conf.d file that exists only in the throw-away build root, and the
/// password is in no output and nowhere in the store, though the build
/// fails (the repository has no Release file).
#[test]
fn a_private_repository_gets_its_password_from_secrets_and_nothing_keeps_it() {
    use base64::Engine as _;
    use std::io::{BufRead, BufReader, Write};
    const PASSWORD: &str = "apt-Pw-never-stored-5521";
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let want = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("bob:{PASSWORD}"))
    );
    let authorized = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = authorized.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut ok) = (String::new(), false);
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                ok |= line.trim() == want;
                line.clear();
            }
            if ok {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let _ = stream.write_all(if ok {
                b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".as_slice()
            } else {
                b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\n\r\n"
                    .as_slice()
            });
        }
    });
    let secrets = env.path("secrets.json");
    std::fs::write(
        &secrets,
        json!({"mirror": format!("bob:{PASSWORD}")}).to_string(),
    )
    .unwrap();
    let m = manifest(
        "hello-strata",
        json!({"extra_repositories": [{"url": format!("{base}/debian/"), "suite": "./", "secrets": {"name": "mirror"}}]}),
        None,
    );
    let run = env.build(
        &m,
        &[
            "--secrets",
            secrets.to_str().unwrap(),
            "--keep-failed",
            "-v",
            "--json",
        ],
    );
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        authorized.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "apt sent the credentials:\n{}",
        run.describe()
    );
    assert!(!run.stdout().contains(PASSWORD) && !run.stderr().contains(PASSWORD));
    let held: Vec<_> = walkdir::WalkDir::new(env.path(""))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path() != secrets)
        .filter(|e| {
            std::fs::read(e.path())
                .is_ok_and(|b| b.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()))
        })
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(held.is_empty(), "{held:?}");
}
