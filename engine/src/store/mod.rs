//! The content-addressed object store: trees kept as layers.
//!
//! ```text
//! STORE/                    mode 0700: only its owner reaches anything below (a
//!                           setuid file or a device node in a stored tree gives
//!                           no other user anything)
//!   format                  "strata-store 3": refuses stores of other versions
//!   lock                    flock: shared while building, exclusive to collect
//!   config.json             {"max-size": bytes | null}, set by --cache-max-size
//!   objects/<id>/layer/     what stage <id> changed over its parent's tree: an
//!                           overlayfs upper dir (whiteouts, opaque dirs), or a
//!                           whole tree when it has no parent
//!   objects/<id>/meta/      info.json (pipeline, stage, type, created, parent,
//!                           depth, size), meta.json (what the stage reported),
//!                           log (its output), used (mtime = last use)
//!   locks/<id>              flock: held while a build makes object <id>
//!   sources/<type>/<sha256:…>  fetched source items (atime = last use)
//!   environments/<id>.json  systems tasks can run in (task::env), beside their objects
//!   failed/<id>-<pid>/      what `--keep-failed` kept of a failed stage: tree/,
//!                           inputs/NAME/, args.json, log; `strata store gc` removes it
//!   tmp/<what>-<pid>-…      work dirs: uppers, views, commits in progress;
//!                           same filesystem as objects/ so rename is atomic
//! ```
//!
//! Owners on disk are as the stages' user namespace writes them
//! (`sandbox/userns.rs`): shifted into the namespace's range, never the
//! host's own ids. As an ordinary user U with subordinate ids S…, in-tree
//! root is U and in-tree owner k > 0 is S+k−1 (mmdebstrap --mode=unshare's
//! map); as root, in-tree owner k is R+k (R: STRATA_SUBUID, default
//! 0x70000000). A stage sees the in-tree owners; `--export` of a tree as
//! root shifts them back. Overlay bookkeeping (whiteouts are 0/0 character
//! devices; `user.overlay.opaque`) is the `userxattr` kind, the one a mount
//! made inside a user namespace can use — format 2's `trusted.overlay.*`
//! layers, written by root, mean nothing to it, hence format 3.
//!
//! The tree of object C is the stack C.layer over B.layer over A.layer,
//! following `parent` in info.json down to a layer with none:
//!
//! ```text
//!   objects/A/layer   bootstrap: 180 MB, the whole system     depth 1
//!   objects/B/layer   customize: + /etc/hostname, − /var/log/x  depth 2 (parent A)
//!   objects/C/layer   write:     + /etc/motd                   depth 3 (parent B)
//! ```
//!
//! Why layers: a copy per checkpoint costs a whole tree each time (osbuild's
//! cache runs at ≈ 4.5× the root filesystem); a layer costs what the stage
//! changed, so every stage is kept by default. Starting a stage from a stored
//! tree mounts an overlay (lower = the stack, upper = a fresh dir under
//! tmp/) — O(1) whatever the tree's size — and committing it renames the
//! upper dir in. Inputs from other pipelines are read-only overlays of their
//! stacks, mounted, never copied. See [`layers`] for the mounts.
//!
//! - Checkpoints: every stage is kept by default. A kept stage costs its
//!   layer and nothing more (its diff is written to disk either way: an
//!   unkept stage's changes stay in the workspace's upper dir and are stored
//!   with the next kept stage). `--no-checkpoint` keeps only what
//!   `--checkpoint` names, for builds whose trees should not be cached.
//! - Hardlinks: a stage that writes in place to one name of a file
//!   hardlinked in a lower layer makes overlayfs copy the file up; with the
//!   workspace's index (`index=on`) every name shows the new data during the
//!   stage, and before the layer is stored its other names are linked to
//!   the copy in the upper dir ([`layers::Workspace::finish`]), so the
//!   stored tree keeps the link whole. (On a filesystem that cannot index,
//!   the names split, as in docker's and podman's stores.)
//! - Depth: a stack deeper than [`layers::MAX_DEPTH`] is flattened when the
//!   next object is committed: that object is stored whole (copied from the
//!   merged view with reflinks where the filesystem can) and has no parent.
//! - Commit: the object is assembled under tmp/, then renamed into objects/;
//!   if the id is already there another writer won and ours is dropped.
//!   Nothing partial is ever visible under objects/, and a kill -9 leaves
//!   only tmp/ dirs named after a dead process, removed by the next open.
//! - Concurrency: builds share `lock`; a build takes `locks/<id>` before it
//!   makes object `<id>` and looks again once it has it, so a stage two builds
//!   need is built once and the second build uses it. Collection takes
//!   `lock` exclusively, so it never removes what a running build uses.
//! - Collection ([`gc`]): least recently used first, over objects no other
//!   stored object stands on (a parent goes only after its children), and
//!   source items. A child keeps its whole chain alive.

pub mod copy;
pub mod gc;
pub mod layers;
pub mod lock;

use crate::id::Id;
use fs_err as fs;
use lock::{Lock, Mode};
use serde_json::{Value, json};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_sources::SourceStore;

/// The store format this strata reads and writes.
pub const FORMAT: &str = "strata-store 3";

/// How long a lock wait lasts unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Store errors; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The store was made by another strata format.
    #[error(
        "store {path} has format `{found}`, this strata reads `{FORMAT}`\n    hint: remove it (or point --store elsewhere); its objects cannot be read as layers"
    )]
    Format {
        /// The store root.
        path: PathBuf,
        /// What its format file says.
        found: String,
    },
    /// A lock could not be taken.
    #[error("cannot lock {path}: {detail}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// No object matches what the user named.
    #[error("{0}")]
    NotFound(String),
}

/// What the store records about an object (its `meta/info.json`).
#[derive(Debug, Clone, Default)]
pub struct Info {
    /// The object id.
    pub id: String,
    /// The pipeline and stage index and type that made it.
    pub pipeline: String,
    /// Stage index.
    pub stage: u64,
    /// Stage type.
    pub ty: String,
    /// The object its layer stands on.
    pub parent: Option<String>,
    /// Layers in its stack (1 for a whole tree).
    pub depth: usize,
    /// Bytes on disk (layer + metadata).
    pub size: u64,
    /// Unix seconds it was committed.
    pub created: u64,
}

impl Info {
    fn from_json(v: &Value) -> Info {
        Info {
            id: v["id"].as_str().unwrap_or_default().to_owned(),
            pipeline: v["pipeline"].as_str().unwrap_or_default().to_owned(),
            stage: v["stage"].as_u64().unwrap_or_default(),
            ty: v["type"].as_str().unwrap_or_default().to_owned(),
            parent: v["parent"].as_str().map(str::to_owned),
            depth: v["depth"].as_u64().map_or(1, |d| d as usize),
            size: v["size"].as_u64().unwrap_or_default(),
            created: v["created"].as_u64().unwrap_or_default(),
        }
    }
}

/// An open store, holding the store lock for as long as it lives.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    lock: Option<Lock>,
    timeout: Duration,
}

impl Store {
    /// Opens (creating if needed) the store at `root` for building: the
    /// shared lock, waiting up to `timeout` for a collection to end.
    pub fn open(root: &Path, timeout: Duration) -> Result<Store, StoreError> {
        Store::open_with(root, Mode::Shared, timeout)
    }

    /// Opens the store at `root` to collect or remove objects: the exclusive
    /// lock, waiting up to `timeout` for running builds to end.
    pub fn open_exclusive(root: &Path, timeout: Duration) -> Result<Store, StoreError> {
        Store::open_with(root, Mode::Exclusive, timeout)
    }

    fn open_with(root: &Path, mode: Mode, timeout: Duration) -> Result<Store, StoreError> {
        fs::create_dir_all(root)?;
        let root = fs::canonicalize(root)?;
        // Trees below hold setuid files and the like, owned by ids of the
        // stages' namespace: nobody but the store's owner may reach them.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        }
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
                // Written beside and renamed: a kill -9 here must not leave
                // an empty format file that makes the store look foreign.
                let staging = root.join(format!(".format-{}", std::process::id()));
                fs::write(&staging, format!("{FORMAT}\n"))?;
                fs::rename(&staging, &format)?;
            }
            Err(e) => return Err(e.into()),
        }
        for dir in ["objects", "sources", "tmp", "locks"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let lock_path = root.join("lock");
        let what = match mode {
            Mode::Shared => "a collection (`strata store gc`) to end",
            Mode::Exclusive => "running builds to end",
        };
        let lock = lock::lock(&lock_path, mode, timeout, || {
            eprintln!("waiting for {what}: {} is held", lock_path.display());
        })?;
        let store = Store {
            root,
            lock: Some(lock),
            timeout,
        };
        store.clean_stale_tmp(mode == Mode::Exclusive);
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How long lock waits last.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    fn object_dir(&self, id: &str) -> PathBuf {
        self.objects_dir().join(id)
    }

    /// Whether an object for `id` is stored.
    pub fn has(&self, id: &Id) -> bool {
        self.object_dir(id.as_str()).is_dir()
    }

    /// What the store records about object `id`, if it is stored.
    pub fn info(&self, id: &str) -> Option<Info> {
        let text = std::fs::read_to_string(self.object_dir(id).join("meta/info.json")).ok()?;
        let mut info = Info::from_json(&serde_json::from_str(&text).ok()?);
        info.id = id.to_owned();
        Some(info)
    }

    /// The layers whose stack is the tree of `id`, top first.
    pub fn stack(&self, id: &Id) -> Result<Vec<PathBuf>, StoreError> {
        let mut stack = Vec::new();
        let mut next = Some(id.as_str().to_owned());
        while let Some(id) = next {
            let info = self.info(&id).ok_or_else(|| {
                StoreError::NotFound(format!(
                    "object {id} is missing from {}: its layer is needed by a stored object\n    hint: `strata store rm` the objects above it",
                    self.objects_dir().display()
                ))
            })?;
            stack.push(self.object_dir(&id).join("layer"));
            next = info.parent;
            if stack.len() > 4 * layers::MAX_DEPTH {
                return Err(StoreError::NotFound(format!(
                    "object {id}'s parents loop in {}",
                    self.objects_dir().display()
                )));
            }
        }
        Ok(stack)
    }

    /// The tree of `id`, read-only: its layer when it is the only one, an
    /// overlay of its stack otherwise (unmounted when dropped).
    pub fn view(&self, id: &Id) -> Result<layers::View, StoreError> {
        let stack = self.stack(id)?;
        let dir = self.work_dir("view")?;
        layers::View::open(&stack, dir)
    }

    /// A flat workspace: a plain copy of the tree of `base` (or an empty
    /// tree), for stages that cannot see strata's mounts.
    pub fn flat_workspace(&self, base: Option<&Id>) -> Result<layers::Workspace, StoreError> {
        let dir = self.work_dir("build")?;
        match base {
            Some(id) => {
                let view = self.view(id)?;
                layers::Workspace::flat(Some(view.path()), dir)
            }
            None => layers::Workspace::flat(None, dir),
        }
    }

    /// A writable workspace over the tree of `base` (or an empty tree).
    pub fn workspace(&self, base: Option<&Id>) -> Result<layers::Workspace, StoreError> {
        let stack = match base {
            Some(id) => self.stack(id)?,
            None => Vec::new(),
        };
        layers::Workspace::open(&stack, self.work_dir("build")?)
    }

    /// Records that `id` was used now (LRU order for collection).
    pub fn touch(&self, id: &Id) {
        let used = self.object_dir(id.as_str()).join("meta/used");
        // A stamp, not data: if it cannot be written the object only looks older.
        if stamp(&used, true).is_err() {
            let _ = std::fs::File::create(&used);
        }
    }

    /// Records that the source item at `path` was used now, in its access
    /// time: its data and mtime, which inputs show to stages, stay.
    pub fn touch_source(&self, path: &Path) {
        let _ = stamp(path, false);
    }

    /// The stage metadata stored with `id` (`null` when none).
    pub fn meta(&self, id: &Id) -> Value {
        fs::read_to_string(self.object_dir(id.as_str()).join("meta/meta.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// The one stored id that is `prefix` or starts with it.
    pub fn resolve(&self, prefix: &str) -> Result<String, StoreError> {
        let mut found: Vec<String> = std::fs::read_dir(self.objects_dir())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !prefix.is_empty() && name.starts_with(prefix))
            .collect();
        found.sort();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::NotFound(format!(
                "no stored object {prefix} in {}",
                self.root.display()
            ))),
            many => Err(StoreError::NotFound(format!(
                "{prefix} is the start of {} ids; give more of it",
                many.len()
            ))),
        }
    }

    /// The log kept with the object whose id is `id` or starts with it.
    pub fn log(&self, id: &str) -> Result<String, String> {
        let one = self.resolve(id).map_err(|e| e.to_string())?;
        fs::read_to_string(self.object_dir(&one).join("meta/log")).map_err(|e| e.to_string())
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

    /// Takes the build lock of object `id`, waiting for another build that
    /// is making it; `waiting` is called once if it has to wait.
    pub fn lock_object(&self, id: &Id, waiting: impl FnOnce()) -> Result<Lock, StoreError> {
        let path = self.root.join("locks").join(id.as_str());
        lock::lock(&path, Mode::Exclusive, self.timeout, waiting)
    }

    /// The size limit remembered by the store (`None`: unlimited).
    pub fn max_size(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.root.join("config.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["max-size"].as_u64()
    }

    /// Remembers the size limit (`None`: unlimited).
    pub fn set_max_size(&self, max: Option<u64>) -> Result<(), StoreError> {
        let staging = self.work_dir("config")?;
        let file = staging.path().join("config.json");
        fs::write(&file, json!({"max-size": max}).to_string())?;
        fs::rename(&file, self.root.join("config.json"))?;
        Ok(())
    }

    /// Commits `layer` (a directory under tmp/, moved) as object `id`
    /// standing on `parent`, with the stage's `log`, `meta` and `info`.
    /// Returns false when another writer had committed `id` first (then ours
    /// is removed).
    pub fn commit(&self, new: NewObject<'_>) -> Result<bool, StoreError> {
        let staging = self.work_dir("commit")?.keep();
        let id = new.id;
        let result = (|| -> Result<bool, StoreError> {
            match new.layer {
                Layer::Move(dir) => {
                    layers::clean_upper(dir, new.parent.is_none())?;
                    fs::rename(dir, staging.join("layer"))?
                }
                Layer::Flatten { merged, stack } => {
                    layers::flatten(merged, stack, &staging.join("layer"))?
                }
            }
            let meta_dir = staging.join("meta");
            fs::create_dir(&meta_dir)?;
            if new.log.exists() {
                fs::copy(new.log, meta_dir.join("log"))?;
            }
            fs::write(
                meta_dir.join("meta.json"),
                serde_json::to_vec_pretty(new.meta).expect("json"),
            )?;
            let (parent, depth) = match (&new.layer, new.parent) {
                (Layer::Move(_), Some(p)) => {
                    let depth = self.info(p.as_str()).map_or(1, |i| i.depth);
                    (Some(p.as_str()), depth + 1)
                }
                _ => (None, 1),
            };
            let mut info = new.info.clone();
            info["id"] = json!(id.as_str());
            info["parent"] = json!(parent);
            info["depth"] = json!(depth);
            info["size"] = json!(0);
            let size = layers::disk_usage(&staging);
            info["size"] = json!(size);
            fs::write(
                meta_dir.join("info.json"),
                serde_json::to_vec_pretty(&info).expect("json"),
            )?;
            fs::File::create(meta_dir.join("used"))?;
            match std::fs::rename(&staging, self.object_dir(id.as_str())) {
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
        let dir = std::fs::File::open(self.objects_dir())?;
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::Io(e.into()))
    }

    /// Gives up the store lock (a build that is done with the store).
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// Takes the store lock exclusively if nobody else holds it, for a
    /// build that collects at its end; false when another build runs.
    pub fn try_exclusive(&mut self) -> Result<bool, StoreError> {
        // Converting a flock drops the old lock first; let go of ours, try.
        self.lock = None;
        self.lock = lock::try_lock(&self.root.join("lock"), Mode::Exclusive)?;
        Ok(self.lock.is_some())
    }

    /// Removes work dirs under tmp/ whose owning process is gone (a crash
    /// or kill -9 of an earlier run); with the exclusive lock, everything
    /// but our own (nobody else can be using the store).
    fn clean_stale_tmp(&self, exclusive: bool) {
        let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        let me = std::process::id() as i32;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').nth(1).and_then(|p| p.parse::<i32>().ok());
            let alive = match pid {
                Some(p) if p == me => true,
                _ if exclusive => false,
                Some(p) => Path::new(&format!("/proc/{p}")).exists(),
                // Without an owner in its name: leave it, its owner may run.
                None => true,
            };
            if !alive {
                remove_any(&entry.path());
            }
        }
        if exclusive {
            // Object build locks are only held by running builds; none is.
            for entry in std::fs::read_dir(self.root.join("locks"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Where a new object's layer comes from.
#[derive(Debug)]
pub enum Layer<'a> {
    /// A finished upper dir under tmp/, moved in.
    Move(&'a Path),
    /// A merged tree, copied in whole (the stack got too deep).
    Flatten {
        /// The mounted tree.
        merged: &'a Path,
        /// Its layers, top first (where the file data is read from).
        stack: &'a [PathBuf],
    },
}

/// An object to commit.
#[derive(Debug)]
pub struct NewObject<'a> {
    /// Its id.
    pub id: &'a Id,
    /// Its layer.
    pub layer: Layer<'a>,
    /// The object the layer stands on (ignored when flattened).
    pub parent: Option<&'a Id>,
    /// The stage's log.
    pub log: &'a Path,
    /// What the stage reported.
    pub meta: &'a Value,
    /// pipeline, stage, type, created, duration.
    pub info: &'a Value,
}

pub(crate) fn remove_any(path: &Path) {
    let _ = match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// rename(2) onto a non-empty directory fails with EEXIST or ENOTEMPTY.
fn is_exists(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::EXIST.raw_os_error())
        || code == Some(rustix::io::Errno::NOTEMPTY.raw_os_error())
}

/// Sets `path`'s access time (and its modification time when `modified`) to now.
fn stamp(path: &Path, modified: bool) -> rustix::io::Result<()> {
    let now = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    let keep = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_OMIT,
    };
    let times = rustix::fs::Timestamps {
        last_access: now,
        last_modification: if modified { now } else { keep },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::empty())
}
