//! `build`: builds a Debian source package into binary packages, as
//! debusine's PackageBuild task does (its option names are kept).
//!
//! ```json
//! {"host_architecture": "amd64", "build_components": ["any", "all"],
//!  "build_profiles": ["nodoc"], "build_options": "nocheck",
//!  "binnmu": {"changelog": "Rebuild against libfoo2", "suffix": "+b1"},
//!  "extra_repositories": [{"url": "http://127.0.0.1/extra", "suite": "bookworm",
//!                          "components": ["main"], "signing_key": "-----BEGIN PGP..."}]}
//! ```
//!
//! The engine runs this stage as root in a throw-away, writable copy of the
//! build environment (`"x-strata": {"root": "build-copy"}`): `/` is a
//! Debian system bootstrapped with variant buildd, and whatever is
//! installed here dies with the copy. Only the results reach the tree.
//!
//! ```text
//!   inputs/source            files named sha256:<hex> (the .dsc found by its content)
//!        │                   or a tree holding NAME.dsc and its files by name
//!        ▼
//!   BUILD_PATH/NAME.dsc + its files      BUILD_PATH = build_path, /build/strata
//!        │                                          ┐
//!        │  /etc/apt/sources.list.d/strata-*        │ apt: extra_repositories,
//!        │  /var/cache/strata/extra-binary-…        │ extra_binary_artifacts
//!        ▼                                          ┘
//!   dpkg-source -x ─> [binNMU changelog entry] ─> apt-get update
//!        ─> apt-get build-dep ./SRC-UPSTREAM ─> dpkg-buildpackage --build=...
//!        │  all their output: the stage's log and tree/SRC_VERSION_ARCH.build
//!        ▼
//!   tree/  the .changes and every file it lists (.deb, .buildinfo, .dsc, ...)
//!   meta:  {status, source, version, binary_packages, changes, buildinfo}
//! ```
//!
//! One module a job: `options` (what the manifest may say), `source` (the
//! .dsc and its files from the input), `arch` (host and build
//! architectures), `apt` (the environment's apt set up), `binnmu` (the
//! changelog entry), `commands` (the command lines), `results` (what
//! reaches the tree); this file runs them in order.

mod apt;
mod arch;
mod binnmu;
mod commands;
mod options;
mod results;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use strata_stage::debian::rfc2822;
use strata_stage::{Args, Log, write_meta};

use crate::arch::{Architectures, check_cross_toolchain, dpkg_print_architecture};
use crate::commands::{build_dep_argv, build_flag, changes_architecture, dpkg_buildpackage_argv};
use crate::options::{Component, Options, Timestamp};
use crate::source::{Dsc, SourcePackage, without_epoch};

/// How many lines of the build log a failure's error carries.
const TAIL_LINES: usize = 25;

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let components = normalized(&options.build_components)?;
    if let Some(binnmu) = &options.binnmu
        && components.iter().any(|c| *c != Component::Any)
    {
        // The schema says so too; a binNMU rebuilds architecture-dependent
        // packages only, with a changelog entry no source upload has.
        bail!(
            "options.binnmu ({}) builds only \"any\": build_components must not hold \"all\" or \"source\"",
            binnmu.suffix
        );
    }
    let build_path = checked_build_path(&options.build_path)?;

    let input = args
        .input("source")
        .context("the stage needs a `source` input (the .dsc and its files)")?;
    let source = SourcePackage::find(input)?;
    let dsc = &source.dsc;

    let env_arch = dpkg_print_architecture()?;
    let arch = Architectures::resolve(&options, &env_arch)?;
    if arch.cross {
        check_cross_toolchain(&arch)?;
    }

    let version = match &options.binnmu {
        Some(b) => format!("{}{}", dsc.version, b.suffix),
        None => dsc.version.clone(),
    };
    let log_name = format!(
        "{}_{}_{}.build",
        dsc.source,
        without_epoch(&version),
        changes_architecture(&components, &arch.host)
    );
    let failed = || format!("build of {} {version} failed", dsc.source);

    std::fs::create_dir_all(&build_path)
        .with_context(|| format!("cannot create the build path {}", build_path.display()))?;
    source.place(&build_path)?;

    let mut log = Log::to_file(&args.tree.join(&log_name), "strata-build", TAIL_LINES)?;
    let built = build(
        args,
        &options,
        &components,
        &arch,
        dsc,
        &version,
        &build_path,
        &mut log,
    );
    if let Err(e) = built {
        return Err(anyhow!(
            "{}: {}; the last lines of {log_name}: {}",
            failed(),
            strata_stage::error_text(&e),
            log.tail()
        ));
    }

    let results = results::collect(&build_path, &args.tree).with_context(failed)?;
    let meta = json!({
        "status": "success",
        "source": dsc.source,
        "version": version,
        "source_version": dsc.version,
        "binary_packages": results.packages,
        "changes": results.changes,
        "buildinfo": results.buildinfo,
        "build_log": log_name,
    });
    write_meta(args, &meta)?;
    Ok(())
}

/// The steps whose output makes the build log; an error here is the
/// build's failure, explained by the log's tail.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn build(
    args: &Args,
    options: &Options,
    components: &[Component],
    arch: &Architectures,
    dsc: &Dsc,
    version: &str,
    build_path: &Path,
    log: &mut Log,
) -> anyhow::Result<()> {
    let env = build_env(args, options);
    log.say(&format!(
        "building {} {version} for {} on {} ({}) in {}",
        dsc.source,
        arch.host,
        arch.build,
        build_flag(components),
        build_path.display()
    ))?;
    apt::prepare_apt(args, options, arch, log)?;

    let dir = dsc.unpack_dir();
    log.run(
        Command::new("dpkg-source")
            .args(["-x", &dsc.file_name(), &dir])
            .current_dir(build_path),
    )?;
    if let Some(binnmu) = &options.binnmu {
        let changelog = build_path.join(&dir).join("debian/changelog");
        let text = std::fs::read_to_string(&changelog)
            .with_context(|| format!("cannot read {}", changelog.display()))?;
        let date = match &binnmu.timestamp {
            Some(Timestamp::Date(date)) => date.clone(),
            Some(Timestamp::Epoch(epoch)) => rfc2822(*epoch),
            None => rfc2822(args.meta.source_epoch.unwrap_or_else(now)),
        };
        let entry = binnmu::binnmu_entry(&text, binnmu, &date)?;
        std::fs::write(&changelog, format!("{entry}{text}"))
            .with_context(|| format!("cannot write {}", changelog.display()))?;
        log.say(&format!("binNMU changelog entry added:\n{entry}"))?;
    }

    let mut update = Command::new("apt-get");
    update.arg("update").envs(&env);
    log.run(&mut update)?;
    let argv = build_dep_argv(components, arch, &options.build_profiles, &dir);
    log.run(
        Command::new(&argv[0])
            .args(&argv[1..])
            .envs(&env)
            .current_dir(build_path),
    )?;
    let argv = dpkg_buildpackage_argv(components, arch, &options.build_profiles);
    log.run(
        Command::new(&argv[0])
            .args(&argv[1..])
            .envs(&env)
            .current_dir(build_path.join(&dir)),
    )?;
    Ok(())
}

/// The build's environment; the engine clears the rest.
fn build_env(args: &Args, options: &Options) -> BTreeMap<&'static str, String> {
    let mut env = BTreeMap::from([("DEBIAN_FRONTEND", "noninteractive".to_owned())]);
    if !options.build_profiles.is_empty() {
        env.insert("DEB_BUILD_PROFILES", options.build_profiles.join(" "));
    }
    if let Some(o) = &options.build_options {
        env.insert("DEB_BUILD_OPTIONS", o.clone());
    }
    // The engine sets it; the pipeline's source-epoch stands in otherwise.
    if std::env::var_os("SOURCE_DATE_EPOCH").is_none()
        && let Some(epoch) = args.meta.source_epoch
    {
        env.insert("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    env
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sorted, without repeats; at least one.
fn normalized(components: &[Component]) -> anyhow::Result<Vec<Component>> {
    let mut c = components.to_vec();
    c.sort();
    c.dedup();
    if c.is_empty() {
        bail!("options.build_components: needs at least one of any, all and source");
    }
    Ok(c)
}

/// An absolute path, not `/`, without `.` or `..` parts, empty if it exists.
fn checked_build_path(path: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(path);
    let odd = path
        .split('/')
        .skip(1)
        .any(|part| part.is_empty() || part == "." || part == "..");
    if !path.starts_with('/') || odd {
        bail!("options.build_path: {path:?} must be an absolute path without empty, . or .. parts");
    }
    if let Ok(mut entries) = std::fs::read_dir(p)
        && entries.next().is_some()
    {
        bail!("options.build_path: {path} already exists and is not empty");
    }
    Ok(p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_paths_are_absolute_and_plain() {
        assert!(checked_build_path("/build/strata").is_ok());
        for bad in [
            "build",
            "/",
            "/build/../etc",
            "/build//x",
            "/build/./x",
            "/build/",
        ] {
            assert!(checked_build_path(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let e = checked_build_path(dir.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty"), "{e}");
    }
}
