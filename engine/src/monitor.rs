//! What strata tells people while it works: plain lines on stderr.
//!
//! stdout is for data only (`inspect`, `--json`); everything here goes to
//! stderr, and nothing but errors when quiet.

use crate::id::Id;
use std::path::Path;
use std::time::Duration;

/// Progress reporting for one command.
#[derive(Debug, Clone, Copy)]
pub struct Monitor {
    quiet: bool,
}

impl Monitor {
    /// A monitor; `quiet` keeps it silent.
    pub fn new(quiet: bool) -> Monitor {
        Monitor { quiet }
    }

    fn say(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// A source item was downloaded or written.
    pub fn source_fetched(&self, checksum: &str, bytes: u64) {
        self.say(format_args!(
            "source {}: fetched, {bytes} bytes",
            short(checksum)
        ));
    }

    /// A stage was found in the store.
    pub fn stage_cached(&self, pipeline: &str, index: usize, ty: &str, id: &Id) {
        self.say(format_args!(
            "{pipeline}: stage {index} {ty} [{}] cached",
            short(id.as_str())
        ));
    }

    /// A stage starts.
    pub fn stage_started(&self, pipeline: &str, index: usize, ty: &str, id: &Id) {
        self.say(format_args!(
            "{pipeline}: stage {index} {ty} [{}] running",
            short(id.as_str())
        ));
    }

    /// A stage finished successfully.
    pub fn stage_built(
        &self,
        pipeline: &str,
        index: usize,
        ty: &str,
        id: &Id,
        took: Duration,
        stored: bool,
    ) {
        self.say(format_args!(
            "{pipeline}: stage {index} {ty} [{}] built in {:.2}s{}",
            short(id.as_str()),
            took.as_secs_f64(),
            if stored { ", checkpointed" } else { "" }
        ));
    }

    /// Another build is making this stage's object; this one waits for it.
    pub fn stage_waiting(&self, pipeline: &str, index: usize, ty: &str, id: &Id) {
        self.say(format_args!(
            "{pipeline}: stage {index} {ty} [{}] waiting: another build is making it",
            short(id.as_str())
        ));
    }

    /// A stage's object was not kept: it alone is bigger than the store may be.
    /// Said even when quiet: the user asked for a cache and did not get it.
    pub fn too_big(&self, pipeline: &str, index: usize, ty: &str, size: u64, max: u64) {
        eprintln!(
            "{pipeline}: stage {index} {ty}: not stored: it takes {}, more than the store's limit of {} (--cache-max-size)",
            crate::store::gc::human(size),
            crate::store::gc::human(max)
        );
    }

    /// The store was collected down to its limit.
    pub fn collected(&self, count: usize, freed: u64, max: u64) {
        self.say(format_args!(
            "store: removed {count} least recently used entries ({}) to stay within {}",
            crate::store::gc::human(freed),
            crate::store::gc::human(max)
        ));
    }

    /// A pipeline was exported.
    pub fn exported(&self, pipeline: &str, dest: &Path) {
        self.say(format_args!("{pipeline}: exported to {}", dest.display()));
    }
}

fn short(s: &str) -> &str {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    &s[..s.len().min(12)]
}
