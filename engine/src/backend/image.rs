//! incus images of systems strata built: `artifact/<id>` aliases, imported
//! once from the files the tarball-to-incus stage made (system.rs
//! builds them).

use super::BackendError;
use super::cli::Cli;
use super::incus::{image_exists, incus, store_key};
use crate::id::Id;
use std::path::{Path, PathBuf};

/// The image alias of a system.
pub fn alias(id: &Id) -> String {
    format!("artifact/{id}")
}

/// The split image files in a tarball-to-incus output tree: (metadata,
/// rootfs): a container's `rootfs.tar.*` or a virtual machine's
/// `rootfs.img` (format vm).
pub fn split_files(dir: &Path) -> Result<(PathBuf, PathBuf), BackendError> {
    let find = |prefix: &str| -> Option<PathBuf> {
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix).then(|| e.path())
        })
    };
    match (
        find("incus.tar"),
        find("rootfs.tar").or_else(|| find("rootfs.img")),
    ) {
        (Some(meta), Some(rootfs)) => Ok((meta, rootfs)),
        _ => Err(BackendError::ImportFailed {
            image: dir.display().to_string(),
            detail: "no incus.tar.* with rootfs.tar.* or rootfs.img in the stage's output".into(),
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
