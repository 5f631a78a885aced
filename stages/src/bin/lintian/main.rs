//! `lintian`: runs lintian over the packages in the input named `input`, as
//! debusine's Lintian task does, and keeps what it found in the tree.
//!
//! ```json
//! {"include_tags": [], "exclude_tags": ["no-dep5-copyright"],
//!  "fail_on_severity": "error", "analyses": ["source", "binary-all", "binary-any"]}
//! ```
//!
//! ```text
//!   inputs/input/  *.dsc ──────────────────────── source      ┐ the chosen
//!                  *.deb, *.udeb  Architecture: all  binary-all│ analyses
//!                                 anything else      binary-any┘    │
//!                  *.changes ── Distribution (else the .dsc's changelog)
//!                                                                   ▼
//!   lintian --display-level >=classification --info --show-overrides ... FILES
//!        │ stdout
//!        ├──> tree/lintian.txt       as lintian printed it
//!        └─parse─> tree/analysis.json  {tags: [...], summary: {...}}
//!                  meta.json           the summary
//!   then: exit 1 if a tag is at or above fail_on_severity
//! ```
//!
//! The files are given to lintian one by one, not through the .changes:
//! lintian groups them by source itself, and the .changes would add the
//! upload's own tags (the .buildinfo's Build-Date and installed packages),
//! which change from one build to the next.
//!
//! One module a job: `options` (what the manifest may say), `input` (the
//! packages found and their distribution), `hints` (lintian's output read
//! back), `summary` (analysis.json's summary and the error line); this file
//! runs lintian between them.

mod hints;
mod input;
mod options;
mod summary;

use std::process::{Command, ExitCode};

use anyhow::{anyhow, bail};
use serde_json::json;
use strata_stage::{Args, Root, capture, capture_logged, write_meta};

use crate::hints::{Tag, parse_output};
use crate::input::{Target, scan};
use crate::options::Options;
use crate::summary::{name_tags, summarize};

/// Fixed, so that wrapped explanations and comments read the same
/// whatever terminal (or none) the engine has.
const OUTPUT_WIDTH: &str = "80";

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let input = args.input("input").ok_or_else(|| {
        anyhow!("the lintian stage analyses its input named input, and it was given none")
    })?;
    let found = scan(&input.path)?;
    let targets = found.choose(&options.analyses);
    if targets.is_empty() {
        bail!(
            "input input has no package to analyse for analyses {:?} (it holds {} .dsc and {} .deb/.udeb files at its top level); \
             hint: the lintian stage reads the output of a build stage, such as its SRC_VERSION.dsc and *.deb",
            options.analyses,
            found.sources.len(),
            found.binaries.len(),
        );
    }

    let output = lintian(&options, &targets)?;
    let tree = Root::tree(args)?;
    tree.write_file("/lintian.txt", &mut output.as_slice(), 0o644)?;

    let tags = parse_output(&String::from_utf8_lossy(&output))?;
    let summary = summarize(&tags, &targets, &lintian_version()?, found.distribution()?);
    let analysis = json!({"tags": tags, "summary": summary});
    let mut text = serde_json::to_vec_pretty(&analysis).expect("a JSON value serializes");
    text.push(b'\n');
    tree.write_file("/analysis.json", &mut text.as_slice(), 0o644)?;
    write_meta(args, &summary)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).expect("a JSON value serializes")
    );

    let failing: Vec<&Tag> = tags
        .iter()
        .filter(|t| options.fail_on_severity.fails(t.severity))
        .collect();
    if !failing.is_empty() {
        bail!(
            "lintian found {} tags at or above {}: {}",
            failing.len(),
            options.fail_on_severity.name(),
            name_tags(&failing)
        );
    }
    Ok(())
}

/// lintian's argv before the files: every level shown, each hint marked
/// with its severity and explained, overrides shown with their comments,
/// and lintian's own exit status left to mean only "it ran".
fn lintian_args(options: &Options) -> Vec<String> {
    let mut argv: Vec<String> = [
        "--no-cfg",
        "--no-user-dirs",
        "--display-level",
        ">=classification",
        "--display-experimental",
        "--info",
        "--show-overrides",
        "--tag-display-limit",
        "0",
        "--fail-on",
        "none",
        "--color",
        "never",
        "--output-width",
        OUTPUT_WIDTH,
    ]
    .map(str::to_owned)
    .into();
    if !options.include_tags.is_empty() {
        argv.push(format!("--tags={}", options.include_tags.join(",")));
    }
    if !options.exclude_tags.is_empty() {
        argv.push(format!(
            "--suppress-tags={}",
            options.exclude_tags.join(",")
        ));
    }
    argv.push("--".into());
    argv
}

fn lintian(options: &Options, targets: &[&Target]) -> anyhow::Result<Vec<u8>> {
    let mut cmd = Command::new("lintian");
    cmd.args(lintian_args(options));
    cmd.args(targets.iter().map(|t| &t.path));
    // Same messages whatever the build root's locale; UTF-8 because tags
    // carry it (§ in trimmed-deb822-field).
    cmd.env("LC_ALL", "C.UTF-8");
    eprintln!(
        "running lintian on {}",
        targets
            .iter()
            .map(|t| t.file_name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(capture_logged(&mut cmd)?)
}

fn lintian_version() -> anyhow::Result<String> {
    let text = capture(
        Command::new("lintian")
            .arg("--print-version")
            .env("LC_ALL", "C.UTF-8"),
    )?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::tests::options;
    use crate::options::{Analysis, FailOn, every_analysis};

    #[test]
    fn default_options() {
        let o = options(json!({}));
        assert_eq!(o.fail_on_severity, FailOn::Error);
        assert_eq!(o.analyses, every_analysis());
        let argv = lintian_args(&o);
        assert!(
            !argv
                .iter()
                .any(|a| a.starts_with("--tags") || a.starts_with("--suppress"))
        );
        assert_eq!(argv.last().map(String::as_str), Some("--"));
        for flag in [
            "--info",
            "--show-overrides",
            "--display-experimental",
            "--no-cfg",
        ] {
            assert!(argv.iter().any(|a| a == flag), "{flag}");
        }
        let level = argv.iter().position(|a| a == "--display-level").unwrap();
        assert_eq!(argv[level + 1], ">=classification");
        let fail_on = argv.iter().position(|a| a == "--fail-on").unwrap();
        assert_eq!(argv[fail_on + 1], "none");
    }

    #[test]
    fn include_and_exclude_become_tags_and_suppress_tags() {
        let o = options(json!({
            "include_tags": ["bogus-mail-host", "no-dep5-copyright"],
            "exclude_tags": ["extended-description-is-empty"],
            "fail_on_severity": "overridden",
            "analyses": ["binary-all"],
        }));
        let argv = lintian_args(&o);
        assert!(argv.contains(&"--tags=bogus-mail-host,no-dep5-copyright".to_owned()));
        assert!(argv.contains(&"--suppress-tags=extended-description-is-empty".to_owned()));
        assert_eq!(o.fail_on_severity, FailOn::Overridden);
        assert_eq!(o.analyses, [Analysis::BinaryAll]);
    }
}
