//! `tar`: packs the input named `tree` into one archive at the root of this
//! stage's tree, the same bytes for the same tree and source-epoch.
//!
//! ```json
//! {"filename": "system.tar.zst", "compression": "zstd"}
//! ```
//!
//! ```text
//!   tar --create ... INPUT ──pipe──> zstd/xz/gzip ──> TREE/.FILENAME.strata-tmp
//!                                                      │ sha256, size, chmod 0644
//!                                                      └─rename─> TREE/FILENAME
//! ```
//!
//! GNU tar from the build root does the packing: it alone knows every
//! corner (ACLs, xattrs, device nodes, sparse files) the way the tools that
//! unpack the archive will expect.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, anyhow, bail};
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use strata_stage::{Args, Error, Failure, Root, program, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    filename: String,
    #[serde(default)]
    compression: Compression,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Compression {
    #[default]
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
        }
    }

    /// The compressor, stdin to stdout. Each setting is fixed so the output
    /// depends only on the input: gzip -n leaves out name and time, and one
    /// thread keeps xz and zstd from splitting blocks by the machine's cores.
    fn command(self) -> Option<Command> {
        let argv: &[&str] = match self {
            Self::None => return None,
            Self::Gzip => &["gzip", "-n", "-6", "-c"],
            Self::Xz => &["xz", "-T1", "-6", "-c"],
            Self::Zstd => &["zstd", "-q", "-T1", "-3", "-c"],
        };
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        Some(cmd)
    }
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let name = &options.filename;
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !plain || name.is_empty() || name == "." || name == ".." {
        bail!("options.filename: {name:?} is not a plain file name ([A-Za-z0-9._+-]+)");
    }
    let input = args.input("tree").ok_or_else(|| {
        anyhow!("the tar stage packs its input named tree, and it was given none")
    })?;

    let tree = Root::tree(args)?;
    let staging = tree.entry(&format!("/.{name}.strata-tmp"))?;
    let io = |what: &'static str| {
        let path = format!("/{name}");
        move |e: rustix::io::Errno| Error::Io {
            what,
            path,
            source: e.into(),
        }
    };
    let fd = rustix::fs::openat(
        staging.dir(),
        staging.name(),
        OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(io("cannot create the archive"))?;
    let mut out = File::from(fd);

    let packed = pack(
        &input.path,
        args.meta.source_epoch,
        options.compression,
        &out,
    )
    .and_then(|()| digest(&mut out).context("cannot read back the archive"));
    let (size, sha256) = match packed {
        Ok(done) => done,
        Err(e) => {
            // Leave no half archive behind; the error that matters is `e`.
            let _ = rustix::fs::unlinkat(staging.dir(), staging.name(), AtFlags::empty());
            return Err(e);
        }
    };
    rustix::fs::fchmod(&out, Mode::from_raw_mode(0o644)).map_err(io("cannot set the mode of"))?;
    rustix::fs::renameat(staging.dir(), staging.name(), staging.dir(), name.as_str())
        .map_err(io("cannot move the finished archive to"))?;

    println!(
        "packed input tree into /{name} ({}, {size} bytes, {sha256})",
        options.compression.name()
    );
    write_meta(
        args,
        &json!({
            "filename": name,
            "compression": options.compression.name(),
            "size": size,
            "sha256": sha256,
        }),
    )?;
    Ok(())
}

/// Runs tar over `input`, through the compressor if any, into `out`.
fn pack(
    input: &Path,
    epoch: Option<u64>,
    compression: Compression,
    out: &File,
) -> anyhow::Result<()> {
    let mut tar = tar_command(input, epoch);
    let tar_name = program(&tar);
    let keep = || {
        out.try_clone()
            .context("cannot duplicate the archive's descriptor")
    };
    tar.stdin(Stdio::null()).stderr(Stdio::piped());

    let Some(mut compressor) = compression.command() else {
        let done = tar
            .stdout(keep()?)
            .output()
            .map_err(|e| Failure::spawn(&tar_name, e))?;
        return Ok(Failure::check(&tar_name, done.status, &done.stderr)?);
    };

    let comp_name = program(&compressor);
    let mut tar = tar
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::spawn(&tar_name, e))?;
    let pipe = tar.stdout.take().expect("stdout is piped");
    let spawned = compressor
        .stdin(pipe)
        .stdout(keep()?)
        .stderr(Stdio::piped())
        .spawn();
    // The Command keeps our copy of the pipe's read end until dropped; tar
    // must see the compressor's end alone, or it would block forever on a
    // compressor that died instead of failing with SIGPIPE.
    drop(compressor);
    let compressor = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = tar.kill();
            let _ = tar.wait();
            return Err(Failure::spawn(&comp_name, e).into());
        }
    };

    // Both stderr pipes drain at once: either tool would stall on a full one.
    let (tar_done, comp_done) = std::thread::scope(|s| {
        let tar_done = s.spawn(|| tar.wait_with_output());
        let comp_done = compressor.wait_with_output();
        (
            tar_done.join().expect("the waiting thread does not panic"),
            comp_done,
        )
    });
    let tar_done = tar_done.with_context(|| format!("cannot wait for {tar_name}"))?;
    let comp_done = comp_done.with_context(|| format!("cannot wait for {comp_name}"))?;
    // A dead compressor kills tar with SIGPIPE; its own error is the cause.
    Failure::check(&comp_name, comp_done.status, &comp_done.stderr)?;
    Failure::check(&tar_name, tar_done.status, &tar_done.stderr)?;
    Ok(())
}

/// GNU tar, set so that only the tree decides the bytes: names sorted,
/// numeric owners, pax headers without atime, ctime or the process id, and
/// times clamped to the source-epoch when the pipeline has one.
fn tar_command(input: &Path, epoch: Option<u64>) -> Command {
    let mut directory = OsString::from("--directory=");
    directory.push(input);
    let mut tar = Command::new("tar");
    tar.args(["--create", "--file=-"]).arg(directory).args([
        "--sort=name",
        "--numeric-owner",
        "--format=pax",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
    ]);
    if let Some(epoch) = epoch {
        tar.arg(format!("--mtime=@{epoch}")).arg("--clamp-mtime");
    }
    tar.arg(".");
    // Same messages everywhere, and name sorting that no locale can reorder.
    tar.env("LC_ALL", "C");
    tar
}

/// The archive's size and `sha256:<hex>`, read back from its start.
fn digest(out: &mut File) -> anyhow::Result<(u64, String)> {
    out.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((size, format!("sha256:{hex}")))
}
