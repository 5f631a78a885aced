//! Putting a finished export in place: whole or absent, and with
//! `--force`, over what is there in one step.

use std::io;
use std::path::Path;

/// Moves `staging` to `dest`. When `dest` exists and `replace` is set, the
/// two are swapped in one `renameat2(RENAME_EXCHANGE)`, so a reader sees
/// the old export or the new one and never neither, and the old one (now
/// at `staging`) is removed after (a link is removed, never followed).
/// Without `replace`, a `dest` that exists is an error: the rename is
/// `RENAME_NOREPLACE`, so one that appears after any check still loses
/// nothing (plain `rename` would replace a file or a link silently).
pub fn put_in_place(staging: &Path, dest: &Path, replace: bool) -> io::Result<()> {
    let exists = dest.symlink_metadata().is_ok();
    if !exists || !replace {
        return rustix::fs::renameat_with(
            rustix::fs::CWD,
            staging,
            rustix::fs::CWD,
            dest,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists already", dest.display()),
            ),
            e => io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "cannot rename {} to {}: {e}",
                    staging.display(),
                    dest.display()
                ),
            ),
        });
    }
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        staging,
        rustix::fs::CWD,
        dest,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "cannot swap {} with {}: {e}",
                staging.display(),
                dest.display()
            ),
        )
    })?;
    let old = staging;
    if old.symlink_metadata()?.is_dir() {
        fs_err::remove_dir_all(old)
    } else {
        fs_err::remove_file(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_directory_whole_and_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let staging = dir.path().join(".out.new");
        std::fs::create_dir_all(dest.join("old-only")).unwrap();
        std::fs::write(dest.join("shared"), "old").unwrap();
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("shared"), "new").unwrap();

        let err = put_in_place(&staging, &dest, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read_to_string(dest.join("shared")).unwrap(), "old");

        put_in_place(&staging, &dest, true).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("shared")).unwrap(), "new");
        assert!(!dest.join("old-only").exists());
        assert!(!staging.exists(), "the old export is removed");

        // A link at the destination is replaced, not followed, and what it
        // points to is left alone.
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("shared"), "newer").unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = put_in_place(&staging, &link, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        put_in_place(&staging, &link, true).unwrap();
        assert!(!link.symlink_metadata().unwrap().is_symlink());
        assert_eq!(
            std::fs::read_to_string(link.join("shared")).unwrap(),
            "newer"
        );
        assert!(elsewhere.is_dir() && std::fs::read_dir(&elsewhere).unwrap().next().is_none());

        // A missing destination needs no --force.
        std::fs::create_dir(&staging).unwrap();
        let fresh = dir.path().join("fresh");
        put_in_place(&staging, &fresh, false).unwrap();
        assert!(fresh.is_dir() && !staging.exists());
    }
}
