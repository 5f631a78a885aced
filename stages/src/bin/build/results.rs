//! What the build leaves: the .changes and every file it lists (and each
//! listed .dsc's files) copied into the tree, each binary package's fields.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use strata_stage::debian::{deb_fields, parse_deb822, unsigned};

use crate::source::{copy_file, is_file_name, read_dsc};

#[derive(Debug)]
pub struct Results {
    pub changes: String,
    pub buildinfo: Option<String>,
    pub packages: Vec<Value>,
}

/// Copies the .changes and every file it lists into the tree, and reads
/// each binary package's name, version and architecture.
pub fn collect(build_path: &Path, tree: &Path) -> anyhow::Result<Results> {
    let mut changes: Vec<String> = std::fs::read_dir(build_path)
        .with_context(|| format!("cannot list {}", build_path.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".changes"))
        .collect();
    let changes = match changes.len() {
        1 => changes.remove(0),
        n => bail!(
            "dpkg-buildpackage left {n} .changes files in {}, not one",
            build_path.display()
        ),
    };
    let text = std::fs::read_to_string(build_path.join(&changes))
        .with_context(|| format!("cannot read {changes}"))?;
    let mut listed = changes_files(&text).with_context(|| changes.clone())?;
    with_dsc_files(build_path, &mut listed)?;
    let mut packages = Vec::new();
    let mut buildinfo = None;
    for name in std::iter::once(&changes).chain(&listed) {
        let from = build_path.join(name);
        copy_file(&from, &tree.join(name))?;
        if name.ends_with(".deb") || name.ends_with(".udeb") {
            packages.push(package_fields(&from, name)?);
        }
        if name.ends_with(".buildinfo") {
            buildinfo = Some(name.clone());
        }
    }
    Ok(Results {
        changes,
        buildinfo,
        packages,
    })
}

/// Adds to `listed` every file a listed .dsc names. A .changes leaves out
/// the upstream tarball (and its signature) of a revision after the first,
/// yet a .dsc is of no use without all its files: lintian skips it, and
/// dpkg-source cannot unpack it. The build placed them all in `build_path`.
pub fn with_dsc_files(build_path: &Path, listed: &mut Vec<String>) -> anyhow::Result<()> {
    let mut more = Vec::new();
    for name in listed.iter().filter(|n| n.ends_with(".dsc")) {
        let dsc = read_dsc(&build_path.join(name))?
            .ok_or_else(|| {
                anyhow!("{name} is not a .dsc (no Format:, Source: and Checksums-Sha256:)")
            })?
            .map_err(|e| anyhow!("{name}: {e}"))?;
        for (_, file) in dsc.files {
            if !build_path.join(&file).is_file() {
                bail!(
                    "{name} lists {file}, which is not in {}",
                    build_path.display()
                );
            }
            more.push(file);
        }
    }
    listed.extend(more);
    listed.sort();
    listed.dedup();
    Ok(())
}

/// The files a .changes lists, by name, sorted.
pub fn changes_files(text: &str) -> anyhow::Result<Vec<String>> {
    let paragraph = parse_deb822(&unsigned(text))
        .into_iter()
        .find(|p| p.contains_key("checksums-sha256") || p.contains_key("files"))
        .context("no Checksums-Sha256: or Files: field")?;
    let field = paragraph
        .get("checksums-sha256")
        .or_else(|| paragraph.get("files"))
        .expect("found above");
    let mut names = Vec::new();
    for line in field.lines().filter(|l| !l.trim().is_empty()) {
        let name = line
            .split_whitespace()
            .last()
            .filter(|n| is_file_name(n))
            .ok_or_else(|| anyhow!("the file line {line:?} names no file"))?;
        names.push(name.to_owned());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

pub fn package_fields(path: &Path, name: &str) -> anyhow::Result<Value> {
    let fields = deb_fields(path, &["Package", "Version", "Architecture"])?;
    let field = |k: &str| {
        fields
            .get(k)
            .cloned()
            .ok_or_else(|| anyhow!("{name} has no {k} field"))
    };
    Ok(json!({
        "name": field("package")?,
        "version": field("version")?,
        "architecture": field("architecture")?,
        "filename": name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tests::{DSC, SUM};

    #[test]
    fn the_changes_file_lists_what_to_keep() {
        let changes = "Format: 1.8\nSource: hello-strata\nChecksums-Sha256:\n abc 10 hello-strata_1.0_amd64.deb\n def 20 hello-strata_1.0_amd64.buildinfo\nFiles:\n 1 10 misc optional hello-strata_1.0_amd64.deb\n";
        assert_eq!(
            changes_files(changes).unwrap(),
            [
                "hello-strata_1.0_amd64.buildinfo",
                "hello-strata_1.0_amd64.deb"
            ]
        );
        assert!(changes_files("Checksums-Sha256:\n abc 10 ../x\n").is_err());
        assert!(changes_files("Format: 1.8\n").is_err());
    }

    #[test]
    fn a_listed_dsc_brings_every_file_it_lists() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A revision after the first: the .changes leaves out the upstream
        // tarball and its signature, which the .dsc lists.
        let dsc = DSC.replace(
            &format!(" {SUM} 1348 hello-strata_1.0.tar.xz\n"),
            &format!(
                " {SUM} 1348 h_1.0.orig.tar.gz\n {SUM} 1 h_1.0.orig.tar.gz.asc\n {SUM} 2 h_1.0-3.debian.tar.xz\n"
            ),
        );
        std::fs::write(d.join("h_1.0-3.dsc"), &dsc).unwrap();
        for name in ["h_1.0-3.debian.tar.xz", "h_1.0.orig.tar.gz"] {
            std::fs::write(d.join(name), "").unwrap();
        }
        let mut listed = vec!["h_1.0-3.dsc".to_owned(), "h_1.0-3.debian.tar.xz".to_owned()];
        let e = with_dsc_files(d, &mut listed).unwrap_err().to_string();
        assert!(
            e.contains("h_1.0-3.dsc lists h_1.0.orig.tar.gz.asc, which is not in"),
            "{e}"
        );
        std::fs::write(d.join("h_1.0.orig.tar.gz.asc"), "").unwrap();
        with_dsc_files(d, &mut listed).unwrap();
        assert_eq!(
            listed,
            [
                "h_1.0-3.debian.tar.xz",
                "h_1.0-3.dsc",
                "h_1.0.orig.tar.gz",
                "h_1.0.orig.tar.gz.asc"
            ]
        );
        // Without a .dsc, nothing is added.
        let mut binaries = vec!["h_1.0-3_amd64.deb".to_owned()];
        with_dsc_files(d, &mut binaries).unwrap();
        assert_eq!(binaries, ["h_1.0-3_amd64.deb"]);
    }
}
