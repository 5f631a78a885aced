//! The tarball-to-incus stage on small hand-made systems: the files it
//! writes, byte for byte where the issue fixes them, and its refusals. The
//! real import into Incus is in the integration tests (tests/it/incus_image.rs).

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Stage, error, ok};

const EXE: &str = env!("CARGO_BIN_EXE_strata-stage-tarball-to-incus");
const GENERATOR: &str = include_str!("../../assets/lxc-generator");
const EPOCH: u64 = 1_700_000_000;

const HOSTNAME_TPL: &str = "{{ container.name }}\n";
const HOSTS_TPL: &str = "127.0.1.1\t{{ container.name }}\n127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n";

fn metadata_yaml(date: u64, properties: &str) -> String {
    format!(
        "architecture: \"x86_64\"\ncreation_date: {date}\nprofiles:\n- debusine\nproperties:\n{properties}templates:\n  /etc/hostname:\n    when:\n    - create\n    - copy\n    create_only: false\n    template: hostname.tpl\n  /etc/hosts:\n    when:\n    - create\n    - copy\n    create_only: false\n    template: hosts.tpl\n"
    )
}

const PROPERTIES: &str = "  description: \"Strata Test 1 (tiny)\"\n  os: \"debian\"\n  release: \"tiny\"\n  artifact_id: \"0123abc\"\n";

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, PermissionsExt::from_mode(mode)).unwrap();
}

/// A merged-usr system in miniature: /sbin/init -> /lib/systemd/systemd
/// through the sbin and lib links, os-release, a dpkg database, networkd's
/// unit, /etc/systemd/system without the folders the stage adds, a file
/// owned 0:42 with mode 0640, and a hard link.
fn fill(dir: &Path) {
    write(&dir.join("usr/lib/systemd/systemd"), "#!/bin/sh\n", 0o755);
    write(
        &dir.join("usr/lib/systemd/system/systemd-networkd.service"),
        "[Unit]\n",
        0o644,
    );
    std::fs::create_dir_all(dir.join("usr/sbin")).unwrap();
    symlink("/lib/systemd/systemd", dir.join("usr/sbin/init")).unwrap();
    symlink("usr/lib", dir.join("lib")).unwrap();
    symlink("usr/sbin", dir.join("sbin")).unwrap();
    write(
        &dir.join("usr/lib/os-release"),
        "PRETTY_NAME=\"Strata Test 1 (tiny)\"\nID=debian\nVERSION_CODENAME=tiny\n",
        0o644,
    );
    std::fs::create_dir_all(dir.join("etc/systemd/system")).unwrap();
    symlink("../usr/lib/os-release", dir.join("etc/os-release")).unwrap();
    write(
        &dir.join("var/lib/dpkg/status"),
        "Package: base-files\nStatus: install ok installed\nArchitecture: arm64\n\n\
         Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\n",
        0o644,
    );
    write(&dir.join("etc/shadow"), "root:*:1::::::\n", 0o640);
    std::os::unix::fs::chown(dir.join("etc/shadow"), Some(0), Some(42)).unwrap();
    write(&dir.join("usr/bin/a"), "a\n", 0o755);
    std::fs::hard_link(dir.join("usr/bin/a"), dir.join("usr/bin/b")).unwrap();
}

/// A stage run over a filled input, with the engine's input data.
fn stage(epoch: Option<u64>) -> Stage {
    let mut s = Stage::new();
    s.epoch = epoch;
    fill(&s.input("tree"));
    s.data.insert("tree".into(), json!({"id": "0123abc"}));
    s
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `tar -tv` lines: mode, owner, name (and link), in archive order.
fn listing(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(archive)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // mode owner size date time name [-> target]
            format!("{} {} {}", f[0], f[1], f[5..].join(" "))
        })
        .collect()
}

/// Unpacks `archive` as Incus does (owners and modes kept).
fn unpack(archive: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .args(["--numeric-owner", "--same-owner", "-xpf"])
        .arg(archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let path = dir.path().to_owned();
    (dir, path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// What every rootfs must hold, checked on the unpacked folder.
fn check_rootfs(rootfs: &Path) {
    let generator = rootfs.join("etc/systemd/system-generators/lxc");
    assert_eq!(read(&generator), GENERATOR);
    assert_eq!(crate::mode(&generator), 0o755);
    assert_eq!(
        std::fs::read_link(
            rootfs.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
        )
        .unwrap(),
        Path::new("/lib/systemd/system/systemd-networkd.service")
    );
    assert_eq!(
        crate::mode(&rootfs.join("etc/systemd/system/multi-user.target.wants")),
        0o755
    );
    // The input's own members come through as they were.
    assert_eq!(
        std::fs::read_link(rootfs.join("usr/sbin/init")).unwrap(),
        Path::new("/lib/systemd/systemd")
    );
    assert_eq!(
        crate::inode(&rootfs.join("usr/bin/a")),
        crate::inode(&rootfs.join("usr/bin/b"))
    );
    let shadow = std::fs::metadata(rootfs.join("etc/shadow")).unwrap();
    assert_eq!(
        (
            shadow.permissions().mode() & 0o7777,
            std::os::unix::fs::MetadataExt::gid(&shadow)
        ),
        (0o640, 42)
    );
}

#[test]
fn split_image_is_metadata_and_the_changed_system() {
    let s = stage(Some(EPOCH));
    ok(&s.run(EXE, json!({})));
    assert_eq!(names(&s.tree()), ["incus.tar.zst", "rootfs.tar.zst"]);
    assert_eq!(
        s.meta(),
        json!({
            "format": "split", "compression": "zstd", "architecture": "x86_64",
            "os": "debian", "release": "tiny", "description": "Strata Test 1 (tiny)",
            "artifact_id": "0123abc", "creation_date": EPOCH,
            "files": ["incus.tar.zst", "rootfs.tar.zst"],
        })
    );

    let meta = s.tree().join("incus.tar.zst");
    assert_eq!(
        listing(&meta),
        [
            "-rw-r--r-- 0/0 metadata.yaml",
            "drwxr-xr-x 0/0 templates/",
            "-rw-r--r-- 0/0 templates/hostname.tpl",
            "-rw-r--r-- 0/0 templates/hosts.tpl",
        ]
    );
    let (_m, m) = unpack(&meta);
    assert_eq!(
        read(&m.join("metadata.yaml")),
        metadata_yaml(EPOCH, PROPERTIES)
    );
    assert_eq!(read(&m.join("templates/hostname.tpl")), HOSTNAME_TPL);
    assert_eq!(read(&m.join("templates/hosts.tpl")), HOSTS_TPL);

    let rootfs = s.tree().join("rootfs.tar.zst");
    let list = listing(&rootfs);
    assert_eq!(list[0], "drwxr-xr-x 0/0 ./", "{list:#?}");
    // Ours follow tar's members, each once, the missing folders first.
    assert_eq!(
        list[list.len() - 4..],
        [
            "drwxr-xr-x 0/0 ./etc/systemd/system/multi-user.target.wants/",
            "lrwxrwxrwx 0/0 ./etc/systemd/system/multi-user.target.wants/systemd-networkd.service -> /lib/systemd/system/systemd-networkd.service",
            "drwxr-xr-x 0/0 ./etc/systemd/system-generators/",
            "-rwxr-xr-x 0/0 ./etc/systemd/system-generators/lxc",
        ],
        "{list:#?}"
    );
    let mut unique = list.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), list.len(), "no member twice: {list:#?}");
    let (_r, r) = unpack(&rootfs);
    check_rootfs(&r);
    assert!(!r.join("metadata.yaml").exists());
}

#[test]
fn unified_image_holds_metadata_rootfs_and_templates() {
    let s = stage(Some(EPOCH));
    ok(&s.run(EXE, json!({"format": "unified", "compression": "gzip"})));
    assert_eq!(names(&s.tree()), ["image.tar.gz"]);
    let meta = s.meta();
    assert_eq!(meta["format"], "unified");
    assert_eq!(meta["files"], json!(["image.tar.gz"]));

    let image = s.tree().join("image.tar.gz");
    let list = listing(&image);
    assert_eq!(list[0], "-rw-r--r-- 0/0 metadata.yaml");
    assert_eq!(list[1], "drwxr-xr-x 0/0 rootfs/");
    assert_eq!(
        list[list.len() - 3..],
        [
            "drwxr-xr-x 0/0 templates/",
            "-rw-r--r-- 0/0 templates/hostname.tpl",
            "-rw-r--r-- 0/0 templates/hosts.tpl",
        ]
    );
    let middle = &list[1..list.len() - 3];
    assert!(
        middle
            .iter()
            .all(|l| l.split(' ').nth(2).unwrap().starts_with("rootfs/")),
        "{list:#?}"
    );
    // Symlink targets are not member names: they stay as they were; hard
    // link targets are, and move with them.
    assert!(
        middle.contains(&"lrwxrwxrwx 0/0 rootfs/sbin -> usr/sbin".to_owned()),
        "{list:#?}"
    );
    assert!(
        middle.contains(&"hrwxr-xr-x 0/0 rootfs/usr/bin/b link to rootfs/usr/bin/a".to_owned()),
        "{list:#?}"
    );

    let (_u, u) = unpack(&image);
    assert_eq!(names(&u), ["metadata.yaml", "rootfs", "templates"]);
    assert_eq!(
        read(&u.join("metadata.yaml")),
        metadata_yaml(EPOCH, PROPERTIES)
    );
    assert_eq!(read(&u.join("templates/hostname.tpl")), HOSTNAME_TPL);
    assert_eq!(read(&u.join("templates/hosts.tpl")), HOSTS_TPL);
    check_rootfs(&u.join("rootfs"));
}

/// Every format and compression, in one stage folder, by file name → sha256.
fn build_all(s: &mut Stage) -> Vec<(String, String)> {
    let mut sums = vec![];
    for format in ["split", "unified"] {
        for compression in ["zstd", "xz", "gzip", "none"] {
            for entry in std::fs::read_dir(s.tree()).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
            ok(&s.run(EXE, json!({"format": format, "compression": compression})));
            for name in names(&s.tree()) {
                sums.push((format!("{format}/{name}"), sha256(&s.tree().join(&name))));
            }
        }
    }
    sums
}

#[test]
fn separately_built_trees_give_the_same_bytes() {
    let mut a = stage(Some(EPOCH));
    // Long enough for anything that leaks the clock into the files to show.
    std::thread::sleep(Duration::from_millis(1100));
    let mut b = stage(Some(EPOCH));
    let first = build_all(&mut a);
    let second = build_all(&mut b);
    assert_eq!(first, second);
    let files: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        files,
        [
            "split/incus.tar.zst",
            "split/rootfs.tar.zst",
            "split/incus.tar.xz",
            "split/rootfs.tar.xz",
            "split/incus.tar.gz",
            "split/rootfs.tar.gz",
            "split/incus.tar",
            "split/rootfs.tar",
            "unified/image.tar.zst",
            "unified/image.tar.xz",
            "unified/image.tar.gz",
            "unified/image.tar",
        ]
    );
    let mut unique: Vec<&String> = first.iter().map(|(_, sum)| sum).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), first.len(), "every file differs: {first:?}");
}

#[test]
fn without_a_source_epoch_the_date_is_when_packages_last_changed() {
    let s = stage(None);
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(s.root_input("tree").join("var/lib/dpkg/status"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    ok(&s.run(EXE, json!({"compression": "none"})));
    assert_eq!(s.meta()["creation_date"], 1_600_000_000);
    let (_m, m) = unpack(&s.tree().join("incus.tar"));
    assert_eq!(
        read(&m.join("metadata.yaml")),
        metadata_yaml(1_600_000_000, PROPERTIES)
    );
    let list = Command::new("tar")
        .args(["--full-time", "-tvf"])
        .arg(s.tree().join("rootfs.tar"))
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    let generator = list.lines().find(|l| l.ends_with("/lxc")).unwrap();
    assert!(generator.contains(" 2020-09-13 12:26:40 "), "{generator}");
}

#[test]
fn options_override_what_the_tree_says() {
    let mut s = stage(Some(EPOCH));
    s.data.insert("tree".into(), json!({}));
    ok(&s.run(
        EXE,
        json!({"architecture": "armhf", "os": "strata", "release": "one",
               "description": "A \"quoted\"\ndescription: yes", "artifact_id": "given",
               "compression": "none"}),
    ));
    let (_m, m) = unpack(&s.tree().join("incus.tar"));
    let yaml = read(&m.join("metadata.yaml"));
    assert!(yaml.starts_with("architecture: \"armv7l\"\n"), "{yaml}");
    assert!(
        yaml.contains(
            "properties:\n  description: \"A \\\"quoted\\\"\\ndescription: yes\"\n  os: \"strata\"\n  release: \"one\"\n  artifact_id: \"given\"\ntemplates:\n"
        ),
        "{yaml}"
    );

    // Nothing to tell the architecture, os or release by, and no id.
    let mut bare = Stage::new();
    let input = bare.input("tree");
    write(&input.join("sbin/init"), "#!/bin/sh\n", 0o755);
    let e = error(&bare.run(EXE, json!({})));
    assert_eq!(
        e,
        "error: cannot tell the input tree's architecture: it has no /var/lib/dpkg/status; set options.architecture"
    );
    ok(&bare.run(EXE, json!({"architecture": "arm64", "compression": "none"})));
    let meta = bare.meta();
    assert_eq!(meta["architecture"], "aarch64");
    assert_eq!(meta["os"], Value::Null);
    assert_eq!(meta["artifact_id"], Value::Null);
    let (_m, m) = unpack(&bare.tree().join("incus.tar"));
    let yaml = read(&m.join("metadata.yaml"));
    assert!(
        yaml.contains("properties:\n  description: \"A system built by strata\"\ntemplates:\n"),
        "{yaml}"
    );
    // Every folder on the way is added, parents first.
    let list = listing(&bare.tree().join("rootfs.tar"));
    assert_eq!(
        list[list.len() - 7..list.len() - 2],
        [
            "drwxr-xr-x 0/0 ./etc/",
            "drwxr-xr-x 0/0 ./etc/systemd/",
            "drwxr-xr-x 0/0 ./etc/systemd/system/",
            "drwxr-xr-x 0/0 ./etc/systemd/system/multi-user.target.wants/",
            "lrwxrwxrwx 0/0 ./etc/systemd/system/multi-user.target.wants/systemd-networkd.service -> /lib/systemd/system/systemd-networkd.service",
        ],
        "{list:#?}"
    );
}

#[test]
fn the_inputs_own_generator_and_link_are_replaced() {
    let s = stage(Some(EPOCH));
    let input = s.root_input("tree");
    write(
        &input.join("etc/systemd/system-generators/lxc"),
        "#!/bin/sh\n# old\n",
        0o700,
    );
    std::fs::create_dir_all(input.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    symlink(
        "/nowhere",
        input.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service"),
    )
    .unwrap();
    for (format, archive, prefix) in [
        ("split", "rootfs.tar", "./"),
        ("unified", "image.tar", "rootfs/"),
    ] {
        ok(&s.run(EXE, json!({"format": format, "compression": "none"})));
        let archive = s.tree().join(archive);
        let list = listing(&archive);
        for name in [
            "etc/systemd/system-generators/lxc",
            "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        ] {
            let found: Vec<&String> = list
                .iter()
                .filter(|l| l.contains(&format!(" {prefix}{name}")))
                .collect();
            assert_eq!(found.len(), 1, "{format} {name}: {list:#?}");
        }
        // The folders the input has are not added again.
        let folder = format!(" {prefix}etc/systemd/system-generators/");
        assert_eq!(list.iter().filter(|l| l.ends_with(&folder)).count(), 1);
        let (_r, r) = unpack(&archive);
        check_rootfs(&if format == "split" {
            r.clone()
        } else {
            r.join("rootfs")
        });
    }
}

#[test]
fn a_system_without_init_is_refused() {
    let hint = "an Incus container starts /sbin/init: install an init system in the tree (systemd-sysv for systemd)";
    /// What is wrong, how the input gets so, the error it gives.
    type Case = (&'static str, fn(&Path), String);
    let cases: [Case; 5] = [
        (
            "no init",
            |d| std::fs::remove_file(d.join("usr/sbin/init")).unwrap(),
            format!("error: the input tree has no /sbin/init; {hint}"),
        ),
        (
            // The host has /lib/systemd/systemd; only the tree's counts.
            "dangling",
            |d| std::fs::remove_file(d.join("usr/lib/systemd/systemd")).unwrap(),
            format!(
                "error: the input tree's /sbin/init (a symlink to /lib/systemd/systemd) does not resolve inside the tree; {hint}"
            ),
        ),
        (
            "not executable",
            |d| {
                std::fs::set_permissions(
                    d.join("usr/lib/systemd/systemd"),
                    PermissionsExt::from_mode(0o644),
                )
                .unwrap()
            },
            format!(
                "error: the input tree's /sbin/init (a symlink to /lib/systemd/systemd) is not executable; {hint}"
            ),
        ),
        (
            "a folder",
            |d| {
                std::fs::remove_file(d.join("usr/sbin/init")).unwrap();
                std::fs::create_dir(d.join("usr/sbin/init")).unwrap();
            },
            format!("error: the input tree's /sbin/init is not a regular file; {hint}"),
        ),
        (
            "escaping",
            |d| {
                std::fs::remove_file(d.join("usr/sbin/init")).unwrap();
                symlink(
                    "../../../../../../lib/systemd/systemd-missing",
                    d.join("usr/sbin/init"),
                )
                .unwrap();
            },
            format!(
                "error: the input tree's /sbin/init (a symlink to ../../../../../../lib/systemd/systemd-missing) does not resolve inside the tree; {hint}"
            ),
        ),
    ];
    for (what, spoil, expected) in cases {
        let s = stage(Some(EPOCH));
        spoil(&s.root_input("tree"));
        let e = error(&s.run(EXE, json!({})));
        assert_eq!(e, expected, "{what}");
        assert!(names(&s.tree()).is_empty(), "{what}: nothing written");
    }
}

#[test]
fn a_folder_we_add_to_must_be_a_folder() {
    let s = stage(Some(EPOCH));
    let input = s.root_input("tree");
    std::fs::rename(input.join("etc/systemd"), input.join("etc/systemd.real")).unwrap();
    symlink("systemd.real", input.join("etc/systemd")).unwrap();
    let e = error(&s.run(EXE, json!({})));
    assert_eq!(
        e,
        "error: the input tree's /etc/systemd is not a folder (a symlink or file there would redirect what this stage adds beneath it)"
    );
    assert!(names(&s.tree()).is_empty());
}

#[test]
fn a_failing_compressor_or_tar_leaves_nothing() {
    let mut s = stage(Some(EPOCH));
    let bin = tempfile::tempdir().unwrap();
    symlink("/usr/bin/tar", bin.path().join("tar")).unwrap();
    // false(1), linked rather than a script written here, which a
    // concurrent fork could make "text file busy".
    symlink("/bin/false", bin.path().join("zstd")).unwrap();
    s.path = bin.path().display().to_string();
    let e = error(&s.run(EXE, json!({})));
    assert_eq!(e, "error: zstd failed (exit status: 1)");
    assert!(names(&s.tree()).is_empty());

    let e = error(&s.run(EXE, json!({"compression": "xz"})));
    assert!(
        e.starts_with("error: cannot run xz (is it installed in the build root?): "),
        "{e}"
    );
    assert!(names(&s.tree()).is_empty());

    // tar failing after incus.tar was written: that goes too.
    std::fs::remove_file(bin.path().join("tar")).unwrap();
    symlink("/bin/false", bin.path().join("tar")).unwrap();
    let e = error(&s.run(EXE, json!({"compression": "none"})));
    assert_eq!(e, "error: tar failed (exit status: 1)");
    assert!(names(&s.tree()).is_empty());
}

#[test]
fn the_stage_needs_its_tree_input() {
    let s = Stage::new();
    let e = error(&s.run(EXE, json!({})));
    assert_eq!(
        e,
        "error: the tarball-to-incus stage packs its input named tree, and it was given none"
    );
    let s = stage(Some(EPOCH));
    let e = error(&s.run(EXE, json!({"format": "squashfs"})));
    assert!(
        e.starts_with("error: invalid option at options.format: unknown variant"),
        "{e}"
    );
}
