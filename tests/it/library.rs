//! The library API: manifests composed in code, written back as the JSON the
//! CLI reads, loaded from values with the loader's diagnostics, found by
//! name or id, built through `exec::Build`; and the runnable example.

use crate::support::{Env, bin_dir, example_manifests, repo, tar_listing};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use strata::catalog::Catalog;
use strata::exec::Build;
use strata::manifest::plan::Plan;
use strata::manifest::{
    self, Input, InputType, Manifest, ManifestError, Origin, Pipeline, Reference, SourceItem, Stage,
};
use strata::monitor::Monitor;

/// The built-in stages, as the `strata` binary beside them finds them.
fn catalog() -> Catalog {
    Catalog::new(Vec::new()).with_builtin_dir(bin_dir())
}

fn ids(plan: &Plan) -> Vec<Vec<String>> {
    plan.stage_ids
        .iter()
        .map(|ids| ids.iter().map(ToString::to_string).collect())
        .collect()
}

fn inspect(env: &Env, args: &[&str], input: Option<&str>) -> Value {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    serde_json::from_str(&env.strata(&all, input).success().stdout()).unwrap()
}

#[test]
fn every_example_manifest_round_trips_with_the_same_ids() {
    let catalog = catalog();
    let env = Env::new();
    for file in example_manifests() {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let loaded = manifest::load(&text, &name, &catalog).unwrap();
        let written = loaded.to_value();
        let again = manifest::load_value(&written, &name, &catalog)
            .unwrap_or_else(|e| panic!("{name} written back does not load:\n{e}"));
        assert_eq!(loaded, again, "{name}: load → write → load");
        assert_eq!(again.to_value(), written, "{name}: writing is stable");
        assert_eq!(
            ids(&Plan::new(&loaded)),
            ids(&Plan::new(&again)),
            "{name}: the same ids"
        );
        // The CLI reads the written JSON as it reads the file.
        assert_eq!(
            inspect(&env, &["-"], Some(&written.to_string())),
            inspect(&env, &[file.to_str().unwrap()], None),
            "{name}: strata inspect"
        );
    }
}

/// A manifest with an incus-lxc pipeline round-trips as written; the
/// pipeline making the incus image of its build root is added when the
/// build is planned (derive), not by load.
#[test]
fn a_manifest_with_an_incus_pipeline_round_trips() {
    let catalog = catalog();
    let doc = json!({"version": "2", "pipelines": [
        {"name": "env", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]},
        {"name": "p", "build": "name:env", "backend": "bwrap",
         "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/y"}]}}]},
        {"name": "q", "build": "name:env", "backend": "incus-lxc",
         "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/y"}]}}]}]});
    let loaded = manifest::load_value(&doc, "incus", &catalog).unwrap();
    assert_eq!(loaded.pipelines.len(), 3, "load adds nothing");
    let build = strata::exec::Build::new(&loaded, &catalog, "/nonexistent");
    assert_eq!(
        build.manifest().pipelines.len(),
        4,
        "the image pipeline is added"
    );
    assert_eq!(build.manifest().pipelines[3].name, "env+incus-image");
    let again = manifest::load_value(&loaded.to_value(), "incus", &catalog).unwrap();
    assert_eq!(loaded, again);
    assert_eq!(ids(&Plan::new(&loaded)), ids(&Plan::new(&again)));
    assert_eq!(again.to_value()["pipelines"][1]["backend"], "unshare");
}

#[test]
fn references_in_every_form_are_written_back_as_one() {
    let catalog = catalog();
    let forms = [
        json!(["name:a"]),
        json!({"name:a": {}}),
        json!([{"id": "name:a"}]),
        json!([{"id": "name:a", "options": {}}]),
    ];
    let mut written = Vec::new();
    for refs in forms {
        let doc = json!({"version": "2", "pipelines": [
            {"name": "a", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]},
            {"name": "b", "stages": [{"type": "tar", "options": {"filename": "a.tar"},
                "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": refs}}}]}]});
        let m = manifest::load_value(&doc, "refs", &catalog).unwrap();
        written.push(m.to_value()["pipelines"][1]["stages"][0]["inputs"].clone());
    }
    for w in &written {
        assert_eq!(
            *w,
            json!({"tree": {"type": "tree", "origin": "pipeline", "references": ["name:a"]}})
        );
    }
    // Options stay with their reference.
    let r = Reference::new("name:a").with_options(json!({"x": 1}));
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({"id": "name:a", "options": {"x": 1}})
    );
}

/// manifests/hello.json, composed: the same manifest, so the same ids.
fn hello() -> Manifest {
    let readme = SourceItem::inline(
        &b"Hello from strata.\nThis file came from an inline source, verified by its sha256.\n"[..],
    );
    let checksum = readme.checksum.clone();
    let epoch = 1_700_000_000;
    Manifest::new()
        .add_pipeline(
            Pipeline::new("base")
                .with_source_epoch(epoch)
                .add_stage(Stage::new(
                    "mkdir",
                    json!({"paths": [
                        {"path": "/etc", "mode": 493},
                        {"path": "/usr/share/doc/hello", "mode": 493, "parents": true}]}),
                )),
        )
        .add_pipeline(
            Pipeline::new("content")
                .with_source_epoch(epoch)
                .add_stage(
                    Stage::new(
                        "copy",
                        json!({"paths": [{"from": "input://base/", "to": "tree:///"}]}),
                    )
                    .add_input("base", Input::tree("base")),
                )
                .add_stage(Stage::new(
                    "write",
                    json!({"files": [{"path": "/etc/motd", "content": "Built by strata.\n", "mode": 420}]}),
                ))
                .add_stage(
                    Stage::new(
                        "copy",
                        json!({"paths": [{
                            "from": format!("input://files/{checksum}"),
                            "to": "tree:///usr/share/doc/hello/README"}]}),
                    )
                    .add_input("files", Input::files([&checksum])),
                ),
        )
        .add_pipeline(
            Pipeline::new("tarball").with_source_epoch(epoch).add_stage(
                Stage::new(
                    "tar",
                    json!({"filename": "hello.tar.gz", "compression": "gzip"}),
                )
                .add_input("tree", Input::tree("name:content")),
            ),
        )
        .add_source(readme)
}

#[test]
fn a_composed_manifest_is_the_file_it_mirrors() {
    let catalog = catalog();
    let text = std::fs::read_to_string(repo().join("manifests/hello.json")).unwrap();
    let file = manifest::load(&text, "hello.json", &catalog).unwrap();
    let composed = hello().check(&catalog).unwrap();
    assert_eq!(composed, file);
    assert_eq!(ids(&Plan::new(&composed)), ids(&Plan::new(&file)));
    assert_eq!(
        serde_json::to_value(&composed).unwrap(),
        composed.to_value(),
        "Serialize and to_value agree"
    );
}

#[test]
fn stage_values_are_reusable() {
    let motd = Stage::new(
        "write",
        json!({"files": [{"path": "/etc/motd", "content": "a"}]}),
    );
    let other = motd
        .clone()
        .with_option("files", json!([{"path": "/x", "content": "b"}]));
    assert_eq!(
        motd.options["files"][0]["content"], "a",
        "the original is untouched"
    );
    assert_eq!(other.options["files"][0]["path"], "/x");
    let input =
        Input::new(InputType::Tree, Origin::Pipeline).add_reference(Reference::new("name:p"));
    assert_eq!(input, Input::tree("p"));
}

fn diagnostics(e: &ManifestError) -> Vec<(String, String, Option<String>)> {
    e.diagnostics
        .iter()
        .map(|d| (d.pointer.clone(), d.message.clone(), d.hint.clone()))
        .collect()
}

#[test]
fn values_and_text_get_the_same_diagnostics() {
    let catalog = catalog();
    let bad = [
        json!({"pipelines": []}),
        json!({"version": "2", "pipelines": [{"name": "p", "stages": [{"type": "mkdri"}]}]}),
        json!({"version": "2", "pipelines": [{"name": "p", "stages": [
            {"type": "tar", "options": {"filename": "a.tar"},
             "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": ["name:q"]}}}]}]}),
        json!({"version": "2", "pipelines": [{"name": "p", "build": "name:p", "stages": [
            {"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]}]}),
        json!({"version": "2", "pipelines": [], "sources": {"inline": {"items": {"sha256:00": {}}}}}),
    ];
    for doc in bad {
        let from_text = manifest::load(&doc.to_string(), "m", &catalog).unwrap_err();
        let from_value = manifest::load_value(&doc, "m", &catalog).unwrap_err();
        assert!(!from_value.diagnostics.is_empty());
        assert_eq!(diagnostics(&from_text), diagnostics(&from_value), "{doc}");
        assert_eq!(from_text.to_string(), from_value.to_string());
    }
}

#[test]
fn a_composed_manifest_is_refused_with_json_pointers() {
    let catalog = catalog();
    let m = Manifest::new()
        .add_pipeline(Pipeline::new("p").add_stage(Stage::new("mkdri", json!({}))))
        .add_pipeline(Pipeline::new("t").add_stage(
            Stage::new("tar", json!({"filename": "a/b"})).add_input("tree", Input::tree("nope")),
        ));
    let e = m.check(&catalog).unwrap_err();
    assert_eq!(e.origin, manifest::compose::COMPOSED_ORIGIN);
    let found = diagnostics(&e);
    let pointers: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/pipelines/0/stages/0/type",
            "/pipelines/1/stages/0/options/filename",
            "/pipelines/1/stages/0/inputs/tree/references/0",
        ],
        "{e}"
    );
    assert_eq!(found[0].2.as_deref(), Some("did you mean `mkdir`?"));
    assert!(found[2].1.contains("unknown pipeline `nope`"), "{e}");

    // The build façade checks too, before anything runs: no store is made.
    let env = Env::new();
    let (report, result) = Build::new(&m, &catalog, env.store()).run(&Monitor::silent());
    let error = result.unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert!(
        error.to_string().contains("/pipelines/0/stages/0/type"),
        "{error}"
    );
    assert_eq!(report.stages.len(), 2);
    assert!(!env.store().exists());
}

#[test]
fn get_finds_pipelines_by_name_and_stages_by_id() {
    let m = hello().check(&catalog()).unwrap();
    let plan = Plan::new(&m);

    let content = m.get("content").unwrap();
    assert_eq!(
        (content.index, content.pipeline.name.as_str()),
        (1, "content")
    );
    assert!(content.stage.is_none());
    assert_eq!(content.id.as_ref(), plan.pipeline_id(1));

    let write = &plan.stage_ids[1][1];
    let found = m.get(write.as_str()).unwrap();
    assert_eq!(found.index, 1);
    assert_eq!(
        found.stage.map(|(i, s)| (i, s.ty.as_str())),
        Some((1, "write"))
    );
    assert_eq!(found.id.as_ref(), Some(write));

    // A pipeline's id is its last stage's: found as that stage, in its pipeline.
    let tarball_id = plan.pipeline_id(2).unwrap();
    let found = m.get(tarball_id.as_str()).unwrap();
    assert_eq!(found.pipeline.name, "tarball");
    assert_eq!(
        found.stage.map(|(i, s)| (i, s.ty.as_str())),
        Some((0, "tar"))
    );

    assert!(m.get("nothing").is_none());
    assert!(m.get(&"0".repeat(64)).is_none());

    // Composed with a dangling reference: names are found, ids are not known.
    let dangling = Manifest::new().add_pipeline(Pipeline::new("t").add_stage(
        Stage::new("tar", json!({"filename": "a.tar"})).add_input("tree", Input::tree("gone")),
    ));
    let found = dangling.get("t").unwrap();
    assert!(found.id.is_none());
}

/// target/debug/examples/NAME, built by `cargo build --examples`.
fn example(name: &str) -> PathBuf {
    let path = bin_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the examples first (`cargo build --workspace --examples`; `make test` does)",
        path.display()
    );
    path
}

fn tar_zstd_file(tarball: &Path, member: &str) -> String {
    let out = Command::new("tar")
        .args(["--zstd", "--extract", "--to-stdout", "--file"])
        .arg(tarball)
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "{member} in {}", tarball.display());
    String::from_utf8(out.stdout).unwrap()
}

/// The example composes bootstrap → customize → tar from stage values and
/// builds it; the bootstrap both systems share is built once.
#[test]
fn the_compose_example_builds_a_debian_tarball() {
    let env = Env::new();
    let out = env.out();
    let run = Command::new(example("compose"))
        .arg(&out)
        .arg(env.store())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "compose failed: {}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split(' ').collect()).collect();
    let status = |at: &str| {
        lines
            .iter()
            .find(|l| l[0] == at)
            .unwrap_or_else(|| panic!("no {at} in\n{stdout}"))[2]
    };
    assert_eq!(status("system/0"), "built");
    assert_eq!(
        status("builder/0"),
        "cached",
        "the shared bootstrap ran once"
    );
    let id = |at: &str| lines.iter().find(|l| l[0] == at).unwrap()[3];
    assert_eq!(id("system/0"), id("builder/0"));
    assert_ne!(id("system/1"), id("builder/1"), "hostnames differ");

    let tarball = out.join("tarball/system.tar.zst");
    let listing = tar_listing(&tarball);
    assert!(listing.contains("usr/bin/dpkg"), "a Debian system");
    assert_eq!(
        tar_zstd_file(&tarball, "./etc/motd"),
        "Composed with the strata library.\n"
    );
    assert_eq!(
        tar_zstd_file(&tarball, "./etc/hostname"),
        "strata-example\n"
    );
    assert_eq!(
        tar_zstd_file(&tarball, "./etc/strata-release"),
        "composed by strata\n"
    );
}
