use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::fs::{FileType, Mode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Stage, error, mode, ok};

const EXE: &str = env!("CARGO_BIN_EXE_strata-stage-tar");

const COMPRESSIONS: [(&str, &str); 4] = [
    ("none", "system.tar"),
    ("gzip", "system.tar.gz"),
    ("xz", "system.tar.xz"),
    ("zstd", "system.tar.zst"),
];

/// The POSIX ACL `u::rw-,u:1000:r--,g::r--,m::r--,o::r--` as the kernel
/// stores it in `system.posix_acl_access` (version 2, then tag/perm/id).
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

/// A small system: a set-uid file, a hard link, a symlink, a device node,
/// an xattr and an ACL.
fn fill(dir: &Path) {
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::create_dir_all(dir.join("dev")).unwrap();
    std::fs::write(dir.join("usr/bin/su"), "su\n").unwrap();
    // chown before chmod: chown clears set-id bits.
    std::os::unix::fs::chown(dir.join("usr/bin/su"), Some(0), Some(42)).unwrap();
    std::fs::set_permissions(
        dir.join("usr/bin/su"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(dir.join("usr/bin/su"), dir.join("usr/bin/su.hard")).unwrap();
    symlink("usr/bin", dir.join("bin")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("dev/null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("dev/null"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    std::fs::write(dir.join("cap"), "").unwrap();
    rustix::fs::setxattr(
        dir.join("cap"),
        "user.strata",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        dir.join("cap"),
        "system.posix_acl_access",
        &acl(),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

fn sha256(path: &Path) -> String {
    let hex: String = Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Packs `input` (already filled) with each compression; the archives' sha256.
fn pack_all(s: &mut Stage) -> Vec<String> {
    COMPRESSIONS
        .iter()
        .map(|(compression, filename)| {
            ok(&s.run(
                EXE,
                json!({"filename": filename, "compression": compression}),
            ));
            let archive = s.tree().join(filename);
            let meta = s.meta();
            let sha = sha256(&archive);
            assert_eq!(meta["sha256"], sha);
            assert_eq!(meta["size"], std::fs::metadata(&archive).unwrap().len());
            assert_eq!(meta["filename"], *filename);
            assert_eq!(meta["compression"], *compression);
            assert_eq!(mode(&archive), 0o644);
            sha
        })
        .collect()
}

fn list(archive: &Path) -> String {
    let out = Command::new("tar")
        .args(["--numeric-owner", "--full-time", "-tvf"])
        .arg(archive)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    let mut s = Stage::new();
    fill(&s.input("tree"));
    let first = pack_all(&mut s);
    // Long enough for anything that leaks the clock into the archive to show.
    std::thread::sleep(Duration::from_millis(1100));
    let second = pack_all(&mut s);
    assert_eq!(first, second);
    let mut unique = first.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "each compression differs: {first:?}");
    assert!(!s.tree().join(".system.tar.strata-tmp").exists());
}

#[test]
fn separately_built_trees_match_under_a_source_epoch() {
    let mut a = Stage::new();
    a.epoch = Some(1_700_000_000);
    fill(&a.input("tree"));
    std::thread::sleep(Duration::from_millis(1100));
    let mut b = Stage::new();
    b.epoch = Some(1_700_000_000);
    fill(&b.input("tree"));
    assert_eq!(pack_all(&mut a), pack_all(&mut b));

    let listing = list(&a.tree().join("system.tar"));
    assert!(
        listing.contains("2023-11-14 22:13:20 ./usr/bin/su\n"),
        "{listing}"
    );
}

#[test]
fn owners_modes_links_devices_xattrs_and_acls_survive() {
    let mut s = Stage::new();
    fill(&s.input("tree"));
    ok(&s.run(
        EXE,
        json!({"filename": "system.tar.zst", "compression": "zstd"}),
    ));
    let archive = s.tree().join("system.tar.zst");

    let listing = list(&archive);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(name) || l.contains(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in:\n{listing}"))
            .to_owned()
    };
    assert!(
        line("./usr/bin/su").starts_with("-rwsr-xr-x 0/42 "),
        "{listing}"
    );
    assert!(
        line("./usr/bin/su.hard").starts_with("hrwsr-xr-x 0/42 "),
        "{listing}"
    );
    assert!(
        line("./usr/bin/su.hard").ends_with("link to ./usr/bin/su"),
        "{listing}"
    );
    assert!(line("./bin").starts_with("lrwxrwxrwx "), "{listing}");
    assert!(line("./bin").ends_with("./bin -> usr/bin"), "{listing}");
    assert!(
        line("./dev/null").starts_with("crw-rw-rw- 0/0 "),
        "{listing}"
    );
    assert!(line("./dev/null").contains(" 1,3 "), "{listing}");
    assert!(
        !listing.contains("PaxHeaders."),
        "no process ids in names:\n{listing}"
    );

    // Unpack to see what tar itself restores.
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--acls", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut buf = [0u8; 256];
    let n = rustix::fs::getxattr(out.path().join("cap"), "user.strata", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"kept");
    let n = rustix::fs::getxattr(
        out.path().join("cap"),
        "system.posix_acl_access",
        &mut buf[..],
    )
    .unwrap();
    assert_eq!(&buf[..n], acl().as_slice());
}

#[test]
fn failures_are_named() {
    let mut s = Stage::new();
    let e = error(&s.run(EXE, json!({"filename": "x.tar"})));
    assert_eq!(
        e,
        "error: the tar stage packs its input named tree, and it was given none"
    );

    s.input("tree");
    let e = error(&s.run(EXE, json!({"filename": "../x.tar"})));
    assert!(
        e.starts_with("error: options.filename: \"../x.tar\" is not a plain file name"),
        "{e}"
    );

    let e = error(&s.run(EXE, json!({"filename": "x.tar", "compression": "bzip2"})));
    assert!(
        e.starts_with("error: invalid option at options.compression: unknown variant"),
        "{e}"
    );

    // A directory where the archive goes: the rename fails, the staging file goes.
    std::fs::create_dir(s.tree().join("x.tar")).unwrap();
    std::fs::write(s.tree().join("x.tar/keep"), "").unwrap();
    let e = error(&s.run(EXE, json!({"filename": "x.tar"})));
    assert!(
        e.starts_with("error: cannot move the finished archive to /x.tar: "),
        "{e}"
    );
}

#[test]
fn a_failing_tar_fails_the_stage_with_its_stderr() {
    let mut s = Stage::new();
    let input = s.input("tree");
    // An input folder that vanished: tar cannot enter it.
    std::fs::remove_dir_all(&input).unwrap();
    let e = error(&s.run(EXE, json!({"filename": "x.tar.gz", "compression": "gzip"})));
    assert!(
        e.starts_with("error: tar failed (exit status: 2): tar: "),
        "{e}"
    );
    assert!(!s.tree().join(".x.tar.gz.strata-tmp").exists());
    assert!(!s.tree().join("x.tar.gz").exists());
}

#[test]
fn a_missing_or_failing_compressor_fails_the_stage() {
    let mut s = Stage::new();
    fill(&s.input("tree"));
    let bin = tempfile::tempdir().unwrap();
    symlink("/usr/bin/tar", bin.path().join("tar")).unwrap();
    s.path = bin.path().display().to_string();

    let e = error(&s.run(EXE, json!({"filename": "x.tar.zst", "compression": "zstd"})));
    assert!(
        e.starts_with("error: cannot run zstd (is it installed in the build root?): "),
        "{e}"
    );

    // One that dies at once (false(1), linked rather than a script written
    // here, which a concurrent fork could make "text file busy"): tar must
    // not wait forever on the pipe, and the compressor is the one to blame.
    symlink("/bin/false", bin.path().join("xz")).unwrap();
    let e = error(&s.run(EXE, json!({"filename": "x.tar.xz", "compression": "xz"})));
    assert_eq!(e, "error: xz failed (exit status: 1)");
    assert!(!s.tree().join(".x.tar.xz.strata-tmp").exists());
}
