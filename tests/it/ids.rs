//! Ids: pinned for the example manifests, stable under key order and
//! reference form, changed by everything that feeds them.

use crate::support::{Env, example_manifests, repo};
use serde_json::{Value, json};

fn inspect(env: &Env, m: &Value) -> Value {
    let run = env.strata(&["inspect", "-"], Some(&m.to_string()));
    serde_json::from_str(&run.success().stdout()).unwrap()
}

fn ids(doc: &Value) -> Vec<String> {
    doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Changing how ids are computed changes these: then bump the id context and
/// the store format (see engine/src/id.rs) and update the snapshot.
#[test]
fn example_manifest_ids_are_pinned() {
    let env = Env::new();
    let files = example_manifests();
    let mut pinned = String::new();
    for file in files {
        let run = env.strata(&["inspect", file.to_str().unwrap()], None);
        let doc: Value = serde_json::from_str(&run.success().stdout()).unwrap();
        for p in doc["pipelines"].as_array().unwrap() {
            pinned.push_str(&format!(
                "{} {} {}\n",
                file.file_name().unwrap().to_string_lossy(),
                p["name"].as_str().unwrap(),
                p["id"].as_str().unwrap_or("-")
            ));
        }
    }
    insta::assert_snapshot!(pinned);
}

#[test]
fn inspect_resolves_references_to_ids() {
    let env = Env::new();
    let text = std::fs::read_to_string(repo().join("manifests/hello.json")).unwrap();
    let doc = inspect(&env, &serde_json::from_str(&text).unwrap());
    let content_id = doc["pipelines"][1]["id"].as_str().unwrap();
    assert_eq!(
        doc["pipelines"][1]["stages"][2]["id"], content_id,
        "a pipeline's id is its last stage's"
    );
    assert_eq!(
        doc["pipelines"][2]["stages"][0]["inputs"]["tree"]["references"][0]["id"],
        content_id
    );
    assert!(
        doc["sources"]["inline"]["items"].is_object(),
        "sources printed back"
    );
}

fn with_refs(refs: Value) -> Value {
    json!({"version": "2", "pipelines": [
        {"name": "a", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x"}]}}]},
        {"name": "b", "stages": [{"type": "tar", "options": {"filename": "a.tar"},
            "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": refs}}}]}]})
}

#[test]
fn reference_forms_give_the_same_id() {
    let env = Env::new();
    let list = ids(&inspect(&env, &with_refs(json!(["name:a"]))));
    let map = ids(&inspect(&env, &with_refs(json!({"name:a": {}}))));
    let objects = ids(&inspect(&env, &with_refs(json!([{"id": "name:a"}]))));
    assert_eq!(list, map);
    assert_eq!(list, objects);
}

#[test]
fn key_order_does_not_matter_but_values_do() {
    let env = Env::new();
    let a = r#"{"version":"2","pipelines":[{"name":"p","source-epoch":5,"stages":[{"type":"mkdir","options":{"paths":[{"path":"/x","mode":448,"parents":true}]}},{"type":"write","options":{"files":[{"path":"/x/f","content":"c"}]}}]}]}"#;
    let b = r#"{"pipelines":[{"stages":[{"options":{"paths":[{"parents":true,"mode":448,"path":"/x"}]},"type":"mkdir"},{"options":{"files":[{"content":"c","path":"/x/f"}]},"type":"write"}],"source-epoch":5,"name":"p"}],"version":"2"}"#;
    let base = ids(&inspect(&env, &serde_json::from_str(a).unwrap()));
    assert_eq!(base, ids(&inspect(&env, &serde_json::from_str(b).unwrap())));

    let mut m: Value = serde_json::from_str(a).unwrap();
    m["pipelines"][0]["stages"][1]["options"]["files"][0]["content"] = json!("d");
    let changed = ids(&inspect(&env, &m));
    assert_eq!(changed[0], base[0], "an earlier stage keeps its id");
    assert_ne!(changed[1], base[1]);

    let mut m: Value = serde_json::from_str(a).unwrap();
    m["pipelines"][0]["source-epoch"] = json!(6);
    let changed = ids(&inspect(&env, &m));
    assert!(
        changed.iter().zip(&base).all(|(x, y)| x != y),
        "the epoch feeds every stage"
    );

    let mut m: Value = serde_json::from_str(a).unwrap();
    m["pipelines"][0]["stages"][0]["options"]["paths"][0]["mode"] = json!(493);
    let changed = ids(&inspect(&env, &m));
    assert!(
        changed.iter().zip(&base).all(|(x, y)| x != y),
        "a change flows downstream"
    );
}

#[test]
fn the_build_pipeline_feeds_the_id() {
    let env = Env::new();
    let m = |mode: u32| {
        json!({"version": "2", "pipelines": [
            {"name": "root", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/x", "mode": mode}]}}]},
            {"name": "p", "build": "name:root", "stages": [{"type": "mkdir", "options": {"paths": [{"path": "/y"}]}}]}]})
    };
    let one = inspect(&env, &m(493));
    let two = inspect(&env, &m(448));
    assert_ne!(one["pipelines"][1]["id"], two["pipelines"][1]["id"]);
    assert_eq!(one["pipelines"][1]["build"], one["pipelines"][0]["id"]);
}
