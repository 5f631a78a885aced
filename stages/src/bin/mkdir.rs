//! `mkdir`: creates directories in the tree with exact modes.
//!
//! ```json
//! {"paths": [{"path": "/srv/data", "mode": 493, "parents": false, "exist_ok": false}]}
//! ```

use std::process::ExitCode;

use anyhow::{Context, bail};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use serde::Deserialize;
use strata_stage::{Args, Error, Root};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    paths: Vec<Dir>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dir {
    path: String,
    #[serde(default = "default_mode")]
    mode: u32,
    #[serde(default)]
    parents: bool,
    #[serde(default)]
    exist_ok: bool,
}

fn default_mode() -> u32 {
    0o755
}

/// Missing parents get this mode, whatever the umask, so trees are the same
/// wherever they are built.
const PARENT_MODE: u32 = 0o755;

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let tree = Root::tree(args)?;
    for dir in &options.paths {
        if dir.mode > 0o7777 {
            bail!("mode {:#o} of {} is not a file mode", dir.mode, dir.path);
        }
        if dir.parents {
            make_parents(&tree, &dir.path)
                .with_context(|| format!("cannot make the parents of {}", dir.path))?;
        }
        if !make(&tree, &dir.path, dir.mode)? && !dir.exist_ok {
            bail!("{} already exists (set exist_ok to accept that)", dir.path);
        }
    }
    Ok(())
}

/// Creates `path` with exactly `mode`; false if something is there already,
/// which passes only if it is (or links, inside the tree, to) a directory.
fn make(tree: &Root, path: &str, mode: u32) -> anyhow::Result<bool> {
    let entry = tree.entry(path)?;
    match rustix::fs::mkdirat(entry.dir(), entry.name(), Mode::from_raw_mode(mode)) {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            tree.open_dir(path)?;
            return Ok(false);
        }
        Err(e) => {
            return Err(Error::Io {
                what: "cannot create directory",
                path: entry.shown().into(),
                source: e.into(),
            }
            .into());
        }
    }
    // mkdir masks the mode with the umask and drops set-id bits; chmod does not.
    rustix::fs::openat(
        entry.dir(),
        entry.name(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(|fd| rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)))
    .map_err(|e| Error::Io {
        what: "cannot set the mode of",
        path: entry.shown().into(),
        source: e.into(),
    })?;
    Ok(true)
}

/// `mkdir -p` for everything above `path`. Each prefix is resolved afresh
/// from the tree, so a link made by a package (`/lib -> usr/lib`) is
/// followed like any parent, and one pointing out is refused.
fn make_parents(tree: &Root, path: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for end in 1..parts.len() {
        let prefix = format!("/{}", parts[..end].join("/"));
        if parts[end - 1] == ".." {
            continue;
        }
        make(tree, &prefix, PARENT_MODE)?;
    }
    Ok(())
}
