//! Where everything under STORE/ is. The picture is the store module's
//! drawing; this is the one place a name is joined onto the store root, so
//! that a renamed folder is renamed here and nowhere else.

use std::path::{Path, PathBuf};

/// The paths of a store rooted at one folder. Making one touches nothing on
/// disk: code that must not create a store (listing one that may not exist)
/// asks it where the format file would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `format`: which layout this is.
    pub fn format(&self) -> PathBuf {
        self.root.join("format")
    }

    /// Where a new format file is written before it is renamed over
    /// `format`, named after this process.
    pub fn format_staging(&self) -> PathBuf {
        self.root.join(format!(".format-{}", std::process::id()))
    }

    /// `lock`: the store lock.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// `config.json`: the remembered settings.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `objects/`.
    pub fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }

    /// `objects/<id>/`.
    pub fn object(&self, id: &str) -> ObjectPaths {
        ObjectPaths(self.objects().join(id))
    }

    /// `locks/`: the per-object build locks.
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// `locks/<id>`.
    pub fn object_lock(&self, id: &str) -> PathBuf {
        self.locks().join(id)
    }

    /// `sources/`: fetched source items.
    pub fn sources(&self) -> PathBuf {
        self.root.join("sources")
    }

    /// `tmp/`: work dirs, on the same filesystem as `objects/`.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `failed/`: what `--keep-failed` kept.
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }

    /// `failed/<id>-<pid>/`: what process `pid` kept of failed stage `id`.
    pub fn failed_stage(&self, id: &str, pid: u32) -> PathBuf {
        self.failed().join(format!("{id}-{pid}"))
    }

    /// `instances/`: the named environments of `strata env`.
    pub fn instances(&self) -> PathBuf {
        self.root.join("instances")
    }

    /// `instances/NAME/`.
    pub fn instance(&self, name: &str) -> InstancePaths {
        InstancePaths(self.instances().join(name))
    }

    /// `systems/`: the records of systems tasks can run in.
    pub fn systems(&self) -> PathBuf {
        self.root.join("systems")
    }

    /// `systems/<id>.json`.
    pub fn system(&self, id: &str) -> PathBuf {
        self.systems().join(format!("{id}.json"))
    }

    /// The folders every open store has.
    pub(crate) fn made_on_open(&self) -> [PathBuf; 4] {
        [self.objects(), self.sources(), self.tmp(), self.locks()]
    }
}

/// The paths of one object: `objects/<id>/`, or the folder under `tmp/`
/// where a commit assembles it before the rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPaths(PathBuf);

impl ObjectPaths {
    /// An object assembled in `dir` (not yet under `objects/`).
    pub fn at(dir: impl Into<PathBuf>) -> ObjectPaths {
        ObjectPaths(dir.into())
    }

    /// The object's folder.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `layer/`: what the stage changed (or the whole tree).
    pub fn layer(&self) -> PathBuf {
        self.0.join("layer")
    }

    /// `meta/`.
    pub fn meta(&self) -> PathBuf {
        self.0.join("meta")
    }

    /// `meta/info.json`: what the store records about the object.
    pub fn info(&self) -> PathBuf {
        self.meta().join("info.json")
    }

    /// `meta/treesum`: the layer's manifest, whose digest info.json
    /// records (`store::treesum`).
    pub fn treesum(&self) -> PathBuf {
        self.meta().join("treesum")
    }

    /// `meta/meta.json`: what the stage reported.
    pub fn stage_meta(&self) -> PathBuf {
        self.meta().join("meta.json")
    }

    /// `meta/log`: the stage's output.
    pub fn log(&self) -> PathBuf {
        self.meta().join("log")
    }

    /// `meta/used`: its mtime is the object's last use.
    pub fn used(&self) -> PathBuf {
        self.meta().join("used")
    }
}

/// The paths of one `strata env` environment: `instances/NAME/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePaths(PathBuf);

impl InstancePaths {
    /// The environment's folder.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `state.json`: its `EnvState`.
    pub fn state(&self) -> PathBuf {
        self.0.join("state.json")
    }

    /// `tree/`: unshare only, the environment's own copy of its system.
    pub fn tree(&self) -> PathBuf {
        self.0.join("tree")
    }

    /// `.tree.partial/`: the copy in progress, renamed to `tree/` when whole.
    pub fn tree_staging(&self) -> PathBuf {
        self.0.join(".tree.partial")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_kinds_of_environment_have_names_that_differ() {
        let l = Layout::new("/s");
        assert_eq!(
            l.instance("dev").state(),
            Path::new("/s/instances/dev/state.json")
        );
        assert_eq!(l.system("abc"), Path::new("/s/systems/abc.json"));
        assert_eq!(
            l.object("abc").used(),
            Path::new("/s/objects/abc/meta/used")
        );
        assert_eq!(l.failed_stage("abc", 7), Path::new("/s/failed/abc-7"));
    }
}
