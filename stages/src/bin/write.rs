//! `write`: writes files in the tree from text or base64 in the manifest.
//!
//! ```json
//! {"files": [{"path": "/etc/hostname", "content": "box\n", "mode": 420},
//!            {"path": "/etc/key", "base64": "AAEC"}]}
//! ```

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;
use rustix::fs::{FileType, Mode, OFlags};
use serde::Deserialize;
use strata_stage::{Args, Error, Root};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    files: Vec<File>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    path: String,
    content: Option<String>,
    base64: Option<String>,
    #[serde(default = "default_mode")]
    mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let tree = Root::tree(args)?;
    for (i, file) in options.files.iter().enumerate() {
        let bytes = match (&file.content, &file.base64) {
            (Some(text), None) => text.clone().into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .with_context(|| {
                    format!("options.files[{i}].base64 of {} is not base64", file.path)
                })?,
            _ => bail!(
                "options.files[{i}] ({}) needs exactly one of content and base64",
                file.path
            ),
        };
        if file.mode > 0o7777 {
            bail!("mode {:#o} of {} is not a file mode", file.mode, file.path);
        }
        write(&tree, &file.path, &bytes, file.mode)?;
    }
    Ok(())
}

/// Replaces the contents of the regular file at `path` (creating it), then
/// sets `mode` exactly. Writing in place keeps an existing file's owner and
/// hard links.
fn write(tree: &Root, path: &str, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let entry = tree.entry(path)?;
    let io = |what: &'static str| {
        let path = entry.shown().to_owned();
        move |e: rustix::io::Errno| Error::Io {
            what,
            path,
            source: e.into(),
        }
    };
    // Only a regular file may be replaced: writing to a device node in the
    // tree would write to the device, and a symlink may point anywhere.
    if let Some(st) = entry.lstat()? {
        let ty = FileType::from_raw_mode(st.st_mode);
        if ty != FileType::RegularFile {
            bail!(
                "{} exists and is {}; write only replaces regular files",
                entry.shown(),
                describe(ty)
            );
        }
    }
    let fd = rustix::fs::openat(
        entry.dir(),
        entry.name(),
        // NOFOLLOW and NONBLOCK: if a symlink or FIFO appeared since the
        // check, fail rather than follow or hang.
        OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::TRUNC
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode & 0o777),
    )
    .map_err(io("cannot open for writing"))?;
    let mut out = std::fs::File::from(fd);
    out.write_all(bytes).map_err(|source| Error::Io {
        what: "cannot write",
        path: entry.shown().into(),
        source,
    })?;
    // After the write, which may clear set-id bits, and for an existing
    // file, whose old mode open() leaves alone.
    rustix::fs::fchmod(&out, Mode::from_raw_mode(mode)).map_err(io("cannot set the mode of"))?;
    Ok(())
}

fn describe(ty: FileType) -> &'static str {
    match ty {
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink (which write does not follow)",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "not a regular file",
    }
}
