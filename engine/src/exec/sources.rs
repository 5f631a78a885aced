//! Sources, fetched into the store before any stage runs.

use super::{BuildError, Builder};
use crate::monitor::Event;
use std::sync::Mutex;

impl Builder<'_> {
    /// Fetches every source item, `jobs` at a time: downloads wait on the
    /// network, not the cores, but a bound keeps a mirror from seeing a
    /// flood. After a failure no new item starts.
    pub(super) fn fetch_sources(&self) -> Result<(), BuildError> {
        let mut limits = strata_sources::Limits::default();
        if let Some(max) = self.opts.max_source_size {
            limits.max_bytes = max;
        }
        let sources = self
            .store()
            .sources()
            .with_limits(limits)
            .with_secrets(self.opts.secrets.clone());
        let items: Vec<_> = self.m.sources.values().collect();
        let next = Mutex::new(items.iter());
        let failures = Mutex::new(Vec::new());
        let workers = self.jobs.min(items.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        if !failures.lock().expect("failures lock").is_empty() {
                            return;
                        }
                        let Some(item) = next.lock().expect("items lock").next() else {
                            return;
                        };
                        let announce = |done: bool, cached: bool, bytes: Option<u64>| {
                            self.monitor.emit(Event::SourceFetch {
                                item: item.checksum.as_str().to_owned(),
                                ty: item.ty.as_str().to_owned(),
                                bytes,
                                done,
                                cached,
                            })
                        };
                        let cached = sources.contains(item.ty, &item.checksum);
                        if !cached {
                            announce(false, false, None);
                        }
                        match sources.fetch(item.ty, &item.checksum, &item.item) {
                            Ok(fetched) => {
                                if fetched.cached {
                                    self.store().touch_source(&fetched.path);
                                }
                                announce(true, fetched.cached, Some(fetched.bytes))
                            }
                            Err(e) => failures
                                .lock()
                                .expect("failures lock")
                                .push(source_error(&e)),
                        }
                    }
                });
            }
        });
        let failures = failures.into_inner().expect("failures lock");
        match BuildError::combine(failures) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A source item's failure as a build error: the manifest's fault (exit 2)
/// or the world's (exit 1).
fn source_error(e: &strata_sources::SourceError) -> BuildError {
    use strata_sources::SourceError as E;
    match e {
        E::InvalidChecksum { .. } | E::InvalidItem { .. } | E::Mismatch { .. } => {
            BuildError::Source(e.to_string())
        }
        _ => BuildError::Fetch(e.to_string()),
    }
}
