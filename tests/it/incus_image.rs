//! Incus images from built trees: the tarball-to-incus stage run by the
//! engine (its input's pipeline id, two stores giving the same bytes,
//! refusals that leave nothing stored), and one real round trip: a
//! bootstrapped bookworm with systemd-sysv imported into the machine's
//! Incus and started with the debusine profile. Virtual-machine images
//! (format vm) are imported into the real Incus too; starting one needs
//! vhost_vsock, which this machine lacks (backend.rs records those
//! commands instead). Instances and images are
//! named `strata-test-…` and deleted again, also when a check fails.

use crate::support::{Env, checksum, inline_sources, sha256_hex};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const EPOCH: u64 = 1_700_000_000;

/// A tiny "system": just what the stage reads, written by mkdir and write.
fn system_pipeline(with_init: bool) -> Value {
    let mut files = vec![
        json!({"path": "/usr/lib/os-release",
               "content": "PRETTY_NAME=\"Tiny\"\nID=debian\nVERSION_CODENAME=tiny\n"}),
        json!({"path": "/var/lib/dpkg/status",
               "content": "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\n"}),
    ];
    if with_init {
        files.push(json!({"path": "/sbin/init", "content": "#!/bin/sh\n", "mode": 493}));
    }
    json!({
        "name": "system",
        "source-epoch": EPOCH,
        "stages": [
            {"type": "mkdir", "options": {"paths": [
                {"path": "/usr/lib", "parents": true},
                {"path": "/sbin"},
                {"path": "/var/lib/dpkg", "parents": true},
                {"path": "/etc/systemd/system", "parents": true}]}},
            {"type": "write", "options": {"files": files}}
        ]
    })
}

fn image_pipeline(name: &str, options: Value) -> Value {
    json!({
        "name": name,
        "source-epoch": EPOCH,
        "stages": [{
            "type": "tarball-to-incus",
            "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": ["name:system"]}},
            "options": options
        }]
    })
}

fn pipeline<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pipeline {name} in {doc:#}"))
}

fn last_stage<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let stages = pipeline(doc, name)["stages"].as_array().unwrap();
    stages.last().unwrap()
}

/// Builds `m` exporting `exports`; the --json document.
fn build(env: &Env, m: &Value, exports: &[&str]) -> Value {
    let out = env.out();
    let mut args = vec!["--output-directory", out.to_str().unwrap()];
    for e in exports {
        args.extend(["--export", e]);
    }
    let (run, doc) = env.build_json(m, &args);
    run.success();
    doc
}

/// One file of an archive, through GNU tar.
fn member(archive: &Path, name: &str) -> String {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} in {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn built_trees_become_the_same_image_in_any_store() {
    let m = json!({"version": "2", "pipelines": [
        system_pipeline(true),
        image_pipeline("split", json!({})),
        image_pipeline("unified", json!({"format": "unified"})),
    ]});
    let env = Env::new();
    let doc = build(&env, &m, &["split", "unified"]);
    let system_id = last_stage(&doc, "system")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let split = last_stage(&doc, "split");
    assert_eq!(split["metadata"]["artifact_id"], system_id.as_str());
    assert_eq!(
        split["metadata"]["files"],
        json!(["incus.tar.zst", "rootfs.tar.zst"])
    );
    assert_eq!(split["metadata"]["architecture"], "x86_64");
    let yaml = member(&env.out().join("split/incus.tar.zst"), "metadata.yaml");
    assert!(
        yaml.contains(&format!("  artifact_id: \"{system_id}\"\n")),
        "{yaml}"
    );
    assert!(
        yaml.contains(&format!("creation_date: {EPOCH}\n")),
        "{yaml}"
    );
    assert_eq!(
        member(&env.out().join("split/rootfs.tar.zst"), "./sbin/init"),
        "#!/bin/sh\n"
    );
    assert_eq!(
        member(
            &env.out().join("unified/image.tar.zst"),
            "rootfs/etc/systemd/system-generators/lxc"
        ),
        member(
            &env.out().join("split/rootfs.tar.zst"),
            "./etc/systemd/system-generators/lxc"
        )
    );
    assert_eq!(
        last_stage(&doc, "unified")["metadata"]["files"],
        json!(["image.tar.zst"])
    );

    // Another store, built later: the same bytes, so the same Incus fingerprint.
    std::thread::sleep(Duration::from_millis(1100));
    let env2 = Env::new();
    build(&env2, &m, &["split", "unified"]);
    for file in [
        "split/incus.tar.zst",
        "split/rootfs.tar.zst",
        "unified/image.tar.zst",
    ] {
        let a = sha256_hex(&std::fs::read(env.out().join(file)).unwrap());
        let b = sha256_hex(&std::fs::read(env2.out().join(file)).unwrap());
        assert_eq!(a, b, "{file}");
    }
}

#[test]
fn a_tree_without_init_is_refused_and_nothing_is_kept() {
    let m = json!({"version": "2", "pipelines": [
        system_pipeline(false),
        image_pipeline("image", json!({})),
    ]});
    let env = Env::new();
    let run = env.build(&m, &["--checkpoint", "*"]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    let stderr = run.stderr();
    assert!(
        stderr.contains(
            "the input tree has no /sbin/init; an Incus container starts /sbin/init: install an init system in the tree (systemd-sysv for systemd)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("tarball-to-incus"), "{stderr}");
    // The system's two stages are stored; the failed stage left nothing.
    assert_eq!(env.objects().len(), 2, "{:?}", env.objects());
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}

/// A qcow2 disk as `qemu-img` makes it (empty: incus imports it as it is).
fn qcow2_disk() -> Vec<u8> {
    crate::support::require("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg("64M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).unwrap()
}

/// system (a tiny tree), disk (`bytes` as /NAME), and a vm image of both.
fn vm_manifest(bytes: &[u8], name: &str, options: Value) -> Value {
    let sum = checksum(bytes);
    let mut vm = image_pipeline("vm", options);
    vm["stages"][0]["inputs"]["image"] =
        json!({"type": "tree", "origin": "pipeline", "references": ["name:disk"]});
    json!({"version": "2", "sources": inline_sources(&[bytes]), "pipelines": [
        system_pipeline(true),
        {"name": "disk", "source-epoch": EPOCH, "stages": [{
            "type": "copy",
            "inputs": {"files": {"type": "files", "origin": "source", "references": [sum]}},
            "options": {"paths": [{"from": format!("input://files/{sum}"), "to": format!("tree:///{name}")}]}
        }]},
        vm,
    ]})
}

#[test]
fn a_disk_image_becomes_an_incus_vm_image_incus_imports() {
    let disk = qcow2_disk();
    let env = Env::new();
    let doc = build(
        &env,
        &vm_manifest(&disk, "disk.qcow2", json!({"format": "vm"})),
        &["vm"],
    );
    let vm = last_stage(&doc, "vm");
    assert_eq!(vm["metadata"]["format"], "vm");
    assert_eq!(
        vm["metadata"]["files"],
        json!(["incus.tar.zst", "rootfs.img"])
    );
    let out = env.out().join("vm");
    assert_eq!(
        std::fs::read(out.join("rootfs.img")).unwrap(),
        disk,
        "rootfs.img is the disk"
    );
    let yaml = member(&out.join("incus.tar.zst"), "metadata.yaml");
    assert!(
        yaml.contains("\n  requirements.secureboot: \"false\"\n"),
        "{yaml}"
    );
    assert!(yaml.contains("profiles:\n- debusine\n"), "{yaml}");
    assert!(yaml.contains("architecture: \"x86_64\"\n"), "{yaml}");

    // The real Incus takes it as a virtual-machine image, through the
    // same import strata uses for its own aliases.
    let alias = format!("strata-test-vm-{}", std::process::id());
    struct Delete<'a>(&'a str);
    impl Drop for Delete<'_> {
        fn drop(&mut self) {
            let _ = incus(&["image", "delete", self.0]);
        }
    }
    let _delete = Delete(&alias);
    let imported = strata::backend::image::import(
        &strata::backend::cli::SystemCli,
        &env.store(),
        &out,
        &alias,
    )
    .unwrap();
    assert!(imported);
    let info = incus_ok(&["image", "info", &alias]);
    assert!(info.contains("Type: virtual-machine"), "{info}");
    assert!(info.contains("requirements.secureboot: false"), "{info}");
}

#[test]
fn a_vm_image_needs_a_qcow2_disk_by_its_file_name() {
    let env = Env::new();
    for (bytes, name, options, expected) in [
        (
            &b"not a disk"[..],
            "disk.qcow2",
            json!({"format": "vm"}),
            "the input image's disk.qcow2 is not a qcow2 disk",
        ),
        (
            &b"QFI\xfb"[..],
            "other.qcow2",
            json!({"format": "vm"}),
            "the input image has no regular file \"disk.qcow2\" (options.disk)",
        ),
    ] {
        let run = env.build(&vm_manifest(bytes, name, options), &["--checkpoint", "*"]);
        assert_eq!(run.code(), 1, "{}", run.describe());
        assert!(run.stderr().contains(expected), "{}", run.stderr());
    }
    // A path is no file name: refused before anything runs.
    let run = env.build(
        &vm_manifest(
            b"x",
            "disk.qcow2",
            json!({"format": "vm", "disk": "../disk.qcow2"}),
        ),
        &[],
    );
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(run.stderr().contains("/disk"), "{}", run.stderr());
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}

/// `incus ARGS`, its output whatever the exit status.
#[track_caller]
fn incus(args: &[&str]) -> Output {
    crate::support::require("incus");
    Command::new("incus").args(args).output().unwrap()
}

#[track_caller]
fn incus_ok(args: &[&str]) -> String {
    let out = incus(args);
    assert!(
        out.status.success(),
        "incus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `systemctl is-system-running --wait` once systemd in the instance
/// answers at all: right after `incus launch` its bus may not be up yet.
fn wait_for_boot(name: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = incus(&[
            "exec",
            name,
            "--",
            "timeout",
            "60",
            "systemctl",
            "is-system-running",
            "--wait",
        ]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !state.is_empty() && !stderr.contains("Failed to connect to bus") {
            return state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "systemd in {name} never answered: {state} {stderr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes the test's instances and images however the test ends.
struct Cleanup {
    instances: Vec<String>,
    aliases: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Never `incus()`, which fails the test when incus is missing: a
        // panic here, while a failed test unwinds, aborts every test.
        for instance in &self.instances {
            crate::support::cleanup("incus", &["delete", "--force", instance]);
        }
        for alias in &self.aliases {
            crate::support::cleanup("incus", &["image", "delete", alias]);
        }
    }
}

#[test]
fn a_bootstrapped_system_starts_in_incus_with_its_templates() {
    crate::support::require("incus");
    let m = json!({"version": "2", "pipelines": [
        {"name": "system", "runner": "debian", "source-epoch": EPOCH, "stages": [{
            "type": "bootstrap",
            "options": {
                "bootstrap_options": {"architecture": "amd64", "variant": "minbase",
                                      "extra_packages": ["systemd-sysv"]},
                "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]
            }
        }]},
        {"name": "image", "runner": "debian", "source-epoch": EPOCH, "stages": [{
            "type": "tarball-to-incus",
            "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": ["name:system"]}},
            "options": {}
        }]},
        {"name": "unified", "runner": "debian", "source-epoch": EPOCH, "stages": [{
            "type": "tarball-to-incus",
            "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": ["name:system"]}},
            "options": {"format": "unified"}
        }]}
    ]});
    let env = Env::new();
    let doc = build(&env, &m, &["image", "unified"]);
    let meta = &last_stage(&doc, "image")["metadata"];
    assert_eq!(meta["os"], "debian");
    assert_eq!(meta["release"], "bookworm");
    assert_eq!(meta["architecture"], "x86_64");

    let tag = std::process::id();
    let (name, alias) = (
        format!("strata-test-image-{tag}"),
        format!("strata-test-image-{tag}"),
    );
    let (name_u, alias_u) = (
        format!("strata-test-image-{tag}-u"),
        format!("strata-test-image-{tag}-unified"),
    );
    let guard = Cleanup {
        instances: vec![name.clone(), name_u.clone()],
        aliases: vec![alias.clone(), alias_u.clone()],
    };
    let dir = env.out().join("image");
    incus_ok(&[
        "image",
        "import",
        dir.join("incus.tar.zst").to_str().unwrap(),
        dir.join("rootfs.tar.zst").to_str().unwrap(),
        "--alias",
        &alias,
    ]);
    // Incus read metadata.yaml: architecture, creation date, properties.
    let info = incus_ok(&["image", "info", &alias]);
    assert!(info.contains("Architecture: x86_64\n"), "{info}");
    assert!(info.contains("Created: 2023/11/14 22:13 UTC\n"), "{info}");
    assert!(info.contains("release: bookworm\n"), "{info}");
    assert!(
        info.contains(&format!(
            "artifact_id: {}\n",
            last_stage(&doc, "system")["id"].as_str().unwrap()
        )),
        "{info}"
    );
    incus_ok(&["launch", &alias, &name, "-p", "debusine"]);
    let name = name.as_str();

    // Boot finished: every unit started or was skipped, none failed.
    let state = wait_for_boot(name);
    let failed = incus_ok(&["exec", name, "--", "systemctl", "--failed", "--no-legend"]);
    assert_eq!(state, "running", "failed units: {failed}");

    assert_eq!(
        incus_ok(&["exec", name, "--", "cat", "/etc/hostname"]),
        format!("{name}\n")
    );
    assert_eq!(
        incus_ok(&["exec", name, "--", "cat", "/etc/hosts"]),
        format!(
            "127.0.1.1\t{name}\n127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
        )
    );
    assert_eq!(
        incus_ok(&[
            "exec",
            name,
            "--",
            "systemctl",
            "is-active",
            "systemd-networkd"
        ]),
        "active\n"
    );
    // Our generator ran: what an LXC container cannot use is masked.
    let states = incus_ok(&[
        "exec",
        name,
        "--",
        "systemctl",
        "show",
        "--property=LoadState",
        "--value",
        "sys-kernel-config.mount",
        "systemd-timesyncd.service",
    ]);
    let states: Vec<&str> = states.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(states, ["masked", "masked"]);

    // The unified form holds the same system.
    let unified = env.out().join("unified/image.tar.zst");
    incus_ok(&[
        "image",
        "import",
        unified.to_str().unwrap(),
        "--alias",
        &alias_u,
    ]);
    incus_ok(&["launch", &alias_u, &name_u, "-p", "debusine"]);
    assert_eq!(wait_for_boot(&name_u), "running");
    assert_eq!(
        incus_ok(&["exec", &name_u, "--", "cat", "/etc/hostname"]),
        format!("{name_u}\n")
    );

    drop(guard);
    let list = incus_ok(&["list", "--format=csv", "--columns=n"]);
    assert!(
        !list
            .lines()
            .any(|l| l.starts_with(&format!("strata-test-image-{tag}"))),
        "{list}"
    );
    let images = incus_ok(&["image", "list", "--format=csv", "--columns=l"]);
    assert!(!images.contains(&alias), "{images}");
}
