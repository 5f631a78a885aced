//! Debian systems for real: mmdebstrap through the bootstrap stage, customize
//! inside the new system, system tarballs, untar. These reach the network
//! only through apt/mmdebstrap's mirror, which comes from this machine's apt
//! sources.

use crate::support::{Env, checksum, inline_sources, repo, sha256_hex};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("manifests").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Builds `m` exporting `exports`, everything checkpointed; returns the --json document.
fn build(env: &Env, m: &Value, exports: &[&str]) -> Value {
    let out = env.out();
    let mut args = vec![
        "--checkpoint",
        "*",
        "--output-directory",
        out.to_str().unwrap(),
    ];
    for e in exports {
        args.extend(["--export", e]);
    }
    let (run, doc) = env.build_json(m, &args);
    run.success();
    doc
}

fn stage<'a>(doc: &'a Value, pipeline: &str, index: usize) -> &'a Value {
    let p = doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pipeline)
        .unwrap();
    &p["stages"][index]
}

fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["stages"].as_array().unwrap().iter().map(move |s| {
                (
                    format!(
                        "{}/{}",
                        p["name"].as_str().unwrap(),
                        s["type"].as_str().unwrap()
                    ),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect()
}

/// Unpacks a system tarball into a fresh folder.
fn unpack(tarball: &Path, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    let ok = Command::new("tar")
        .args([
            "--extract",
            "--numeric-owner",
            "--same-owner",
            "--preserve-permissions",
            "--file",
        ])
        .arg(tarball)
        .arg("--directory")
        .arg(into)
        .status()
        .unwrap()
        .success();
    assert!(ok, "unpacking {}", tarball.display());
    into.to_path_buf()
}

/// Runs `argv` inside the system at `root` (bubblewrap, chroot semantics, no network).
fn run_in(root: &Path, argv: &[&str]) -> String {
    let out = Command::new("bwrap")
        .arg("--bind")
        .arg(root)
        .args([
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--unshare-all",
            "--die-with-parent",
        ])
        .args([
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/sbin:/usr/bin:/sbin:/bin",
            "--",
        ])
        .args(argv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{argv:?} in {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn assert_no_apt_leftovers(root: &Path) {
    let lists: Vec<String> = std::fs::read_dir(root.join("var/lib/apt/lists"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        lists
            .iter()
            .all(|n| n == "partial" || n == "lock" || n == "auxfiles"),
        "apt lists left: {lists:?}"
    );
    let archives: Vec<String> = std::fs::read_dir(root.join("var/cache/apt/archives"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".deb"))
                .collect()
        })
        .unwrap_or_default();
    assert!(archives.is_empty(), "apt archives left: {archives:?}");
    for bin in ["pkgcache.bin", "srcpkgcache.bin"] {
        assert!(!root.join("var/cache/apt").join(bin).exists(), "{bin} left");
    }
}

fn package_names(doc: &Value) -> Vec<String> {
    stage(doc, "system", 0)["metadata"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn minbase_system_tarball_is_a_working_reproducible_system() {
    let env = Env::new();
    let m = manifest("debian-bookworm-minbase.json");
    let doc = build(&env, &m, &["tarball"]);
    let tarball = env.out().join("tarball/system.tar.zst");
    let root = unpack(&tarball, &env.path("root"));

    assert!(read(&root, "etc/os-release").contains("VERSION_CODENAME=bookworm"));
    assert!(run_in(&root, &["dpkg", "-l"]).contains("ii  base-files"));
    assert!(run_in(&root, &["apt-get", "--version"]).starts_with("apt "));
    assert_no_apt_leftovers(&root);
    let sources = read(&root, "etc/apt/sources.list.d/debian.sources");
    assert!(sources.contains("Suites: bookworm"), "{sources}");
    assert!(sources.contains("Types: deb"), "{sources}");
    assert!(
        sources.contains("Signed-By:"),
        "use_signed_by defaults to true: {sources}"
    );
    assert!(
        !root.join("etc/apt/sources.list").exists()
            || read(&root, "etc/apt/sources.list").trim().is_empty()
    );
    assert!(!root.join("etc/hostname").exists(), "no /etc/hostname");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap_or_default();
    assert!(
        host_resolv.is_empty() || resolv != host_resolv,
        "resolv.conf must not be the host's"
    );

    let meta = &stage(&doc, "system", 0)["metadata"];
    assert_eq!(
        meta["os-release"]["VERSION_CODENAME"], "bookworm",
        "{meta:#}"
    );
    let packages = package_names(&doc);
    assert!(
        packages.iter().any(|p| p.starts_with("base-files ")),
        "{packages:?}"
    );
    assert!(meta["packages"][0]["architecture"].is_string());

    // Warm: nothing runs.
    let (run, warm) = env.build_json(&m, &["--checkpoint", "*"]);
    run.success();
    assert!(
        statuses(&warm).iter().all(|(_, s)| s == "cached"),
        "{:?}",
        statuses(&warm)
    );
    assert!(!run.stderr().contains("running"));

    // A second cold build with the same source-epoch gives the same bytes.
    let env2 = Env::new();
    let doc2 = build(&env2, &m, &["tarball"]);
    let a = sha256_hex(&std::fs::read(&tarball).unwrap());
    let b = sha256_hex(&std::fs::read(env2.out().join("tarball/system.tar.zst")).unwrap());
    if package_names(&doc) != package_names(&doc2) {
        eprintln!(
            "the mirror moved between the two builds; compared package lists instead of bytes"
        );
        return;
    }
    assert_eq!(
        a, b,
        "two cold builds with one source-epoch give byte-identical tarballs"
    );
}

#[test]
fn customize_applies_every_option_and_reruns_alone() {
    let env = Env::new();
    let mut m = manifest("debian-bookworm-custom.json");
    build(&env, &m, &["tarball"]);
    let root = unpack(&env.out().join("tarball/system.tar.zst"), &env.path("root"));
    assert!(run_in(&root, &["/usr/bin/hello"]).contains("Hello, world!"));
    assert_eq!(read(&root, "etc/motd"), "A strata-built Debian system.\n");
    assert_eq!(read(&root, "etc/strata-release"), "customized by strata\n");
    assert_eq!(read(&root, "etc/hostname").trim(), "strata-demo");
    assert!(read(&root, "etc/hosts").contains("strata-demo"));
    let passwd = read(&root, "etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("builder:x:1500:") && l.ends_with(":/bin/bash")),
        "{passwd}"
    );
    assert!(
        read(&root, "etc/group")
            .lines()
            .any(|l| l.starts_with("users:") && l.contains("builder"))
    );
    assert!(root.join("home/builder").is_dir());
    let wants = root.join("etc/systemd/system/multi-user.target.wants/strata-hello.service");
    assert!(std::fs::symlink_metadata(&wants).is_ok(), "unit enabled");
    assert_no_apt_leftovers(&root);

    // Only customize and what follows run again when only its options change.
    m["pipelines"][0]["stages"][1]["options"]["files"][0]["content"] = json!("Changed.\n");
    std::fs::remove_dir_all(env.out()).unwrap();
    let doc = build(&env, &m, &["tarball"]);
    assert_eq!(
        statuses(&doc),
        [
            ("system/bootstrap".into(), "cached".into()),
            ("system/customize".into(), "built".into()),
            ("tarball/tar".into(), "built".into())
        ]
    );
}

#[test]
fn a_bootstrapped_system_serves_as_build_root() {
    let env = Env::new();
    let doc = build(&env, &manifest("debian-build-root.json"), &["tarball"]);
    let root = unpack(&env.out().join("tarball/system.tar.zst"), &env.path("root"));
    assert!(read(&root, "etc/os-release").contains("VERSION_CODENAME=bookworm"));
    assert!(
        stage(&doc, "buildroot", 0)["metadata"]["packages"]
            .to_string()
            .contains("\"mmdebstrap\"")
    );
    assert!(run_in(&root, &["dpkg", "-l"]).contains("ii  base-files"));

    // A stage running in a throw-away copy of that environment changes the
    // copy, never the stored environment.
    let lib = env.script_stage(
        "mutate",
        "set -e\ntouch /usr/local/bin/strata-mutated\nls /usr/local/bin > /run/strata/tree/seen",
        json!({"root": "build-copy"}),
    );
    let mut m = manifest("debian-build-root.json");
    m["pipelines"] = json!([m["pipelines"][0].clone(), {"name": "p", "build": "name:buildroot", "stages": [{"type": "mutate"}]}]);
    let out = env.path("out2");
    env.build(
        &m,
        &[
            "--libdir",
            lib.to_str().unwrap(),
            "--checkpoint",
            "*",
            "--export",
            "p",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    )
    .success();
    assert_eq!(read(&out.join("p"), "seen"), "strata-mutated\n");
    let stored = env
        .store()
        .join("objects")
        .join(stage(&doc, "buildroot", 0)["id"].as_str().unwrap());
    assert!(stored.join("layer/usr/local/bin").is_dir());
    assert!(
        !stored.join("layer/usr/local/bin/strata-mutated").exists(),
        "the stored environment is untouched"
    );
}

fn bootstrap(options: Value) -> Value {
    json!({"version": "2", "pipelines": [{"name": "system", "runner": "debian", "stages": [{"type": "bootstrap", "options": options}]}]})
}

fn opts(bootstrap_options: Value, repository: Value) -> Value {
    json!({"bootstrap_options": bootstrap_options, "bootstrap_repositories": [repository]})
}

#[test]
fn bad_bootstrap_options_are_refused_before_anything_runs() {
    let env = Env::new();
    let amd64 = json!({"architecture": "amd64"});
    let bookworm = json!({"suite": "bookworm"});
    let cases = [
        (
            "unknown variant",
            opts(
                json!({"architecture": "amd64", "variant": "tiny"}),
                bookworm.clone(),
            ),
            "/pipelines/0/stages/0/options/bootstrap_options/variant",
        ),
        (
            "missing architecture",
            opts(json!({"variant": "minbase"}), bookworm.clone()),
            "/pipelines/0/stages/0/options/bootstrap_options",
        ),
        (
            "external signature without keyring",
            opts(
                amd64.clone(),
                json!({"suite": "bookworm", "check_signature_with": "external"}),
            ),
            "/pipelines/0/stages/0/options/bootstrap_repositories/0",
        ),
        (
            "keyring file outside the keyring folders",
            opts(
                amd64.clone(),
                json!({"suite": "bookworm", "check_signature_with": "external", "keyring": {"url": "file:///etc/shadow"}}),
            ),
            "/pipelines/0/stages/0/options/bootstrap_repositories/0/keyring/url",
        ),
        (
            "keyring file climbing out",
            opts(
                amd64.clone(),
                json!({"suite": "bookworm", "keyring": {"url": "file:///usr/share/keyrings/../../../etc/shadow"}}),
            ),
            "/pipelines/0/stages/0/options/bootstrap_repositories/0/keyring/url",
        ),
        (
            "no repository",
            json!({"bootstrap_options": amd64.clone(), "bootstrap_repositories": []}),
            "/pipelines/0/stages/0/options/bootstrap_repositories",
        ),
    ];
    for (name, options, pointer) in cases {
        let run = env.build(&bootstrap(options), &[]);
        assert_eq!(run.code(), 2, "{name}: {}", run.describe());
        assert!(
            run.stderr().contains(pointer),
            "{name}: expected {pointer}\n{}",
            run.stderr()
        );
    }
    assert!(!env.store().exists());
}

#[test]
fn bootstrap_failures_name_the_culprit() {
    let env = Env::new();
    let amd64 = json!({"architecture": "amd64", "variant": "minbase"});
    let keyring = "file:///usr/share/keyrings/debian-archive-keyring.gpg";
    let zeros = "0".repeat(64);
    let cases = [
        (
            "keyring checksum mismatch",
            opts(
                amd64.clone(),
                json!({"suite": "bookworm", "components": ["main"], "check_signature_with": "external", "keyring": {"url": keyring, "sha256sum": zeros}}),
            ),
            vec!["debian-archive-keyring.gpg", zeros.as_str()],
        ),
        (
            "suite that does not exist",
            opts(
                amd64.clone(),
                json!({"suite": "bookworm-nonexistent", "components": ["main"]}),
            ),
            vec!["bookworm-nonexistent"],
        ),
        (
            "package that does not exist",
            opts(
                json!({"architecture": "amd64", "variant": "minbase", "extra_packages": ["strata-no-such-package"]}),
                json!({"suite": "bookworm", "components": ["main"]}),
            ),
            vec!["strata-no-such-package"],
        ),
    ];
    for (name, options, expected) in cases {
        let run = env.build(&bootstrap(options), &["--checkpoint", "*"]);
        assert_eq!(run.code(), 1, "{name}: {}", run.describe());
        let err = run.stderr();
        let error_part = &err[err.find("error:").unwrap_or(0)..];
        for e in expected {
            assert!(
                error_part.contains(e),
                "{name}: the error names {e}:\n{error_part}"
            );
        }
    }
    assert_eq!(env.objects(), Vec::<String>::new());
}

fn untar_manifest(tarball: &[u8]) -> Value {
    let sum = checksum(tarball);
    json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "untar",
        "inputs": {"tarball": {"type": "files", "origin": "source", "references": [sum.clone()]}},
        "options": {"source": format!("input://tarball/{sum}")}}]}],
        "sources": inline_sources(&[tarball])})
}

#[test]
fn untar_unpacks_and_refuses_members_escaping_the_tree() {
    let env = Env::new();
    let work = env.path("work");
    std::fs::create_dir_all(work.join("src/etc")).unwrap();
    std::fs::write(work.join("src/etc/issue"), "strata\n").unwrap();
    std::os::unix::fs::symlink("/etc/issue", work.join("src/etc/issue.link")).unwrap();
    let tar = |args: &[&str], dir: &Path| {
        assert!(
            Command::new("tar")
                .args(args)
                .current_dir(dir)
                .status()
                .unwrap()
                .success()
        );
    };
    tar(
        &["--create", "--zstd", "--file", "../good.tar.zst", "."],
        &work.join("src"),
    );
    let good = std::fs::read(work.join("good.tar.zst")).unwrap();
    let out = env.out();
    env.build(
        &untar_manifest(&good),
        &["--export", "p", "--output-directory", out.to_str().unwrap()],
    )
    .success();
    assert_eq!(read(&out.join("p"), "etc/issue"), "strata\n");
    assert_eq!(
        std::fs::read_link(out.join("p/etc/issue.link")).unwrap(),
        Path::new("/etc/issue")
    );

    // A member with `..` (GNU tar keeps it with --absolute-names).
    std::fs::write(work.join("escape"), "x").unwrap();
    tar(
        &[
            "--create",
            "--absolute-names",
            "--file",
            "../evil.tar",
            "../escape",
        ],
        &work.join("src"),
    );
    let evil = std::fs::read(work.join("evil.tar")).unwrap();
    let run = env.build(&untar_manifest(&evil), &["--checkpoint", "*"]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains("../escape"),
        "the error names the member: {}",
        run.stderr()
    );
    assert_eq!(
        env.objects().len(),
        1,
        "only the good build's object: the refused one kept nothing"
    );
}
