//! Events for programs: RFC 7464 JSON text sequences.
//!
//! ```text
//! RS {"event":"stage-start","time":1732579200.123,"pipeline":"os","index":0,…} LF
//! RS {"event":"log",…} LF
//! ```
//!
//! Each record is flushed as soon as it is written, so a reader sees an event
//! when it happens. Every record has `event` (its kind) and `time` (seconds
//! since the Unix epoch); the rest is [`Event`]'s shape, described by
//! `schemas/monitor-event.json`.

use super::{Event, Sink};
use serde::Serialize;
use std::io::Write;
use std::time::SystemTime;

/// The record separator that starts every record.
const RS: u8 = 0x1e;

/// Writes events as a JSON text sequence.
pub struct JsonSeq {
    out: Box<dyn Write + Send>,
    broken: bool,
}

impl std::fmt::Debug for JsonSeq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSeq").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Record<'a> {
    time: f64,
    #[serde(flatten)]
    event: &'a Event,
}

impl JsonSeq {
    /// A sink writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> JsonSeq {
        JsonSeq { out, broken: false }
    }

    /// A sink on file descriptor `fd`, which strata's parent opened for it.
    ///
    /// The descriptor is reopened through /proc/self/fd rather than adopted:
    /// adopting a raw descriptor takes `unsafe`, and the reopened file
    /// reaches the same pipe or file (appending, so a file the parent
    /// already wrote to is not overwritten).
    pub fn on_fd(fd: u32) -> std::io::Result<JsonSeq> {
        let path = format!("/proc/self/fd/{fd}");
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "--monitor-fd {fd}: not an open file descriptor strata can write to ({e})"
                    ),
                )
            })?;
        Ok(JsonSeq::new(Box::new(file)))
    }
}

impl Sink for JsonSeq {
    fn event(&mut self, at: SystemTime, event: &Event) {
        // A reader that went away must not stop the build; it just stops
        // getting events.
        if self.broken {
            return;
        }
        let time = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut record = vec![RS];
        serde_json::to_writer(&mut record, &Record { time, event }).expect("events serialize");
        record.push(b'\n');
        if self
            .out
            .write_all(&record)
            .and_then(|()| self.out.flush())
            .is_err()
        {
            self.broken = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{PipelineResult, StageRef};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_are_rs_json_lf_with_event_and_time() {
        let buf = Shared::default();
        let mut sink = JsonSeq::new(Box::new(buf.clone()));
        let stage = StageRef {
            pipeline: "p".into(),
            index: 0,
            ty: "mkdir".into(),
            id: "ab".into(),
        };
        sink.event(SystemTime::UNIX_EPOCH, &Event::StageStart { stage });
        sink.event(
            SystemTime::UNIX_EPOCH,
            &Event::PipelineFinish {
                pipeline: "p".into(),
                id: None,
                result: PipelineResult::Skipped,
                duration: 0.0,
            },
        );
        let bytes = buf.0.lock().unwrap().clone();
        let records: Vec<&[u8]> = bytes.split(|&b| b == RS).skip(1).collect();
        assert_eq!(bytes[0], RS);
        assert_eq!(records.len(), 2);
        let first: serde_json::Value = serde_json::from_slice(records[0]).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"time": 0.0, "event": "stage-start", "pipeline": "p", "index": 0, "type": "mkdir", "id": "ab"})
        );
        assert!(records.iter().all(|r| r.ends_with(b"\n")));
        let second: serde_json::Value = serde_json::from_slice(records[1]).unwrap();
        assert_eq!(second["result"], "skipped");
    }
}
