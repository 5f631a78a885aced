//! Text or a JSON value → checked [`Manifest`].

use super::diagnostic::escape;
use super::graph;
use super::{Diagnostic, InputType, Manifest, ManifestError, Origin, Pipeline, SourceItem};
use crate::catalog::{Catalog, CatalogError, closest};
use crate::schema;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::OnceLock;
use strata_sources::SourceType;

/// Parses and checks a manifest. `origin` names it in errors.
pub fn load(text: &str, origin: &str, catalog: &Catalog) -> Result<Manifest, ManifestError> {
    let fail = |diagnostics: Vec<Diagnostic>| ManifestError {
        origin: origin.to_owned(),
        diagnostics,
    };
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        fail(vec![Diagnostic {
            pointer: String::new(),
            pipeline: None,
            stage: None,
            message: format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
            hint: None,
        }])
    })?;
    load_value(&doc, origin, catalog)
}

/// Checks a manifest given as a JSON value, with the same checks and
/// diagnostics as [`load`] (which parses text, then comes here).
pub fn load_value(doc: &Value, origin: &str, catalog: &Catalog) -> Result<Manifest, ManifestError> {
    let fail = |diagnostics: Vec<Diagnostic>| ManifestError {
        origin: origin.to_owned(),
        diagnostics,
    };

    let diagnostics = check_schema(doc);
    if !diagnostics.is_empty() {
        return Err(fail(diagnostics));
    }

    let pipelines: Vec<Pipeline> =
        serde_path_to_error::deserialize(&doc["pipelines"]).map_err(|e| {
            let pointer = format!("/pipelines{}", path_to_pointer(&e.path().to_string()));
            fail(vec![Diagnostic::at(doc, pointer, e.inner().to_string())])
        })?;

    let mut diagnostics = Vec::new();
    check_stages(doc, &pipelines, catalog, &mut diagnostics);
    check_backends(doc, &pipelines, &mut diagnostics);
    let sources = load_sources(doc, &mut diagnostics);
    check_references(doc, &pipelines, &sources, &mut diagnostics);
    if diagnostics.is_empty()
        && let Err(cycle) = graph::order(&pipelines)
    {
        let names = cycle.join(" → ");
        diagnostics.push(
            Diagnostic::at(
                doc,
                "/pipelines",
                format!("pipelines form a cycle: {names}"),
            )
            .hint("a pipeline cannot depend, through `build` or a tree input, on itself"),
        );
    }
    if !diagnostics.is_empty() {
        return Err(fail(diagnostics));
    }
    let raw_sources = doc
        .get("sources")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let mut pipelines = pipelines;
    name_programs(&mut pipelines, catalog);
    Ok(Manifest {
        pipelines,
        sources,
        raw_sources,
    })
}

/// Each stage's program and runner, as they feed its id (catalog.rs).
/// check_stages found them all; one that cannot be read now is named
/// by an error of the build that runs it.
fn name_programs(pipelines: &mut [Pipeline], catalog: &Catalog) {
    for p in pipelines {
        let runner = catalog
            .runner(p.runner_name())
            .ok()
            .and_then(|r| r.program().ok());
        for stage in &mut p.stages {
            let program = catalog.stage(&stage.ty).ok().map(|d| d.program.clone());
            stage.program = Some(serde_json::json!({"stage": program, "runner": runner}));
        }
    }
}

/// Where a pipeline's stages may run: incus needs a build pipeline (its
/// tree becomes the image), and VMs and qemu do not run stages yet.
fn check_backends(doc: &Value, pipelines: &[Pipeline], out: &mut Vec<Diagnostic>) {
    use crate::kind::Backend;
    for (pi, p) in pipelines.iter().enumerate() {
        let at = format!("/pipelines/{pi}/backend");
        match p.backend {
            None | Some(Backend::Unshare) => {}
            Some(Backend::IncusLxc) if p.build.is_none() => out.push(
                Diagnostic::at(doc, at, "backend `incus-lxc` needs a `build` pipeline: its tree becomes the container image")
                    .hint("add \"build\": \"name:PIPELINE\" naming a system with systemd-sysv"),
            ),
            Some(Backend::IncusLxc) => {}
            Some(other) => out.push(Diagnostic::at(
                doc,
                at,
                format!("stages cannot run on backend `{other}` yet; use `unshare` or `incus-lxc`"),
            )),
        }
    }
}

fn manifest_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(schema::MANIFEST_SCHEMA).expect("manifest schema is JSON");
        schema::compile(&schema).expect("manifest schema compiles")
    })
}

fn check_schema(doc: &Value) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = manifest_validator()
        .iter_errors(doc)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let mut d = Diagnostic::at(doc, pointer.clone(), schema_message(&e));
            if pointer.ends_with("/version") || (pointer.is_empty() && doc.get("version").is_none())
            {
                d = d.hint(r#"strata reads manifest format version 2: "version": "2""#);
            }
            d
        })
        .collect();
    // oneOf failures report once per branch; keep one line per place and message.
    out.dedup_by(|a, b| a.pointer == b.pointer && a.message == b.message);
    out
}

fn schema_message(e: &jsonschema::ValidationError<'_>) -> String {
    let msg = e.to_string();
    match e.kind() {
        jsonschema::error::ValidationErrorKind::Format { format }
            if format.starts_with("strata-") =>
        {
            format!("{msg}: the path must stay inside its tree (absolute, no `..`)")
        }
        _ => msg,
    }
}

fn check_stages(doc: &Value, pipelines: &[Pipeline], catalog: &Catalog, out: &mut Vec<Diagnostic>) {
    for (pi, pipeline) in pipelines.iter().enumerate() {
        if let Err(e) = catalog.runner(pipeline.runner_name()) {
            out.push(Diagnostic::at(
                doc,
                format!("/pipelines/{pi}/runner"),
                e.to_string(),
            ));
        }
        for (si, stage) in pipeline.stages.iter().enumerate() {
            let at = format!("/pipelines/{pi}/stages/{si}");
            let def = match catalog.stage(&stage.ty) {
                Ok(def) => def,
                Err(CatalogError::UnknownStage { name, suggestion }) => {
                    let hint = match suggestion {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!(
                            "known stages: {}; add your own with --libdir",
                            catalog.stage_names().join(", ")
                        ),
                    };
                    out.push(
                        Diagnostic::at(
                            doc,
                            format!("{at}/type"),
                            format!("unknown stage type `{name}`"),
                        )
                        .hint(hint),
                    );
                    continue;
                }
                Err(e) => {
                    out.push(Diagnostic::at(doc, format!("{at}/type"), e.to_string()));
                    continue;
                }
            };
            if def.needs.root == crate::catalog::StageRoot::BuildCopy && pipeline.build.is_none() {
                out.push(
                    Diagnostic::at(doc, format!("{at}/type"), format!("stage `{}` runs in a copy of its build environment, and this pipeline has none", stage.ty))
                        .hint("set the pipeline's \"build\" to the pipeline that bootstraps the environment"),
                );
            }
            for e in def.validator.iter_errors(&stage.options) {
                let pointer = format!("{at}/options{}", e.instance_path());
                out.push(Diagnostic::at(doc, pointer, schema_message(&e)));
            }
        }
    }
}

fn load_sources(doc: &Value, out: &mut Vec<Diagnostic>) -> BTreeMap<String, SourceItem> {
    let mut sources = BTreeMap::new();
    let Some(types) = doc.get("sources").and_then(Value::as_object) else {
        return sources;
    };
    for (ty_name, spec) in types {
        let at = format!("/sources/{}", escape(ty_name));
        let ty = match SourceType::from_str(ty_name) {
            Ok(ty) => ty,
            Err(e) => {
                out.push(Diagnostic::at(doc, at, e.to_string()));
                continue;
            }
        };
        let items = spec["items"].as_object().into_iter().flatten();
        for (checksum, value) in items {
            let at = format!("{at}/items/{}", escape(checksum));
            match strata_sources::parse_item(ty, checksum, value) {
                Ok((checksum, item)) => {
                    sources.insert(checksum.to_string(), SourceItem { ty, checksum, item });
                }
                Err(e) => out.push(Diagnostic::at(doc, at, e.to_string())),
            }
        }
    }
    sources
}

fn check_references(
    doc: &Value,
    pipelines: &[Pipeline],
    sources: &BTreeMap<String, SourceItem>,
    out: &mut Vec<Diagnostic>,
) {
    let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (pi, p) in pipelines.iter().enumerate() {
        if let Some(first) = first_seen.insert(&p.name, pi) {
            out.push(
                Diagnostic::at(
                    doc,
                    format!("/pipelines/{pi}/name"),
                    format!(
                        "duplicate pipeline name `{}` (also pipeline #{first})",
                        p.name
                    ),
                )
                .hint("pipeline names must be unique"),
            );
            first_seen.insert(&p.name, first);
        }
    }
    let empty: Vec<&str> = pipelines
        .iter()
        .filter(|p| p.stages.is_empty())
        .map(|p| p.name.as_str())
        .collect();
    let no_tree = |pointer: String, name: &str| {
        Diagnostic::at(
            doc,
            pointer,
            format!("pipeline `{name}` has no stages, so it has no tree to use"),
        )
    };
    let unknown_pipeline = |pointer: String, name: &str| {
        let hint = match closest(name, &names) {
            Some(s) => format!("did you mean `name:{s}`?"),
            None => format!("pipelines in this manifest: {}", names.join(", ")),
        };
        Diagnostic::at(
            doc,
            pointer,
            format!("reference to unknown pipeline `{name}`"),
        )
        .hint(hint)
    };
    for (pi, p) in pipelines.iter().enumerate() {
        if let Some(build) = p.build_name() {
            if !first_seen.contains_key(build) {
                out.push(unknown_pipeline(format!("/pipelines/{pi}/build"), build));
            } else if empty.contains(&build) {
                out.push(no_tree(format!("/pipelines/{pi}/build"), build));
            }
        }
        for (si, stage) in p.stages.iter().enumerate() {
            for (name, input) in &stage.inputs {
                let at = format!("/pipelines/{pi}/stages/{si}/inputs/{}", escape(name));
                match (input.ty, input.origin) {
                    (InputType::Tree, Origin::Pipeline) | (InputType::Files, Origin::Source) => {}
                    (ty, origin) => {
                        out.push(
                            Diagnostic::at(
                                doc,
                                format!("{at}/origin"),
                                format!(
                                    "a `{}` input cannot have origin `{}`",
                                    ty.as_str(),
                                    origin.as_str()
                                ),
                            )
                            .hint(
                                "`tree` inputs come from a pipeline, `files` inputs from sources",
                            ),
                        );
                        continue;
                    }
                }
                if input.ty == InputType::Tree && input.references.len() != 1 {
                    out.push(Diagnostic::at(
                        doc,
                        format!("{at}/references"),
                        format!(
                            "a `tree` input takes exactly one pipeline reference, got {}",
                            input.references.len()
                        ),
                    ));
                }
                for (ri, r) in input.references.iter().enumerate() {
                    let rat = format!("{at}/references/{ri}");
                    match input.origin {
                        Origin::Pipeline => match r.pipeline() {
                            None => out.push(
                                Diagnostic::at(
                                    doc,
                                    rat,
                                    format!("`{}` is not a pipeline reference", r.id),
                                )
                                .hint("pipeline references are written name:PIPELINE"),
                            ),
                            Some(n) if !first_seen.contains_key(n) => {
                                out.push(unknown_pipeline(rat, n))
                            }
                            Some(n) if empty.contains(&n) => out.push(no_tree(rat, n)),
                            Some(_) => {}
                        },
                        Origin::Source => {
                            if !sources.contains_key(&r.id) {
                                out.push(
                                    Diagnostic::at(
                                        doc,
                                        rat,
                                        format!("reference to unknown source item `{}`", r.id),
                                    )
                                    .hint(
                                        "list the item under `sources` (e.g. sources.inline.items)",
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// serde_path_to_error's `a.b[0].c` → `/a/b/0/c`.
fn path_to_pointer(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    let mut out = String::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push('/');
            out.push_str(&escape(&rest[..i]));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                out.push('/');
                out.push_str(&rest[1..end]);
                rest = &rest[end + 1..];
            }
        } else if !rest.is_empty() {
            out.push('/');
            out.push_str(&escape(rest));
        }
    }
    out.replace("//", "/")
}

#[cfg(test)]
mod tests {
    use super::path_to_pointer;

    #[test]
    fn serde_paths_become_pointers() {
        assert_eq!(path_to_pointer("[1].stages[0].type"), "/1/stages/0/type");
        assert_eq!(path_to_pointer("."), "");
    }
}
