use std::os::unix::fs::symlink;

use serde_json::json;

use crate::{Stage, error, mode, ok};

const EXE: &str = env!("CARGO_BIN_EXE_strata-stage-mkdir");

#[test]
fn creates_directories_with_exact_modes() {
    let s = Stage::new();
    ok(&s.run(
        EXE,
        json!({"paths": [
            {"path": "/a"},
            {"path": "/a/open", "mode": 0o777},
            {"path": "/a/shared", "mode": 0o2775},
            {"path": "/tmp", "mode": 0o1777},
        ]}),
    ));
    let t = s.tree();
    assert_eq!(mode(&t.join("a")), 0o755);
    // 0o777 survives the umask, and set-id/sticky bits survive mkdir.
    assert_eq!(mode(&t.join("a/open")), 0o777);
    assert_eq!(mode(&t.join("a/shared")), 0o2775);
    assert_eq!(mode(&t.join("tmp")), 0o1777);
}

#[test]
fn parents_are_made_only_when_asked() {
    let s = Stage::new();
    let e = error(&s.run(EXE, json!({"paths": [{"path": "/x/y/z"}]})));
    assert_eq!(
        e,
        "error: the parent directory /x/y of /x/y/z does not exist"
    );

    ok(&s.run(
        EXE,
        json!({"paths": [{"path": "/x/y/z", "mode": 0o700, "parents": true}]}),
    ));
    assert_eq!(mode(&s.tree().join("x")), 0o755);
    assert_eq!(mode(&s.tree().join("x/y")), 0o755);
    assert_eq!(mode(&s.tree().join("x/y/z")), 0o700);
}

#[test]
fn an_existing_path_fails_unless_exist_ok() {
    let s = Stage::new();
    std::fs::create_dir(s.tree().join("d")).unwrap();
    std::fs::write(s.tree().join("f"), "").unwrap();
    std::fs::set_permissions(
        s.tree().join("d"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();

    let e = error(&s.run(EXE, json!({"paths": [{"path": "/d"}]})));
    assert_eq!(e, "error: /d already exists (set exist_ok to accept that)");

    ok(&s.run(
        EXE,
        json!({"paths": [{"path": "/d", "exist_ok": true, "parents": true}]}),
    ));
    assert_eq!(
        mode(&s.tree().join("d")),
        0o700,
        "an existing directory keeps its mode"
    );

    let e = error(&s.run(EXE, json!({"paths": [{"path": "/f", "exist_ok": true}]})));
    assert!(e.contains("/f is not a directory"), "{e}");
}

#[test]
fn symlinks_out_of_the_tree_are_refused() {
    let s = Stage::new();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), s.tree().join("out")).unwrap();
    symlink("..", s.tree().join("up")).unwrap();

    for path in ["/out/x", "/up/x"] {
        let e = error(&s.run(EXE, json!({"paths": [{"path": path}]})));
        assert_eq!(
            e,
            format!("error: path {path} escapes the tree through a symlink or \"..\"")
        );
    }
    let e = error(&s.run(
        EXE,
        json!({"paths": [{"path": "/out/x/y", "parents": true}]}),
    ));
    assert_eq!(
        e,
        "error: cannot make the parents of /out/x/y: path /out escapes the tree through a symlink or \"..\""
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn parents_follow_links_that_stay_inside() {
    let s = Stage::new();
    std::fs::create_dir_all(s.tree().join("usr/lib")).unwrap();
    symlink("usr/lib", s.tree().join("lib")).unwrap();
    ok(&s.run(
        EXE,
        json!({"paths": [{"path": "/lib/modules/6.1", "parents": true}]}),
    ));
    assert!(s.tree().join("usr/lib/modules/6.1").is_dir());
}
