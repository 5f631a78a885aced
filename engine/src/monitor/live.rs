//! Progress for people at a terminal: a live view drawn with indicatif.
//!
//! ```text
//! ✓ base      done 0.41s
//!     · 0 mkdir [3f2a9c01d4e5] cached
//!     ✓ 1 write [9be10c55aa07] done 0.02s
//! ⠙ os        running 4s
//!     ⠙ 0 bootstrap [c0ffee123456] running 4s  I: Retrieving InRelease
//!   image     waiting
//! built 1, reused 1 in 4.4s
//! ```
//!
//! One line per pipeline (waiting, running, done, failed, skipped) with the
//! lines of its stages under it (cached, running with the last line of its
//! log, done, failed); totals at the end. With `-v` every log line is also
//! printed above the view. Colour only when `NO_COLOR` is not set.

use super::{
    Event, PipelineResult, Sink, StageStatus, Verbosity, human_duration, short, totals_line,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// The live view on stderr.
pub struct Live {
    view: MultiProgress,
    verbosity: Verbosity,
    color: bool,
    /// Each pipeline's own line.
    pipelines: HashMap<String, ProgressBar>,
    /// The lowest line of each pipeline (its own or its last stage's), where
    /// the next stage's line goes.
    last: HashMap<String, ProgressBar>,
    /// Running stages' lines, by stage id.
    stages: HashMap<String, ProgressBar>,
    width: usize,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Tone {
    Good,
    Bad,
    Busy,
    Quiet,
}

const TICK: Duration = Duration::from_millis(120);

impl Live {
    /// A live view on stderr (the caller checked that it is a terminal).
    pub fn new(verbosity: Verbosity, color: bool) -> Live {
        Live {
            view: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            verbosity,
            color,
            pipelines: HashMap::new(),
            last: HashMap::new(),
            stages: HashMap::new(),
            width: 0,
        }
    }

    fn paint(&self, tone: Tone, text: &str) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Bad => "31",
            Tone::Busy => "33",
            Tone::Quiet => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn running_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix} {msg}")
            .expect("valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
    }

    fn still_style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix} {msg}").expect("valid template")
    }

    fn pipeline_prefix(&self, name: &str) -> String {
        format!("{name:<width$}", width = self.width)
    }

    /// Turns a line finished: a mark, then `msg`.
    fn settle(&self, bar: &ProgressBar, mark: &str, tone: Tone, prefix: String, msg: String) {
        bar.set_style(Self::still_style());
        bar.set_prefix(format!("{} {prefix}", self.paint(tone, mark)));
        bar.finish_with_message(msg);
    }

    /// The line of a stage, under its pipeline's lowest line.
    fn stage_line(&mut self, pipeline: &str) -> ProgressBar {
        let bar = ProgressBar::new_spinner();
        let bar = match self.last.get(pipeline) {
            Some(above) => self.view.insert_after(above, bar),
            None => self.view.add(bar),
        };
        self.last.insert(pipeline.to_owned(), bar.clone());
        bar
    }
}

/// A log line as one terminal line: no control characters.
fn clean(line: &str) -> String {
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_owned()
}

impl Sink for Live {
    fn event(&mut self, _at: SystemTime, event: &Event) {
        match event {
            Event::BuildStart { pipelines, .. } => {
                self.width = pipelines.iter().map(|p| p.name.len()).max().unwrap_or(0);
                for p in pipelines {
                    let bar = self.view.add(ProgressBar::new_spinner());
                    bar.set_style(Self::still_style());
                    bar.set_prefix(format!("  {}", self.pipeline_prefix(&p.name)));
                    bar.set_message(self.paint(Tone::Quiet, "waiting"));
                    bar.tick();
                    self.pipelines.insert(p.name.clone(), bar.clone());
                    self.last.insert(p.name.clone(), bar);
                }
            }
            Event::PipelineStart { pipeline, .. } => {
                if let Some(bar) = self.pipelines.get(pipeline) {
                    bar.reset_elapsed();
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}")
                            .expect("valid template")
                            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
                    );
                    bar.set_prefix(self.pipeline_prefix(pipeline));
                    bar.set_message(self.paint(Tone::Busy, "running"));
                    bar.enable_steady_tick(TICK);
                }
            }
            Event::PipelineFinish {
                pipeline,
                result,
                duration,
                ..
            } => {
                if let Some(bar) = self.pipelines.get(pipeline) {
                    let took = human_duration(Duration::from_secs_f64(*duration));
                    let (mark, tone, msg) = match result {
                        PipelineResult::Success => ("✓", Tone::Good, format!("done {took}")),
                        PipelineResult::Failed => ("✗", Tone::Bad, format!("failed after {took}")),
                        PipelineResult::Skipped => (" ", Tone::Quiet, "skipped".to_owned()),
                    };
                    let msg = self.paint(tone, &msg);
                    self.settle(bar, mark, tone, self.pipeline_prefix(pipeline), msg);
                }
            }
            Event::StageStart { stage } => {
                let bar = self.stage_line(&stage.pipeline);
                bar.set_style(
                    ProgressStyle::with_template("    {spinner} {prefix} {elapsed}  {wide_msg}")
                        .expect("valid template")
                        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
                );
                bar.set_prefix(format!(
                    "{} {} [{}] {}",
                    stage.index,
                    stage.ty,
                    short(&stage.id),
                    self.paint(Tone::Busy, "running")
                ));
                bar.enable_steady_tick(TICK);
                self.stages.insert(stage.id.clone(), bar);
            }
            Event::StageFinish {
                stage,
                status,
                duration,
                result,
                ..
            } => {
                let bar = match self.stages.remove(&stage.id) {
                    Some(bar) => bar,
                    None => self.stage_line(&stage.pipeline),
                };
                let took = human_duration(Duration::from_secs_f64(*duration));
                let (mark, tone, msg) = match status {
                    StageStatus::Cached => ("·", Tone::Quiet, "cached".to_owned()),
                    StageStatus::Built => ("✓", Tone::Good, format!("done {took}")),
                    StageStatus::Failed => ("✗", Tone::Bad, format!("failed: {result}")),
                };
                let prefix = format!("{} {} [{}]", stage.index, stage.ty, short(&stage.id));
                let msg = self.paint(tone, &msg);
                self.settle(&bar, &format!("    {mark}"), tone, prefix, msg);
            }
            Event::Log { stage, line } => {
                if self.verbosity == Verbosity::Verbose {
                    let _ = self.view.println(format!("{}: {line}", stage.label()));
                }
                if let Some(bar) = self.stages.get(&stage.id) {
                    let line = clean(line);
                    if !line.is_empty() {
                        bar.set_message(line);
                    }
                }
            }
            Event::SourceFetch {
                item,
                bytes,
                done,
                cached: false,
                ..
            } => {
                let key = format!("source:{item}");
                if *done {
                    if let Some(bar) = self.stages.remove(&key) {
                        let msg = format!("{} bytes", bytes.unwrap_or(0));
                        self.settle(
                            &bar,
                            "✓",
                            Tone::Good,
                            format!("source {}", short(item)),
                            msg,
                        );
                    }
                } else {
                    let bar = self.view.insert(0, ProgressBar::new_spinner());
                    bar.set_style(Self::running_style());
                    bar.set_prefix(format!("source {}", short(item)));
                    bar.set_message(self.paint(Tone::Busy, "fetching"));
                    bar.enable_steady_tick(TICK);
                    self.stages.insert(key, bar);
                }
            }
            Event::Export { pipeline, path } => {
                let _ = self.view.println(format!("{pipeline}: exported to {path}"));
            }
            Event::Notice { message, .. } => {
                let _ = self.view.println(message);
            }
            Event::BuildFinish {
                built,
                reused,
                failed,
                duration,
                ..
            } => {
                let bar = self.view.add(ProgressBar::new_spinner());
                bar.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
                bar.finish_with_message(totals_line(*built, *reused, *failed, *duration));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_control_characters() {
        assert_eq!(clean("a\tb\r\x1b[31mred\n"), "a b  [31mred");
    }
}
