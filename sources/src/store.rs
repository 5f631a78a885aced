//! The fetched source items on disk.
//!
//! ```text
//! <sources_dir>/
//!   inline/sha256:<hex>     one read-only file per item, named by checksum
//!   curl/sha256:<hex>
//! <tmp_dir>/
//!   source-XXXXXX           a download in progress (same filesystem)
//! ```
//!
//! A file under `sources_dir` is always complete and verified: data is
//! written and checked in `tmp_dir`, flushed to disk, then renamed into
//! place without replacing anything (and the folder flushed), so a crash —
//! of strata or of the machine — or a concurrent fetch of the same item can
//! never expose a partial file.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::curl::{self, CurlFailure, Limits};
use crate::{Checksum, Item, Secret, Secrets, SourceError, SourceType, sha256_file};

/// Where fetched source items live.
#[derive(Debug, Clone)]
pub struct SourceStore {
    sources_dir: PathBuf,
    tmp_dir: PathBuf,
    limits: Limits,
    secrets: Secrets,
}

/// The outcome of [`SourceStore::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The item's file in the store.
    pub path: PathBuf,
    /// True when the item was already in the store and nothing was fetched.
    pub cached: bool,
    /// The item's size in bytes.
    pub bytes: u64,
}

impl SourceStore {
    /// A store rooted at `sources_dir` that stages downloads in `tmp_dir`,
    /// which must be on the same filesystem. Touches nothing on disk.
    pub fn new(sources_dir: &Path, tmp_dir: &Path) -> Self {
        Self {
            sources_dir: sources_dir.to_path_buf(),
            tmp_dir: tmp_dir.to_path_buf(),
            limits: Limits::default(),
            secrets: Secrets::default(),
        }
    }

    /// Bounds downloads by `limits` (an item's own `size` still comes first).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The secrets curl items may name.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Where the item lives once fetched: `sources_dir/<type>/<checksum>`.
    pub fn path(&self, ty: SourceType, checksum: &Checksum) -> PathBuf {
        self.sources_dir.join(ty.as_str()).join(checksum.as_str())
    }

    /// Whether the item is in the store. Its content is trusted: only
    /// verified data is ever renamed into place.
    pub fn contains(&self, ty: SourceType, checksum: &Checksum) -> bool {
        std::fs::symlink_metadata(self.path(ty, checksum)).is_ok_and(|m| m.is_file())
    }

    /// Puts the item in the store unless it is there already, verifying its
    /// checksum. On failure nothing is left under `sources_dir` or `tmp_dir`.
    pub fn fetch(
        &self,
        ty: SourceType,
        checksum: &Checksum,
        item: &Item,
    ) -> Result<Fetched, SourceError> {
        let io_err = |error: io::Error| SourceError::Io {
            ty,
            checksum: checksum.clone(),
            error,
        };
        let dest = self.path(ty, checksum);
        if let Ok(meta) = std::fs::symlink_metadata(&dest)
            && meta.is_file()
        {
            return Ok(Fetched {
                path: dest,
                cached: true,
                bytes: meta.len(),
            });
        }

        fs::create_dir_all(&self.tmp_dir).map_err(io_err)?;
        // Dropping `tmp` on any early return removes the partial file.
        let tmp = tempfile::Builder::new()
            .prefix(&format!("source-{}-", std::process::id()))
            .tempfile_in(&self.tmp_dir)
            .map_err(io_err)?;
        let actual = match (ty, item) {
            (SourceType::Inline, Item::Inline { data }) => {
                fs::write(tmp.path(), data).map_err(io_err)?;
                Checksum::of_bytes(data)
            }
            (
                SourceType::Curl,
                Item::Curl {
                    url,
                    inline_user,
                    secret,
                    size,
                },
            ) => {
                let user =
                    match secret {
                        Some(name) => Some(self.secrets.get(name).ok_or_else(|| {
                            SourceError::MissingSecret {
                                checksum: checksum.clone(),
                                name: name.clone(),
                            }
                        })?),
                        None => inline_user.as_ref(),
                    };
                let limits = Limits {
                    max_bytes: size.unwrap_or(self.limits.max_bytes),
                    ..self.limits
                };
                let mut file = tmp.reopen().map_err(io_err)?;
                curl::download(
                    url,
                    user.map(Secret::expose),
                    &mut file,
                    &limits,
                    checksum.as_str(),
                )
                .map_err(|f| {
                    let download = |message| SourceError::Download {
                        checksum: checksum.clone(),
                        url: url.clone(),
                        message,
                    };
                    match f {
                        CurlFailure::Spawn(error) => SourceError::CurlSpawn {
                            checksum: checksum.clone(),
                            error,
                        },
                        CurlFailure::Failed(message) => download(message),
                        CurlFailure::Io(e) => io_err(e),
                        CurlFailure::TooLarge(cap) => download(format!(
                            "it is larger than {cap} bytes, {}",
                            if size.is_some() {
                                "the item's size"
                            } else {
                                "the default cap (give the item a \"size\")"
                            }
                        )),
                    }
                })?;
                sha256_file(tmp.path()).map_err(io_err)?
            }
            _ => {
                return Err(SourceError::InvalidItem {
                    ty,
                    checksum: checksum.clone(),
                    reason: format!("item {item:?} is not of type {ty}"),
                });
            }
        };
        if actual != *checksum {
            return Err(SourceError::Mismatch {
                ty,
                checksum: checksum.clone(),
                actual,
            });
        }
        let bytes = fs::metadata(tmp.path()).map_err(io_err)?.len();
        // Read-only: items are shared by hard link with every stage input
        // that uses them, and content-addressed files must never change.
        fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o444)).map_err(io_err)?;
        // On disk before its name is: one item, one fsync (whoever wrote
        // it, curl included, the data is this inode's).
        tmp.as_file().sync_all().map_err(|e| {
            io_err(io::Error::new(
                e.kind(),
                format!("syncing {}: {e}", tmp.path().display()),
            ))
        })?;
        let type_dir = self.sources_dir.join(ty.as_str());
        let new_dir = !type_dir.is_dir();
        fs::create_dir_all(&type_dir).map_err(io_err)?;
        if new_dir {
            sync_dir(&self.sources_dir).map_err(io_err)?;
        }
        match tmp.persist_noclobber(&dest) {
            Ok(_) => sync_dir(&type_dir).map_err(io_err)?,
            // Another fetch of the same item finished first; its file has the
            // same verified content, and dropping `e.file` removes ours.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io_err(io::Error::new(
                    e.error.kind(),
                    format!(
                        "failed to move {} to {}: {}",
                        e.file.path().display(),
                        dest.display(),
                        e.error
                    ),
                )));
            }
        }
        Ok(Fetched {
            path: dest,
            cached: false,
            bytes,
        })
    }
}

/// Flushes the names in `dir` (a rename into it, say) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?
        .sync_all()
        .map_err(|e| io::Error::new(e.kind(), format!("syncing {}: {e}", dir.display())))
}
