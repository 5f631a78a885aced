//! How much an archive may unpack: its files' bytes against the stage's
//! own limit (`options.max_size`), and every member against the free
//! space and inodes of the tree's filesystem, measured with `fstatvfs` as
//! the archive goes, so that a compressed archive that expands past what
//! is there stops with an error before the disk is full, not at it.
//!
//! ```text
//!   charge(member) ── over max_size? ─────────────────────────────> refused
//!        │
//!        └─ fits in `room` (last measure, less what was charged since)? ─> ok
//!              no, or 64 MiB charged since: measure again ── fits? ─> ok, else refused
//! ```
//!
//! A measure leaves 1% of the filesystem (at most 1 GiB, and 1% of its
//! inodes) for everything else that lives there.

use std::os::fd::BorrowedFd;

use rustix::fs::StatVfs;

/// Charged bytes after which the filesystem is measured again, fit or not:
/// others write there too.
const RECHECK: u64 = 64 << 20;
/// The most a measure keeps free for others.
const MAX_RESERVE: u64 = 1 << 30;
/// What one member is charged at least: a block.
const BLOCK: u64 = 4096;

/// Why a member does not fit.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Short {
    /// The files would add up to `total` bytes, past `max`.
    Limit { total: u64, max: u64 },
    /// The filesystem has `free` bytes left and `reserve` of them stay free.
    Space { free: u64, reserve: u64 },
    /// The filesystem has no inodes left (but `reserve`).
    Inodes { free: u64, reserve: u64 },
    /// It could not be measured.
    Measure(rustix::io::Errno),
}

impl Short {
    /// Says why a member of `size` bytes is refused.
    pub fn why(&self, size: u64) -> String {
        match self {
            Self::Limit { total, max } => format!(
                "({size} bytes) would take the unpacked files to {total} bytes, past \
                 options.max_size ({max} bytes)"
            ),
            Self::Space { free, reserve } => format!(
                "({size} bytes) does not fit in the tree's filesystem: it has {free} bytes free, \
                 and untar leaves {reserve} of them free"
            ),
            Self::Inodes { free, reserve } => format!(
                "does not fit in the tree's filesystem: it has {free} inodes free, and untar \
                 leaves {reserve} of them free"
            ),
            Self::Measure(e) => format!(
                "cannot be checked against the free space of the tree's filesystem: {}",
                std::io::Error::from(*e)
            ),
        }
    }
}

#[derive(Debug)]
pub(super) struct Budget {
    max: Option<u64>,
    /// Bytes of files so far (against `max`).
    total: u64,
    /// Bytes and inodes that may still be written before measuring again.
    room: u64,
    inodes: u64,
    /// Bytes charged since the last measure.
    since: u64,
    /// Not measured yet: the first charge measures.
    fresh: bool,
}

impl Budget {
    pub fn new(max: Option<u64>) -> Self {
        Self {
            max,
            total: 0,
            room: 0,
            inodes: 0,
            since: 0,
            fresh: true,
        }
    }

    /// Charges a member of `bytes` bytes of content and `inodes` inodes to
    /// the tree whose filesystem `fd` is on.
    pub fn charge(&mut self, fd: BorrowedFd<'_>, bytes: u64, inodes: u64) -> Result<(), Short> {
        self.charge_with(bytes, inodes, || rustix::fs::fstatvfs(fd))
    }

    fn charge_with(
        &mut self,
        bytes: u64,
        inodes: u64,
        measure: impl FnOnce() -> rustix::io::Result<StatVfs>,
    ) -> Result<(), Short> {
        let total = self.total.saturating_add(bytes);
        if let Some(max) = self.max
            && total > max
        {
            return Err(Short::Limit { total, max });
        }
        let cost = bytes.div_ceil(BLOCK).max(1).saturating_mul(BLOCK);
        if self.fresh || cost > self.room || inodes > self.inodes || self.since >= RECHECK {
            let st = measure().map_err(Short::Measure)?;
            self.fresh = false;
            self.since = 0;
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let reserve = (st.f_blocks.saturating_mul(st.f_frsize) / 100).min(MAX_RESERVE);
            self.room = free.saturating_sub(reserve);
            if cost > self.room {
                return Err(Short::Space { free, reserve });
            }
            // Filesystems without a fixed inode table (btrfs) report none.
            if st.f_files == 0 {
                self.inodes = u64::MAX;
            } else {
                let reserve = st.f_files / 100;
                self.inodes = st.f_favail.saturating_sub(reserve);
                if inodes > self.inodes {
                    return Err(Short::Inodes {
                        free: st.f_favail,
                        reserve,
                    });
                }
            }
        }
        self.total = total;
        self.room -= cost;
        self.inodes -= inodes;
        self.since += cost;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statvfs(blocks: u64, avail: u64, files: u64, favail: u64) -> StatVfs {
        StatVfs {
            f_bsize: BLOCK,
            f_frsize: BLOCK,
            f_blocks: blocks,
            f_bfree: avail,
            f_bavail: avail,
            f_files: files,
            f_ffree: favail,
            f_favail: favail,
            f_fsid: 0,
            f_flag: rustix::fs::StatVfsMountFlags::empty(),
            f_namemax: 255,
        }
    }

    #[test]
    fn the_limit_counts_file_bytes() {
        let mut b = Budget::new(Some(10_000));
        let fs = || Ok(statvfs(1 << 20, 1 << 19, 0, 0));
        assert_eq!(b.charge_with(6_000, 1, fs), Ok(()));
        assert_eq!(b.charge_with(0, 1, fs), Ok(()));
        assert_eq!(
            b.charge_with(5_000, 1, fs),
            Err(Short::Limit {
                total: 11_000,
                max: 10_000
            })
        );
        // What was refused was not charged.
        assert_eq!(b.charge_with(4_000, 1, fs), Ok(()));
    }

    #[test]
    fn free_space_is_measured_again_before_it_runs_out() {
        let mut b = Budget::new(None);
        // 400 MiB in all, 100 blocks (400 KiB) free: 4 MiB stays free, so nothing fits.
        let measures = std::cell::Cell::new(0);
        let small = || {
            measures.set(measures.get() + 1);
            Ok(statvfs(100 << 10, 100, 1000, 1000))
        };
        let e = b.charge_with(1, 1, small).unwrap_err();
        assert_eq!(
            e,
            Short::Space {
                free: 400 << 10,
                reserve: 4 << 20
            }
        );
        assert!(
            e.why(1).contains("it has 409600 bytes free"),
            "{}",
            e.why(1)
        );

        // Plenty of room: one measure serves many members.
        let mut b = Budget::new(None);
        let big = || {
            measures.set(measures.get() + 1);
            Ok(statvfs(1 << 30, 1 << 28, 1 << 20, 1 << 19))
        };
        measures.set(0);
        for _ in 0..1000 {
            b.charge_with(10_000, 1, big).unwrap();
        }
        assert_eq!(measures.get(), 1);
        // 64 MiB later, the filesystem is asked again.
        for _ in 0..2000 {
            b.charge_with(40_000, 1, big).unwrap();
        }
        assert!(measures.get() > 1);
    }

    #[test]
    fn inodes_run_out_too() {
        let mut b = Budget::new(None);
        let used = std::cell::Cell::new(0u64);
        let fs = || Ok(statvfs(1 << 30, 1 << 28, 10_000, 150 - used.get()));
        for _ in 0..50 {
            b.charge_with(0, 1, fs).unwrap();
            used.set(used.get() + 1);
        }
        assert_eq!(
            b.charge_with(0, 1, fs),
            Err(Short::Inodes {
                free: 100,
                reserve: 100
            })
        );
        // Hard links take no inode.
        assert_eq!(b.charge_with(0, 0, fs), Ok(()));
        // btrfs and friends: no inode table, no inode limit.
        let mut b = Budget::new(None);
        let btrfs = || Ok(statvfs(1 << 30, 1 << 28, 0, 0));
        b.charge_with(0, 1, btrfs).unwrap();
    }
}
