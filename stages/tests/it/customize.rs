//! customize needs a Debian tree as `/`, which only the engine's sandbox
//! gives it (tests/it/debian.rs runs it there); the parts that stand alone
//! are unit-tested in the binary. Here: what it says outside a sandbox.

use serde_json::json;

use crate::{Stage, error};

const EXE: &str = env!("CARGO_BIN_EXE_strata-stage-customize");

#[test]
fn a_tree_that_is_not_the_root_is_refused_before_anything_changes() {
    let s = Stage::new();
    let e = error(&s.run(EXE, json!({"hostname": "box"})));
    assert_eq!(
        e,
        format!(
            "error: customize runs with the tree as / (x-strata root \"tree\"), but its tree is {}",
            s.tree().display()
        )
    );
    assert!(!s.tree().join("etc").exists());
}

#[test]
fn bad_options_are_named() {
    let s = Stage::new();
    let e = error(&s.run(EXE, json!({"users": [{"name": "x", "password": "y"}]})));
    assert!(
        e.starts_with(
            "error: invalid option at options.users[0].password: unknown field `password`"
        ),
        "{e}"
    );
    let e = error(&s.run(EXE, json!({"files": [{"path": "/x", "mode": "644"}]})));
    assert!(
        e.starts_with("error: invalid option at options.files[0].mode: invalid type"),
        "{e}"
    );
}
