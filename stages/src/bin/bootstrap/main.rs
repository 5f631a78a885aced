//! `bootstrap`: creates a Debian system in the (empty) tree with the build
//! root's mmdebstrap. Its options are debusine's SystemBootstrap task_data:
//!
//! ```json
//! {"bootstrap_options": {"architecture": "amd64", "variant": "minbase", "extra_packages": ["hello"]},
//!  "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}],
//!  "customization_script": "echo hi > /etc/motd"}
//! ```
//!
//! ```text
//!   repositories ─┬─ mirror?      else the build root's apt sources (first Debian mirror)
//!                 ├─ components?  else MIRROR/dists/SUITE/Release (apt-helper)
//!                 └─ keyring?     file:///usr/share/keyrings/… or downloaded; sha256 checked
//!        │
//!        ├──> /tmp/strata-bootstrap-PID/strata.sources   what apt uses while bootstrapping
//!        └──> /tmp/strata-bootstrap-PID/debian.sources   what the new system keeps
//!
//!   mmdebstrap --mode=root ... SUITE /run/strata/tree strata.sources
//!        customize hooks: debian.sources replaces 0000strata.sources,
//!                         keyrings installed, customization_script run in the chroot
//!        output streamed to the log and kept to explain a failure
//!
//!   then, beneath the tree: no /etc/hostname, an empty /etc/resolv.conf,
//!   no apt lists or caches; metadata: packages, os-release, what was used
//! ```
//!
//! On failure the tree is emptied: mmdebstrap leaves half a system behind.
//!
//! One module a job: `options` (what the manifest may say), `repos` (each
//! repository resolved, the sources files), `keyrings`, `mmdebstrap` (its
//! command line and what its failures mean), `tidy` (the system made fit
//! to keep, or wiped); this file runs them in order.

mod keyrings;
mod mmdebstrap;
mod options;
mod repos;
mod tidy;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, anyhow};
use rustix::fs::Mode;
use serde_json::json;
use strata_stage::debian;
use strata_stage::{Args, Log, Root, write_meta};

use crate::keyrings::{fetch_keyring, trusted_dir};
use crate::mmdebstrap::{
    BOOTSTRAP_SOURCES, Plan, customize_hooks, explain_failure, mmdebstrap_argv,
};
use crate::options::{Check, Options};
use crate::repos::{render_sources, resolve};
use crate::tidy::{tidy, wipe};

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let work = WorkDir::create()?;
    let host = debian::read_apt_sources(Path::new("/etc/apt"));
    let use_signed_by = options.bootstrap_options.use_signed_by;

    let mut repos = Vec::new();
    let mut keyrings = Vec::new();
    let mut trusted = Vec::new();
    for (i, r) in options.bootstrap_repositories.iter().enumerate() {
        let keyring = r
            .keyring
            .as_ref()
            .map(|k| fetch_keyring(k, &work.path.join(format!("keyring-{i}"))))
            .transpose()?;
        let repo = resolve(r, i, &host, keyring.as_ref(), use_signed_by, &work.path)?;
        if r.check_signature_with == Check::External {
            trusted.extend(keyring.clone());
        }
        keyrings.extend(keyring);
        repos.push(repo);
    }

    fs_write(
        &work.path.join(BOOTSTRAP_SOURCES),
        render_sources(&repos, false)?,
    )?;
    fs_write(
        &work.path.join("debian.sources"),
        render_sources(&repos, true)?,
    )?;
    let script = match &options.customization_script {
        Some(text) => {
            let path = work.path.join("customize.sh");
            fs_write(&path, text.clone())?;
            Some(path)
        }
        None => None,
    };
    // Without Signed-By, apt only trusts its keyring folder; a folder (not a
    // file) lets several repositories' keyrings in at once.
    let keyring_dir = if !use_signed_by && !trusted.is_empty() {
        Some(trusted_dir(&work.path.join("trusted.gpg.d"), &trusted)?)
    } else {
        None
    };

    let bo = &options.bootstrap_options;
    let mut include = bo.extra_packages.clone();
    for r in &options.bootstrap_repositories {
        include.extend(r.keyring_package.clone());
    }
    let plan = Plan {
        variant: &bo.variant,
        architecture: &bo.architecture,
        include: dedup(include),
        keyring_dir,
        hooks: customize_hooks(&work.path, &keyrings, script.as_deref()),
        suite: &repos[0].suite,
        tree: &args.tree,
        sources: work.path.join(BOOTSTRAP_SOURCES),
    };
    let argv = mmdebstrap_argv(&plan);
    println!("running {}", argv.join(" "));

    // All of mmdebstrap's output is kept: the culprit of a failure may be
    // named anywhere in it.
    let mut log = Log::new("strata-bootstrap", usize::MAX);
    let finished = log
        .stream(Command::new(&argv[0]).args(&argv[1..]))
        .map_err(anyhow::Error::from)
        .and_then(|status| {
            if status.success() {
                Ok(())
            } else {
                Err(anyhow!(explain_failure(&log.tail(), status.code(), &repos)))
            }
        });
    let finished = finished.and_then(|()| tidy(args, &repos));
    if let Err(e) = finished {
        wipe(&args.tree);
        return Err(e);
    }

    let tree = Root::tree(args)?;
    let packages = debian::installed_packages(&args.tree)?;
    let os_release = debian::read_os_release(&tree)?;
    let components: Vec<String> = dedup(repos.iter().flat_map(|r| r.components.clone()).collect());
    println!(
        "bootstrapped {} ({} packages)",
        os_release
            .get("PRETTY_NAME")
            .map_or("a system", String::as_str),
        packages.len()
    );
    write_meta(
        args,
        &json!({
            "packages": packages,
            "os-release": os_release,
            "architecture": bo.architecture,
            "variant": bo.variant,
            "suites": repos.iter().map(|r| &r.suite).collect::<Vec<_>>(),
            "mirrors": repos.iter().map(|r| &r.mirror).collect::<Vec<_>>(),
            "components": components,
        }),
    )?;
    Ok(())
}

/// A scratch folder in the sandbox's private /tmp, removed when the stage
/// ends. Sticky and writable by all, like /tmp: apt downloads and reads
/// keyrings as its `_apt` user.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("strata-bootstrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path)
            .with_context(|| format!("cannot create the scratch folder {}", path.display()))?;
        rustix::fs::chmod(&path, Mode::from_raw_mode(0o1777))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn fs_write(path: &Path, text: String) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}
