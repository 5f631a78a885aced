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

/// An archive written block by block, so that its headers may say what no
/// honest archiver writes.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn member(self, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> Self {
        self.block(&raw_member(kind, name, link, data), data)
    }

    fn block(mut self, header: &tar::Header, data: &[u8]) -> Self {
        self.0.extend(header.as_bytes());
        self.0.extend(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    /// A GNU long name (`L`) or long link (`K`) for the next member.
    fn gnu_long(self, kind: u8, name: &[u8]) -> Self {
        let mut data = name.to_vec();
        data.push(0);
        let h = raw_member(tar::EntryType::new(kind), "././@LongLink", "", &data);
        self.block(&h, &data)
    }

    /// A PAX header (`x`, or `g` for a global one).
    fn pax(self, kind: u8, records: &[(&str, &[u8])]) -> Self {
        let data = pax_records(records);
        let h = raw_member(tar::EntryType::new(kind), "PaxHeaders/x", "", &data);
        self.block(&h, &data)
    }

    fn end(mut self) -> Vec<u8> {
        self.0.extend([0u8; 1024]);
        self.0
    }
}

/// PAX records, each `LEN KEY=VALUE\n` with LEN counting itself.
fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend(format!("{len} {key}=").as_bytes());
        out.extend(*value);
        out.push(b'\n');
    }
    out
}

/// Runs untar over `archive`; the stage, and a folder outside everything
/// the stage was given, which must stay empty.
fn untar_bytes(archive: &[u8]) -> (Stage, tempfile::TempDir, std::process::Output) {
    let mut s = Stage::new();
    std::fs::write(s.input("tarball").join(SUM), archive).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let out = untar(&s);
    (s, outside, out)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn refused(archive: &[u8], outside: Option<&Path>, why: &str) -> Stage {
    let mut s = Stage::new();
    std::fs::write(s.input("tarball").join(SUM), archive).unwrap();
    let e = error(&untar(&s));
    assert_eq!(
        e,
        format!("error: cannot unpack input://tarball/{SUM}: {why}")
    );
    assert_eq!(
        entries(&s.tree()),
        Vec::<String>::new(),
        "what it made is gone"
    );
    if let Some(outside) = outside {
        assert_eq!(entries(outside), Vec::<String>::new(), "nothing outside");
    }
    s
}

#[test]
fn symlinks_an_archive_makes_never_lead_a_member_out() {
    use tar::EntryType::{Directory, Regular, Symlink};
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_str().unwrap();
    let through = "would be unpacked through a symlink in the tree that points out of it";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // a -> /, b -> a, then b/etc/x: a chain ending at an absolute link.
        (
            Raw::default()
                .member(Symlink, "a", "/", b"")
                .member(Symlink, "b", "a", b"")
                .member(Regular, "b/etc/x", "", b"x")
                .end(),
            "b/etc/x",
        ),
        // An absolute link to a host folder, then a member through it.
        (
            Raw::default()
                .member(Symlink, "l", out, b"")
                .member(Regular, "l/x", "", b"x")
                .end(),
            "l/x",
        ),
        // The same, with a directory member over the link first.
        (
            Raw::default()
                .member(Symlink, "l", out, b"")
                .member(Directory, "l", "", b"")
                .member(Regular, "l/x", "", b"x")
                .end(),
            "l/x",
        ),
        // Relative links that each stay inside, chained to climb out:
        // d/up -> .. is the root, d/up2 -> up/.. is above it.
        (
            Raw::default()
                .member(Directory, "d", "", b"")
                .member(Symlink, "d/up", "..", b"")
                .member(Symlink, "d/up2", "up/..", b"")
                .member(Regular, "d/up2/x", "", b"x")
                .end(),
            "d/up2/x",
        ),
    ];
    for (archive, member) in cases {
        refused(
            &archive,
            Some(outside.path()),
            &format!("member {member} {through}"),
        );
    }
}

#[test]
fn hard_links_reach_only_earlier_members() {
    use tar::EntryType::{Link, Regular, Symlink};
    let refused_link = |archive: &[u8], why: &str| {
        let mut s = Stage::new();
        std::fs::write(s.root.join("secret"), "host\n").unwrap();
        std::fs::write(s.tree().join("kept"), "tree\n").unwrap();
        std::fs::write(s.input("tarball").join(SUM), archive).unwrap();
        let e = error(&untar(&s));
        assert_eq!(
            e,
            format!("error: cannot unpack input://tarball/{SUM}: {why}")
        );
        assert_eq!(entries(&s.tree()), ["kept"]);
        assert_eq!(std::fs::metadata(s.root.join("secret")).unwrap().nlink(), 1);
    };
    refused_link(
        &Raw::default()
            .member(Regular, "f", "", b"f")
            .member(Link, "h", "../secret", b"")
            .end(),
        "member h is a hard link to ../secret, outside the archive",
    );
    // A file of the tree, not of the archive.
    refused_link(
        &Raw::default().member(Link, "h", "kept", b"").end(),
        "member h is a hard link to kept, which is not an earlier member of the archive",
    );

    // Earlier members, a symlink among them (linked, not followed).
    let (s, _outside, out) = untar_bytes(
        &Raw::default()
            .member(Regular, "a/f", "", b"f")
            .member(Link, "h", "./a/f", b"")
            .member(Symlink, "s", "/etc/shadow", b"")
            .member(Link, "hs", "s", b"")
            .end(),
    );
    ok(&out);
    let t = s.tree();
    assert_eq!(inode(&t.join("a/f")), inode(&t.join("h")));
    assert_eq!(inode(&t.join("s")), inode(&t.join("hs")));
    assert_eq!(
        std::fs::read_link(t.join("hs")).unwrap(),
        Path::new("/etc/shadow")
    );
}

#[test]
fn the_pax_name_wins_over_the_gnu_long_name() {
    use tar::EntryType::{Link, Regular};
    // Three names for one member: GNU long name, PAX path, header name.
    let (s, _o, out) = untar_bytes(
        &Raw::default()
            .gnu_long(b'L', b"gnu-name")
            .pax(b'x', &[("path", b"pax-name")])
            .member(Regular, "ustar-name", "", b"data\n")
            .end(),
    );
    ok(&out);
    assert_eq!(entries(&s.tree()), ["pax-name"]);
    assert_eq!(s.meta()["members"], 1);

    // A PAX path that climbs is refused, whatever the GNU name says...
    let s = refused(
        &Raw::default()
            .member(Regular, "first", "", b"1")
            .gnu_long(b'L', b"innocent")
            .pax(b'x', &[("path", b"../escape")])
            .member(Regular, "x", "", b"x")
            .end(),
        None,
        "member ../escape has a \"..\" component",
    );
    assert!(!s.root.join("escape").exists());

    // ...and a GNU name that climbs is never used when PAX names the member.
    let (s, _o, out) = untar_bytes(
        &Raw::default()
            .gnu_long(b'L', b"../escape")
            .pax(b'x', &[("path", b"inside")])
            .member(Regular, "x", "", b"x")
            .end(),
    );
    ok(&out);
    assert_eq!(entries(&s.tree()), ["inside"]);
    assert!(!s.root.join("escape").exists());

    // Link names the same way: PAX linkpath over GNU long link.
    let (s, _o, out) = untar_bytes(
        &Raw::default()
            .member(Regular, "f", "", b"f")
            .gnu_long(b'K', b"../../etc/passwd")
            .pax(b'x', &[("linkpath", b"f")])
            .member(Link, "h", "x", b"")
            .end(),
    );
    ok(&out);
    assert_eq!(inode(&s.tree().join("f")), inode(&s.tree().join("h")));
}

#[test]
fn pax_records_are_read_by_their_length() {
    use tar::EntryType::Regular;
    // A capability whose bytes hold 0x0a, an ACL as text (newlines in its
    // value, as GNU tar writes it), and a value hiding a `path` record that
    // only a reader splitting on newlines would see.
    let cap = [
        1u8, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let (s, _o, out) = untar_bytes(
        &Raw::default()
            .pax(
                b'x',
                &[
                    ("SCHILY.xattr.security.capability", &cap),
                    (
                        "SCHILY.acl.access",
                        b"user::rw-\nuser:7:r--\ngroup::r--\nmask::r--\nother::r--\n",
                    ),
                    ("SCHILY.xattr.user.x", b"v\n17 path=../../xy"),
                ],
            )
            .member(Regular, "x", "", b"x")
            .end(),
    );
    ok(&out);
    let x = s.tree().join("x");
    assert_eq!(entries(&s.tree()), ["x"]);
    assert!(!s.root.join("xy").exists());
    assert_eq!(xattr(&x, "security.capability"), Some(cap.to_vec()));
    assert_eq!(xattr(&x, "user.x"), Some(b"v\n17 path=../../xy".to_vec()));
    let acl = xattr(&x, "system.posix_acl_access").unwrap();
    assert_eq!(
        &acl[12..20],
        [2, 0, 4, 0, 7, 0, 0, 0],
        "user:7:r-- in {acl:?}"
    );

    // A record whose length runs past the header is refused.
    let mut bad = pax_records(&[("path", b"inside")]);
    bad[0] = b'9';
    let mut s = Stage::new();
    let archive = Raw::default()
        .block(
            &raw_member(tar::EntryType::XHeader, "PaxHeaders/x", "", &bad),
            &bad,
        )
        .member(Regular, "x", "", b"x")
        .end();
    std::fs::write(s.input("tarball").join(SUM), archive).unwrap();
    let e = error(&untar(&s));
    assert_eq!(
        e,
        format!(
            "error: cannot unpack input://tarball/{SUM}: member x has a PAX header that cannot \
             be read: a record longer than the header"
        )
    );
}

#[test]
fn global_pax_headers_may_only_comment() {
    use tar::EntryType::Regular;
    refused(
        &Raw::default()
            .pax(b'g', &[("path", b"../x")])
            .member(Regular, "x", "", b"x")
            .end(),
        None,
        "member PaxHeaders/x is a global PAX header setting path, which would apply to every \
         later member; untar does not apply it",
    );
    let (s, _o, out) = untar_bytes(
        &Raw::default()
            .pax(b'g', &[("comment", b"0123abcd")])
            .member(Regular, "x", "", b"x")
            .end(),
    );
    ok(&out);
    assert_eq!(entries(&s.tree()), ["x"]);
}

#[test]
fn devices_fifos_and_set_id_files_land_inside() {
    let mut s = Stage::new();
    let src = tempfile::tempdir().unwrap();
    let d = src.path();
    std::fs::create_dir_all(d.join("dev")).unwrap();
    std::fs::create_dir_all(d.join("usr/bin")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("dev/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    std::fs::write(d.join("usr/bin/su"), "su\n").unwrap();
    std::os::unix::fs::chown(d.join("usr/bin/su"), Some(0), Some(42)).unwrap();
    std::fs::set_permissions(
        d.join("usr/bin/su"),
        std::os::unix::fs::PermissionsExt::from_mode(0o6755),
    )
    .unwrap();
    for (path, m) in [("dev/null", 0o666), ("dev", 0o755), ("usr/bin", 0o2775)] {
        std::fs::set_permissions(
            d.join(path),
            std::os::unix::fs::PermissionsExt::from_mode(m),
        )
        .unwrap();
    }
    pack(d, &s.input("tarball").join(SUM), Some("--xz"));
    ok(&untar(&s));
    let t = s.tree();
    let null = std::fs::symlink_metadata(t.join("dev/null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &null.file_type()
    ));
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(mode(&t.join("dev/null")), 0o666);
    let fifo = std::fs::symlink_metadata(t.join("dev/fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
    assert_eq!(mode(&t.join("dev/fifo")), 0o600);
    let su = std::fs::metadata(t.join("usr/bin/su")).unwrap();
    assert_eq!((su.uid(), su.gid()), (0, 42));
    assert_eq!(mode(&t.join("usr/bin/su")), 0o6755);
    assert_eq!(mode(&t.join("usr/bin")), 0o2775);
    assert_eq!(
        entries(&s.root),
        ["args.json", "inputs", "meta.json", "tree"]
    );
}

/// `name`'s xattr `key`, not following a symlink.
fn xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, key, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn xattrs_capabilities_acls_and_times_survive_and_directories_close_last() {
    let mut s = Stage::new();
    let src = tempfile::tempdir().unwrap();
    let d = src.path();
    std::fs::create_dir_all(d.join("ro")).unwrap();
    std::fs::write(d.join("ro/ping"), "ping\n").unwrap();
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let acl = {
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
    };
    let set = |path: &str, key: &str, value: &[u8]| {
        rustix::fs::setxattr(d.join(path), key, value, rustix::fs::XattrFlags::empty()).unwrap();
    };
    set("ro/ping", "security.capability", &cap);
    set("ro/ping", "user.strata", b"kept=1");
    set("ro/ping", "system.posix_acl_access", &acl);
    // Read-only, with an old time: both must hold after its member is in.
    std::fs::set_permissions(
        d.join("ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    let stamp = |path: &str, sec: i64, nsec: i64| {
        let t = rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            d.join(path),
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    };
    stamp("ro/ping", 1_600_000_000, 123_456_789);
    stamp("ro", 1_500_000_000, 0);
    let archive = s.input("tarball").join(SUM);
    let status = Command::new("tar")
        .args([
            "--create",
            "--format=pax",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--numeric-owner",
            "--file",
        ])
        .arg(&archive)
        .arg("--directory")
        .arg(d)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    ok(&untar(&s));
    let t = s.tree();
    assert_eq!(
        xattr(&t.join("ro/ping"), "security.capability"),
        Some(cap.to_vec())
    );
    assert_eq!(
        xattr(&t.join("ro/ping"), "user.strata"),
        Some(b"kept=1".to_vec())
    );
    assert_eq!(
        xattr(&t.join("ro/ping"), "system.posix_acl_access"),
        Some(acl)
    );
    let ping = std::fs::metadata(t.join("ro/ping")).unwrap();
    assert_eq!(
        (ping.mtime(), ping.mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
    assert_eq!(mode(&t.join("ro")), 0o555);
    assert_eq!(
        std::fs::metadata(t.join("ro")).unwrap().mtime(),
        1_500_000_000
    );
}

#[test]
fn a_directory_member_keeps_a_symlink_in_its_place() {
    use tar::EntryType::{Directory, Regular};
    let mut s = Stage::new();
    std::fs::create_dir_all(s.tree().join("usr/bin")).unwrap();
    symlink("usr/bin", s.tree().join("bin")).unwrap();
    std::fs::write(
        s.input("tarball").join(SUM),
        Raw::default()
            .member(Directory, "bin", "", b"")
            .member(Regular, "bin/tool", "", b"tool\n")
            .end(),
    )
    .unwrap();
    ok(&untar(&s));
    let t = s.tree();
    assert_eq!(
        std::fs::read_link(t.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        std::fs::read_to_string(t.join("usr/bin/tool")).unwrap(),
        "tool\n"
    );
}

#[test]
fn a_member_replaces_a_symlink_in_its_place_without_following_it() {
    use tar::EntryType::{Directory, Regular, Symlink};
    let mut s = Stage::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("passwd"), "host\n").unwrap();
    std::fs::create_dir(s.tree().join("etc")).unwrap();
    for name in ["passwd", "group", "dir"] {
        symlink(outside.path().join(name), s.tree().join("etc").join(name)).unwrap();
    }
    std::fs::write(
        s.input("tarball").join(SUM),
        Raw::default()
            .member(Directory, "etc", "", b"")
            .member(Regular, "etc/passwd", "", b"tree\n")
            .member(Symlink, "etc/group", "passwd", b"")
            .end(),
    )
    .unwrap();
    ok(&untar(&s));
    let t = s.tree();
    assert_eq!(
        std::fs::read_to_string(t.join("etc/passwd")).unwrap(),
        "tree\n"
    );
    assert_eq!(
        std::fs::read_link(t.join("etc/group")).unwrap(),
        Path::new("passwd")
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("passwd")).unwrap(),
        "host\n"
    );
    assert_eq!(entries(outside.path()), ["passwd"]);
}

#[test]
fn archives_past_max_size_stop_and_leave_nothing() {
    use tar::EntryType::Regular;
    let mut s = Stage::new();
    std::fs::write(
        s.input("tarball").join(SUM),
        Raw::default()
            .member(Regular, "a", "", &[1u8; 3000])
            .member(Regular, "b", "", &[2u8; 3000])
            .end(),
    )
    .unwrap();
    let e = error(&s.run(
        EXE,
        json!({"source": format!("input://tarball/{SUM}"), "max_size": 4000}),
    ));
    assert_eq!(
        e,
        format!(
            "error: cannot unpack input://tarball/{SUM}: member b (3000 bytes) would take the \
             unpacked files to 6000 bytes, past options.max_size (4000 bytes)"
        )
    );
    assert_eq!(entries(&s.tree()), Vec::<String>::new());
    ok(&s.run(
        EXE,
        json!({"source": format!("input://tarball/{SUM}"), "max_size": 6000}),
    ));
}

#[test]
fn archives_past_the_free_space_stop_before_the_disk_is_full() {
    use tar::EntryType::Regular;
    let mut s = Stage::new();
    // 4 MiB of zeros, compressed to little, into a 2 MiB tmpfs.
    let plain = s.input("tarball").join("big.tar");
    std::fs::write(
        &plain,
        Raw::default()
            .member(Regular, "small", "", b"small\n")
            .member(Regular, "big", "", &vec![0u8; 4 << 20])
            .end(),
    )
    .unwrap();
    assert!(
        Command::new("zstd")
            .args(["-q", "--rm"])
            .arg(&plain)
            .status()
            .unwrap()
            .success()
    );
    let tree = s.tree();
    let script = "mount -t tmpfs -o size=2m strata-test \"$0\" && exec \"$1\"";
    let out = s.run_argv(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
            tree.to_str().unwrap(),
            EXE,
        ],
        json!({"source": "input://tarball/big.tar.zst"}),
    );
    let e = error(&out);
    assert!(
        e.starts_with(
            "error: cannot unpack input://tarball/big.tar.zst: member big (4194304 bytes) does \
             not fit in the tree's filesystem: it has "
        ),
        "{e}"
    );
}

#[test]
fn an_archive_cut_short_leaves_nothing() {
    use tar::EntryType::Regular;
    let mut archive = Raw::default()
        .member(Regular, "a", "", b"a\n")
        .member(Regular, "b", "", &[7u8; 5000])
        .end();
    archive.truncate(512 * 2 + 512 + 1024);
    let mut s = Stage::new();
    std::fs::write(s.input("tarball").join(SUM), archive).unwrap();
    let e = error(&untar(&s));
    assert!(
        e.starts_with(&format!(
            "error: cannot unpack input://tarball/{SUM}: cannot read the archive: "
        )),
        "{e}"
    );
    assert_eq!(entries(&s.tree()), Vec::<String>::new());
}

#[test]
fn sparse_members_are_refused_by_name() {
    for (format, why) in [
        (
            "--format=gnu",
            "member ./holes is a GNU sparse file (tar --sparse --format=gnu), which untar does \
             not unpack",
        ),
        (
            "--format=pax",
            "is a GNU sparse file in PAX form (GNU.sparse.",
        ),
    ] {
        let mut s = Stage::new();
        let src = tempfile::tempdir().unwrap();
        let holes = std::fs::File::create(src.path().join("holes")).unwrap();
        holes.set_len(1 << 20).unwrap();
        let status = Command::new("tar")
            .args(["--create", "--sparse", format, "--file"])
            .arg(s.input("tarball").join(SUM))
            .arg("--directory")
            .arg(src.path())
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let e = error(&untar(&s));
        assert!(e.contains(why), "{format}: {e}");
        assert_eq!(entries(&s.tree()), Vec::<String>::new(), "{format}");
    }
}
