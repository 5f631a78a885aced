//! Building for real: stages in bubblewrap, the store, checkpoints, exports.

use crate::support::{
    Env, HttpServer, checksum, export_args, inline_sources, repo, sha256_hex, tar_listing,
};
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn hello() -> Value {
    let text = std::fs::read_to_string(repo().join("manifests/hello.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn pipeline<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
}

fn statuses(doc: &Value, name: &str) -> Vec<String> {
    pipeline(doc, name)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn example_builds_to_an_export() {
    let env = Env::new();
    let out = env.out();
    let (run, doc) = env.build_json(
        &hello(),
        &[
            "--export",
            "tarball",
            "--export",
            "content",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    );
    run.success();
    assert_eq!(doc["success"], true);
    let tarball = out.join("tarball/hello.tar.gz");
    let listing = tar_listing(&tarball);
    assert!(listing.contains("./etc/motd"), "{listing}");
    assert!(
        listing.contains("./usr/share/doc/hello/README"),
        "{listing}"
    );
    assert!(listing.contains(" 0/0 "), "numeric owners: {listing}");
    assert!(
        listing.contains("2023-11-14"),
        "mtimes clamped to source-epoch: {listing}"
    );
    let readme = std::fs::read_to_string(out.join("content/usr/share/doc/hello/README")).unwrap();
    assert!(readme.starts_with("Hello from strata."));
    let motd = out.join("content/etc/motd");
    assert_eq!(
        std::fs::read_to_string(&motd).unwrap(),
        "Built by strata.\n"
    );
    assert_eq!(std::fs::metadata(&motd).unwrap().mode() & 0o7777, 0o644);
    let tar_meta = &doc["pipelines"][2]["stages"][0]["metadata"];
    assert_eq!(tar_meta["filename"], "hello.tar.gz", "{doc:#}");
    let bytes = std::fs::read(&tarball).unwrap();
    assert_eq!(tar_meta["sha256"], checksum(&bytes));
    assert_eq!(doc["exports"]["tarball"], json!(out.join("tarball")));
    // Every stage is kept by default (each costs only its layer), and
    // nothing is left over.
    assert_eq!(env.objects().len(), 5);
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}

#[test]
fn manifest_from_a_file_and_quiet() {
    let env = Env::new();
    let path = repo().join("manifests/hello.json");
    let run = env.strata(&["build", "-q", path.to_str().unwrap()], None);
    run.success();
    assert_eq!(run.stderr(), "", "quiet prints nothing on success");
    assert_eq!(run.stdout(), "", "stdout is for data only");
}

#[test]
fn warm_store_runs_no_stage() {
    let env = Env::new();
    let (run, doc) = env.build_json(&hello(), &["--checkpoint", "*"]);
    run.success();
    assert_eq!(statuses(&doc, "content"), ["built", "built", "built"]);
    assert_eq!(env.objects().len(), 5, "every stage checkpointed");
    let (run, doc) = env.build_json(&hello(), &["--checkpoint", "*"]);
    run.success();
    assert!(!run.stderr().contains("running"), "{}", run.stderr());
    for p in ["base", "content", "tarball"] {
        assert!(statuses(&doc, p).iter().all(|s| s == "cached"), "{doc:#}");
    }
    // Metadata survives in the store.
    assert_eq!(
        doc["pipelines"][2]["stages"][0]["metadata"]["compression"],
        "gzip"
    );
}

#[test]
fn an_export_builds_only_the_pipelines_it_needs() {
    let env = Env::new();
    let out = env.out();
    let export = |name: &str| {
        let dir = out.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        env.build_json(
            &hello(),
            &[
                "--export",
                name,
                "--output-directory",
                out.to_str().unwrap(),
            ],
        )
    };
    let (run, doc) = export("base");
    run.success();
    assert_eq!(statuses(&doc, "base"), ["built"]);
    for p in ["content", "tarball"] {
        assert!(statuses(&doc, p).is_empty(), "{p} is not needed: {doc:#}");
        assert_eq!(pipeline(&doc, p)["skipped"], true, "{doc:#}");
    }
    assert_eq!(env.objects().len(), 1, "only base's stage ran and was kept");
    let (run, doc) = export("tarball");
    run.success();
    assert_eq!(statuses(&doc, "base"), ["cached"]);
    assert_eq!(statuses(&doc, "tarball"), ["built"]);
    // Stored whole, a pipeline needs nothing: base is not even looked at.
    let (run, doc) = export("content");
    run.success();
    assert_eq!(statuses(&doc, "content"), ["cached", "cached", "cached"]);
    assert!(statuses(&doc, "base").is_empty(), "{doc:#}");
}

#[test]
fn a_changed_stage_reruns_itself_and_what_follows_only() {
    let env = Env::new();
    let mut m = hello();
    env.build_json(&m, &["--checkpoint", "*"]).0.success();
    m["pipelines"][1]["stages"][1]["options"]["files"][0]["content"] = json!("Changed.\n");
    let out = env.out();
    let (run, doc) = env.build_json(
        &m,
        &[
            "--checkpoint",
            "*",
            "--export",
            "content",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    );
    run.success();
    assert_eq!(statuses(&doc, "base"), ["cached"]);
    assert_eq!(statuses(&doc, "content"), ["cached", "built", "built"]);
    assert_eq!(statuses(&doc, "tarball"), ["built"], "a tree input changed");
    assert_eq!(
        std::fs::read_to_string(out.join("content/etc/motd")).unwrap(),
        "Changed.\n"
    );
    assert_eq!(env.objects().len(), 5 + 3);
}

#[test]
fn resumes_from_the_newest_checkpoint() {
    let env = Env::new();
    let m = hello();
    // Only the first stage of `content` is kept.
    let first = {
        let run = env.strata(&["inspect", "-"], Some(&m.to_string()));
        let doc: Value = serde_json::from_str(&run.success().stdout()).unwrap();
        doc["pipelines"][1]["stages"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    env.build_json(&m, &["--no-checkpoint", "--checkpoint", &first])
        .0
        .success();
    assert_eq!(env.objects(), std::slice::from_ref(&first));
    let (run, doc) = env.build_json(&m, &["--no-checkpoint", "--checkpoint", "content"]);
    run.success();
    assert_eq!(statuses(&doc, "content"), ["cached", "built", "built"]);
    assert_eq!(
        statuses(&doc, "base"),
        ["built"],
        "base is not stored, so it runs"
    );
}

#[test]
fn checkpoint_patterns() {
    let env = Env::new();
    let (run, doc) = env.build_json(&hello(), &["--no-checkpoint", "--checkpoint", "copy"]);
    run.success();
    let stored: Vec<bool> = doc["pipelines"][1]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stored"].as_bool().unwrap())
        .collect();
    assert_eq!(
        stored,
        [true, false, true],
        "a stage type selects every stage of it"
    );
    let (run, _) = env.build_json(
        &hello(),
        &[
            "--no-checkpoint",
            "--checkpoint",
            "tar*",
            "--checkpoint",
            "base",
        ],
    );
    run.success();
    assert_eq!(env.objects().len(), 4);
}

#[test]
fn tarballs_are_byte_identical_across_cold_builds() {
    let mut sums = Vec::new();
    for compression in ["none", "gzip", "xz", "zstd"] {
        let mut m = hello();
        m["pipelines"][2]["stages"][0]["options"] =
            json!({"filename": "t.tar", "compression": compression});
        let mut per = Vec::new();
        for _ in 0..2 {
            let env = Env::new();
            let out = env.out();
            env.build(
                &m,
                &[
                    "-q",
                    "--export",
                    "tarball",
                    "--output-directory",
                    out.to_str().unwrap(),
                ],
            )
            .success();
            per.push(sha256_hex(
                &std::fs::read(out.join("tarball/t.tar")).unwrap(),
            ));
        }
        assert_eq!(per[0], per[1], "{compression}");
        sums.push(per[0].clone());
    }
    sums.dedup();
    assert_eq!(sums.len(), 4, "each compression gives other bytes");
}

#[test]
fn a_failing_stage_keeps_nothing_of_itself() {
    let env = Env::new();
    let lib = env.script_stage(
        "fail",
        "echo 'first line'\necho 'the reason it failed' >&2\nexit 3",
        Value::Null,
    );
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [
        {"type": "mkdir", "options": {"paths": [{"path": "/kept"}]}},
        {"type": "fail"}]}]});
    let (run, doc) = env.build_json(
        &m,
        &["--libdir", lib.to_str().unwrap(), "--checkpoint", "*"],
    );
    assert_eq!(run.code(), 1, "{}", run.describe());
    let err = run.stderr();
    assert!(
        err.contains("stage 1 (fail) of pipeline `p` failed: exit status 3"),
        "{err}"
    );
    assert!(
        err.contains("the reason it failed"),
        "log tail in the error: {err}"
    );
    assert_eq!(doc["success"], false);
    assert_eq!(doc["error"]["stage"]["type"], "fail");
    assert_eq!(doc["error"]["status"], "exit status 3");
    assert!(
        doc["error"]["log_tail"]
            .to_string()
            .contains("the reason it failed")
    );
    // The checkpoint before it stays; nothing of the failed stage; no tmp.
    assert_eq!(
        env.objects(),
        [doc["pipelines"][0]["stages"][0]["id"].as_str().unwrap()]
    );
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}

#[test]
fn a_stage_cannot_reach_outside_its_tree() {
    let env = Env::new();
    // Each attempt is recorded in the tree; the host must be unchanged.
    let script = r#"
out=/run/strata/tree/report
: > $out
for p in /usr/strata-escape /etc/strata-escape /run/strata/inputs/t/escape /run/strata/args.json; do
  if ( echo x > "$p" ) 2>/dev/null; then echo "wrote $p" >> $out; fi
done
ls -A /root > /run/strata/tree/root-listing 2>&1 || true
cat /etc/shadow > /run/strata/tree/shadow 2>&1 || true
echo ok >> $out
"#;
    let lib = env.script_stage("probe", script, Value::Null);
    let m = json!({"version": "2", "pipelines": [
        {"name": "t", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]},
        {"name": "p", "stages": [{"type": "probe", "inputs": {"t": {"type": "tree", "origin": "pipeline", "references": ["name:t"]}}}]}]});
    let out = env.out();
    env.build_export(&m, &lib, "p", &out).success();
    let report = std::fs::read_to_string(out.join("p/report")).unwrap();
    assert_eq!(report, "ok\n", "no write outside the tree succeeded");
    assert_eq!(
        std::fs::read_to_string(out.join("p/root-listing")).unwrap(),
        "",
        "host /root is not visible"
    );
    assert!(
        !std::fs::read_to_string(out.join("p/shadow"))
            .unwrap()
            .contains("root:"),
        "no /etc/shadow"
    );
    assert!(!Path::new("/usr/strata-escape").exists());
    assert!(!Path::new("/etc/strata-escape").exists());
}

#[test]
fn network_only_when_declared() {
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let bash = |needs: Value, name: &str| {
        let lib = env.script_stage(name, &format!("exec /bin/bash -c '{script}'"), needs);
        let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": name}]}]});
        env.build(&m, &["--libdir", lib.to_str().unwrap()])
    };
    let denied = bash(Value::Null, "connect");
    assert_eq!(denied.code(), 1, "{}", denied.describe());
    assert!(
        denied.stderr().contains("Connection refused") || denied.stderr().contains("unreachable"),
        "{}",
        denied.stderr()
    );
    assert!(listener.accept().is_err(), "no connection reached the host");
    // A network stage has a network of its own (issue 14): the host's
    // loopback is not its own, but a proxy (or mirror) that is on the
    // host's loopback is forwarded, that port alone.
    let other = bash(json!({"network": true}), "connect-other");
    assert_eq!(other.code(), 1, "{}", other.describe());
    assert!(listener.accept().is_err(), "a loopback service was reached");
    let lib = env.script_stage(
        "connect-net",
        &format!("exec /bin/bash -c '{script}'"),
        json!({"network": true}),
    );
    let m =
        json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "connect-net"}]}]});
    let out = std::process::Command::new(crate::support::bin_dir().join("strata"))
        .args(["build", "-", "--libdir", lib.to_str().unwrap()])
        .env("STRATA_STORE", env.store())
        .env("http_proxy", format!("http://127.0.0.1:{port}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(m.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let allowed = crate::support::Run(out);
    allowed.success();
    assert!(allowed.stderr().contains("connected"));
    assert!(listener.accept().is_ok(), "the declared connection arrived");
}

#[test]
fn stages_get_a_cleared_environment_and_their_arguments() {
    let env = Env::new();
    let lib = env.script_stage(
        "dump",
        "env | sort > /run/strata/tree/env\ncp /run/strata/args.json /run/strata/tree/args.json\necho '{\"seen\": true}' > /run/strata/meta.json",
        Value::Null,
    );
    let m = json!({"version": "2", "pipelines": [{"name": "p", "source-epoch": 1234, "stages": [{"type": "dump", "options": {"k": 1}}]}]});
    let out = env.out();
    let (run, doc) = env.build_json(&m, &export_args(&lib, "p", &out));
    run.success();
    let vars = std::fs::read_to_string(out.join("p/env")).unwrap();
    let keys: Vec<&str> = vars.lines().map(|l| l.split('=').next().unwrap()).collect();
    let allowed = [
        "HOME",
        "LANG",
        "PATH",
        "PWD",
        "SHLVL",
        "SOURCE_DATE_EPOCH",
        "STRATA_STAGE",
        "_",
    ];
    assert!(keys.iter().all(|k| allowed.contains(k)), "{keys:?}");
    assert!(vars.contains("SOURCE_DATE_EPOCH=1234"));
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("p/args.json")).unwrap()).unwrap();
    assert_eq!(args["options"], json!({"k": 1}));
    assert_eq!(args["tree"], "/run/strata/tree");
    assert_eq!(args["meta"]["source-epoch"], 1234);
    assert_eq!(args["meta"]["id"], doc["pipelines"][0]["id"]);
    assert_eq!(
        doc["pipelines"][0]["stages"][0]["metadata"],
        json!({"seen": true})
    );
}

#[test]
fn curl_sources_are_fetched_once_and_verified() {
    let env = Env::new();
    let body = b"served over loopback\n".to_vec();
    let server = HttpServer::start(vec![("/file.txt".into(), body.clone())]);
    let sum = checksum(&body);
    let m = json!({"version": "2",
        "pipelines": [{"name": "p", "stages": [{"type": "copy",
            "inputs": {"f": {"type": "files", "origin": "source", "references": {sum.clone(): {}}}},
            "options": {"paths": [{"from": format!("input://f/{sum}"), "to": "tree:///file.txt"}]}}]}],
        "sources": {"curl": {"items": {sum.clone(): server.url("/file.txt")}}}});
    let out = env.out();
    let args = ["--export", "p", "--output-directory", out.to_str().unwrap()];
    env.build(&m, &args).success();
    assert_eq!(std::fs::read(out.join("p/file.txt")).unwrap(), body);
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    std::fs::remove_dir_all(&out).unwrap();
    env.build(&m, &args).success();
    assert_eq!(
        server.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cached items are not fetched again"
    );
    assert!(env.store().join("sources/curl").join(&sum).is_file());
}

#[test]
fn exports_and_checkpoints_preserve_special_files() {
    let env = Env::new();
    let script = r#"
t=/run/strata/tree
echo data > $t/file
chown 1234:5678 $t/file
chmod 4755 $t/file
ln $t/file $t/hardlink
ln -s file $t/symlink
mkfifo $t/fifo
# A stage is root of a user namespace (issue 14): it cannot make a device
# node, and says so.
mknod $t/null c 1 3 2>/dev/null && echo made-a-device-node >&2 && exit 9
touch -d @1000000000 $t/file
"#;
    let lib = env.script_stage("special", script, Value::Null);
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [
        {"type": "special"},
        {"type": "mkdir", "options": {"paths": [{"path": "/later"}]}}]}]});
    let out = env.out();
    // The first stage is checkpointed (a layer), the second resumes from it.
    let args = [
        "--libdir",
        lib.to_str().unwrap(),
        "--no-checkpoint",
        "--checkpoint",
        "special",
    ];
    env.build(&m, &args).success();
    let mut args = args.to_vec();
    args.extend(["--export", "p", "--output-directory", out.to_str().unwrap()]);
    let (run, doc) = env.build_json(&m, &args);
    run.success();
    assert_eq!(statuses(&doc, "p"), ["cached", "built"]);
    let p = out.join("p");
    let f = std::fs::metadata(p.join("file")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o4755);
    assert_eq!((f.uid(), f.gid()), (1234, 5678));
    assert_eq!(f.mtime(), 1_000_000_000);
    assert_eq!(
        std::fs::metadata(p.join("hardlink")).unwrap().ino(),
        f.ino()
    );
    assert_eq!(
        std::fs::read_link(p.join("symlink")).unwrap(),
        Path::new("file")
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(p.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(p.join("null")).is_err(),
        "a stage made a device node"
    );
    assert!(p.join("later").is_dir());
}

#[test]
fn interrupt_stops_the_stage_and_keeps_nothing() {
    use std::io::{BufRead, BufReader};
    let env = Env::new();
    let lib = env.script_stage("slow", "echo started\nsleep 60", Value::Null);
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "slow"}]}]});
    let mut child = std::process::Command::new(crate::support::bin_dir().join("strata"))
        .args([
            "build",
            "-",
            "--checkpoint",
            "*",
            "--libdir",
            lib.to_str().unwrap(),
        ])
        .env("STRATA_STORE", env.store())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(m.to_string().as_bytes())
            .unwrap();
    }
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("started") {}
    let began = std::time::Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        began.elapsed().as_secs() < 20,
        "the stage was ended, not waited for"
    );
    assert_eq!(status.code(), Some(130));
    assert!(env.objects().is_empty());
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}

#[test]
fn a_foreign_store_is_refused() {
    let env = Env::new();
    std::fs::create_dir_all(env.store()).unwrap();
    std::fs::write(env.store().join("format"), "strata-store 0\n").unwrap();
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]}]});
    let run = env.build(&m, &[]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains("has format `strata-store 0`"),
        "{}",
        run.stderr()
    );
}

#[test]
fn inline_sources_feed_files_inputs() {
    let env = Env::new();
    let data: &[u8] = b"\x00binary\xffdata";
    let sum = checksum(data);
    let m = json!({"version": "2",
        "pipelines": [{"name": "p", "stages": [{"type": "copy",
            "inputs": {"f": {"type": "files", "origin": "source", "references": [{"id": sum.clone()}]}},
            "options": {"paths": [{"from": format!("input://f/{sum}"), "to": "tree:///blob"}]}}]}],
        "sources": inline_sources(&[data])});
    let out = env.out();
    env.build(
        &m,
        &["--export", "p", "--output-directory", out.to_str().unwrap()],
    )
    .success();
    assert_eq!(std::fs::read(out.join("p/blob")).unwrap(), data);
}

#[test]
fn a_stage_that_runs_too_long_is_ended() {
    let env = Env::new();
    let lib = env.script_stage("slow", "echo started\nsleep 60", Value::Null);
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "slow"}]}]});
    let began = std::time::Instant::now();
    let run = env.build(
        &m,
        &[
            "--libdir",
            lib.to_str().unwrap(),
            "--checkpoint",
            "*",
            "--stage-timeout",
            "1",
        ],
    );
    assert!(
        began.elapsed().as_secs() < 20,
        "ended at the deadline, not after the sleep"
    );
    assert_eq!(run.code(), 1, "{}", run.describe());
    let err = run.stderr();
    assert!(
        err.contains("stage 0 (slow) of pipeline `p` failed: timed out after 1s"),
        "{err}"
    );
    assert!(
        err.contains("started"),
        "the log tail is in the error: {err}"
    );
    assert!(!err.contains("panicked"));
    assert!(env.objects().is_empty());
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}

#[test]
fn stored_stages_keep_their_logs() {
    let env = Env::new();
    let lib = env.script_stage("talk", "echo 'a line for the log'", Value::Null);
    let m = json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "talk"}]}]});
    let (run, doc) = env.build_json(
        &m,
        &["--libdir", lib.to_str().unwrap(), "--checkpoint", "*"],
    );
    run.success();
    let id = doc["pipelines"][0]["id"].as_str().unwrap();
    let log = env.strata(&["store", "log", &id[..12]], None);
    assert_eq!(log.success().stdout(), "a line for the log\n");
    let missing = env.strata(&["store", "log", "0000"], None);
    assert_eq!(missing.code(), 2);
    assert!(
        missing.stderr().contains("no stored object 0000"),
        "{}",
        missing.stderr()
    );
}
