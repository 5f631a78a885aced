//! Environments by name, kept between strata invocations.
//!
//! ```text
//! STORE/envs/NAME/state.json   EnvState (backend, image, instance, running, stop timeout)
//! STORE/envs/NAME/tree/        unshare only: the environment's own copy of its system
//! ```
//!
//! state.json is written beside and renamed over, so it is whole or absent.

use super::cli::Cli;
use super::image::{self, Source};
use super::incus::{Incus, InstanceSpec, check_name};
use super::unshare::Unshare;
use super::{Backend, BackendError, EnvState, ExecutionEnvironment};
use crate::catalog::Catalog;
use fs_err as fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// STORE/envs.
pub fn dir(store: &Path) -> PathBuf {
    store.join("envs")
}

fn state_path(store: &Path, name: &str) -> PathBuf {
    dir(store).join(name).join("state.json")
}

/// The state of environment `name`.
pub fn load(store: &Path, name: &str) -> Result<EnvState, BackendError> {
    check_name(name)?;
    let path = state_path(store, name);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackendError::NoSuchEnvironment(name.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    serde_json::from_str(&text).map_err(|e| BackendError::Tool {
        command: format!("read {}", path.display()),
        detail: e.to_string(),
    })
}

/// Saves `state`.
pub fn save(store: &Path, state: &EnvState) -> Result<(), BackendError> {
    let path = state_path(store, &state.name);
    fs::create_dir_all(path.parent().expect("envs/NAME"))?;
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    fs::write(
        &tmp,
        serde_json::to_vec_pretty(state).expect("state is JSON"),
    )?;
    fs::rename(&tmp, &path)?;
    Ok(())
}

/// Every environment of the store, by name.
pub fn list(store: &Path) -> Result<Vec<EnvState>, BackendError> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir(store)) else {
        return Ok(out);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(state) = load(store, &name) {
            out.push(state);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What to make an environment from.
#[derive(Debug, Clone)]
pub enum Image {
    /// A system strata builds (or has stored).
    Build(Source),
    /// An image incus already has (incus backends only): its alias.
    Alias(String),
}

/// Makes environment `name` on `backend` from `image`, and keeps its state.
pub fn create(
    store: &Path,
    catalog: &Catalog,
    name: &str,
    backend: Backend,
    image: &Image,
    cli: Arc<dyn Cli>,
    quiet: bool,
) -> Result<Box<dyn ExecutionEnvironment>, BackendError> {
    check_name(name)?;
    if state_path(store, name).exists() {
        return Err(BackendError::AlreadyExists(name.to_owned()));
    }
    let env: Box<dyn ExecutionEnvironment> = match (backend, image) {
        (Backend::Qemu, _) => return Err(BackendError::NotImplemented(Backend::Qemu)),
        (Backend::Unshare, Image::Alias(alias)) => {
            return Err(BackendError::ImageMissing(format!(
                "`{alias}` is an incus image; unshare needs a pipeline or a tarball"
            )));
        }
        (Backend::Unshare, Image::Build(source)) => {
            let system = image::build_system(store, catalog, source, false, quiet)?;
            Box::new(Unshare::create(
                &dir(store).join(name),
                name,
                &system.tree,
                &system.origin,
                system.id.as_str(),
            )?)
        }
        (Backend::IncusLxc | Backend::IncusVm, image) => {
            let (alias, origin, id) = match image {
                Image::Alias(alias) => {
                    (alias.clone(), format!("incus image {alias}"), String::new())
                }
                Image::Build(source) => {
                    let system = image::build_system(store, catalog, source, true, quiet)?;
                    let alias = image::alias(&system.id);
                    let files = system.image_files.expect("asked for");
                    image::import(cli.as_ref(), store, &files, &alias)?;
                    (alias, system.origin, system.id.to_string())
                }
            };
            // An environment for people and scripts has debusine's network.
            let spec = InstanceSpec {
                name,
                backend,
                alias: &alias,
                origin: &origin,
                artifact_id: &id,
                owner_pid: None,
                network: true,
            };
            Box::new(Incus::create(store, &spec, cli)?)
        }
    };
    save(store, env.state())?;
    Ok(env)
}

/// Opens environment `name`.
pub fn open(store: &Path, name: &str) -> Result<Box<dyn ExecutionEnvironment>, BackendError> {
    super::open(load(store, name)?, store)
}

/// Destroys environment `name` and forgets it.
pub fn delete(store: &Path, name: &str) -> Result<(), BackendError> {
    let mut env = open(store, name)?;
    env.destroy()?;
    fs::remove_dir_all(dir(store).join(name))?;
    Ok(())
}
