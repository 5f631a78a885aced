use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use serde_json::json;

use crate::{Stage, error, inode, mode, ok};

const EXE: &str = env!("CARGO_BIN_EXE_strata-stage-copy");

/// An input folder with one of each thing cp -a must keep.
fn fill(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc/skel")).unwrap();
    std::fs::write(dir.join("etc/skel/.profile"), "profile\n").unwrap();
    std::fs::write(dir.join("etc/tool"), "#!/bin/sh\n").unwrap();
    // chown before chmod: chown clears set-id bits.
    std::os::unix::fs::chown(dir.join("etc/tool"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(
        dir.join("etc/tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4750),
    )
    .unwrap();
    std::fs::hard_link(dir.join("etc/tool"), dir.join("etc/tool.again")).unwrap();
    symlink("skel/.profile", dir.join("etc/profile")).unwrap();
    let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(dir.join("etc/skel/.profile"))
        .unwrap()
        .set_modified(when)
        .unwrap();
}

#[test]
fn copies_a_tree_keeping_what_cp_a_keeps() {
    let mut s = Stage::new();
    fill(&s.input("root"));
    ok(&s.run(
        EXE,
        json!({"paths": [{"from": "input://root/etc", "to": "tree:///etc"}]}),
    ));

    let t = s.tree();
    let tool = std::fs::metadata(t.join("etc/tool")).unwrap();
    assert_eq!((tool.uid(), tool.gid()), (1234, 5678));
    assert_eq!(mode(&t.join("etc/tool")), 0o4750);
    assert_eq!(inode(&t.join("etc/tool")), inode(&t.join("etc/tool.again")));
    assert_eq!(
        std::fs::read_link(t.join("etc/profile")).unwrap(),
        Path::new("skel/.profile")
    );
    assert_eq!(
        std::fs::metadata(t.join("etc/skel/.profile"))
            .unwrap()
            .mtime(),
        1_000_000
    );
}

#[test]
fn copies_a_single_file_to_a_new_name() {
    let mut s = Stage::new();
    let input = s.input("files");
    std::fs::write(input.join("sha256:00"), "data").unwrap();
    std::fs::create_dir(s.tree().join("opt")).unwrap();
    ok(&s.run(
        EXE,
        json!({"paths": [{"from": "input://files/sha256:00", "to": "tree:///opt/blob"}]}),
    ));
    assert_eq!(
        std::fs::read_to_string(s.tree().join("opt/blob")).unwrap(),
        "data"
    );
}

#[test]
fn a_directory_onto_a_directory_merges() {
    let mut s = Stage::new();
    fill(&s.input("root"));
    std::fs::create_dir_all(s.tree().join("etc")).unwrap();
    std::fs::write(s.tree().join("etc/kept"), "mine").unwrap();
    std::fs::write(s.tree().join("etc/tool"), "old").unwrap();

    // The whole input onto the tree's root.
    ok(&s.run(
        EXE,
        json!({"paths": [{"from": "input://root", "to": "tree:///"}]}),
    ));
    let t = s.tree();
    assert_eq!(std::fs::read_to_string(t.join("etc/kept")).unwrap(), "mine");
    assert_eq!(
        std::fs::read_to_string(t.join("etc/tool")).unwrap(),
        "#!/bin/sh\n"
    );
    assert!(t.join("etc/skel/.profile").is_file());
    assert!(!t.join("etc/etc").exists(), "merged, not nested");
}

#[test]
fn symlinks_in_the_destination_are_replaced_not_written_through() {
    let mut s = Stage::new();
    fill(&s.input("root"));
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::create_dir_all(s.tree().join("etc")).unwrap();
    symlink(&victim, s.tree().join("etc/tool")).unwrap();
    symlink(&victim, s.tree().join("single")).unwrap();

    ok(&s.run(
        EXE,
        json!({"paths": [
            {"from": "input://root/etc", "to": "tree:///etc"},
            {"from": "input://root/etc/tool", "to": "tree:///single"},
        ]}),
    ));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(
        s.tree()
            .join("etc/tool")
            .symlink_metadata()
            .unwrap()
            .is_file()
    );
    assert!(
        s.tree()
            .join("single")
            .symlink_metadata()
            .unwrap()
            .is_file()
    );
}

#[test]
fn bad_sources_and_destinations_are_named() {
    let mut s = Stage::new();
    let input = s.input("root");
    fill(&input);
    symlink("/", input.join("abs")).unwrap();

    let cases = [
        (
            "input://nope/x",
            "tree:///x",
            "error: input://nope/x names input nope, but the stage has no such input (it has: root)",
        ),
        (
            "input://root/missing",
            "tree:///x",
            "error: options.paths[0].from: input://root/missing does not exist",
        ),
        (
            "input://root/abs/etc",
            "tree:///x",
            "error: path input://root/abs/etc escapes input root through a symlink or \"..\"",
        ),
        (
            "input://root/etc",
            "tree:///no/x",
            "error: the parent directory tree:///no of tree:///no/x does not exist",
        ),
    ];
    for (from, to, want) in cases {
        let e = error(&s.run(EXE, json!({"paths": [{"from": from, "to": to}]})));
        assert_eq!(e, want);
    }

    std::fs::write(s.tree().join("file"), "").unwrap();
    let e = error(&s.run(
        EXE,
        json!({"paths": [{"from": "input://root/etc", "to": "tree:///file"}]}),
    ));
    assert!(
        e.starts_with(
            "error: cannot copy input://root/etc to tree:///file: cp failed (exit status: 1): cp: "
        ),
        "{e}"
    );
}
