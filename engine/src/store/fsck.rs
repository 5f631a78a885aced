//! Checking the store against what it recorded (`strata store fsck`).
//!
//! ```text
//!   objects/<id>/                  meta/info.json a record; its parent stored;
//!     layer/                       walked again (treesum::sum): its treesum
//!                                  must be the one info.json recorded
//!     meta/treesum                 when it is not: the manifest recorded with
//!                                  it, against the walk's, names each path and
//!                                  what changed in it (content, mode, owner…)
//!   sources/<type>/sha256:<hex>    read again: its sha256 must be its name
//! ```
//!
//! Repair removes what does not match, under the exclusive store lock, as
//! collection does ([`gc`]): an object together with the objects standing
//! on it (each renamed out of objects/ first, so a kill -9 leaves it whole
//! or gone), a source item with one unlink. The next build makes them
//! again. An object stored before strata recorded treesums cannot be
//! checked; it is reported as such, and is not counted as broken.

use super::treesum::{self, PREFIX};
use super::{Store, StoreError, gc, remove_any};
use rustix::fs::{FileType, Mode, OFlags};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// At most this many differences are listed for one object (a tree that
/// was replaced whole would list every path); the rest are counted.
pub const LISTED_PER_OBJECT: usize = 20;

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// A stored object.
    Object(String),
    /// A source item: `<type>/<name>`.
    Source(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Object(id) => write!(f, "object {id}"),
            Subject::Source(name) => write!(f, "source {name}"),
        }
    }
}

/// One difference between what the store recorded and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The object or source item.
    pub subject: Subject,
    /// The entry in the object's tree (`/etc/motd`), when one can be named.
    pub path: Option<String>,
    /// What differs: `content`, `mode`, `missing`, `treesum`, …
    pub what: String,
    /// What was recorded.
    pub expected: String,
    /// What is there now.
    pub found: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.subject)?;
        if let Some(path) = &self.path {
            write!(f, " {path}")?;
        }
        write!(
            f,
            ": {}: expected {}, found {}",
            self.what, self.expected, self.found
        )
    }
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Object ids (whole).
    pub objects: Vec<String>,
    /// Source items, `<type>/<name>` (whole).
    pub sources: Vec<String>,
}

impl Targets {
    /// Everything the store holds.
    pub fn all(store: &Store) -> Targets {
        Targets {
            objects: sorted_names(&store.layout().objects())
                .into_iter()
                .filter(|n| !n.starts_with('.'))
                .collect(),
            sources: source_items(store),
        }
    }

    /// What the user named: object ids or unique prefixes of them, and
    /// source items by checksum (`sha256:…`, in any type) or as
    /// `<type>/sha256:…`.
    pub fn named(store: &Store, names: &[String]) -> Result<Targets, StoreError> {
        let mut targets = Targets::default();
        let items = source_items(store);
        for name in names {
            if name.contains("sha256:") {
                let found: Vec<&String> = items
                    .iter()
                    .filter(|item| *item == name || item.rsplit('/').next() == Some(name.as_str()))
                    .collect();
                if found.is_empty() {
                    return Err(StoreError::NotFound(format!(
                        "no stored source item {name} in {}",
                        store.layout().sources().display()
                    )));
                }
                targets.sources.extend(found.into_iter().cloned());
            } else {
                targets.objects.push(store.resolve(name)?);
            }
        }
        targets.objects.sort();
        targets.objects.dedup();
        targets.sources.sort();
        targets.sources.dedup();
        Ok(targets)
    }
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Objects checked (with a treesum or without).
    pub objects: usize,
    /// Source items checked.
    pub sources: usize,
    /// Objects stored without a treesum: not checked.
    pub unrecorded: Vec<String>,
    /// What does not match, each object or item once.
    pub broken: BTreeSet<Subject>,
}

/// Checks `targets`, telling `found` of each difference as it is found
/// (a big store takes a while; nothing waits for the end to be said).
pub fn check(store: &Store, targets: &Targets, found: &mut dyn FnMut(&Finding)) -> Report {
    let mut report = Report::default();
    for id in &targets.objects {
        report.objects += 1;
        let checked = check_object(store, id);
        for finding in &checked.findings {
            found(finding);
        }
        if checked.unlisted > 0 {
            found(&Finding {
                subject: Subject::Object(id.clone()),
                path: None,
                what: format!("{} more differences", checked.unlisted),
                expected: "none".into(),
                found: "them (not listed)".into(),
            });
        }
        if checked.unrecorded {
            report.unrecorded.push(id.clone());
        }
        if !checked.findings.is_empty() {
            report.broken.insert(Subject::Object(id.clone()));
        }
    }
    for item in &targets.sources {
        report.sources += 1;
        if let Some(finding) = check_source(store, item) {
            found(&finding);
            report.broken.insert(finding.subject);
        }
    }
    report
}

/// One object's findings.
#[derive(Debug, Default)]
struct ObjectCheck {
    findings: Vec<Finding>,
    /// Differences found past [`LISTED_PER_OBJECT`].
    unlisted: usize,
    /// No treesum was recorded: the layer was not checked.
    unrecorded: bool,
}

fn check_object(store: &Store, id: &str) -> ObjectCheck {
    let paths = store.layout().object(id);
    let mut out = ObjectCheck::default();
    let finding = |path: Option<String>, what: &str, expected: String, found: String| Finding {
        subject: Subject::Object(id.to_owned()),
        path,
        what: what.into(),
        expected,
        found,
    };
    let info: serde_json::Value = match std::fs::read(paths.info())
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}")))
    {
        Ok(info) => info,
        Err(e) => {
            out.findings.push(finding(
                None,
                "meta/info.json",
                "the object's record".into(),
                e,
            ));
            return out;
        }
    };
    if let Some(parent) = info["parent"].as_str()
        && !store.layout().object(parent).dir().is_dir()
    {
        out.findings.push(finding(
            None,
            "parent",
            format!("object {parent}, which its layer stands on"),
            "it missing".into(),
        ));
    }
    let Some(recorded) = info["treesum"].as_str() else {
        out.unrecorded = true;
        return out;
    };
    let actual = match treesum::sum(&paths.layer(), None) {
        Ok(summed) => summed,
        Err(e) => {
            out.findings.push(finding(
                None,
                "layer",
                "a tree strata can read".into(),
                e.to_string(),
            ));
            return out;
        }
    };
    if actual.treesum == recorded {
        return out;
    }
    let manifest = std::fs::read(paths.treesum()).ok();
    let intact = manifest
        .as_deref()
        .is_some_and(|m| treesum::digest(m) == recorded);
    let differences = match (&manifest, intact) {
        (Some(manifest), true) => diff(manifest, &actual.manifest),
        _ => Vec::new(),
    };
    if differences.is_empty() {
        // Nothing to name a path with: the treesum alone says it changed.
        let why = match (&manifest, intact) {
            (None, _) => {
                " (meta/treesum, the entries recorded with it, is missing: no path can be named)"
            }
            (Some(_), false) => {
                " (meta/treesum, the entries recorded with it, is damaged too: no path can be named)"
            }
            (Some(_), true) => "",
        };
        out.findings.push(finding(
            None,
            "treesum",
            recorded.to_owned(),
            format!("{}{why}", actual.treesum),
        ));
        return out;
    }
    out.unlisted = differences.len().saturating_sub(LISTED_PER_OBJECT);
    out.findings.extend(
        differences
            .into_iter()
            .take(LISTED_PER_OBJECT)
            .map(|d| finding(Some(d.path), d.what, d.expected, d.found)),
    );
    out
}

/// A difference between two manifests' entries.
#[derive(Debug, PartialEq, Eq)]
struct Difference {
    path: String,
    what: &'static str,
    expected: String,
    found: String,
}

/// One manifest line, split (see treesum's module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry<'a> {
    kind: &'a str,
    mode: &'a str,
    owner: &'a str,
    what: &'a str,
    xattrs: &'a str,
}

fn parse(manifest: &[u8]) -> Vec<(&str, Entry<'_>)> {
    // The walk writes ASCII only (treesum::escape).
    let text = std::str::from_utf8(manifest).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                [path, kind, mode, owner, what, xattrs] => Some((
                    *path,
                    Entry {
                        kind,
                        mode,
                        owner,
                        what,
                        xattrs,
                    },
                )),
                _ => None,
            }
        })
        .collect()
}

/// The differences between the recorded manifest and the walked one, in
/// the recorded walk order, then what is new.
fn diff(recorded: &[u8], actual: &[u8]) -> Vec<Difference> {
    let recorded = parse(recorded);
    let actual = parse(actual);
    let now: HashMap<&str, Entry<'_>> = actual.iter().copied().collect();
    let was: HashMap<&str, Entry<'_>> = recorded.iter().copied().collect();
    let mut out = Vec::new();
    let mut add = |path: &str, what, expected: String, found: String| {
        out.push(Difference {
            path: path.to_owned(),
            what,
            expected,
            found,
        })
    };
    for (path, old) in &recorded {
        let Some(new) = now.get(path) else {
            add(path, "missing", describe(old), "nothing".into());
            continue;
        };
        if old == new {
            continue;
        }
        if old.kind != new.kind {
            add(path, "type", describe(old), describe(new));
            continue;
        }
        if old.mode != new.mode {
            add(path, "mode", old.mode.into(), new.mode.into());
        }
        if old.owner != new.owner {
            add(path, "owner", old.owner.into(), new.owner.into());
        }
        if old.what != new.what {
            let what = match old.kind {
                "f" => "content",
                "l" => "link target",
                _ => "device number",
            };
            add(path, what, what_of(old), what_of(new));
        }
        if old.xattrs != new.xattrs {
            add(path, "xattrs", clip(old.xattrs), clip(new.xattrs));
        }
    }
    for (path, new) in &actual {
        if !was.contains_key(path) {
            add(path, "not recorded", "nothing".into(), describe(new));
        }
    }
    out
}

/// An entry for people: `regular file 0644 0:0, 13 bytes blake3:1f2e…`.
fn describe(e: &Entry<'_>) -> String {
    let kind = match e.kind {
        "d" => "directory",
        "f" => "regular file",
        "l" => "symbolic link",
        "c" => "character device",
        "b" => "block device",
        "p" => "FIFO",
        "s" => "socket",
        _ => "entry of an unknown type",
    };
    match e.what {
        "-" => format!("{kind} {} {}", e.mode, e.owner),
        _ => format!("{kind} {} {}, {}", e.mode, e.owner, what_of(e)),
    }
}

/// A file's size and digest (`13 bytes blake3:1f2e3d4c5b6a7988…`), a
/// link's target, a device's number.
fn what_of(e: &Entry<'_>) -> String {
    match (e.kind, e.what.split_once(':')) {
        ("f", Some((size, hash))) => {
            format!("{size} bytes {PREFIX}{}…", &hash[..hash.len().min(16)])
        }
        ("l", _) => format!("-> {}", clip(e.what)),
        _ => e.what.to_owned(),
    }
}

/// A long value cut to a length a line can hold.
fn clip(s: &str) -> String {
    const MAX: usize = 160;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// The source items in the store, `<type>/<name>`, sorted.
fn source_items(store: &Store) -> Vec<String> {
    let root = store.layout().sources();
    let mut items = Vec::new();
    for ty in sorted_names(&root) {
        for name in sorted_names(&root.join(&ty)) {
            items.push(format!("{ty}/{name}"));
        }
    }
    items
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Reads source item `<type>/<name>` again: its sha256 must be its name.
fn check_source(store: &Store, item: &str) -> Option<Finding> {
    let (ty, name) = item.split_once('/')?;
    let finding = |what: &str, expected: String, found: String| Finding {
        subject: Subject::Source(item.to_owned()),
        path: None,
        what: what.into(),
        expected,
        found,
    };
    let Ok(checksum) = name.parse::<strata_sources::Checksum>() else {
        return Some(finding(
            "name",
            "sha256:<64 lowercase hex digits>".into(),
            treesum::escape(name.as_bytes()),
        ));
    };
    let dir = store.layout().sources().join(ty);
    let actual = open_item(&dir, name)
        .and_then(|file| strata_sources::sha256_reader(file).map_err(|e| e.to_string()));
    match actual {
        Ok(actual) if actual == checksum => None,
        Ok(actual) => Some(finding("content", checksum.to_string(), actual.to_string())),
        Err(e) => Some(finding("content", checksum.to_string(), e)),
    }
}

/// Opens a source item as the walk opens files: no link followed, never
/// blocking, a regular file or refused, and without changing its access
/// time (the items' last use, which collection goes by).
fn open_item(dir: &Path, name: &str) -> Result<std::fs::File, String> {
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&dirfd, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(&dirfd, name, flags, Mode::empty()),
        other => other,
    }
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => "a symbolic link".to_owned(),
        e => e.to_string(),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err("not a regular file".into());
    }
    Ok(std::fs::File::from(fd))
}

/// What a repair removed.
#[derive(Debug, Default)]
pub struct Repaired {
    /// Objects removed, with the broken one each stood on (itself when it
    /// was broken).
    pub objects: Vec<(String, String)>,
    /// Source items removed.
    pub sources: Vec<String>,
}

/// Removes what `report` found broken, and the objects standing on broken
/// ones. Needs the exclusive store lock.
pub fn repair(store: &Store, report: &Report) -> Result<Repaired, StoreError> {
    let mut done = Repaired::default();
    for subject in &report.broken {
        match subject {
            Subject::Object(id) => {
                for entry in gc::remove_object(store, id)? {
                    done.objects.push((entry.id, id.clone()));
                }
                // Without a readable record it is not a collectable entry:
                // moved out of objects/ all the same.
                let dir = store.layout().object(id).dir().to_path_buf();
                if std::fs::symlink_metadata(&dir).is_ok() {
                    bury(store, &dir)?;
                    done.objects.push((id.clone(), id.clone()));
                }
            }
            Subject::Source(item) => {
                let path = store.layout().sources().join(item);
                match std::fs::remove_file(&path) {
                    Ok(()) => done.sources.push(item.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(std::io::Error::new(
                            e.kind(),
                            format!("removing {}: {e}", path.display()),
                        )
                        .into());
                    }
                }
            }
        }
    }
    Ok(done)
}

/// Moves `dir` out of objects/ in one rename, then removes it.
fn bury(store: &Store, dir: &Path) -> Result<(), StoreError> {
    let grave: PathBuf = store.work_dir("fsck")?.keep();
    fs_err::rename(dir, grave.join("object"))?;
    remove_any(&grave);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_path_and_what_changed() {
        let h1 = "1f".repeat(32);
        let h2 = "2e".repeat(32);
        let recorded = format!(
            "/ d 0755 0:0 - -\n/etc d 0755 0:0 - -\n/etc/motd f 0644 0:0 13:{h1} -\n\
             /etc/gone f 0644 0:0 0:{h1} -\n/bin l 0777 0:0 usr/bin -\n/x d 0755 0:0 - user.a=b\n"
        );
        let actual = format!(
            "/ d 0755 0:0 - -\n/etc d 0700 0:0 - -\n/etc/motd f 0644 0:0 3:{h2} -\n\
             /bin l 0777 0:0 usr/sbin -\n/x f 0755 0:0 0:{h1} -\n/new p 0600 1:1 - -\n"
        );
        let found = diff(recorded.as_bytes(), actual.as_bytes());
        let lines: Vec<String> = found
            .iter()
            .map(|d| format!("{} {}: {} | {}", d.path, d.what, d.expected, d.found))
            .collect();
        assert_eq!(
            lines,
            [
                "/etc mode: 0755 | 0700".to_owned(),
                format!(
                    "/etc/motd content: 13 bytes blake3:{}… | 3 bytes blake3:{}…",
                    &h1[..16],
                    &h2[..16]
                ),
                format!(
                    "/etc/gone missing: regular file 0644 0:0, 0 bytes blake3:{}… | nothing",
                    &h1[..16]
                ),
                "/bin link target: -> usr/bin | -> usr/sbin".to_owned(),
                format!(
                    "/x type: directory 0755 0:0 | regular file 0755 0:0, 0 bytes blake3:{}…",
                    &h1[..16]
                ),
                "/new not recorded: nothing | FIFO 0600 1:1".to_owned(),
            ]
        );
    }

    #[test]
    fn a_finding_reads_as_one_line() {
        let f = Finding {
            subject: Subject::Object("ab".into()),
            path: Some("/etc/motd".into()),
            what: "mode".into(),
            expected: "0644".into(),
            found: "0600".into(),
        };
        assert_eq!(
            f.to_string(),
            "object ab /etc/motd: mode: expected 0644, found 0600"
        );
    }
}
