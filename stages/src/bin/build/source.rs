//! The source package: its .dsc, found in the `source` input, and the
//! files it lists, placed where dpkg-source unpacks them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use strata_stage::Input;
use strata_stage::debian::{parse_deb822, unsigned};

/// The .dsc is a small text file; anything bigger is one of its files.
pub const DSC_MAX_BYTES: u64 = 1 << 20;

/// What the build needs of a .dsc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsc {
    pub source: String,
    pub version: String,
    /// `(sha256, file name)` of each file the .dsc lists.
    pub files: Vec<(String, String)>,
}

impl Dsc {
    /// The name dpkg-source gives it: `SRC_VERSION.dsc`, without the epoch.
    pub fn file_name(&self) -> String {
        format!("{}_{}.dsc", self.source, without_epoch(&self.version))
    }

    /// The directory it unpacks to, as dpkg-source names it: `SRC-UPSTREAM`.
    pub fn unpack_dir(&self) -> String {
        let version = without_epoch(&self.version);
        let upstream = version.rsplit_once('-').map_or(version, |(u, _)| u);
        format!("{}-{upstream}", self.source)
    }
}

pub fn without_epoch(version: &str) -> &str {
    version.split_once(':').map_or(version, |(_, v)| v)
}

/// A .dsc: a control paragraph with `Format:`, `Source:`, `Version:` and
/// `Checksums-Sha256:`. `None` when `text` is no .dsc; an error when it is
/// one with something wrong in it.
pub fn parse_dsc(text: &str) -> Option<Result<Dsc, String>> {
    let paragraph = parse_deb822(&unsigned(text)).into_iter().find(|p| {
        p.contains_key("format") && p.contains_key("source") && p.contains_key("checksums-sha256")
    })?;
    Some(dsc_from(&paragraph))
}

pub fn dsc_from(p: &BTreeMap<String, String>) -> Result<Dsc, String> {
    let source = p["source"].trim().to_owned();
    if !is_package_name(&source) {
        return Err(format!("Source: {source:?} is not a source package name"));
    }
    let version = p.get("version").map(|v| v.trim()).unwrap_or_default();
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b))
    {
        return Err(format!("Version: {version:?} is not a Debian version"));
    }
    let mut files = Vec::new();
    for line in p["checksums-sha256"]
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let mut f = line.split_whitespace();
        let (Some(sum), Some(_size), Some(name), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(format!(
                "Checksums-Sha256 line {line:?} is not \"SHA256 SIZE NAME\""
            ));
        };
        if !is_sha256(sum) {
            return Err(format!("Checksums-Sha256: {sum:?} is not a sha256"));
        }
        if !is_file_name(name) {
            return Err(format!(
                "Checksums-Sha256: {name:?} is not a plain file name"
            ));
        }
        files.push((sum.to_ascii_lowercase(), name.to_owned()));
    }
    if files.is_empty() {
        return Err("Checksums-Sha256 lists no files".into());
    }
    Ok(Dsc {
        source,
        version: version.to_owned(),
        files,
    })
}

pub fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
}

pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A name within one directory: never a path out of it.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The source input, its .dsc found, and where each of its files is.
#[derive(Debug)]
pub struct SourcePackage {
    pub dsc: Dsc,
    pub dsc_path: PathBuf,
    /// The file each name the .dsc lists is in the input.
    pub files: Vec<(String, PathBuf)>,
}

impl SourcePackage {
    pub fn find(input: &Input) -> anyhow::Result<Self> {
        match input.files() {
            Some(items) => Self::from_items(&input.path, items),
            None => Self::from_tree(&input.path),
        }
    }

    /// A `files` input: items named `sha256:<hex>`, one of them the .dsc.
    pub fn from_items<'a>(
        dir: &Path,
        items: impl Iterator<Item = &'a String>,
    ) -> anyhow::Result<Self> {
        let mut by_sum = BTreeMap::new();
        let mut found = Vec::new();
        for item in items {
            let sum = item
                .strip_prefix("sha256:")
                .filter(|s| is_sha256(s))
                .ok_or_else(|| anyhow!("source input item {item:?} is not named sha256:<hex>"))?;
            let path = dir.join(item);
            by_sum.insert(sum.to_ascii_lowercase(), path.clone());
            if let Some(dsc) = read_dsc(&path)? {
                found.push((item.clone(), path, dsc));
            }
        }
        let (item, dsc_path, dsc) = match found.len() {
            1 => found.remove(0),
            0 => bail!(
                "none of the source input's {} items is a .dsc (a control file with Format:, Source: and Checksums-Sha256:)",
                by_sum.len()
            ),
            _ => bail!(
                "the source input holds several .dsc files: {}",
                found
                    .iter()
                    .map(|(i, _, d)| match d {
                        Ok(d) => format!("{i} ({} {})", d.source, d.version),
                        Err(_) => i.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let dsc = dsc.map_err(|e| anyhow!("the .dsc {item}: {e}"))?;
        let mut files = Vec::new();
        let mut missing = Vec::new();
        for (sum, name) in &dsc.files {
            match by_sum.get(sum) {
                Some(path) => files.push((name.clone(), path.clone())),
                None => missing.push(format!("{name} (sha256:{sum})")),
            }
        }
        if !missing.is_empty() {
            bail!(
                "the source input lacks files {} lists: {}",
                dsc.file_name(),
                missing.join(", ")
            );
        }
        Ok(Self {
            dsc,
            dsc_path,
            files,
        })
    }

    /// A `tree` input: the one `*.dsc` at its top, its files beside it.
    pub fn from_tree(dir: &Path) -> anyhow::Result<Self> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list the source input {}", dir.display()))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".dsc"))
            .collect();
        names.sort();
        let name = match names.as_slice() {
            [one] => one.clone(),
            [] => bail!("the source input has no *.dsc file at its top"),
            several => bail!(
                "the source input has several *.dsc files: {}",
                several.join(", ")
            ),
        };
        let dsc_path = dir.join(&name);
        let dsc = read_dsc(&dsc_path)?
            .ok_or_else(|| {
                anyhow!("{name} is not a .dsc (no Format:, Source: and Checksums-Sha256:)")
            })?
            .map_err(|e| anyhow!("{name}: {e}"))?;
        let missing: Vec<&str> = dsc
            .files
            .iter()
            .map(|(_, n)| n.as_str())
            .filter(|n| !dir.join(n).is_file())
            .collect();
        if !missing.is_empty() {
            bail!(
                "the source input lacks files {name} lists: {}",
                missing.join(", ")
            );
        }
        let files = dsc
            .files
            .iter()
            .map(|(_, n)| (n.clone(), dir.join(n)))
            .collect();
        Ok(Self {
            dsc,
            dsc_path,
            files,
        })
    }

    /// Copies the .dsc and its files into `dir` under their own names.
    pub fn place(&self, dir: &Path) -> anyhow::Result<()> {
        let dsc = std::iter::once((self.dsc.file_name(), self.dsc_path.clone()));
        for (name, from) in dsc.chain(self.files.iter().cloned()) {
            let to = dir.join(&name);
            copy_file(&from, &to)?;
        }
        Ok(())
    }
}

/// The .dsc in `path`, if it is one: small, text, and a .dsc inside.
pub fn read_dsc(path: &Path) -> anyhow::Result<Option<Result<Dsc, String>>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() || meta.len() > DSC_MAX_BYTES {
        return Ok(None);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8(bytes).ok().and_then(|t| parse_dsc(&t)))
}

/// A copy that the build may overwrite (dpkg-buildpackage rewrites the
/// source package when it builds `source`), whatever the input's modes.
pub fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("cannot set the mode of {}", to.display()))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub const DSC: &str = "\
Format: 3.0 (native)
Source: hello-strata
Binary: hello-strata, hello-strata-doc
Architecture: any all
Version: 1.0
Maintainer: strata <strata@localhost>
Build-Depends: debhelper-compat (= 13)
Checksums-Sha1:
     5ebd818b7bc6b946d152024c7e741550df8b0d0d 1348 hello-strata_1.0.tar.xz
Checksums-Sha256:
     4d7d97801a6fa1ee1344fbc36d87866e941bc8205f2a375868b36ba8aaf15907 1348 hello-strata_1.0.tar.xz
Files:
     98d0043cece1e419d0aa570aba706e1b 1348 hello-strata_1.0.tar.xz
";

    pub const SUM: &str = "4d7d97801a6fa1ee1344fbc36d87866e941bc8205f2a375868b36ba8aaf15907";

    #[test]
    fn a_dsc_is_read_plain_or_signed() {
        let dsc = parse_dsc(DSC).unwrap().unwrap();
        assert_eq!(dsc.source, "hello-strata");
        assert_eq!(dsc.version, "1.0");
        assert_eq!(dsc.files, [(SUM.into(), "hello-strata_1.0.tar.xz".into())]);
        assert_eq!(dsc.file_name(), "hello-strata_1.0.dsc");
        assert_eq!(dsc.unpack_dir(), "hello-strata-1.0");

        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{DSC}- Dashed: yes\n-----BEGIN PGP SIGNATURE-----\n\niQ==\n=abcd\n-----END PGP SIGNATURE-----\n"
        );
        assert_eq!(parse_dsc(&signed).unwrap().unwrap(), dsc);
        assert!(unsigned(&signed).contains("\nDashed: yes\n"));
    }

    #[test]
    fn other_files_are_no_dsc_and_bad_dscs_say_why() {
        assert!(parse_dsc("").is_none());
        assert!(parse_dsc("Package: x\nVersion: 1\n").is_none());
        assert!(parse_dsc("Format: 3.0 (native)\nSource: x\n").is_none());
        let bad = |from: &str, to: &str| parse_dsc(&DSC.replace(from, to)).unwrap().unwrap_err();
        assert!(bad("1348 hello-strata_1.0.tar.xz\nFiles", "1348 ../x\nFiles").contains("../x"));
        assert!(bad("Version: 1.0", "Version: 1 0").contains("Version"));
        assert!(bad("Version: 1.0\n", "").contains("Version"));
        assert!(bad("Source: hello-strata", "Source: Hello/x").contains("Source"));
        assert!(bad(SUM, "abc").contains("not a sha256"));
    }

    #[test]
    fn versions_name_files_and_directories_as_dpkg_does() {
        let dsc = Dsc {
            source: "foo".into(),
            version: "2:1.2-3".into(),
            files: vec![],
        };
        assert_eq!(dsc.file_name(), "foo_1.2-3.dsc");
        assert_eq!(dsc.unpack_dir(), "foo-1.2");
        assert_eq!(without_epoch("1.0+b1"), "1.0+b1");
    }

    #[test]
    fn a_files_input_finds_the_dsc_by_content_and_its_files_by_sum() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let dsc_item = format!("sha256:{}", "a".repeat(64));
        std::fs::write(d.join(&dsc_item), DSC).unwrap();
        std::fs::write(d.join(format!("sha256:{SUM}")), b"\xfd7zXZ\0").unwrap();
        let items = [dsc_item.clone(), format!("sha256:{SUM}")];
        let found = SourcePackage::from_items(d, items.iter()).unwrap();
        assert_eq!(found.dsc.source, "hello-strata");
        assert_eq!(found.dsc_path, d.join(&dsc_item));
        assert_eq!(
            found.files,
            [(
                "hello-strata_1.0.tar.xz".into(),
                d.join(format!("sha256:{SUM}"))
            )]
        );

        let out = tempfile::tempdir().unwrap();
        found.place(out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("hello-strata_1.0.dsc")).unwrap(),
            DSC
        );
        assert!(out.path().join("hello-strata_1.0.tar.xz").is_file());

        let e = SourcePackage::from_items(d, [dsc_item.clone()].iter())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lacks files hello-strata_1.0.dsc lists: hello-strata_1.0.tar.xz"),
            "{e}"
        );
        let e = SourcePackage::from_items(d, [format!("sha256:{SUM}")].iter())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("none of the source input's 1 items is a .dsc"),
            "{e}"
        );
        let e = SourcePackage::from_items(d, ["x".to_owned()].iter())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not named sha256:<hex>"), "{e}");
    }

    #[test]
    fn a_tree_input_has_one_dsc() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let e = SourcePackage::from_tree(d).unwrap_err().to_string();
        assert!(e.contains("no *.dsc"), "{e}");
        std::fs::write(d.join("hello-strata_1.0.dsc"), DSC).unwrap();
        let e = SourcePackage::from_tree(d).unwrap_err().to_string();
        assert!(e.contains("lacks files hello-strata_1.0.dsc lists: hello-strata_1.0.tar.xz"));
        std::fs::write(d.join("hello-strata_1.0.tar.xz"), "").unwrap();
        let found = SourcePackage::from_tree(d).unwrap();
        assert_eq!(found.files[0].1, d.join("hello-strata_1.0.tar.xz"));
        std::fs::write(d.join("other_1.dsc"), DSC).unwrap();
        let e = SourcePackage::from_tree(d).unwrap_err().to_string();
        assert!(
            e.contains("several *.dsc files: hello-strata_1.0.dsc, other_1.dsc"),
            "{e}"
        );
    }
}
