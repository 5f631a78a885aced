//! The closed families that a manifest names and the rooms below it act
//! on. They live here, under both, so that `manifest` need not import
//! `backend` (nor `backend` the manifest) to agree on a name.

use serde::{Deserialize, Serialize};

/// Where stages and commands run: the closed family of backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// bubblewrap over an unpacked tree (the default for stages: "bwrap").
    #[serde(alias = "bwrap")]
    Unshare,
    /// An incus system container.
    IncusLxc,
    /// An incus virtual machine.
    IncusVm,
    /// qemu-system over a disk image.
    Qemu,
}

impl Backend {
    /// The name users write.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Unshare => "unshare",
            Backend::IncusLxc => "incus-lxc",
            Backend::IncusVm => "incus-vm",
            Backend::Qemu => "qemu",
        }
    }

    /// Parses a name users write (`bwrap` is `unshare`).
    pub fn parse(s: &str) -> Result<Backend, UnknownBackend> {
        match s {
            "unshare" | "bwrap" => Ok(Backend::Unshare),
            "incus-lxc" => Ok(Backend::IncusLxc),
            "incus-vm" => Ok(Backend::IncusVm),
            "qemu" => Ok(Backend::Qemu),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }

    /// The file an image must hold for this backend to start it.
    pub fn required_path(self) -> &'static str {
        match self {
            // Every run starts `sh` once to make the unprivileged user.
            Backend::Unshare => "/bin/sh",
            Backend::IncusLxc | Backend::IncusVm => "/sbin/init",
            // What a SystemImageBuild pipeline leaves at its tree's top.
            Backend::Qemu => "/*.qcow2 or /*.raw (a disk image)",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend name strata does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend `{0}`\n    hint: unshare (or bwrap), incus-lxc, incus-vm, qemu")]
pub struct UnknownBackend(pub String);
