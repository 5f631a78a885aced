//! Hostile tarballs through strata (issue 15, class 2): the `untar` stage,
//! in its sandbox, puts nothing outside the tree whatever an archive says,
//! and a refused archive stores nothing. The archives are written here
//! byte by byte, so that their headers may say what no archiver writes.
//! Every build is bounded in time, every archive is a few blocks.

use crate::support::{Env, Run, bounded, checksum, inline_sources};
use serde_json::{Value, json};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// What an escaped member would be called: nothing of that name may appear.
const MARK: &str = "strata-escaped";

/// A ustar header block.
fn header(name: &[u8], kind: u8, size: usize, link: &[u8], mode: u32, gid: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    let octal = |h: &mut [u8], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, u64::from(gid));
    octal(&mut h, 124, 12, size as u64);
    octal(&mut h, 136, 12, 1_700_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// An archive, member by member.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(mut self, name: &str, kind: u8, link: &str, mode: u32, data: &[u8]) -> Self {
        self.0.extend(header(
            name.as_bytes(),
            kind,
            data.len(),
            link.as_bytes(),
            mode,
            0,
        ));
        self.data(data)
    }

    fn data(mut self, data: &[u8]) -> Self {
        self.0.extend(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, b'0', "", 0o644, data)
    }

    fn dir(self, name: &str) -> Self {
        self.entry(name, b'5', "", 0o755, b"")
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, b'2', target, 0o777, b"")
    }

    fn hard_link(self, name: &str, target: &str) -> Self {
        self.entry(name, b'1', target, 0o644, b"")
    }

    /// A GNU long name for the next member.
    fn gnu_long_name(mut self, name: &str) -> Self {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        self.0
            .extend(header(b"././@LongLink", b'L', data.len(), b"", 0o644, 0));
        self.data(&data)
    }

    /// A PAX header for the next member.
    fn pax(mut self, records: &[(&str, &str)]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend(format!("{len} {key}={value}\n").as_bytes());
        }
        self.0
            .extend(header(b"PaxHeaders/x", b'x', data.len(), b"", 0o644, 0));
        self.data(&data)
    }

    fn end(mut self) -> Vec<u8> {
        self.0.extend([0u8; 1024]);
        self.0
    }
}

/// One pipeline `p`: untar of `tarball`, with `options` added.
fn untar_manifest(tarball: &[u8], options: Value) -> Value {
    let sum = checksum(tarball);
    let mut opts = json!({"source": format!("input://tarball/{sum}")});
    opts.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "untar",
        "inputs": {"tarball": {"type": "files", "origin": "source", "references": [sum]}},
        "options": opts}]}],
        "sources": inline_sources(&[tarball])})
}

fn build(env: &Env, m: &Value, extra: &[&str]) -> Run {
    let mut args = vec!["build", "-"];
    args.extend_from_slice(extra);
    bounded(env, &args, &m.to_string(), Duration::from_secs(120)).0
}

/// Every path under `dir` whose name is [`MARK`].
fn marks(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().contains(MARK) {
                found.push(path.display().to_string());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

#[test]
fn untar_refuses_every_member_that_would_land_outside_and_stores_nothing() {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out = outside.to_str().unwrap();
    let through = "would be unpacked through a symlink in the tree that points out of it";
    let escaped = format!("../{MARK}");
    let absolute = format!("{out}/{MARK}");
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "two chained symlinks, the last absolute",
            Tar::default()
                .symlink("a", "/")
                .symlink("b", "a")
                .file(&format!("b/etc/{MARK}"), b"x")
                .end(),
            format!("member b/etc/{MARK} {through}"),
        ),
        (
            "an absolute symlink, then a member through it",
            Tar::default()
                .symlink("l", out)
                .file(&format!("l/{MARK}"), b"x")
                .end(),
            format!("member l/{MARK} {through}"),
        ),
        (
            "relative symlinks that each stay inside, chained to climb out",
            Tar::default()
                .dir("d")
                .symlink("d/up", "..")
                .symlink("d/up2", "up/..")
                .file(&format!("d/up2/{MARK}"), b"x")
                .end(),
            format!("member d/up2/{MARK} {through}"),
        ),
        (
            "a hard link to outside",
            Tar::default().hard_link("h", &escaped).end(),
            format!("member h is a hard link to {escaped}, outside the archive"),
        ),
        (
            "a hard link to a host file",
            Tar::default().hard_link("h", "/etc/passwd").end(),
            "member h is a hard link to /etc/passwd, outside the archive".into(),
        ),
        (
            "a hard link to what no earlier member is",
            Tar::default().hard_link("h", "etc/passwd").end(),
            "member h is a hard link to etc/passwd, which is not an earlier member of the archive"
                .into(),
        ),
        (
            "a .. member",
            Tar::default().file("fine", b"x").file(&escaped, b"x").end(),
            format!("member {escaped} has a \"..\" component"),
        ),
        (
            "an absolute member",
            Tar::default().file(&absolute, b"x").end(),
            format!("member {absolute} has an absolute path"),
        ),
        (
            "names that disagree: a GNU long name inside, a PAX path outside",
            Tar::default()
                .gnu_long_name("inside")
                .pax(&[("path", &escaped)])
                .file("header-name", b"x")
                .end(),
            format!("member {escaped} has a \"..\" component"),
        ),
    ];
    for (what, archive, why) in cases {
        let run = build(&env, &untar_manifest(&archive, json!({})), &[]);
        assert_eq!(run.code(), 1, "{what}: {}", run.describe());
        assert!(
            run.stderr().contains(&format!(
                "error: cannot unpack input://tarball/{}: {why}",
                checksum(&archive)
            )),
            "{what}: the error names the member:\n{}",
            run.stderr()
        );
        assert_eq!(
            env.objects(),
            Vec::<String>::new(),
            "{what}: nothing stored"
        );
        assert_eq!(
            env.tmp_entries(),
            Vec::<String>::new(),
            "{what}: no workspace left"
        );
        assert_eq!(marks(env.dir.path()), Vec::<String>::new(), "{what}");
        assert_eq!(marks(Path::new("/etc")), Vec::<String>::new(), "{what}");
        assert!(!Path::new("/").join(MARK).exists(), "{what}");
    }
}

#[test]
fn untar_keeps_the_pax_name_set_id_bits_and_fifos_inside() {
    let env = Env::new();
    let mut archive = Tar::default()
        .dir("usr")
        .dir("usr/bin")
        .gnu_long_name("gnu-name")
        .pax(&[("path", "usr/bin/pax-name")])
        .file("header-name", b"the pax name\n");
    archive
        .0
        .extend(header(b"usr/bin/su", b'0', 3, b"", 0o4755, 42));
    let archive = archive
        .data(b"su\n")
        .entry("usr/bin/fifo", b'6', "", 0o600, b"")
        .end();
    let out = env.out();
    build(
        &env,
        &untar_manifest(&archive, json!({})),
        &["--export", "p", "--output-directory", out.to_str().unwrap()],
    )
    .success();
    let bin = out.join("p/usr/bin");
    let mut names: Vec<String> = std::fs::read_dir(&bin)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fifo", "pax-name", "su"]);
    assert_eq!(
        std::fs::read_to_string(bin.join("pax-name")).unwrap(),
        "the pax name\n"
    );
    let su = std::fs::metadata(bin.join("su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(su.gid(), 42, "in-tree owners come back out with --export");
    let fifo = std::fs::symlink_metadata(bin.join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
}

#[test]
fn untar_of_a_device_node_fails_as_the_user_namespace_says() {
    // A stage is root of a user namespace, where the kernel makes no device
    // nodes: the member fails with the kernel's word, as it did with GNU tar.
    let env = Env::new();
    let mut archive = Tar::default().dir("dev");
    let mut h = header(b"dev/null", b'3', 0, b"", 0o666, 0);
    h[329..337].copy_from_slice(b"0000001\0");
    h[337..345].copy_from_slice(b"0000003\0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    archive.0.extend(h);
    let archive = archive.end();
    let run = build(&env, &untar_manifest(&archive, json!({})), &[]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains(
            "member dev/null: cannot make the character device 1,3: Operation not permitted"
        ),
        "{}",
        run.stderr()
    );
    assert_eq!(env.objects(), Vec::<String>::new());
}

#[test]
fn untar_past_max_size_stops_and_stores_nothing() {
    let env = Env::new();
    let archive = Tar::default()
        .file("a", &[1u8; 40_000])
        .file("b", &[2u8; 40_000])
        .end();
    let run = build(
        &env,
        &untar_manifest(&archive, json!({"max_size": 50_000})),
        &["--checkpoint", "*"],
    );
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stderr().contains(
            "member b (40000 bytes) would take the unpacked files to 80000 bytes, past \
             options.max_size (50000 bytes)"
        ),
        "{}",
        run.stderr()
    );
    assert_eq!(env.objects(), Vec::<String>::new());
    assert_eq!(env.tmp_entries(), Vec::<String>::new());
}
