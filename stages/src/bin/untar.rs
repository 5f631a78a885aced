//! `untar`: unpacks a tarball from a files input into the tree.
//!
//! ```json
//! {"source": "input://tarball/sha256:<hex>", "max_size": 2147483648}
//! ```
//!
//! ```text
//!   SOURCE ──magic bytes──> gzip/xz/zstd -dc ──> strata_stage::unpack: the tar crate reads
//!                                                each member; it is judged and written
//!                                                beneath the tree as it is read
//! ```
//!
//! One parser both judges and writes (see [`strata_stage::unpack`]): a
//! member lands beneath the tree or is refused, naming it — an absolute or
//! `..` name, a hard link to anything but an earlier member, a relative
//! symlink climbing above the root, a path through a symlink (in the tree or
//! made by an earlier member) that points out of it. Owners, modes (set-id
//! bits included), xattrs (capabilities, ACLs), times, hard links, symlinks,
//! device nodes and FIFOs come out as packed. The files may hold at most
//! `max_size` bytes, and never more than the tree's filesystem has free.
//! When a member is refused or fails, what the archive made is removed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::{ExitCode, Stdio};

use anyhow::{Context, bail};
use rustix::fs::{FileType, Mode, OFlags};
use serde::Deserialize;
use serde_json::json;
use strata_stage::archive::Compression;
use strata_stage::unpack::{UnpackError, Unpacked, unpack};
use strata_stage::{Args, Error, Failure, Root, locate, program, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    source: String,
    /// The most bytes the archive's files may hold in all.
    max_size: Option<u64>,
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
    let done = unpack_from(file, compression, &tree, options.max_size)
        .with_context(|| format!("cannot unpack {}", source.shown()))?;

    println!(
        "unpacked {} ({}, {} members, {} bytes of files) into the tree",
        source.shown(),
        compression.name(),
        done.members,
        done.bytes
    );
    write_meta(
        args,
        &json!({"members": done.members, "compression": compression.name()}),
    )?;
    Ok(())
}

/// Unpacks the archive in `file`, through its decompressor if any.
fn unpack_from(
    file: File,
    compression: Compression,
    tree: &Root,
    max_size: Option<u64>,
) -> anyhow::Result<Unpacked> {
    let Some(mut cmd) = compression.decompressor() else {
        return Ok(unpack(file, tree, max_size)?);
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
    let unpacked = unpack(&mut stdout, tree, max_size).and_then(|done| {
        // The end-of-archive blocks and any padding: closing the pipe early
        // would kill the decompressor with SIGPIPE and fail a good archive.
        std::io::copy(&mut stdout, &mut std::io::sink()).map_err(UnpackError::Unreadable)?;
        Ok(done)
    });
    // Closing our end stops a decompressor we no longer listen to (SIGPIPE).
    drop(stdout);
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {name}"))?;
    let stderr = said.join().expect("the reading thread does not panic");
    match unpacked {
        Ok(done) => {
            Failure::check(&name, status, &stderr)?;
            Ok(done)
        }
        // A corrupt stream shows first as a tar parse error; the
        // decompressor's own message says more.
        Err(e @ UnpackError::Unreadable(_)) => {
            Failure::check(&name, status, &stderr)?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}
