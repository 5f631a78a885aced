//! The content-addressed object store.
//!
//! ```text
//! STORE/
//!   format                  "strata-store 1": refuses stores of other versions
//!   lock                    flock: shared while building (exclusive for GC, later)
//!   objects/<id>/tree/      a committed tree, keyed by the id of the stage that made it
//!   objects/<id>/meta/      info.json (pipeline, stage, type, created), meta.json
//!                           (what the stage reported), log (its output)
//!   sources/<type>/<sha256:…>  fetched source items, verified
//!   environments/<id>.json  systems tasks can run in (task::env), beside their objects
//!   tmp/                    work dirs; same filesystem as objects/ so rename is atomic
//!   failed/<id>-<pid>/      what `--keep-failed` kept of a failed stage: tree/,
//!                           inputs/NAME/, args.json, log; `strata store gc` removes it
//! ```
//!
//! A commit builds the whole object under `tmp/`, then renames it into
//! `objects/`; if the id is already there another writer won and ours is
//! dropped. Nothing partial is ever visible under `objects/`. Work dirs are
//! named after the process that owns them, so a later run can remove the
//! ones whose owner died.
//!
//! A pipeline that resumes from a stored stage gets a copy of that stage's
//! tree made with [`copy::copy_tree`] (reflinks where the filesystem can).

pub mod copy;

use crate::id::Id;
use fs_err as fs;
use serde_json::{Value, json};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use strata_sources::SourceStore;

/// The store format this strata reads and writes.
pub const FORMAT: &str = "strata-store 1";

/// Store errors; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The store was made by another strata format.
    #[error("store {path} has format `{found}`, this strata reads `{FORMAT}`")]
    Format {
        /// The store root.
        path: PathBuf,
        /// What its format file says.
        found: String,
    },
    /// The store lock could not be taken.
    #[error("cannot lock store {path}: {detail}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// An open store, holding its shared build lock for as long as it lives.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    _lock: std::fs::File,
}

impl Store {
    /// Opens (creating if needed) the store at `root` and takes the shared lock.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(root)?;
        let root = fs::canonicalize(root)?;
        let format = root.join("format");
        match fs::read_to_string(&format) {
            Ok(found) if found.trim() == FORMAT => {}
            Ok(found) => {
                return Err(StoreError::Format {
                    path: root,
                    found: found.trim().to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::read_dir(&root)?.next().is_some() {
                    return Err(StoreError::Format {
                        path: root,
                        found: "none (a folder that is not a strata store)".into(),
                    });
                }
                fs::write(&format, format!("{FORMAT}\n"))?;
            }
            Err(e) => return Err(e.into()),
        }
        for dir in ["objects", "sources", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let lock_path = root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Lock {
                path: lock_path.clone(),
                detail: e.to_string(),
            })?;
        rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockShared).map_err(|e| {
            StoreError::Lock {
                path: lock_path.clone(),
                detail: e.to_string(),
            }
        })?;
        let store = Store { root, _lock: lock };
        store.clean_stale_tmp();
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_dir(&self, id: &Id) -> PathBuf {
        self.root.join("objects").join(id.as_str())
    }

    /// Whether an object for `id` is stored.
    pub fn has(&self, id: &Id) -> bool {
        self.object_dir(id).is_dir()
    }

    /// The stored tree of `id`.
    pub fn tree(&self, id: &Id) -> PathBuf {
        self.object_dir(id).join("tree")
    }

    /// The stage metadata stored with `id` (`null` when none).
    pub fn meta(&self, id: &Id) -> Value {
        fs::read_to_string(self.object_dir(id).join("meta/meta.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// The log kept with the object whose id is `id` or starts with it.
    pub fn log(&self, id: &str) -> Result<String, String> {
        let mut found: Vec<String> = std::fs::read_dir(self.root.join("objects"))
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !id.is_empty() && name.starts_with(id))
            .collect();
        found.sort();
        match found.as_slice() {
            [one] => fs::read_to_string(self.root.join("objects").join(one).join("meta/log"))
                .map_err(|e| e.to_string()),
            [] => Err(format!("no stored object {id} in {}", self.root.display())),
            many => Err(format!(
                "{id} is the start of {} ids; give more of it",
                many.len()
            )),
        }
    }

    /// The source item store.
    pub fn sources(&self) -> SourceStore {
        SourceStore::new(&self.root.join("sources"), &self.root.join("tmp"))
    }

    /// A fresh work dir under tmp/, removed when dropped.
    pub fn work_dir(&self, what: &str) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(&format!("{what}-{}-", std::process::id()))
            .tempdir_in(&tmp)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("creating a work dir in {}: {e}", tmp.display()),
                )
                .into()
            })
    }

    /// Commits `tree` (moved, so it must be under tmp/) as the object `id`
    /// with `log`, the stage's `meta` and `info`. Returns false when another
    /// writer had committed `id` first (then ours is removed).
    pub fn commit(
        &self,
        id: &Id,
        tree: &Path,
        log: &Path,
        meta: &Value,
        info: &Value,
    ) -> Result<bool, StoreError> {
        let staging = self.work_dir("commit")?.keep();
        let result = (|| -> Result<bool, StoreError> {
            fs::rename(tree, staging.join("tree"))?;
            let meta_dir = staging.join("meta");
            fs::create_dir(&meta_dir)?;
            if log.exists() {
                fs::copy(log, meta_dir.join("log"))?;
            }
            fs::write(
                meta_dir.join("meta.json"),
                serde_json::to_vec_pretty(meta).expect("json"),
            )?;
            let mut info = info.clone();
            info["id"] = json!(id.as_str());
            fs::write(
                meta_dir.join("info.json"),
                serde_json::to_vec_pretty(&info).expect("json"),
            )?;
            match std::fs::rename(&staging, self.object_dir(id)) {
                Ok(()) => Ok(true),
                Err(e) if is_exists(&e) => Ok(false),
                Err(e) => {
                    Err(io::Error::new(e.kind(), format!("committing object {id}: {e}")).into())
                }
            }
        })();
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }

    /// A fresh folder for what `--keep-failed` keeps of the failed stage
    /// `id`: STORE/failed/<id>-<pid>, named after this process so that
    /// [`Store::remove_failed`] leaves a running build's alone.
    pub fn failed_dir(&self, id: &Id) -> Result<PathBuf, StoreError> {
        let dir = self
            .root
            .join("failed")
            .join(format!("{id}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Removes what `--keep-failed` kept, except for builds still running;
    /// returns the folders removed. (The GC of `objects/` is separate.)
    pub fn remove_failed(&self) -> Result<Vec<PathBuf>, StoreError> {
        let failed = self.root.join("failed");
        let entries = match fs::read_dir(&failed) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let pid = name
                .as_deref()
                .and_then(|n| n.rsplit('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            let running = pid.is_some_and(|p| {
                p != std::process::id() && Path::new(&format!("/proc/{p}")).exists()
            });
            if !running {
                fs::remove_dir_all(&path)?;
                removed.push(path);
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// Flushes the store's filesystem once, after a build's commits: one
    /// syncfs instead of an fsync per file.
    pub fn sync(&self) -> Result<(), StoreError> {
        let dir = std::fs::File::open(self.root.join("objects"))?;
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::Io(e.into()))
    }

    /// Removes work dirs under tmp/ whose owning process is gone (a crash
    /// or kill -9 of an earlier run).
    fn clean_stale_tmp(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').nth(1).and_then(|p| p.parse::<i32>().ok());
            // Names without an owner (a source download's temp file) are left
            // alone: their owner may still be running.
            let alive = pid.is_none_or(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}

/// rename(2) onto a non-empty directory fails with EEXIST or ENOTEMPTY.
fn is_exists(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::EXIST.raw_os_error())
        || code == Some(rustix::io::Errno::NOTEMPTY.raw_os_error())
}
