//! Sandboxes that isolate (issue 14): a stage is root over its tree and
//! nobody on the host, has limits, and strata runs as an ordinary user.
//!
//! The hostile probes never change the host even when they succeed: they
//! write back the value already there, read rather than write devices, and
//! signal only a process the test started.

use crate::package;
use crate::support::{Env, Run, TestUser, base64, bin_dir, export_args, repo, test_user};
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A mode-0600 file of the host's root under /usr, which stages see
/// read-only: they must not read it. Removed when dropped.
struct Secret(PathBuf);

impl Secret {
    fn new() -> Secret {
        let path = PathBuf::from(format!(
            "/usr/share/strata-it-secret-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, "the host's secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Secret(path)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A process of the test's own that a stage tries to signal; killed when dropped.
struct Victim(std::process::Child);

impl Victim {
    fn new() -> Victim {
        Victim(Command::new("sleep").arg("600").spawn().unwrap())
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The probes a hostile stage runs, each appended to the file `record` (a
/// shell word) as `NAME refused` or `NAME escaped` — or `NAME missing` when
/// the tool it needs is not there, which must fail a test rather than pass
/// for a refusal.
///
/// `remount-read-only-rw` makes the sandbox's first read-only mount (its
/// root, or a bind of the store's) writable: that changes only the
/// sandbox's own mount namespace, but a stage that can do it can write
/// into its build root and its inputs, which are stored objects.
fn probe_script(secret: &Path, victim: u32, record: &str) -> String {
    let keyctl = if cfg!(target_arch = "x86_64") {
        // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): works
        // in any namespace unless the seccomp filter refuses it.
        "p keyctl perl -e 'exit(syscall(250, 0, -3, 0) == -1 ? 1 : 0)'"
    } else {
        ""
    };
    format!(
        r#"p() {{ n=$1; shift; if ! command -v "$1" >/dev/null 2>&1; then r=missing; elif "$@" >/dev/null 2>&1; then r=escaped; else r=refused; fi; echo "$n $r" >> {record}; }}
mkdir -p /tmp/m
p mount-devtmpfs mount -t devtmpfs devtmpfs /tmp/m
p remount-read-only-rw sh -c 'while read -r a b c d m o rest; do case $o in ro*) exec mount -o remount,bind,rw "$m";; esac; done < /proc/self/mountinfo; exit 1'
p mknod-block-and-read sh -c 'mknod /tmp/blk b 7 0 && head -c 512 /tmp/blk >/dev/null'
p write-core-pattern sh -c 'v=$(cat /proc/sys/kernel/core_pattern) && printf "%s\n" "$v" > /proc/sys/kernel/core_pattern'
p read-host-secret cat {secret}
p shadow-through-proc-1 sh -c 'grep -q "^root:" /proc/1/root/etc/shadow'
p signal-host-process kill -0 {victim}
{keyctl}
"#,
        secret = secret.display(),
    )
}

/// What a stage is for: root over its own tree, whose root is the shell
/// word `t` ("" when the tree is `/`).
fn root_work(t: &str) -> String {
    format!(
        "echo data > {t}/owned\nchown 1234:5678 {t}/owned\nchmod 4755 {t}/owned\nid -u > {t}/uid\n"
    )
}

/// A `--libdir` stage's script: the probes, recorded in $t/probes, then
/// the legitimate work.
fn hostile_script(secret: &Path, victim: u32) -> String {
    format!(
        "t=/run/strata/tree\n{}{}",
        probe_script(secret, victim, "$t/probes"),
        root_work("$t")
    )
}

/// Every probe in `probes` (the record [`probe_script`] writes) ran and
/// was refused.
fn check_probe_record(probes: &str) {
    for line in probes.lines() {
        let (name, result) = line.split_once(' ').unwrap();
        assert_eq!(result, "refused", "probe {name} {result}:\n{probes}");
    }
    let all = if cfg!(target_arch = "x86_64") { 8 } else { 7 };
    assert_eq!(probes.lines().count(), all, "{probes}");
}

/// The probes refused and the legitimate work done in `tree`.
fn check_probes(tree: &Path) {
    check_probe_record(&std::fs::read_to_string(tree.join("probes")).unwrap());
    let owned = std::fs::metadata(tree.join("owned")).unwrap();
    assert_eq!(owned.mode() & 0o7777, 0o4755);
    assert_eq!(
        std::fs::read_to_string(tree.join("uid")).unwrap().trim(),
        "0",
        "the stage is root of its namespace"
    );
}

fn hostile_manifest() -> Value {
    json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "hostile"}]}]})
}

#[test]
fn a_hostile_libdir_stage_is_root_over_its_tree_and_nobody_on_the_host() {
    if !rustix::process::geteuid().is_root() {
        return; // the secret under /usr is root's to make
    }
    let env = Env::new();
    let secret = Secret::new();
    let mut victim = Victim::new();
    let lib = env.script_stage(
        "hostile",
        &hostile_script(&secret.0, victim.0.id()),
        Value::Null,
    );
    let out = env.out();
    env.build(&hostile_manifest(), &export_args(&lib, "p", &out))
        .success();
    check_probes(&out.join("p"));
    // As root, an exported tree carries the in-tree owners.
    let owned = std::fs::metadata(out.join("p/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    assert!(victim.alive());
}

#[test]
fn a_hostile_libdir_stage_run_by_an_ordinary_user_is_refused_the_same() {
    let Some(user) = test_user() else { return };
    let env = user.env();
    let secret = Secret::new();
    let mut victim = Victim::new();
    let lib = env.script_stage(
        "hostile",
        &hostile_script(&secret.0, victim.0.id()),
        Value::Null,
    );
    let out = env.out();
    let manifest = hostile_manifest().to_string();
    let mut args = vec!["build", "-"];
    args.extend(export_args(&lib, "p", &out));
    user.strata(&env, &args, Some(&manifest)).success();
    check_probes(&out.join("p"));
    // As a user, an exported tree carries the mapped owners (as mmdebstrap
    // --mode=unshare's): in-tree 1234 is the user's subordinate id 1233 on.
    let owned = std::fs::metadata(out.join("p/owned")).unwrap();
    assert_eq!(owned.uid(), first_subuid(&user.name) + 1233);
    let root_owned = std::fs::metadata(out.join("p/uid")).unwrap();
    assert_eq!(root_owned.uid(), user.uid, "in-tree root is the user");
    assert!(victim.alive());
}

/// The first id of `name`'s first subordinate uid range.
fn first_subuid(name: &str) -> u32 {
    let text = std::fs::read_to_string("/etc/subuid").unwrap();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == name && f[2].parse::<u32>().unwrap() >= 65535).then(|| f[1].parse().unwrap())
        })
        .unwrap()
}

#[test]
fn a_runaway_stage_fails_within_30_seconds_and_the_host_keeps_working() {
    let env = Env::new();
    // At most 10,000 processes (forks of the shell, no exec: fast), each of
    // which ends by itself when the gate's writer goes after 40 s: while
    // the limit is missing this test fails (the stage runs past 30 s, or
    // into --stage-timeout) rather than take the machine down.
    let lib = env.script_stage(
        "runaway",
        r#"mkfifo /tmp/gate
(sleep 40) > /tmp/gate &
i=0
while [ $i -lt 10000 ]; do
  { read x < /tmp/gate; } &
  i=$((i+1))
done
echo all-started
wait"#,
        Value::Null,
    );
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "runaway"}]}]});
    let started = Instant::now();
    let run = env.build(
        &m,
        &["--libdir", lib.to_str().unwrap(), "--stage-timeout", "60"],
    );
    let took = started.elapsed();
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(!run.stderr().contains("timed out"), "{}", run.describe());
    assert!(!run.stderr().contains("all-started"), "{}", run.describe());
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // The host still starts processes.
    assert!(Command::new("true").status().unwrap().success());
}

/// The peak resident size of process `pid` (VmHWM), in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn a_stage_writing_a_2_gib_line_leaves_strata_under_100_mb() {
    let env = Env::new();
    let lib = env.script_stage(
        "chatty",
        "head -c 2147483648 /dev/zero | tr '\\0' a\necho\necho done",
        Value::Null,
    );
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "chatty"}]}]});
    let mut child = env.spawn_build(&m, &["--libdir", lib.to_str().unwrap(), "-v"]);
    let pid = child.id();
    // Drain the output (the monitor shows the cut line) while watching
    // strata's peak size, with a deadline so that a missing limit fails.
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::BufReader::new(stderr), &mut buf);
        buf.len()
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline || peak > 1 << 20 {
            let _ = child.kill();
            panic!("strata grew to {peak} KiB or ran past its deadline");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let told = reader.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(peak > 0 && peak < 100 * 1024, "strata peaked at {peak} KiB");
    assert!(told < 1 << 20, "the monitor passed on {told} bytes");
}

#[test]
fn nothing_under_a_store_is_readable_by_another_user() {
    let Some(user) = test_user() else { return };
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = std::fs::read_to_string(repo().join("manifests/hello.json")).unwrap();
    let run = env.strata(&["build", "-"], Some(&manifest));
    run.success();
    let store = env.store();
    assert_eq!(
        std::fs::metadata(&store).unwrap().mode() & 0o777,
        0o700,
        "the store is its owner's alone"
    );
    let object = env.objects().pop().unwrap();
    let info = store.join("objects").join(object).join("meta/info.json");
    for target in [store.clone(), info] {
        let read = Command::new("runuser")
            .args(["-u", &user.name, "--", "cat"])
            .arg(&target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!read.success(), "{} read {}", user.name, target.display());
    }
}

/// `strata ARGS` as root, or as `user` (in their own `env`).
fn strata_as(user: Option<&TestUser>, env: &Env, args: &[&str], input: Option<&str>) -> Run {
    match user {
        Some(u) => u.strata(env, args, input),
        None => env.strata(args, input),
    }
}

/// `strata build --json` of example manifest `name` (as root, or as `user`
/// in their own env), exporting `export`.
pub(crate) fn build_example(
    user: Option<&TestUser>,
    env: &Env,
    name: &str,
    export: &str,
) -> (Run, Value) {
    let manifest = repo().join("manifests").join(name);
    let out = env.out();
    let args = [
        "build",
        "--json",
        manifest.to_str().unwrap(),
        "--export",
        export,
        "--output-directory",
        out.to_str().unwrap(),
    ];
    let run = strata_as(user, env, &args, None);
    let doc: Value = serde_json::from_slice(&run.0.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", run.describe()));
    (run, doc)
}

pub(crate) fn ids(doc: &Value) -> Vec<String> {
    doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["stages"].as_array().unwrap().iter())
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_ordinary_user_builds_hello_with_the_same_ids_and_the_same_tarball() {
    let Some(user) = test_user() else { return };
    let as_root = Env::new();
    let (run, root_doc) = build_example(None, &as_root, "hello.json", "tarball");
    run.success();
    let as_user = user.env();
    let (run, user_doc) = build_example(Some(&user), &as_user, "hello.json", "tarball");
    run.success();
    assert_eq!(ids(&root_doc), ids(&user_doc));
    let tarball = |env: &Env| std::fs::read(env.out().join("tarball/hello.tar.gz")).unwrap();
    assert!(
        tarball(&as_root) == tarball(&as_user),
        "the tarballs differ"
    );
    // The user's store is the user's, and 0700.
    let store = std::fs::metadata(as_user.store()).unwrap();
    assert_eq!((store.uid(), store.mode() & 0o777), (user.uid, 0o700));
    // Its trees hold the namespace's ids, and the user can still collect them.
    assert!(!as_user.objects().is_empty());
    user.strata(&as_user, &["store", "gc", "--max-size", "0"], None)
        .success();
    assert!(as_user.objects().is_empty(), "{:?}", as_user.objects());
}

#[test]
fn a_user_without_subordinate_ids_is_told_how_to_get_them() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let manifest = std::fs::read_to_string(repo().join("manifests/hello.json")).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .arg(format!("STRATA_STORE={}", env.store().display()))
        .arg(bin_dir().join("strata"))
        .args(["build", "-"])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let _ = c.stdin.take().unwrap().write_all(manifest.as_bytes());
            c.wait_with_output()
        })
        .unwrap();
    let run = Run(out);
    assert_eq!(run.code(), 1, "{}", run.describe());
    let err = run.stderr();
    assert!(err.contains("/etc/subuid"), "{err}");
    assert!(err.contains("usermod --add-subuids"), "{err}");
    assert!(!env.store().exists(), "nothing was made");
}

#[test]
fn a_network_stage_reaches_the_mirror_and_not_the_hosts_loopback_or_link_local() {
    assert!(
        Path::new("/usr/bin/pasta").exists(),
        "pasta is missing: install passt (make deps)"
    );
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let abstract_name = format!("strata-it-{}", std::process::id());
    let unix = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    unix.set_nonblocking(true).unwrap();
    let script = format!(
        r#"t=/run/strata/tree
p() {{ n=$1; shift; if "$@" >/dev/null 2>&1; then r=escaped; else r=refused; fi; echo "$n $r" >> $t/probes; }}
p host-loopback timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'
p link-local timeout 10 bash -c 'exec 3<>/dev/tcp/169.254.169.254/80'
p abstract-socket perl -MSocket -e 'socket(S, AF_UNIX, SOCK_STREAM, 0) or exit 0; connect(S, pack_sockaddr_un("\0{abstract_name}")) or exit 1'
p route-change ip route del blackhole 169.254.0.0/16
# What a network stage is for: the mirror apt is configured with.
mirror=$(grep -rhoE 'https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | grep -E '/debian/?$' | head -n1)
host=${{mirror#*://}}; path=/${{host#*/}}; host=${{host%%/*}}
timeout 30 bash -c "exec 3<>/dev/tcp/$host/80; printf 'HEAD $path/dists/bookworm/Release HTTP/1.1\r\nHost: $host\r\nConnection: close\r\n\r\n' >&3; head -n1 <&3" > $t/mirror
"#
    );
    let lib = env.script_stage("netprobe", &script, json!({"network": true}));
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "netprobe"}]}]});
    let out = env.out();
    env.build(&m, &export_args(&lib, "p", &out)).success();
    let probes = std::fs::read_to_string(out.join("p/probes")).unwrap();
    for line in probes.lines() {
        assert!(line.ends_with(" refused"), "escaped: {line}\n{probes}");
    }
    assert_eq!(probes.lines().count(), 4, "{probes}");
    assert!(
        listener.accept().is_err(),
        "the host's loopback was reached"
    );
    assert!(
        unix.accept().is_err(),
        "the host's abstract socket was reached"
    );
    let mirror = std::fs::read_to_string(out.join("p/mirror")).unwrap();
    assert!(
        mirror.contains(" 200") || mirror.contains(" 30"),
        "the mirror said: {mirror}"
    );
}

/// Every process below `root` (pid, command name), from /proc.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, not `)`.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            all.push((pid, ppid, comm));
        }
    }
    let mut found = vec![root];
    let mut out = Vec::new();
    while let Some(parent) = found.pop() {
        for (pid, ppid, comm) in &all {
            if *ppid == parent {
                found.push(*pid);
                out.push((*pid, comm.clone()));
            }
        }
    }
    out
}

#[test]
fn a_killed_strata_leaves_no_network_stage_and_no_pasta_behind() {
    assert!(
        Path::new("/usr/bin/pasta").exists(),
        "pasta is missing: install passt (make deps)"
    );
    let env = Env::new();
    let lib = env.script_stage(
        "netsleep",
        "echo stage-running\nexec sleep 600",
        json!({"network": true}),
    );
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "netsleep"}]}]});
    let mut child = env.spawn_build(&m, &["--libdir", lib.to_str().unwrap(), "-v"]);
    // Wait for the stage to say it runs (its log comes on stderr with -v).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("stage-running") {
                let _ = tx.send(());
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(60));
    // The stage said so just before it becomes `sleep`.
    let mut below = descendants(child.id());
    let until = Instant::now() + Duration::from_secs(5);
    while started.is_ok() && !below.iter().any(|(_, c)| c == "sleep") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        below = descendants(child.id());
    }
    // Killed before any check, so that a failed one leaves nothing running.
    child.kill().unwrap();
    child.wait().unwrap();
    started.expect("the network stage did not start within 60 s");
    let of = |name: &str| -> Vec<u32> {
        below
            .iter()
            .filter(|(_, c)| c.starts_with(name))
            .map(|(p, _)| *p)
            .collect()
    };
    // pasta runs as `passt.avx2` and the like where the CPU allows.
    assert_eq!(of("pas").len(), 1, "strata's pasta is its own: {below:?}");
    assert_eq!(of("sleep").len(), 1, "the stage runs: {below:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<&(u32, String)> = below
            .iter()
            .filter(|(pid, _)| Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "10 s after strata was killed these still run: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_libdir_stage_shadowing_write_is_refused_without_the_flag_and_gets_its_own_id() {
    let env = Env::new();
    // A `write` of its own that writes something else.
    let lib = env.script_stage(
        "write",
        "echo not-the-built-in > /run/strata/tree/x",
        Value::Null,
    );
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [
        {"type": "write", "options": {"files": [{"path": "/x", "content": "built-in\n"}]}}]}]});
    let inspect = |extra: &[&str]| {
        let mut args = vec!["inspect", "-", "--libdir", lib.to_str().unwrap()];
        args.extend_from_slice(extra);
        env.strata(&args, Some(&m.to_string()))
    };
    let refused = inspect(&[]);
    assert_eq!(refused.code(), 2, "{}", refused.describe());
    assert!(
        refused.stderr().contains("shadow") && refused.stderr().contains("--allow-shadow"),
        "{}",
        refused.stderr()
    );
    let built_in = env.strata(&["inspect", "-"], Some(&m.to_string()));
    let shadowed = inspect(&["--allow-shadow"]);
    let id = |run: &Run| -> String {
        let doc: Value = serde_json::from_str(&run.success().stdout()).unwrap();
        doc["pipelines"][0]["id"].as_str().unwrap().to_owned()
    };
    let (builtin_id, shadow_id) = (id(&built_in), id(&shadowed));
    assert_ne!(builtin_id, shadow_id, "the shadowing program feeds the id");
    // And another program under the same name gets another id again.
    std::fs::write(
        lib.join("stages/write"),
        "#!/bin/sh\necho yet-another > /run/strata/tree/x\n",
    )
    .unwrap();
    assert_ne!(id(&inspect(&["--allow-shadow"])), shadow_id);
}

#[test]
fn an_ordinary_user_bootstraps_minbase_to_the_same_ids_and_tarball_as_root() {
    let Some(user) = test_user() else { return };
    let as_root = Env::new();
    let (run, root_doc) = build_example(None, &as_root, "debian-bookworm-minbase.json", "tarball");
    run.success();
    let as_user = user.env();
    let (run, user_doc) = build_example(
        Some(&user),
        &as_user,
        "debian-bookworm-minbase.json",
        "tarball",
    );
    run.success();
    assert_eq!(ids(&root_doc), ids(&user_doc));
    let tarball = |env: &Env| std::fs::read(env.out().join("tarball/system.tar.zst")).unwrap();
    let (a, b) = (tarball(&as_root), tarball(&as_user));
    assert!(a.len() > 1 << 20 && a == b, "the tarballs differ");
}

/// The buildd system of the package tests, bootstrapped once into a store
/// under cargo's target tmp dir (which later runs reuse): root's, or — a
/// store is written one way only — `user`'s own. Stages over it start from
/// the stored bootstrap.
fn system_store(user: Option<&TestUser>) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    static USER: OnceLock<PathBuf> = OnceLock::new();
    let manifest = json!({"version": "2", "pipelines": [package::env_pipeline()]}).to_string();
    let bootstrap = |env: &Env, store: &Path| {
        let args = ["build", "-", "--store", store.to_str().unwrap()];
        strata_as(user, env, &args, Some(&manifest)).success();
    };
    match user {
        None => ROOT.get_or_init(|| {
            let store = crate::support::reused_store("isolation");
            bootstrap(&Env::new(), &store);
            store
        }),
        Some(u) => USER.get_or_init(|| {
            // The user's own folder: the store in it must be theirs.
            let store = crate::support::reused_store("isolation-user");
            let dir = store.parent().unwrap();
            std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid)).unwrap();
            bootstrap(&u.env(), &store);
            store
        }),
    }
    .clone()
}

/// A package of the test's own for a customize script to `dpkg -i`.
fn probe_deb(env: &Env) -> Vec<u8> {
    let root = env.path("strata-probe");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/strata-probe")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: strata-probe\nVersion: 1.0\nArchitecture: all\nMaintainer: strata <strata@localhost>\nDescription: strata test: a package a customize script installs\n",
    )
    .unwrap();
    std::fs::write(root.join("usr/share/strata-probe/installed"), "yes\n").unwrap();
    let deb = env.path("strata-probe.deb");
    let built = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&root)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(built.success());
    std::fs::read(deb).unwrap()
}

/// The buildd system, then a customize stage that installs `hello` from
/// the mirror, writes the probe package into the tree and runs the probes
/// and the legitimate work as its script. The tree is `/` there: the
/// probes are recorded in /probes, and the secret under the host's /usr is
/// not even in sight (its probe stays, and must be refused all the same).
fn hostile_customize_manifest(secret: &Path, victim: u32, deb: &[u8]) -> Value {
    let script = format!(
        "{}{}dpkg -i /root/strata-probe.deb\nrm /root/strata-probe.deb\n",
        probe_script(secret, victim, "/probes"),
        root_work("")
    );
    let mut system = package::env_pipeline();
    system["name"] = json!("system");
    system["stages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "customize", "options": {
        "packages": ["hello"],
        "files": [{"path": "/root/strata-probe.deb", "base64": base64(deb)}],
        "script": script}}));
    json!({"version": "2", "pipelines": [system]})
}

/// The package `name` is installed in `tree`, per its dpkg status.
fn assert_installed(tree: &Path, name: &str) {
    let status = std::fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap();
    let entry = status
        .split("\n\n")
        .find(|p| p.lines().any(|l| l == format!("Package: {name}")))
        .unwrap_or_else(|| panic!("{name} is not in the dpkg status"));
    assert!(
        entry.lines().any(|l| l == "Status: install ok installed"),
        "{entry}"
    );
}

/// Builds `manifest` as root or as `user` over their [`system_store`],
/// exporting pipeline `export`; returns the output folder.
fn build_over_system(user: Option<&TestUser>, env: &Env, manifest: &str, export: &str) -> PathBuf {
    let store = system_store(user);
    let out = env.out();
    let args = [
        "build",
        "-",
        "--store",
        store.to_str().unwrap(),
        // The shared store keeps the bootstrap and nothing of these runs
        // (their ids change with the secret's name and the victim's pid).
        "--no-checkpoint",
        "--export",
        export,
        "--output-directory",
        out.to_str().unwrap(),
    ];
    strata_as(user, env, &args, Some(manifest)).success();
    out
}

/// Builds the hostile customize as root or as `user` and checks its tree;
/// returns the exported tree (kept with `env`).
fn run_hostile_customize(user: Option<&TestUser>, env: &Env) -> PathBuf {
    let secret = Secret::new();
    let mut victim = Victim::new();
    let m = hostile_customize_manifest(&secret.0, victim.0.id(), &probe_deb(env)).to_string();
    let out = build_over_system(user, env, &m, "system");
    let tree = out.join("system");
    check_probes(&tree);
    assert_installed(&tree, "strata-probe");
    assert!(tree.join("usr/share/strata-probe/installed").is_file());
    assert_installed(&tree, "hello");
    assert!(tree.join("usr/bin/hello").is_file());
    assert!(victim.alive());
    tree
}

#[test]
fn a_hostile_customize_script_is_refused_and_still_installs_packages() {
    if !rustix::process::geteuid().is_root() {
        return; // the secret under /usr is root's to make
    }
    let env = Env::new();
    let tree = run_hostile_customize(None, &env);
    let owned = std::fs::metadata(tree.join("owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
}

#[test]
fn a_hostile_customize_script_run_by_an_ordinary_user_is_refused_the_same() {
    let Some(user) = test_user() else { return };
    let env = user.env();
    let tree = run_hostile_customize(Some(&user), &env);
    let owned = std::fs::metadata(tree.join("owned")).unwrap();
    assert_eq!(owned.uid(), first_subuid(&user.name) + 1233);
}

/// A native source package whose debian/rules runs the probes in its
/// build target and ships their record in /usr/share/hostile-strata/probes;
/// its .dsc and .tar.xz, made with the host's dpkg-source under `dir`.
fn hostile_source(dir: &Path, probes: &str) -> (Vec<u8>, Vec<u8>) {
    let src = dir.join("hostile-strata-1.0");
    std::fs::create_dir_all(src.join("debian/source")).unwrap();
    let files = [
        ("debian/source/format", "3.0 (native)\n".to_owned()),
        (
            "debian/changelog",
            "hostile-strata (1.0) unstable; urgency=low\n\n  * A build that tries to leave its sandbox.\n\n -- strata <strata@localhost>  Tue, 14 Nov 2023 22:13:20 +0000\n".to_owned(),
        ),
        (
            "debian/control",
            "Source: hostile-strata\nSection: misc\nPriority: optional\nMaintainer: strata <strata@localhost>\nStandards-Version: 4.6.2\nRules-Requires-Root: no\n\nPackage: hostile-strata\nArchitecture: all\nDescription: strata test: a build that probes its sandbox\n Its debian/rules tries to leave the build's sandbox and ships how each\n try went.\n".to_owned(),
        ),
        // Without debhelper: nothing but dpkg-dev and make between the
        // rules and the kernel. `probes` is a file target, so the probes run
        // once although dpkg-buildpackage calls the rules twice.
        (
            "debian/rules",
            "#!/usr/bin/make -f\n\
             .PHONY: build build-arch build-indep binary binary-arch binary-indep clean\n\
             build build-arch build-indep: probes\n\
             probes:\n\tsh debian/probes.sh $(CURDIR)/probes\n\
             binary binary-arch binary-indep: probes\n\
             \trm -rf debian/tmp\n\
             \tmkdir -p debian/tmp/DEBIAN debian/tmp/usr/share/hostile-strata\n\
             \tcp probes debian/tmp/usr/share/hostile-strata/probes\n\
             \tdpkg-gencontrol -phostile-strata -Pdebian/tmp\n\
             \tdpkg-deb --root-owner-group --build debian/tmp ..\n\
             clean:\n\trm -rf debian/tmp debian/files probes\n"
                .to_owned(),
        ),
        // The record's name first: p() has arguments of its own.
        ("debian/probes.sh", format!("out=\"$1\"\n{probes}")),
    ];
    for (path, text) in files {
        std::fs::write(src.join(path), text).unwrap();
    }
    std::fs::set_permissions(
        src.join("debian/rules"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let made = Command::new("dpkg-source")
        .args(["-b", "hostile-strata-1.0"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (
        std::fs::read(dir.join("hostile-strata_1.0.dsc")).unwrap(),
        std::fs::read(dir.join("hostile-strata_1.0.tar.xz")).unwrap(),
    )
}

/// Builds the hostile source package as root or as `user`; its probes
/// refused, its package made.
fn run_hostile_build(user: Option<&TestUser>, env: &Env) {
    let secret = Secret::new();
    let mut victim = Victim::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let probes = probe_script(&secret.0, victim.0.id(), "\"$out\"");
    let (dsc, tar) = hostile_source(&src, &probes);
    let m = package::source_manifest(&dsc, &tar, json!({"build_components": ["all"]}), None);
    let out = build_over_system(user, env, &m.to_string(), "build");
    let deb = out.join("build/hostile-strata_1.0_all.deb");
    assert!(deb.is_file(), "the build did not make its package");
    check_probe_record(&package::deb_file(&deb, "usr/share/hostile-strata/probes"));
    assert!(victim.alive());
}

#[test]
fn a_hostile_debian_rules_is_refused_and_the_package_still_builds() {
    if !rustix::process::geteuid().is_root() {
        return; // the secret under /usr is root's to make
    }
    run_hostile_build(None, &Env::new());
}

#[test]
fn a_hostile_debian_rules_built_by_an_ordinary_user_is_refused_the_same() {
    let Some(user) = test_user() else { return };
    run_hostile_build(Some(&user), &user.env());
}

/// A strata whose `strata-sandbox` is nowhere to be found (not beside it,
/// not one folder up, not on PATH) refuses to run a stage, saying where it
/// looked, rather than starting it without its namespace, limits and filter.
#[test]
fn a_stage_never_runs_without_its_enter_step() {
    let env = Env::new();
    let alone = env.path("alone/bin");
    std::fs::create_dir_all(&alone).unwrap();
    let strata = alone.join("strata");
    if std::fs::hard_link(bin_dir().join("strata"), &strata).is_err() {
        std::fs::copy(bin_dir().join("strata"), &strata).unwrap();
    }
    let lib = env.script_stage("touch", "echo ran > /run/strata/tree/ran", Value::Null);
    let out = env.out();
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "touch"}]}]});
    let mut cmd = Command::new(&strata);
    cmd.env("PATH", "/usr/bin:/bin");
    let child = env.spawn_build_with(cmd, &m, &export_args(&lib, "p", &out));
    let run = Run(child.wait_with_output().unwrap());
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains("strata-sandbox is neither beside") && run.stderr().contains("hint:"),
        "{}",
        run.stderr()
    );
    assert!(!out.join("p").exists(), "the stage ran");
}
