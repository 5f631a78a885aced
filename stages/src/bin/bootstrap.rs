//! `bootstrap`: creates a Debian system in the (empty) tree with the build
//! root's mmdebstrap. Its options are debusine's SystemBootstrap task_data:
//!
//! ```json
//! {"bootstrap_options": {"architecture": "amd64", "variant": "minbase", "extra_packages": ["hello"]},
//!  "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}],
//!  "customization_script": "echo hi > /etc/motd"}
//! ```
//!
//! ```text
//!   repositories ─┬─ mirror?      else the build root's apt sources (first Debian mirror)
//!                 ├─ components?  else MIRROR/dists/SUITE/Release (apt-helper)
//!                 └─ keyring?     file:///usr/share/keyrings/… or downloaded; sha256 checked
//!        │
//!        ├──> /tmp/strata-bootstrap-PID/strata.sources   what apt uses while bootstrapping
//!        └──> /tmp/strata-bootstrap-PID/debian.sources   what the new system keeps
//!
//!   mmdebstrap --mode=root ... SUITE /run/strata/tree strata.sources
//!        customize hooks: debian.sources replaces 0000strata.sources,
//!                         keyrings installed, customization_script run in the chroot
//!        output streamed to the log and kept to explain a failure
//!
//!   then, beneath the tree: no /etc/hostname, an empty /etc/resolv.conf,
//!   no apt lists or caches; metadata: packages, os-release, what was used
//! ```
//!
//! On failure the tree is emptied: mmdebstrap leaves half a system behind.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, anyhow, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use strata_stage::debian::{self, AptSource};
use strata_stage::{Args, Error, Failure, Root, run_tool, write_meta};

/// Where the build root's apt keeps the Debian archive's keys.
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Where an installed keyring goes in the new system.
const INSTALLED_KEYRINGS: &str = "/usr/local/share/keyrings";
/// The sources file mmdebstrap is given; it copies it to 0000 + this name.
const BOOTSTRAP_SOURCES: &str = "strata.sources";
/// The sources file the new system keeps.
const FINAL_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const SCRIPT_IN_CHROOT: &str = "/tmp/strata-customization-script";
const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    bootstrap_options: BootstrapOptions,
    bootstrap_repositories: Vec<Repository>,
    #[serde(default)]
    customization_script: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapOptions {
    architecture: String,
    #[serde(default = "minbase")]
    variant: String,
    #[serde(default)]
    extra_packages: Vec<String>,
    #[serde(default = "yes")]
    use_signed_by: bool,
}

fn minbase() -> String {
    "minbase".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Repository {
    #[serde(default = "deb")]
    types: Vec<String>,
    #[serde(default)]
    mirror: Option<String>,
    suite: String,
    #[serde(default)]
    components: Option<Vec<String>>,
    #[serde(default)]
    check_signature_with: Check,
    #[serde(default)]
    keyring_package: Option<String>,
    #[serde(default)]
    keyring: Option<KeyringOption>,
}

fn deb() -> Vec<String> {
    vec!["deb".into()]
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Check {
    #[default]
    System,
    External,
    #[serde(rename = "no-check")]
    Unchecked,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringOption {
    url: String,
    #[serde(default)]
    sha256sum: Option<String>,
    #[serde(default)]
    install: bool,
}

/// A repository with everything decided: what both sources files say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Repo {
    types: Vec<String>,
    mirror: String,
    suite: String,
    /// Empty for a flat repository (suite ending in `/`).
    components: Vec<String>,
    check: Check,
    /// The keyring apt checks it with while bootstrapping (a build root path).
    signed_by: Option<String>,
    /// The keyring the new system's apt checks it with.
    final_signed_by: Option<String>,
}

/// A keyring ready to use: where it is in the build root, what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Keyring {
    path: PathBuf,
    name: String,
    install: bool,
}

impl Keyring {
    fn installed_path(&self) -> String {
        format!("{INSTALLED_KEYRINGS}/{}", self.name)
    }
}

/// Everything the mmdebstrap command line is made of.
#[derive(Debug)]
struct Plan<'a> {
    variant: &'a str,
    architecture: &'a str,
    include: Vec<String>,
    /// A folder of keyrings replacing apt's trusted.gpg.d while bootstrapping.
    keyring_dir: Option<PathBuf>,
    hooks: Vec<String>,
    suite: &'a str,
    tree: &'a Path,
    sources: PathBuf,
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let work = WorkDir::create()?;
    let host = debian::read_apt_sources(Path::new("/etc/apt"));
    let use_signed_by = options.bootstrap_options.use_signed_by;

    let mut repos = Vec::new();
    let mut keyrings = Vec::new();
    let mut trusted = Vec::new();
    for (i, r) in options.bootstrap_repositories.iter().enumerate() {
        let keyring = r
            .keyring
            .as_ref()
            .map(|k| fetch_keyring(k, &work.path.join(format!("keyring-{i}"))))
            .transpose()?;
        let repo = resolve(r, i, &host, keyring.as_ref(), use_signed_by, &work.path)?;
        if r.check_signature_with == Check::External {
            trusted.extend(keyring.clone());
        }
        keyrings.extend(keyring);
        repos.push(repo);
    }

    fs_write(
        &work.path.join(BOOTSTRAP_SOURCES),
        render_sources(&repos, false),
    )?;
    fs_write(
        &work.path.join("debian.sources"),
        render_sources(&repos, true),
    )?;
    let script = match &options.customization_script {
        Some(text) => {
            let path = work.path.join("customize.sh");
            fs_write(&path, text.clone())?;
            Some(path)
        }
        None => None,
    };
    // Without Signed-By, apt only trusts its keyring folder; a folder (not a
    // file) lets several repositories' keyrings in at once.
    let keyring_dir = if !use_signed_by && !trusted.is_empty() {
        Some(trusted_dir(&work.path.join("trusted.gpg.d"), &trusted)?)
    } else {
        None
    };

    let bo = &options.bootstrap_options;
    let mut include = bo.extra_packages.clone();
    for r in &options.bootstrap_repositories {
        include.extend(r.keyring_package.clone());
    }
    let plan = Plan {
        variant: &bo.variant,
        architecture: &bo.architecture,
        include: dedup(include),
        keyring_dir,
        hooks: customize_hooks(&work.path, &keyrings, script.as_deref()),
        suite: &repos[0].suite,
        tree: &args.tree,
        sources: work.path.join(BOOTSTRAP_SOURCES),
    };
    let argv = mmdebstrap_argv(&plan);
    println!("running {}", argv.join(" "));

    let finished = run_captured(&argv).and_then(|(status, output)| {
        if status.success() {
            Ok(())
        } else {
            Err(anyhow!(explain_failure(&output, status.code(), &repos)))
        }
    });
    let finished = finished.and_then(|()| tidy(args, &repos));
    if let Err(e) = finished {
        wipe(&args.tree);
        return Err(e);
    }

    let tree = Root::tree(args)?;
    let packages = debian::installed_packages(&args.tree)?;
    let os_release = debian::read_os_release(&tree)?;
    let components: Vec<String> = dedup(repos.iter().flat_map(|r| r.components.clone()).collect());
    println!(
        "bootstrapped {} ({} packages)",
        os_release
            .get("PRETTY_NAME")
            .map_or("a system", String::as_str),
        packages.len()
    );
    write_meta(
        args,
        &json!({
            "packages": packages,
            "os-release": os_release,
            "architecture": bo.architecture,
            "variant": bo.variant,
            "suites": repos.iter().map(|r| &r.suite).collect::<Vec<_>>(),
            "mirrors": repos.iter().map(|r| &r.mirror).collect::<Vec<_>>(),
            "components": components,
        }),
    )?;
    Ok(())
}

/// A scratch folder in the sandbox's private /tmp, removed when the stage
/// ends. Sticky and writable by all, like /tmp: apt downloads and reads
/// keyrings as its `_apt` user.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("strata-bootstrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path)
            .with_context(|| format!("cannot create the scratch folder {}", path.display()))?;
        rustix::fs::chmod(&path, Mode::from_raw_mode(0o1777))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn fs_write(path: &Path, text: String) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// Decides a repository's mirror, components and keyrings.
fn resolve(
    r: &Repository,
    index: usize,
    host: &[AptSource],
    keyring: Option<&Keyring>,
    use_signed_by: bool,
    work: &Path,
) -> anyhow::Result<Repo> {
    let (mirror, host_keyring) = match &r.mirror {
        Some(m) => {
            let m = m.trim_end_matches('/').to_owned();
            let k = debian::signed_by_for(host, &m);
            (m, k)
        }
        None => debian::default_mirror(host).ok_or_else(|| {
            anyhow!(
                "bootstrap_repositories[{index}] has no mirror and the build root's apt sources \
                 (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list and *.sources) name no \
                 Debian mirror; give one with \"mirror\""
            )
        })?,
    };
    let components = match &r.components {
        _ if is_flat(&r.suite) => Vec::new(),
        Some(c) => c.clone(),
        None => suite_components(&mirror, &r.suite, &work.join(format!("Release-{index}")))?,
    };
    let (signed_by, final_signed_by) = match (use_signed_by, r.check_signature_with) {
        (false, _) | (_, Check::Unchecked) => (None, None),
        (true, Check::System) => {
            let k = host_keyring.or_else(|| {
                Path::new(DEBIAN_KEYRING)
                    .exists()
                    .then(|| DEBIAN_KEYRING.to_owned())
            });
            (k.clone(), k)
        }
        (true, Check::External) => {
            let k = keyring.ok_or_else(|| {
                anyhow!(
                    "bootstrap_repositories[{index}]: check_signature_with external needs a keyring"
                )
            })?;
            let here = k.path.display().to_string();
            let there = if k.install {
                k.installed_path()
            } else {
                here.clone()
            };
            (Some(here), Some(there))
        }
    };
    Ok(Repo {
        types: r.types.clone(),
        mirror,
        suite: r.suite.clone(),
        components,
        check: r.check_signature_with,
        signed_by,
        final_signed_by,
    })
}

fn is_flat(suite: &str) -> bool {
    suite.ends_with('/')
}

/// The components a suite's Release file lists, fetched with apt-helper
/// (which knows the build root's proxies and mirror methods).
fn suite_components(mirror: &str, suite: &str, dest: &Path) -> anyhow::Result<Vec<String>> {
    let mut last = None;
    for file in ["Release", "InRelease"] {
        let url = format!("{mirror}/dists/{suite}/{file}");
        match download(&url, dest) {
            Ok(()) => {
                let text = std::fs::read_to_string(dest)
                    .with_context(|| format!("cannot read {} (from {url})", dest.display()))?;
                return debian::release_components(&text).ok_or_else(|| {
                    anyhow!("{url} lists no Components; give the repository's components")
                });
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("one download was tried");
    if e.to_string().contains("404") {
        bail!(
            "suite {suite} not found at {mirror} (dists/{suite}/Release and InRelease: 404 Not Found)"
        );
    }
    Err(anyhow!(e).context(format!(
        "cannot fetch the Release file of suite {suite} from {mirror} to find its components \
         (give components to skip this)"
    )))
}

fn download(url: &str, dest: &Path) -> Result<(), Failure> {
    run_tool(
        Command::new(APT_HELPER)
            .args(["download-file", url])
            .arg(dest),
    )
}

/// Finds (file://) or downloads a keyring and checks its sha256.
fn fetch_keyring(k: &KeyringOption, dir: &Path) -> anyhow::Result<Keyring> {
    let path = if let Some(path) = k.url.strip_prefix("file://") {
        PathBuf::from(path)
    } else {
        // Beside `dir`, in the scratch folder, where apt's user may write.
        let dest = dir.with_extension("download");
        download(&k.url, &dest)
            .with_context(|| format!("cannot download the keyring {}", k.url))?;
        dest
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the keyring {} ({})", k.url, path.display()))?;
    if let Some(expected) = &k.sha256sum {
        let actual = hex(&Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected) {
            bail!(
                "keyring {} has sha256 {actual}, but the manifest expects {expected}",
                k.url
            );
        }
    }
    let name = keyring_name(&k.url, &bytes);
    // apt reads a keyring by its extension; a downloaded one gets its name.
    let path = if k.url.starts_with("file://") {
        path
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let named = dir.join(&name);
        std::fs::rename(&path, &named)
            .with_context(|| format!("cannot rename {}", path.display()))?;
        named
    };
    Ok(Keyring {
        path,
        name,
        install: k.install,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A plain file name for a keyring, ending in `.asc` (armored) or `.gpg`
/// as apt needs: the URL's last component where it is one.
fn keyring_name(url: &str, bytes: &[u8]) -> String {
    let last = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    if clean.ends_with(".gpg") || clean.ends_with(".asc") {
        return clean.to_owned();
    }
    let stem = if clean.is_empty() { "keyring" } else { clean };
    let armored = bytes.starts_with(b"-----BEGIN PGP");
    format!("{stem}.{}", if armored { "asc" } else { "gpg" })
}

/// A folder holding the external keyrings and the build root's own
/// trusted.gpg.d keys (so repositories checked by the system still pass).
fn trusted_dir(dir: &Path, keyrings: &[Keyring]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let system: Vec<PathBuf> = std::fs::read_dir("/etc/apt/trusted.gpg.d")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let external = keyrings.iter().map(|k| k.path.clone());
    for (i, src) in system.into_iter().chain(external).enumerate() {
        let Some(name) = src.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !(name.ends_with(".gpg") || name.ends_with(".asc")) {
            continue;
        }
        let dest = dir.join(format!("{i:04}-{name}"));
        std::fs::copy(&src, &dest)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    }
    Ok(dir.to_owned())
}

/// The deb822 sources: for bootstrapping (`final_ == false`, keyrings as
/// the build root has them) or for the new system to keep.
fn render_sources(repos: &[Repo], final_: bool) -> String {
    let stanzas: Vec<String> = repos
        .iter()
        .map(|r| {
            let mut s = format!(
                "Types: {}\nURIs: {}\nSuites: {}\n",
                r.types.join(" "),
                r.mirror,
                r.suite
            );
            if !r.components.is_empty() {
                s.push_str(&format!("Components: {}\n", r.components.join(" ")));
            }
            let signed_by = if final_ {
                &r.final_signed_by
            } else {
                &r.signed_by
            };
            if let Some(k) = signed_by {
                s.push_str(&format!("Signed-By: {k}\n"));
            }
            if r.check == Check::Unchecked {
                s.push_str("Trusted: yes\n");
            }
            s
        })
        .collect();
    stanzas.join("\n")
}

/// mmdebstrap's customize hooks, in order: the system's own sources file
/// replaces the bootstrap one, keyrings are installed, then the user's
/// script runs inside the new system and is removed whatever it did.
/// `upload` writes through mmdebstrap's chroot-aware path resolution.
fn customize_hooks(work: &Path, keyrings: &[Keyring], script: Option<&Path>) -> Vec<String> {
    let mut hooks = vec![
        format!(
            "upload {} {FINAL_SOURCES}",
            work.join("debian.sources").display()
        ),
        format!("rm -f \"$1/etc/apt/sources.list.d/0000{BOOTSTRAP_SOURCES}\""),
    ];
    let installed: Vec<&Keyring> = keyrings.iter().filter(|k| k.install).collect();
    if !installed.is_empty() {
        hooks.push(format!("mkdir -p \"$1{INSTALLED_KEYRINGS}\""));
    }
    for k in installed {
        hooks.push(format!(
            "upload {} {}",
            k.path.display(),
            k.installed_path()
        ));
    }
    if let Some(script) = script {
        hooks.push(format!("upload {} {SCRIPT_IN_CHROOT}", script.display()));
        hooks.push(format!(
            "rc=0; chroot \"$1\" sh {SCRIPT_IN_CHROOT} || rc=$?; rm -f \"$1{SCRIPT_IN_CHROOT}\"; \
             if [ \"$rc\" -ne 0 ]; then echo \"E: customization_script failed (exit $rc)\" >&2; exit \"$rc\"; fi"
        ));
    }
    hooks
}

fn mmdebstrap_argv(plan: &Plan) -> Vec<String> {
    let mut argv = vec![
        "mmdebstrap".to_owned(),
        "--mode=root".to_owned(),
        format!("--variant={}", plan.variant),
        format!("--architectures={}", plan.architecture),
    ];
    if !plan.include.is_empty() {
        argv.push(format!("--include={}", plan.include.join(",")));
    }
    if let Some(dir) = &plan.keyring_dir {
        argv.push(format!("--keyring={}", dir.display()));
    }
    for hook in &plan.hooks {
        argv.push(format!("--customize-hook={hook}"));
    }
    argv.push(plan.suite.to_owned());
    argv.push(plan.tree.display().to_string());
    argv.push(plan.sources.display().to_string());
    argv
}

/// Runs `argv` with stdout and stderr into one pipe, copied to our stdout
/// (the stage's log) as it comes and kept to explain a failure.
fn run_captured(argv: &[String]) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let (mut reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(writer.try_clone().context("cannot duplicate a pipe")?)
        .stderr(writer);
    let mut child = cmd.spawn().map_err(|e| Failure::spawn(&argv[0], e))?;
    // The Command holds write ends of the pipe; with them open, the read
    // below would never see the end.
    drop(cmd);
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 1 << 14];
    let mut out = std::io::stdout().lock();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read mmdebstrap's output"),
        };
        // The log is a convenience: a closed stdout must not stop the build.
        let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
        kept.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().context("cannot wait for mmdebstrap")?;
    Ok((status, String::from_utf8_lossy(&kept).into_owned()))
}

/// What went wrong, from mmdebstrap's output: the culprit first (a package,
/// a suite, the script), then the last of apt's E:/W: lines.
fn explain_failure(output: &str, code: Option<i32>, repos: &[Repo]) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    let where_ = repos
        .iter()
        .map(|r| format!("{} ({})", r.suite, r.mirror))
        .collect::<Vec<_>>()
        .join(", ");
    let exit = code.map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));

    let mut head = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("E: Unable to locate package ") {
            head = Some(format!(
                "package {} does not exist in {where_}",
                name.trim()
            ));
        } else if let Some(rest) = line.strip_prefix("E: Package '") {
            let name = rest.split('\'').next().unwrap_or(rest);
            head = Some(format!(
                "package {name} has no installation candidate in {where_}"
            ));
        } else if line.starts_with("E: customization_script failed") {
            head = Some(line.trim_start_matches("E: ").to_owned());
        } else if let Some((mirror, suite)) = missing_release(line, lines.get(i + 1)) {
            head = Some(format!("suite {suite} not found at {mirror}"));
        }
        if head.is_some() {
            break;
        }
    }
    let head = head.unwrap_or_else(|| format!("mmdebstrap failed ({exit})"));
    let messages: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .filter(|l| !SANDBOX_NOISE.iter().any(|n| l.starts_with(n)))
        .map(|l| shorten(l))
        .collect();
    let tail = &messages[messages.len().saturating_sub(10)..];
    if tail.is_empty() {
        head
    } else {
        format!("{head}\n{}", tail.join("\n"))
    }
}

/// mmdebstrap's warnings about the sandbox, said on every run: not news.
const SANDBOX_NOISE: &[&str] = &[
    "W: Host system does not have a /etc/hostname",
    "W: skipping creation of ./dev/console",
    "W: skipping mounting /sys",
];

/// A line cut to a length an error line can carry (apt's command lines
/// run to a screenful).
fn shorten(line: &str) -> String {
    const MAX: usize = 240;
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// The mirror and suite of a Release file apt could not find:
/// `E: The repository 'MIRROR SUITE Release' does not have a Release file.`
/// or `Err:N MIRROR SUITE Release` followed by `404  Not Found`.
fn missing_release<'a>(line: &'a str, next: Option<&&str>) -> Option<(&'a str, &'a str)> {
    let release = |s: &'a str| {
        let mut w = s.split_whitespace();
        let (mirror, suite, file) = (w.next()?, w.next()?, w.next()?);
        (file == "Release" || file == "InRelease").then_some((mirror, suite))
    };
    if let Some(rest) = line.strip_prefix("E: The repository '")
        && line.contains("does not have a Release file")
    {
        return release(rest.split('\'').next()?);
    }
    if line.starts_with("Err:") && next.is_some_and(|n| n.contains("404")) {
        return release(line.split_once(' ')?.1);
    }
    None
}

/// What mmdebstrap leaves that the new system must not have.
fn tidy(args: &Args, repos: &[Repo]) -> anyhow::Result<()> {
    let tree = Root::tree(args)?;
    remove(&tree, "/etc/hostname")?;
    // Empty, not the build host's: later stages bind the host's over it
    // when they need the network.
    remove(&tree, "/etc/resolv.conf")?;
    let resolv = tree.entry("/etc/resolv.conf")?;
    rustix::fs::openat(
        resolv.dir(),
        resolv.name(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| Error::Io {
        what: "cannot create",
        path: resolv.shown().to_owned(),
        source: e.into(),
    })?;

    let keep = |n: &str| ["lock", "partial", "auxfiles"].contains(&n);
    empty_dir(&tree, "/var/lib/apt/lists", |n| !keep(n))?;
    empty_dir(&tree, "/var/cache/apt", |n| n.ends_with(".bin"))?;
    empty_dir(&tree, "/var/cache/apt/archives", |n| n.ends_with(".deb"))?;
    empty_dir(&tree, "/var/cache/apt/archives/partial", |_| true)?;

    for r in repos {
        if let Some(k) = &r.final_signed_by
            && tree
                .entry(k)
                .ok()
                .and_then(|e| e.lstat().ok().flatten())
                .is_none()
        {
            println!(
                "W: the new system's apt checks {} with {k}, which it does not have; \
                 install it (keyring_package, or keyring with install) or apt there will refuse the repository",
                r.mirror
            );
        }
    }
    Ok(())
}

/// Removes `path` beneath the tree if it is there (a symlink itself, not
/// what it points to).
fn remove(tree: &Root, path: &str) -> Result<(), Error> {
    let entry = match tree.entry(path) {
        Ok(e) => e,
        Err(Error::NoParent { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if entry.lstat()?.is_none() {
        return Ok(());
    }
    rustix::fs::unlinkat(entry.dir(), entry.name(), AtFlags::empty()).map_err(|e| Error::Io {
        what: "cannot remove",
        path: entry.shown().to_owned(),
        source: e.into(),
    })
}

/// Removes the files (not folders) of folder `path` whose names `pick` picks.
fn empty_dir(tree: &Root, path: &str, pick: impl Fn(&str) -> bool) -> Result<(), Error> {
    let io = |what: &'static str, source: rustix::io::Errno| Error::Io {
        what,
        path: path.to_owned(),
        source: source.into(),
    };
    let dir = match tree.open_dir(path) {
        Ok(d) => d,
        Err(Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let readable = rustix::fs::openat(
        &dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("cannot open folder", e))?;
    let names: Vec<String> = rustix::fs::Dir::read_from(&readable)
        .map_err(|e| io("cannot list", e))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type() != FileType::Directory)
        .filter_map(|e| e.file_name().to_str().ok().map(str::to_owned))
        .filter(|n| n != "." && n != ".." && pick(n))
        .collect();
    for name in names {
        match rustix::fs::unlinkat(&readable, name.as_str(), AtFlags::empty()) {
            // A folder whose type the listing did not know.
            Ok(()) | Err(rustix::io::Errno::ISDIR) => {}
            Err(e) => return Err(io("cannot remove a file in", e)),
        }
    }
    Ok(())
}

/// Empties the tree after a failure, unless something is still mounted in
/// it (mmdebstrap unmounts /proc, /sys, /dev on its way out; if it could
/// not, deleting through them would be worse than a partial tree).
fn wipe(tree: &Path) {
    let prefix = format!("{}/", tree.display());
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|p| p.starts_with(&prefix))
        })
        .unwrap_or(true);
    if mounted {
        eprintln!("leaving the partial tree alone: something is still mounted in it");
        return;
    }
    let Ok(entries) = std::fs::read_dir(tree) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(e) = removed {
            eprintln!(
                "cannot remove {} from the partial tree: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(suite: &str, components: &[&str]) -> Repo {
        Repo {
            types: vec!["deb".into()],
            mirror: "http://127.0.0.1/debian".into(),
            suite: suite.into(),
            components: components.iter().map(|&c| c.into()).collect(),
            check: Check::System,
            signed_by: Some(DEBIAN_KEYRING.into()),
            final_signed_by: Some(DEBIAN_KEYRING.into()),
        }
    }

    #[test]
    fn options_take_debusine_names_and_defaults() {
        let o: Options = serde_json::from_value(json!({
            "bootstrap_options": {"architecture": "amd64"},
            "bootstrap_repositories": [{"suite": "bookworm", "check_signature_with": "no-check",
                "keyring": {"url": "file:///usr/share/keyrings/k.gpg"}}]
        }))
        .unwrap();
        assert_eq!(o.bootstrap_options.variant, "minbase");
        assert!(o.bootstrap_options.use_signed_by);
        assert!(o.bootstrap_options.extra_packages.is_empty());
        let r = &o.bootstrap_repositories[0];
        assert_eq!(r.types, ["deb"]);
        assert_eq!(r.check_signature_with, Check::Unchecked);
        assert!(!r.keyring.as_ref().unwrap().install);
    }

    #[test]
    fn sources_have_one_stanza_per_repository() {
        let mut flat = repo("./", &[]);
        flat.check = Check::Unchecked;
        flat.signed_by = None;
        flat.final_signed_by = None;
        flat.types = vec!["deb".into(), "deb-src".into()];
        let mut external = repo("trixie", &["main"]);
        external.check = Check::External;
        external.signed_by = Some("/tmp/w/keyring-2/k.gpg".into());
        external.final_signed_by = Some("/usr/local/share/keyrings/k.gpg".into());
        let repos = [repo("bookworm", &["main", "contrib"]), flat, external];
        assert_eq!(
            render_sources(&repos, false),
            "Types: deb\nURIs: http://127.0.0.1/debian\nSuites: bookworm\nComponents: main contrib\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             \n\
             Types: deb deb-src\nURIs: http://127.0.0.1/debian\nSuites: ./\nTrusted: yes\n\
             \n\
             Types: deb\nURIs: http://127.0.0.1/debian\nSuites: trixie\nComponents: main\n\
             Signed-By: /tmp/w/keyring-2/k.gpg\n"
        );
        assert!(
            render_sources(&repos, true).ends_with("Signed-By: /usr/local/share/keyrings/k.gpg\n")
        );
    }

    #[test]
    fn the_command_line_holds_every_choice() {
        let work = Path::new("/tmp/w");
        let keyrings = [Keyring {
            path: "/tmp/w/keyring-0/k.asc".into(),
            name: "k.asc".into(),
            install: true,
        }];
        let plan = Plan {
            variant: "apt",
            architecture: "arm64",
            include: vec!["hello".into(), "k-keyring".into()],
            keyring_dir: Some("/tmp/w/trusted.gpg.d".into()),
            hooks: customize_hooks(work, &keyrings, Some(&work.join("customize.sh"))),
            suite: "bookworm",
            tree: Path::new("/run/strata/tree"),
            sources: work.join(BOOTSTRAP_SOURCES),
        };
        let argv = mmdebstrap_argv(&plan);
        assert_eq!(
            argv[..6],
            [
                "mmdebstrap",
                "--mode=root",
                "--variant=apt",
                "--architectures=arm64",
                "--include=hello,k-keyring",
                "--keyring=/tmp/w/trusted.gpg.d"
            ]
        );
        assert_eq!(
            argv[argv.len() - 3..],
            ["bookworm", "/run/strata/tree", "/tmp/w/strata.sources"]
        );
        let hooks: Vec<&str> = argv
            .iter()
            .filter_map(|a| a.strip_prefix("--customize-hook="))
            .collect();
        assert_eq!(
            hooks[0],
            "upload /tmp/w/debian.sources /etc/apt/sources.list.d/debian.sources"
        );
        assert_eq!(
            hooks[1],
            "rm -f \"$1/etc/apt/sources.list.d/0000strata.sources\""
        );
        assert_eq!(hooks[2], "mkdir -p \"$1/usr/local/share/keyrings\"");
        assert_eq!(
            hooks[3],
            "upload /tmp/w/keyring-0/k.asc /usr/local/share/keyrings/k.asc"
        );
        assert_eq!(
            hooks[4],
            "upload /tmp/w/customize.sh /tmp/strata-customization-script"
        );
        assert!(hooks[5].contains("chroot \"$1\" sh /tmp/strata-customization-script"));
        assert_eq!(hooks.len(), 6);

        let bare = Plan {
            include: vec![],
            keyring_dir: None,
            hooks: vec![],
            ..plan
        };
        assert_eq!(mmdebstrap_argv(&bare).len(), 7);
    }

    #[test]
    fn keyrings_get_names_apt_accepts() {
        assert_eq!(
            keyring_name("https://127.0.0.1/a/archive.gpg?x=1", b"\x99"),
            "archive.gpg"
        );
        assert_eq!(
            keyring_name(
                "https://127.0.0.1/key",
                b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
            ),
            "key.asc"
        );
        assert_eq!(keyring_name("https://127.0.0.1/", b"\x99"), "keyring.gpg");
        assert_eq!(keyring_name("https://127.0.0.1/..", b"\x99"), "keyring.gpg");
        assert_eq!(
            keyring_name("file:///usr/share/keyrings/a b.asc", b""),
            "a_b.asc"
        );
    }

    #[test]
    fn a_keyring_with_the_wrong_checksum_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.gpg");
        std::fs::write(&path, b"key").unwrap();
        let url = format!("file://{}", path.display());
        let wrong = "0".repeat(64);
        let err = fetch_keyring(
            &KeyringOption {
                url: url.clone(),
                sha256sum: Some(wrong.clone()),
                install: false,
            },
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        let actual = hex(&Sha256::digest(b"key"));
        assert_eq!(
            err,
            format!("keyring {url} has sha256 {actual}, but the manifest expects {wrong}")
        );
        let ok = fetch_keyring(
            &KeyringOption {
                url,
                sha256sum: Some(actual.to_uppercase()),
                install: true,
            },
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            ok,
            Keyring {
                path,
                name: "k.gpg".into(),
                install: true
            }
        );
    }

    #[test]
    fn failures_name_the_package_or_suite() {
        let repos = [repo("bookworm", &["main"])];
        let out = "I: running apt-get update...\nE: Unable to locate package nonexistent-pkg\n\
                   E: setup failed: E: apt-get install failed\n";
        let msg = explain_failure(out, Some(1), &repos);
        assert_eq!(
            msg,
            "package nonexistent-pkg does not exist in bookworm (http://127.0.0.1/debian)\n\
             E: Unable to locate package nonexistent-pkg\nE: setup failed: E: apt-get install failed"
        );

        let out = "Err:2 http://127.0.0.1/debian bookwormx Release\n  404  Not Found [IP: 127.0.0.1 80]\n\
                   E: The repository 'http://127.0.0.1/debian bookwormx Release' does not have a Release file.\n";
        assert!(explain_failure(out, Some(1), &repos).starts_with(
            "suite bookwormx not found at http://127.0.0.1/debian\nE: The repository"
        ));
        let only_e = "E: The repository 'http://127.0.0.1/debian bookwormy Release' does not have a Release file.\n";
        assert!(
            explain_failure(only_e, Some(1), &repos)
                .starts_with("suite bookwormy not found at http://127.0.0.1/debian\n")
        );

        let out = "E: Package 'virtual' has no installation candidate\n";
        assert!(
            explain_failure(out, Some(1), &repos)
                .starts_with("package virtual has no installation candidate in bookworm")
        );
        let out = "boom\nE: customization_script failed (exit 3)\nE: command failed: ...\n";
        assert!(
            explain_failure(out, Some(1), &repos)
                .starts_with("customization_script failed (exit 3)\n")
        );

        assert_eq!(
            explain_failure("nothing useful\n", Some(25), &repos),
            "mmdebstrap failed (exit 25)"
        );
        let noise = "W: skipping mounting /sys because /sys does not exist on the outside\n";
        let long = format!("E: {}\n", "x".repeat(500));
        let msg = explain_failure(&format!("{noise}{long}"), Some(1), &repos);
        assert_eq!(
            msg,
            format!("mmdebstrap failed (exit 1)\nE: {}…", "x".repeat(237))
        );

        let many: String = (0..15).map(|i| format!("W: warning {i}\n")).collect();
        let msg = explain_failure(&many, None, &repos);
        assert!(
            msg.starts_with("mmdebstrap failed (killed by a signal)\nW: warning 5\n"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 11);
    }

    #[test]
    fn tidying_leaves_no_hostname_host_resolv_conf_or_apt_caches() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for d in [
            "etc",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
        ] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        std::fs::write(t.join("etc/hostname"), "host\n").unwrap();
        std::os::unix::fs::symlink("/etc/resolv.conf", t.join("etc/resolv.conf")).unwrap();
        for f in [
            "var/lib/apt/lists/lock",
            "var/lib/apt/lists/x_Packages",
            "var/cache/apt/pkgcache.bin",
            "var/cache/apt/archives/a.deb",
            "var/cache/apt/archives/lock",
            "var/cache/apt/archives/partial/b.deb",
        ] {
            std::fs::write(t.join(f), "x").unwrap();
        }
        let args: Args = serde_json::from_value(json!({
            "tree": t, "paths": {"tree": t, "inputs": "/nonexistent", "meta": t.join("meta.json")},
            "meta": {"id": "x", "pipeline": "p", "stage": "bootstrap"}
        }))
        .unwrap();
        tidy(&args, &[]).unwrap();
        assert!(!t.join("etc/hostname").exists());
        let resolv = std::fs::symlink_metadata(t.join("etc/resolv.conf")).unwrap();
        assert!(resolv.is_file() && resolv.len() == 0);
        let names = |d: &str| {
            let mut n: Vec<String> = std::fs::read_dir(t.join(d))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names("var/lib/apt/lists"), ["lock", "partial"]);
        assert_eq!(names("var/cache/apt"), ["archives"]);
        assert_eq!(names("var/cache/apt/archives"), ["lock", "partial"]);
        assert!(names("var/cache/apt/archives/partial").is_empty());

        wipe(t);
        assert!(std::fs::read_dir(t).unwrap().next().is_none());
    }
}
