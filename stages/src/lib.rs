//! What every built-in stage shares: its arguments, its exit, its metadata,
//! paths that cannot leave the tree, and the toolkit:
//!
//! ```text
//! args      the arguments document (strata_protocol's types), typed options
//! beneath   paths resolved beneath a tree, and files written there (Root::write_file)
//! tool      the one place programs are started: run, status, capture, Log
//! disk      image layouts (the partition stage's FILENAME.json), derived uuids, sizes
//! debian    apt sources, deb822 and clearsigned control files, dpkg-deb fields, changelogs
//! apt       packages installed from inside a tree, services held back, no caches left
//! archive   reproducible tarballs; the one compression enum
//! unpack    a tarball unpacked beneath a tree by one parser (the tar crate)
//! ```
//!
//! A stage is one program; the engine starts it in a sandbox laid out as
//! the protocol crate draws it (`strata_protocol`):
//!
//! ```text
//! /run/strata/args.json        what this module's [`Args`] reads (or $STRATA_ARGS)
//! /run/strata/tree/            the tree being built, read-write
//! /run/strata/inputs/NAME/     each input, read-only
//! /run/strata/meta.json        what [`write_meta`] writes, if the stage reports anything
//! ```
//!
//! and reads its outcome from the exit code: 0 is success; otherwise the
//! last stderr line, `error: ...`, says what went wrong. [`main`] keeps that
//! promise for every stage.

mod args;
mod beneath;
mod tool;

pub mod apt;
pub mod archive;
pub mod debian;
pub mod disk;
pub mod unpack;

use std::path::PathBuf;
use std::process::ExitCode;

pub use args::{ARGS_ENV, ARGS_PATH, Args, Input, Meta, Paths};
pub use beneath::{Entry, Root, StagedFile, locate};
pub use tool::{
    Failure, Log, capture, capture_logged, feed, feed_stderr, program, run as run_tool, status,
};

/// What can go wrong in the shared parts of a stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the stage arguments {path}: {source}")]
    ReadArgs {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the stage arguments {path} are not valid at {pointer}: {source}")]
    ParseArgs {
        path: PathBuf,
        pointer: String,
        source: serde_json::Error,
    },

    #[error("invalid option at {pointer}: {source}")]
    Options {
        pointer: String,
        source: serde_json::Error,
    },

    #[error("path {path} escapes {root} through a symlink or \"..\"")]
    Escapes { path: String, root: String },

    #[error("the parent directory {parent} of {path} does not exist")]
    NoParent { parent: String, path: String },

    #[error("{path} exists and is {what}; only a regular file is replaced")]
    NotRegular { path: String, what: &'static str },

    #[error("{path} does not exist")]
    NotFound { path: String },

    #[error("{path} is not a directory (or one of its components is not)")]
    NotDirectory { path: String },

    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },

    #[error("{url} names input {name}, but the stage has no such input (it has: {known})")]
    UnknownInput {
        url: String,
        name: String,
        known: String,
    },

    #[error("{url} is neither an input://NAME/path nor a tree:///path URL")]
    BadUrl { url: String },

    /// Writing an archive failed; [`archive::Sink::fail`] finds the cause.
    #[error("cannot write the archive: {0}")]
    Write(std::io::Error),

    #[error(transparent)]
    Tool(#[from] Failure),
}

/// Runs a stage: loads its arguments, calls `run`, and turns an error into
/// the one `error: ...` line and exit code 1 the engine expects.
pub fn main(run: fn(&Args) -> anyhow::Result<()>) -> ExitCode {
    match Args::load()
        .map_err(anyhow::Error::from)
        .and_then(|a| run(&a))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The engine shows the last lines of the log; a message that
            // spans lines (a tool's stderr) would lose its head there.
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause said once: an error
/// whose message already quotes its source (`{path}: {source}`, which
/// thiserror also reports as `source()`) would otherwise repeat it, as
/// `{:#}` prints every link of the chain.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for link in e.chain() {
        let part = link.to_string();
        let part = part.trim();
        if part.is_empty() || text.contains(part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(part);
    }
    // The engine shows the last lines of the log; a message that spans
    // lines (a tool's stderr) would lose its head there.
    text.replace('\n', "; ")
}

/// Writes the stage's metadata to `paths.meta`, where the engine keeps it
/// with the stage's output.
pub fn write_meta(args: &Args, meta: &serde_json::Value) -> Result<(), Error> {
    let text = serde_json::to_vec_pretty(meta).expect("a JSON value serializes");
    std::fs::write(&args.paths.meta, text).map_err(|source| Error::Io {
        what: "cannot write the stage metadata",
        path: args.paths.meta.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod error_text_tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_cause_the_message_quotes_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let cause = io.to_string();
        let e = anyhow::Error::from(Error::Io {
            what: "cannot open",
            path: "/run/strata/tree/x".into(),
            source: io,
        })
        .context("options.files[0] (/x)");
        let text = error_text(&e);
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        assert_eq!(
            text,
            format!("options.files[0] (/x): cannot open /run/strata/tree/x: {cause}")
        );
    }

    #[test]
    fn causes_the_message_does_not_quote_are_kept_on_one_line() {
        let e = Err::<(), _>(anyhow::anyhow!("dpkg said\nsomething"))
            .context("cannot install hello")
            .unwrap_err();
        assert_eq!(error_text(&e), "cannot install hello: dpkg said; something");
    }
}
