//! strata as a newcomer gets it: the README's Quick start is what CI runs,
//! `make install` gives a layout that builds, and `make deb` gives a package
//! that installs and runs in a Debian system strata itself bootstrapped.
//! Also the test support's own promise: a missing tool fails its tests
//! with one line and every other test still reports.

use crate::support::{Env, checksum, repo};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `make ARGS` in the repository, which must succeed.
#[track_caller]
fn make(args: &[&str]) -> Output {
    let out = Command::new("make")
        .arg("-C")
        .arg(repo())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "make {args:?}:\n{}", text(&out));
    out
}

/// The commands of the README's Quick start block, comments dropped.
fn quick_start() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("## Quick start")
        .nth(1)
        .expect("README.md has a Quick start");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Quick start has a sh block");
    block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// CI proves exactly what the README promises: `.ci/run` is apt-get update,
/// the Quick start as written, and make lint; and `make test` itself sets
/// up what the tests need, since the README says nothing more.
#[test]
fn ci_runs_exactly_the_quick_start() {
    let quick = quick_start();
    assert_eq!(quick, ["make demo", "make test"]);
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let steps: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !["set ", "cd ", "export "].iter().any(|p| l.starts_with(p)))
        .collect();
    let mut expected = vec!["apt-get update -q"];
    expected.extend(quick.iter().map(String::as_str));
    expected.push("make lint");
    assert_eq!(steps, expected, ".ci/run");

    let plan = make(&["-n", "test"]);
    let plan = text(&plan);
    for needed in [
        "apt-get",
        "bash docs/incus-setup.sh",
        "cargo test --workspace",
    ] {
        assert!(
            plan.contains(needed),
            "make test does not run {needed}:\n{plan}"
        );
    }
}

/// A folder outside target/ and the store, removed with the test.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("strata-it-pkg-")
        .tempdir()
        .unwrap()
}

/// `make install` into a DESTDIR: the installed strata finds its installed
/// stages (not the ones in target/) and builds hello.json; the man pages and
/// completions are where man and the shells look.
#[test]
fn the_installed_layout_builds_hello() {
    let dest = scratch();
    let destdir = dest.path().to_str().unwrap();
    make(&[
        "install",
        "PROFILE=dev",
        "PREFIX=/usr",
        &format!("DESTDIR={destdir}"),
    ]);
    let usr = dest.path().join("usr");
    for file in [
        "bin/strata",
        "bin/strata-sandbox",
        "lib/strata/stages/mkdir",
        "lib/strata/stages/tar",
        "lib/strata/stages/bootstrap",
        "share/man/man1/strata.1",
        "share/man/man1/strata-build.1",
        "share/man/man1/strata-task-run.1",
        "share/bash-completion/completions/strata",
        "share/zsh/vendor-completions/_strata",
        "share/fish/vendor_completions.d/strata.fish",
        "share/strata/schemas/manifest.json",
    ] {
        assert!(usr.join(file).is_file(), "{file} is not installed");
    }
    let man = Command::new("man")
        .arg("-M")
        .arg(usr.join("share/man"))
        .args(["-w", "strata-build"])
        .output()
        .unwrap();
    assert!(man.status.success(), "{}", text(&man));

    let env = Env::new();
    let out = env.out();
    let run = Command::new(usr.join("bin/strata"))
        .arg("build")
        .arg(repo().join("manifests/hello.json"))
        .arg("--store")
        .arg(env.store())
        .args(["--export", "tarball", "--output-directory"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    assert!(out.join("tarball/hello.tar.gz").is_file());
}

/// The first alternative of each relation in a Depends-like field.
fn relations(field: &str) -> Vec<String> {
    field
        .split(',')
        .map(|r| {
            r.split('|')
                .next()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

fn deb_field(deb: &Path, field: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg(field)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Dogfood: `make deb` (lintian reports no error, or make fails), then
/// strata bootstraps bookworm, installs that .deb into it with the
/// customize stage (its Depends from the mirror, the .deb as a `files`
/// input) and runs `strata --version` and `man -w strata` inside.
#[test]
fn the_deb_installs_and_runs_in_a_bootstrapped_system() {
    let work = scratch();
    let outdir = work.path().to_str().unwrap();
    make(&["deb", "PROFILE=dev", &format!("OUT={outdir}")]);
    let version = env!("CARGO_PKG_VERSION");
    let deb: PathBuf = work.path().join(format!("strata_{version}_amd64.deb"));
    assert!(deb.is_file(), "make deb made no {}", deb.display());

    let depends = relations(&deb_field(&deb, "Depends"));
    for needed in ["bubblewrap", "mmdebstrap", "tar", "zstd", "curl"] {
        assert!(depends.iter().any(|d| d == needed), "Depends: {depends:?}");
    }
    let suggests = relations(&deb_field(&deb, "Suggests"));
    for suggested in ["incus", "qemu-system-x86", "lintian"] {
        assert!(
            suggests.iter().any(|s| s == suggested),
            "Suggests: {suggests:?}"
        );
    }

    let bytes = std::fs::read(&deb).unwrap();
    let sum = checksum(&bytes);
    let mut packages = depends.clone();
    packages.push("man-db".into());
    packages.sort();
    packages.dedup();
    // The backend tests' system (minbase + systemd-sysv) in their store:
    // when they ran, the bootstrap is reused, not made again.
    let system = crate::backend::system_manifest();
    let bootstrap = system["pipelines"][0]["stages"][0].clone();
    let mut pipeline = system["pipelines"][0].clone();
    pipeline["stages"] = json!([bootstrap, {
        "type": "customize",
        "inputs": {"deb": {"type": "files", "origin": "source", "references": {sum.clone(): {}}}},
        "options": {
            "packages": packages,
            "files": [{"path": "/tmp/strata.deb", "from": format!("input://deb/{sum}")}],
            "script": "dpkg -i /tmp/strata.deb\nstrata --version\nman -w strata\nman -w strata-build\nstrata completions bash >/dev/null\n"
        }
    }]);
    let m = json!({"version": "2", "pipelines": [pipeline],
        "sources": {"curl": {"items": {sum.clone(): {"url": format!("file://{}", deb.display())}}}}});
    // The backend tests' store (its bootstrap is shared).
    let store = crate::support::reused_store("backend");
    let store = store.to_str().unwrap();
    let env = Env::new();
    let (run, doc) = env.build_json(&m, &["--store", store]);
    run.success();
    let id = doc["pipelines"][0]["stages"][1]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no customize stage in {doc:#}"))
        .to_owned();
    let log = env.strata(&["store", "log", &id, "--store", store], None);
    log.success();
    // The packaged strata is the one the tests run (make deb PROFILE=dev
    // packs target/debug), so it says the same version, git revision
    // included (`cli::the_version_names_the_git_revision` checks that one).
    let ours = Command::new(crate::support::bin_dir().join("strata"))
        .arg("--version")
        .output()
        .unwrap();
    let ours = String::from_utf8(ours.stdout).unwrap();
    assert!(
        ours.starts_with(&format!("strata {version} (git ")),
        "{ours}"
    );
    let log = log.stdout();
    assert!(log.contains(&ours), "strata --version in the tree:\n{log}");
    for page in ["strata.1.gz", "strata-build.1.gz"] {
        assert!(
            log.contains(&format!("/usr/share/man/man1/{page}")),
            "man -w in the tree:\n{log}"
        );
    }
}

/// A PATH with every program of this one but `missing`.
fn path_without(missing: &str, dir: &Path) -> String {
    let path = std::env::var_os("PATH").unwrap();
    for d in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let link = dir.join(&name);
            if name != missing && !link.exists() {
                let _ = std::os::unix::fs::symlink(e.path(), link);
            }
        }
    }
    dir.to_str().unwrap().to_owned()
}

/// Without incus, its tests fail with one line saying how to get it, no
/// destructor panics (which would abort the binary: SIGABRT), and the
/// other tests of the same run still pass and report.
#[test]
fn a_missing_tool_fails_its_tests_with_one_line_and_the_rest_report() {
    let bin = scratch();
    let path = path_without("incus", bin.path());
    // /proc/self/exe, not current_exe(): a cargo build while the suite
    // runs may replace the file, but this process's image stays runnable.
    let out = Command::new("/proc/self/exe")
        .env("PATH", &path)
        .env("RUST_BACKTRACE", "0")
        .args([
            "--exact",
            "--test-threads",
            "1",
            "backend::incus_lxc::lifecycle",
            "backend::cli_env_round_trip_incus_lxc",
            "incus_image::a_bootstrapped_system_starts_in_incus_with_its_templates",
            "cli::completions_for_each_shell",
        ])
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(101),
        "the run ends as a failed test run, not by a signal:\n{all}"
    );
    let line =
        "incus is not installed (not on PATH): run `bash docs/incus-setup.sh` (`make test` does)";
    assert_eq!(all.matches(line).count(), 3, "{all}");
    assert!(
        all.contains("test cli::completions_for_each_shell ... ok"),
        "{all}"
    );
    assert!(all.contains("1 passed; 3 failed"), "{all}");
    assert!(!all.contains("panic in a destructor"), "{all}");
}
