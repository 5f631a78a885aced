//! flock(2) locks with a deadline: the store lock (shared to build,
//! exclusive to collect) and the per-object build locks.
//!
//! flock locks belong to an open file description, so they are released by
//! the kernel when the holder dies, however it dies: a kill -9 never leaves
//! a lock behind. Waiting polls a non-blocking attempt, because a blocking
//! flock cannot be given a timeout.

use super::StoreError;
use rustix::fs::{FlockOperation, flock};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Many holders (builds).
    Shared,
    /// One holder (collection, or the build of one object).
    Exclusive,
}

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
    path: PathBuf,
}

impl Lock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes `mode` on `path` (created if missing) without waiting; `None` when
/// another holder is in the way.
pub fn try_lock(path: &Path, mode: Mode) -> Result<Option<Lock>, StoreError> {
    let file = open(path)?;
    let op = match mode {
        Mode::Shared => FlockOperation::NonBlockingLockShared,
        Mode::Exclusive => FlockOperation::NonBlockingLockExclusive,
    };
    match flock(file.as_fd(), op) {
        Ok(()) => Ok(Some(Lock {
            _file: file,
            path: path.to_path_buf(),
        })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(StoreError::Lock {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Takes `mode` on `path`, waiting at most `timeout`; `waiting` is called
/// once if the lock is busy (to tell the user why nothing happens).
pub fn lock(
    path: &Path,
    mode: Mode,
    timeout: Duration,
    waiting: impl FnOnce(),
) -> Result<Lock, StoreError> {
    if let Some(lock) = try_lock(path, mode)? {
        return Ok(lock);
    }
    waiting();
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        std::thread::sleep(pause);
        if let Some(lock) = try_lock(path, mode)? {
            return Ok(lock);
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Lock {
                path: path.to_path_buf(),
                detail: format!(
                    "still held by another strata after {}s\n    hint: another build or `strata store gc` is using the store; wait for it, or raise --lock-timeout",
                    timeout.as_secs_f64()
                ),
            });
        }
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn open(path: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::Lock {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_waits_for_shared_and_times_out_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let shared = lock(&path, Mode::Shared, Duration::ZERO, || {}).unwrap();
        let also = try_lock(&path, Mode::Shared).unwrap();
        assert!(also.is_some(), "shared locks share");
        let mut told = false;
        let err = lock(&path, Mode::Exclusive, Duration::from_millis(50), || {
            told = true
        })
        .unwrap_err();
        assert!(told);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        drop((shared, also));
        assert!(try_lock(&path, Mode::Exclusive).unwrap().is_some());
    }
}
