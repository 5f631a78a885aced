//! `strata store …`: what the store holds, its logs, collection, checks.

use super::io::{out, out_raw};
use super::{SizeArg, fail, parse_size};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `strata store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Print the log a stored stage wrote when it ran.
    Log {
        /// The stage id (or a unique prefix of it).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List what the store holds, least recently used first: id, pipeline/stage, size, last use.
    Ls {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the store's size, its limit, and how many objects and sources it holds.
    Du {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove least recently used entries until the store fits its limit (waits for running builds).
    Gc {
        /// The limit for this collection [default: the one the store remembers].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<SizeArg>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a stored object and the objects that stand on it (waits for running builds).
    Rm {
        /// The stage id (or a unique prefix of it).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check stored objects against the tree digests recorded when they were stored, and source items against their checksums.
    ///
    /// Prints each difference on stdout (the object or source, the path in
    /// its tree, what differs, what was recorded and what is there) and
    /// exits 1 when it finds any, 0 when everything matches. Objects stored
    /// by a strata from before tree digests are said to have none, and are
    /// not checked.
    Fsck {
        /// Object ids (or unique prefixes) and source items (`sha256:…`) to check [default: every object and source item].
        #[arg(value_name = "ID")]
        ids: Vec<String>,
        /// Remove what does not match, and the objects that stand on it, so that the next build makes them again (waits for running builds); still exits 1 when it found any.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store, and how long to wait for it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The object store [default: as for build].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Give up waiting for a store or object lock after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    lock_timeout: u64,
}

/// Runs `strata store …`; returns the exit code.
pub fn main(cmd: StoreCommand) -> i32 {
    use crate::store::{Store, gc};
    let (args, exclusive) = match &cmd {
        StoreCommand::Log { store, .. }
        | StoreCommand::Ls { store }
        | StoreCommand::Du { store } => (store, false),
        StoreCommand::Gc { store, .. } | StoreCommand::Rm { store, .. } => (store, true),
        StoreCommand::Fsck { store, repair, .. } => (store, *repair),
    };
    let root = args
        .store
        .clone()
        .unwrap_or_else(crate::store::default_root);
    let timeout = std::time::Duration::from_secs(args.lock_timeout);
    // Stored trees belong to the stages' namespace's ids: as a user, only
    // inside it can strata remove them (sandbox/userns.rs); first, before
    // any thread.
    // fsck reads them whole: root-only files of a tree too, and owners as
    // the commit that recorded them saw them (through the namespace).
    let reads_trees = matches!(cmd, StoreCommand::Fsck { .. });
    if (exclusive || reads_trees)
        && let Err(e) = crate::sandbox::userns::enter()
    {
        return fail(&e);
    }
    let opened = if exclusive {
        Store::open_exclusive(&root, timeout)
    } else {
        Store::open(&root, timeout)
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let result: Result<(), (i32, String)> = match cmd {
        StoreCommand::Log { id, .. } => match store.log(&id) {
            Ok(text) => {
                out_raw(&text);
                Ok(())
            }
            Err(e) => Err((2, e)),
        },
        StoreCommand::Ls { .. } => {
            out(format!(
                "{:<64}  {:<32}  {:>10}  LAST USE",
                "ID", "MADE BY", "SIZE"
            ));
            for e in gc::entries(&store) {
                let by = match &e.kind {
                    gc::Kind::Object {
                        pipeline,
                        stage,
                        ty,
                        ..
                    } => format!("{pipeline}/{stage} {ty}"),
                    gc::Kind::Source => "source".to_owned(),
                };
                out(format!(
                    "{:<64}  {by:<32}  {:>10}  {}",
                    e.id,
                    gc::human(e.size),
                    utc(e
                        .last_use
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()))
                ));
            }
            Ok(())
        }
        StoreCommand::Du { .. } => {
            let entries = gc::entries(&store);
            let objects = entries
                .iter()
                .filter(|e| matches!(e.kind, gc::Kind::Object { .. }))
                .count();
            let limit = store.max_size().map_or("unlimited".to_owned(), gc::human);
            out(format!(
                "{} ({} bytes) in {objects} objects and {} sources; limit {limit}",
                gc::human(gc::total(&entries)),
                gc::total(&entries),
                entries.len() - objects
            ));
            Ok(())
        }
        StoreCommand::Gc { max_size, .. } => {
            // What --keep-failed kept is never worth keeping past a gc.
            match store.remove_failed() {
                Ok(kept) => {
                    for path in &kept {
                        eprintln!("removed {}", path.display());
                    }
                    if !kept.is_empty() {
                        eprintln!("removed {} kept failed stage(s)", kept.len());
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            }
            match max_size.map_or_else(|| store.max_size(), |s| s.0) {
                None => {
                    eprintln!(
                        "store has no size limit: nothing more to collect (give --max-size SIZE)"
                    );
                    Ok(())
                }
                Some(max) => match gc::collect(&store, max) {
                    Ok(removed) => {
                        for e in &removed {
                            eprintln!("removed {} ({})", e.id, gc::human(e.size));
                        }
                        let left = gc::total(&gc::entries(&store));
                        eprintln!(
                            "removed {} entries; the store holds {} (limit {})",
                            removed.len(),
                            gc::human(left),
                            gc::human(max)
                        );
                        Ok(())
                    }
                    Err(e) => Err((1, e.to_string())),
                },
            }
        }
        StoreCommand::Rm { id, .. } => match store.resolve(&id) {
            Ok(full) => match gc::remove_object(&store, &full) {
                Ok(removed) => {
                    for e in &removed {
                        eprintln!("removed {} ({})", e.id, gc::human(e.size));
                    }
                    Ok(())
                }
                Err(e) => Err((1, e.to_string())),
            },
            Err(e) => Err((2, e.to_string())),
        },
        StoreCommand::Fsck { ids, repair, .. } => fsck(&store, &ids, repair),
    };
    match result {
        Ok(()) => 0,
        Err((code, message)) => {
            // Said with the code each arm chose: a wrong id is the user's (2).
            eprintln!("error: {message}");
            code
        }
    }
}

/// `strata store fsck`: differences on stdout as they are found; what was
/// not checked, what was removed and the summary on stderr.
fn fsck(store: &crate::store::Store, ids: &[String], repair: bool) -> Result<(), (i32, String)> {
    use crate::store::fsck::{self, Targets};
    let targets = match ids {
        [] => Targets::all(store),
        named => Targets::named(store, named).map_err(|e| (2, e.to_string()))?,
    };
    let report = fsck::check(store, &targets, &mut |finding| out(finding.to_string()));
    for id in &report.unrecorded {
        eprintln!(
            "object {id}: no recorded treesum (stored by a strata from before tree digests): not checked"
        );
    }
    let (objects, sources) = report
        .broken
        .iter()
        .partition::<Vec<_>, _>(|s| matches!(s, fsck::Subject::Object(_)));
    let root = store.root().display();
    if report.broken.is_empty() {
        eprintln!(
            "checked {} in {root}: all match what was recorded",
            both(
                report.objects - report.unrecorded.len(),
                "object",
                report.sources,
                "source item"
            )
        );
        return Ok(());
    }
    let broken = both(objects.len(), "object", sources.len(), "source item");
    let checked = both(report.objects, "object", report.sources, "source item");
    if !repair {
        return Err((
            1,
            format!(
                "{broken} of the {checked} in {root} do not match what was recorded\n    hint: `strata store fsck --repair` removes them (and the objects that stand on them); the next build makes them again"
            ),
        ));
    }
    let repaired = fsck::repair(store, &report).map_err(|e| (1, e.to_string()))?;
    for (id, on) in &repaired.objects {
        if id == on || report.broken.contains(&fsck::Subject::Object(id.clone())) {
            eprintln!("removed object {id}");
        } else {
            eprintln!("removed object {id} (it stood on {on})");
        }
    }
    for item in &repaired.sources {
        eprintln!("removed source {item}");
    }
    Err((
        1,
        format!(
            "{broken} of the {checked} in {root} did not match what was recorded: removed {} (the next build makes them again)",
            both(
                repaired.objects.len(),
                "object",
                repaired.sources.len(),
                "source item"
            )
        ),
    ))
}

/// `3 objects and 1 source item`; a kind there are none of is left out
/// (`0 objects` when both are).
fn both(a: usize, a_name: &str, b: usize, b_name: &str) -> String {
    let count = |n: usize, name: &str| format!("{n} {name}{}", if n == 1 { "" } else { "s" });
    match (a, b) {
        (_, 0) => count(a, a_name),
        (0, _) => count(b, b_name),
        _ => format!("{} and {}", count(a, a_name), count(b, b_name)),
    }
}

/// `2026-11-25 23:40:00 UTC` for unix seconds.
fn utc(secs: u64) -> String {
    let t = crate::clock::Utc::from_unix(secs);
    let (h, m, s) = t.hms;
    format!(
        "{:04}-{:02}-{:02} {h:02}:{m:02}:{s:02} UTC",
        t.year, t.month, t.day
    )
}
