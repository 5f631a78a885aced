//! `copy`: copies files and trees from inputs into the tree, keeping owners,
//! modes, times, xattrs, symlinks, hard links and special files.
//!
//! ```json
//! {"paths": [{"from": "input://root/etc/skel", "to": "tree:///etc/skel"}]}
//! ```
//!
//! `to` is the destination itself, not a folder to copy into; a directory
//! copied onto an existing directory is merged into it.

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use serde::Deserialize;
use strata_stage::{Args, locate, run_tool};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    paths: Vec<Copy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Copy {
    from: String,
    to: String,
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    for (i, copy) in options.paths.iter().enumerate() {
        if !copy.to.starts_with("tree://") {
            bail!("options.paths[{i}].to: {} is not a tree:/// URL", copy.to);
        }
        let from = locate(args, &copy.from)?;
        if from.lstat()?.is_none() {
            bail!("options.paths[{i}].from: {} does not exist", from.shown());
        }
        let to = locate(args, &copy.to)?;
        let (src, dst) = (from.real_path()?, to.real_path()?);
        println!("copy {} -> {}", from.shown(), to.shown());
        // --no-target-directory: DST is the copy, never a folder to put it
        //   in, and a directory onto an existing directory merges (as
        //   `cp -a SRC/. DST/` would).
        // --remove-destination: replace what is in the way rather than open
        //   it. Plain cp writes through a symlink found in the destination,
        //   at any depth, and one pointing out of the tree would take the
        //   write with it; cp already refuses a directory over a symlink.
        run_tool(
            Command::new("cp")
                .args([
                    "-a",
                    "--reflink=auto",
                    "--remove-destination",
                    "--no-target-directory",
                ])
                .arg(&src)
                .arg(&dst),
        )
        .with_context(|| format!("cannot copy {} to {}", from.shown(), to.shown()))?;
    }
    Ok(())
}
