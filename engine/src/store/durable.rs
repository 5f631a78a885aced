//! Publishing into the store durably: data on disk first, then the name.
//!
//! ```text
//!   write under tmp/ (or beside)      data, then its records
//!   fsync the file  |  syncfs         one file: fsync; a tree: one syncfs
//!                                     for all of it (never one fsync a file)
//!   rename into place                 the name appears, pointing at data on disk
//!   fsync the folder it is now in     the rename itself survives a crash
//! ```
//!
//! Without the first sync a crash can leave the name on disk and the data
//! not (ext4's delayed allocation makes that an empty file): a store that
//! serves it later reuses an object or a source that is not what was
//! recorded. Every path that publishes (objects, source items, systems
//! records, instances, the store's own files) goes through here.

use fs_err as fs;
use std::io;
use std::path::Path;

/// Flushes the whole filesystem `path` is on (syncfs): a tree's worth of
/// files in one call, instead of one fsync each.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = fs::File::open(path)?;
    rustix::fs::syncfs(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("syncing {}: {e}", path.display())))
}

/// Flushes the directory `dir` (the names in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let fd = fs::File::open(dir)?;
    fd.sync_all()
        .map_err(|e| io::Error::new(e.kind(), format!("syncing {}: {e}", dir.display())))
}

/// Renames `from` to `to` and flushes `to`'s folder. The data under `from`
/// must be on disk already ([`sync_filesystem`], or `File::sync_all`).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_parent(to)
}

/// Flushes the folder holding `path`.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Makes `dir` and its missing parents, and flushes the folder each new
/// one was made in: a record renamed into a new folder survives a crash
/// with the folder.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        // Made by another process meanwhile: whoever made it flushes it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `data` to `staged` (a new name on `dest`'s filesystem), flushes
/// it, and renames it over `dest`: a reader, or the store after a crash,
/// sees the old file or the whole new one.
pub fn write(staged: &Path, dest: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::File::create(staged)?;
    file.write_all(data)?;
    file.sync_all()
        .map_err(|e| io::Error::new(e.kind(), format!("syncing {}: {e}", staged.display())))?;
    drop(file);
    rename(staged, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("config.json");
        std::fs::write(&dest, "old").unwrap();
        write(&dir.path().join(".config.json.1"), &dest, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert!(!dir.path().join(".config.json.1").exists());
        sync_filesystem(dir.path()).unwrap();
    }

    #[test]
    fn create_dir_all_makes_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
    }
}
