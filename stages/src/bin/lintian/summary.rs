//! What analysis.json and the stage's metadata sum up, and the one error
//! line that names the failing tags.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::hints::{Severity, Tag};
use crate::input::Target;

/// How many failing tags the one error line names before "and N more".
pub const NAMED_IN_ERROR: usize = 20;

pub fn summarize(
    tags: &[Tag],
    targets: &[&Target],
    lintian_version: &str,
    distribution: Option<String>,
) -> Value {
    let mut counts: BTreeMap<&str, usize> = Severity::ALL.iter().map(|s| (s.name(), 0)).collect();
    let mut found = BTreeSet::new();
    let mut overridden = BTreeSet::new();
    for tag in tags {
        *counts.entry(tag.severity.name()).or_default() += 1;
        if tag.severity == Severity::Overridden {
            overridden.insert(tag.tag.as_str());
        } else {
            found.insert(tag.tag.as_str());
        }
    }
    // First file wins when two carry the same package name (the same
    // binary built for two architectures): lintian's output names no file.
    let mut package_filename: BTreeMap<&str, &str> = BTreeMap::new();
    for target in targets {
        package_filename
            .entry(target.package.as_str())
            .or_insert(target.file_name.as_str());
    }
    json!({
        "tags_count_by_severity": counts,
        "package_filename": package_filename,
        "tags_found": found,
        "overridden_tags_found": overridden,
        "lintian_version": lintian_version,
        "distribution": distribution,
    })
}

/// `E lint-strata source: tag note [pointer], ...`, at most
/// [`NAMED_IN_ERROR`] of them.
pub fn name_tags(tags: &[&Tag]) -> String {
    let mut named: Vec<String> = tags
        .iter()
        .take(NAMED_IN_ERROR)
        .map(|t| {
            let mut text = format!("{} {}: {}", t.severity.code(), t.package, t.tag);
            if !t.note.is_empty() {
                text.push(' ');
                text.push_str(&t.note);
            }
            if !t.pointer.is_empty() {
                text.push_str(&format!(" [{}]", t.pointer));
            }
            text
        })
        .collect();
    if tags.len() > NAMED_IN_ERROR {
        named.push(format!(
            "and {} more in lintian.txt",
            tags.len() - NAMED_IN_ERROR
        ));
    }
    named.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hints::parse_output;
    use crate::hints::tests::OUTPUT;
    use crate::input::tests::target;
    use crate::options::FailOn;

    #[test]
    fn summary_counts_and_names() {
        let tags = parse_output(OUTPUT).unwrap();
        let source = target("lint-strata source", "lint-strata_1.0.dsc");
        let binary = target("lint-strata", "lint-strata_1.0_amd64.deb");
        let targets = [&source, &binary];
        let summary = summarize(&tags, &targets, "2.116.3", Some("unstable".into()));
        assert_eq!(
            summary,
            json!({
                "tags_count_by_severity": {"error": 3, "warning": 1, "info": 0, "pedantic": 1,
                    "experimental": 1, "overridden": 1, "classification": 1},
                "package_filename": {"lint-strata source": "lint-strata_1.0.dsc",
                    "lint-strata": "lint-strata_1.0_amd64.deb"},
                "tags_found": ["bogus-mail-host", "bogus-mail-host-in-debian-changelog",
                    "description-synopsis-starts-with-article", "no-dep5-copyright",
                    "package-contains-no-arch-dependent-files", "trimmed-deb822-field"],
                "overridden_tags_found": ["bogus-mail-host"],
                "lintian_version": "2.116.3",
                "distribution": "unstable",
            })
        );
    }

    #[test]
    fn error_names_failing_tags() {
        let tags = parse_output(OUTPUT).unwrap();
        let failing: Vec<&Tag> = tags
            .iter()
            .filter(|t| FailOn::Error.fails(t.severity))
            .collect();
        assert_eq!(
            name_tags(&failing),
            "E lint-strata: bogus-mail-host Maintainer strata@localhost, \
             E lint-strata-data: bogus-mail-host Maintainer strata@localhost, \
             E lint-strata: bogus-mail-host-in-debian-changelog strata@localhost (for version 1.0) \
             [usr/share/doc/lint-strata/changelog.gz:1]"
        );
        let many: Vec<&Tag> = std::iter::repeat_n(&tags[0], NAMED_IN_ERROR + 3).collect();
        assert!(name_tags(&many).ends_with(", and 3 more in lintian.txt"));
    }
}
