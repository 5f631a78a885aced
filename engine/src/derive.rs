//! Pipelines strata adds to a manifest before it builds it.
//!
//! ```text
//! pipeline P {build: name:B, backend: incus-lxc}
//!   + pipeline "B+incus-image" {tarball-to-incus over name:B}   (added; P.image names it)
//! ```
//!
//! A pipeline whose stages run in incus containers needs its build
//! pipeline's tree as an incus image; the derived pipeline makes the image
//! files with an ordinary stage, so they are cached and id'd like any tree.
//! [`plan`] adds them and computes every id once.

use crate::id::Id;
use crate::kind::Backend;
use crate::manifest::plan::Plan;
use crate::manifest::{Input, InputType, Manifest, Origin, Pipeline, Reference, Stage};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The stage that turns a system tree into incus image files.
pub const IMAGE_STAGE: &str = "tarball-to-incus";

/// The pipeline that makes the incus image of build pipeline `build`.
pub fn image_pipeline_name(build: &str) -> String {
    format!("{build}+incus-image")
}

/// Debian's name for the host architecture (containers run the host's).
pub fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        other => other,
    }
}

/// The options of the tarball-to-incus stage for system `id`.
pub fn image_stage_options(id: &Id, description: &str) -> Value {
    json!({
        "format": "split",
        "compression": "zstd",
        "architecture": debian_arch(),
        "description": description,
        "os": "debian",
        "artifact_id": id.as_str(),
    })
}

/// A pipeline `name` of one tarball-to-incus stage over pipeline `over`,
/// whose id is `id`.
pub fn image_pipeline(
    name: &str,
    over: &str,
    id: &Id,
    description: &str,
    epoch: Option<u64>,
) -> Pipeline {
    Pipeline {
        name: name.to_owned(),
        build: None,
        runner: None,
        source_epoch: epoch,
        backend: None,
        image: None,
        stages: vec![Stage {
            ty: IMAGE_STAGE.to_owned(),
            options: image_stage_options(id, description),
            inputs: BTreeMap::from([(
                "tree".to_owned(),
                Input {
                    ty: InputType::Tree,
                    origin: Origin::Pipeline,
                    references: vec![Reference {
                        id: format!("name:{over}"),
                        options: json!({}),
                    }],
                },
            )]),
            // A built-in stage under the built-in runner.
            program: Some(json!({
                "stage": crate::catalog::STAGE_SET,
                "runner": crate::catalog::STAGE_SET,
            })),
        }],
    }
}

/// Adds the derived pipelines to `m` and returns its plan: every id,
/// each computed once.
pub fn plan(m: &mut Manifest) -> Plan {
    let mut plan = Plan::new(m);
    let wanted: Vec<(usize, String)> = m
        .pipelines
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.backend, Some(Backend::IncusLxc)))
        .filter_map(|(i, p)| p.build_name().map(|b| (i, b.to_owned())))
        .collect();
    if wanted.is_empty() {
        return plan;
    }
    for (pi, build) in wanted {
        let name = image_pipeline_name(&build);
        if !m.pipelines.iter().any(|p| p.name == name) {
            let bi = m.index(&build);
            let Some(id) = plan.pipeline_id(bi) else {
                continue; // an empty build pipeline: exec reports it
            };
            let description = format!("strata build environment {build}");
            let derived = image_pipeline(
                &name,
                &build,
                id,
                &description,
                m.pipelines[bi].source_epoch,
            );
            m.pipelines.push(derived);
        }
        m.pipelines[pi].image = Some(name);
    }
    plan.extend(m);
    plan
}
