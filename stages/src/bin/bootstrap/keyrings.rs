//! Repository keyrings: a file in the build root's keyrings, or
//! downloaded and checked against its sha256; named so apt accepts them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::options::KeyringOption;
use crate::repos::download;

/// Where an installed keyring goes in the new system.
pub const INSTALLED_KEYRINGS: &str = "/usr/local/share/keyrings";

/// A keyring ready to use: where it is in the build root, what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    pub path: PathBuf,
    pub name: String,
    pub install: bool,
}

impl Keyring {
    pub fn installed_path(&self) -> String {
        format!("{INSTALLED_KEYRINGS}/{}", self.name)
    }
}

/// Finds (file://) or downloads a keyring and checks its sha256.
pub fn fetch_keyring(k: &KeyringOption, dir: &Path) -> anyhow::Result<Keyring> {
    let path = if let Some(path) = k.url.strip_prefix("file://") {
        PathBuf::from(path)
    } else {
        // Beside `dir`, in the scratch folder, where apt's user may write.
        let dest = dir.with_extension("download");
        download(&k.url, &dest)
            .with_context(|| format!("cannot download the keyring {}", k.url))?;
        dest
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the keyring {} ({})", k.url, path.display()))?;
    if let Some(expected) = &k.sha256sum {
        let actual = hex(&Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected) {
            bail!(
                "keyring {} has sha256 {actual}, but the manifest expects {expected}",
                k.url
            );
        }
    }
    let name = keyring_name(&k.url, &bytes);
    // apt reads a keyring by its extension; a downloaded one gets its name.
    let path = if k.url.starts_with("file://") {
        path
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let named = dir.join(&name);
        std::fs::rename(&path, &named)
            .with_context(|| format!("cannot rename {}", path.display()))?;
        named
    };
    Ok(Keyring {
        path,
        name,
        install: k.install,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A plain file name for a keyring, ending in `.asc` (armored) or `.gpg`
/// as apt needs: the URL's last component where it is one.
pub fn keyring_name(url: &str, bytes: &[u8]) -> String {
    let last = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    if clean.ends_with(".gpg") || clean.ends_with(".asc") {
        return clean.to_owned();
    }
    let stem = if clean.is_empty() { "keyring" } else { clean };
    let armored = bytes.starts_with(b"-----BEGIN PGP");
    format!("{stem}.{}", if armored { "asc" } else { "gpg" })
}

/// A folder holding the external keyrings and the build root's own
/// trusted.gpg.d keys (so repositories checked by the system still pass).
pub fn trusted_dir(dir: &Path, keyrings: &[Keyring]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let system: Vec<PathBuf> = std::fs::read_dir("/etc/apt/trusted.gpg.d")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let external = keyrings.iter().map(|k| k.path.clone());
    for (i, src) in system.into_iter().chain(external).enumerate() {
        let Some(name) = src.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !(name.ends_with(".gpg") || name.ends_with(".asc")) {
            continue;
        }
        let dest = dir.join(format!("{i:04}-{name}"));
        std::fs::copy(&src, &dest)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    }
    Ok(dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyrings_get_names_apt_accepts() {
        assert_eq!(
            keyring_name("https://127.0.0.1/a/archive.gpg?x=1", b"\x99"),
            "archive.gpg"
        );
        assert_eq!(
            keyring_name(
                "https://127.0.0.1/key",
                b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
            ),
            "key.asc"
        );
        assert_eq!(keyring_name("https://127.0.0.1/", b"\x99"), "keyring.gpg");
        assert_eq!(keyring_name("https://127.0.0.1/..", b"\x99"), "keyring.gpg");
        assert_eq!(
            keyring_name("file:///usr/share/keyrings/a b.asc", b""),
            "a_b.asc"
        );
    }

    #[test]
    fn a_keyring_with_the_wrong_checksum_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.gpg");
        std::fs::write(&path, b"key").unwrap();
        let url = format!("file://{}", path.display());
        let wrong = "0".repeat(64);
        let err = fetch_keyring(
            &KeyringOption {
                url: url.clone(),
                sha256sum: Some(wrong.clone()),
                install: false,
            },
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        let actual = hex(&Sha256::digest(b"key"));
        assert_eq!(
            err,
            format!("keyring {url} has sha256 {actual}, but the manifest expects {wrong}")
        );
        let ok = fetch_keyring(
            &KeyringOption {
                url,
                sha256sum: Some(actual.to_uppercase()),
                install: true,
            },
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            ok,
            Keyring {
                path,
                name: "k.gpg".into(),
                install: true
            }
        );
    }
}
