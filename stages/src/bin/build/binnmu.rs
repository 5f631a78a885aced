//! A binNMU: a changelog entry on top that no source upload has.

use anyhow::Context;
use strata_stage::debian::changelog_heading;

use crate::options::Binnmu;

/// The entry that makes the build a binNMU: the version with its suffix,
/// marked `binary-only=yes`, on the top entry's distribution.
pub fn binnmu_entry(changelog: &str, binnmu: &Binnmu, date: &str) -> anyhow::Result<String> {
    let top = changelog_heading(changelog)
        .context("debian/changelog does not start with \"NAME (VERSION) DISTRIBUTION; ...\"")?;
    let (name, version, dist) = (top.source, top.version, top.distributions);
    let mut lines = binnmu.changelog.trim().lines();
    let mut item = format!("  * {}\n", lines.next().unwrap_or_default().trim());
    for line in lines {
        item.push_str(&format!("    {}\n", line.trim()));
    }
    Ok(format!(
        "{name} ({version}{}) {dist}; urgency=low, binary-only=yes\n\n{item}\n -- {}  {date}\n\n",
        binnmu.suffix, binnmu.maintainer
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binnmu_entry_goes_on_top_of_the_changelog() {
        let changelog = "hello-strata (1.0) unstable; urgency=medium\n\n  * Initial.\n\n -- A <a@localhost>  Tue, 14 Nov 2023 22:13:20 +0000\n";
        let b = Binnmu {
            changelog: "Rebuild against libfoo2.\nSecond line.".into(),
            suffix: "+b1".into(),
            timestamp: None,
            maintainer: "strata <strata@localhost>".into(),
        };
        assert_eq!(
            binnmu_entry(changelog, &b, "Tue, 14 Nov 2023 22:13:20 +0000").unwrap(),
            "hello-strata (1.0+b1) unstable; urgency=low, binary-only=yes\n\n  * Rebuild against libfoo2.\n    Second line.\n\n -- strata <strata@localhost>  Tue, 14 Nov 2023 22:13:20 +0000\n\n"
        );
        assert!(binnmu_entry("garbage\n", &b, "x").is_err());
    }
}
