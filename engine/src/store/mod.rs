//! The content-addressed object store: trees kept as layers.
//!
//! ```text
//! STORE/                    mode 0700: only its owner reaches anything below (a
//!                           setuid file or a device node in a stored tree gives
//!                           no other user anything)
//!   format                  "strata-store 4": refuses stores of other versions
//!   lock                    flock: shared while building, exclusive to collect
//!   config.json             {"max-size": bytes | null}, set by --cache-max-size
//!   objects/<id>/layer/     what stage <id> changed over its parent's tree: an
//!                           overlayfs upper dir (whiteouts, opaque dirs), or a
//!                           whole tree when it has no parent
//!   objects/<id>/meta/      info.json (pipeline, stage, type, created, parent,
//!                           depth, size, treesum), treesum (the layer's
//!                           manifest, [`treesum`]), meta.json (what the stage
//!                           reported), log (its output), used (mtime = last use)
//!   locks/<id>              flock: held while a build makes object <id>
//!   sources/<type>/<sha256:…>  fetched source items (atime = last use; fsck
//!                           reads them with O_NOATIME, so checking is no use)
//!   systems/<id>.json       a stored system tasks can run in (task::env), found
//!                           by a lookup; keyed by its object, gone with it
//!   instances/NAME/         an environment of `strata env` (backend::envs):
//!                           state.json, and for unshare tree/ (its own copy);
//!                           named by the user, started and stopped, kept until
//!                           `strata env delete`
//!   failed/<id>-<pid>/      what `--keep-failed` kept of a failed stage: tree/,
//!                           inputs/NAME/, args.json, log; `strata store gc` removes it
//!                           (written in place and not synced: it is for people
//!                           to look at, and no build ever reads it back)
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
//! layers, written by root, mean nothing to it. Hence format 4, and a store
//! of an older format is refused with a hint rather than migrated: its
//! owners and whiteouts would have to be rewritten file by file.
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
//! - Commit: the object is assembled under tmp/ — its layer walked once to
//!   record its treesum (and drop overlayfs's bookkeeping), its records
//!   written — flushed with one syncfs, then renamed into objects/ and
//!   objects/ flushed ([`durable`]); if the id is already there another
//!   writer won and ours is dropped. Nothing partial is ever visible under
//!   objects/, not even after a crash of the machine, and a kill -9 leaves
//!   only tmp/ dirs named after a dead process, removed by the next open.
//! - Checking ([`fsck`]): `strata store fsck` walks layers again and
//!   compares them with their recorded treesums, and source items with the
//!   checksums that name them. An object stored by a strata from before
//!   treesums has none (the field is optional, so the format stays 4):
//!   fsck says so and cannot check it.
//! - Concurrency: builds share `lock`; a build takes `locks/<id>` before it
//!   makes object `<id>` and looks again once it has it, so a stage two builds
//!   need is built once and the second build uses it. Collection takes
//!   `lock` exclusively, so it never removes what a running build uses.
//! - Collection ([`gc`]): least recently used first, over objects no other
//!   stored object stands on (a parent goes only after its children), and
//!   source items. A child keeps its whole chain alive.
//! - Names: both `systems/` and `instances/` hold what people call
//!   environments, so neither is called that. A system is a stored tree (by
//!   content id) a task reuses; an instance is a named, stateful thing made
//!   from a system, like an incus instance (format 2 called them
//!   `environments/` and `envs/`).
//! - Paths: [`Layout`] joins every name onto the store root; nothing else does.

pub mod copy;
pub mod durable;
pub mod fsck;
pub mod gc;
pub mod layers;
pub mod layout;
pub mod lock;
pub mod treesum;
pub mod untrusted;

pub use layout::{InstancePaths, Layout, ObjectPaths};

use crate::id::Id;
use fs_err as fs;
use lock::{Lock, Mode};
use serde_json::{Value, json};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use strata_sources::SourceStore;

/// `$STRATA_STORE`, else `/var/cache/strata` as root, else `$XDG_CACHE_HOME/strata`.
pub fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_STORE") {
        return dir.into();
    }
    if rustix::process::geteuid().is_root() {
        return "/var/cache/strata".into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("strata")
}

/// The store format this strata reads and writes.
pub const FORMAT: &str = "strata-store 4";

/// How long a lock wait lasts unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Store errors; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The store was made by another strata format.
    #[error("store {path} has format `{found}`, this strata reads `{FORMAT}`\n    hint: {hint}")]
    Format {
        /// The store root.
        path: PathBuf,
        /// What its format file says.
        found: String,
        /// What to do about it.
        hint: &'static str,
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
    /// A tree could not be walked (to record or check its treesum).
    #[error(transparent)]
    Walk(#[from] treesum::WalkError),
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
    /// The digest of its layer when it was committed (`blake3:…`,
    /// [`treesum`]); `None` for an object stored before strata kept them.
    pub treesum: Option<String>,
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
            treesum: v["treesum"].as_str().map(str::to_owned),
        }
    }
}

/// An open store, holding the store lock for as long as it lives (or until
/// [`Store::unlock`]).
#[derive(Debug)]
pub struct Store {
    layout: Layout,
    // Behind a mutex so that whoever holds `&Store` (a build, the backends
    // it drives) can let go of the lock or convert it.
    lock: Mutex<Option<Lock>>,
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

    /// Opens the store at `root` for building if there is one: `None` when
    /// nothing was ever stored there, and then nothing is created (listing
    /// what a store holds must not make one).
    pub fn open_existing(root: &Path, timeout: Duration) -> Result<Option<Store>, StoreError> {
        if !Layout::new(root).format().exists() {
            return Ok(None);
        }
        Store::open(root, timeout).map(Some)
    }

    fn open_with(root: &Path, mode: Mode, timeout: Duration) -> Result<Store, StoreError> {
        // A new store is closed from its first moment (see below).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(root)?;
        let layout = Layout::new(fs::canonicalize(root)?);
        match read_format(&layout)? {
            Some(found) if found == FORMAT => {}
            Some(found) => {
                let newer = version(&found) > version(FORMAT);
                return Err(StoreError::Format {
                    path: layout.root().to_path_buf(),
                    found,
                    hint: if newer {
                        "a newer strata made it: use that one (or point --store elsewhere)"
                    } else {
                        "remove it (or point --store elsewhere): an older strata made it, and its trees hold owners from before stages ran in user namespaces"
                    },
                });
            }
            None => {
                if fs::read_dir(layout.root())?.next().is_some() {
                    return Err(StoreError::Format {
                        path: layout.root().to_path_buf(),
                        found: "none (a folder that is not a strata store)".into(),
                        hint: "point --store at an empty or new folder",
                    });
                }
                write_format(&layout)?;
            }
        }
        // Trees below hold setuid files and the like, owned by ids of the
        // stages' namespace: nobody but the store's owner may reach them
        // (a store made by an older strata, or by hand, is closed here).
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(layout.root(), std::fs::Permissions::from_mode(0o700))?;
        }
        for dir in layout.made_on_open() {
            durable::create_dir_all(&dir)?;
        }
        let lock_path = layout.lock();
        let what = match mode {
            Mode::Shared => "a collection (`strata store gc`) to end",
            Mode::Exclusive => "running builds to end",
        };
        let lock = lock::lock(&lock_path, mode, timeout, || {
            eprintln!("waiting for {what}: {} is held", lock_path.display());
        })?;
        let store = Store {
            layout,
            lock: Mutex::new(Some(lock)),
            timeout,
        };
        store.clean_stale_tmp(mode == Mode::Exclusive);
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Where everything in the store is.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// How long lock waits last.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether an object for `id` is stored.
    pub fn has(&self, id: &Id) -> bool {
        self.layout.object(id.as_str()).dir().is_dir()
    }

    /// What the store records about object `id`, if it is stored.
    pub fn info(&self, id: &str) -> Option<Info> {
        let text = std::fs::read_to_string(self.layout.object(id).info()).ok()?;
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
                    self.layout.objects().display()
                ))
            })?;
            stack.push(self.layout.object(&id).layer());
            next = info.parent;
            if stack.len() > 4 * layers::MAX_DEPTH {
                return Err(StoreError::NotFound(format!(
                    "object {id}'s parents loop in {}",
                    self.layout.objects().display()
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
        let used = self.layout.object(id.as_str()).used();
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
        fs::read_to_string(self.layout.object(id.as_str()).stage_meta())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// The one stored id that is `prefix` or starts with it.
    pub fn resolve(&self, prefix: &str) -> Result<String, StoreError> {
        let mut found: Vec<String> = std::fs::read_dir(self.layout.objects())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !prefix.is_empty() && name.starts_with(prefix))
            .collect();
        found.sort();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::NotFound(format!(
                "no stored object {prefix} in {}",
                self.root().display()
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
        fs::read_to_string(self.layout.object(&one).log()).map_err(|e| e.to_string())
    }

    /// The source item store.
    pub fn sources(&self) -> SourceStore {
        SourceStore::new(&self.layout.sources(), &self.layout.tmp())
    }

    /// A fresh work dir under tmp/, removed when dropped.
    pub fn work_dir(&self, what: &str) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.layout.tmp();
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
        let path = self.layout.object_lock(id.as_str());
        lock::lock(&path, Mode::Exclusive, self.timeout, waiting)
    }

    /// The size limit remembered by the store (`None`: unlimited).
    pub fn max_size(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.layout.config()).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["max-size"].as_u64()
    }

    /// Remembers the size limit (`None`: unlimited).
    pub fn set_max_size(&self, max: Option<u64>) -> Result<(), StoreError> {
        let staging = self.work_dir("config")?;
        let file = staging.path().join("config.json");
        durable::write(
            &file,
            &self.layout.config(),
            json!({"max-size": max}).to_string().as_bytes(),
        )?;
        Ok(())
    }

    /// Commits `layer` (a directory under tmp/, moved) as object `id`
    /// standing on `parent`, with the stage's `log`, `meta` and `info`.
    /// Returns false when another writer had committed `id` first (then ours
    /// is removed).
    pub fn commit(&self, new: NewObject<'_>) -> Result<bool, StoreError> {
        let staging = self.work_dir("commit")?.keep();
        let object = ObjectPaths::at(&staging);
        let id = new.id;
        let result = (|| -> Result<bool, StoreError> {
            let bottom = new.parent.is_none();
            let bookkeeping = |name: &[u8]| layers::is_bookkeeping(name, bottom);
            // An upper dir carries overlayfs's bookkeeping, dropped in the
            // walk that sums the layer; a flattened copy has none.
            let strip: Option<treesum::Strip<'_>> = match new.layer {
                Layer::Move(dir) => {
                    fs::rename(dir, object.layer())?;
                    Some(&bookkeeping)
                }
                Layer::Flatten { merged, stack } => {
                    layers::flatten(merged, stack, &object.layer())?;
                    None
                }
            };
            let summed = treesum::sum(&object.layer(), strip)?;
            fs::create_dir(object.meta())?;
            fs::write(object.treesum(), &summed.manifest)?;
            if new.log.exists() {
                fs::copy(new.log, object.log())?;
            }
            fs::write(
                object.stage_meta(),
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
            info["treesum"] = json!(summed.treesum);
            // The layer's usage came with its walk; the rest is small.
            let folder = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&staging)?) * 512;
            let size = summed.disk_usage + layers::disk_usage(&object.meta()) + folder;
            info["size"] = json!(size);
            fs::write(
                object.info(),
                serde_json::to_vec_pretty(&info).expect("json"),
            )?;
            fs::File::create(object.used())?;
            // The object whole on disk before its name is: one syncfs for
            // every file of it (durable.rs).
            self.sync()?;
            let dest = self.layout.object(id.as_str());
            match std::fs::rename(&staging, dest.dir()) {
                Ok(()) => {
                    durable::sync_parent(dest.dir())?;
                    Ok(true)
                }
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
        let dir = self.layout.failed_stage(id.as_str(), std::process::id());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Removes what `--keep-failed` kept, except for builds still running;
    /// returns the folders removed. (The GC of `objects/` is separate.)
    pub fn remove_failed(&self) -> Result<Vec<PathBuf>, StoreError> {
        let failed = self.layout.failed();
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

    /// Flushes the store's filesystem: a commit's whole object in one
    /// syncfs instead of an fsync per file.
    pub fn sync(&self) -> Result<(), StoreError> {
        Ok(durable::sync_filesystem(&self.layout.objects())?)
    }

    /// Gives up the store lock (a build that is done with the store).
    pub fn unlock(&self) {
        *self.held() = None;
    }

    /// Takes the store lock exclusively if nobody else holds it, for a
    /// build that collects at its end; false when another build runs.
    pub fn try_exclusive(&self) -> Result<bool, StoreError> {
        let mut held = self.held();
        // Converting a flock drops the old lock first; let go of ours, try.
        *held = None;
        *held = lock::try_lock(&self.layout.lock(), Mode::Exclusive)?;
        Ok(held.is_some())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Lock>> {
        // A panic while holding the guard cannot leave the Option torn.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes work dirs under tmp/ whose owning process is gone (a crash
    /// or kill -9 of an earlier run); with the exclusive lock, everything
    /// but our own (nobody else can be using the store).
    fn clean_stale_tmp(&self, exclusive: bool) {
        let Ok(entries) = std::fs::read_dir(self.layout.tmp()) else {
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
            for entry in std::fs::read_dir(self.layout.locks())
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The number of a format (`strata-store N`); none for a foreign file.
fn version(format: &str) -> Option<u32> {
    format.strip_prefix("strata-store ")?.parse().ok()
}

/// What the format file says, trimmed; `None` when there is none.
fn read_format(layout: &Layout) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(layout.format()) {
        Ok(found) => Ok(Some(found.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_format(layout: &Layout) -> Result<(), StoreError> {
    // Written beside and renamed: a kill -9 here must not leave an empty
    // format file that makes the store look foreign.
    durable::write(
        &layout.format_staging(),
        &layout.format(),
        format!("{FORMAT}\n").as_bytes(),
    )?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open(root, Duration::from_secs(5))
    }

    #[test]
    fn older_and_newer_formats_get_different_hints() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::write(layout.format(), "strata-store 1\n").unwrap();
        let err = open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("an older strata made it"), "{err}");
        std::fs::write(layout.format(), "strata-store 9\n").unwrap();
        let err = open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a newer strata made it"), "{err}");
    }

    #[test]
    fn the_lock_can_be_let_go_and_converted_through_a_shared_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        let other = open(dir.path()).unwrap();
        assert!(!store.try_exclusive().unwrap(), "another holder");
        other.unlock();
        assert!(store.try_exclusive().unwrap());
        let err = Store::open(dir.path(), Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("lock"), "{err}");
    }
}
