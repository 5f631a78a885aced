//! Images for environments, made by strata's own build: a derived manifest
//! through [`exec::Build`] with checkpoints, so sandboxing, caching and
//! content ids are the same as for any build.
//!
//! ```text
//! pipeline source:  the user's manifest + { "strata-incus-image": tarball-to-incus over name:P }
//! tarball source:   { sources.curl: file:///TARBALL } + { "system": untar }
//!                                                     + { "strata-incus-image": tarball-to-incus over name:system }
//!   → stored tree of P (or system)            → unshare copies it
//!   → stored incus.tar.* + rootfs.tar.*       → incus image import --alias artifact/<id of P>
//! ```

use super::BackendError;
use super::cli::Cli;
use super::incus::{image_exists, incus, store_key};
use crate::catalog::Catalog;
use crate::exec;
use crate::id::Id;
use crate::manifest;
use crate::monitor::Monitor;
use crate::plan::Plan;
use crate::store::Store;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The name of the derived pipeline that makes incus image files.
pub const IMAGE_PIPELINE: &str = "strata-incus-image";
/// The stage that makes them.
pub const IMAGE_STAGE: &str = "tarball-to-incus";

/// Where an environment's system comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Pipeline `name` of the manifest `text` (read from `origin`).
    Pipeline {
        /// The manifest text.
        text: String,
        /// Where it was read from, for messages.
        origin: String,
        /// The pipeline.
        name: String,
    },
    /// A system tarball on the host.
    Tarball(PathBuf),
}

/// A system, built and stored.
#[derive(Debug)]
pub struct System {
    /// Its stored tree.
    pub tree: PathBuf,
    /// Its content id (the pipeline's id): the `artifact/<id>` of its image.
    pub id: Id,
    /// What it was made from, for people.
    pub origin: String,
    /// The stored tree of the incus image files, when asked for.
    pub image_files: Option<PathBuf>,
    /// The read-only mounts `tree` and `image_files` are (stored trees are
    /// stacks of layers); they go when the system is dropped.
    pub views: Vec<crate::store::layers::View>,
}

/// The image alias of a system.
pub fn alias(id: &Id) -> String {
    format!("artifact/{id}")
}

/// Debian's name for the host architecture (containers run the host's).
pub fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        other => other,
    }
}

/// The options of the tarball-to-incus stage for system `id`.
pub fn stage_options(id: &Id, description: &str) -> Value {
    json!({
        "format": "split",
        "compression": "zstd",
        "architecture": debian_arch(),
        "description": description,
        "os": "debian",
        "artifact_id": id.as_str(),
    })
}

/// The derived pipeline making incus image files of pipeline `over`.
pub fn image_pipeline(name: &str, over: &str, id: &Id, description: &str) -> Value {
    json!({"name": name, "stages": [{
        "type": IMAGE_STAGE,
        "options": stage_options(id, description),
        "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": [format!("name:{over}")]}}}]})
}

/// Builds (or finds stored) the system of `source`, and its incus image
/// files when `with_image`.
pub fn build_system(
    store: &Path,
    catalog: &Catalog,
    source: &Source,
    with_image: bool,
    quiet: bool,
) -> Result<System, BackendError> {
    let (mut doc, origin_name, pipeline, origin) = match source {
        Source::Pipeline { text, origin, name } => {
            let doc: Value = serde_json::from_str(text)
                .map_err(|e| BackendError::Build(format!("{origin}: {e}")))?;
            (
                doc,
                origin.clone(),
                name.clone(),
                format!("{origin} pipeline {name}"),
            )
        }
        Source::Tarball(path) => {
            let path = fs_err::canonicalize(path)
                .map_err(|_| BackendError::ImageMissing(path.display().to_string()))?;
            let checksum = strata_sources::sha256_file(&path)?;
            let doc = json!({"version": "2",
                "sources": {"curl": {"items": {checksum.as_str(): {"url": format!("file://{}", path.display())}}}},
                "pipelines": [{"name": "system", "stages": [{"type": "untar",
                    "options": {"source": format!("input://tarball/{}", checksum.as_str())},
                    "inputs": {"tarball": {"type": "files", "origin": "source", "references": [checksum.as_str()]}}}]}]});
            (
                doc,
                path.display().to_string(),
                "system".to_owned(),
                format!("tarball {}", path.display()),
            )
        }
    };
    let text = doc.to_string();
    let m = manifest::load(&text, &origin_name, catalog)
        .map_err(|e| BackendError::Build(e.to_string()))?;
    if !m.pipelines.iter().any(|p| p.name == pipeline) {
        let names: Vec<&str> = m.pipelines.iter().map(|p| p.name.as_str()).collect();
        return Err(BackendError::Build(format!(
            "{origin_name}: no pipeline `{pipeline}`\n    hint: pipelines: {}",
            names.join(", ")
        )));
    }
    let plan = Plan::new(&m);
    let Some(id) = plan.pipeline_id(m.index(&pipeline)).cloned() else {
        return Err(BackendError::Build(format!(
            "pipeline `{pipeline}` has no stages: it makes no system"
        )));
    };
    build(store, catalog, &m, vec![pipeline.clone()], quiet)?;
    let stored = Store::open(store, crate::store::DEFAULT_LOCK_TIMEOUT)
        .map_err(|e| BackendError::Build(e.to_string()))?;
    let view = |id: &Id| {
        stored
            .view(id)
            .map_err(|e| BackendError::Build(e.to_string()))
    };
    let system_view = view(&id)?;
    let tree = system_view.path().to_path_buf();
    if !with_image {
        return Ok(System {
            tree,
            id,
            origin,
            image_files: None,
            views: vec![system_view],
        });
    }
    check_bootable(&tree, &origin)?;
    if m.pipelines.iter().any(|p| p.name == IMAGE_PIPELINE) {
        return Err(BackendError::Build(format!(
            "{origin_name}: the pipeline name `{IMAGE_PIPELINE}` is strata's own"
        )));
    }
    doc["pipelines"]
        .as_array_mut()
        .expect("a loaded manifest has a pipeline list")
        .push(image_pipeline(IMAGE_PIPELINE, &pipeline, &id, &origin));
    let text = doc.to_string();
    let m = manifest::load(&text, &origin_name, catalog)
        .map_err(|e| BackendError::Build(e.to_string()))?;
    let plan = build(
        store,
        catalog,
        &m,
        vec![pipeline.clone(), IMAGE_PIPELINE.to_owned()],
        quiet,
    )?;
    let files_view = view(
        plan.pipeline_id(m.index(IMAGE_PIPELINE))
            .expect("one stage"),
    )?;
    Ok(System {
        tree,
        id,
        origin,
        image_files: Some(files_view.path().to_path_buf()),
        views: vec![system_view, files_view],
    })
}

fn build(
    store: &Path,
    catalog: &Catalog,
    m: &manifest::Manifest,
    checkpoints: Vec<String>,
    quiet: bool,
) -> Result<Plan, BackendError> {
    let plan = Plan::new(m);
    let monitor = Monitor::plain(quiet);
    let (_, result) = exec::Build::new(m, catalog, store)
        .checkpoints(checkpoints)
        .run(&monitor);
    match result {
        Ok(()) => Ok(plan),
        Err(exec::BuildError::Interrupted) => Err(BackendError::Interrupted),
        Err(e) => Err(BackendError::Build(e.to_string())),
    }
}
/// The split image files in a tarball-to-incus output tree: (metadata, rootfs).
pub fn split_files(dir: &Path) -> Result<(PathBuf, PathBuf), BackendError> {
    let find = |prefix: &str| -> Option<PathBuf> {
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix).then(|| e.path())
        })
    };
    match (find("incus.tar"), find("rootfs.tar")) {
        (Some(meta), Some(rootfs)) => Ok((meta, rootfs)),
        _ => Err(BackendError::ImportFailed {
            image: dir.display().to_string(),
            detail: "no incus.tar.* and rootfs.tar.* in the stage's output".into(),
        }),
    }
}

/// Imports the image files in `dir` as `alias`, unless incus has it already.
/// Returns whether it imported.
pub fn import(cli: &dyn Cli, store: &Path, dir: &Path, alias: &str) -> Result<bool, BackendError> {
    let key = store_key(store);
    if image_exists(cli, alias)? {
        // Reused: now this store's, so that gc elsewhere leaves it alone.
        let _ = incus(cli, &["image", "set-property", alias, "strata.store", &key]);
        return Ok(false);
    }
    let (meta, rootfs) = split_files(dir)?;
    let (meta, rootfs) = (meta.to_string_lossy(), rootfs.to_string_lossy());
    let ran = incus(cli, &["image", "import", &meta, &rootfs, "--alias", alias])?;
    if !ran.outcome.success() {
        let detail = String::from_utf8_lossy(&ran.stderr).trim().to_owned();
        // Two strata importing the same image at once: the other one won.
        if image_exists(cli, alias)? {
            return Ok(false);
        }
        return Err(BackendError::ImportFailed {
            image: alias.to_owned(),
            detail,
        });
    }
    // Marks the image as this store's, for gc.
    let _ = incus(cli, &["image", "set-property", alias, "strata.store", &key]);
    Ok(true)
}

/// Refuses a tree that is no bootable system before anything is imported.
pub fn check_bootable(tree: &Path, image: &str) -> Result<(), BackendError> {
    let init = super::pull::open_in_root(tree, "/sbin/init", rustix::fs::OFlags::PATH);
    if init.is_err() {
        return Err(BackendError::NotASystem {
            image: image.to_owned(),
            backend: super::Backend::IncusLxc,
            path: "/sbin/init",
        });
    }
    Ok(())
}
