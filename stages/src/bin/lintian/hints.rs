//! lintian's `--info` output read back into hints, as analysis.json keeps
//! them.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use serde::Serialize;

/// What lintian reports a hint as, most severe first: the order the
/// failure threshold and the summary follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
    Pedantic,
    Experimental,
    Overridden,
    Classification,
}

impl Severity {
    pub const ALL: [Self; 7] = [
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
    pub fn from_code(code: char) -> Option<Self> {
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

    pub fn code(self) -> char {
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

    pub fn name(self) -> &'static str {
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

/// One hint lintian printed, as analysis.json keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tag {
    pub severity: Severity,
    /// As lintian names it: `NAME` for a .deb, `NAME source` for a .dsc,
    /// `NAME udeb` for a .udeb, so a source and a binary of the same name
    /// stay apart.
    pub package: String,
    pub tag: String,
    /// What lintian said after the tag name, less the pointer.
    pub note: String,
    /// Where: `debian/control:5`, `usr/share/doc/x/changelog.gz:1`.
    pub pointer: String,
    /// The tag's description (lintian --info prints it for a tag's first
    /// hint only; the others get a copy).
    pub explanation: String,
    /// The justification in the lintian-overrides file, for an overridden tag.
    pub comment: String,
}

/// Where a line of `lintian --info` output belongs. Each hint is printed as
///
/// ```text
/// N:                                  a bare "N:" opens the hint
/// N: comment from lintian-overrides   (overridden or masked hints only)
/// O: pkg source: tag-name note [pointer]
/// N:   explanation, indented ...      (the tag's first hint only)
/// ```
pub enum Part {
    Comment,
    Explanation,
}

/// The hints in lintian's output, masked ones left out.
pub fn parse_output(output: &str) -> anyhow::Result<Vec<Tag>> {
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
pub fn parse_tag_line(line: &str) -> anyhow::Result<Option<Option<Tag>>> {
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
pub fn split_pointer(context: &str) -> (&str, &str) {
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
pub fn dedent(lines: &[&str]) -> String {
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

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Captured from lintian 2.116.3 (--info --show-overrides
    /// --display-level '>=classification' --display-experimental) on
    /// tests/fixtures/packages/lint-strata, trimmed; the M: hint is made up
    /// in lintian's format, as the fixture has none.
    pub const OUTPUT: &str = "\
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
}
