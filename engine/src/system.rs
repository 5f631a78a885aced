//! Systems for environments and images, made by strata's own build: a
//! derived manifest through [`exec::build`] with checkpoints, so
//! sandboxing, caching and content ids are the same as for any build. Used
//! by `strata env create` and by tasks; it sits above the scheduler, which
//! never knows it is building a system for someone.
//!
//! ```text
//! pipeline source:  the user's manifest + { "strata-incus-image": tarball-to-incus over name:P }
//! tarball source:   { sources.curl: file:///TARBALL } + { "system": untar }
//!                                                     + { "strata-incus-image": tarball-to-incus over name:system }
//!   → stored tree of P (or system)            → unshare copies it
//!   → stored incus.tar.* + rootfs.tar.*       → incus image import --alias artifact/<id of P>
//! ```

use crate::backend::cli::Cli;
use crate::backend::envs::{self, Prepared};
use crate::backend::image::{alias, check_bootable, import};
use crate::backend::qemu::{BootFrom, DiskFormat, DiskImage};
use crate::backend::{Backend, BackendError, ExecutionEnvironment};
use crate::catalog::Catalog;
use crate::derive;
use crate::exec;
use crate::id::Id;
use crate::manifest;
use crate::monitor::Monitor;
use crate::store::Store;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// The name of the derived pipeline that makes incus image files.
pub const IMAGE_PIPELINE: &str = "strata-incus-image";

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

/// Builds (or finds stored) the system of `source`, and its incus image
/// files when `with_image`.
pub fn build_system(
    store: &Store,
    catalog: &Catalog,
    source: &Source,
    with_image: bool,
    quiet: bool,
) -> Result<System, BackendError> {
    let (text, origin_name, pipeline, origin) = match source {
        Source::Pipeline { text, origin, name } => (
            text.clone(),
            origin.clone(),
            name.clone(),
            format!("{origin} pipeline {name}"),
        ),
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
                doc.to_string(),
                path.display().to_string(),
                "system".to_owned(),
                format!("tarball {}", path.display()),
            )
        }
    };
    let mut m = manifest::load(&text, &origin_name, catalog)
        .map_err(|e| BackendError::Build(e.to_string()))?;
    if !m.pipelines.iter().any(|p| p.name == pipeline) {
        let names: Vec<&str> = m.pipelines.iter().map(|p| p.name.as_str()).collect();
        return Err(BackendError::Build(format!(
            "{origin_name}: no pipeline `{pipeline}`\n    hint: pipelines: {}",
            names.join(", ")
        )));
    }
    if with_image && m.pipelines.iter().any(|p| p.name == IMAGE_PIPELINE) {
        return Err(BackendError::Build(format!(
            "{origin_name}: the pipeline name `{IMAGE_PIPELINE}` is strata's own"
        )));
    }
    let mut plan = derive::plan(&mut m);
    let pi = m.index(&pipeline);
    let Some(id) = plan.pipeline_id(pi).cloned() else {
        return Err(BackendError::Build(format!(
            "pipeline `{pipeline}` has no stages: it makes no system"
        )));
    };
    build(store, catalog, &m, vec![pipeline.clone()], quiet)?;
    let view = |id: &Id| {
        store
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
    let epoch = m.pipelines[pi].source_epoch;
    m.pipelines.push(derive::image_pipeline(
        IMAGE_PIPELINE,
        &pipeline,
        &id,
        &origin,
        epoch,
    ));
    plan.extend(&m);
    build(
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
    store: &Store,
    catalog: &Catalog,
    m: &manifest::Manifest,
    checkpoints: Vec<String>,
    quiet: bool,
) -> Result<(), BackendError> {
    let monitor = Monitor::plain(quiet);
    // The build opens the store itself; ours is shared, so it can, but its
    // collection at the end cannot take the store exclusively and is left
    // to the next build (it would remove layers under our views).
    let (_, result) = exec::Build::new(m, catalog, store.root())
        .checkpoints(checkpoints)
        .run(&monitor);
    match result {
        Ok(()) => Ok(()),
        Err(exec::BuildError::Interrupted) => Err(BackendError::Interrupted),
        Err(e) => Err(BackendError::Build(e.to_string())),
    }
}

/// The one disk image (`*.qcow2`, `*.raw`) at the top of a pipeline's
/// tree: what a SystemImageBuild pipeline makes. Links are not followed.
fn disk_image(tree: &std::path::Path) -> Option<(PathBuf, DiskFormat)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(tree).ok()?.flatten() {
        let path = entry.path();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("qcow2") => DiskFormat::Qcow2,
            Some("raw") => DiskFormat::Raw,
            _ => continue,
        };
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            found.push((path, format));
        }
    }
    // Two images (raw and qcow2 of one system): the qcow2 one, smaller.
    found.sort_by_key(|(_, f)| *f != DiskFormat::Qcow2);
    found.into_iter().next()
}

/// What to make an environment from.
#[derive(Debug, Clone)]
pub enum Image {
    /// A system strata builds (or has stored).
    Build(Source),
    /// An image incus already has (incus backends only): its alias.
    Alias(String),
}

/// Makes environment `name` on `backend` from `image`: builds its system
/// when strata makes it (and imports its incus image), then hands the
/// backend what it starts from.
pub fn create_env(
    store: &Store,
    catalog: &Catalog,
    name: &str,
    backend: Backend,
    image: &Image,
    cli: Arc<dyn Cli>,
    quiet: bool,
) -> Result<Box<dyn ExecutionEnvironment>, BackendError> {
    envs::check_new(store, name)?;
    // Kept alive until the backend copied or imported what it needs.
    let system;
    let prepared = match (backend, image) {
        (Backend::Qemu, Image::Alias(alias)) => {
            return Err(BackendError::ImageMissing(format!(
                "`{alias}` is an incus image; qemu needs a pipeline that makes a disk image"
            )));
        }
        (Backend::Qemu, Image::Build(source)) => {
            system = build_system(store, catalog, source, false, quiet)?;
            let (disk, format) =
                disk_image(&system.tree).ok_or_else(|| BackendError::NotASystem {
                    image: system.origin.clone(),
                    backend: Backend::Qemu,
                    path: Backend::Qemu.required_path(),
                })?;
            // A disk image made by a pipeline boots with its own bootloader.
            Prepared::Disk {
                image: DiskImage {
                    disk,
                    format,
                    boot: BootFrom::Efi,
                },
                origin: system.origin.clone(),
                id: system.id.to_string(),
                network: true,
            }
        }
        (Backend::Unshare, Image::Alias(alias)) => {
            return Err(BackendError::ImageMissing(format!(
                "`{alias}` is an incus image; unshare needs a pipeline or a tarball"
            )));
        }
        (Backend::Unshare, Image::Build(source)) => {
            system = build_system(store, catalog, source, false, quiet)?;
            Prepared::Tree {
                tree: &system.tree,
                origin: &system.origin,
                id: system.id.to_string(),
            }
        }
        (Backend::IncusLxc | Backend::IncusVm, Image::Alias(alias)) => Prepared::Image {
            alias: alias.clone(),
            origin: format!("incus image {alias}"),
            id: String::new(),
        },
        (Backend::IncusLxc | Backend::IncusVm, Image::Build(source)) => {
            system = build_system(store, catalog, source, true, quiet)?;
            let name = alias(&system.id);
            let files = system.image_files.as_deref().expect("asked for");
            import(cli.as_ref(), store.root(), files, &name)?;
            Prepared::Image {
                alias: name,
                origin: system.origin.clone(),
                id: system.id.to_string(),
            }
        }
    };
    envs::create(store, name, backend, prepared, cli)
}
