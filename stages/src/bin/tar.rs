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

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use strata_stage::archive::{Compression, pack, tar_command};
use strata_stage::{Args, Root, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    filename: String,
    #[serde(default)]
    compression: Compression,
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
    let mut staged = tree.stage_file(name)?;
    let mut tar = tar_command(&input.path, args.meta.source_epoch);
    tar.arg(".");
    let packed = pack(tar, options.compression, &staged.file)
        .map_err(anyhow::Error::from)
        .and_then(|()| digest(&mut staged.file).context("cannot read back the archive"));
    let (size, sha256) = match packed {
        Ok(done) => done,
        Err(e) => {
            // Leave no half archive behind; the error that matters is `e`.
            staged.discard();
            return Err(e);
        }
    };
    staged.publish()?;

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
