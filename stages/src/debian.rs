//! What Debian stages read from a Debian system and its files: apt's
//! sources, a suite's Release file, os-release, dpkg's package list,
//! control files (clearsigned or not), a .deb's fields, changelog entries.
//!
//! ```text
//!   build root /etc/apt/sources.list          one-line:  deb [signed-by=K] URI SUITE COMP...
//!              /etc/apt/sources.list.d/*.list  one-line
//!              /etc/apt/sources.list.d/*.sources  deb822:  Types/URIs/Suites/Components/Signed-By
//!        └──> [AptSource] ──> the default mirror (first Debian-looking, not -security)
//!
//!   MIRROR/dists/SUITE/Release  ──> Components: main contrib ...
//!   TREE/etc/os-release         ──> {ID: debian, VERSION_CODENAME: bookworm, ...}
//!   TREE/var/lib/dpkg           ──> dpkg-query ──> [{name, version, architecture}]
//!
//!   .dsc, .changes (clearsigned)  ──> unsigned ──> parse_deb822 / control_paragraph
//!   PKG.deb                       ──> dpkg-deb --field ──> {package: ..., architecture: ...}
//!   debian/changelog              ──> changelog_heading: NAME (VERSION) DISTRIBUTIONS; ...
//!   an epoch                      ──> rfc2822: the date a changelog trailer wants
//! ```
//!
//! The parsers are pure (text in, values out) so they are tested here; the
//! few functions that touch files or run programs are thin around them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::tool::capture;
use crate::{Error, Failure, Root};

/// One source of packages, whichever syntax it was written in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptSource {
    /// `deb`, `deb-src`.
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// A keyring path (or list of them); inline keys are left out.
    pub signed_by: Option<String>,
}

/// One deb822 paragraph being written, such as an apt `.sources` stanza.
///
/// Values come from manifests and from the build root's own apt sources, and
/// a value is pasted after `Name: `: a newline in it would start a field of
/// its own (`URIs: http://x\nTrusted: yes`), so every value is checked to be
/// one line of printable text before it is written, and each word of a
/// word-list field to hold no space either.
#[derive(Debug, Default)]
pub struct Stanza {
    text: String,
}

impl Stanza {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Name: value`, the value one line without control characters.
    pub fn field(mut self, name: &str, value: &str) -> anyhow::Result<Self> {
        if value.is_empty() || value.trim() != value || value.chars().any(char::is_control) {
            anyhow::bail!(
                "{name}: {value:?} cannot be a deb822 value (empty, padded, or holding a newline or control character)"
            );
        }
        self.text.push_str(&format!("{name}: {value}\n"));
        Ok(self)
    }

    /// `Name: w1 w2 ...`, each word holding no whitespace.
    pub fn words<S: AsRef<str>>(self, name: &str, words: &[S]) -> anyhow::Result<Self> {
        if let Some(bad) = words
            .iter()
            .map(AsRef::as_ref)
            .find(|w| w.is_empty() || w.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            anyhow::bail!("{name}: {bad:?} cannot be one word of a deb822 list");
        }
        let joined: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        self.field(name, &joined.join(" "))
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// deb822 paragraphs: field names lowercased (apt reads them so), values
/// with continuation lines joined by newlines, comments dropped.
pub fn parse_deb822(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut paragraphs = Vec::new();
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            last = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(value) = last.as_ref().and_then(|k| current.get_mut(k)) {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            let key = key.trim().to_ascii_lowercase();
            current.insert(key.clone(), value.trim().to_owned());
            last = Some(key);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs
}

fn words(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A Signed-By value that names files; an inline key block is not one.
fn keyring_path(value: &str) -> Option<String> {
    let value = value.trim();
    value.starts_with('/').then(|| value.to_owned())
}

/// The stanzas of a deb822 `.sources` file, less those with `Enabled: no`.
pub fn parse_sources_deb822(text: &str) -> Vec<AptSource> {
    parse_deb822(text)
        .into_iter()
        .filter(|p| {
            !p.get("enabled")
                .is_some_and(|v| v.eq_ignore_ascii_case("no"))
        })
        .map(|p| AptSource {
            types: words(p.get("types")),
            uris: words(p.get("uris")),
            suites: words(p.get("suites")),
            components: words(p.get("components")),
            signed_by: p.get("signed-by").and_then(|v| keyring_path(v)),
        })
        .filter(|s| !s.uris.is_empty())
        .collect()
}

/// The lines of a one-line `sources.list`: `deb [opt=v ...] URI SUITE COMP...`.
pub fn parse_sources_list(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((kind, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if kind != "deb" && kind != "deb-src" {
            continue;
        }
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(options) = rest.strip_prefix('[') {
            let Some((options, after)) = options.split_once(']') else {
                continue;
            };
            for option in options.split_whitespace() {
                if let Some(v) = option.strip_prefix("signed-by=") {
                    signed_by = keyring_path(v);
                }
            }
            rest = after;
        }
        let mut fields = rest.split_whitespace().map(str::to_owned);
        let (Some(uri), Some(suite)) = (fields.next(), fields.next()) else {
            continue;
        };
        sources.push(AptSource {
            types: vec![kind.to_owned()],
            uris: vec![uri],
            suites: vec![suite],
            components: fields.collect(),
            signed_by,
        });
    }
    sources
}

/// Every source apt would read under `etc_apt` (the build root's
/// `/etc/apt`), in apt's order: `sources.list`, then `sources.list.d`
/// sorted by name. Files that cannot be read are skipped, as apt warns and
/// goes on.
pub fn read_apt_sources(etc_apt: &Path) -> Vec<AptSource> {
    let mut sources = std::fs::read_to_string(etc_apt.join("sources.list"))
        .map(|t| parse_sources_list(&t))
        .unwrap_or_default();
    let mut names: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let Ok(text) = std::fs::read_to_string(etc_apt.join("sources.list.d").join(name)) else {
            continue;
        };
        if name.ends_with(".sources") {
            sources.extend(parse_sources_deb822(&text));
        } else if name.ends_with(".list") {
            sources.extend(parse_sources_list(&text));
        }
    }
    sources
}

/// Whether `uri` looks like a Debian archive mirror (a `debian...` folder in
/// its path) rather than a third-party repository; security mirrors, which
/// hold only `-security` suites, are not.
pub fn looks_debian(uri: &str) -> bool {
    let path = uri.split_once("://").map_or(uri, |(_, rest)| {
        rest.split_once('/').map_or("", |(_, path)| path)
    });
    let path = path.trim_end_matches('/');
    !path.ends_with("-security") && path.split('/').any(|s| s.starts_with("debian"))
}

/// The first binary Debian mirror among `sources` and the keyring apt
/// checks it with.
pub fn default_mirror(sources: &[AptSource]) -> Option<(String, Option<String>)> {
    let debian_keyring = |s: &AptSource| {
        s.signed_by
            .as_deref()
            .is_some_and(|k| k.contains("debian-archive-keyring"))
    };
    sources
        .iter()
        .filter(|s| s.types.iter().any(|t| t == "deb"))
        .flat_map(|s| s.uris.iter().map(move |u| (s, u)))
        .find(|(s, u)| {
            looks_debian(u)
                || (debian_keyring(s) && !u.trim_end_matches('/').ends_with("-security"))
        })
        .map(|(s, u)| (u.trim_end_matches('/').to_owned(), s.signed_by.clone()))
}

/// The keyring the build root's apt uses for `mirror`, if a source names one.
pub fn signed_by_for(sources: &[AptSource], mirror: &str) -> Option<String> {
    let mirror = mirror.trim_end_matches('/');
    sources
        .iter()
        .find(|s| s.uris.iter().any(|u| u.trim_end_matches('/') == mirror))
        .and_then(|s| s.signed_by.clone())
}

/// The `Components:` of a Release (or InRelease) file.
pub fn release_components(text: &str) -> Option<Vec<String>> {
    parse_deb822(text)
        .into_iter()
        .find_map(|p| p.get("components").cloned())
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
}

/// `KEY=value` lines of an os-release file, quotes and escapes removed.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        fields.insert(key.trim().to_owned(), unquote(value.trim()));
    }
    fields
}

fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// The os-release of the system in `root`: `/etc/os-release` when it is a
/// regular file, else `/usr/lib/os-release` (where Debian's points).
/// Symlinks are not followed, so nothing outside the tree is read.
pub fn read_os_release(root: &Root) -> Result<BTreeMap<String, String>, Error> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(text) = read_regular(root, path)? {
            return Ok(parse_os_release(&text));
        }
    }
    Ok(BTreeMap::new())
}

/// The text of `path` beneath `root` if it is a regular file.
pub fn read_regular(root: &Root, path: &str) -> Result<Option<String>, Error> {
    let Some(mut file) = root.open_regular(path)? else {
        return Ok(None);
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|source| Error::Io {
        what: "cannot read",
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(text))
}

/// An installed package, as metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

const DPKG_QUERY_FORMAT: &str = "${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\n";

/// The output of `dpkg-query -W -f DPKG_QUERY_FORMAT`: installed packages
/// only (not those removed with their configuration kept), sorted by name.
pub fn parse_dpkg_query(text: &str) -> Vec<Package> {
    let mut packages: Vec<Package> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (status, name, version, arch) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (status == "installed").then(|| Package {
                name: name.to_owned(),
                version: version.to_owned(),
                architecture: arch.to_owned(),
            })
        })
        .collect();
    packages.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    packages
}

/// The packages installed in the system at `tree`, read with the build
/// root's dpkg-query from the tree's dpkg database.
pub fn installed_packages(tree: &Path) -> Result<Vec<Package>, Failure> {
    let mut cmd = Command::new("dpkg-query");
    cmd.arg(format!(
        "--admindir={}",
        tree.join("var/lib/dpkg").display()
    ))
    .args(["-W", "-f", DPKG_QUERY_FORMAT]);
    Ok(parse_dpkg_query(&capture(&mut cmd)?))
}

/// The text an OpenPGP clear signature wraps (RFC 4880 7.1: armor headers
/// and signature left out, dash-escaped lines unescaped), or `text` itself
/// when it is not signed. The signature is not checked: the files' sums are.
pub fn unsigned(text: &str) -> String {
    let signed = text.trim_start();
    if !signed.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        return text.to_owned();
    }
    let mut lines = signed.lines().skip(1);
    // Armor headers (Hash: ...) end at the first empty line.
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
    }
    let mut out = String::new();
    for line in lines {
        if line.starts_with("-----BEGIN PGP SIGNATURE-----") {
            break;
        }
        out.push_str(line.strip_prefix("- ").unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The first paragraph of a control file (.dsc, .changes), clearsigned or
/// not; empty when it has none.
pub fn control_paragraph(text: &str) -> BTreeMap<String, String> {
    parse_deb822(&unsigned(text))
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// `fields` of the binary package `deb`, read with the build root's
/// dpkg-deb, by their lowercased names; a field the package lacks is absent.
pub fn deb_fields(deb: &Path, fields: &[&str]) -> Result<BTreeMap<String, String>, Failure> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("--field").arg(deb).args(fields);
    // Same messages whatever the build root's locale.
    cmd.env("LC_ALL", "C.UTF-8");
    let text = capture(&mut cmd)?;
    // One field asked for is printed bare, without its name.
    if let [field] = fields {
        let value = text.trim();
        return Ok(if value.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([(field.to_ascii_lowercase(), value.to_owned())])
        });
    }
    Ok(parse_deb822(&text).into_iter().next().unwrap_or_default())
}

/// The heading of a debian/changelog entry:
/// `NAME (VERSION) DISTRIBUTIONS; KEY=VALUE, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogHeading<'a> {
    pub source: &'a str,
    pub version: &'a str,
    /// As written: `unstable`, or several separated by spaces.
    pub distributions: &'a str,
}

/// The heading of the top (newest) entry of `changelog`.
pub fn changelog_heading(changelog: &str) -> Option<ChangelogHeading<'_>> {
    let line = changelog.lines().find(|l| !l.trim().is_empty())?;
    let (source, rest) = line.split_once(" (")?;
    let (version, rest) = rest.split_once(')')?;
    let distributions = rest.split(';').next().unwrap_or_default();
    let heading = ChangelogHeading {
        source: source.trim(),
        version: version.trim(),
        distributions: distributions.trim(),
    };
    (!heading.source.is_empty() && !heading.version.is_empty() && !heading.distributions.is_empty())
        .then_some(heading)
}

/// An RFC 2822 date in UTC, as changelog trailers want it.
pub fn rfc2822(epoch: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 as (year, month, day): Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_stanza_refuses_a_value_that_would_start_a_field() {
        let ok = Stanza::new()
            .words("Types", &["deb", "deb-src"])
            .and_then(|s| s.field("URIs", "http://127.0.0.1/debian"))
            .unwrap()
            .finish();
        assert_eq!(ok, "Types: deb deb-src\nURIs: http://127.0.0.1/debian\n");
        for bad in [
            "http://x\nTrusted: yes",
            "http://x\r",
            "",
            " x",
            "a\u{1b}[2J",
        ] {
            let err = Stanza::new().field("URIs", bad).unwrap_err().to_string();
            assert!(err.starts_with("URIs: "), "{err}");
        }
        for bad in [&["main contrib"][..], &[""], &["main\n"]] {
            assert!(Stanza::new().words("Components", bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    const SOURCES: &str = "\
Types: deb
# a comment
URIs: http://127.0.0.1/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://127.0.0.1/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://127.0.0.1/other
Suites: x
Enabled: no
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 abc
";

    #[test]
    fn deb822_sources_are_read_with_their_keyrings() {
        let s = parse_sources_deb822(SOURCES);
        assert_eq!(s.len(), 2, "the disabled stanza is left out: {s:?}");
        assert_eq!(s[0].types, ["deb"]);
        assert_eq!(s[0].uris, ["http://127.0.0.1/debian"]);
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(s[0].components, ["main"]);
        assert_eq!(
            s[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        let inline = parse_sources_deb822("URIs: http://127.0.0.1/x\nSigned-By:\n -----BEGIN\n");
        assert_eq!(inline[0].signed_by, None, "an inline key is no path");
    }

    #[test]
    fn one_line_sources_are_read_with_their_options() {
        let s = parse_sources_list(
            "# comment\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://127.0.0.1/debian bookworm main contrib # tail\n\
             deb-src http://127.0.0.1/debian bookworm main\n\
             deb cdrom:[Debian]/ bookworm main\n\
             nonsense line\n\
             deb http://127.0.0.1/flat ./\n",
        );
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].uris, ["http://127.0.0.1/debian"]);
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(s[0].signed_by.as_deref(), Some("/usr/share/keyrings/k.gpg"));
        assert_eq!(s[1].types, ["deb-src"]);
        assert_eq!(s[3].suites, ["./"]);
        assert!(s[3].components.is_empty());
    }

    #[test]
    fn the_default_mirror_is_the_first_debian_one_not_security() {
        let mut sources = parse_sources_list(
            "deb-src http://127.0.0.1/debian-src-only bookworm main\n\
             deb http://127.0.0.1/debian-security bookworm-security main\n\
             deb http://127.0.0.1/node nodistro main\n",
        );
        assert_eq!(default_mirror(&sources), None);
        sources.extend(parse_sources_deb822(SOURCES));
        assert_eq!(
            default_mirror(&sources),
            Some((
                "http://127.0.0.1/debian".into(),
                Some("/usr/share/keyrings/debian-archive-keyring.gpg".into())
            ))
        );
        let snapshot = parse_sources_list(
            "deb http://127.0.0.1/archive/debian/20250520T000000Z/ bookworm main\n",
        );
        assert_eq!(
            default_mirror(&snapshot).unwrap().0,
            "http://127.0.0.1/archive/debian/20250520T000000Z"
        );
        let by_keyring = parse_sources_list(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://127.0.0.1:3142/mirror bookworm main\n",
        );
        assert_eq!(
            default_mirror(&by_keyring).unwrap().0,
            "http://127.0.0.1:3142/mirror"
        );
        assert!(!looks_debian("http://127.0.0.1/debian-security/"));
        assert!(
            // Built at run time: no host name stands in the repository.
            !looks_debian(&format!("http://{}/ubuntu", "debian.invalid")),
            "the host name does not count"
        );
    }

    #[test]
    fn the_keyring_for_a_mirror_is_found_by_uri() {
        let sources = parse_sources_deb822(SOURCES);
        assert_eq!(
            signed_by_for(&sources, "http://127.0.0.1/debian/").as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(signed_by_for(&sources, "http://127.0.0.1/elsewhere"), None);
    }

    #[test]
    fn apt_sources_are_read_in_apt_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sources.list.d")).unwrap();
        std::fs::write(d.join("sources.list"), "deb http://127.0.0.1/a s main\n").unwrap();
        std::fs::write(
            d.join("sources.list.d/b.sources"),
            "Types: deb\nURIs: http://127.0.0.1/c\nSuites: s\n",
        )
        .unwrap();
        std::fs::write(
            d.join("sources.list.d/a.list"),
            "deb http://127.0.0.1/b s main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("sources.list.d/z.list.disabled"),
            "deb http://127.0.0.1/z s main\n",
        )
        .unwrap();
        let uris: Vec<_> = read_apt_sources(d)
            .into_iter()
            .flat_map(|s| s.uris)
            .collect();
        assert_eq!(
            uris,
            [
                "http://127.0.0.1/a",
                "http://127.0.0.1/b",
                "http://127.0.0.1/c"
            ]
        );
        assert!(read_apt_sources(&d.join("missing")).is_empty());
    }

    #[test]
    fn release_components_are_read_from_release_and_inrelease() {
        let release = "Origin: Debian\nSuite: stable\nCodename: bookworm\nComponents: main contrib non-free-firmware non-free\nMD5Sum:\n abc 1 main/x\n";
        assert_eq!(
            release_components(release).unwrap(),
            ["main", "contrib", "non-free-firmware", "non-free"]
        );
        let inrelease = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{release}-----BEGIN PGP SIGNATURE-----\n\nxyz\n"
        );
        assert_eq!(release_components(&inrelease).unwrap().len(), 4);
        assert_eq!(release_components("Origin: x\n"), None);
    }

    #[test]
    fn os_release_values_lose_their_quotes() {
        let f = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n# c\n\nID=debian\nNAME='Debian'\nX=\"a \\\"b\\\" \\$c\"\n",
        );
        assert_eq!(f["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["NAME"], "Debian");
        assert_eq!(f["X"], "a \"b\" $c");
    }

    #[test]
    fn os_release_is_read_without_following_links_out() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        std::fs::create_dir_all(t.join("etc")).unwrap();
        std::fs::create_dir_all(t.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/etc/os-release", t.join("etc/os-release")).unwrap();
        std::fs::write(t.join("usr/lib/os-release"), "ID=strata\n").unwrap();
        let root = Root::open(t, "the tree", "/").unwrap();
        assert_eq!(read_os_release(&root).unwrap()["ID"], "strata");
        let empty = tempfile::tempdir().unwrap();
        let root = Root::open(empty.path(), "the tree", "/").unwrap();
        assert!(read_os_release(&root).unwrap().is_empty());
    }

    #[test]
    fn clearsigned_text_is_unwrapped_and_unescaped() {
        let plain = "Format: 1.8\nSource: hello\nFiles:\n 1 2 h.dsc\n";
        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{plain}- -----BEGIN not the end\n-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----\n"
        );
        assert_eq!(
            unsigned(&signed),
            format!("{plain}-----BEGIN not the end\n")
        );
        assert_eq!(unsigned(plain), plain);
        assert_eq!(control_paragraph(&signed)["source"], "hello");
        assert_eq!(control_paragraph(plain)["files"], "\n1 2 h.dsc");
        assert!(control_paragraph("").is_empty());
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
    fn changelog_headings_are_read_from_the_top_entry() {
        assert_eq!(
            changelog_heading(
                "\nfoo (2:1.0-1) bookworm-backports unstable; urgency=low\n\n  * x\n"
            ),
            Some(ChangelogHeading {
                source: "foo",
                version: "2:1.0-1",
                distributions: "bookworm-backports unstable"
            })
        );
        assert_eq!(changelog_heading("garbage\n"), None);
        assert_eq!(changelog_heading("foo (1) ; urgency=low\n"), None);
        assert_eq!(
            changelog_heading("foo (1) unstable\n").map(|h| h.distributions),
            Some("unstable")
        );
        assert_eq!(changelog_heading(""), None);
    }

    #[test]
    fn dates_are_rfc_2822_in_utc() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc2822(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 +0000");
    }

    #[test]
    fn deb_fields_come_from_dpkg_deb() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: strata-x\nVersion: 1.0\nArchitecture: all\nMaintainer: s <s@localhost>\nDescription: x\n",
        )
        .unwrap();
        let deb = dir.path().join("x.deb");
        let built = Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(built.status.success(), "{built:?}");
        let f = deb_fields(&deb, &["Package", "Version", "Architecture"]).unwrap();
        assert_eq!(f["package"], "strata-x");
        assert_eq!(f["version"], "1.0");
        assert_eq!(f["architecture"], "all");
        assert_eq!(deb_fields(&deb, &["Version"]).unwrap()["version"], "1.0");
        assert!(deb_fields(&deb, &["Depends"]).unwrap().is_empty());
        let e = deb_fields(&dir.path().join("none.deb"), &["Package"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("dpkg-deb failed"), "{e}");
    }

    #[test]
    fn dpkg_query_output_keeps_installed_packages_by_name() {
        let p = parse_dpkg_query(
            "installed\tzlib1g\t1:1.2.13\tamd64\nconfig-files\told\t1\tamd64\ninstalled\tbase-files\t12.4\tamd64\nbroken line\n",
        );
        assert_eq!(
            p,
            [
                Package {
                    name: "base-files".into(),
                    version: "12.4".into(),
                    architecture: "amd64".into()
                },
                Package {
                    name: "zlib1g".into(),
                    version: "1:1.2.13".into(),
                    architecture: "amd64".into()
                },
            ]
        );
    }
}
