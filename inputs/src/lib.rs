//! Input preparers: turn a stage's inputs into host directories that the
//! engine bind-mounts read-only at `/run/strata/inputs/NAME`, plus the
//! `data` the stage sees in its arguments.
//!
//! ```text
//! tree  input:  host_path = the dependency's tree       data = {"id": "<the dependency pipeline's id>"}
//! files input:  host_path = dest/                       data = {"files": {"sha256:<hex>": {}, …}}
//!                 sha256:<hex>  ── hard link ──▶ store/sources/<type>/sha256:<hex>
//! ```

use std::io;
use std::path::{Path, PathBuf};

use fs_err as fs;
use serde_json::{Map, Value, json};
use strata_sources::Checksum;

/// An input ready to be mounted.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedInput {
    /// The input's name, its directory under `/run/strata/inputs`.
    pub name: String,
    /// The host directory to mount read-only.
    pub host_path: PathBuf,
    /// What the stage receives as `inputs.NAME.data`.
    pub data: Value,
}

/// An input could not be prepared.
///
/// Messages carry their cause in the text because the engine reports them
/// with `to_string()`; hence no `#[source]` (a `{:#}` print would repeat it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A file name is not a `sha256:<hex>` checksum; it would become a path.
    #[error(
        "input `{name}`: invalid file checksum {checksum:?}: expected `sha256:` followed by 64 lowercase hex digits"
    )]
    InvalidChecksum {
        /// The input's name.
        name: String,
        /// The checksum as given.
        checksum: String,
    },
    /// Creating the directory or placing a file failed; the message names the path.
    #[error("input `{name}`: {error}")]
    Io {
        /// The input's name.
        name: String,
        /// The I/O error (from `fs-err`, so it names the path).
        error: io::Error,
    },
}

/// A tree input: the engine mounts the dependency's tree as it is, and
/// tells the stage the dependency pipeline's id (its last stage's), which
/// already feeds the stage's own id. A pipeline without stages has none.
pub fn prepare_tree(name: &str, tree: &Path, pipeline_id: Option<&str>) -> PreparedInput {
    PreparedInput {
        name: name.to_owned(),
        host_path: tree.to_path_buf(),
        data: match pipeline_id {
            Some(id) => json!({ "id": id }),
            None => json!({}),
        },
    }
}

/// A files input: creates `dest` (which must not exist) holding each host
/// file under its checksum. On failure `dest` is removed again.
pub fn prepare_files(
    name: &str,
    dest: &Path,
    files: &[(String, PathBuf)],
) -> Result<PreparedInput, InputError> {
    let checksums = files
        .iter()
        .map(|(checksum, _)| {
            checksum
                .parse::<Checksum>()
                .map_err(|_| InputError::InvalidChecksum {
                    name: name.to_owned(),
                    checksum: checksum.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let io_err = |error| InputError::Io {
        name: name.to_owned(),
        error,
    };
    // `create_dir`, not `create_dir_all`: an existing `dest` could hold
    // files that the stage would then see as part of its input.
    fs::create_dir(dest).map_err(io_err)?;
    let mut listed = Map::new();
    for (checksum, (_, src)) in checksums.iter().zip(files) {
        // A file listed twice has one content and one name: place it once.
        if listed.contains_key(checksum.as_str()) {
            continue;
        }
        if let Err(error) = place(src, &dest.join(checksum.as_str()), |a, b| {
            fs::hard_link(a, b)
        }) {
            // Best effort: the directory is ours and half-filled; the error
            // that matters is the one being returned.
            let _ = fs::remove_dir_all(dest);
            return Err(io_err(error));
        }
        listed.insert(checksum.to_string(), json!({}));
    }
    Ok(PreparedInput {
        name: name.to_owned(),
        host_path: dest.to_path_buf(),
        data: json!({ "files": listed }),
    })
}

/// Puts `src` at `dst` with `link`, or by copying where the filesystem will
/// not link it. Linking is the common case (store and run directory share a
/// filesystem) and costs nothing for large packages; `link` is a parameter
/// so tests can make it fail.
fn place(src: &Path, dst: &Path, link: impl Fn(&Path, &Path) -> io::Result<()>) -> io::Result<()> {
    match link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if can_copy_instead(&e) => fs::copy(src, dst).map(drop),
        Err(e) => Err(e),
    }
}

/// Link failures that a copy gets around: another filesystem (EXDEV), links
/// forbidden (EPERM, e.g. `fs.protected_hardlinks` or a filesystem without
/// them), or the file's link count at its limit (EMLINK).
fn can_copy_instead(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::CrossesDevices
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::Unsupported
            | io::ErrorKind::TooManyLinks
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_copy_when_linking_fails() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"data").unwrap();
        for kind in [
            io::ErrorKind::CrossesDevices,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::TooManyLinks,
        ] {
            let dst = dir.path().join(format!("{kind:?}"));
            place(&src, &dst, |_, _| Err(io::Error::from(kind))).unwrap();
            assert_eq!(fs::read(&dst).unwrap(), b"data");
        }
    }

    #[test]
    fn other_link_errors_are_returned() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"data").unwrap();
        let dst = dir.path().join("dst");
        let err = place(&src, &dst, |_, _| Err(io::Error::other("disk on fire"))).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert!(!dst.exists());
    }
}
