//! What an ordinary user does with nothing but a subordinate id range (issue
//! 14, point 4), run as the test user `strata-it` (no sudo, no root): build
//! and lint a package, run a PackageBuild task, and use `strata env` on
//! unshare and — as a member of `incus-admin` — on incus-lxc. Where root
//! and the user must agree (ids, lintian's analysis, the packages), the
//! tests build the same thing as root and compare. And what the user's
//! groups (incus-admin among them) grant on the host, their stages do not
//! hold.

use crate::backend::{cli_contract, system_manifest};
use crate::isolation::{build_example, ids};
use crate::support::{Env, Run, TestUser, test_user};
use crate::task::{artifacts, bootstraps, of, package_build};
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use strata::backend::Backend;

/// Every `.deb` in `dir`, by file name.
fn debs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    found.sort();
    found
}

/// What a package holds, as dpkg-deb says it: its control fields and its
/// members with modes, owners, sizes and times.
fn deb_contents(deb: &Path) -> String {
    let mut text = String::new();
    for flag in ["--field", "--contents"] {
        let out = Command::new("dpkg-deb")
            .arg(flag)
            .arg(deb)
            .output()
            .unwrap();
        assert!(out.status.success(), "dpkg-deb {flag} {}", deb.display());
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    text
}

/// The packages of `root_dir` and `user_dir` are the same files with the
/// same contents; returns how many there are.
#[track_caller]
fn same_debs(root_dir: &Path, user_dir: &Path) -> usize {
    let (root, user) = (debs(root_dir), debs(user_dir));
    let names = |v: &[PathBuf]| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&root), names(&user));
    for (r, u) in root.iter().zip(&user) {
        assert_eq!(deb_contents(r), deb_contents(u), "{}", u.display());
    }
    root.len()
}

#[test]
fn an_ordinary_user_builds_and_lints_build_and_lint_json_as_root_does() {
    let Some(user) = test_user() else { return };
    let as_root = Env::new();
    let (run, root_doc) = build_example(None, &as_root, "build-and-lint.json", "lint");
    run.success();
    let as_user = user.env();
    let (run, user_doc) = build_example(Some(&user), &as_user, "build-and-lint.json", "lint");
    run.success();
    assert_eq!(ids(&root_doc), ids(&user_doc));
    let analysis = |env: &Env| -> Value {
        let path = env.out().join("lint/analysis.json");
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    };
    let (root_analysis, user_analysis) = (analysis(&as_root), analysis(&as_user));
    assert!(
        root_analysis["summary"]["package_filename"]
            .to_string()
            .contains("hello-strata"),
        "{root_analysis:#}"
    );
    assert_eq!(root_analysis, user_analysis, "lintian saw another package");

    // The packages, from the stored build: nothing runs again.
    let (run, doc) = build_example(Some(&user), &as_user, "build-and-lint.json", "build");
    run.success();
    let statuses: Vec<&str> = doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["stages"].as_array().unwrap())
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == "cached"), "{doc:#}");
    build_example(None, &as_root, "build-and-lint.json", "build")
        .0
        .success();
    let n = same_debs(&as_root.out().join("build"), &as_user.out().join("build"));
    assert_eq!(n, 3, "hello-strata, its -dbgsym and -doc");
    // What the user exported is the user's own, to read and to remove.
    for deb in debs(&as_user.out().join("build")) {
        assert_eq!(std::fs::metadata(&deb).unwrap().uid(), user.uid);
    }
}

/// `strata task run - --output-directory OUT` of `task` as `user` in `env`.
fn run_task_as(user: &TestUser, env: &Env, task: &Value, out: &Path) -> Run {
    let args = [
        "task",
        "run",
        "-",
        "--output-directory",
        out.to_str().unwrap(),
    ];
    user.strata(env, &args, Some(&task.to_string()))
}

/// The binary packages of an artifacts document: (package, deb_fields,
/// files), sorted.
fn binary_packages(doc: &Value) -> Vec<(String, Value, Value)> {
    let mut found: Vec<_> = of(doc, "debian:binary-package")
        .iter()
        .map(|a| {
            (
                a["data"]["deb_fields"]["Package"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                a["data"]["deb_fields"].clone(),
                a["files"].clone(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[test]
fn an_ordinary_user_runs_a_package_build_task_as_root_does() {
    let Some(user) = test_user() else { return };
    let task = package_build("hello-strata");
    let as_root = Env::new();
    let root_out = as_root.path("build");
    let run = as_root.strata(
        &[
            "task",
            "run",
            "-",
            "--output-directory",
            root_out.to_str().unwrap(),
        ],
        Some(&task.to_string()),
    );
    run.success();
    let as_user = user.env();
    let user_out = as_user.path("build");
    run_task_as(&user, &as_user, &task, &user_out).success();
    let (root_doc, user_doc) = (artifacts(&root_out), artifacts(&user_out));
    assert_eq!(user_doc["result"], "success", "{user_doc:#}");
    assert_eq!(user_doc["environment"]["reused"], false, "{user_doc:#}");
    assert_eq!(
        user_doc["environment"]["id"], root_doc["environment"]["id"],
        "the same environment"
    );
    let packages = binary_packages(&user_doc);
    assert_eq!(binary_packages(&root_doc), packages);
    assert!(
        packages.iter().any(|(name, ..)| name == "hello-strata"),
        "{user_doc:#}"
    );
    same_debs(&root_out.join("build"), &user_out.join("build"));
    assert_eq!(bootstraps(&as_user), 1);

    // The environment is the user's to list and to build in again, found
    // in their store rather than bootstrapped.
    let ls = user.strata(&as_user, &["env", "ls", "--json"], None);
    let envs: Value = serde_json::from_str(&ls.success().stdout()).unwrap();
    assert_eq!(envs[0]["id"], user_doc["environment"]["id"], "{envs:#}");
    let again = as_user.path("again");
    let run = run_task_as(&user, &as_user, &task, &again);
    run.success();
    assert!(
        run.stderr().contains("the stored system"),
        "{}",
        run.stderr()
    );
    assert_eq!(artifacts(&again)["environment"]["reused"], true);
    assert_eq!(bootstraps(&as_user), 1);
}

/// The system the `strata env` tests make environments of: the backend
/// tests' (minbase with an init, which incus needs), under another
/// source-epoch so that its ids and its incus image (`artifact/<id>`) are
/// this module's alone and the user's import is not skipped for one that
/// root's tests imported.
fn env_system() -> String {
    let mut m = system_manifest();
    m["pipelines"][0]["source-epoch"] = 1700000014.into();
    m.to_string()
}

/// The user's store for the `strata env` tests, with the system built in
/// it by the user, once for the module (the tests on both backends would
/// otherwise bootstrap it at the same time). It is kept between runs, as
/// the backend tests keep theirs.
fn env_store(user: &TestUser) -> PathBuf {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let store = crate::support::reused_store("rootless-env");
            let dir = store.parent().unwrap();
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).unwrap();
            let args = ["build", "-", "--store", store.to_str().unwrap(), "-q"];
            user.strata(&user.env(), &args, Some(&env_system()))
                .success();
            store
        })
        .clone()
}

/// `strata env ARGS` as `user` with `store`: the `strata_env` of
/// [`cli_contract`].
fn strata_env_as<'a>(
    user: &'a TestUser,
    store: &'a Path,
) -> impl Fn(&[&str], Option<&str>) -> Run + 'a {
    // The store is named on the command line; this folder only gives
    // `TestUser::strata` an Env.
    let env = user.env();
    move |args, stdin| {
        let store = store.to_str().unwrap();
        // Before the command's own arguments: everything after `--` is argv.
        let mut full = vec!["env", args[0], "--store", store];
        full.extend_from_slice(&args[1..]);
        user.strata(&env, &full, stdin)
    }
}

/// The `strata env` round trip of the backend tests, as the user, on
/// backend `b`, in environment `name`.
fn env_round_trip_as_user(user: &TestUser, b: Backend, name: &str) {
    let store = env_store(user);
    let strata_env = strata_env_as(user, &store);
    // Whatever a failed earlier run left behind.
    let _ = strata_env(&["delete", name], None);
    let dir = user.env();
    cli_contract(b, name, &env_system(), dir.dir.path(), &strata_env);
}

#[test]
fn an_ordinary_user_uses_strata_env_on_unshare() {
    let Some(user) = test_user() else { return };
    env_round_trip_as_user(&user, Backend::Unshare, "rootless-u");
}

/// `user` in group incus-admin, which the incus packages make and whose
/// members may use incusd's socket (docs/incus-setup.sh gives it that
/// group where it starts incusd itself).
fn join_incus_admin(user: &TestUser) {
    crate::support::require("incus");
    let group = Command::new("getent")
        .args(["group", "incus-admin"])
        .output()
        .unwrap();
    assert!(
        group.status.success(),
        "there is no group incus-admin: run `bash docs/incus-setup.sh`"
    );
    let added = Command::new("usermod")
        .args(["--append", "--groups", "incus-admin", &user.name])
        .status()
        .unwrap();
    assert!(added.success(), "usermod -aG incus-admin {}", user.name);
    let socket = std::fs::metadata("/var/lib/incus/unix.socket").unwrap();
    let gid = String::from_utf8_lossy(&group.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .parse::<u32>()
        .unwrap();
    assert_eq!(
        socket.gid(),
        gid,
        "incusd's socket is not incus-admin's: run `bash docs/incus-setup.sh`"
    );
}

#[test]
fn an_ordinary_user_in_incus_admin_uses_strata_env_on_incus_lxc() {
    let Some(user) = test_user() else { return };
    join_incus_admin(&user);
    let name = "rootless-l";
    let _gone = Gone(format!("strata-{name}"));
    env_round_trip_as_user(&user, Backend::IncusLxc, name);
    // The user imported the system's image (its id is root's for the same
    // manifest), and the user's store collects it once nothing uses it.
    let inspect = Env::new().strata(&["inspect", "-"], Some(&env_system()));
    let doc: Value = serde_json::from_str(&inspect.success().stdout()).unwrap();
    let alias = format!("artifact/{}", doc["pipelines"][0]["id"].as_str().unwrap());
    let image = |alias: &str| {
        Command::new("incus")
            .args(["image", "info", alias])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(image(&alias), "{alias} was not imported");
    let store = env_store(&user);
    strata_env_as(&user, &store)(&["gc"], None).success();
    assert!(!image(&alias), "{alias} is left");
}

/// Deletes incus instance `.0` when dropped, also when the test fails.
struct Gone(String);

impl Drop for Gone {
    fn drop(&mut self) {
        crate::support::cleanup("incus", &["delete", "--force", &self.0]);
    }
}

/// The gid of group `name`, made if missing, with `user` in it.
fn join_group(user: &TestUser, name: &str) -> u32 {
    let made = Command::new("groupadd")
        .args(["--force", name])
        .status()
        .unwrap();
    assert!(made.success(), "groupadd {name}");
    let added = Command::new("usermod")
        .args(["--append", "--groups", name, &user.name])
        .status()
        .unwrap();
    assert!(added.success(), "usermod -aG {name} {}", user.name);
    let entry = Command::new("getent")
        .args(["group", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&entry.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// A file under /usr (which stages see read-only) that only group `gid`
/// may read; removed when dropped.
struct GroupSecret(PathBuf);

impl GroupSecret {
    fn new(gid: u32) -> GroupSecret {
        let path = PathBuf::from(format!(
            "/usr/share/strata-it-group-secret-{}",
            std::process::id()
        ));
        std::fs::write(&path, "the group's secret\n").unwrap();
        std::os::unix::fs::chown(&path, Some(0), Some(gid)).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        GroupSecret(path)
    }
}

impl Drop for GroupSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_stage_run_by_a_user_holds_none_of_the_users_groups() {
    let Some(user) = test_user() else { return };
    // A group like incus-admin: what it grants on the host, a stage (nobody
    // there) must not have, though a user namespace keeps it by default.
    let gid = join_group(&user, "strata-it-aux");
    let secret = GroupSecret::new(gid);
    let env = user.env();
    let reads = Command::new("runuser")
        .args(["-u", &user.name, "--", "cat"])
        .arg(&secret.0)
        .output()
        .unwrap();
    assert!(reads.status.success(), "the user reads the group's file");
    let lib = env.script_stage(
        "groups",
        &format!(
            "t=/run/strata/tree\ngrep '^Groups:' /proc/self/status > $t/groups\n\
             if cat {} >/dev/null 2>&1; then echo escaped; else echo refused; fi > $t/secret",
            secret.0.display()
        ),
        Value::Null,
    );
    let out = env.out();
    let m = serde_json::json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "groups"}]}]});
    let mut args = vec!["build", "-"];
    args.extend(crate::support::export_args(&lib, "p", &out));
    user.strata(&env, &args, Some(&m.to_string())).success();
    let read = |f: &str| std::fs::read_to_string(out.join("p").join(f)).unwrap();
    assert_eq!(read("secret").trim(), "refused");
    assert_eq!(read("groups").trim(), "Groups:", "the stage holds groups");
}

/// Paths under `dir` that the host's root owns.
fn owned_by_root(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut walk = vec![dir.to_path_buf()];
    while let Some(path) = walk.pop() {
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.uid() == 0 {
            found.push(path.clone());
        }
        if md.is_dir() {
            walk.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found
}

#[test]
fn an_ordinary_user_is_told_that_stages_on_incus_lxc_need_root() {
    let Some(user) = test_user() else { return };
    // incusd's shift=true would see the user's store under the host's
    // owners, and write the host's root into it: refused, with a way out.
    let store = env_store(&user);
    let mut m: Value = serde_json::from_str(&env_system()).unwrap();
    m["pipelines"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
        {"name": "p", "build": "name:system", "backend": "incus-lxc",
         "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]}));
    let args = ["build", "-", "--store", store.to_str().unwrap()];
    let run = user.strata(&user.env(), &args, Some(&m.to_string()));
    assert_ne!(run.code(), 0, "{}", run.describe());
    let err = run.stderr();
    assert!(
        err.contains("pipeline `p`: stages on incus-lxc need strata to run as root")
            && err.contains("hint: drop \"backend\""),
        "{err}"
    );
    assert!(!err.contains("running in incus instance"), "{err}");
    assert_eq!(owned_by_root(&store), Vec::<PathBuf>::new());
}
