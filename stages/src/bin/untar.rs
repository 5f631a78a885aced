//! `untar`: unpacks a tarball from a files input into the tree.
//!
//! ```json
//! {"source": "input://tarball/sha256:<hex>"}
//! ```
//!
//! ```text
//!   SOURCE ──magic bytes──> gzip/xz/zstd -dc ──> tar crate: every member judged
//!      │                                         (nothing written yet)
//!      └── all members fine ──> GNU tar --extract --directory=TREE ...
//! ```
//!
//! GNU tar unpacks, so owners, modes, xattrs, ACLs, device nodes and links
//! come out the way `tar` packed them. But GNU tar only warns about and
//! skips a `..` member, where strata wants the whole stage refused, so every
//! member is read first and the archive is refused before anything is
//! written if one of them would land outside the tree: an absolute or `..`
//! path, a hard link to one, a relative symlink climbing above the root, or
//! a path whose existing parent in the tree is a symlink pointing out.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, anyhow, bail};
use rustix::fs::{FileType, Mode, OFlags};
use serde::Deserialize;
use serde_json::json;
use strata_stage::archive::Compression;
use strata_stage::{Args, Error, Failure, Root, locate, program, run_tool, write_meta};
use tar::EntryType;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    source: String,
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let source = locate(args, &options.source)?;
    match source.lstat()? {
        None => bail!("options.source: {} does not exist", source.shown()),
        Some(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => {
            bail!("options.source: {} is not a regular file", source.shown())
        }
        Some(_) => {}
    }
    let fd = rustix::fs::openat(
        source.dir(),
        source.name(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Io {
        what: "cannot open",
        path: source.shown().into(),
        source: e.into(),
    })?;
    let mut file = File::from(fd);
    let mut head = Vec::with_capacity(6);
    (&mut file)
        .take(6)
        .read_to_end(&mut head)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .with_context(|| format!("cannot read {}", source.shown()))?;
    let compression = Compression::detect(&head);

    let tree = Root::tree(args)?;
    let members = inspect(file, compression, &tree)
        .with_context(|| format!("cannot unpack {}", source.shown()))?;

    let mut tar = Command::new("tar");
    let mut file_arg = std::ffi::OsString::from("--file=");
    file_arg.push(source.real_path()?);
    let mut dir_arg = std::ffi::OsString::from("--directory=");
    dir_arg.push(tree.path());
    tar.arg("--extract")
        .arg(file_arg)
        .arg(dir_arg)
        .args([
            "--numeric-owner",
            "--preserve-permissions",
            "--same-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
        ])
        .args(compression.tar_flag())
        .env("LC_ALL", "C");
    run_tool(&mut tar).with_context(|| format!("cannot unpack {}", source.shown()))?;

    println!(
        "unpacked {} ({}, {members} members) into the tree",
        source.shown(),
        compression.name()
    );
    write_meta(
        args,
        &json!({"members": members, "compression": compression.name()}),
    )?;
    Ok(())
}

/// Why reading the members stopped.
enum Stop {
    /// A member would land outside the tree.
    Refused(anyhow::Error),
    /// The archive could not be read: corrupt, or cut short.
    Unreadable(std::io::Error),
}

/// Reads every member of the archive in `file` and judges it; the number of
/// members, or the first one that would land outside the tree.
fn inspect(file: File, compression: Compression, tree: &Root) -> anyhow::Result<u64> {
    let Some(mut cmd) = compression.decompressor() else {
        return judge_all(file, tree).map_err(Stop::into_error);
    };
    let name = program(&cmd);
    let mut child = cmd
        .stdin(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::spawn(&name, e))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Drained alongside: a decompressor with a full stderr pipe would stall.
    let said = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let judged = judge_all(&mut stdout, tree).and_then(|n| {
        // The end-of-archive blocks and any padding: closing the pipe early
        // would kill the decompressor with SIGPIPE and fail a good archive.
        std::io::copy(&mut stdout, &mut std::io::sink()).map_err(Stop::Unreadable)?;
        Ok(n)
    });
    // Closing our end stops a decompressor we no longer listen to (SIGPIPE).
    drop(stdout);
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {name}"))?;
    let stderr = said.join().expect("the reading thread does not panic");
    match judged {
        Ok(n) => {
            Failure::check(&name, status, &stderr)?;
            Ok(n)
        }
        Err(Stop::Refused(e)) => Err(e),
        // A corrupt stream shows first as a tar parse error; the
        // decompressor's own message says more.
        Err(stop) => {
            Failure::check(&name, status, &stderr)?;
            Err(stop.into_error())
        }
    }
}

impl Stop {
    fn into_error(self) -> anyhow::Error {
        match self {
            Self::Refused(e) => e,
            Self::Unreadable(e) => anyhow::Error::new(e).context("cannot read the archive"),
        }
    }
}

fn judge_all(reader: impl Read, tree: &Root) -> Result<u64, Stop> {
    let mut archive = tar::Archive::new(reader);
    let mut members = 0;
    for entry in archive.entries().map_err(Stop::Unreadable)? {
        let entry = entry.map_err(Stop::Unreadable)?;
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() || ty.is_pax_local_extensions() {
            continue;
        }
        let path = entry.path_bytes();
        let link = entry.link_name_bytes();
        judge(ty, &path, link.as_deref()).map_err(|why| Stop::Refused(anyhow!(why)))?;
        judge_in_tree(tree, &path).map_err(Stop::Refused)?;
        members += 1;
    }
    Ok(members)
}

/// Whether one member stays in the tree, judged by its names alone; the
/// refusal names the member.
fn judge(ty: EntryType, path: &[u8], link: Option<&[u8]>) -> Result<(), String> {
    let shown = String::from_utf8_lossy(path);
    if path.starts_with(b"/") {
        return Err(format!("member {shown} has an absolute path"));
    }
    if components(path).any(|c| c == b"..") {
        return Err(format!("member {shown} has a \"..\" component"));
    }
    let Some(target) = link else {
        return Ok(());
    };
    let target_shown = String::from_utf8_lossy(target);
    if ty.is_hard_link() {
        // A hard link's target is another member, named from the archive's
        // root; GNU tar would link to it outside the tree.
        if target.starts_with(b"/") || components(target).any(|c| c == b"..") {
            return Err(format!(
                "member {shown} is a hard link to {target_shown}, outside the archive"
            ));
        }
    } else if ty.is_symlink() && !target.starts_with(b"/") && climbs(path, target) {
        // Absolute targets are fine: in a system tree they mean the tree's
        // own root (/etc/resolv.conf -> /run/...).
        return Err(format!(
            "member {shown} is a symlink to {target_shown}, which climbs above the tree"
        ));
    }
    Ok(())
}

/// The non-empty, non-`.` components of a member name.
fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Whether `target`, read from the directory holding the link at `path`,
/// goes above the root at some point.
fn climbs(path: &[u8], target: &[u8]) -> bool {
    let mut depth = components(path).count().saturating_sub(1);
    for c in components(target) {
        if c == b".." {
            let Some(up) = depth.checked_sub(1) else {
                return true;
            };
            depth = up;
        } else {
            depth += 1;
        }
    }
    false
}

/// Refuses a member whose parent already exists in the tree through a
/// symlink pointing out of it: GNU tar would follow that link and write
/// into the build root. (Links the archive itself makes are left by GNU
/// tar as placeholders until the end, so they cannot be followed.)
fn judge_in_tree(tree: &Root, path: &[u8]) -> anyhow::Result<()> {
    let path = String::from_utf8_lossy(path);
    match tree.entry(&path) {
        Ok(_) | Err(Error::NoParent { .. } | Error::NotDirectory { .. }) => Ok(()),
        Err(Error::Escapes { .. }) => bail!(
            "member {path} would be unpacked through a symlink in the tree that points out of it"
        ),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(ty: EntryType, path: &str, link: Option<&str>) -> Result<(), String> {
        judge(ty, path.as_bytes(), link.map(str::as_bytes))
    }

    #[test]
    fn plain_members_pass() {
        for path in ["etc/hostname", "./etc/", ".", "./", "a/./b"] {
            assert_eq!(judged(EntryType::Regular, path, None), Ok(()), "{path}");
        }
        assert_eq!(judged(EntryType::Link, "bin/b", Some("./bin/a")), Ok(()));
    }

    #[test]
    fn paths_leaving_the_tree_are_refused() {
        assert_eq!(
            judged(EntryType::Regular, "/etc/passwd", None),
            Err("member /etc/passwd has an absolute path".into())
        );
        for path in ["../x", "a/../../x", "a/..", "./.."] {
            let e = judged(EntryType::Directory, path, None).unwrap_err();
            assert_eq!(e, format!("member {path} has a \"..\" component"));
        }
        // A name merely starting with dots is a name.
        assert_eq!(judged(EntryType::Regular, "..x/...", None), Ok(()));
    }

    #[test]
    fn hard_links_outside_are_refused() {
        for target in ["/etc/shadow", "../x", "a/../../x"] {
            let e = judged(EntryType::Link, "x", Some(target)).unwrap_err();
            assert_eq!(
                e,
                format!("member x is a hard link to {target}, outside the archive")
            );
        }
    }

    #[test]
    fn symlinks_climbing_out_are_refused_absolute_ones_are_not() {
        let ok = [
            ("etc/resolv.conf", "/run/systemd/resolve/stub-resolv.conf"),
            ("bin", "usr/bin"),
            ("usr/lib/x/y", "../../../etc/z"),
            ("./a/b", "../c"),
            ("a/b", "c/../../d"),
        ];
        for (path, target) in ok {
            assert_eq!(
                judged(EntryType::Symlink, path, Some(target)),
                Ok(()),
                "{path} -> {target}"
            );
        }
        let bad = [
            ("x", ".."),
            ("a/b", "../../x"),
            ("./a/b", "./../../x"),
            ("usr/lib/x/y", "../../../../etc"),
            ("a/b", "c/../../../d"),
        ];
        for (path, target) in bad {
            let e = judged(EntryType::Symlink, path, Some(target)).unwrap_err();
            assert_eq!(
                e,
                format!("member {path} is a symlink to {target}, which climbs above the tree")
            );
        }
    }

    #[test]
    fn a_parent_symlink_in_the_tree_pointing_out_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("/run", dir.path().join("varrun")).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.path().join("bin")).unwrap();
        let tree = Root::open(dir.path(), "the tree", "/").unwrap();
        judge_in_tree(&tree, b"./bin/ls").unwrap();
        judge_in_tree(&tree, b"new/dir/file").unwrap();
        judge_in_tree(&tree, b"varrun").unwrap();
        let e = judge_in_tree(&tree, b"varrun/x").unwrap_err().to_string();
        assert_eq!(
            e,
            "member varrun/x would be unpacked through a symlink in the tree that points out of it"
        );
    }
}
