//! What the store holds, and collecting it down to a size.
//!
//! Entries are objects and source items. Collection removes the least
//! recently used entry that nothing else stands on, again and again, until
//! the store fits:
//!
//! ```text
//!   A ← B ← C        (B's layer stands on A's, C's on B's)
//!   A ← D
//!   removable now: C, D and sources; B once C is gone; A once B and D are
//! ```
//!
//! A parent is never removed under a child (the child's tree would break)
//! and never flattened into it (that costs a whole tree to save one layer):
//! the child keeps its chain alive, and the chain goes when its last child
//! is the least recently used thing left. Removal renames the object into
//! tmp/ first, so a kill -9 mid-collection leaves it whole or gone.
//! Collection runs under the exclusive store lock, so no running build can
//! be using what it removes.

use super::{Store, StoreError, remove_any};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A stored stage.
    Object {
        /// Pipeline that made it.
        pipeline: String,
        /// Stage index.
        stage: u64,
        /// Stage type.
        ty: String,
        /// The object it stands on.
        parent: Option<String>,
    },
    /// A fetched source item (`<type>/<checksum>`).
    Source,
}

/// One thing the store holds.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Object id, or `<type>/<checksum>` for a source.
    pub id: String,
    /// Object or source.
    pub kind: Kind,
    /// Bytes on disk.
    pub size: u64,
    /// Its last use.
    pub last_use: SystemTime,
    path: PathBuf,
}

/// Everything in the store, least recently used first.
pub fn entries(store: &Store) -> Vec<Entry> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir(store.layout().objects()) {
        for e in dir.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some(info) = store.info(&id) else {
                continue;
            };
            let used = std::fs::metadata(store.layout().object(&id).used())
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH + Duration::from_secs(info.created));
            out.push(Entry {
                id,
                kind: Kind::Object {
                    pipeline: info.pipeline,
                    stage: info.stage,
                    ty: info.ty,
                    parent: info.parent,
                },
                size: info.size,
                last_use: used,
                path: e.path(),
            });
        }
    }
    let sources = store.layout().sources();
    for ty in std::fs::read_dir(&sources).into_iter().flatten().flatten() {
        for item in std::fs::read_dir(ty.path()).into_iter().flatten().flatten() {
            let Ok(md) = item.metadata() else { continue };
            out.push(Entry {
                id: format!(
                    "{}/{}",
                    ty.file_name().to_string_lossy(),
                    item.file_name().to_string_lossy()
                ),
                kind: Kind::Source,
                size: std::os::unix::fs::MetadataExt::blocks(&md) * 512,
                last_use: md.accessed().unwrap_or(UNIX_EPOCH),
                path: item.path(),
            });
        }
    }
    out.sort_by(|a, b| a.last_use.cmp(&b.last_use).then(a.id.cmp(&b.id)));
    out
}

/// Total bytes of `entries`.
pub fn total(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.size).sum()
}

/// Removes least recently used entries until the store holds at most `max`
/// bytes; returns what went. Needs the exclusive store lock.
pub fn collect(store: &Store, max: u64) -> Result<Vec<Entry>, StoreError> {
    let mut left = entries(store);
    let mut size = total(&left);
    let mut removed = Vec::new();
    while size > max {
        let parents: HashSet<String> = left
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Object { parent, .. } => parent.clone(),
                Kind::Source => None,
            })
            .collect();
        let Some(pos) = left.iter().position(|e| !parents.contains(&e.id)) else {
            break;
        };
        let entry = left.remove(pos);
        remove(store, &entry)?;
        size -= entry.size;
        removed.push(entry);
    }
    Ok(removed)
}

/// Removes object `id` and every object standing on it (their trees need
/// its layer); returns them. Needs the exclusive store lock.
pub fn remove_object(store: &Store, id: &str) -> Result<Vec<Entry>, StoreError> {
    let all = entries(store);
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &all {
        if let Kind::Object {
            parent: Some(p), ..
        } = &e.kind
        {
            children.entry(p.clone()).or_default().push(e.id.clone());
        }
    }
    // Children before parents, so a chain is never left broken.
    let mut order = Vec::new();
    let mut todo = vec![(id.to_owned(), false)];
    while let Some((next, expanded)) = todo.pop() {
        if expanded {
            order.push(next);
            continue;
        }
        todo.push((next.clone(), true));
        for child in children.get(&next).into_iter().flatten() {
            todo.push((child.clone(), false));
        }
    }
    let mut removed = Vec::new();
    for id in order {
        if let Some(entry) = all.iter().find(|e| e.id == id) {
            remove(store, entry)?;
            removed.push(entry.clone());
        }
    }
    Ok(removed)
}

fn remove(store: &Store, entry: &Entry) -> Result<(), StoreError> {
    match entry.kind {
        Kind::Source => std::fs::remove_file(&entry.path).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })?,
        Kind::Object { .. } => {
            // Out of objects/ in one rename, then deleted at leisure.
            let grave = store.work_dir("gc")?.keep();
            let dest = grave.join("object");
            fs_err::rename(&entry.path, &dest)?;
            remove_any(&grave);
        }
    }
    Ok(())
}

/// Parses a size: bytes, or a number with kB/KiB/MB/MiB/GB/GiB/TB/TiB (also
/// K/M/G/T as binary), or `unlimited` (`None`).
pub fn parse_size(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let factor: u64 = match unit {
        "" | "B" | "b" => 1,
        "kB" | "KB" | "k" => 1000,
        "KiB" | "K" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" | "M" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" | "G" => 1 << 30,
        "TB" => 1000 * 1000 * 1000 * 1000,
        "TiB" | "T" => 1 << 40,
        _ => {
            return Err(format!(
                "size `{text}`: unknown unit `{unit}` (use bytes, kB, KiB, MB, MiB, GB, GiB, TB, TiB or `unlimited`)"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("size `{text}`: `{num}` is not a number"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("size `{text}`: not a size"));
    }
    Ok(Some((value * factor as f64).round() as u64))
}

/// A size for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_every_unit() {
        assert_eq!(parse_size("1234"), Ok(Some(1234)));
        assert_eq!(parse_size("2kB"), Ok(Some(2000)));
        assert_eq!(parse_size("2 KiB"), Ok(Some(2048)));
        assert_eq!(parse_size("1.5GiB"), Ok(Some(1_610_612_736)));
        assert_eq!(parse_size("3MB"), Ok(Some(3_000_000)));
        assert_eq!(parse_size("1TiB"), Ok(Some(1 << 40)));
        assert_eq!(parse_size("unlimited"), Ok(None));
        assert!(
            parse_size("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("MB").unwrap_err().contains("not a number"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
