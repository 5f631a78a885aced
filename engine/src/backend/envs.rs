//! Environments by name, kept between strata invocations.
//!
//! ```text
//! STORE/envs/NAME/state.json   EnvState (backend, image, instance, running, stop timeout)
//! STORE/envs/NAME/tree/        unshare only: the environment's own copy of its system
//! ```
//!
//! state.json is written beside and renamed over, so it is whole or absent.

use super::cli::Cli;
use super::incus::{Incus, InstanceSpec, check_name};
use super::unshare::Unshare;
use super::{Backend, BackendError, EnvState, ExecutionEnvironment};
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

/// What a backend starts an environment from, once the system is built.
#[derive(Debug)]
pub enum Prepared<'a> {
    /// A system tree (unshare copies it).
    Tree {
        /// The stored tree.
        tree: &'a Path,
        /// What it was made from, for people.
        origin: &'a str,
        /// Its content id.
        id: String,
    },
    /// An incus image.
    Image {
        /// Its alias.
        alias: String,
        /// What it was made from, for people.
        origin: String,
        /// The system's content id (empty for an image incus had).
        id: String,
    },
}

/// Refuses a bad or taken environment name.
pub fn check_new(store: &Path, name: &str) -> Result<(), BackendError> {
    check_name(name)?;
    if state_path(store, name).exists() {
        return Err(BackendError::AlreadyExists(name.to_owned()));
    }
    Ok(())
}

/// Makes environment `name` on `backend` from `from`, and keeps its state.
pub fn create(
    store: &Path,
    name: &str,
    backend: Backend,
    from: Prepared<'_>,
    cli: Arc<dyn Cli>,
) -> Result<Box<dyn ExecutionEnvironment>, BackendError> {
    check_new(store, name)?;
    let env: Box<dyn ExecutionEnvironment> = match (backend, from) {
        (Backend::Unshare, Prepared::Tree { tree, origin, id }) => Box::new(Unshare::create(
            &dir(store).join(name),
            name,
            tree,
            origin,
            &id,
        )?),
        (Backend::IncusLxc | Backend::IncusVm, Prepared::Image { alias, origin, id }) => {
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
        (backend, _) => return Err(BackendError::NotImplemented(backend)),
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
