use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::{Stage, error, inode, mode, ok};

const EXE: &str = env!("CARGO_BIN_EXE_strata-stage-untar");

/// How files inputs name their files.
const SUM: &str = "sha256:0123abcd";

/// A small system: a set-uid file owned 0:42 with a hard link, a relative
/// and an absolute symlink, and a nested folder.
fn fill(dir: &Path) {
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc/deep/er")).unwrap();
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
    symlink("/run/resolv.conf", dir.join("etc/resolv.conf")).unwrap();
    symlink("../../../usr/bin/su", dir.join("etc/deep/er/su")).unwrap();
    std::fs::write(dir.join("etc/deep/er/file"), "deep\n").unwrap();
}

/// Packs `src` with GNU tar and `flag` into `archive`.
fn pack(src: &Path, archive: &Path, flag: Option<&str>) {
    let status = Command::new("tar")
        .arg("--create")
        .args(flag)
        .arg("--file")
        .arg(archive)
        .arg("--directory")
        .arg(src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
}

/// A stage whose input `tarball` holds `SUM`, packed from `fill` with `flag`.
fn packed(flag: Option<&str>) -> Stage {
    let mut s = Stage::new();
    let src = tempfile::tempdir().unwrap();
    fill(src.path());
    pack(src.path(), &s.input("tarball").join(SUM), flag);
    s
}

fn untar(s: &Stage) -> std::process::Output {
    s.run(EXE, json!({"source": format!("input://tarball/{SUM}")}))
}

#[test]
fn owners_modes_and_links_survive() {
    let s = packed(Some("--zstd"));
    ok(&untar(&s));
    let t = s.tree();
    let su = std::fs::metadata(t.join("usr/bin/su")).unwrap();
    assert_eq!((su.uid(), su.gid()), (0, 42));
    assert_eq!(mode(&t.join("usr/bin/su")), 0o4755);
    assert_eq!(
        inode(&t.join("usr/bin/su")),
        inode(&t.join("usr/bin/su.hard"))
    );
    assert_eq!(
        std::fs::read_link(t.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        std::fs::read_link(t.join("etc/resolv.conf")).unwrap(),
        Path::new("/run/resolv.conf")
    );
    assert_eq!(
        std::fs::read_link(t.join("etc/deep/er/su")).unwrap(),
        Path::new("../../../usr/bin/su")
    );
    assert_eq!(
        std::fs::read_to_string(t.join("etc/deep/er/file")).unwrap(),
        "deep\n"
    );
    // ., etc, etc/deep, etc/deep/er, 2 files and a link there, resolv.conf,
    // usr, usr/bin, su, su.hard, bin.
    assert_eq!(s.meta(), json!({"members": 12, "compression": "zstd"}));
}

#[test]
fn compression_is_told_by_the_bytes() {
    for (flag, name) in [
        (None, "none"),
        (Some("--gzip"), "gzip"),
        (Some("--xz"), "xz"),
        (Some("--zstd"), "zstd"),
    ] {
        let s = packed(flag);
        ok(&untar(&s));
        assert_eq!(s.meta()["compression"], name);
        assert_eq!(
            std::fs::read_to_string(s.tree().join("usr/bin/su")).unwrap(),
            "su\n",
            "{name}"
        );
    }
}

/// A tar header whose name and link name are written as is: the tar
/// crate's setters refuse `..`, which is the point here.
fn raw_member(kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    h
}

/// An archive with a harmless file, then `bad`.
fn with_bad_member(bad: (tar::EntryType, &str, &str)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let (kind, name, link) = bad;
    for (kind, name, link, data) in [
        (tar::EntryType::Regular, "harmless", "", &b"fine\n"[..]),
        (kind, name, link, if kind.is_file() { b"x" } else { b"" }),
    ] {
        b.append(&raw_member(kind, name, link, data), data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn members_leaving_the_tree_refuse_the_whole_archive() {
    use tar::EntryType::{Link, Regular, Symlink};
    let cases = [
        (
            (Regular, "../escape", ""),
            "member ../escape has a \"..\" component",
        ),
        (
            (Regular, "a/../../x", ""),
            "member a/../../x has a \"..\" component",
        ),
        ((Regular, "/abs", ""), "member /abs has an absolute path"),
        (
            (Link, "hard", "../x"),
            "member hard is a hard link to ../x, outside the archive",
        ),
        (
            (Link, "hard", "/etc/shadow"),
            "member hard is a hard link to /etc/shadow, outside the archive",
        ),
        (
            (Symlink, "a/link", "../../x"),
            "member a/link is a symlink to ../../x, which climbs above the tree",
        ),
    ];
    for (bad, why) in cases {
        let mut s = Stage::new();
        std::fs::write(s.input("tarball").join(SUM), with_bad_member(bad)).unwrap();
        let e = error(&untar(&s));
        assert_eq!(
            e,
            format!("error: cannot unpack input://tarball/{SUM}: {why}"),
            "{bad:?}"
        );
        let left: Vec<_> = std::fs::read_dir(s.tree()).unwrap().collect();
        assert!(left.is_empty(), "nothing unpacked for {bad:?}: {left:?}");
    }
}

#[test]
fn refusals_are_found_in_compressed_archives_too() {
    let mut s = Stage::new();
    let input = s.input("tarball");
    let plain = input.join("plain.tar");
    std::fs::write(
        &plain,
        with_bad_member((tar::EntryType::Regular, "../escape", "")),
    )
    .unwrap();
    assert!(Command::new("xz").arg(&plain).status().unwrap().success());
    let e = error(&s.run(EXE, json!({"source": "input://tarball/plain.tar.xz"})));
    assert_eq!(
        e,
        "error: cannot unpack input://tarball/plain.tar.xz: member ../escape has a \"..\" component"
    );
}

#[test]
fn a_symlink_in_the_tree_pointing_out_is_not_followed() {
    let mut s = Stage::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("run")).unwrap();
    std::fs::write(src.path().join("run/x"), "x").unwrap();
    pack(src.path(), &s.input("tarball").join(SUM), None);
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), s.tree().join("run")).unwrap();
    let e = error(&untar(&s));
    assert_eq!(
        e,
        format!(
            "error: cannot unpack input://tarball/{SUM}: member ./run/x would be unpacked \
             through a symlink in the tree that points out of it"
        )
    );
    assert!(!outside.path().join("x").exists());
}

#[test]
fn bad_sources_are_named() {
    let mut s = Stage::new();
    let e = error(&untar(&s));
    assert_eq!(
        e,
        format!(
            "error: input://tarball/{SUM} names input tarball, but the stage has no such input (it has: none)"
        )
    );

    let input = s.input("tarball");
    let e = error(&untar(&s));
    assert_eq!(
        e,
        format!("error: options.source: input://tarball/{SUM} does not exist")
    );

    std::fs::create_dir(input.join(SUM)).unwrap();
    let e = error(&untar(&s));
    assert_eq!(
        e,
        format!("error: options.source: input://tarball/{SUM} is not a regular file")
    );
    std::fs::remove_dir(input.join(SUM)).unwrap();

    // gzip's magic, then garbage: gzip's own complaint is the error.
    std::fs::write(input.join(SUM), b"\x1f\x8bnot gzip at all").unwrap();
    let e = error(&untar(&s));
    assert!(
        e.starts_with(&format!(
            "error: cannot unpack input://tarball/{SUM}: gzip failed (exit status: 1): gzip: "
        )),
        "{e}"
    );

    let e = error(&s.run(EXE, json!({"source": "input://tarball/x", "strip": 1})));
    assert!(
        e.starts_with("error: invalid option at options.strip: unknown field `strip`"),
        "{e}"
    );
}
