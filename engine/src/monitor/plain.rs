//! Progress for people when stderr is not a terminal (CI logs, pipes):
//! one timestamped line per thing that happened.
//!
//! ```text
//! 14:03:07 os: stage 0 bootstrap [3f2a9c01d4e5] running
//! 14:03:09 os/bootstrap: I: Retrieving InRelease
//! 14:03:19 os: stage 0 bootstrap [3f2a9c01d4e5] built in 11.9s, checkpointed
//! 14:03:19 built 1, reused 0 in 12.1s
//! ```
//!
//! Log lines are always streamed here (prefixed with `pipeline/type`): a log
//! that scrolls by is what a CI job keeps. Lines from parallel stages
//! interleave, but each is whole and says whose it is.

use super::{Event, PipelineResult, Sink, StageStatus, human_duration, short, totals_line};
use std::io::Write;
use std::time::{Duration, SystemTime};

/// Timestamped lines on stderr.
#[derive(Debug, Default)]
pub struct Plain;

impl Plain {
    /// A plain sink on stderr.
    pub fn new() -> Plain {
        Plain
    }
}

/// `HH:MM:SS` in UTC: the machine's time zone is not worth a dependency.
fn clock(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

/// The line for `event`, if it gets one.
fn line(event: &Event) -> Option<String> {
    Some(match event {
        Event::SourceFetch {
            item,
            bytes: Some(bytes),
            done: true,
            cached: false,
            ..
        } => format!("source {}: fetched, {bytes} bytes", short(item)),
        Event::PipelineFinish {
            pipeline,
            result: PipelineResult::Skipped,
            ..
        } => format!("{pipeline}: skipped (a pipeline it needs failed, or the build stopped)"),
        Event::StageStart { stage } => format!(
            "{}: stage {} {} [{}] running",
            stage.pipeline,
            stage.index,
            stage.ty,
            short(&stage.id)
        ),
        Event::StageFinish {
            stage,
            status,
            stored,
            duration,
            result,
        } => {
            let what = match status {
                StageStatus::Cached => "cached".to_owned(),
                StageStatus::Built => format!(
                    "built in {}{}",
                    human_duration(Duration::from_secs_f64(*duration)),
                    if *stored { ", checkpointed" } else { "" }
                ),
                StageStatus::Failed => format!("failed: {result}"),
            };
            format!(
                "{}: stage {} {} [{}] {what}",
                stage.pipeline,
                stage.index,
                stage.ty,
                short(&stage.id)
            )
        }
        Event::Log { stage, line } => format!("{}: {line}", stage.label()),
        Event::Export { pipeline, path } => format!("{pipeline}: exported to {path}"),
        Event::Notice { message, .. } => message.clone(),
        Event::BuildFinish {
            built,
            reused,
            failed,
            duration,
            ..
        } => totals_line(*built, *reused, *failed, *duration),
        _ => return None,
    })
}

impl Sink for Plain {
    fn event(&mut self, at: SystemTime, event: &Event) {
        if let Some(text) = line(event) {
            // One write per line, so lines of parallel stages never mix.
            let _ = std::io::stderr().write_all(format!("{} {text}\n", clock(at)).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::StageRef;

    #[test]
    fn clock_is_utc_hours_minutes_seconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 14 + 60 * 3 + 7);
        assert_eq!(clock(at), "14:03:07");
    }

    #[test]
    fn stage_lines_say_state_and_whose() {
        let stage = StageRef {
            pipeline: "os".into(),
            index: 1,
            ty: "tar".into(),
            id: "0123456789abcdef".into(),
        };
        let finish = |status, result: &str| Event::StageFinish {
            stage: stage.clone(),
            status,
            stored: true,
            duration: 1.5,
            result: result.into(),
        };
        assert_eq!(
            line(&finish(StageStatus::Built, "success")).unwrap(),
            "os: stage 1 tar [0123456789ab] built in 1.50s, checkpointed"
        );
        assert_eq!(
            line(&finish(StageStatus::Failed, "exit status 2")).unwrap(),
            "os: stage 1 tar [0123456789ab] failed: exit status 2"
        );
        let log = Event::Log {
            stage: stage.clone(),
            line: "hello".into(),
        };
        assert_eq!(line(&log).unwrap(), "os/tar: hello");
    }
}
