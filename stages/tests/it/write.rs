use std::os::unix::fs::symlink;

use serde_json::json;

use crate::{Stage, error, inode, mode, ok};

const EXE: &str = env!("CARGO_BIN_EXE_strata-stage-write");

#[test]
fn writes_text_and_base64_with_exact_modes() {
    let s = Stage::new();
    std::fs::create_dir(s.tree().join("etc")).unwrap();
    ok(&s.run(
        EXE,
        json!({"files": [
            {"path": "/etc/hostname", "content": "box\n"},
            {"path": "/etc/bin", "base64": "AAEC/w==", "mode": 0o4755},
        ]}),
    ));
    let t = s.tree();
    assert_eq!(
        std::fs::read_to_string(t.join("etc/hostname")).unwrap(),
        "box\n"
    );
    assert_eq!(mode(&t.join("etc/hostname")), 0o644);
    assert_eq!(std::fs::read(t.join("etc/bin")).unwrap(), [0, 1, 2, 0xff]);
    assert_eq!(mode(&t.join("etc/bin")), 0o4755);
}

#[test]
fn an_existing_file_is_rewritten_in_place() {
    let s = Stage::new();
    let f = s.tree().join("motd");
    std::fs::write(&f, "a much longer old text\n").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::hard_link(&f, s.tree().join("motd.link")).unwrap();
    let before = inode(&f);

    ok(&s.run(
        EXE,
        json!({"files": [{"path": "/motd", "content": "new\n", "mode": 0o600}]}),
    ));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
    assert_eq!(mode(&f), 0o600);
    assert_eq!(inode(&f), before);
    assert_eq!(
        std::fs::read_to_string(s.tree().join("motd.link")).unwrap(),
        "new\n"
    );
}

#[test]
fn a_final_symlink_is_refused_not_followed() {
    let s = Stage::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    std::fs::write(&target, "untouched").unwrap();
    symlink(&target, s.tree().join("link")).unwrap();

    let e = error(&s.run(EXE, json!({"files": [{"path": "/link", "content": "x"}]})));
    assert!(e.contains("/link exists and is a symlink"), "{e}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
}

#[test]
fn bad_paths_and_options_are_named() {
    let s = Stage::new();
    let e = error(&s.run(
        EXE,
        json!({"files": [{"path": "/no/file", "content": "x"}]}),
    ));
    assert_eq!(
        e,
        "error: the parent directory /no of /no/file does not exist"
    );

    let e = error(&s.run(
        EXE,
        json!({"files": [{"path": "/f", "content": "x", "base64": "eA=="}]}),
    ));
    assert_eq!(
        e,
        "error: options.files[0] (/f) needs exactly one of content and base64"
    );

    let e = error(&s.run(
        EXE,
        json!({"files": [{"path": "/f", "content": "x", "mode": "644"}]}),
    ));
    assert!(
        e.starts_with("error: invalid option at options.files[0].mode: "),
        "{e}"
    );

    std::fs::create_dir(s.tree().join("d")).unwrap();
    let e = error(&s.run(EXE, json!({"files": [{"path": "/d", "content": "x"}]})));
    assert_eq!(
        e,
        "error: /d exists and is a directory; only a regular file is replaced"
    );

    symlink("/", s.tree().join("abs")).unwrap();
    let e = error(&s.run(
        EXE,
        json!({"files": [{"path": "/abs/etc/passwd", "content": "x"}]}),
    ));
    assert_eq!(
        e,
        "error: path /abs/etc/passwd escapes the tree through a symlink or \"..\""
    );
}
