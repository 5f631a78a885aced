//! What the input holds at its top level, where a build stage leaves its
//! results: the packages to analyse and the distribution they are for.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use strata_stage::capture;
use strata_stage::debian::{changelog_heading, control_paragraph, deb_fields};

use crate::options::Analysis;

/// A file to analyse, with the package name lintian will print for it.
#[derive(Debug)]
pub struct Target {
    pub path: PathBuf,
    pub file_name: String,
    pub package: String,
}

/// What the input holds at its top level, where a build stage leaves its
/// results.
#[derive(Debug, Default)]
pub struct Found {
    pub sources: Vec<Target>,
    /// With whether the package is `Architecture: all`.
    pub binaries: Vec<(Target, bool)>,
    pub changes: Vec<PathBuf>,
}

impl Found {
    pub fn choose(&self, analyses: &[Analysis]) -> Vec<&Target> {
        let mut chosen = Vec::new();
        if analyses.contains(&Analysis::Source) {
            chosen.extend(&self.sources);
        }
        for (target, arch_all) in &self.binaries {
            let analysis = if *arch_all {
                Analysis::BinaryAll
            } else {
                Analysis::BinaryAny
            };
            if analyses.contains(&analysis) {
                chosen.push(target);
            }
        }
        chosen
    }

    /// The .changes' Distribution, or else the first entry of the .dsc's
    /// debian/changelog; `None` when there is neither.
    pub fn distribution(&self) -> anyhow::Result<Option<String>> {
        if let Some(changes) = self.changes.first() {
            let text = read_text(changes)?;
            return Ok(control_paragraph(&text)
                .remove("distribution")
                .filter(|d| !d.is_empty()));
        }
        match self.sources.first() {
            Some(dsc) => dsc_distribution(&dsc.path),
            None => Ok(None),
        }
    }
}

pub fn scan(input: &Path) -> anyhow::Result<Found> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(input)
        .with_context(|| format!("cannot list input input at {}", input.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", input.display()))?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    // Sorted: lintian's command line, and so its output, then depends only
    // on what the input holds.
    names.sort();

    let mut found = Found::default();
    for file_name in names {
        let path = input.join(&file_name);
        if file_name.ends_with(".dsc") {
            let text = read_text(&path)?;
            let source = control_paragraph(&text)
                .remove("source")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| anyhow!("{} has no Source field", path.display()))?;
            found.sources.push(Target {
                path,
                file_name,
                package: format!("{source} source"),
            });
        } else if file_name.ends_with(".deb") || file_name.ends_with(".udeb") {
            let fields = deb_fields(&path, &["Package", "Architecture"])?;
            let (Some(name), Some(architecture)) =
                (fields.get("package").cloned(), fields.get("architecture"))
            else {
                bail!(
                    "{} has no Package or Architecture field (dpkg-deb --field said {fields:?})",
                    path.display()
                );
            };
            let package = if file_name.ends_with(".udeb") {
                format!("{name} udeb")
            } else {
                name
            };
            let target = Target {
                path,
                file_name,
                package,
            };
            found.binaries.push((target, architecture == "all"));
        } else if file_name.ends_with(".changes") {
            found.changes.push(path);
        }
    }
    Ok(found)
}

pub fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The distribution of the first debian/changelog entry in the .dsc's
/// tarballs: the .debian.tar.* of a 3.0 (quilt) source, the only .tar.* of
/// a native one.
pub fn dsc_distribution(dsc: &Path) -> anyhow::Result<Option<String>> {
    let fields = control_paragraph(&read_text(dsc)?);
    let dir = dsc.parent().unwrap_or(Path::new("."));
    let tarballs = fields
        .get("files")
        .map(|files| {
            files
                .lines()
                .filter_map(|l| l.split_whitespace().nth(2))
                .filter(|name| name.contains(".tar."))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    // A packaging tarball has debian/ at its top; a native one, below
    // the source's own folder.
    for name in &tarballs {
        let tarball = dir.join(name);
        if !tarball.is_file() {
            continue;
        }
        let mut list = Command::new("tar");
        list.arg("--list").arg("--file").arg(&tarball);
        let Some(member) = in_c_locale(&mut list)?
            .lines()
            .filter(|m| {
                let m = m.strip_prefix("./").unwrap_or(m);
                m == "debian/changelog"
                    || m.split_once('/')
                        .is_some_and(|(_, r)| r == "debian/changelog")
            })
            .min_by_key(|m| m.len())
            .map(str::to_owned)
        else {
            continue;
        };
        let mut extract = Command::new("tar");
        extract
            .arg("--extract")
            .arg("--to-stdout")
            .arg("--file")
            .arg(&tarball)
            .arg(&member);
        return Ok(changelog_distribution(&in_c_locale(&mut extract)?));
    }
    Ok(None)
}

/// `src (1.0-1) unstable; urgency=medium` → `unstable` (the first of them,
/// if the entry names several).
pub fn changelog_distribution(changelog: &str) -> Option<String> {
    let heading = changelog_heading(changelog)?;
    heading
        .distributions
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

/// `cmd`'s stdout, its messages the same whatever the build root's locale.
fn in_c_locale(cmd: &mut Command) -> anyhow::Result<String> {
    Ok(capture(cmd.env("LC_ALL", "C.UTF-8"))?)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::options::every_analysis;

    pub fn target(package: &str, file_name: &str) -> Target {
        Target {
            path: PathBuf::from(file_name),
            file_name: file_name.into(),
            package: package.into(),
        }
    }

    #[test]
    fn chooses_files_by_analysis() {
        let found = || Found {
            sources: vec![target("p source", "p_1.dsc")],
            binaries: vec![
                (target("p", "p_1_amd64.deb"), false),
                (target("p-doc", "p-doc_1_all.deb"), true),
                (target("p-udeb udeb", "p-udeb_1_amd64.udeb"), false),
            ],
            changes: vec![],
        };
        let names = |analyses: &[Analysis]| -> Vec<String> {
            found()
                .choose(analyses)
                .into_iter()
                .map(|t| t.file_name.clone())
                .collect()
        };
        assert_eq!(
            names(&every_analysis()),
            [
                "p_1.dsc",
                "p_1_amd64.deb",
                "p-doc_1_all.deb",
                "p-udeb_1_amd64.udeb"
            ]
        );
        assert_eq!(names(&[Analysis::Source]), ["p_1.dsc"]);
        assert_eq!(names(&[Analysis::BinaryAll]), ["p-doc_1_all.deb"]);
        assert_eq!(
            names(&[Analysis::BinaryAny]),
            ["p_1_amd64.deb", "p-udeb_1_amd64.udeb"]
        );
        assert!(names(&[]).is_empty());
    }

    #[test]
    fn changelog_distribution_is_the_first_entrys() {
        let changelog = "hello (1.0-1) bookworm-backports; urgency=medium\n\n  * x\n";
        assert_eq!(
            changelog_distribution(changelog).as_deref(),
            Some("bookworm-backports")
        );
        assert_eq!(
            changelog_distribution("hello (1.0) unstable experimental; urgency=low\n").as_deref(),
            Some("unstable")
        );
        assert_eq!(changelog_distribution("garbage\n"), None);
    }
}
