//! Composes a small Debian image with the strata library and builds it.
//!
//! ```text
//! system:   bootstrap (minbase) → customize (branded "strata-example")
//! builder:  bootstrap (minbase) → customize (branded "strata-builder") → customize (a user)
//! tarball:  tar of system (zstd)                                        → OUTPUT/tarball/system.tar.zst
//! ```
//!
//! The stages are values returned by functions: `bootstrap()` and
//! `branded(…)` are added to two pipelines. Both pipelines start with the
//! same bootstrap stage, so it has one id and is built once; the second
//! pipeline takes it from the store.
//!
//! Run it as root (the store mounts its layers with overlayfs), with the
//! network to reach the Debian mirror in this machine's apt sources:
//!
//! ```text
//! cargo run --example compose -- OUTPUT [STORE]
//! ```
//!
//! Without STORE it builds into a temporary store, removed at the end.

use anyhow::{Context, bail};
use serde_json::json;
use std::path::PathBuf;
use strata::catalog::Catalog;
use strata::exec::{Build, StageStatus};
use strata::manifest::{Input, Manifest, Pipeline, Stage};
use strata::monitor::Monitor;

/// Fixed, so the tarball is the same bytes every time.
const SOURCE_EPOCH: u64 = 1_700_000_000;

/// A minimal Debian system of this machine's release and architecture. No
/// mirror is named: the stage uses the one in the host's apt sources.
fn bootstrap(suite: &str, architecture: &str) -> Stage {
    Stage::new(
        "bootstrap",
        json!({
            "bootstrap_options": {"architecture": architecture, "variant": "minbase"},
            "bootstrap_repositories": [{"suite": suite, "components": ["main"]}],
        }),
    )
}

/// The customization every system of ours gets, configured once and reused.
fn branded(hostname: &str) -> Stage {
    Stage::new(
        "customize",
        json!({
            "files": [{"path": "/etc/motd", "content": "Composed with the strata library.\n", "mode": 0o644}],
            "script": "echo 'composed by strata' > /etc/strata-release",
        }),
    )
    .with_option("hostname", hostname)
}

/// A system pipeline: the shared bootstrap, then `customizations`.
fn system(name: &str, base: &Stage, customizations: Vec<Stage>) -> Pipeline {
    customizations.into_iter().fold(
        Pipeline::new(name)
            .with_runner("debian")
            .with_source_epoch(SOURCE_EPOCH)
            .add_stage(base.clone()),
        Pipeline::add_stage,
    )
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(output) = args.next().map(PathBuf::from) else {
        bail!("usage: compose OUTPUT [STORE]");
    };
    let temp_store;
    let store = match args.next() {
        Some(store) => PathBuf::from(store),
        None => {
            temp_store = tempfile::tempdir()?;
            temp_store.path().join("store")
        }
    };

    // Before any thread starts: the store's layers are mounted in a mount
    // namespace of our own, which dies with this process.
    strata::store::layers::enter_private_namespace()?;
    strata::sandbox::process::install_interrupt_handler();

    let base = bootstrap(&host_suite()?, &host_architecture()?);
    let composed = Manifest::new()
        .add_pipeline(system("system", &base, vec![branded("strata-example")]))
        .add_pipeline(system(
            "builder",
            &base,
            vec![
                branded("strata-builder"),
                Stage::new(
                    "customize",
                    json!({"users": [{"name": "builder", "uid": 1500}]}),
                ),
            ],
        ))
        .add_pipeline(
            Pipeline::new("tarball")
                .with_runner("debian")
                .with_source_epoch(SOURCE_EPOCH)
                .add_stage(
                    Stage::new(
                        "tar",
                        json!({"filename": "system.tar.zst", "compression": "zstd"}),
                    )
                    .add_input("tree", Input::tree("system")),
                ),
        );

    let catalog = catalog();
    // The loader's checks, with its diagnostics (JSON pointers) on failure.
    let manifest = composed.check(&catalog)?;

    // One pipeline at a time: `builder` then finds the shared bootstrap in
    // the store instead of running it a second time alongside `system`.
    let (report, result) = Build::new(&manifest, &catalog, &store)
        .jobs(1)
        // With an export, only what it needs is built; the builder is
        // asked for by name.
        .checkpoint("builder")
        .export("tarball")
        .output_directory(&output)
        .run(&Monitor::plain(false));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }

    // stdout: one line per stage, `PIPELINE/INDEX TYPE STATUS ID`.
    for (pipeline, stages) in manifest.pipelines.iter().zip(&report.stages) {
        for (index, stage) in stages.iter().enumerate() {
            let status = match stage.status {
                StageStatus::Cached => "cached",
                StageStatus::Built => "built",
            };
            println!(
                "{}/{index} {} {status} {}",
                pipeline.name, stage.ty, stage.id
            );
        }
    }
    let tarball = manifest.get("tarball").context("the tarball pipeline")?;
    for (name, path) in &report.exports {
        eprintln!(
            "exported {name} ({}) to {}",
            tarball.id.as_ref().map_or("-", |id| id.as_str()),
            path.display()
        );
    }
    Ok(())
}

/// The built-in stages. Cargo puts examples in target/*/examples/, one
/// level below the stage programs, where [`Catalog::new`] does not look.
fn catalog() -> Catalog {
    let catalog = Catalog::new(Vec::new());
    let exe = std::env::current_exe().ok();
    match exe.as_deref().and_then(|e| e.parent()) {
        Some(dir) if dir.ends_with("examples") => {
            catalog.with_builtin_dir(dir.parent().unwrap_or(dir).to_path_buf())
        }
        _ => catalog,
    }
}

/// This machine's Debian architecture (`dpkg --print-architecture`).
fn host_architecture() -> anyhow::Result<String> {
    let out = std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg --print-architecture")?;
    if !out.status.success() {
        bail!("dpkg --print-architecture failed: {}", out.status);
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// This machine's release (VERSION_CODENAME in /etc/os-release): its apt
/// sources, whose mirror the bootstrap uses, surely carry it.
fn host_suite() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME")
}
