//! What a build does, decided before anything runs: which stages patterns
//! name, which pipelines are needed, and where each resumes. Pure: it
//! reads the manifest, the plan and whether the store has an id.

use super::BuildError;
use crate::id::Id;
use crate::manifest::plan::Plan;
use crate::manifest::{InputType, Manifest, Origin};
use std::collections::BTreeSet;

/// Which stages `--checkpoint` patterns select, as (pipeline, stage) indices.
///
/// A pattern is a pipeline name (its last stage), a stage id, a stage type,
/// or a glob over those (`*` is everything). One that matches nothing is an error.
pub fn resolve_checkpoints(
    m: &Manifest,
    plan: &Plan,
    patterns: &[String],
) -> Result<BTreeSet<(usize, usize)>, BuildError> {
    resolve_stages(m, plan, patterns, "--checkpoint")
}

/// Which stages patterns select, as [`resolve_checkpoints`] says; `flag`
/// names the option in errors (`--break` takes the same patterns).
pub fn resolve_stages(
    m: &Manifest,
    plan: &Plan,
    patterns: &[String],
    flag: &str,
) -> Result<BTreeSet<(usize, usize)>, BuildError> {
    let mut out = BTreeSet::new();
    for pattern in patterns {
        let glob = glob::Pattern::new(pattern).ok();
        let matches = |s: &str| s == pattern || glob.as_ref().is_some_and(|g| g.matches(s));
        let before = out.len();
        let mut matched = false;
        for (pi, p) in m.pipelines.iter().enumerate() {
            if matches(&p.name) && !p.stages.is_empty() {
                out.insert((pi, p.stages.len() - 1));
                matched = true;
            }
            for (si, s) in p.stages.iter().enumerate() {
                if matches(&s.ty) || matches(plan.stage_ids[pi][si].as_str()) {
                    out.insert((pi, si));
                    matched = true;
                }
            }
        }
        if !matched && out.len() == before {
            let names: Vec<&str> = m.pipelines.iter().map(|p| p.name.as_str()).collect();
            return Err(BuildError::Usage(format!(
                "{flag} `{pattern}` matches no pipeline, stage type or stage id\n    hint: pipelines: {}",
                names.join(", ")
            )));
        }
    }
    Ok(out)
}

/// What a pipeline does in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing asked for needs it: it is not built.
    Skip,
    /// Built after its stage `stored`, the newest one the store has (from
    /// the start when `None`; nothing runs when it is the last stage).
    Resume {
        /// The newest stored stage it starts from.
        stored: Option<usize>,
    },
}

/// What the user asked for, as (pipeline, stage) indices.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// `--export`ed pipelines. None: every pipeline is wanted.
    pub exports: &'a [usize],
    /// Stages `--checkpoint` named (not the default of keeping everything).
    pub checkpoints: &'a BTreeSet<(usize, usize)>,
    /// Stages to `--break` in: they must run.
    pub breaks: &'a BTreeSet<(usize, usize)>,
}

/// Per pipeline, what this build does with it.
///
/// Without exports every pipeline is built (as far as the store does not
/// have it). With exports, as osbuild does, only the pipelines the exports,
/// named checkpoints and breaks need: a pipeline is needed by another only
/// when a stage of that one runs (its build root and image, the trees its
/// running stages take as inputs) — a pipeline the store holds whole needs
/// nothing.
pub fn decide(
    m: &Manifest,
    plan: &Plan,
    has: &dyn Fn(&Id) -> bool,
    asked: &Asked<'_>,
) -> Vec<Decision> {
    let resume = |pi: usize| {
        let ids = &plan.stage_ids[pi];
        // A stage to --break in must run, so the store may only cover what comes before it.
        let runs_from = (0..ids.len())
            .find(|&si| asked.breaks.contains(&(pi, si)))
            .unwrap_or(ids.len());
        ids[..runs_from].iter().rposition(has)
    };
    let mut decisions = vec![Decision::Skip; m.pipelines.len()];
    let mut todo: Vec<usize> = if asked.exports.is_empty() {
        (0..m.pipelines.len()).collect()
    } else {
        let named = asked
            .checkpoints
            .iter()
            .chain(asked.breaks)
            .map(|&(pi, _)| pi);
        asked.exports.iter().copied().chain(named).collect()
    };
    while let Some(pi) = todo.pop() {
        if decisions[pi] != Decision::Skip {
            continue;
        }
        let stored = resume(pi);
        decisions[pi] = Decision::Resume { stored };
        let p = &m.pipelines[pi];
        let first = stored.map_or(0, |k| k + 1);
        if first == p.stages.len() {
            continue;
        }
        let by_name = |name: &str| m.index(name);
        todo.extend(p.build_name().map(by_name));
        todo.extend(p.image.as_deref().map(by_name));
        for stage in &p.stages[first..] {
            for input in stage.inputs.values() {
                if input.ty == InputType::Tree && input.origin == Origin::Pipeline {
                    todo.extend(
                        input
                            .references
                            .iter()
                            .filter_map(|r| r.pipeline())
                            .map(by_name),
                    );
                }
            }
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// base → sys (build: base) → out (tree input: sys); other stands alone.
    fn manifest() -> Manifest {
        let stage = |path: &str| json!({"type": "mkdir", "options": {"paths": [{"path": path}]}});
        let doc = json!({"version": "2", "pipelines": [
            {"name": "base", "stages": [stage("/a"), stage("/b")]},
            {"name": "sys", "build": "name:base", "stages": [stage("/c")]},
            {"name": "out", "stages": [{"type": "copy", "options": {"paths": [{"from": "input://tree/", "to": "tree:///"}]},
                "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": ["name:sys"]}}}]},
            {"name": "other", "stages": [stage("/d")]}]});
        // Deserialized, not loaded: the loader wants the stage programs built.
        Manifest {
            pipelines: serde_json::from_value(doc["pipelines"].clone()).expect("pipelines"),
            sources: Default::default(),
            raw_sources: json!({}),
        }
    }

    fn decide_with(
        stored: &[(usize, usize)],
        exports: &[usize],
        breaks: &[(usize, usize)],
    ) -> Vec<Decision> {
        let m = manifest();
        let plan = Plan::new(&m);
        let ids: Vec<&Id> = stored
            .iter()
            .map(|&(pi, si)| &plan.stage_ids[pi][si])
            .collect();
        let breaks: BTreeSet<_> = breaks.iter().copied().collect();
        let asked = Asked {
            exports,
            checkpoints: &BTreeSet::new(),
            breaks: &breaks,
        };
        decide(&m, &plan, &|id| ids.contains(&id), &asked)
    }

    const FROM_START: Decision = Decision::Resume { stored: None };

    #[test]
    fn without_exports_everything_is_built() {
        assert_eq!(decide_with(&[], &[], &[]), vec![FROM_START; 4]);
    }

    #[test]
    fn an_export_builds_only_what_it_needs() {
        let d = decide_with(&[], &[2], &[]);
        assert_eq!(d, vec![FROM_START, FROM_START, FROM_START, Decision::Skip]);
        let d = decide_with(&[], &[0], &[]);
        assert_eq!(d[1..], [Decision::Skip; 3]);
    }

    #[test]
    fn a_stored_pipeline_needs_nothing() {
        let d = decide_with(&[(2, 0)], &[2], &[]);
        assert_eq!(
            d,
            vec![
                Decision::Skip,
                Decision::Skip,
                Decision::Resume { stored: Some(0) },
                Decision::Skip
            ]
        );
    }

    #[test]
    fn resumes_from_the_newest_stored_stage() {
        let d = decide_with(&[(0, 0), (0, 1)], &[], &[]);
        assert_eq!(d[0], Decision::Resume { stored: Some(1) });
        let d = decide_with(&[(0, 0)], &[], &[]);
        assert_eq!(d[0], Decision::Resume { stored: Some(0) });
    }

    #[test]
    fn a_break_runs_its_stage_whatever_the_store_has() {
        let d = decide_with(&[(0, 0), (0, 1)], &[], &[(0, 1)]);
        assert_eq!(d[0], Decision::Resume { stored: Some(0) });
        // and an export-only build still builds the pipeline broken into
        let d = decide_with(&[], &[3], &[(0, 0)]);
        assert_eq!(d[0], FROM_START);
    }
}
