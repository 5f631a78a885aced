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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, anyhow, bail};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strata_stage::debian::parse_deb822;
use strata_stage::{Args, Failure, Root, program, write_meta};

/// How many failing tags the one error line names before "and N more".
const NAMED_IN_ERROR: usize = 20;
/// Fixed, so that wrapped explanations and comments read the same
/// whatever terminal (or none) the engine has.
const OUTPUT_WIDTH: &str = "80";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default)]
    include_tags: Vec<String>,
    #[serde(default)]
    exclude_tags: Vec<String>,
    #[serde(default)]
    fail_on_severity: FailOn,
    #[serde(default = "every_analysis")]
    analyses: Vec<Analysis>,
}

fn every_analysis() -> Vec<Analysis> {
    vec![Analysis::Source, Analysis::BinaryAll, Analysis::BinaryAny]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Analysis {
    Source,
    BinaryAll,
    BinaryAny,
}

/// What lintian reports a hint as, most severe first: the order the
/// failure threshold and the summary follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    Error,
    Warning,
    Info,
    Pedantic,
    Experimental,
    Overridden,
    Classification,
}

impl Severity {
    const ALL: [Self; 7] = [
        Self::Error,
        Self::Warning,
        Self::Info,
        Self::Pedantic,
        Self::Experimental,
        Self::Overridden,
        Self::Classification,
    ];

    /// Lintian's one-letter code. `M` (masked by a screen) is not here: a
    /// masked hint is lintian saying the tag does not apply.
    fn from_code(code: char) -> Option<Self> {
        Some(match code {
            'E' => Self::Error,
            'W' => Self::Warning,
            'I' => Self::Info,
            'P' => Self::Pedantic,
            'X' => Self::Experimental,
            'O' => Self::Overridden,
            'C' => Self::Classification,
            _ => return None,
        })
    }

    fn code(self) -> char {
        match self {
            Self::Error => 'E',
            Self::Warning => 'W',
            Self::Info => 'I',
            Self::Pedantic => 'P',
            Self::Experimental => 'X',
            Self::Overridden => 'O',
            Self::Classification => 'C',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::Pedantic => "pedantic",
            Self::Experimental => "experimental",
            Self::Overridden => "overridden",
            Self::Classification => "classification",
        }
    }
}

/// `fail_on_severity`: the least severe tag that fails the stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FailOn {
    #[default]
    Error,
    Warning,
    Info,
    Pedantic,
    Experimental,
    Overridden,
    None,
}

impl FailOn {
    fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::Pedantic => "pedantic",
            Self::Experimental => "experimental",
            Self::Overridden => "overridden",
            Self::None => "none",
        }
    }

    /// Whether a tag of `severity` fails the stage. Overridden sits below
    /// experimental, as in debusine: choosing it fails on every tag that is
    /// not a classification, overridden or not. Classifications describe
    /// the package and never fail it.
    fn fails(self, severity: Severity) -> bool {
        let threshold = match self {
            Self::None => return false,
            Self::Error => Severity::Error,
            Self::Warning => Severity::Warning,
            Self::Info => Severity::Info,
            Self::Pedantic => Severity::Pedantic,
            Self::Experimental => Severity::Experimental,
            Self::Overridden => Severity::Overridden,
        };
        severity <= threshold
    }
}

/// One hint lintian printed, as analysis.json keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Tag {
    severity: Severity,
    /// As lintian names it: `NAME` for a .deb, `NAME source` for a .dsc,
    /// `NAME udeb` for a .udeb, so a source and a binary of the same name
    /// stay apart.
    package: String,
    tag: String,
    /// What lintian said after the tag name, less the pointer.
    note: String,
    /// Where: `debian/control:5`, `usr/share/doc/x/changelog.gz:1`.
    pointer: String,
    /// The tag's description (lintian --info prints it for a tag's first
    /// hint only; the others get a copy).
    explanation: String,
    /// The justification in the lintian-overrides file, for an overridden tag.
    comment: String,
}

/// A file to analyse, with the package name lintian will print for it.
#[derive(Debug)]
struct Target {
    path: PathBuf,
    file_name: String,
    package: String,
}

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
    tree.write_file("/lintian.txt", &output, 0o644)?;

    let tags = parse_output(&String::from_utf8_lossy(&output))?;
    let summary = summarize(&tags, &targets, &lintian_version()?, found.distribution()?);
    let analysis = json!({"tags": tags, "summary": summary});
    let mut text = serde_json::to_vec_pretty(&analysis).expect("a JSON value serializes");
    text.push(b'\n');
    tree.write_file("/analysis.json", &text, 0o644)?;
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

/// What the input holds at its top level, where a build stage leaves its
/// results.
#[derive(Debug, Default)]
struct Found {
    sources: Vec<Target>,
    /// With whether the package is `Architecture: all`.
    binaries: Vec<(Target, bool)>,
    changes: Vec<PathBuf>,
}

impl Found {
    fn choose(&self, analyses: &[Analysis]) -> Vec<&Target> {
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
    fn distribution(&self) -> anyhow::Result<Option<String>> {
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

fn scan(input: &Path) -> anyhow::Result<Found> {
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
            let (name, architecture) = deb_fields(&path)?;
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

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The fields of a .dsc or .changes, clearsigned or not.
fn control_paragraph(text: &str) -> BTreeMap<String, String> {
    parse_deb822(&unsign(text))
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// The signed text of an OpenPGP clearsigned message (its armor headers
/// and signature left out), or `text` itself when it is not signed.
fn unsign(text: &str) -> String {
    let mut lines = text.lines();
    if lines.clone().next() != Some("-----BEGIN PGP SIGNED MESSAGE-----") {
        return text.to_owned();
    }
    lines
        .by_ref()
        .take_while(|l| !l.trim().is_empty())
        .for_each(drop);
    let mut body = String::new();
    for line in lines.take_while(|l| *l != "-----BEGIN PGP SIGNATURE-----") {
        // Dash-escaping (RFC 4880 7.1).
        body.push_str(line.strip_prefix("- ").unwrap_or(line));
        body.push('\n');
    }
    body
}

/// A .deb's Package and Architecture, from dpkg-deb.
fn deb_fields(path: &Path) -> anyhow::Result<(String, String)> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("--field")
        .arg(path)
        .args(["Package", "Architecture"]);
    let text = output(&mut cmd)?;
    let fields = parse_deb822(&text).into_iter().next().unwrap_or_default();
    match (fields.get("package"), fields.get("architecture")) {
        (Some(name), Some(arch)) => Ok((name.clone(), arch.clone())),
        _ => bail!(
            "{} has no Package or Architecture field (dpkg-deb --field said {text:?})",
            path.display()
        ),
    }
}

/// The distribution of the first debian/changelog entry in the .dsc's
/// tarballs: the .debian.tar.* of a 3.0 (quilt) source, the only .tar.* of
/// a native one.
fn dsc_distribution(dsc: &Path) -> anyhow::Result<Option<String>> {
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
        let Some(member) = output(&mut list)?
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
        return Ok(changelog_distribution(&output(&mut extract)?));
    }
    Ok(None)
}

/// `src (1.0-1) unstable; urgency=medium` → `unstable` (the first of them,
/// if the entry names several).
fn changelog_distribution(changelog: &str) -> Option<String> {
    let head = changelog.lines().find(|l| !l.trim().is_empty())?;
    let (_, after) = head.split_once(')')?;
    let (distributions, _) = after.split_once(';')?;
    distributions.split_whitespace().next().map(str::to_owned)
}

/// Runs `cmd`, and gives its stdout when it succeeds.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let name = program(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .env("LC_ALL", "C.UTF-8")
        .output()
        .map_err(|e| Failure::spawn(&name, e))?;
    Failure::check(&name, out.status, &out.stderr)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
    let name = program(&cmd);
    eprintln!(
        "running lintian on {}",
        targets
            .iter()
            .map(|t| t.file_name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::spawn(&name, e))?;
    Failure::check(&name, out.status, &out.stderr)?;
    if !out.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn lintian_version() -> anyhow::Result<String> {
    let text = output(Command::new("lintian").arg("--print-version"))?;
    Ok(text.trim().to_owned())
}

/// Where a line of `lintian --info` output belongs. Each hint is printed as
///
/// ```text
/// N:                                  a bare "N:" opens the hint
/// N: comment from lintian-overrides   (overridden or masked hints only)
/// O: pkg source: tag-name note [pointer]
/// N:   explanation, indented ...      (the tag's first hint only)
/// ```
enum Part {
    Comment,
    Explanation,
}

/// The hints in lintian's output, masked ones left out.
fn parse_output(output: &str) -> anyhow::Result<Vec<Tag>> {
    let mut tags: Vec<Tag> = Vec::new();
    let mut part = Part::Comment;
    let mut comment: Vec<&str> = Vec::new();
    let mut explanation: Vec<&str> = Vec::new();
    // Whether the hint being read is kept (it is not masked).
    let mut keep = false;

    let finish = |tags: &mut Vec<Tag>, keep: bool, explanation: &mut Vec<&str>| {
        if keep && let Some(last) = tags.last_mut() {
            last.explanation = dedent(explanation);
        }
        explanation.clear();
    };

    for line in output.lines() {
        if line == "N:" {
            finish(&mut tags, keep, &mut explanation);
            keep = false;
            part = Part::Comment;
            continue;
        }
        if let Some(text) = line.strip_prefix("N:") {
            let text = text.strip_prefix(' ').unwrap_or(text);
            match part {
                Part::Comment => comment.push(text),
                Part::Explanation => explanation.push(text),
            }
            continue;
        }
        let Some(hint) = parse_tag_line(line)? else {
            continue;
        };
        finish(&mut tags, keep, &mut explanation);
        part = Part::Explanation;
        let justification = comment.join("\n").trim().to_owned();
        comment.clear();
        keep = hint.is_some();
        if let Some(mut tag) = hint {
            tag.comment = justification;
            tags.push(tag);
        }
    }
    finish(&mut tags, keep, &mut explanation);

    // lintian explains a tag once; every hint of it gets the explanation.
    let mut explained: BTreeMap<String, String> = BTreeMap::new();
    for tag in &tags {
        if !tag.explanation.is_empty() {
            explained
                .entry(tag.tag.clone())
                .or_insert_with(|| tag.explanation.clone());
        }
    }
    for tag in &mut tags {
        if tag.explanation.is_empty()
            && let Some(text) = explained.get(&tag.tag)
        {
            tag.explanation.clone_from(text);
        }
    }
    Ok(tags)
}

/// `E: pkg source: tag-name note [pointer]` as a tag; `Ok(Some(None))` for a
/// masked hint (`M:`); `Ok(None)` for a line that is no hint at all.
fn parse_tag_line(line: &str) -> anyhow::Result<Option<Option<Tag>>> {
    let mut chars = line.chars();
    let (Some(code), Some(':'), Some(' ')) = (chars.next(), chars.next(), chars.next()) else {
        return Ok(None);
    };
    if !code.is_ascii_uppercase() {
        return Ok(None);
    }
    let rest = &line[3..];
    let (package, rest) = rest
        .split_once(": ")
        .ok_or_else(|| anyhow!("cannot read lintian's output line {line:?}: no \"PACKAGE: \""))?;
    let (tag, context) = rest.split_once(' ').unwrap_or((rest, ""));
    if package.is_empty() || tag.is_empty() {
        bail!("cannot read lintian's output line {line:?}: no package or tag");
    }
    let severity = match (code, Severity::from_code(code)) {
        ('M', _) => return Ok(Some(None)),
        (_, Some(severity)) => severity,
        (_, None) => bail!("cannot read lintian's output line {line:?}: unknown code {code}"),
    };
    let (note, pointer) = split_pointer(context);
    Ok(Some(Some(Tag {
        severity,
        package: package.to_owned(),
        tag: tag.to_owned(),
        note: note.to_owned(),
        pointer: pointer.to_owned(),
        explanation: String::new(),
        comment: String::new(),
    })))
}

/// `note [pointer]` → (`note`, `pointer`). Lintian writes the pointer last,
/// in brackets; a note that itself ends in `[...]` with no pointer after it
/// cannot be told apart, and reads as a pointer (as in debusine).
fn split_pointer(context: &str) -> (&str, &str) {
    if let Some(inner) = context.strip_suffix(']')
        && let Some(open) = inner.rfind('[')
        && (open == 0 || inner[..open].ends_with(' '))
    {
        return (inner[..open].trim_end(), &inner[open + 1..]);
    }
    (context.trim(), "")
}

/// Lines with their common indentation and the blank lines around them
/// taken away.
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    let text: Vec<&str> = lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect();
    text.join("\n").trim_matches('\n').to_owned()
}

fn summarize(
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
fn name_tags(tags: &[&Tag]) -> String {
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

    /// Captured from lintian 2.116.3 (--info --show-overrides
    /// --display-level '>=classification' --display-experimental) on
    /// tests/fixtures/packages/lint-strata, trimmed; the M: hint is made up
    /// in lintian's format, as the fixture has none.
    const OUTPUT: &str = "\
N:
E: lint-strata: bogus-mail-host Maintainer strata@localhost
N: 
N:   The host part of the named contact address is not known or not globally
N:   routables, such as localhost(.localdomain).
N: 
N:   Visibility: error
N:   Check: fields/mail-address
N: 
N:
E: lint-strata-data: bogus-mail-host Maintainer strata@localhost
N:
E: lint-strata: bogus-mail-host-in-debian-changelog strata@localhost (for version 1.0) [usr/share/doc/lint-strata/changelog.gz:1]
N: 
N:   The changelog file contains an invalid email address: the domain needs at
N:   least one dot. This looks like a mistake.
N: 
N:
W: lint-strata: description-synopsis-starts-with-article
N: 
N:   The first line of the \"Description:\" should omit any initial indefinite or
N:   definite article.
N: 
N:   Screen: python/egg/metadata
N:     Advocates: someone
N: 
N:
N: masked by screen python/egg/metadata
M: lint-strata-data: package-contains-documentation-outside-usr-share-doc [usr/share/lint-strata-data/x.dist-info/METADATA.txt]
N: 
N:   This package ships a documentation file outside /usr/share/doc
N: 
N:
P: lint-strata source: no-dep5-copyright [debian/copyright]
N:
X: lint-strata: package-contains-no-arch-dependent-files
N:
C: lint-strata source: trimmed-deb822-field §1 Priority optional [debian/control:3]
N: 
N:   This is the compressor format used for the control.tar tarball.
N: 
N:
N: strata's fixtures are mailed nowhere: localhost is their maintainer's
N: host on purpose.
O: lint-strata source: bogus-mail-host Maintainer strata@localhost
";

    #[test]
    fn parses_every_hint_but_the_masked_one() {
        let tags = parse_output(OUTPUT).unwrap();
        let seen: Vec<(char, &str, &str)> = tags
            .iter()
            .map(|t| (t.severity.code(), t.package.as_str(), t.tag.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ('E', "lint-strata", "bogus-mail-host"),
                ('E', "lint-strata-data", "bogus-mail-host"),
                ('E', "lint-strata", "bogus-mail-host-in-debian-changelog"),
                (
                    'W',
                    "lint-strata",
                    "description-synopsis-starts-with-article"
                ),
                ('P', "lint-strata source", "no-dep5-copyright"),
                (
                    'X',
                    "lint-strata",
                    "package-contains-no-arch-dependent-files"
                ),
                ('C', "lint-strata source", "trimmed-deb822-field"),
                ('O', "lint-strata source", "bogus-mail-host"),
            ]
        );
    }

    #[test]
    fn splits_note_and_pointer() {
        let tags = parse_output(OUTPUT).unwrap();
        assert_eq!(tags[0].note, "Maintainer strata@localhost");
        assert_eq!(tags[0].pointer, "");
        assert_eq!(tags[2].note, "strata@localhost (for version 1.0)");
        assert_eq!(tags[2].pointer, "usr/share/doc/lint-strata/changelog.gz:1");
        assert_eq!(tags[4].note, "");
        assert_eq!(tags[4].pointer, "debian/copyright");
        assert_eq!(tags[6].note, "§1 Priority optional");
        assert_eq!(tags[6].pointer, "debian/control:3");
    }

    #[test]
    fn keeps_explanations_and_copies_them_to_later_hints() {
        let tags = parse_output(OUTPUT).unwrap();
        let first = "The host part of the named contact address is not known or not globally\n\
                     routables, such as localhost(.localdomain).\n\
                     \n\
                     Visibility: error\n\
                     Check: fields/mail-address";
        assert_eq!(tags[0].explanation, first);
        assert_eq!(tags[1].explanation, first);
        assert_eq!(tags[7].explanation, first);
        // Deeper indentation stays.
        assert!(
            tags[3]
                .explanation
                .ends_with("Screen: python/egg/metadata\n  Advocates: someone")
        );
        // The masked hint's explanation goes with it, not onto its neighbour.
        assert!(tags.iter().all(|t| !t.explanation.contains("ships")));
    }

    #[test]
    fn reads_the_override_comment() {
        let tags = parse_output(OUTPUT).unwrap();
        assert_eq!(
            tags[7].comment,
            "strata's fixtures are mailed nowhere: localhost is their maintainer's\nhost on purpose."
        );
        assert!(tags[..7].iter().all(|t| t.comment.is_empty()));
    }

    #[test]
    fn parses_output_without_info() {
        let tags = parse_output("W: hello: tag-a\nI: hello udeb: tag-b x [y]\n").unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[1].package, "hello udeb");
        assert_eq!(
            (tags[1].note.as_str(), tags[1].pointer.as_str()),
            ("x", "y")
        );
    }

    #[test]
    fn skips_other_lines_and_rejects_broken_hints() {
        assert_eq!(
            parse_output("warning: something\n\nE: nothing-here\n")
                .unwrap_err()
                .to_string(),
            "cannot read lintian's output line \"E: nothing-here\": no \"PACKAGE: \""
        );
        assert!(parse_output("lintian: a message\n").unwrap().is_empty());
        assert!(parse_output("Q: pkg: tag\n").is_err());
    }

    #[test]
    fn pointer_needs_its_own_word() {
        assert_eq!(split_pointer("a [b]"), ("a", "b"));
        assert_eq!(split_pointer("[b]"), ("", "b"));
        assert_eq!(split_pointer("foo[amd64]"), ("foo[amd64]", ""));
        assert_eq!(split_pointer("plain note"), ("plain note", ""));
        assert_eq!(split_pointer(""), ("", ""));
    }

    #[test]
    fn severities_fail_at_or_above_the_threshold() {
        use Severity::*;
        let table: [(FailOn, &[Severity]); 7] = [
            (FailOn::Error, &[Error]),
            (FailOn::Warning, &[Error, Warning]),
            (FailOn::Info, &[Error, Warning, Info]),
            (FailOn::Pedantic, &[Error, Warning, Info, Pedantic]),
            (
                FailOn::Experimental,
                &[Error, Warning, Info, Pedantic, Experimental],
            ),
            (
                FailOn::Overridden,
                &[Error, Warning, Info, Pedantic, Experimental, Overridden],
            ),
            (FailOn::None, &[]),
        ];
        for (fail_on, failing) in table {
            for severity in Severity::ALL {
                assert_eq!(
                    fail_on.fails(severity),
                    failing.contains(&severity),
                    "{} on {}",
                    fail_on.name(),
                    severity.name()
                );
            }
        }
    }

    fn options(value: Value) -> Options {
        serde_json::from_value(value).unwrap()
    }

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

    #[test]
    fn unknown_options_are_refused() {
        assert!(serde_json::from_value::<Options>(json!({"tags": []})).is_err());
        assert!(serde_json::from_value::<Options>(json!({"fail_on_severity": "fatal"})).is_err());
        assert!(serde_json::from_value::<Options>(json!({"analyses": ["binary"]})).is_err());
    }

    fn target(package: &str, file_name: &str) -> Target {
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

    #[test]
    fn reads_signed_and_unsigned_control_files() {
        let plain = "Format: 3.0 (native)\nSource: hello\nFiles:\n abc 12 hello_1.tar.xz\n";
        assert_eq!(control_paragraph(plain)["source"], "hello");
        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{plain}\
             -----BEGIN PGP SIGNATURE-----\n\niQIz\n-----END PGP SIGNATURE-----\n"
        );
        let fields = control_paragraph(&signed);
        assert_eq!(fields["source"], "hello");
        assert_eq!(fields["files"], "\nabc 12 hello_1.tar.xz");
        assert!(!fields.contains_key("hash"));
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
