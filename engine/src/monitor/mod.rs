//! What strata tells people and programs while it works.
//!
//! ```text
//!   exec (scheduler, workers) ──Event──▶ Monitor ──▶ sinks, each behind one lock:
//!                                                  ├─ live      indicatif view on a terminal (stderr)
//!                                                  ├─ plain     timestamped lines (stderr, not a terminal)
//!                                                  └─ json-seq  RFC 7464 records (stdout or --monitor-fd)
//! ```
//!
//! The engine only says what happened ([`Event`]); each sink decides what to
//! show. stdout is for data only: the human sinks write to stderr, and the
//! json-seq sink goes to stdout only when asked (`--monitor json-seq`).
//! Quiet means no human sink at all: errors are printed by the command line.
//! The events' JSON shape is `schemas/monitor-event.json`.

mod json_seq;
mod live;
mod plain;

pub use json_seq::JsonSeq;
pub use live::Live;
pub use plain::Plain;

use crate::id::Id;
use serde::Serialize;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A stage, named the way every consumer can find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageRef {
    /// Pipeline name.
    pub pipeline: String,
    /// Index of the stage in its pipeline.
    pub index: usize,
    /// Stage type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Stage id.
    pub id: String,
}

impl StageRef {
    /// A reference to stage `index` of `pipeline`.
    pub fn new(pipeline: &str, index: usize, ty: &str, id: &Id) -> StageRef {
        StageRef {
            pipeline: pipeline.to_owned(),
            index,
            ty: ty.to_owned(),
            id: id.as_str().to_owned(),
        }
    }

    /// `pipeline/type`, the prefix of its log lines.
    pub fn label(&self) -> String {
        format!("{}/{}", self.pipeline, self.ty)
    }
}

/// A pipeline as announced at the start of a build.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineInfo {
    /// Its name.
    pub name: String,
    /// Its id (its last stage's), null when it has no stages.
    pub id: Option<String>,
    /// The pipelines it needs first, by name.
    pub needs: Vec<String>,
    /// Its stages in order.
    pub stages: Vec<StageInfo>,
}

/// A stage as announced at the start of a build.
#[derive(Debug, Clone, Serialize)]
pub struct StageInfo {
    /// Stage type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Stage id.
    pub id: String,
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageStatus {
    /// Taken from the store; it did not run.
    Cached,
    /// Run now, successfully.
    Built,
    /// Run now, and it failed (or was stopped).
    Failed,
}

/// How a pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineResult {
    /// Every stage is done.
    Success,
    /// One of its stages failed.
    Failed,
    /// It never started: a pipeline it needs failed, or the build stopped
    /// scheduling after a failure.
    Skipped,
}

/// Something that happened during a build.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The build starts: what it will look at.
    BuildStart {
        /// Pipelines in manifest order.
        pipelines: Vec<PipelineInfo>,
        /// How many pipelines may run at once.
        jobs: usize,
    },
    /// A source item is being fetched (`done: false`) or is in the store.
    SourceFetch {
        /// The item's checksum.
        item: String,
        /// The source type (`inline`, `curl`).
        #[serde(rename = "type")]
        ty: String,
        /// Its size, once done.
        bytes: Option<u64>,
        /// Whether it is in the store now.
        done: bool,
        /// Whether it was there already (nothing fetched).
        cached: bool,
    },
    /// A pipeline starts.
    PipelineStart {
        /// Its name.
        pipeline: String,
        /// Its id.
        id: Option<String>,
    },
    /// A pipeline ends, one way or another.
    PipelineFinish {
        /// Its name.
        pipeline: String,
        /// Its id.
        id: Option<String>,
        /// How it ended.
        result: PipelineResult,
        /// Seconds since it started (0 when skipped).
        duration: f64,
    },
    /// A stage starts running (cached stages do not start; they finish).
    StageStart {
        /// Which.
        #[serde(flatten)]
        stage: StageRef,
    },
    /// A stage ends.
    StageFinish {
        /// Which.
        #[serde(flatten)]
        stage: StageRef,
        /// Cached, built or failed.
        status: StageStatus,
        /// Whether its tree is in the store now.
        stored: bool,
        /// Seconds it ran (0 when cached).
        duration: f64,
        /// "success", or why it failed ("exit status 3", "timed out …").
        result: String,
    },
    /// A line a running stage wrote (stdout and stderr together).
    Log {
        /// Which stage.
        #[serde(flatten)]
        stage: StageRef,
        /// The line, without its newline (invalid UTF-8 replaced).
        line: String,
    },
    /// An error: a failed stage (with its exit status and log tail), a bad
    /// source, a store or export failure. Its members are those of the
    /// `error` of `--json` results.
    Error {
        /// `kind`, `message` and for stages `pipeline`, `stage`, `status`, `log_tail`.
        #[serde(flatten)]
        detail: serde_json::Map<String, Value>,
    },
    /// Something the store says that is not an error: a build waits for
    /// another that makes the same object, an object too big to keep, a
    /// collection down to the size limit.
    Notice {
        /// The pipeline it concerns, if one.
        pipeline: Option<String>,
        /// What happened, for people.
        message: String,
    },
    /// A pipeline's tree was exported.
    Export {
        /// The pipeline.
        pipeline: String,
        /// Where to.
        path: String,
    },
    /// The build is over; nothing follows.
    BuildFinish {
        /// Whether everything succeeded.
        success: bool,
        /// strata's exit status.
        exit_code: i32,
        /// Seconds since the build started.
        duration: f64,
        /// Stages run now.
        built: usize,
        /// Stages taken from the store.
        reused: usize,
        /// Stages that failed.
        failed: usize,
    },
}

/// One consumer of events.
pub trait Sink: Send {
    /// Shows or records `event`, which happened at `at`.
    fn event(&mut self, at: SystemTime, event: &Event);
}

/// How much the human sinks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// States of pipelines and stages, and (not on a terminal) log lines.
    Normal,
    /// Also every stage's full log on a terminal.
    Verbose,
}

/// Sends each event to every sink, in order, one event at a time: sinks
/// never see two events interleaved, whichever worker thread sent them.
pub struct Monitor {
    sinks: Mutex<Vec<Box<dyn Sink>>>,
    wants_logs: bool,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("wants_logs", &self.wants_logs)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor over `sinks`. `wants_logs` says whether any of them shows
    /// log lines: when none does, stages' lines only go to their log files.
    pub fn new(sinks: Vec<Box<dyn Sink>>, wants_logs: bool) -> Monitor {
        Monitor {
            sinks: Mutex::new(sinks),
            wants_logs,
        }
    }

    /// A monitor that shows nothing.
    pub fn silent() -> Monitor {
        Monitor::new(Vec::new(), false)
    }

    /// Plain lines on stderr, or nothing when `quiet`: for commands that
    /// build on the way to something else (`task run`, `env create`).
    pub fn plain(quiet: bool) -> Monitor {
        if quiet {
            return Monitor::silent();
        }
        Monitor::new(vec![Box::new(Plain::new())], true)
    }

    /// Whether log lines are worth sending.
    pub fn wants_logs(&self) -> bool {
        self.wants_logs
    }

    /// Sends `event` to every sink.
    pub fn emit(&self, event: Event) {
        // A sink that panicked poisoned the lock; the others still deserve events.
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Read under the lock, so that times only go forward along the stream.
        let at = SystemTime::now();
        for sink in sinks.iter_mut() {
            sink.event(at, &event);
        }
    }

    /// Emits an `error` event from the `error` member of `--json` results.
    pub fn error(&self, error: &Value) {
        let detail = match error {
            Value::Object(map) => map.clone(),
            other => {
                let mut map = serde_json::Map::new();
                map.insert("kind".into(), "internal".into());
                map.insert("message".into(), other.to_string().into());
                map
            }
        };
        self.emit(Event::Error { detail });
    }
}

/// The first 12 hex digits of an id or checksum, for people.
pub(crate) fn short(s: &str) -> &str {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    &s[..s.len().min(12)]
}

/// Seconds, for people: `0.42s`, `12.3s`, `2m05s`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2}s")
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// Whether the human sinks may use colour: not when `NO_COLOR` is set to
/// anything non-empty (no-color.org).
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The line the human sinks end a build with.
pub(crate) fn totals_line(built: usize, reused: usize, failed: usize, duration: f64) -> String {
    let mut s = format!("built {built}, reused {reused}");
    if failed > 0 {
        s.push_str(&format!(", failed {failed}"));
    }
    let took = Duration::from_secs_f64(duration.max(0.0));
    s.push_str(&format!(" in {}", human_duration(took)));
    s
}
