//! `strata store fsck` (issue 15, class 8): what the store recorded when it
//! stored an object or a source item is checked again, and what no longer
//! matches is found — named by object (or item), path, what differs,
//! expected and found — with exit 1; `--repair` removes it, and the next
//! build makes it again. Every strata run is bounded: a walk that hangs
//! fails the test.

use crate::support::{Env, Run, bin_dir, bounded_command, checksum, inline_sources, test_user};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

const ITEM: &[u8] = b"an inline source item\n";

/// Four stages, every one kept: mkdir, write (three files, one 0600), write
/// (a 5000-byte file), copy (the source item in).
fn manifest() -> Value {
    let sum = checksum(ITEM);
    json!({"version": "2", "pipelines": [{"name": "p", "source-epoch": 1700000000, "stages": [
        {"type": "mkdir", "options": {"paths": [{"path": "/etc"}, {"path": "/srv"}]}},
        {"type": "write", "options": {"files": [
            {"path": "/etc/motd", "content": "hello world\n"},
            {"path": "/etc/other", "content": "other\n"},
            {"path": "/etc/secret", "content": "s3cret\n", "mode": 0o600}]}},
        {"type": "write", "options": {"files": [{"path": "/srv/big", "content": "x".repeat(5000)}]}},
        {"type": "copy",
         "inputs": {"files": {"type": "files", "origin": "source", "references": [sum]}},
         "options": {"paths": [{"from": format!("input://files/{sum}"), "to": "tree:///srv/item"}]}}]}],
        "sources": inline_sources(&[ITEM])})
}

/// How strata is started: as root here, or as the test user.
#[derive(Clone, Copy)]
enum As<'a> {
    Root,
    User(&'a crate::support::TestUser),
}

impl As<'_> {
    fn strata(self, env: &Env, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = match self {
            As::Root => {
                let mut c = Command::new(bin_dir().join("strata"));
                c.env("STRATA_STORE", env.store());
                c
            }
            // Through runuser, which drops root's groups (and environment).
            As::User(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &user.name, "--", "env"])
                    .arg(format!("HOME=/home/{}", user.name))
                    .arg(format!("STRATA_STORE={}", env.store().display()))
                    .arg(bin_dir().join("strata"))
                    .current_dir("/");
                c
            }
        };
        cmd.args(args);
        bounded_command(cmd, input, LIMIT).0
    }

    /// `strata build --json` of [`manifest`]: the ids and statuses of its stages.
    fn build(self, env: &Env) -> Vec<(String, String)> {
        let run = self.strata(
            env,
            &["build", "-", "--json"],
            Some(&manifest().to_string()),
        );
        run.success();
        let doc: Value = serde_json::from_slice(&run.0.stdout).unwrap();
        doc["pipelines"][0]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_owned(),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn fsck(self, env: &Env, extra: &[&str]) -> Run {
        let mut args = vec!["store", "fsck"];
        args.extend_from_slice(extra);
        self.strata(env, &args, None)
    }
}

fn layer(env: &Env, id: &str, rel: &str) -> PathBuf {
    env.store().join("objects").join(id).join("layer").join(rel)
}

#[track_caller]
fn clean(run: &Run) {
    run.success();
    assert_eq!(run.stdout(), "", "{}", run.describe());
    assert!(
        run.stderr().contains("all match what was recorded"),
        "{}",
        run.describe()
    );
}

/// What is done to a stored store, and what fsck must say about it.
struct Case {
    name: &'static str,
    /// Breaks the store built with ids `ids` (one per stage).
    breaks: fn(&Env, &[String]),
    /// Lines fsck must print (`{0}`…`{3}` the stages' ids, `{sum}` the
    /// source item's checksum): each line is found whole in stdout.
    says: &'static [&'static str],
    /// The stage whose object is broken (removed with those above it by
    /// --repair), or None when a source item is.
    stage: Option<usize>,
}

fn fill(text: &str, ids: &[String]) -> String {
    let mut out = text.replace("{sum}", &checksum(ITEM));
    for (i, id) in ids.iter().enumerate() {
        out = out.replace(&format!("{{{i}}}"), id);
    }
    out
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a truncated file",
            breaks: |env, ids| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(layer(env, &ids[2], "srv/big"))
                    .unwrap();
                f.set_len(100).unwrap();
            },
            says: &["object {2} /srv/big: content: expected 5000 bytes blake3:"],
            stage: Some(2),
        },
        Case {
            name: "a changed mode",
            breaks: |env, ids| {
                std::fs::set_permissions(
                    layer(env, &ids[1], "etc/secret"),
                    std::fs::Permissions::from_mode(0o644),
                )
                .unwrap()
            },
            says: &["object {1} /etc/secret: mode: expected 0600, found 0644"],
            stage: Some(1),
        },
        Case {
            name: "a deleted file",
            breaks: |env, ids| std::fs::remove_file(layer(env, &ids[1], "etc/other")).unwrap(),
            says: &["object {1} /etc/other: missing: expected regular file 0644 "],
            stage: Some(1),
        },
        Case {
            name: "a corrupt source item",
            breaks: |env, _| {
                let item = env.store().join("sources/inline").join(checksum(ITEM));
                std::fs::set_permissions(&item, std::fs::Permissions::from_mode(0o644)).unwrap();
                std::fs::write(&item, b"an inline source itEm\n").unwrap();
            },
            says: &["source inline/{sum}: content: expected {sum}, found sha256:"],
            stage: None,
        },
        Case {
            name: "a changed file whose recorded entries are gone too",
            breaks: |env, ids| {
                std::fs::write(layer(env, &ids[3], "srv/item"), b"changed").unwrap();
                std::fs::remove_file(
                    env.store()
                        .join("objects")
                        .join(&ids[3])
                        .join("meta/treesum"),
                )
                .unwrap();
            },
            says: &[
                "object {3}: treesum: expected blake3:",
                "(meta/treesum, the entries recorded with it, is missing: no path can be named)",
            ],
            stage: Some(3),
        },
    ]
}

#[test]
fn fsck_finds_each_kind_of_damage_and_repair_has_it_rebuilt() {
    for case in cases() {
        let env = Env::new();
        let built = As::Root.build(&env);
        let ids: Vec<String> = built.iter().map(|(id, _)| id.clone()).collect();
        assert!(built.iter().all(|(_, s)| s == "built"), "{built:?}");
        clean(&As::Root.fsck(&env, &[]));

        (case.breaks)(&env, &ids);
        let run = As::Root.fsck(&env, &[]);
        assert_eq!(run.code(), 1, "{}: {}", case.name, run.describe());
        for line in case.says {
            let want = fill(line, &ids);
            assert!(
                run.stdout().contains(&want),
                "{}: fsck should say {want:?}:\n{}",
                case.name,
                run.describe()
            );
        }
        assert_eq!(
            run.stdout().lines().count(),
            1,
            "{}: one finding:\n{}",
            case.name,
            run.describe()
        );
        assert!(
            run.stderr().contains("hint: `strata store fsck --repair`"),
            "{}",
            run.describe()
        );
        // Found, not fixed: the same again.
        assert_eq!(As::Root.fsck(&env, &[]).stdout(), run.stdout());

        let repair = As::Root.fsck(&env, &["--repair"]);
        assert_eq!(repair.code(), 1, "{}: {}", case.name, repair.describe());
        let gone: Vec<&String> = match case.stage {
            Some(broken) => {
                assert!(
                    repair
                        .stderr()
                        .contains(&format!("removed object {}\n", ids[broken])),
                    "{}",
                    repair.describe()
                );
                ids[broken..].iter().collect()
            }
            None => {
                assert!(
                    repair
                        .stderr()
                        .contains(&format!("removed source inline/{}", checksum(ITEM))),
                    "{}",
                    repair.describe()
                );
                Vec::new()
            }
        };
        let objects = env.objects();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                objects.contains(id),
                !gone.contains(&id),
                "{}: stage {i} after --repair: {objects:?}",
                case.name
            );
        }
        clean(&As::Root.fsck(&env, &[]));

        // The next build makes again what went, and only that.
        let again = As::Root.build(&env);
        for (id, status) in &again {
            let want = if gone.contains(&id) {
                "built"
            } else {
                "cached"
            };
            assert_eq!(status, want, "{}: {id}: {again:?}", case.name);
        }
        assert_eq!(
            std::fs::read(layer(&env, &ids[2], "srv/big"))
                .unwrap()
                .len(),
            5000
        );
        assert_eq!(
            std::fs::read(env.store().join("sources/inline").join(checksum(ITEM))).unwrap(),
            ITEM
        );
        clean(&As::Root.fsck(&env, &[]));
        assert!(env.tmp_entries().is_empty(), "{:?}", env.tmp_entries());
    }
}

#[test]
fn fsck_checks_what_it_is_given_and_refuses_what_is_not_stored() {
    let env = Env::new();
    let ids: Vec<String> = As::Root.build(&env).into_iter().map(|(id, _)| id).collect();
    std::fs::write(layer(&env, &ids[2], "srv/big"), "y").unwrap();
    // A unique prefix names an object; others are not looked at.
    clean(&As::Root.fsck(&env, &[&ids[1][..12], &checksum(ITEM)]));
    let run = As::Root.fsck(&env, &[&ids[2][..12]]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stdout()
            .contains(&format!("object {} /srv/big: content", ids[2]))
    );
    assert!(
        run.stderr().contains("1 object of the 1 object in"),
        "{}",
        run.describe()
    );
    for missing in ["ffffffff", "sha256:0000"] {
        let run = As::Root.fsck(&env, &[missing]);
        assert_eq!(run.code(), 2, "{}", run.describe());
        assert!(run.stderr().contains("no stored"), "{}", run.describe());
        assert_eq!(run.stdout(), "");
    }
}

#[test]
fn an_object_stored_without_a_treesum_is_said_to_have_none() {
    let env = Env::new();
    let ids: Vec<String> = As::Root.build(&env).into_iter().map(|(id, _)| id).collect();
    // As a strata from before treesums stored it.
    let info_path = env
        .store()
        .join("objects")
        .join(&ids[0])
        .join("meta/info.json");
    let mut info: Value = serde_json::from_slice(&std::fs::read(&info_path).unwrap()).unwrap();
    assert!(info["treesum"].as_str().unwrap().starts_with("blake3:"));
    info.as_object_mut().unwrap().remove("treesum");
    std::fs::write(&info_path, info.to_string()).unwrap();
    std::fs::remove_file(info_path.with_file_name("treesum")).unwrap();
    let run = As::Root.fsck(&env, &[]);
    run.success();
    assert_eq!(run.stdout(), "");
    assert!(
        run.stderr().contains(&format!(
            "object {}: no recorded treesum (stored by a strata from before tree digests): not checked",
            ids[0]
        )),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr()
            .contains("checked 3 objects and 1 source item in")
    );
    // It is still used.
    let again = As::Root.build(&env);
    assert!(again.iter().all(|(_, s)| s == "cached"), "{again:?}");
}

#[test]
fn an_ordinary_users_store_is_checked_and_repaired_by_that_user() {
    let Some(user) = test_user() else { return };
    let env = user.env();
    let as_user = As::User(&user);
    let ids: Vec<String> = as_user.build(&env).into_iter().map(|(id, _)| id).collect();
    // Read whole, the 0600 file of in-tree root included, with the owners
    // the commit saw.
    clean(&as_user.fsck(&env, &[]));
    std::fs::set_permissions(
        layer(&env, &ids[1], "etc/secret"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let run = as_user.fsck(&env, &[]);
    assert_eq!(run.code(), 1, "{}", run.describe());
    assert!(
        run.stdout().contains(&format!(
            "object {} /etc/secret: mode: expected 0600, found 0640",
            ids[1]
        )),
        "{}",
        run.describe()
    );
    assert_eq!(as_user.fsck(&env, &["--repair"]).code(), 1);
    assert_eq!(env.objects(), vec![ids[0].clone()]);
    let again = as_user.build(&env);
    assert_eq!(again.iter().filter(|(_, s)| s == "built").count(), 3);
    clean(&as_user.fsck(&env, &[]));
}
