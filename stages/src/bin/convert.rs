//! `convert`: a disk image from the input named `tree` converted with the
//! build root's `qemu-img convert` into this stage's tree.
//!
//! ```json
//! {"source": "disk.raw", "filename": "disk.qcow2", "format": "qcow2", "compression": false}
//! ```
//!
//! ```text
//!   INPUT/disk.raw ─qemu-img convert -f raw -O qcow2 [-c]─> TREE/.disk.qcow2.strata-tmp ─rename─> TREE/disk.qcow2
//! ```

use std::process::{Command, ExitCode};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::json;
use strata_stage::{Args, Root, run_tool, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default = "default_source")]
    source: String,
    filename: String,
    #[serde(default = "default_format")]
    format: String,
    #[serde(default)]
    compression: bool,
}

fn default_source() -> String {
    "disk.raw".into()
}

fn default_format() -> String {
    "qcow2".into()
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn plain(key: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !ok {
        bail!("{key}: {name:?} is not a plain file name ([A-Za-z0-9._+-]+, no leading dot)");
    }
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    plain("options.source", &options.source)?;
    plain("options.filename", &options.filename)?;
    if !["qcow2", "raw", "vmdk", "vdi", "vpc"].contains(&options.format.as_str()) {
        bail!(
            "options.format: {:?} is not qcow2, raw, vmdk, vdi or vpc",
            options.format
        );
    }
    if options.compression && options.format != "qcow2" {
        bail!("options.compression: only qcow2 images are compressed here");
    }
    let input = args.input("tree").ok_or_else(|| {
        anyhow!("the convert stage reads its input named tree, and it was given none")
    })?;
    let from = Root::open(&input.path, "input tree", "input://tree/")?;
    let entry = from.entry(&options.source)?;
    match entry.lstat()? {
        Some(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::RegularFile => {}
        Some(_) => bail!(
            "options.source: input://tree/{} is not a regular file",
            options.source
        ),
        None => bail!(
            "options.source: input://tree/{} does not exist",
            options.source
        ),
    }

    let tree = Root::tree(args)?;
    let staged = tree.stage_file(&options.filename)?;
    let tmp = args.tree.join(format!(".{}.strata-tmp", options.filename));
    let mut cmd = Command::new("qemu-img");
    // -f raw: a raw image is never probed (a probed one could claim to be
    // a qcow2 with a backing file on the build root).
    cmd.args(["convert", "-f", "raw", "-O", &options.format]);
    if options.compression {
        cmd.arg("-c");
    }
    cmd.arg(input.path.join(&options.source)).arg(&tmp);
    if let Err(e) = run_tool(&mut cmd).context("qemu-img convert failed") {
        staged.discard();
        return Err(e);
    }
    let size = std::fs::metadata(&tmp)?.len();
    staged.publish()?;
    println!(
        "converted {} to /{} ({}, {size} bytes)",
        options.source, options.filename, options.format
    );
    write_meta(
        args,
        &json!({
            "filename": options.filename,
            "format": options.format,
            "compression": options.compression,
            "size": size,
        }),
    )?;
    Ok(())
}
