//! `strata store …`: what the store holds, its logs, collection.

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
    };
    let root = args
        .store
        .clone()
        .unwrap_or_else(crate::store::default_root);
    let timeout = std::time::Duration::from_secs(args.lock_timeout);
    // Stored trees belong to the stages' namespace's ids: as a user, only
    // inside it can strata remove them (sandbox/userns.rs); first, before
    // any thread.
    if exclusive && let Err(e) = crate::sandbox::userns::enter() {
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

/// `2026-11-25 23:40:00 UTC` for unix seconds.
fn utc(secs: u64) -> String {
    let t = crate::clock::Utc::from_unix(secs);
    let (h, m, s) = t.hms;
    format!(
        "{:04}-{:02}-{:02} {h:02}:{m:02}:{s:02} UTC",
        t.year, t.month, t.day
    )
}
