//! The store: layers, branching without copies, flattening, size limits and
//! LRU collection, concurrent builds, kill -9 at random moments, format
//! versions. Real overlayfs mounts, real bwrap stages; the flatten test runs
//! again on an XFS loop image (reflinks). The bootstrapped-system numbers
//! (growth over a minbase system) are in `store_growth_over_a_bootstrapped_system`.

use crate::support::{Env, HttpServer, checksum, export_args, sha256_hex};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A pipeline of script stages, one per script (stage types `s0`, `s1`, …
/// in one libdir); each script sees the tree as `$t`.
fn scripts_manifest(env: &Env, name: &str, scripts: &[&str]) -> (Value, PathBuf) {
    let mut lib = PathBuf::new();
    let mut stages = Vec::new();
    for (i, script) in scripts.iter().enumerate() {
        let ty = format!("{name}{i}");
        lib = env.script_stage(&ty, &format!("t=/run/strata/tree\n{script}"), Value::Null);
        stages.push(json!({"type": ty}));
    }
    (
        json!({"version": "2", "pipelines": [{"name": name, "stages": stages}]}),
        lib,
    )
}

/// Runs the same scripts directly on a plain folder: what the tree must be.
fn reference_tree(dir: &Path, scripts: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for script in scripts {
        let out = Command::new("sh")
            .arg("-ec")
            .arg(format!("t={}\n{script}", dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Everything a system tree carries, path by path: type, owner, mode, size,
/// content hash, link target, device number, xattrs, and which hardlink
/// group a file is in. Directory and file times are left out (the builds
/// run at other moments than the reference) except where a script set them.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut walk = vec![root.to_path_buf()];
    while let Some(dir) = walk.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let mut line = format!("{:o} {}:{}", md.mode(), md.uid(), md.gid());
            if ft.is_dir() {
                walk.push(path.clone());
            } else if ft.is_symlink() {
                line += &format!(" -> {}", std::fs::read_link(&path).unwrap().display());
            } else if ft.is_file() {
                line += &format!(
                    " {} {}",
                    md.len(),
                    &sha256_hex(&std::fs::read(&path).unwrap())[..16]
                );
                if md.mtime() < 1_500_000_000 {
                    line += &format!(" mtime {}", md.mtime());
                }
            } else if ft.is_char_device() || ft.is_block_device() {
                line += &format!(" dev {:x}", md.rdev());
            }
            if md.nlink() > 1 && !ft.is_dir() {
                let first = groups
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| rel.clone());
                line += &format!(" link-group {first}");
            }
            for (k, v) in xattrs(&path) {
                line += &format!(" xattr {k}={v}");
            }
            out.insert(rel, line);
        }
    }
    out
}

/// A listing of a stored layer as the stages' namespace sees it: owners on
/// disk are shifted into the namespace's range when strata runs as root
/// (store format 3, `sandbox/userns.rs`; the tests leave STRATA_SUBUID
/// unset, so the range starts at 0x70000000), and a file capability is the
/// namespace's (revision 3, naming that root), so it is left out here (the
/// export, compared whole above, carries it as a plain one).
fn in_tree(listing: BTreeMap<String, String>) -> BTreeMap<String, String> {
    const BASE: u64 = 0x7000_0000;
    listing
        .into_iter()
        .map(|(path, line)| {
            let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
            if let Some((u, g)) = words[1].split_once(':') {
                let back = |id: &str| {
                    let id: u64 = id.parse().unwrap();
                    if id >= BASE { id - BASE } else { id }
                };
                words[1] = format!("{}:{}", back(u), back(g));
            }
            let mut out: Vec<String> = Vec::new();
            let mut i = 0;
            while i < words.len() {
                let cap = words[i] == "xattr"
                    && words
                        .get(i + 1)
                        .is_some_and(|w| w.starts_with("security.capability="));
                if cap {
                    i += 2;
                    continue;
                }
                out.push(words[i].clone());
                i += 1;
            }
            (path, out.join(" "))
        })
        .collect()
}

fn xattrs(path: &Path) -> Vec<(String, String)> {
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "--absolute-names"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Stage scripts that exercise every kind of entry and every overlayfs
/// case: copy-up of owner/mode/content changes, whiteouts for removed
/// files and directories, an opaque directory (removed and made again),
/// hardlinks, symlinks, fifos, xattrs. (No device nodes: a stage is root of
/// a user namespace and cannot make them; whiteouts, which are, come from
/// overlayfs itself.)
const SPECIAL: &[&str] = &[
    r#"mkdir -p $t/etc/sub $t/var/lib/gone $t/opaque/inner $t/usr/share/doc
echo data > $t/etc/file
chown 1234:5678 $t/etc/file
chmod 4755 $t/etc/file
ln $t/etc/file $t/etc/sub/hardlink
ln -s ../file $t/etc/sub/symlink
mkfifo $t/fifo
mkfifo $t/loopish
echo x > $t/var/lib/gone/a
echo y > $t/opaque/inner/b
echo z > $t/opaque/keep-not
echo doc > $t/usr/share/doc/readme
ln -s ../usr/share/doc/readme $t/etc/doc-link
setfattr -n user.strata -v layered $t/etc/file
setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= $t/usr/share/doc/readme
touch -d @1000000000 $t/etc/sub/hardlink"#,
    r#"rm -r $t/var/lib/gone
rm $t/fifo
rm -r $t/opaque
mkdir -p $t/opaque/new
echo fresh > $t/opaque/new/c
chmod 0600 $t/usr/share/doc/readme
chown 42:42 $t/usr
echo more >> $t/etc/doc-link
echo through-one-name >> $t/etc/sub/hardlink
# The kernel drops setuid on a write by anyone without CAP_FSETID in the
# host's namespace, root of a stage's namespace too: set it again.
chmod 4755 $t/etc/sub/hardlink
setfattr -n user.second -v two $t/etc"#,
];

fn flatten_equals_reference(env: &Env) {
    // 2 special stages, then enough small ones that the stack passes the
    // depth bound (16) and a stage is stored flattened.
    let mut scripts: Vec<String> = SPECIAL.iter().map(|s| s.to_string()).collect();
    for i in 0..18 {
        scripts.push(format!(
            "echo {i} > $t/step-{i}\nrm -f $t/step-{}",
            i.max(1) - 1
        ));
    }
    let scripts: Vec<&str> = scripts.iter().map(String::as_str).collect();
    let (m, lib) = scripts_manifest(env, "f", &scripts);
    let out = env.out();
    let (run, doc) = env.build_json(&m, &export_args(&lib, "f", &out));
    run.success();
    let reference = env.path("reference");
    reference_tree(&reference, &scripts);
    assert_eq!(listing(&out.join("f")), listing(&reference), "export");

    // Depth and flattening, read from the objects themselves.
    let ids: Vec<String> = doc["pipelines"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let info = |id: &str| -> Value {
        let path = env.store().join("objects").join(id).join("meta/info.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let depths: Vec<u64> = ids
        .iter()
        .map(|id| info(id)["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths[..17], (1..=16).chain([1]).collect::<Vec<_>>()[..]);
    let flat = &ids[16];
    assert!(info(flat)["parent"].is_null());
    // The flattened object's layer on its own is the whole tree after 17 stages.
    let partial = env.path("reference-17");
    reference_tree(&partial, &scripts[..17]);
    assert_eq!(
        in_tree(listing(
            &env.store().join("objects").join(flat).join("layer")
        )),
        in_tree(listing(&partial)),
        "flattened layer"
    );
    // The second stage's layer holds its whiteouts and opaque dir: only diffs.
    let second = env.store().join("objects").join(&ids[1]).join("layer");
    let gone = std::fs::symlink_metadata(second.join("var/lib/gone")).unwrap();
    assert!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "whiteout"
    );
    assert!(
        xattrs(&second.join("opaque"))
            .iter()
            .any(|(k, v)| k == "user.overlay.opaque" && v == "\"y\""),
        "{:?}",
        xattrs(&second.join("opaque"))
    );
    assert!(
        std::fs::symlink_metadata(second.join("loopish")).is_err(),
        "unchanged files stay below"
    );
    // Written through one name, a file hardlinked below is stored whole:
    // both names, linked, in the layer of the stage that wrote it.
    let (a, b) = (
        std::fs::metadata(second.join("etc/file")).unwrap(),
        std::fs::metadata(second.join("etc/sub/hardlink")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    // A warm build takes every stage from the store; the tree is the same.
    let out2 = env.path("out2");
    let (run, doc) = env.build_json(&m, &export_args(&lib, "f", &out2));
    run.success();
    assert!(
        doc["pipelines"][0]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cached")
    );
    assert_eq!(listing(&out2.join("f")), listing(&reference));
    assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
}

#[test]
fn flatten_keeps_every_kind_of_entry_on_ext4() {
    let env = Env::new();
    flatten_equals_reference(&env);
}

/// An XFS image (reflinks on) mounted on a loop device, removed when dropped.
struct XfsImage {
    dir: tempfile::TempDir,
}

impl XfsImage {
    fn new() -> XfsImage {
        let dir = tempfile::Builder::new()
            .prefix("strata-xfs-")
            .tempdir()
            .unwrap();
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let mkfs = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img)
            .output()
            .expect("mkfs.xfs (apt-get install xfsprogs)");
        assert!(mkfs.status.success(), "{mkfs:?}");
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(mount.status.success(), "{mount:?}");
        XfsImage { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for XfsImage {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

#[test]
fn flatten_keeps_every_kind_of_entry_on_xfs_with_reflinks() {
    let image = XfsImage::new();
    let env = Env::in_dir(&image.path());
    flatten_equals_reference(&env);
    // The flattened layer shares its blocks with the layers it came from.
    let big = "head -c 8388608 /dev/urandom > $t/big";
    let mut scripts = vec![big];
    scripts.extend(std::iter::repeat_n("echo >> $t/log", 17));
    let (m, lib) = scripts_manifest(&env, "r", &scripts);
    env.build(&m, &["--libdir", lib.to_str().unwrap()])
        .success();
    let shared = Command::new("xfs_io")
        .args(["-r", "-c", "fiemap -v"])
        .arg(find_flat_big(&env))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shared.stdout);
    // fiemap flags 0x2000 = FIEMAP_EXTENT_SHARED.
    assert!(
        text.lines().skip(2).any(|l| l
            .split_whitespace()
            .last()
            .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
            .is_some_and(|f| f & 0x2000 != 0)),
        "the flattened copy is a reflink:\n{text}"
    );
}

fn find_flat_big(env: &Env) -> PathBuf {
    for id in env.objects() {
        let dir = env.store().join("objects").join(&id);
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta/info.json")).unwrap())
                .unwrap();
        if info["parent"].is_null() && info["stage"] == 16 && info["pipeline"] == "r" {
            return dir.join("layer/big");
        }
    }
    panic!("no flattened object of pipeline r")
}

#[test]
fn branching_copies_nothing() {
    let env = Env::new();
    let (m, lib) = scripts_manifest(
        &env,
        "b",
        &[
            "head -c 33554432 /dev/zero > $t/big",
            "stat -c %i $t/big > $t/ino",
        ],
    );
    let (run, doc) = env.build_json(&m, &["--libdir", lib.to_str().unwrap()]);
    run.success();
    let id = |i: usize| {
        doc["pipelines"][0]["stages"][i]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let objects = env.store().join("objects");
    let big = std::fs::metadata(objects.join(id(0)).join("layer/big")).unwrap();
    let seen = std::fs::read_to_string(objects.join(id(1)).join("layer/ino")).unwrap();
    assert_eq!(
        seen.trim(),
        big.ino().to_string(),
        "the next stage sees the stored file itself, not a copy"
    );
    let second = dir_size(&objects.join(id(1)));
    assert!(
        second < 64 * 1024,
        "the second object holds its diff only: {second} bytes"
    );
}

fn dir_size(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// One pipeline `name` writing `kib` KiB of random data.
fn blob_manifest(env: &Env, name: &str, kib: usize) -> (Value, PathBuf) {
    scripts_manifest(
        env,
        name,
        &[&format!("head -c {} /dev/urandom > $t/{name}", kib * 1024)],
    )
}

fn object_of(env: &Env, pipeline: &str) -> Option<String> {
    env.objects().into_iter().find(|id| {
        std::fs::read_to_string(env.store().join("objects").join(id).join("meta/info.json"))
            .is_ok_and(|t| t.contains(&format!("\"pipeline\": \"{pipeline}\"")))
    })
}

#[test]
fn least_recently_used_goes_first() {
    let env = Env::new();
    let mut libs = Vec::new();
    for name in ["a", "b", "c"] {
        let (m, lib) = blob_manifest(&env, name, 400);
        env.build(&m, &["--libdir", lib.to_str().unwrap()])
            .success();
        libs.push((m, lib));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Using `a` again (a cache hit) makes `b` the least recently used.
    let (m, lib) = &libs[0];
    env.build(m, &["--libdir", lib.to_str().unwrap()]).success();
    let ls = env.strata(&["store", "ls"], None);
    ls.success();
    let text = ls.stdout();
    let order: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|by| by.split('/').next().unwrap())
        .collect();
    assert_eq!(order, ["b", "c", "a"], "{}", ls.stdout());
    // Room for two of them: `b` goes.
    let gc = env.strata(&["store", "gc", "--max-size", "900KiB"], None);
    gc.success();
    assert!(object_of(&env, "b").is_none(), "{}", gc.stderr());
    assert!(object_of(&env, "a").is_some() && object_of(&env, "c").is_some());
    let du = env.strata(&["store", "du"], None);
    assert!(
        du.success().stdout().contains("in 2 objects"),
        "{}",
        du.stdout()
    );

    // The limit is remembered and applied when a build ends: `d` is newest,
    // so `c` (older than `a`) goes to make room.
    let (m, lib) = blob_manifest(&env, "d", 400);
    let run = env.build(
        &m,
        &[
            "--libdir",
            lib.to_str().unwrap(),
            "--cache-max-size",
            "900KiB",
        ],
    );
    run.success();
    assert!(
        run.stderr().contains("least recently used"),
        "{}",
        run.stderr()
    );
    assert!(object_of(&env, "c").is_none());
    assert!(object_of(&env, "a").is_some() && object_of(&env, "d").is_some());
    assert!(
        env.strata(&["store", "du"], None)
            .stdout()
            .contains("limit 900.0 KiB")
    );

    // An object bigger than the whole limit is not stored, and we are told.
    let (m, lib) = blob_manifest(&env, "huge", 2048);
    let run = env.build(&m, &["--libdir", lib.to_str().unwrap()]);
    run.success();
    assert!(run.stderr().contains("not stored"), "{}", run.stderr());
    assert!(object_of(&env, "huge").is_none());
}

#[test]
fn collection_keeps_parents_of_kept_objects_and_rm_takes_children() {
    let env = Env::new();
    let (m, lib) = scripts_manifest(
        &env,
        "chain",
        &[
            "head -c 300000 /dev/urandom > $t/base",
            "echo one > $t/one",
            "echo two > $t/two",
        ],
    );
    let (run, doc) = env.build_json(&m, &["--libdir", lib.to_str().unwrap()]);
    run.success();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            doc["pipelines"][0]["stages"][i]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // The base is the oldest and the biggest, but the others stand on it:
    // to fit the base's own size, both of them go and it stays.
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(
            env.store()
                .join("objects")
                .join(&ids[0])
                .join("meta/info.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let base = info["size"].as_u64().unwrap();
    let gc = env.strata(&["store", "gc", "--max-size", &base.to_string()], None);
    gc.success();
    assert_eq!(env.objects(), [ids[0].clone()], "{}", gc.stderr());
    // rm of the base takes what stands on it.
    let rm = env.strata(&["store", "rm", &ids[0][..12]], None);
    rm.success();
    assert!(env.objects().is_empty(), "{}", rm.stderr());
    let missing = env.strata(&["store", "rm", "ffff"], None);
    assert_eq!(missing.code(), 2);
    assert!(
        missing.stderr().contains("no stored object ffff"),
        "{}",
        missing.stderr()
    );
    let bad = env.strata(&["store", "gc", "--max-size", "12 parsecs"], None);
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr().contains("unknown unit"), "{}", bad.stderr());
}

#[test]
fn collection_waits_for_a_running_build() {
    let env = Env::new();
    let (m, lib) = scripts_manifest(&env, "slow", &["echo a > $t/a", "sleep 2; echo b > $t/b"]);
    let out = env.out();
    let build = env.spawn_build_export(&m, &lib, "slow", &out);
    wait_for(|| object_of(&env, "slow").is_some());
    // Impatient: the error names the lock file.
    let gc = env.strata(
        &["store", "gc", "--max-size", "0", "--lock-timeout", "1"],
        None,
    );
    assert_eq!(gc.code(), 1, "{}", gc.describe());
    let lock = env.store().canonicalize().unwrap().join("lock");
    assert!(
        gc.stderr().contains(&lock.display().to_string()),
        "{}",
        gc.stderr()
    );
    assert!(
        object_of(&env, "slow").is_some(),
        "nothing collected under a build"
    );
    // Patient: it waits for the build, which finishes whole, then collects.
    let gc = env.strata(&["store", "gc", "--max-size", "0"], None);
    gc.success();
    let built = build.wait_with_output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert_eq!(std::fs::read_to_string(out.join("slow/b")).unwrap(), "b\n");
    assert!(
        gc.stderr().contains("waiting for running builds"),
        "{}",
        gc.stderr()
    );
    assert!(env.objects().is_empty());
}

#[test]
fn concurrent_builds_share_a_stage_built_once() {
    let env = Env::new();
    // The shared stage stamps the tree with the moment it ran: built twice,
    // the two builds would export different stamps.
    let shared = "sleep 1; date +%s%N > $t/stamp";
    let lib = env.script_stage(
        "shared",
        &format!("t=/run/strata/tree\n{shared}"),
        Value::Null,
    );
    let manifest = |tail: &str| {
        json!({"version": "2", "pipelines": [{"name": "p", "stages": [
            {"type": "shared"},
            {"type": "write", "options": {"files": [{"path": format!("/{tail}"), "content": tail}]}}]}]})
    };
    let (ma, mb) = (manifest("a"), manifest("b"));
    let outs = [env.path("out-a"), env.path("out-b")];
    let spawn = |m: &Value, out: &Path| {
        env.spawn_build(
            m,
            &[
                "--json",
                "--libdir",
                lib.to_str().unwrap(),
                "--export",
                "p",
                "--output-directory",
                out.to_str().unwrap(),
            ],
        )
    };
    let a = spawn(&ma, &outs[0]);
    std::thread::sleep(Duration::from_millis(300));
    let b = spawn(&mb, &outs[1]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for run in [&a, &b] {
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let doc = |o: &std::process::Output| -> Value { serde_json::from_slice(&o.stdout).unwrap() };
    let statuses: Vec<String> = [&a, &b]
        .iter()
        .map(|o| {
            doc(o)["pipelines"][0]["stages"][0]["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, ["built", "cached"], "built once");
    assert!(
        String::from_utf8_lossy(&b.stderr).contains("waiting: another build is making it"),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(
        std::fs::read(outs[0].join("p/stamp")).unwrap(),
        std::fs::read(outs[1].join("p/stamp")).unwrap()
    );
    assert_eq!(std::fs::read_to_string(outs[1].join("p/b")).unwrap(), "b");
    assert_eq!(env.objects().len(), 3);
}

#[test]
fn kill_9_at_any_moment_leaves_nothing_partial() {
    let env = Env::new();
    let payload = b"source payload\n".repeat(1000);
    let sum = checksum(&payload);
    // A curl item too, sent slowly (2 MiB over ≈ 160 ms), so that kills
    // land in downloads as well.
    let download: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
    let download_sum = checksum(&download);
    let server = HttpServer::paced(
        vec![("/big.bin".into(), download)],
        Duration::from_millis(5),
    );
    let mut scripts: Vec<String> = (0..5)
        .map(|i| {
            format!(
                "head -c 200000 /dev/zero | tr '\\0' '{i}' > $t/f{i}; rm -f $t/f{}",
                i.max(1) - 1
            )
        })
        .collect();
    scripts.push("mkdir $t/src && cp /run/strata/inputs/src/* $t/src/".into());
    let scripts: Vec<&str> = scripts.iter().map(String::as_str).collect();
    let (mut m, lib) = scripts_manifest(&env, "k", &scripts);
    m["pipelines"][0]["stages"][5]["inputs"] = json!({"src": {"type": "files",
        "origin": "source", "references": [sum, download_sum]}});
    m["sources"] = crate::support::inline_sources(&[&payload]);
    m["sources"]["curl"] = json!({"items": {
        download_sum.as_str(): {"url": server.url("/big.bin")}}});
    m["pipelines"].as_array_mut().unwrap().push(
        json!({"name": "t", "source-epoch": 1700000000, "stages": [{"type": "tar",
            "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": ["name:k"]}},
            "options": {"filename": "k.tar"}}]}),
    );
    let args = |out: &Path| -> Vec<String> {
        [
            "--libdir",
            lib.to_str().unwrap(),
            "--export",
            "t",
            "--output-directory",
            out.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    // An undisturbed build in a store of its own: the expected tarball.
    let calm = Env::new();
    let calm_out = calm.out();
    let args_ref: Vec<String> = args(&calm_out);
    let started = Instant::now();
    calm.build(&m, &args_ref.iter().map(String::as_str).collect::<Vec<_>>())
        .success();
    let full = started.elapsed();
    let expected = std::fs::read(calm_out.join("t/k.tar")).unwrap();

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |below: u128| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_micros(seed % (below as u64 + 1))
    };
    let mut killed = 0;
    // Builds killed before the curl item was stored: while fetching it.
    let mut in_download = 0;
    let downloaded = || {
        env.store()
            .join("sources/curl")
            .join(&download_sum)
            .exists()
    };
    // 32 rounds, and more (up to 64) while too few kills have landed part
    // way: where a kill lands is chance, and a loaded machine moves it.
    let mut rounds = 0;
    for round in 0..64 {
        if round >= 32 && killed >= 20 && in_download >= 3 {
            break;
        }
        rounds += 1;
        let (child, delay) = if round % 4 == 3 {
            // A collection of the whole store (the previous round left it
            // full), killed part way.
            let mut cmd = Command::new(crate::support::bin_dir().join("strata"));
            cmd.args(["store", "gc", "--max-size", "0"])
                .env("STRATA_STORE", env.store())
                .stderr(std::process::Stdio::null());
            (cmd.spawn().unwrap(), random(3000))
        } else {
            // A cold build (sources too), killed anywhere in it.
            env.strata(&["store", "gc", "--max-size", "0"], None)
                .success();
            let out = env.path(&format!("out-{round}"));
            let extra = args(&out);
            let child = env.spawn_build(&m, &extra.iter().map(String::as_str).collect::<Vec<_>>());
            (child, random(full.as_micros() * 9 / 10))
        };
        std::thread::sleep(delay);
        let _ = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status();
        let status = child.wait_with_output().unwrap().status;
        if std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) {
            killed += 1;
            if round % 4 != 3 && !downloaded() {
                in_download += 1;
            }
        }
        assert_objects_whole(&env);
        // The next run cleans up and gets the same result.
        let out = env.path(&format!("again-{round}"));
        let again = args(&out);
        env.build(&m, &again.iter().map(String::as_str).collect::<Vec<_>>())
            .success();
        assert_eq!(
            std::fs::read(out.join("t/k.tar")).unwrap(),
            expected,
            "round {round} (killed after {delay:?})"
        );
        assert!(
            env.tmp_entries().is_empty(),
            "round {round}: {:?}",
            env.tmp_entries()
        );
        assert_objects_whole(&env);
    }
    eprintln!(
        "{killed} of {rounds} runs were killed part way, {in_download} of them before the download was stored"
    );
    assert!(
        in_download >= 3,
        "only {in_download} kills before the download was stored"
    );
    assert!(
        killed >= 20,
        "only {killed} of {rounds} runs were still running when killed"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&env.store().display().to_string()),
        "no mount of the store outlives its build"
    );
    // A killed build's download died with it (curl's argv[0] names the
    // item; its URL comes on stdin).
    let left = Command::new("pgrep")
        .args(["-f", &format!("^curl {download_sum}")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "curl outlived its build: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn a_killed_build_leaves_no_download_running() {
    let env = Env::new();
    let body: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let sum = checksum(&body);
    // 16 pieces, 0.5 s apart: the download takes 8 s.
    let server = HttpServer::paced(vec![("/slow.bin".into(), body)], Duration::from_millis(500));
    let url = server.url("/slow.bin");
    let m = json!({"version": "2",
        "pipelines": [{"name": "p", "stages": [{"type": "copy",
            "inputs": {"f": {"type": "files", "origin": "source", "references": [sum]}},
            "options": {"paths": [{"from": format!("input://f/{sum}"), "to": "tree:///f"}]}}]}],
        "sources": {"curl": {"items": {sum.clone(): {"url": url.clone()}}}}});
    let child = env.spawn_build(&m, &[]);
    // curl's argv[0] names the item (its URL comes on stdin).
    let curl_running = || {
        !Command::new("pgrep")
            .args(["-f", &format!("^curl {sum}")])
            .output()
            .unwrap()
            .stdout
            .is_empty()
    };
    wait_for(curl_running);
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    child.wait_with_output().unwrap();
    // The kernel kills curl when strata dies (its parent-death signal); left
    // alone, curl would go on for the rest of the 8 s download.
    let deadline = Instant::now() + Duration::from_secs(2);
    while curl_running() {
        assert!(Instant::now() < deadline, "curl outlived the killed build");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !env.store().join("sources/curl").join(&sum).exists(),
        "nothing stored"
    );
}

/// Every object under objects/ is complete: a layer and its records, and
/// its parent present.
fn assert_objects_whole(env: &Env) {
    for id in env.objects() {
        let dir = env.store().join("objects").join(&id);
        assert!(dir.join("layer").is_dir(), "{id} has no layer");
        let info: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("meta/info.json"))
                .unwrap_or_else(|e| panic!("{id}: {e}")),
        )
        .unwrap();
        if let Some(parent) = info["parent"].as_str() {
            assert!(
                env.store().join("objects").join(parent).is_dir(),
                "{id}'s parent {parent} is gone"
            );
        }
    }
}

fn wait_for(mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_older_store_format_is_refused_clearly() {
    let env = Env::new();
    std::fs::create_dir_all(env.store().join("objects")).unwrap();
    std::fs::write(env.store().join("format"), "strata-store 1\n").unwrap();
    let (m, lib) = blob_manifest(&env, "x", 1);
    let run = env.build(&m, &["--libdir", lib.to_str().unwrap()]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains(&format!(
            "has format `strata-store 1`, this strata reads `{}`",
            strata::store::FORMAT
        )),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("hint:"), "{}", run.stderr());
    for sub in [&["store", "ls"][..], &["store", "gc", "--max-size", "0"]] {
        let r = env.strata(sub, None);
        assert_eq!(r.code(), 1);
        assert!(r.stderr().contains("strata-store 1"), "{}", r.stderr());
    }
}

/// A store an older strata left (format 2 or 3: owners from before stages
/// ran in user namespaces) is refused by every command with a hint, and
/// nothing in it changes.
#[test]
fn an_older_store_is_refused_and_left_alone() {
    let env = Env::new();
    let store = env.store();
    for old in ["strata-store 2", "strata-store 3"] {
        std::fs::create_dir_all(store.join("envs/dev/tree")).unwrap();
        std::fs::write(store.join("format"), format!("{old}\n")).unwrap();
        for args in [&["env", "list", "--json"][..], &["store", "ls"]] {
            let run = env.strata(args, None);
            assert_eq!(run.code(), 1, "{}", run.describe());
            assert!(
                run.stderr().contains(&format!("has format `{old}`"))
                    && run.stderr().contains("hint: remove it"),
                "{}",
                run.stderr()
            );
        }
        assert_eq!(
            std::fs::read_to_string(store.join("format")).unwrap(),
            format!("{old}\n")
        );
        assert!(store.join("envs/dev/tree").is_dir());
        assert!(!store.join("instances").exists());
    }
}

/// The issue's number on a real system: five kept stages over a bookworm
/// minbase cost one tree plus what the four later stages changed.
#[test]
fn store_growth_over_a_bootstrapped_system() {
    let env = Env::new();
    let mib: u64 = 1 << 20;
    let mut m = json!({"version": "2", "pipelines": [{"name": "system", "runner": "debian", "source-epoch": 1700000000, "stages": [
        {"type": "bootstrap", "options": {
            "bootstrap_options": {"architecture": "amd64", "variant": "minbase"},
            "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}},
        {"type": "write", "options": {"files": [{"path": "/etc/motd", "content": "layered\n"}]}},
        {"type": "mkdir", "options": {"paths": [{"path": "/srv/data"}]}},
        {"type": "customize", "options": {"script": format!("head -c {mib} /dev/urandom > /srv/data/blob; rm -rf /usr/share/doc/*; echo x >> /etc/passwd")}},
        {"type": "customize", "options": {"hostname": "layers"}}]}]});
    m["pipelines"][0]["stages"][4]["options"]["script"] = json!("true");
    let (run, doc) = env.build_json(&m, &[]);
    run.success();
    let ids: Vec<String> = (0..5)
        .map(|i| {
            doc["pipelines"][0]["stages"][i]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let objects = env.store().join("objects");
    let tree = dir_size(&objects.join(&ids[0]).join("layer"));
    let total: u64 = ids.iter().map(|id| dir_size(&objects.join(id))).sum();
    // What the later stages changed: the 1 MiB blob, and copy-ups of the
    // files they touched (passwd, hostname, motd; a few KiB each), with
    // their directories and whiteouts (≤ 64 KiB all told).
    let changes = mib + 64 * 1024;
    let ratio = total as f64 / tree as f64;
    eprintln!("tree {tree} bytes, store {total} bytes ({ratio:.3}x)");
    assert!(
        (total as f64) <= 1.2 * tree as f64 + changes as f64,
        "store {total} bytes for a tree of {tree} bytes"
    );
    assert!(tree > 100 * mib, "a minbase system is ≈ 180 MB: {tree}");
}
