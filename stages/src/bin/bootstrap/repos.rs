//! Each repository resolved: its mirror (else the build root's), its
//! components (else its Release file's), its keyring; and the deb822
//! sources apt is given while bootstrapping and the new system keeps.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use strata_stage::debian::{self, AptSource, Stanza};
use strata_stage::{Failure, run_tool};

use crate::keyrings::Keyring;
use crate::options::{Check, Repository};

/// Where the build root's apt keeps the Debian archive's keys.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

pub const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

/// A repository with everything decided: what both sources files say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub types: Vec<String>,
    pub mirror: String,
    pub suite: String,
    /// Empty for a flat repository (suite ending in `/`).
    pub components: Vec<String>,
    pub check: Check,
    /// The keyring apt checks it with while bootstrapping (a build root path).
    pub signed_by: Option<String>,
    /// The keyring the new system's apt checks it with.
    pub final_signed_by: Option<String>,
}

/// Decides a repository's mirror, components and keyrings.
pub fn resolve(
    r: &Repository,
    index: usize,
    host: &[AptSource],
    keyring: Option<&Keyring>,
    use_signed_by: bool,
    work: &Path,
) -> anyhow::Result<Repo> {
    let (mirror, host_keyring) = match &r.mirror {
        Some(m) => {
            let m = m.trim_end_matches('/').to_owned();
            let k = debian::signed_by_for(host, &m);
            (m, k)
        }
        None => debian::default_mirror(host).ok_or_else(|| {
            anyhow!(
                "bootstrap_repositories[{index}] has no mirror and the build root's apt sources \
                 (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list and *.sources) name no \
                 Debian mirror; give one with \"mirror\""
            )
        })?,
    };
    let components = match &r.components {
        _ if is_flat(&r.suite) => Vec::new(),
        Some(c) => c.clone(),
        None => suite_components(&mirror, &r.suite, &work.join(format!("Release-{index}")))?,
    };
    let (signed_by, final_signed_by) = match (use_signed_by, r.check_signature_with) {
        (false, _) | (_, Check::Unchecked) => (None, None),
        (true, Check::System) => {
            let k = host_keyring.or_else(|| {
                Path::new(DEBIAN_KEYRING)
                    .exists()
                    .then(|| DEBIAN_KEYRING.to_owned())
            });
            (k.clone(), k)
        }
        (true, Check::External) => {
            let k = keyring.ok_or_else(|| {
                anyhow!(
                    "bootstrap_repositories[{index}]: check_signature_with external needs a keyring"
                )
            })?;
            let here = k.path.display().to_string();
            let there = if k.install {
                k.installed_path()
            } else {
                here.clone()
            };
            (Some(here), Some(there))
        }
    };
    Ok(Repo {
        types: r.types.clone(),
        mirror,
        suite: r.suite.clone(),
        components,
        check: r.check_signature_with,
        signed_by,
        final_signed_by,
    })
}

pub fn is_flat(suite: &str) -> bool {
    suite.ends_with('/')
}

/// The components a suite's Release file lists, fetched with apt-helper
/// (which knows the build root's proxies and mirror methods).
pub fn suite_components(mirror: &str, suite: &str, dest: &Path) -> anyhow::Result<Vec<String>> {
    let mut last = None;
    for file in ["Release", "InRelease"] {
        let url = format!("{mirror}/dists/{suite}/{file}");
        match download(&url, dest) {
            Ok(()) => {
                let text = std::fs::read_to_string(dest)
                    .with_context(|| format!("cannot read {} (from {url})", dest.display()))?;
                return debian::release_components(&text).ok_or_else(|| {
                    anyhow!("{url} lists no Components; give the repository's components")
                });
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("one download was tried");
    if e.to_string().contains("404") {
        bail!(
            "suite {suite} not found at {mirror} (dists/{suite}/Release and InRelease: 404 Not Found)"
        );
    }
    Err(anyhow!(e).context(format!(
        "cannot fetch the Release file of suite {suite} from {mirror} to find its components \
         (give components to skip this)"
    )))
}

pub fn download(url: &str, dest: &Path) -> Result<(), Failure> {
    run_tool(
        Command::new(APT_HELPER)
            .args(["download-file", url])
            .arg(dest),
    )
}

/// The deb822 sources: for bootstrapping (`final_ == false`, keyrings as
/// the build root has them) or for the new system to keep.
pub fn render_sources(repos: &[Repo], final_: bool) -> anyhow::Result<String> {
    let stanzas = repos
        .iter()
        .map(|r| -> anyhow::Result<String> {
            let mut s = Stanza::new()
                .words("Types", &r.types)?
                .field("URIs", &r.mirror)?
                .field("Suites", &r.suite)?;
            if !r.components.is_empty() {
                s = s.words("Components", &r.components)?;
            }
            let signed_by = if final_ {
                &r.final_signed_by
            } else {
                &r.signed_by
            };
            if let Some(k) = signed_by {
                s = s.field("Signed-By", k)?;
            }
            if r.check == Check::Unchecked {
                s = s.field("Trusted", "yes")?;
            }
            Ok(s.finish())
        })
        .enumerate()
        .map(|(i, stanza)| stanza.with_context(|| format!("options.bootstrap_repositories[{i}]")))
        .collect::<anyhow::Result<Vec<String>>>()?;
    Ok(stanzas.join("\n"))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn repo(suite: &str, components: &[&str]) -> Repo {
        Repo {
            types: vec!["deb".into()],
            mirror: "http://127.0.0.1/debian".into(),
            suite: suite.into(),
            components: components.iter().map(|&c| c.into()).collect(),
            check: Check::System,
            signed_by: Some(DEBIAN_KEYRING.into()),
            final_signed_by: Some(DEBIAN_KEYRING.into()),
        }
    }

    #[test]
    fn sources_have_one_stanza_per_repository() {
        let mut flat = repo("./", &[]);
        flat.check = Check::Unchecked;
        flat.signed_by = None;
        flat.final_signed_by = None;
        flat.types = vec!["deb".into(), "deb-src".into()];
        let mut external = repo("trixie", &["main"]);
        external.check = Check::External;
        external.signed_by = Some("/tmp/w/keyring-2/k.gpg".into());
        external.final_signed_by = Some("/usr/local/share/keyrings/k.gpg".into());
        let repos = [repo("bookworm", &["main", "contrib"]), flat, external];
        assert_eq!(
            render_sources(&repos, false).unwrap(),
            "Types: deb\nURIs: http://127.0.0.1/debian\nSuites: bookworm\nComponents: main contrib\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             \n\
             Types: deb deb-src\nURIs: http://127.0.0.1/debian\nSuites: ./\nTrusted: yes\n\
             \n\
             Types: deb\nURIs: http://127.0.0.1/debian\nSuites: trixie\nComponents: main\n\
             Signed-By: /tmp/w/keyring-2/k.gpg\n"
        );
        assert!(
            render_sources(&repos, true)
                .unwrap()
                .ends_with("Signed-By: /usr/local/share/keyrings/k.gpg\n")
        );
    }
}
