//! `strata task` for real: debusine task documents compiled into manifests
//! (pinned), checked strictly (a table of bad documents), and run — a
//! bootstrap, the fixture package build, lintian on it — with the
//! environment bootstrapped once and reused, artifacts.json checked against
//! schemas/artifacts.json, failure emails delivered to an SMTP server
//! the test runs on 127.0.0.1, and a Lintian task run in an incus container.

use crate::support::{Env, Run, repo};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;

fn dsc(name: &str) -> String {
    repo()
        .join(format!("tests/fixtures/packages/dist/{name}_1.0.dsc"))
        .display()
        .to_string()
}

/// A SystemImageBuild of minbase with systemd: an ESP, swap, a 1 GiB gap
/// and the root, as the issue lays it out.
fn system_image_build(format: &str) -> Value {
    json!({"task": "SystemImageBuild", "task_data": {
        "bootstrap_options": {"architecture": "amd64", "variant": "minbase", "extra_packages": ["systemd-sysv"]},
        "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}],
        "disk_image": {"format": format, "filename": "vm", "partitions": [
            {"size": 1, "filesystem": "vfat", "mountpoint": "/boot/efi"},
            {"size": 1, "filesystem": "swap"},
            {"size": 1, "filesystem": "freespace"},
            {"size": 2, "filesystem": "ext4", "mountpoint": "/"}]}}})
}

fn system_bootstrap() -> Value {
    json!({"task": "SystemBootstrap", "task_data": {
        "bootstrap_options": {"architecture": "amd64", "variant": "minbase"},
        "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}})
}

pub(crate) fn package_build(name: &str) -> Value {
    json!({"task": "PackageBuild", "task_data": {
        "input": {"source_artifact": dsc(name)},
        "environment": "debian/match:codename=bookworm:variant=buildd",
        "host_architecture": "amd64"}})
}

fn lintian(source: &str, binaries: &[String]) -> Value {
    json!({"task": "Lintian", "task_data": {
        "input": {"source_artifact": source, "binary_artifacts": binaries},
        "environment": "debian/match:codename=bookworm:variant=buildd"}})
}

fn compile(env: &Env, task: &Value) -> Run {
    env.strata(&["task", "compile", "-"], Some(&task.to_string()))
}

fn run_task(env: &Env, task: &Value, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "task",
        "run",
        "-",
        "--output-directory",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    env.strata(&args, Some(&task.to_string()))
}

/// artifacts.json of `out`, checked against schemas/artifacts.json, and
/// every file it lists present.
pub(crate) fn artifacts(out: &Path) -> Value {
    let schema: Value =
        serde_json::from_slice(&std::fs::read(repo().join("schemas/artifacts.json")).unwrap())
            .unwrap();
    let doc: Value =
        serde_json::from_slice(&std::fs::read(out.join("artifacts.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
    for a in doc["artifacts"].as_array().unwrap() {
        for f in a["files"].as_array().unwrap() {
            assert!(out.join(f.as_str().unwrap()).is_file(), "{f} in {a:#}");
        }
    }
    doc
}

pub(crate) fn of<'a>(doc: &'a Value, category: &str) -> Vec<&'a Value> {
    doc["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["category"] == category)
        .collect()
}

/// Bootstrap stages the store holds.
pub(crate) fn bootstraps(env: &Env) -> usize {
    env.objects()
        .iter()
        .filter(|id| {
            std::fs::read_to_string(env.store().join("objects").join(id).join("meta/info.json"))
                .is_ok_and(|t| t.contains("\"bootstrap\""))
        })
        .count()
}

#[test]
fn invalid_task_documents_name_the_key() {
    let env = Env::new();
    type Edit = fn(&mut Value);
    let cases: Vec<(Value, Edit, &str, &str)> = vec![
        (
            system_image_build("raw"),
            |d| d["task_data"]["disk_image"]["partitions"][3]["mountpoint"] = json!("/boot/efi"),
            "task_data.disk_image.partitions[3].mountpoint",
            "`/boot/efi` is the mountpoint of partitions[0] already",
        ),
        (
            system_image_build("raw"),
            |d| d["task_data"]["disk_image"]["partitions"][3]["size"] = json!(100),
            "task_data.disk_image.partitions",
            "the partitions add up to 103 GiB, more than the cap of 64 GiB (--max-image-size)",
        ),
        (
            system_bootstrap(),
            |d| d["tsk"] = json!(1),
            "tsk",
            "unknown field `tsk`",
        ),
        (
            system_bootstrap(),
            |d| d["task"] = json!("SystemBuild"),
            "task",
            "unknown task `SystemBuild`",
        ),
        (
            system_bootstrap(),
            |d| {
                d.as_object_mut().unwrap().remove("task_data");
            },
            "(document)",
            "missing field `task_data`",
        ),
        (
            system_bootstrap(),
            |d| d["task_data"]["bootstrap_options"]["arch"] = json!("amd64"),
            "task_data.bootstrap_options.arch",
            "unknown field `arch`",
        ),
        (
            system_bootstrap(),
            |d| {
                d["task_data"]["bootstrap_options"]
                    .as_object_mut()
                    .unwrap()
                    .remove("architecture");
            },
            "task_data.bootstrap_options",
            "missing field `architecture`",
        ),
        (
            system_bootstrap(),
            |d| d["task_data"]["bootstrap_options"]["variant"] = json!("tiny"),
            "task_data.bootstrap_options.variant",
            "unknown variant `tiny`",
        ),
        (
            system_bootstrap(),
            |d| d["task_data"]["bootstrap_repositories"][0]["suite"] = json!(5),
            "task_data.bootstrap_repositories[0].suite",
            "invalid type: integer `5`, expected a string",
        ),
        (
            system_bootstrap(),
            |d| d["task_data"]["bootstrap_repositories"][0]["suite"] = json!("bookworm;rm"),
            "task_data.bootstrap_repositories[0].suite",
            "is not a suite name",
        ),
        (
            system_bootstrap(),
            |d| {
                d["task_data"]["bootstrap_repositories"][0]["components"] =
                    json!(["main", "contrib/x"])
            },
            "task_data.bootstrap_repositories[0].components[1]",
            "is not a component name",
        ),
        (
            system_bootstrap(),
            |d| d["task_data"]["bootstrap_repositories"][0]["suite"] = json!("./"),
            "task_data.bootstrap_repositories[0].components",
            "a flat repository has no components",
        ),
        (
            system_bootstrap(),
            |d| d["task_data"]["bootstrap_repositories"][0]["types"] = json!(["rpm"]),
            "task_data.bootstrap_repositories[0].types[0]",
            "unknown variant `rpm`",
        ),
        (
            system_bootstrap(),
            |d| {
                d["task_data"]["bootstrap_repositories"][0]["check_signature_with"] =
                    json!("external")
            },
            "task_data.bootstrap_repositories[0].keyring",
            "check_signature_with `external` needs a keyring",
        ),
        (
            system_bootstrap(),
            |d| {
                d["task_data"]["bootstrap_repositories"][0]["keyring"] =
                    json!({"url": "file:///etc/apt/trusted.gpg"})
            },
            "task_data.bootstrap_repositories[0].keyring.url",
            "must be under /usr/share/keyrings/",
        ),
        (
            system_bootstrap(),
            |d| {
                d["task_data"]["bootstrap_repositories"][0]["keyring"] =
                    json!({"url": "file:///usr/share/keyrings/../../../etc/shadow"})
            },
            "task_data.bootstrap_repositories[0].keyring.url",
            "(no `.` or `..`)",
        ),
        (
            system_bootstrap(),
            |d| d["task_data"]["bootstrap_repositories"] = json!([]),
            "task_data.bootstrap_repositories",
            "at least one repository",
        ),
        (
            package_build("hello-strata"),
            |d| {
                d["task_data"]["binnmu"] = json!({"changelog": "x"});
                d["task_data"]["build_components"] = json!(["any", "all"]);
            },
            "task_data.binnmu",
            "a binNMU cannot build `all`",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["build_components"] = json!(["binary"]),
            "task_data.build_components[0]",
            "unknown variant `binary`",
        ),
        (
            package_build("hello-strata"),
            |d| {
                d["task_data"]["extra_repositories"] =
                    json!([{"url": "file:///srv/repo", "suite": "bookworm"}])
            },
            "task_data.extra_repositories[0].components",
            "components are required",
        ),
        (
            package_build("hello-strata"),
            |d| {
                d["task_data"]["extra_repositories"] =
                    json!([{"url": "file:///srv/repo", "suite": "./", "components": ["main"]}])
            },
            "task_data.extra_repositories[0].components",
            "a flat repository has no components",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["backend"] = json!("docker"),
            "task_data.backend",
            "unknown variant `docker`",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["backend"] = json!("incus-vm"),
            "task_data.backend",
            "`incus-vm` is not available to tasks: tasks do not run in incus VMs yet",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["backend"] = json!("qemu"),
            "task_data.backend",
            "`qemu` is not available to tasks: tasks do not run on the qemu backend yet",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["build_architecture"] = json!(5),
            "task_data.build_architecture",
            "invalid type: integer `5`",
        ),
        (
            package_build("hello-strata"),
            |d| {
                d["task_data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("host_architecture");
            },
            "task_data",
            "missing field `host_architecture`",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["environment"] = json!("bookworm"),
            "task_data.environment",
            "a lookup is VENDOR/match:KEY=VALUE",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["environment"] = json!("debian/match:release=12"),
            "task_data.environment",
            "unknown key `release`",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["environment"] = json!("debian/match:variant=buildd"),
            "task_data.environment",
            "strata needs its codename",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["input"]["source_artifact"] = json!(42),
            "task_data.input.source_artifact",
            "invalid type: integer `42`, expected a string",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["input"]["source_artifact"] = json!("hello-strata_1.0.tar.xz"),
            "task_data.input.source_artifact",
            "is not a path or file:// URL of a .dsc file",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["input"]["source_artifact"] = json!("/nonexistent/x_1.dsc"),
            "task_data.input.source_artifact",
            "No such file or directory",
        ),
        (
            lintian("/x.dsc", &[]),
            |d| d["task_data"]["input"] = json!({}),
            "task_data.input",
            "nothing to analyse",
        ),
        (
            lintian("/x.dsc", &[]),
            |d| d["task_data"]["fail_on_severity"] = json!("fatal"),
            "task_data.fail_on_severity",
            "unknown variant `fatal`",
        ),
        (
            lintian("/x.dsc", &[]),
            |d| d["task_data"]["output"] = json!({"source_analysis": false, "binary_all_analysis": false, "binary_any_analysis": false}),
            "task_data.output",
            "every analysis is turned off",
        ),
        (
            system_bootstrap(),
            |d| {
                d["task_data"]["notifications"] =
                    json!({"on_failure": [{"channel": "admins", "data": {"bcc": ["a@b.c"]}}]})
            },
            "task_data.notifications.on_failure[0].data.bcc",
            "unknown field `bcc`",
        ),
        (
            system_bootstrap(),
            |d| {
                d["task_data"]["notifications"] = json!({"on_failure": [{"channel": "admins", "data": {"to": ["not-an-address"]}}]})
            },
            "task_data.notifications.on_failure[0].data.to[0]",
            "is not an email address",
        ),
        (
            system_bootstrap(),
            |d| d["task_data"]["notifications"] = json!({"on_failure": [{"channel": "admins", "data": {"subject": "a\r\nBcc: x@y.z"}}]}),
            "task_data.notifications.on_failure[0].data.subject",
            "no line breaks",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["build_dep_resolver"] = json!("aspcud"),
            "task_data.build_dep_resolver",
            "`aspcud` is not available: strata resolves build-dependencies with apt",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["build_dep_resolver"] = json!("dose3"),
            "task_data.build_dep_resolver",
            "unknown variant `dose3`, expected one of `apt`, `aptitude`, `aspcud`, `xapt`, `null`",
        ),
        (
            package_build("hello-strata"),
            |d| d["task_data"]["aspcud_criteria"] = json!("-removed,-changed,-new"),
            "task_data.aspcud_criteria",
            "applies only to the `aspcud` build_dep_resolver",
        ),
    ];
    assert!(cases.len() >= 20);
    for (i, (base, edit, path, message)) in cases.into_iter().enumerate() {
        let mut doc = base;
        edit(&mut doc);
        let run = compile(&env, &doc);
        assert_eq!(run.code(), 2, "case {i} ({path}): {}", run.describe());
        let err = run.stderr();
        assert!(
            err.contains(&format!("{path}: ")) && err.contains(message),
            "case {i}: want `{path}: …{message}…`, got:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let run = env.strata(&["task", "compile", "-"], Some("{\"task\": "));
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr()
            .contains("(document): malformed JSON at line 1"),
        "{}",
        run.stderr()
    );
    // Compiling never creates a store.
    assert!(!env.store().exists());

    // debusine's defaults for the resolver keys are accepted as they are.
    let mut doc = package_build("hello-strata");
    doc["task_data"]["build_dep_resolver"] = json!("apt");
    doc["task_data"]["aspcud_criteria"] = Value::Null;
    compile(&env, &doc).success();
    doc["task_data"]["build_dep_resolver"] = Value::Null;
    compile(&env, &doc).success();

    // `build_architecture: null` is allowed (any build architecture) and kept.
    let mut doc = package_build("hello-strata");
    doc["task_data"]["build_architecture"] = Value::Null;
    let run = compile(&env, &doc);
    run.success();
    let m: Value = serde_json::from_str(&run.stdout()).unwrap();
    let options = &m["pipelines"][1]["stages"][0]["options"];
    assert!(
        options
            .as_object()
            .unwrap()
            .contains_key("build_architecture")
            && options["build_architecture"].is_null(),
        "{options}"
    );
}

/// A compiled manifest as a snapshot: the checkout's path made neutral.
fn pinned(env: &Env, task: &Value) -> String {
    let run = compile(env, task);
    run.success();
    run.stdout()
        .replace(&repo().display().to_string(), "[REPO]")
}

#[test]
fn compiled_manifests_are_pinned() {
    let env = Env::new();
    let mut sb = system_bootstrap();
    sb["task_data"]["bootstrap_options"]["extra_packages"] = json!(["hello"]);
    sb["task_data"]["customization_script"] = json!("echo customized > /etc/customized");
    insta::assert_snapshot!("task_system_bootstrap", pinned(&env, &sb));

    let mut pb = package_build("hello-strata");
    pb["task_data"]["build_profiles"] = json!(["nocheck"]);
    pb["task_data"]["build_options"] = json!("nocheck");
    pb["task_data"]["build_architecture"] = Value::Null;
    pb["task_data"]["binnmu"] = json!({"changelog": "Rebuild for strata", "suffix": "+b1"});
    pb["task_data"]["notifications"] = json!({"on_failure": [{"channel": "admins"}]});
    insta::assert_snapshot!("task_package_build", pinned(&env, &pb));

    let mut li = lintian(&format!("file://{}", dsc("lint-strata")), &[]);
    li["task_data"]["host_architecture"] = json!("amd64");
    li["task_data"]["fail_on_severity"] = json!("error");
    li["task_data"]["output"] = json!({"binary_all_analysis": false});
    insta::assert_snapshot!("task_lintian", pinned(&env, &li));
    li["task_data"]["backend"] = json!("incus-lxc");
    insta::assert_snapshot!("task_lintian_incus_lxc", pinned(&env, &li));
    let mut pb_incus = package_build("hello-strata");
    pb_incus["task_data"]["backend"] = json!("incus-lxc");
    insta::assert_snapshot!("task_package_build_incus_lxc", pinned(&env, &pb_incus));

    insta::assert_snapshot!(
        "task_system_image_build",
        pinned(&env, &system_image_build("qcow2"))
    );

    // The same document compiles to the same manifest.
    assert_eq!(pinned(&env, &pb), pinned(&env, &pb));
}

#[test]
fn a_system_bootstrap_task_hands_back_a_tarball_and_an_environment() {
    let env = Env::new();
    let out = env.path("sb");
    let run = run_task(&env, &system_bootstrap(), &out, &[]);
    run.success();
    let doc = artifacts(&out);
    assert_eq!(doc["result"], "success");
    assert!(doc["environment"].is_null());
    let tarballs = of(&doc, "debian:system-tarball");
    assert_eq!(tarballs.len(), 1, "{doc:#}");
    let data = &tarballs[0]["data"];
    assert_eq!(data["vendor"], "debian");
    assert_eq!(data["codename"], "bookworm");
    assert_eq!(data["variant"], "minbase");
    assert_eq!(data["architecture"], "amd64");
    assert_eq!(data["with_init"], false);
    assert!(data["pkglist"]["apt"].is_string(), "{data:#}");
    let tarball = out.join(tarballs[0]["files"][0].as_str().unwrap());
    let listing = crate::support::tar_listing(&tarball);
    assert!(listing.contains("./etc/os-release"), "{listing}");
    assert_eq!(
        data["sha256"],
        format!(
            "sha256:{}",
            crate::support::sha256_hex(&std::fs::read(&tarball).unwrap())
        )
    );

    // The store now holds it as an environment.
    let ls = env.strata(&["env", "ls", "--json"], None);
    ls.success();
    let envs: Value = serde_json::from_str(&ls.stdout()).unwrap();
    assert_eq!(envs.as_array().unwrap().len(), 1, "{envs:#}");
    assert_eq!(envs[0]["codename"], "bookworm");
    assert_eq!(envs[0]["variant"], "minbase");
    assert_eq!(envs[0]["backends"], json!(["unshare"]));
    let table = env.strata(&["env", "ls"], None);
    table.success();
    assert!(
        table.stdout().contains("debian   bookworm     minbase"),
        "{}",
        table.stdout()
    );

    // A minbase system has no dpkg-dev: a PackageBuild asking for minbase
    // gets an environment of its own, not this one.
    let mut pb = package_build("hello-strata");
    pb["task_data"]["environment"] = json!("debian/match:codename=bookworm:variant=minbase");
    let m: Value = serde_json::from_str(&compile(&env, &pb).success().stdout()).unwrap();
    assert_eq!(
        m["pipelines"][0]["stages"][0]["options"]["bootstrap_options"]["extra_packages"],
        json!(["lintian"])
    );
    // While a SystemBootstrap of the same system is all cached.
    let again = run_task(&env, &system_bootstrap(), &env.path("sb2"), &[]);
    again.success();
    assert_eq!(bootstraps(&env), 1);

    // A retried task finds its output there: refused with the way out,
    // then replaced with --force (from the store: nothing is bootstrapped).
    let refused = run_task(&env, &system_bootstrap(), &out, &[]);
    assert_eq!(refused.code(), 2, "{}", refused.describe());
    assert!(
        refused.stderr().contains("exists already") && refused.stderr().contains("--force"),
        "{}",
        refused.stderr()
    );
    run_task(&env, &system_bootstrap(), &out, &["--force"]).success();
    assert_eq!(artifacts(&out)["result"], "success");
    assert!(
        out.join(tarballs[0]["files"][0].as_str().unwrap())
            .is_file()
    );
    assert_eq!(bootstraps(&env), 1);
}

#[test]
fn a_system_image_build_task_hands_back_a_laid_out_image_raw_or_qcow2() {
    let env = Env::new();
    let run_image = |format: &str| {
        let out = env.path(format);
        run_task(&env, &system_image_build(format), &out, &[]).success();
        let doc = artifacts(&out);
        assert_eq!(doc["task"], "SystemImageBuild");
        assert_eq!(doc["result"], "success", "{doc:#}");
        let images = of(&doc, "debian:system-image");
        assert_eq!(images.len(), 1, "{doc:#}");
        let data = images[0]["data"].clone();
        let file = out.join(images[0]["files"][0].as_str().unwrap());
        (data, file)
    };
    let (data, raw) = run_image("raw");
    assert_eq!(data["filename"], "vm.raw");
    assert_eq!(data["image_format"], "raw");
    assert_eq!(data["filesystem"], "ext4");
    assert_eq!(data["boot_mechanism"], "efi");
    assert_eq!(data["codename"], "bookworm");
    assert_eq!(data["with_init"], true);
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    assert_eq!(data["size"], 5 * GIB + 2 * MIB);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 5 * GIB + 2 * MIB);
    // The GPT as laid out: types (DPS), sizes and order, the gap kept.
    let out = std::process::Command::new("sfdisk")
        .arg("--json")
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts: Vec<(u64, u64, String)> = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
                p["type"].as_str().unwrap().to_ascii_lowercase(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            (MIB, GIB, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".to_owned()),
            (
                MIB + GIB,
                GIB,
                "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f".to_owned()
            ),
            (
                MIB + 3 * GIB,
                2 * GIB,
                "4f68bce3-e8cd-4db1-96e7-fbcaf984b709".to_owned()
            ),
        ]
    );

    // qcow2: the same stages from the store, converted.
    let bootstraps_before = bootstraps(&env);
    let (data, qcow2) = run_image("qcow2");
    assert_eq!(
        bootstraps(&env),
        bootstraps_before,
        "nothing was bootstrapped again"
    );
    assert_eq!(data["filename"], "vm.qcow2");
    assert_eq!(data["image_format"], "qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&qcow2)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], data["size"]);
    let same = std::process::Command::new("qemu-img")
        .args(["compare", "-q"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .unwrap();
    assert!(same.success(), "the qcow2 holds the raw image");

    // It boots (OVMF, systemd-boot, the kernel) as a qemu environment made
    // from the same manifest, all of it from the store, and is laid out as
    // asked: the root on the ext4 partition (the third: a gap is none),
    // the swap partition in use.
    let manifest = env.path("image.json");
    std::fs::write(
        &manifest,
        compile(&env, &system_image_build("qcow2"))
            .success()
            .stdout(),
    )
    .unwrap();
    struct Delete<'a>(&'a Env);
    impl Drop for Delete<'_> {
        fn drop(&mut self) {
            let _ = self.0.strata(&["env", "delete", "sib-vm"], None);
        }
    }
    let _delete = Delete(&env);
    let m = manifest.to_str().unwrap();
    env.strata(
        &[
            "env",
            "create",
            "sib-vm",
            m,
            "--pipeline",
            "qcow2",
            "--backend",
            "qemu",
            "--start",
            "-q",
        ],
        None,
    )
    .success();
    // What a command inside says, word by word.
    let inside = |argv: &[&str]| -> Vec<String> {
        let mut args = vec!["env", "run", "sib-vm", "--"];
        args.extend_from_slice(argv);
        let out = env.strata(&args, None).success().stdout();
        out.split_whitespace().map(str::to_owned).collect()
    };
    let mounted = |path: &str| inside(&["findmnt", "-n", "-o", "SOURCE,FSTYPE", path]);
    assert_eq!(mounted("/"), ["/dev/vda3", "ext4"]);
    // The agent answers early in the boot; the swap is on once the boot
    // is done (degraded or not: a VM without network is degraded).
    env.strata(
        &[
            "env",
            "run",
            "sib-vm",
            "--",
            "systemctl",
            "is-system-running",
            "--wait",
        ],
        None,
    );
    assert_eq!(mounted("/boot/efi"), ["/dev/vda1", "vfat"]);
    assert_eq!(
        inside(&["swapon", "--show=NAME,TYPE,SIZE", "--noheadings", "--bytes"]),
        ["/dev/vda2", "partition", &(GIB - 4096).to_string()]
    );
    env.strata(&["env", "stop", "sib-vm"], None).success();
}

#[test]
fn package_build_and_lintian_tasks_share_one_environment() {
    let env = Env::new();

    // First task: nothing stored, so the environment is bootstrapped in.
    let out1 = env.path("build1");
    run_task(&env, &package_build("hello-strata"), &out1, &[]).success();
    let doc = artifacts(&out1);
    assert_eq!(doc["result"], "success");
    assert_eq!(doc["environment"]["reused"], false, "{doc:#}");
    assert_eq!(
        doc["environment"]["lookup"],
        "debian/match:codename=bookworm:variant=buildd:architecture=amd64:backend=unshare"
    );
    let debs = of(&doc, "debian:binary-package");
    let hello: Vec<_> = debs
        .iter()
        .filter(|d| d["data"]["deb_fields"]["Package"] == "hello-strata")
        .collect();
    assert_eq!(hello.len(), 1, "{doc:#}");
    assert_eq!(hello[0]["data"]["srcpkg_name"], "hello-strata");
    assert_eq!(hello[0]["data"]["deb_fields"]["Architecture"], "amd64");
    assert_eq!(
        hello[0]["files"],
        json!(["build/hello-strata_1.0_amd64.deb"])
    );
    assert!(
        hello[0]["data"]["deb_control_files"]
            .to_string()
            .contains("md5sums")
    );
    let groups = of(&doc, "debian:binary-packages");
    assert_eq!(groups.len(), 1, "only arch:any by default: {doc:#}");
    assert!(
        groups[0]["data"]["packages"]
            .to_string()
            .contains("\"hello-strata\""),
        "{groups:?}"
    );
    let upload = of(&doc, "debian:upload");
    assert_eq!(
        upload[0]["data"]["changes_fields"]["Source"],
        "hello-strata"
    );
    assert!(
        upload[0]["files"].to_string().contains(".buildinfo"),
        "{upload:?}"
    );
    let log = of(&doc, "debian:package-build-log");
    assert!(
        std::fs::read_to_string(out1.join(log[0]["files"][0].as_str().unwrap()))
            .unwrap()
            .contains("dpkg-buildpackage"),
    );
    assert_eq!(bootstraps(&env), 1);
    let ls = env.strata(&["env", "ls", "--json"], None);
    let envs: Value = serde_json::from_str(&ls.success().stdout()).unwrap();
    assert_eq!(envs[0]["id"], doc["environment"]["id"], "{envs:#}");
    assert_eq!(envs[0]["variant"], "buildd");

    // Second task, same environment: found in the store, nothing bootstrapped.
    let mut pb = package_build("hello-strata");
    pb["task_data"]["build_components"] = json!(["any", "all", "source"]);
    // The first build's packages (through its .changes) are there for apt.
    pb["task_data"]["input"]["extra_binary_artifacts"] =
        json!([out1.join("build/hello-strata_1.0_amd64.changes")]);
    let out2 = env.path("build2");
    let run = run_task(&env, &pb, &out2, &[]);
    run.success();
    assert!(
        run.stderr()
            .contains("extra-binaries/copy: copy input://files/")
            && run.stderr().contains("2 extra binary artifacts"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("the stored system"),
        "{}",
        run.stderr()
    );
    let err = run.stderr();
    assert!(
        err.lines()
            .any(|l| l.contains("environment: stage 0 bootstrap [") && l.ends_with("] cached")),
        "{err}"
    );
    assert!(
        !err.contains("environment/bootstrap:"),
        "the bootstrap ran: {err}"
    );
    let doc2 = artifacts(&out2);
    assert_eq!(doc2["environment"]["reused"], true);
    assert_eq!(doc2["environment"]["id"], doc["environment"]["id"]);
    assert_eq!(
        bootstraps(&env),
        1,
        "the second PackageBuild bootstraps nothing"
    );
    assert!(
        of(&doc2, "debian:binary-package")
            .iter()
            .any(|d| d["data"]["deb_fields"]["Package"] == "hello-strata-doc"),
        "{doc2:#}"
    );
    assert_eq!(
        of(&doc2, "debian:binary-packages").len(),
        2,
        "amd64 and all: {doc2:#}"
    );

    // Lintian over that build's source and .changes, in the same environment.
    let out3 = env.path("lint");
    let task = lintian(
        &out2
            .join("build/hello-strata_1.0.dsc")
            .display()
            .to_string(),
        &[out2
            .join("build/hello-strata_1.0_amd64.changes")
            .display()
            .to_string()],
    );
    run_task(&env, &task, &out3, &[]).success();
    let doc3 = artifacts(&out3);
    assert_eq!(doc3["environment"]["id"], doc["environment"]["id"]);
    let lint = of(&doc3, "debian:lintian");
    let summary = &lint[0]["data"]["summary"];
    let names = summary["package_filename"].to_string();
    assert!(
        names.contains("hello-strata source") && names.contains("hello-strata-doc"),
        "{summary:#}"
    );
    let analysis: Value =
        serde_json::from_slice(&std::fs::read(out3.join("lintian/analysis.json")).unwrap())
            .unwrap();
    assert_eq!(&analysis["summary"], summary);
    assert_eq!(bootstraps(&env), 1);

    // A failing build: result failure, exit 1, artifacts.json says why.
    let out4 = env.path("fails");
    let run = run_task(&env, &package_build("fails-strata"), &out4, &[]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    let doc4 = artifacts(&out4);
    assert_eq!(doc4["result"], "failure");
    assert!(
        doc4["error"]
            .as_str()
            .unwrap()
            .contains("deliberate failure"),
        "{doc4:#}"
    );
    assert_eq!(doc4["artifacts"], json!([]));
}

/// incus instances named `name`.
fn incus_instances(name: &str) -> usize {
    let out = std::process::Command::new("incus")
        .args(["list", "--format", "csv", "-c", "n"])
        .output()
        .unwrap();
    assert!(out.status.success(), "incus list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == name)
        .count()
}

#[test]
fn lintian_and_package_build_tasks_run_in_incus() {
    crate::support::require("incus");
    let env = Env::new();
    let source = dsc("lint-strata");
    let summary_of = |out: &Path| {
        let doc = artifacts(out);
        assert_eq!(doc["result"], "success", "{doc:#}");
        let lint = of(&doc, "debian:lintian");
        assert_eq!(lint.len(), 1, "{doc:#}");
        (lint[0]["data"]["summary"].clone(), doc)
    };

    let out1 = env.path("unshare");
    let run = run_task(&env, &lintian(&source, &[]), &out1, &[]);
    run.success();
    assert!(!run.stderr().contains("incus instance"), "{}", run.stderr());
    let (unshare, _) = summary_of(&out1);
    // lint-strata's source overrides one tag and trips others.
    assert_eq!(
        unshare["overridden_tags_found"],
        json!(["bogus-mail-host"]),
        "{unshare:#}"
    );
    assert!(
        unshare["tags_count_by_severity"]["pedantic"].as_u64() > Some(0),
        "{unshare:#}"
    );

    // The unshare environment has no /sbin/init: the incus task bootstraps
    // its own, with systemd-sysv, and runs lintian in a container.
    let mut task = lintian(&source, &[]);
    task["task_data"]["backend"] = json!("incus-lxc");
    let out2 = env.path("incus");
    let run = run_task(&env, &task, &out2, &[]);
    run.success();
    let err = run.stderr();
    assert!(err.contains("none stored, bootstrapping one"), "{err}");
    let instance = err
        .lines()
        .find_map(|l| {
            l.split("lintian/lintian: running in incus instance ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("not run in incus: {err}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(instance.starts_with("strata-stage-"), "{instance}");
    assert_eq!(incus_instances(&instance), 0, "{instance} is left");
    let (incus, doc) = summary_of(&out2);
    assert_eq!(incus, unshare, "the same analysis in incus as in unshare");
    assert_eq!(
        doc["environment"]["lookup"],
        "debian/match:codename=bookworm:variant=buildd:architecture=amd64:backend=incus-lxc"
    );
    assert_eq!(bootstraps(&env), 2);

    let ls = env.strata(&["env", "ls", "--json"], None);
    let envs: Value = serde_json::from_str(&ls.success().stdout()).unwrap();
    let ran = envs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == doc["environment"]["id"])
        .unwrap_or_else(|| panic!("{envs:#}"));
    assert_eq!(ran["backends"], json!(["unshare", "incus-lxc"]), "{envs:#}");
    assert_eq!(envs.as_array().unwrap().len(), 2, "{envs:#}");
    assert!(
        envs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["backends"] == json!(["unshare"])),
        "the unshare environment stays unshare only: {envs:#}"
    );

    // Another incus task finds that environment stored; an unshare one
    // may use either (both are unshare systems).
    let run = compile(&env, &task);
    let id = doc["environment"]["id"].as_str().unwrap();
    assert!(
        run.success()
            .stderr()
            .contains(&format!("the stored system {}", &id[..16])),
        "{}",
        run.stderr()
    );

    // A PackageBuild in incus, in that stored environment: the build stage
    // declares network, so its container gets the NAT bridge and installs
    // the build-dependencies from the host's mirror.
    let mut build = package_build("hello-strata");
    build["task_data"]["backend"] = json!("incus-lxc");
    let out3 = env.path("incus-build");
    let run = run_task(&env, &build, &out3, &[]);
    run.success();
    assert!(
        run.stderr()
            .contains("build/build: running in incus instance strata-stage-"),
        "{}",
        run.stderr()
    );
    let doc3 = artifacts(&out3);
    assert_eq!(doc3["result"], "success", "{doc3:#}");
    assert_eq!(doc3["environment"]["id"], doc["environment"]["id"]);
    assert_eq!(doc3["environment"]["reused"], true, "{doc3:#}");
    assert_eq!(bootstraps(&env), 2, "nothing bootstrapped");
    let mut packages: Vec<String> = of(&doc3, "debian:binary-package")
        .iter()
        .map(|d| {
            d["data"]["deb_fields"]["Package"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    packages.sort();
    assert_eq!(
        packages,
        ["hello-strata", "hello-strata-dbgsym"],
        "{doc3:#}"
    );
    let log = of(&doc3, "debian:package-build-log");
    let log = std::fs::read_to_string(out3.join(log[0]["files"][0].as_str().unwrap())).unwrap();
    assert!(log.contains("apt-get build-dep"), "{log}");
    assert!(log.contains("dpkg-buildpackage"), "{log}");
}

/// What the test's SMTP server received in one session.
#[derive(Debug)]
struct Received {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// An SMTP server on 127.0.0.1 that accepts every message and hands it over.
fn smtp_server() -> (u16, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut got = Received {
                mail_from: String::new(),
                rcpt_to: Vec::new(),
                data: String::new(),
            };
            stream.write_all(b"220 test.invalid ESMTP\r\n").unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let cmd = line.trim_end().to_owned();
                line.clear();
                let upper = cmd.to_ascii_uppercase();
                let reply: &[u8] = if upper.starts_with("EHLO") {
                    b"250-test.invalid\r\n250-8BITMIME\r\n250 SIZE 100000\r\n"
                } else if let Some(a) = upper.strip_prefix("MAIL FROM:") {
                    got.mail_from = cmd[cmd.len() - a.len()..].to_owned();
                    b"250 ok\r\n"
                } else if let Some(a) = upper.strip_prefix("RCPT TO:") {
                    got.rcpt_to.push(cmd[cmd.len() - a.len()..].to_owned());
                    b"250 ok\r\n"
                } else if upper == "DATA" {
                    stream.write_all(b"354 go on\r\n").unwrap();
                    loop {
                        let mut l = String::new();
                        reader.read_line(&mut l).unwrap();
                        if l == ".\r\n" {
                            break;
                        }
                        // Undo dot-stuffing.
                        got.data.push_str(l.strip_prefix('.').unwrap_or(&l));
                    }
                    b"250 queued\r\n"
                } else if upper == "QUIT" {
                    stream.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else {
                    b"500 what?\r\n"
                };
                stream.write_all(reply).unwrap();
            }
            let _ = tx.send(got);
        }
    });
    (port, rx)
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_failed_task_sends_its_notifications() {
    let env = Env::new();
    let (port, received) = smtp_server();
    let config = env.path("notifications.json");
    std::fs::write(
        &config,
        json!({"channels": {
            "admins": {"type": "email", "smtp_server": format!("127.0.0.1:{port}"),
                       "from": "strata@test.invalid", "to": ["admins@test.invalid"], "cc": ["audit@test.invalid"]},
            "nowhere": {"type": "email", "smtp_server": format!("127.0.0.1:{}", closed_port()),
                        "from": "strata@test.invalid", "to": ["x@test.invalid"]}}})
        .to_string(),
    )
    .unwrap();
    // A suite that does not exist: mmdebstrap fails at apt-get update, in a second.
    let mut task = system_bootstrap();
    task["task_data"]["bootstrap_repositories"][0]["suite"] = json!("strata-no-such-suite");
    task["task_data"]["notifications"] = json!({"on_failure": [
        {"channel": "admins", "data": {"cc": ["lead@test.invalid", "qa@test.invalid"],
                                       "subject": "[${work_request_result}] $work_request_id: $work_request_idx"}},
        {"channel": "admins"},
        {"channel": "nowhere"},
    ]});

    // An unknown channel is refused before anything runs.
    let mut unknown = task.clone();
    unknown["task_data"]["notifications"]["on_failure"][0]["channel"] = json!("typo");
    let config_flag = ["--notifications-config", config.to_str().unwrap()];
    let run = run_task(&env, &unknown, &env.path("unknown"), &config_flag);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr()
            .contains("task_data.notifications.on_failure[0].channel: no channel `typo`"),
        "{}",
        run.stderr()
    );
    assert!(!env.path("unknown").exists());

    // A config that is not usable is refused too, naming the key.
    let bad = env.path("bad.json");
    std::fs::write(
        &bad,
        r#"{"channels": {"admins": {"type": "email", "smtp": "127.0.0.1:25", "from": "a@b.c"}}}"#,
    )
    .unwrap();
    let run = run_task(
        &env,
        &task,
        &env.path("bad"),
        &["--notifications-config", bad.to_str().unwrap()],
    );
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr()
            .contains("channels.admins.smtp: unknown field `smtp`"),
        "{}",
        run.stderr()
    );
    let run = run_task(
        &env,
        &task,
        &env.path("bad"),
        &[
            "--notifications-config",
            env.path("missing.json").to_str().unwrap(),
        ],
    );
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr().contains("missing.json")
            && run
                .stderr()
                .contains("hint: name it with --notifications-config"),
        "{}",
        run.stderr()
    );
    assert!(!env.path("bad").exists() && !env.store().exists());

    let out = env.path("out");
    let run = run_task(&env, &task, &out, &config_flag);
    assert_eq!(run.code(), 1, "the task's own result: {}", run.describe());
    let doc = artifacts(&out);
    assert_eq!(doc["result"], "failure");
    let id = doc["work_request_id"].as_str().unwrap();
    assert!(
        run.stderr().contains("strata-no-such-suite"),
        "{}",
        run.stderr()
    );
    // The unreachable channel is reported; the others were delivered.
    assert!(
        run.stderr()
            .contains("warning: notification channel `nowhere`: cannot reach 127.0.0.1:"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("notified channel `admins`"),
        "{}",
        run.stderr()
    );

    let first = received
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(first.mail_from, "<strata@test.invalid>");
    assert_eq!(
        first.rcpt_to,
        [
            "<admins@test.invalid>",
            "<lead@test.invalid>",
            "<qa@test.invalid>"
        ]
    );
    let (headers, body) = first.data.split_once("\r\n\r\n").unwrap();
    assert!(
        headers.contains("From: strata@test.invalid\r\n"),
        "{headers}"
    );
    assert!(headers.contains("To: admins@test.invalid\r\n"), "{headers}");
    assert!(
        headers.contains("Cc: lead@test.invalid, qa@test.invalid\r\n"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("Subject: [failure] {id}: $work_request_idx\r\n")),
        "{headers}"
    );
    assert!(
        headers.contains("Date: ") && headers.contains("Message-ID: <"),
        "{headers}"
    );
    assert!(
        body.contains("suite strata-no-such-suite not found"),
        "{body}"
    );

    let second = received
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        second.rcpt_to,
        ["<admins@test.invalid>", "<audit@test.invalid>"],
        "the channel's defaults"
    );
    assert!(
        second.data.contains(&format!(
            "Subject: WorkRequest {id} completed in failure\r\n"
        )),
        "{}",
        second.data
    );
    assert!(second.data.contains("Cc: audit@test.invalid\r\n"));

    // Nothing of the failed bootstrap is kept.
    assert!(env.objects().is_empty(), "{:?}", env.objects());
}
