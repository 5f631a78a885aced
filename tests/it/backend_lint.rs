//! A pipeline whose stages run in an incus container: the lintian stage of
//! tests/it/package.rs, once through bwrap and once with
//! `"backend": "incus-lxc"`, gives the same analysis.json; the instance is
//! gone afterwards, also when the stage fails and when strata is
//! interrupted. The build environment gets systemd-sysv: incus boots it.

use crate::package;
use crate::support::{Env, bin_dir};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn manifest(incus: bool, fail_on: &str) -> Value {
    let mut m = package::manifest(
        "lint-strata",
        json!({"build_components": ["any", "all", "source"]}),
        Some(json!({"fail_on_severity": fail_on})),
    );
    m["pipelines"][0]["stages"][0]["options"]["bootstrap_options"]["extra_packages"] =
        json!(["debhelper", "lintian", "systemd-sysv"]);
    if incus {
        m["pipelines"][2]["backend"] = json!("incus-lxc");
    }
    m
}

/// Instances some strata stage made (`strata-stage-PID-N`).
fn stage_instances(pid: u32) -> Vec<String> {
    let out = Command::new("incus")
        .args(["list", "--format", "csv", "-c", "n"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&format!("strata-stage-{pid}-")))
        .map(str::to_owned)
        .collect()
}

fn lint(env: &Env, m: &Value, out: &str) -> (crate::support::Run, Value, String) {
    let dir = env.path(out);
    // The lint stage is never kept: `backend` does not feed its id, so a
    // kept bwrap result would be reused by the incus run.
    let run = env.build(
        m,
        &[
            "--no-checkpoint",
            "--checkpoint",
            "env",
            "--checkpoint",
            "build",
            "--export",
            "lint",
            "--output-directory",
            dir.to_str().unwrap(),
        ],
    );
    let analysis = std::fs::read(dir.join("lint/analysis.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null);
    let text = std::fs::read_to_string(dir.join("lint/lintian.txt")).unwrap_or_default();
    (run, analysis, text)
}

#[test]
fn lintian_gives_the_same_analysis_in_incus_as_in_bwrap() {
    crate::support::require("incus");
    let env = Env::new();
    let (run, bwrap, bwrap_text) = lint(&env, &manifest(false, "none"), "bwrap");
    run.success();
    assert!(!run.stderr().contains("incus instance"), "{}", run.stderr());
    assert_eq!(
        bwrap["summary"]["tags_count_by_severity"]["error"], 7,
        "{bwrap:#}"
    );

    let (run, incus, incus_text) = lint(&env, &manifest(true, "none"), "incus");
    run.success();
    assert!(
        run.stderr()
            .contains("lint/lintian: running in incus instance strata-stage-"),
        "{}",
        run.stderr()
    );
    assert_eq!(incus, bwrap, "the same analysis.json");
    assert_eq!(incus_text, bwrap_text, "the same lintian.txt");
    // Its own instances, as it named them (other tests run incus stages
    // at the same time).
    let stderr = run.stderr();
    let ran_in: Vec<&str> = stderr
        .split_whitespace()
        .filter(|w| w.starts_with("strata-stage-"))
        .collect();
    assert!(!ran_in.is_empty(), "{stderr}");
    let listed = String::from_utf8_lossy(
        &Command::new("incus")
            .args(["list", "--format", "csv", "-c", "n"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let left: Vec<&str> = listed.lines().filter(|n| ran_in.contains(n)).collect();
    assert!(left.is_empty(), "instances left: {left:?}");

    incus_network_follows_the_stage(&env);

    // A failing stage: the instance goes too.
    let (run, _, _) = lint(&env, &manifest(true, "error"), "fails");
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(run.stderr().contains("lintian found"), "{}", run.stderr());

    // Ctrl-C while the stage runs in its instance: exit 130, nothing left.
    let dir = env.path("interrupted");
    let mut child = Command::new(bin_dir().join("strata"))
        .args([
            "build",
            "-",
            "--no-checkpoint",
            "--checkpoint",
            "env",
            "--checkpoint",
            "build",
            "--store",
        ])
        .arg(env.store())
        .arg("--output-directory")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(manifest(true, "none").to_string().as_bytes())
            .unwrap();
    }
    let pid = child.id();
    let t = Instant::now();
    while stage_instances(pid).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no instance appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stage_instances(pid).is_empty(),
        "{:?}",
        stage_instances(pid)
    );
}

/// Stages in incus get the network only when they declare it, as with
/// bwrap: the `debusine` profile's NIC on the NAT bridge, or none (masked
/// by `strata-offline`). A network stage reaches the host's mirror with
/// apt; resolv.conf points at the bridge's dnsmasq. Runs over the
/// environment the lint test stored (the same pipeline, so the same image).
fn incus_network_follows_the_stage(env: &Env) {
    let lib = env.script_stage(
        "offline",
        "cat /proc/net/dev > /run/strata/tree/offline",
        json!({"root": "build"}),
    );
    env.script_stage(
        "online",
        "t=/run/strata/tree\ncat /proc/net/dev > $t/online\ncp /etc/resolv.conf $t/resolv.conf\napt-get -q update > $t/apt.log 2>&1 && echo ok > $t/apt",
        json!({"root": "build-copy", "network": true}),
    );
    let m = manifest(true, "none");
    let m = json!({"version": "2", "pipelines": [m["pipelines"][0].clone(),
        {"name": "net", "build": "name:env", "backend": "incus-lxc",
         "stages": [{"type": "offline"}, {"type": "online"}]}]});
    let out = env.path("net");
    let run = env.build_export(&m, &lib, "net", &out);
    run.success();
    let read = |f: &str| std::fs::read_to_string(out.join("net").join(f)).unwrap_or_default();
    // /proc/net/dev: two header lines, then one line per interface.
    let interfaces = |dev: String| -> Vec<String> {
        dev.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|i| i.trim().to_owned())
            .collect()
    };
    assert_eq!(
        interfaces(read("offline")),
        ["lo"],
        "no NIC without network"
    );
    let online = interfaces(read("online"));
    assert!(online.contains(&"host0".to_owned()), "{online:?}");
    assert!(
        read("resolv.conf").starts_with("nameserver "),
        "{}",
        read("resolv.conf")
    );
    assert_eq!(read("apt"), "ok\n", "apt-get update: {}", read("apt.log"));
}
