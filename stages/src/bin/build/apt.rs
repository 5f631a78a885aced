//! apt in the throw-away build environment: no services started, the
//! cross architecture added, extra repositories and the extra binary
//! artifacts as sources.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use strata_stage::debian::Stanza;
use strata_stage::{Args, Input, Log, capture};

use crate::arch::Architectures;
use crate::options::{Options, Repository};
use crate::source::{copy_file, is_file_name};

/// Where `extra_binary_artifacts` become an apt repository.
pub const LOCAL_REPOSITORY: &str = "/var/cache/strata/extra-binary-artifacts";

pub const SOURCES_D: &str = "/etc/apt/sources.list.d";

pub const KEYRINGS: &str = "/etc/apt/keyrings";

/// Services must not start while build dependencies install (exit 101 is
/// "action forbidden"); the copy is thrown away, so nothing is restored.
pub const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub fn prepare_apt(
    args: &Args,
    options: &Options,
    arch: &Architectures,
    log: &mut Log,
) -> anyhow::Result<()> {
    if !Path::new(POLICY_RC_D).exists() {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(POLICY_RC_D)
            .and_then(|mut f| f.write_all(b"#!/bin/sh\nexit 101\n"))
            .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
    }
    if arch.cross {
        log.run(Command::new("dpkg").args(["--add-architecture", &arch.host]))?;
    }
    for (i, repo) in options.extra_repositories.iter().enumerate() {
        let n = i + 1;
        let key = match &repo.signing_key {
            Some(text) => {
                let path = format!("{KEYRINGS}/strata-{n}.asc");
                std::fs::create_dir_all(KEYRINGS)
                    .and_then(|()| std::fs::write(&path, ensure_newline(text)))
                    .with_context(|| format!("cannot write {path}"))?;
                Some(path)
            }
            None => None,
        };
        // Credentials go to apt's auth.conf.d in this throw-away build
        // root, never into the sources file, the log or the stage's output.
        let (url, inline) = strata_protocol::split_userinfo(&repo.url);
        let credentials = match (&repo.secrets, inline) {
            (Some(secret), _) => {
                let path = format!("{}/{}", strata_protocol::SECRETS_DIR, secret.name);
                Some(std::fs::read_to_string(&path).with_context(|| {
                    format!("options.extra_repositories[{i}].secrets: cannot read {path}")
                })?)
            }
            (None, inline) => inline,
        };
        if let Some(credentials) = credentials {
            write_auth(n, &url, &credentials)
                .with_context(|| format!("options.extra_repositories[{i}]"))?;
        }
        let plain = Repository {
            url,
            ..repo.clone()
        };
        let text = render_repository(&plain, key.as_deref())
            .with_context(|| format!("options.extra_repositories[{i}]"))?;
        let path = format!("{SOURCES_D}/strata-{n}.sources");
        std::fs::write(&path, &text).with_context(|| format!("cannot write {path}"))?;
        log.say(&format!("{path}:\n{text}"))?;
    }
    if let Some(input) = args.input("extra_binary_artifacts") {
        local_repository(input, log)?;
    }
    Ok(())
}

pub const AUTH_D: &str = "/etc/apt/auth.conf.d";

/// `AUTH_D/strata-N.conf` (0600) giving apt `user:password` for `url`.
fn write_auth(n: usize, url: &str, credentials: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = auth_entry(url, credentials)?;
    std::fs::create_dir_all(AUTH_D).with_context(|| format!("cannot make {AUTH_D}"))?;
    let path = format!("{AUTH_D}/strata-{n}.conf");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {path}"))
}

/// apt's auth.conf entry for `url`; errors never show the credentials.
pub fn auth_entry(url: &str, credentials: &str) -> anyhow::Result<String> {
    let (login, password) = credentials
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("its credentials are not user:password"))?;
    // netrc tokens end at whitespace: one inside would start another.
    if [login, password]
        .iter()
        .any(|v| v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        bail!("its credentials hold whitespace or are empty, which apt's auth.conf cannot carry");
    }
    Ok(format!(
        "machine {}\nlogin {login}\npassword {password}\n",
        url.trim_end_matches('/')
    ))
}

pub fn ensure_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// One deb822 stanza; a suite ending in `/` is a flat repository, which
/// has no components.
pub fn render_repository(repo: &Repository, signed_by: Option<&str>) -> anyhow::Result<String> {
    let mut stanza = Stanza::new()
        .field("Types", "deb")?
        .field("URIs", &repo.url)?
        .field("Suites", &repo.suite)?;
    match (&repo.components, repo.suite.ends_with('/')) {
        (Some(_), true) => bail!(
            "suite {} is flat (ends in /): leave out components",
            repo.suite
        ),
        (None, false) => bail!(
            "suite {} needs components (or end in / for a flat repository)",
            repo.suite
        ),
        (Some(c), false) => stanza = stanza.words("Components", c)?,
        (None, true) => {}
    }
    if let Some(key) = signed_by {
        stanza = stanza.field("Signed-By", key)?;
    }
    Ok(stanza.finish())
}

/// The .deb files of `input` as a trusted flat repository apt can install
/// build dependencies from.
pub fn local_repository(input: &Input, log: &mut Log) -> anyhow::Result<()> {
    let mut debs = Vec::new();
    match input.files() {
        Some(items) => {
            for item in items {
                if !is_file_name(item) {
                    bail!("extra_binary_artifacts item {item:?} is not a file name");
                }
                debs.push((
                    format!("{}.deb", item.replace(':', "-")),
                    input.path.join(item),
                ));
            }
        }
        None => find_debs(&input.path, &mut debs)?,
    }
    let dir = Path::new(LOCAL_REPOSITORY);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {LOCAL_REPOSITORY}"))?;
    let mut count = 0;
    for (name, from) in debs {
        if is_deb(&from)? {
            copy_file(&from, &dir.join(name))?;
            count += 1;
        }
    }
    if count == 0 {
        bail!("extra_binary_artifacts holds no .deb file");
    }
    let packages = capture(
        Command::new("dpkg-scanpackages")
            .args(["--multiversion", "."])
            .current_dir(dir),
    )?;
    std::fs::write(dir.join("Packages"), format!("{}\n", packages.trim()))
        .with_context(|| format!("cannot write {LOCAL_REPOSITORY}/Packages"))?;
    let list = format!("deb [trusted=yes] file:{LOCAL_REPOSITORY} ./\n");
    let path = format!("{SOURCES_D}/strata-extra-binary-artifacts.list");
    std::fs::write(&path, &list).with_context(|| format!("cannot write {path}"))?;
    log.say(&format!("{count} extra binary artifacts: {path}: {list}"))?;
    Ok(())
}

/// `*.deb` anywhere below `dir`, named for the flat directory they go to.
pub fn find_debs(dir: &Path, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let kind = entry.file_type()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_dir() {
            find_debs(&entry.path(), out)?;
        } else if kind.is_file() && name.ends_with(".deb") {
            out.push((format!("{}-{name}", out.len()), entry.path()));
        }
    }
    Ok(())
}

/// A Debian binary package starts as an ar archive whose first member is
/// `debian-binary`.
pub fn is_deb(path: &Path) -> anyhow::Result<bool> {
    let mut head = [0u8; 21];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(head[..n] == *b"!<arch>\ndebian-binary")
}

#[cfg(test)]
mod tests {

    #[test]
    fn credentials_become_an_auth_conf_entry_and_never_an_error_text() {
        assert_eq!(
            auth_entry("https://127.0.0.1/debian/", "bob:s3cret").unwrap(),
            "machine https://127.0.0.1/debian\nlogin bob\npassword s3cret\n"
        );
        for bad in [
            "nocolon-s3cret",
            "bob:s3 cret",
            "bob:s3cret\nmachine x",
            ":s3cret",
        ] {
            let err = auth_entry("https://127.0.0.1/", bad)
                .unwrap_err()
                .to_string();
            assert!(!err.contains("s3"), "{err}");
        }
    }

    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn repositories_render_as_deb822() {
        let repo = |v: Value| -> Repository { serde_json::from_value(v).unwrap() };
        assert_eq!(
            render_repository(
                &repo(json!({"url": "http://127.0.0.1/extra", "suite": "bookworm", "components": ["main", "contrib"]})),
                Some("/etc/apt/keyrings/strata-1.asc")
            )
            .unwrap(),
            "Types: deb\nURIs: http://127.0.0.1/extra\nSuites: bookworm\nComponents: main contrib\nSigned-By: /etc/apt/keyrings/strata-1.asc\n"
        );
        assert_eq!(
            render_repository(
                &repo(json!({"url": "http://127.0.0.1/flat", "suite": "./"})),
                None
            )
            .unwrap(),
            "Types: deb\nURIs: http://127.0.0.1/flat\nSuites: ./\n"
        );
        assert!(
            render_repository(
                &repo(json!({"url": "u", "suite": "./", "components": ["main"]})),
                None
            )
            .is_err()
        );
        assert!(render_repository(&repo(json!({"url": "u", "suite": "bookworm"})), None).is_err());
    }

    #[test]
    fn debs_are_known_by_their_first_member() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a_1_all.deb"), b"!<arch>\ndebian-binary   1").unwrap();
        std::fs::write(d.join("b.deb"), b"!<arch>\nnot-debian").unwrap();
        std::fs::write(d.join("notes.txt"), b"!<arch>\ndebian-binary").unwrap();
        let mut found = Vec::new();
        find_debs(d, &mut found).unwrap();
        found.sort();
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(is_deb(&d.join("sub/a_1_all.deb")).unwrap());
        assert!(!is_deb(&d.join("b.deb")).unwrap());
        // A tree input's .deb files are found by name; the content decides after.
        assert!(!names.iter().any(|n| n.ends_with(".txt")), "{names:?}");
    }
}
