//! Environments by name, kept between strata invocations.
//!
//! ```text
//! STORE/instances/NAME/state.json   EnvState (backend, image, instance, running, stop timeout)
//! STORE/instances/NAME/tree/        unshare only: the environment's own copy of its system
//! STORE/instances/NAME/qemu/        qemu only: overlay, pinned image, sockets, console (qemu/mod.rs)
//! ```
//!
//! state.json is written beside and renamed over, so it is whole or absent.

use super::cli::Cli;
use super::incus::{Incus, InstanceSpec, check_name};
use super::qemu::Qemu;
use super::unshare::Unshare;
use super::{Backend, BackendError, EnvState, ExecutionEnvironment};
use crate::store::{Store, durable};
use fs_err as fs;
use std::path::Path;
use std::sync::Arc;

/// The state of environment `name`.
pub fn load(store: &Store, name: &str) -> Result<EnvState, BackendError> {
    check_name(name)?;
    let path = store.layout().instance(name).state();
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
pub fn save(store: &Store, state: &EnvState) -> Result<(), BackendError> {
    let instance = store.layout().instance(&state.name);
    let path = instance.state();
    durable::create_dir_all(instance.dir())?;
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    durable::write(
        &tmp,
        &path,
        &serde_json::to_vec_pretty(state).expect("state is JSON"),
    )?;
    Ok(())
}

/// Every environment of the store, by name.
pub fn list(store: &Store) -> Result<Vec<EnvState>, BackendError> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(store.layout().instances()) else {
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
    /// A disk image qemu boots.
    Disk {
        /// The image and how it boots.
        image: super::qemu::DiskImage,
        /// What it was made from, for people.
        origin: String,
        /// The system's content id.
        id: String,
        /// Whether the VM gets a (user-mode) NIC.
        network: bool,
    },
}

/// Refuses a bad or taken environment name.
pub fn check_new(store: &Store, name: &str) -> Result<(), BackendError> {
    check_name(name)?;
    if store.layout().instance(name).state().exists() {
        return Err(BackendError::AlreadyExists(name.to_owned()));
    }
    Ok(())
}

/// Makes environment `name` on `backend` from `from`, and keeps its state.
pub fn create(
    store: &Store,
    name: &str,
    backend: Backend,
    from: Prepared<'_>,
    cli: Arc<dyn Cli>,
) -> Result<Box<dyn ExecutionEnvironment>, BackendError> {
    check_new(store, name)?;
    let env: Box<dyn ExecutionEnvironment> = match (backend, from) {
        (Backend::Unshare, Prepared::Tree { tree, origin, id }) => Box::new(Unshare::create(
            &store.layout().instance(name),
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
            Box::new(Incus::create(store.root(), &spec, cli)?)
        }
        (
            Backend::Qemu,
            Prepared::Disk {
                image,
                origin,
                id,
                network,
            },
        ) => Box::new(Qemu::create(
            &store.layout().instance(name),
            name,
            &image,
            &origin,
            &id,
            network,
        )?),
        (backend, _) => return Err(BackendError::NotImplemented(backend)),
    };
    save(store, env.state())?;
    Ok(env)
}

/// Opens environment `name`.
pub fn open(store: &Store, name: &str) -> Result<Box<dyn ExecutionEnvironment>, BackendError> {
    super::open(load(store, name)?, store)
}

/// Destroys environment `name` and forgets it.
pub fn delete(store: &Store, name: &str) -> Result<(), BackendError> {
    let mut env = open(store, name)?;
    env.destroy()?;
    fs::remove_dir_all(store.layout().instance(name).dir())?;
    Ok(())
}
