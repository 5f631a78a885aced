//! Preparing tree and files inputs on a real filesystem.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use strata_inputs::{InputError, prepare_files, prepare_tree};
use strata_sources::Checksum;

/// Writes `data` as a store-like file named by its checksum.
fn source(dir: &Path, data: &[u8]) -> (String, PathBuf) {
    let checksum = Checksum::of_bytes(data).to_string();
    let path = dir.join(&checksum);
    std::fs::write(&path, data).unwrap();
    (checksum, path)
}

#[test]
fn tree_input_is_the_tree_itself() {
    let input = prepare_tree("root", Path::new("/store/objects/abc/tree"), Some("abc"));
    assert_eq!(input.name, "root");
    assert_eq!(input.host_path, Path::new("/store/objects/abc/tree"));
    assert_eq!(input.data, json!({"id": "abc"}));
    let input = prepare_tree("root", Path::new("/store/objects/abc/tree"), None);
    assert_eq!(input.data, json!({}));
}

#[test]
fn files_are_hard_links_named_by_checksum_in_given_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    // Reverse-sorted, so a sorted `data` would fail the key-order check.
    let mut files = vec![source(&store, b"one"), source(&store, b"two")];
    files.sort();
    files.reverse();
    let dest = dir.path().join("run/inputs/debs");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();

    let input = prepare_files("debs", &dest, &files).unwrap();
    assert_eq!(input.name, "debs");
    assert_eq!(input.host_path, dest);
    let keys: Vec<&String> = input.data["files"].as_object().unwrap().keys().collect();
    assert_eq!(keys, [&files[0].0, &files[1].0]);
    assert_eq!(
        input.data,
        json!({"files": {files[0].0.clone(): {}, files[1].0.clone(): {}}})
    );
    for (checksum, src) in &files {
        let placed = dest.join(checksum);
        assert_eq!(
            std::fs::metadata(&placed).unwrap().ino(),
            std::fs::metadata(src).unwrap().ino(),
            "{checksum} should be a hard link to the store file"
        );
    }
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 2);
}

#[test]
fn empty_and_duplicate_lists() {
    let dir = tempfile::tempdir().unwrap();
    let empty = prepare_files("none", &dir.path().join("none"), &[]).unwrap();
    assert_eq!(empty.data, json!({"files": {}}));
    assert!(empty.host_path.is_dir());

    let f = source(dir.path(), b"same");
    let dup = prepare_files("dup", &dir.path().join("dup"), &[f.clone(), f.clone()]).unwrap();
    assert_eq!(dup.data, json!({"files": {f.0.clone(): {}}}));
}

#[test]
fn existing_dest_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("debs");
    std::fs::create_dir(&dest).unwrap();
    let err = prepare_files("debs", &dest, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("input `debs`: "), "{msg}");
    assert!(msg.contains(&dest.display().to_string()), "{msg}");
}

#[test]
fn missing_source_file_names_it_and_removes_dest() {
    let dir = tempfile::tempdir().unwrap();
    let good = source(dir.path(), b"present");
    let missing_path = dir.path().join("gone");
    let missing = (
        Checksum::of_bytes(b"gone").to_string(),
        missing_path.clone(),
    );
    let dest = dir.path().join("debs");
    let err = prepare_files("debs", &dest, &[good, missing]).unwrap_err();
    assert!(matches!(err, InputError::Io { .. }));
    assert!(
        err.to_string()
            .contains(&missing_path.display().to_string()),
        "{err}"
    );
    assert!(!dest.exists(), "a failed input leaves no directory behind");
}

#[test]
fn invalid_checksum_is_rejected_before_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("debs");
    for bad in ["../escape", "sha256:abc", ""] {
        let err =
            prepare_files("debs", &dest, &[(bad.to_owned(), dir.path().join("x"))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "input `debs`: invalid file checksum {bad:?}: expected `sha256:` followed by 64 lowercase hex digits"
            )
        );
        assert!(!dest.exists());
    }
}
