//! What a task hands back: artifacts as debusine names and describes them,
//! written beside the exported trees as `artifacts.json`
//! (schema: schemas/artifacts.json).
//!
//! ```text
//! DIR/artifacts.json   {"task", "work_request_id", "result", "environment", "error",
//!                       "artifacts": [{"category", "data", "files": [paths under DIR]}]}
//! DIR/tarball/         SystemBootstrap  debian:system-tarball
//! DIR/build/           PackageBuild     debian:binary-package (one per .deb),
//!                                       debian:binary-packages (per architecture),
//!                                       debian:upload (the .changes and its files),
//!                                       debian:package-build-log
//! DIR/lintian/         Lintian          debian:lintian (analysis.json, lintian.txt)
//! ```

use crate::store::untrusted::{self, UntrustedError};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// Why artifacts could not be described.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A tool or a file said something unexpected.
    #[error("{0}")]
    Bad(String),
    /// A file a stage left or named was refused.
    #[error("{what}: {source}")]
    Untrusted {
        /// Which stage's output, and what it was.
        what: String,
        /// Why.
        source: UntrustedError,
    },
}

/// Metadata names and output files come from stages: a name must be a
/// plain file name, and the file `DIR/sub/name` a regular file reached
/// without following links. `what` says where the name came from.
fn checked_file(out: &Path, sub: &str, name: &str, what: &str) -> Result<String, ArtifactError> {
    let untrusted = |source| ArtifactError::Untrusted {
        what: what.to_owned(),
        source,
    };
    untrusted::plain_name(name).map_err(untrusted)?;
    let rel = format!("{sub}/{name}");
    match untrusted::open_regular(out, &rel).map_err(untrusted)? {
        Some(_) => Ok(rel),
        None => Err(ArtifactError::Bad(format!(
            "{} is missing from {what}",
            out.join(&rel).display()
        ))),
    }
}

/// One artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// `debian:…`.
    pub category: &'static str,
    /// Its data, as debusine's artifact data models have it.
    pub data: Value,
    /// Its files, relative to the output directory.
    pub files: Vec<String>,
}

impl Artifact {
    /// As artifacts.json has it.
    pub fn to_json(&self) -> Value {
        json!({"category": self.category, "data": self.data, "files": self.files})
    }
}

/// The first paragraph of a deb822 document (a signed one's signed part):
/// field → value, continuation lines joined with `\n`.
pub fn deb822(text: &str) -> Vec<(String, String)> {
    let mut lines = text.lines().peekable();
    if lines
        .peek()
        .is_some_and(|l| l.starts_with("-----BEGIN PGP SIGNED MESSAGE"))
    {
        // The armour header lines end at the first blank line.
        for l in lines.by_ref() {
            if l.trim().is_empty() {
                break;
            }
        }
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with("-----BEGIN PGP SIGNATURE") {
            break;
        }
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                if !v.is_empty() {
                    v.push('\n');
                }
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    fields
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The files a .dsc or .changes lists, with their SHA-256 when it gives
/// one (Checksums-Sha256, else Files).
pub fn listed_files(text: &str) -> Vec<(String, Option<String>)> {
    let fields = deb822(text);
    if let Some(list) = field(&fields, "Checksums-Sha256") {
        return list
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let sum = parts.next()?;
                let name = parts.nth(1)?;
                Some((name.to_owned(), Some(sum.to_lowercase())))
            })
            .collect();
    }
    field(&fields, "Files")
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(|n| (n.to_owned(), None)))
        .collect()
}

fn to_object(fields: &[(String, String)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// debian:system-tarball from the tarball export and the bootstrap's metadata.
pub fn system_tarball(
    out: &Path,
    system_meta: &Value,
    tar_meta: &Value,
) -> Result<Vec<Artifact>, ArtifactError> {
    let filename = tar_meta["filename"]
        .as_str()
        .ok_or_else(|| ArtifactError::Bad("the tar stage reported no filename".into()))?;
    let file = checked_file(out, "tarball", filename, "the tar stage's output")?;
    let mut data = system_data(system_meta);
    data["filename"] = json!(filename);
    data["size"] = tar_meta["size"].clone();
    data["sha256"] = tar_meta["sha256"].clone();
    Ok(vec![Artifact {
        category: "debian:system-tarball",
        data,
        files: vec![file],
    }])
}

/// debian:system-image from the image export (`out/EXPORT/FILENAME`), the
/// bootstrap's metadata and how the image is laid out and booted.
pub fn system_image(
    out: &Path,
    export: &str,
    filename: &str,
    system_meta: &Value,
    image: &ImageFacts<'_>,
) -> Result<Vec<Artifact>, ArtifactError> {
    let file = checked_file(out, export, filename, "the image pipeline's output")?;
    let mut data = system_data(system_meta);
    data["filename"] = json!(filename);
    data["image_format"] = json!(image.format);
    data["filesystem"] = json!(image.filesystem);
    data["size"] = json!(image.size);
    data["boot_mechanism"] = json!(image.boot_mechanism);
    Ok(vec![Artifact {
        category: "debian:system-image",
        data,
        files: vec![file],
    }])
}

/// What a system image's artifact says of the image itself.
#[derive(Debug, Clone)]
pub struct ImageFacts<'a> {
    /// raw or qcow2.
    pub format: &'a str,
    /// The root partition's filesystem.
    pub filesystem: &'a str,
    /// The disk's size in bytes (as a VM sees it).
    pub size: u64,
    /// How it boots: efi.
    pub boot_mechanism: &'a str,
}

/// What debian:system-tarball and debian:system-image say of the system,
/// from the bootstrap stage's metadata.
fn system_data(system_meta: &Value) -> Value {
    let os = &system_meta["os-release"];
    let pkglist: Map<String, Value> = system_meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["version"].clone())))
        .collect();
    // A system boots by itself when something provides /sbin/init.
    let with_init = ["init", "systemd-sysv", "sysvinit-core", "runit-init"]
        .iter()
        .any(|p| pkglist.contains_key(*p));
    json!({
        "vendor": os["ID"],
        "codename": os.get("VERSION_CODENAME").cloned().unwrap_or_else(|| system_meta["suites"][0].clone()),
        "architecture": system_meta["architecture"],
        "variant": system_meta["variant"],
        "components": system_meta["components"],
        "mirror": system_meta["mirrors"][0],
        "pkglist": pkglist,
        "with_init": with_init,
    })
}

/// The artifacts of a build stage's export (`out/build`) and its metadata.
pub fn package_build(out: &Path, meta: &Value) -> Result<Vec<Artifact>, ArtifactError> {
    let bad = |m: String| ArtifactError::Bad(m);
    let source = meta["source"]
        .as_str()
        .ok_or_else(|| bad("the build stage reported no source".into()))?;
    let version = meta["version"].as_str().unwrap_or_default();
    let source_version = meta["source_version"].as_str().unwrap_or(version);
    let mut artifacts = Vec::new();
    let mut by_arch: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pkg in meta["binary_packages"].as_array().into_iter().flatten() {
        let filename = pkg["filename"]
            .as_str()
            .ok_or_else(|| bad(format!("binary package without a filename: {pkg}")))?;
        // dpkg-deb opens it by path: checked first (the stage has ended, so
        // nothing of it can swap the file afterwards).
        let deb = out.join(checked_file(
            out,
            "build",
            filename,
            "the build stage's output",
        )?);
        let fields = deb822(&run(Command::new("dpkg-deb").arg("-f").arg(&deb))?);
        let control_files = control_files(&deb)?;
        let arch = field(&fields, "Architecture").unwrap_or("").to_owned();
        by_arch
            .entry(arch)
            .or_default()
            .push(field(&fields, "Package").unwrap_or("").to_owned());
        artifacts.push(Artifact {
            category: "debian:binary-package",
            data: json!({
                "srcpkg_name": source,
                "srcpkg_version": source_version,
                "deb_fields": to_object(&fields),
                "deb_control_files": control_files,
            }),
            files: vec![format!("build/{filename}")],
        });
    }
    for (arch, packages) in by_arch {
        let files: Vec<String> = meta["binary_packages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                packages.iter().any(|n| p["name"] == *n) && p["architecture"] == arch.as_str()
            })
            .filter_map(|p| p["filename"].as_str().map(|f| format!("build/{f}")))
            .collect();
        artifacts.push(Artifact {
            category: "debian:binary-packages",
            data: json!({"srcpkg_name": source, "srcpkg_version": source_version, "version": version,
                         "architecture": arch, "packages": packages}),
            files,
        });
    }
    if let Some(changes) = meta["changes"].as_str() {
        let what = "the .changes the build stage named";
        let untrusted = |source| ArtifactError::Untrusted {
            what: what.to_owned(),
            source,
        };
        let rel = format!(
            "build/{}",
            untrusted::plain_name(changes).map_err(untrusted)?
        );
        let text = untrusted::read_capped(out, &rel, untrusted::READ_CAP)
            .map_err(untrusted)?
            .ok_or_else(|| {
                bad(format!(
                    "{} is missing from the build's output",
                    out.join(&rel).display()
                ))
            })?;
        let text = String::from_utf8_lossy(&text);
        let mut files = vec![rel];
        for (name, _) in listed_files(&text) {
            untrusted::plain_name(&name).map_err(|source| ArtifactError::Untrusted {
                what: format!("a file {changes} lists"),
                source,
            })?;
            files.push(format!("build/{name}"));
        }
        artifacts.push(Artifact {
            category: "debian:upload",
            data: json!({"type": "dpkg", "changes_fields": to_object(&deb822(&text))}),
            files,
        });
    }
    if let Some(log) = meta["build_log"].as_str() {
        untrusted::plain_name(log).map_err(|source| ArtifactError::Untrusted {
            what: "the build stage's build_log".into(),
            source,
        })?;
        artifacts.push(Artifact {
            category: "debian:package-build-log",
            data: json!({"source": source, "version": version, "filename": log}),
            files: vec![format!("build/{log}")],
        });
    }
    for a in &artifacts {
        for f in &a.files {
            let (sub, name) = f.split_once('/').expect("every name above is build/NAME");
            checked_file(out, sub, name, "the build stage's output")?;
        }
    }
    Ok(artifacts)
}

/// Lintian's analysis of a large package runs to megabytes (a tag per
/// file): a cap of its own, still bounded.
const ANALYSIS_CAP: u64 = 64 << 20;

/// debian:lintian from the lintian export.
pub fn lintian(out: &Path) -> Result<Vec<Artifact>, ArtifactError> {
    let text = untrusted::read_capped(out, "lintian/analysis.json", ANALYSIS_CAP)
        .map_err(|source| ArtifactError::Untrusted {
            what: "the lintian stage's output".into(),
            source,
        })?
        .ok_or_else(|| {
            ArtifactError::Bad(format!(
                "{} is missing",
                out.join("lintian/analysis.json").display()
            ))
        })?;
    let analysis: Value = serde_json::from_slice(&text)
        .map_err(|e| ArtifactError::Bad(format!("lintian/analysis.json is not JSON: {e}")))?;
    Ok(vec![Artifact {
        category: "debian:lintian",
        data: json!({"summary": analysis["summary"]}),
        files: vec!["lintian/analysis.json".into(), "lintian/lintian.txt".into()],
    }])
}

/// The member names of a .deb's control archive.
fn control_files(deb: &Path) -> Result<Vec<String>, ArtifactError> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--ctrl-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let tar_in = dpkg.stdout.take().expect("piped");
    let listing = run(Command::new("tar").arg("-t").stdin(tar_in))?;
    let status = dpkg.wait()?;
    if !status.success() {
        return Err(ArtifactError::Bad(format!(
            "dpkg-deb --ctrl-tarfile {} failed: {status}",
            deb.display()
        )));
    }
    let mut names: Vec<String> = listing
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .filter(|l| !l.is_empty() && !l.ends_with('/'))
        .collect();
    names.sort();
    Ok(names)
}

fn run(cmd: &mut Command) -> Result<String, ArtifactError> {
    let out = cmd.stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        return Err(ArtifactError::Bad(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_changes_parse() {
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 1.8\nSource: x\nChecksums-Sha256:\n aa 1 x_1.dsc\n BB 2 x_1_amd64.deb\n\n-----BEGIN PGP SIGNATURE-----\nxx\n";
        let f = deb822(text);
        assert_eq!(field(&f, "source"), Some("x"));
        assert_eq!(
            listed_files(text),
            [
                ("x_1.dsc".to_owned(), Some("aa".to_owned())),
                ("x_1_amd64.deb".to_owned(), Some("bb".to_owned()))
            ]
        );
    }

    /// Names a build stage reports are plain names of regular files in its
    /// output: `../x.changes`, a linked .changes, a .changes listing a path
    /// and a linked tarball are refused, each naming what and why.
    #[test]
    fn stage_named_files_are_plain_regular_files_inside_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("build")).unwrap();
        std::fs::create_dir_all(out.join("tarball")).unwrap();
        let changes = "Format: 1.8\nSource: x\nFiles:\n aa 1 main optional x_1.dsc\n";
        std::fs::write(dir.path().join("x.changes"), changes).unwrap();
        std::fs::write(dir.path().join("secret"), "Source: secret\n").unwrap();
        std::fs::write(out.join("build/x_1.dsc"), "").unwrap();
        std::fs::write(out.join("build/x_1.changes"), changes).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), out.join("build/linked.changes"))
            .unwrap();
        std::fs::write(
            out.join("build/escape.changes"),
            "Source: x\nFiles:\n aa 1 main optional ../../secret\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), out.join("tarball/t.tar")).unwrap();

        let build =
            |changes: &str| package_build(&out, &json!({"source": "x", "changes": changes}));
        let ok = build("x_1.changes").unwrap();
        assert_eq!(ok[0].files, ["build/x_1.changes", "build/x_1.dsc"]);
        for (name, want) in [
            ("../x.changes", "`../x.changes` is not a plain file name"),
            ("/etc/passwd", "`/etc/passwd` is not a plain file name"),
            ("linked.changes", "build/linked.changes is a symbolic link"),
            ("escape.changes", "`../../secret` is not a plain file name"),
        ] {
            let err = build(name).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(!err.contains("secret\n"), "{name}: {err}");
        }
        let err = build("escape.changes").unwrap_err().to_string();
        assert!(err.starts_with("a file escape.changes lists"), "{err}");
        let err = package_build(&out, &json!({"source": "x", "build_log": "../log"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("build_log"), "{err}");
        let err = system_tarball(&out, &json!({}), &json!({"filename": "t.tar"}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the tar stage's output: tarball/t.tar is a symbolic link, which strata does not follow"
        );
    }
}
