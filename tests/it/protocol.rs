//! The stage protocol as a real build hands it over: a stage that keeps the
//! arguments document it was given, checked against
//! schemas/stage-args.json and read back through the protocol's types.

use crate::support::{Env, checksum, inline_sources, repo};
use serde_json::{Value, json};

/// A libdir stage `keep-args` that copies its arguments into its tree.
fn keeping_stage(env: &Env) -> std::path::PathBuf {
    env.script_stage(
        "keep-args",
        "cp /run/strata/args.json \"/run/strata/tree/args-$(ls /run/strata/tree | wc -l).json\"",
        Value::Null,
    )
}

#[test]
fn a_real_arguments_document_fits_the_schema_and_the_types() {
    let env = Env::new();
    let lib = keeping_stage(&env);
    let blob = b"a file input's item".to_vec();
    let m = json!({"version": "2", "pipelines": [
        {"name": "base", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/d"}]}}]},
        {"name": "kept", "source-epoch": 1700000000, "stages": [
            {"type": "keep-args"},
            {"type": "keep-args", "options": {"any": ["thing", 1]},
             "inputs": {
                "base": {"type": "tree", "origin": "pipeline", "references": ["name:base"]},
                "blobs": {"type": "files", "origin": "source", "references": [checksum(&blob)]}}}]},
        {"name": "unclamped", "stages": [{"type": "keep-args"}]}],
        "sources": inline_sources(&[&blob])});
    let out = env.out();
    env.build(
        &m,
        &[
            "--libdir",
            lib.to_str().unwrap(),
            "--export",
            "kept",
            "--export",
            "unclamped",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    )
    .success();

    let schema: Value =
        serde_json::from_slice(&std::fs::read(repo().join("schemas/stage-args.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut documents = Vec::new();
    for file in [
        "kept/args-0.json",
        "kept/args-1.json",
        "unclamped/args-0.json",
    ] {
        let bytes = std::fs::read(out.join(file)).unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{file} does not fit: {errors:?}\n{doc:#}"
        );
        // The protocol's types hold every key, in the engine's order.
        let typed: strata_protocol::Arguments = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            String::from_utf8(serde_json::to_vec_pretty(&typed).unwrap()).unwrap(),
            String::from_utf8(bytes).unwrap(),
            "{file}"
        );
        documents.push(typed);
    }

    let [first, second, unclamped] = &documents[..] else {
        unreachable!()
    };
    assert_eq!(first.options, json!({}), "no options is {{}}");
    assert!(first.inputs.is_empty());
    assert_eq!(first.meta.source_epoch, Some(1_700_000_000));
    assert_eq!(unclamped.meta.source_epoch, None);
    assert_eq!(
        (first.meta.pipeline.as_str(), first.meta.stage.as_str()),
        ("kept", "keep-args")
    );
    assert_ne!(first.meta.id, second.meta.id);
    assert_eq!(second.options, json!({"any": ["thing", 1]}));
    assert_eq!(second.inputs.keys().collect::<Vec<_>>(), ["base", "blobs"]);
    assert_eq!(
        second.inputs["base"].path.to_str(),
        Some(strata_protocol::input_path("base").as_str())
    );
    let base: strata_protocol::InputData =
        serde_json::from_value(second.inputs["base"].data.clone()).unwrap();
    assert_eq!(base.id.unwrap().len(), 64);
    assert_eq!(
        second.inputs["blobs"].files().unwrap().collect::<Vec<_>>(),
        [&checksum(&blob)]
    );
    assert_eq!(
        first.paths,
        strata_protocol::Paths::for_tree(strata_protocol::TREE_PATH)
    );
}
