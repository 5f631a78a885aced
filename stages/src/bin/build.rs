//! `build`: builds a Debian source package into binary packages, as
//! debusine's PackageBuild task does (its option names are kept).
//!
//! ```json
//! {"host_architecture": "amd64", "build_components": ["any", "all"],
//!  "build_profiles": ["nodoc"], "build_options": "nocheck",
//!  "binnmu": {"changelog": "Rebuild against libfoo2", "suffix": "+b1"},
//!  "extra_repositories": [{"url": "http://127.0.0.1/extra", "suite": "bookworm",
//!                          "components": ["main"], "signing_key": "-----BEGIN PGP..."}]}
//! ```
//!
//! The engine runs this stage as root in a throw-away, writable copy of the
//! build environment (`"x-strata": {"root": "build-copy"}`): `/` is a
//! Debian system bootstrapped with variant buildd, and whatever is
//! installed here dies with the copy. Only the results reach the tree.
//!
//! ```text
//!   inputs/source            files named sha256:<hex> (the .dsc found by its content)
//!        │                   or a tree holding NAME.dsc and its files by name
//!        ▼
//!   BUILD_PATH/NAME.dsc + its files      BUILD_PATH = build_path, /build/strata
//!        │                                          ┐
//!        │  /etc/apt/sources.list.d/strata-*        │ apt: extra_repositories,
//!        │  /var/cache/strata/extra-binary-…        │ extra_binary_artifacts
//!        ▼                                          ┘
//!   dpkg-source -x ─> [binNMU changelog entry] ─> apt-get update
//!        ─> apt-get build-dep ./SRC-UPSTREAM ─> dpkg-buildpackage --build=...
//!        │  all their output: the stage's log and tree/SRC_VERSION_ARCH.build
//!        ▼
//!   tree/  the .changes and every file it lists (.deb, .buildinfo, .dsc, ...)
//!   meta:  {status, source, version, binary_packages, changes, buildinfo}
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use strata_stage::debian::parse_deb822;
use strata_stage::{Args, Failure, Input, write_meta};

/// How many lines of the build log a failure's error carries.
const TAIL_LINES: usize = 25;
/// Where `extra_binary_artifacts` become an apt repository.
const LOCAL_REPOSITORY: &str = "/var/cache/strata/extra-binary-artifacts";
const SOURCES_D: &str = "/etc/apt/sources.list.d";
const KEYRINGS: &str = "/etc/apt/keyrings";
/// Services must not start while build dependencies install (exit 101 is
/// "action forbidden"); the copy is thrown away, so nothing is restored.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// The .dsc is a small text file; anything bigger is one of its files.
const DSC_MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default = "any_only")]
    build_components: Vec<Component>,
    host_architecture: String,
    /// Absent: the host architecture; `null`: whatever the environment is.
    #[serde(default, deserialize_with = "present")]
    build_architecture: Option<Option<String>>,
    #[serde(default)]
    build_profiles: Vec<String>,
    #[serde(default)]
    build_options: Option<String>,
    #[serde(default = "default_build_path")]
    build_path: String,
    #[serde(default)]
    binnmu: Option<Binnmu>,
    #[serde(default)]
    extra_repositories: Vec<Repository>,
}

/// `dpkg-buildpackage --build` parts, in the order it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Component {
    Any,
    All,
    Source,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::All => "all",
            Self::Source => "source",
        }
    }
}

fn any_only() -> Vec<Component> {
    vec![Component::Any]
}

fn default_build_path() -> String {
    "/build/strata".into()
}

/// Tells a `null` apart from a missing key (serde's `default` covers that).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Binnmu {
    changelog: String,
    #[serde(default = "default_suffix")]
    suffix: String,
    #[serde(default)]
    timestamp: Option<Timestamp>,
    #[serde(default = "default_maintainer")]
    maintainer: String,
}

fn default_suffix() -> String {
    "+b1".into()
}

fn default_maintainer() -> String {
    "strata <strata@localhost>".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum Timestamp {
    Epoch(u64),
    Date(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Repository {
    url: String,
    suite: String,
    #[serde(default)]
    components: Option<Vec<String>>,
    #[serde(default)]
    signing_key: Option<String>,
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let components = normalized(&options.build_components)?;
    if let Some(binnmu) = &options.binnmu
        && components.iter().any(|c| *c != Component::Any)
    {
        // The schema says so too; a binNMU rebuilds architecture-dependent
        // packages only, with a changelog entry no source upload has.
        bail!(
            "options.binnmu ({}) builds only \"any\": build_components must not hold \"all\" or \"source\"",
            binnmu.suffix
        );
    }
    let build_path = checked_build_path(&options.build_path)?;

    let input = args
        .input("source")
        .context("the stage needs a `source` input (the .dsc and its files)")?;
    let source = SourcePackage::find(input)?;
    let dsc = &source.dsc;

    let env_arch = dpkg_print_architecture()?;
    let arch = Architectures::resolve(&options, &env_arch)?;
    if arch.cross {
        check_cross_toolchain(&arch)?;
    }

    let version = match &options.binnmu {
        Some(b) => format!("{}{}", dsc.version, b.suffix),
        None => dsc.version.clone(),
    };
    let log_name = format!(
        "{}_{}_{}.build",
        dsc.source,
        without_epoch(&version),
        changes_architecture(&components, &arch.host)
    );
    let failed = || format!("build of {} {version} failed", dsc.source);

    std::fs::create_dir_all(&build_path)
        .with_context(|| format!("cannot create the build path {}", build_path.display()))?;
    source.place(&build_path)?;

    let mut log = BuildLog::create(&args.tree.join(&log_name))?;
    let built = build(
        args,
        &options,
        &components,
        &arch,
        dsc,
        &version,
        &build_path,
        &mut log,
    );
    if let Err(e) = built {
        return Err(anyhow!(
            "{}: {e:#}; the last lines of {log_name}: {}",
            failed(),
            log.tail()
        ));
    }

    let results = collect(&build_path, &args.tree).with_context(failed)?;
    let meta = json!({
        "status": "success",
        "source": dsc.source,
        "version": version,
        "source_version": dsc.version,
        "binary_packages": results.packages,
        "changes": results.changes,
        "buildinfo": results.buildinfo,
        "build_log": log_name,
    });
    write_meta(args, &meta)?;
    Ok(())
}

/// The steps whose output makes the build log; an error here is the
/// build's failure, explained by the log's tail.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn build(
    args: &Args,
    options: &Options,
    components: &[Component],
    arch: &Architectures,
    dsc: &Dsc,
    version: &str,
    build_path: &Path,
    log: &mut BuildLog,
) -> anyhow::Result<()> {
    let env = build_env(args, options);
    log.say(&format!(
        "building {} {version} for {} on {} ({}) in {}",
        dsc.source,
        arch.host,
        arch.build,
        build_flag(components),
        build_path.display()
    ))?;
    prepare_apt(args, options, arch, log)?;

    let dir = dsc.unpack_dir();
    log.run(
        Command::new("dpkg-source")
            .args(["-x", &dsc.file_name(), &dir])
            .current_dir(build_path),
    )?;
    if let Some(binnmu) = &options.binnmu {
        let changelog = build_path.join(&dir).join("debian/changelog");
        let text = std::fs::read_to_string(&changelog)
            .with_context(|| format!("cannot read {}", changelog.display()))?;
        let date = match &binnmu.timestamp {
            Some(Timestamp::Date(date)) => date.clone(),
            Some(Timestamp::Epoch(epoch)) => rfc2822(*epoch),
            None => rfc2822(args.meta.source_epoch.unwrap_or_else(now)),
        };
        let entry = binnmu_entry(&text, binnmu, &date)?;
        std::fs::write(&changelog, format!("{entry}{text}"))
            .with_context(|| format!("cannot write {}", changelog.display()))?;
        log.say(&format!("binNMU changelog entry added:\n{entry}"))?;
    }

    let mut update = Command::new("apt-get");
    update.arg("update").envs(&env);
    log.run(&mut update)?;
    let argv = build_dep_argv(components, arch, &options.build_profiles, &dir);
    log.run(
        Command::new(&argv[0])
            .args(&argv[1..])
            .envs(&env)
            .current_dir(build_path),
    )?;
    let argv = dpkg_buildpackage_argv(components, arch, &options.build_profiles);
    log.run(
        Command::new(&argv[0])
            .args(&argv[1..])
            .envs(&env)
            .current_dir(build_path.join(&dir)),
    )?;
    Ok(())
}

/// The build's environment; the engine clears the rest.
fn build_env(args: &Args, options: &Options) -> BTreeMap<&'static str, String> {
    let mut env = BTreeMap::from([("DEBIAN_FRONTEND", "noninteractive".to_owned())]);
    if !options.build_profiles.is_empty() {
        env.insert("DEB_BUILD_PROFILES", options.build_profiles.join(" "));
    }
    if let Some(o) = &options.build_options {
        env.insert("DEB_BUILD_OPTIONS", o.clone());
    }
    // The engine sets it; the pipeline's source-epoch stands in otherwise.
    if std::env::var_os("SOURCE_DATE_EPOCH").is_none()
        && let Some(epoch) = args.meta.source_epoch
    {
        env.insert("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    env
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sorted, without repeats; at least one.
fn normalized(components: &[Component]) -> anyhow::Result<Vec<Component>> {
    let mut c = components.to_vec();
    c.sort();
    c.dedup();
    if c.is_empty() {
        bail!("options.build_components: needs at least one of any, all and source");
    }
    Ok(c)
}

/// An absolute path, not `/`, without `.` or `..` parts, empty if it exists.
fn checked_build_path(path: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(path);
    let odd = path
        .split('/')
        .skip(1)
        .any(|part| part.is_empty() || part == "." || part == "..");
    if !path.starts_with('/') || odd {
        bail!("options.build_path: {path:?} must be an absolute path without empty, . or .. parts");
    }
    if let Ok(mut entries) = std::fs::read_dir(p)
        && entries.next().is_some()
    {
        bail!("options.build_path: {path} already exists and is not empty");
    }
    Ok(p.to_owned())
}

// ---------------------------------------------------------------- the source

/// What the build needs of a .dsc.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dsc {
    source: String,
    version: String,
    /// `(sha256, file name)` of each file the .dsc lists.
    files: Vec<(String, String)>,
}

impl Dsc {
    /// The name dpkg-source gives it: `SRC_VERSION.dsc`, without the epoch.
    fn file_name(&self) -> String {
        format!("{}_{}.dsc", self.source, without_epoch(&self.version))
    }

    /// The directory it unpacks to, as dpkg-source names it: `SRC-UPSTREAM`.
    fn unpack_dir(&self) -> String {
        let version = without_epoch(&self.version);
        let upstream = version.rsplit_once('-').map_or(version, |(u, _)| u);
        format!("{}-{upstream}", self.source)
    }
}

fn without_epoch(version: &str) -> &str {
    version.split_once(':').map_or(version, |(_, v)| v)
}

/// The text a PGP clear signature wraps, dash-escapes undone; other text as is.
fn unsigned(text: &str) -> String {
    if !text
        .trim_start()
        .starts_with("-----BEGIN PGP SIGNED MESSAGE-----")
    {
        return text.to_owned();
    }
    let mut lines = text.trim_start().lines().skip(1);
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

/// A .dsc: a control paragraph with `Format:`, `Source:`, `Version:` and
/// `Checksums-Sha256:`. `None` when `text` is no .dsc; an error when it is
/// one with something wrong in it.
fn parse_dsc(text: &str) -> Option<Result<Dsc, String>> {
    let paragraph = parse_deb822(&unsigned(text)).into_iter().find(|p| {
        p.contains_key("format") && p.contains_key("source") && p.contains_key("checksums-sha256")
    })?;
    Some(dsc_from(&paragraph))
}

fn dsc_from(p: &BTreeMap<String, String>) -> Result<Dsc, String> {
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

fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A name within one directory: never a path out of it.
fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The source input, its .dsc found, and where each of its files is.
#[derive(Debug)]
struct SourcePackage {
    dsc: Dsc,
    dsc_path: PathBuf,
    /// The file each name the .dsc lists is in the input.
    files: Vec<(String, PathBuf)>,
}

impl SourcePackage {
    fn find(input: &Input) -> anyhow::Result<Self> {
        match input.data.get("files").and_then(Value::as_object) {
            Some(items) => Self::from_items(&input.path, items.keys()),
            None => Self::from_tree(&input.path),
        }
    }

    /// A `files` input: items named `sha256:<hex>`, one of them the .dsc.
    fn from_items<'a>(dir: &Path, items: impl Iterator<Item = &'a String>) -> anyhow::Result<Self> {
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
    fn from_tree(dir: &Path) -> anyhow::Result<Self> {
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
    fn place(&self, dir: &Path) -> anyhow::Result<()> {
        let dsc = std::iter::once((self.dsc.file_name(), self.dsc_path.clone()));
        for (name, from) in dsc.chain(self.files.iter().cloned()) {
            let to = dir.join(&name);
            copy_file(&from, &to)?;
        }
        Ok(())
    }
}

/// The .dsc in `path`, if it is one: small, text, and a .dsc inside.
fn read_dsc(path: &Path) -> anyhow::Result<Option<Result<Dsc, String>>> {
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
fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("cannot set the mode of {}", to.display()))
}

// ---------------------------------------------------------- architectures

#[derive(Debug, Clone, PartialEq, Eq)]
struct Architectures {
    host: String,
    build: String,
    cross: bool,
}

impl Architectures {
    /// The environment can only build on its own architecture; a host that
    /// differs from it is a cross-build.
    fn resolve(options: &Options, env_arch: &str) -> anyhow::Result<Self> {
        // "all": arch-independent packages, built on whatever this is.
        let host = match options.host_architecture.as_str() {
            "all" => env_arch.to_owned(),
            h => h.to_owned(),
        };
        let build = match &options.build_architecture {
            None => host.clone(),
            Some(None) => env_arch.to_owned(),
            Some(Some(b)) => b.clone(),
        };
        if build != env_arch {
            let why = if options.build_architecture.is_none() {
                " (by default, the host_architecture)"
            } else {
                ""
            };
            bail!(
                "build_architecture is {build}{why}, but the build environment is {env_arch}; \
                 to cross-build for {host} on it, set build_architecture to {env_arch} (or null)"
            );
        }
        Ok(Self {
            cross: host != build,
            host,
            build,
        })
    }
}

fn dpkg_print_architecture() -> anyhow::Result<String> {
    capture(Command::new("dpkg").arg("--print-architecture"))
}

/// A cross-build needs `TRIPLET-gcc`, which crossbuild-essential-HOST brings.
fn check_cross_toolchain(arch: &Architectures) -> anyhow::Result<()> {
    let triplet = capture(
        Command::new("dpkg-architecture")
            .args(["-a", &arch.host, "-qDEB_HOST_GNU_TYPE"])
            .env_remove("DEB_HOST_ARCH"),
    )
    .with_context(|| format!("host_architecture {} is not one dpkg knows", arch.host))?;
    let gcc = format!("/usr/bin/{triplet}-gcc");
    if !Path::new(&gcc).exists() {
        bail!(
            "cross-building for {} on {} needs a cross toolchain in the build environment, \
             and it has no {gcc}; hint: add crossbuild-essential-{} to the build pipeline's packages",
            arch.host,
            arch.build,
            arch.host
        );
    }
    Ok(())
}

/// A program's stdout, trimmed, or its failure.
fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let program = strata_stage::program(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::spawn(&program, e))?;
    Failure::check(&program, out.status, &out.stderr)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

// ------------------------------------------------------------- the commands

/// `any,all,source` as `--build=` takes it.
fn build_flag(components: &[Component]) -> String {
    let names: Vec<&str> = components.iter().map(|c| c.name()).collect();
    format!("--build={}", names.join(","))
}

/// Long options: dpkg-buildpackage takes `-P` only joined to its value.
fn dpkg_buildpackage_argv(
    components: &[Component],
    arch: &Architectures,
    profiles: &[String],
) -> Vec<String> {
    let mut argv = vec![
        "dpkg-buildpackage".to_owned(),
        build_flag(components),
        "-us".into(),
        "-uc".into(),
    ];
    if arch.cross {
        argv.push(format!("--host-arch={}", arch.host));
    }
    if !profiles.is_empty() {
        argv.push(format!("--build-profiles={}", profiles.join(",")));
    }
    argv
}

/// Build-Depends-Arch / -Indep are left out when their half is not built.
fn build_dep_argv(
    components: &[Component],
    arch: &Architectures,
    profiles: &[String],
    dir: &str,
) -> Vec<String> {
    let mut argv: Vec<String> = ["apt-get", "build-dep", "-y", "--no-install-recommends"]
        .map(str::to_owned)
        .into();
    match components {
        [Component::Any] => argv.push("--arch-only".into()),
        [Component::All] => argv.push("--indep-only".into()),
        _ => {}
    }
    if arch.cross {
        argv.extend(["-a".into(), arch.host.clone()]);
    }
    if !profiles.is_empty() {
        argv.extend(["-P".into(), profiles.join(",")]);
    }
    argv.push(format!("./{dir}"));
    argv
}

/// The architecture part of the .changes (and build log) name, as
/// dpkg-buildpackage chooses it.
fn changes_architecture(components: &[Component], host: &str) -> String {
    if components.contains(&Component::Any) {
        host.to_owned()
    } else if components.contains(&Component::All) {
        "all".into()
    } else {
        "source".into()
    }
}

// ---------------------------------------------------------------------- apt

fn prepare_apt(
    args: &Args,
    options: &Options,
    arch: &Architectures,
    log: &mut BuildLog,
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
        let text = render_repository(repo, key.as_deref())
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

fn ensure_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// One deb822 stanza; a suite ending in `/` is a flat repository, which
/// has no components.
fn render_repository(repo: &Repository, signed_by: Option<&str>) -> anyhow::Result<String> {
    let mut text = format!("Types: deb\nURIs: {}\nSuites: {}\n", repo.url, repo.suite);
    match (&repo.components, repo.suite.ends_with('/')) {
        (Some(_), true) => bail!(
            "suite {} is flat (ends in /): leave out components",
            repo.suite
        ),
        (None, false) => bail!(
            "suite {} needs components (or end in / for a flat repository)",
            repo.suite
        ),
        (Some(c), false) => text.push_str(&format!("Components: {}\n", c.join(" "))),
        (None, true) => {}
    }
    if let Some(key) = signed_by {
        text.push_str(&format!("Signed-By: {key}\n"));
    }
    Ok(text)
}

/// The .deb files of `input` as a trusted flat repository apt can install
/// build dependencies from.
fn local_repository(input: &Input, log: &mut BuildLog) -> anyhow::Result<()> {
    let mut debs = Vec::new();
    match input.data.get("files").and_then(Value::as_object) {
        Some(items) => {
            for item in items.keys() {
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
    std::fs::write(dir.join("Packages"), format!("{packages}\n"))
        .with_context(|| format!("cannot write {LOCAL_REPOSITORY}/Packages"))?;
    let list = format!("deb [trusted=yes] file:{LOCAL_REPOSITORY} ./\n");
    let path = format!("{SOURCES_D}/strata-extra-binary-artifacts.list");
    std::fs::write(&path, &list).with_context(|| format!("cannot write {path}"))?;
    log.say(&format!("{count} extra binary artifacts: {path}: {list}"))?;
    Ok(())
}

/// `*.deb` anywhere below `dir`, named for the flat directory they go to.
fn find_debs(dir: &Path, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
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
fn is_deb(path: &Path) -> anyhow::Result<bool> {
    let mut head = [0u8; 21];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(head[..n] == *b"!<arch>\ndebian-binary")
}

// ------------------------------------------------------------------- binNMU

/// `NAME (VERSION) DISTRIBUTIONS; ...`: the top entry's heading.
fn changelog_top(text: &str) -> Option<(&str, &str, &str)> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let (name, rest) = line.split_once(" (")?;
    let (version, rest) = rest.split_once(')')?;
    let dist = rest.split(';').next()?.trim();
    (!name.is_empty() && !version.is_empty() && !dist.is_empty()).then_some((
        name.trim(),
        version.trim(),
        dist,
    ))
}

/// The entry that makes the build a binNMU: the version with its suffix,
/// marked `binary-only=yes`, on the top entry's distribution.
fn binnmu_entry(changelog: &str, binnmu: &Binnmu, date: &str) -> anyhow::Result<String> {
    let (name, version, dist) = changelog_top(changelog)
        .context("debian/changelog does not start with \"NAME (VERSION) DISTRIBUTION; ...\"")?;
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

/// An RFC 2822 date in UTC, as changelog trailers want it.
fn rfc2822(epoch: u64) -> String {
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

// ---------------------------------------------------------------- the log

/// The build log: everything the build's commands say, to the stage's
/// stdout and to a file in the tree, with its last lines kept for an error.
#[derive(Debug)]
struct BuildLog {
    file: std::fs::File,
    tail: VecDeque<String>,
    partial: Vec<u8>,
}

impl BuildLog {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create the build log {}", path.display()))?;
        Ok(Self {
            file,
            tail: VecDeque::new(),
            partial: Vec::new(),
        })
    }

    /// A line of strata's own, marked as such.
    fn say(&mut self, text: &str) -> anyhow::Result<()> {
        let mut text = text
            .trim_end()
            .lines()
            .map(|l| format!("strata-build: {l}\n"))
            .collect::<String>();
        if text.is_empty() {
            text = "strata-build:\n".into();
        }
        self.record(text.as_bytes())
    }

    /// Runs `cmd` with both its streams into the log; an error unless it
    /// exits 0.
    fn run(&mut self, cmd: &mut Command) -> anyhow::Result<()> {
        let program = strata_stage::program(cmd);
        let shown: Vec<String> = std::iter::once(program.clone())
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        self.say(&format!("running {}", shown.join(" ")))?;
        let (mut reader, writer) = std::io::pipe().context("cannot make a pipe")?;
        let writer2 = writer.try_clone().context("cannot make a pipe")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .spawn();
        // The command keeps the pipe's writing ends until told otherwise,
        // and the read below would never see the end of the output.
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = child.map_err(|e| Failure::spawn(&program, e))?;
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.record(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("cannot read the build's output"),
            }
        }
        self.end_line()?;
        let status = child
            .wait()
            .with_context(|| format!("cannot wait for {program}"))?;
        ended(&program, status)
    }

    fn record(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .context("cannot write to the stage's log")?;
        self.file
            .write_all(bytes)
            .context("cannot write the build log")?;
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).trim_end().to_owned();
                self.partial.clear();
                self.tail.push_back(line);
                if self.tail.len() > TAIL_LINES {
                    self.tail.pop_front();
                }
            } else {
                self.partial.push(b);
            }
        }
        Ok(())
    }

    /// Ends a last line the command left open, so the next one starts clean.
    fn end_line(&mut self) -> anyhow::Result<()> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            self.record(b"\n")
        }
    }

    fn tail(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn ended(program: &str, status: ExitStatus) -> anyhow::Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("{program} failed ({status})")
    }
}

// ------------------------------------------------------------ the results

#[derive(Debug)]
struct Results {
    changes: String,
    buildinfo: Option<String>,
    packages: Vec<Value>,
}

/// Copies the .changes and every file it lists into the tree, and reads
/// each binary package's name, version and architecture.
fn collect(build_path: &Path, tree: &Path) -> anyhow::Result<Results> {
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
fn with_dsc_files(build_path: &Path, listed: &mut Vec<String>) -> anyhow::Result<()> {
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
fn changes_files(text: &str) -> anyhow::Result<Vec<String>> {
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

fn package_fields(path: &Path, name: &str) -> anyhow::Result<Value> {
    let out = capture(Command::new("dpkg-deb").arg("-f").arg(path).args([
        "Package",
        "Version",
        "Architecture",
    ]))?;
    let fields = parse_deb822(&out).into_iter().next().unwrap_or_default();
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

    const DSC: &str = "\
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

    const SUM: &str = "4d7d97801a6fa1ee1344fbc36d87866e941bc8205f2a375868b36ba8aaf15907";

    fn options(v: Value) -> Result<Options, serde_json::Error> {
        serde_json::from_value(v)
    }

    fn arch(host: &str, build: &str) -> Architectures {
        Architectures {
            host: host.into(),
            build: build.into(),
            cross: host != build,
        }
    }

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

    #[test]
    fn options_default_as_documented() {
        let o = options(json!({"host_architecture": "amd64"})).unwrap();
        assert_eq!(o.build_components, [Component::Any]);
        assert_eq!(o.build_architecture, None);
        assert_eq!(o.build_path, "/build/strata");
        assert!(o.build_profiles.is_empty() && o.extra_repositories.is_empty());
        assert!(o.build_options.is_none() && o.binnmu.is_none());

        let o = options(
            json!({"host_architecture": "amd64", "build_architecture": null,
            "binnmu": {"changelog": "x", "timestamp": 1_700_000_000}}),
        )
        .unwrap();
        assert_eq!(o.build_architecture, Some(None));
        let b = o.binnmu.unwrap();
        assert_eq!(b.suffix, "+b1");
        assert_eq!(b.maintainer, "strata <strata@localhost>");
        assert_eq!(b.timestamp, Some(Timestamp::Epoch(1_700_000_000)));

        assert!(options(json!({})).is_err());
        assert!(options(json!({"host_architecture": "amd64", "components": []})).is_err());
        assert!(
            options(json!({"host_architecture": "amd64", "build_components": ["both"]})).is_err()
        );
    }

    #[test]
    fn architectures_resolve_against_the_environment() {
        let o = |v: Value| {
            let mut m = json!({"host_architecture": "arm64"});
            m.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            options(m).unwrap()
        };
        let e = Architectures::resolve(&o(json!({})), "amd64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("build_architecture is arm64 (by default, the host_architecture), but the build environment is amd64"), "{e}");
        let cross =
            Architectures::resolve(&o(json!({"build_architecture": null})), "amd64").unwrap();
        assert_eq!(cross, arch("arm64", "amd64"));
        assert!(cross.cross);
        let same = Architectures::resolve(&o(json!({})), "arm64").unwrap();
        assert!(!same.cross);
        let all = Architectures::resolve(
            &options(json!({"host_architecture": "all"})).unwrap(),
            "amd64",
        )
        .unwrap();
        assert_eq!(all, arch("amd64", "amd64"));
    }

    #[test]
    fn dpkg_buildpackage_gets_components_arch_and_profiles() {
        let native = arch("amd64", "amd64");
        assert_eq!(
            dpkg_buildpackage_argv(&[Component::Any], &native, &[]),
            ["dpkg-buildpackage", "--build=any", "-us", "-uc"]
        );
        let all = normalized(&[
            Component::Source,
            Component::Any,
            Component::All,
            Component::Any,
        ])
        .unwrap();
        assert_eq!(
            dpkg_buildpackage_argv(
                &all,
                &arch("arm64", "amd64"),
                &["nodoc".into(), "nocheck".into()]
            ),
            [
                "dpkg-buildpackage",
                "--build=any,all,source",
                "-us",
                "-uc",
                "--host-arch=arm64",
                "--build-profiles=nodoc,nocheck"
            ]
        );
        assert_eq!(
            dpkg_buildpackage_argv(&[Component::Source], &native, &[]),
            ["dpkg-buildpackage", "--build=source", "-us", "-uc"]
        );
        assert!(normalized(&[]).is_err());
    }

    #[test]
    fn build_dep_installs_what_the_components_need() {
        let native = arch("amd64", "amd64");
        assert_eq!(
            build_dep_argv(&[Component::Any], &native, &[], "hello-1.0"),
            [
                "apt-get",
                "build-dep",
                "-y",
                "--no-install-recommends",
                "--arch-only",
                "./hello-1.0"
            ]
        );
        assert_eq!(
            build_dep_argv(
                &[Component::All],
                &arch("arm64", "amd64"),
                &["nodoc".into()],
                "h-1"
            ),
            [
                "apt-get",
                "build-dep",
                "-y",
                "--no-install-recommends",
                "--indep-only",
                "-a",
                "arm64",
                "-P",
                "nodoc",
                "./h-1"
            ]
        );
        assert_eq!(
            build_dep_argv(&[Component::Any, Component::All], &native, &[], "h-1"),
            [
                "apt-get",
                "build-dep",
                "-y",
                "--no-install-recommends",
                "./h-1"
            ]
        );
    }

    #[test]
    fn the_changes_file_is_named_for_what_was_built() {
        assert_eq!(
            changes_architecture(&[Component::Any, Component::Source], "arm64"),
            "arm64"
        );
        assert_eq!(changes_architecture(&[Component::All], "arm64"), "all");
        assert_eq!(
            changes_architecture(&[Component::Source], "arm64"),
            "source"
        );
    }

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
        assert_eq!(
            changelog_top("foo (2:1.0-1) bookworm-backports; urgency=low\n"),
            Some(("foo", "2:1.0-1", "bookworm-backports"))
        );
        assert!(binnmu_entry("garbage\n", &b, "x").is_err());
    }

    #[test]
    fn dates_are_rfc_2822_in_utc() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc2822(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 +0000");
    }

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

    #[test]
    fn build_paths_are_absolute_and_plain() {
        assert!(checked_build_path("/build/strata").is_ok());
        for bad in [
            "build",
            "/",
            "/build/../etc",
            "/build//x",
            "/build/./x",
            "/build/",
        ] {
            assert!(checked_build_path(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let e = checked_build_path(dir.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty"), "{e}");
    }

    #[test]
    fn the_log_keeps_the_last_lines_of_what_ran() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.build");
        let mut log = BuildLog::create(&path).unwrap();
        log.run(Command::new("sh").args(["-c", "seq 1 30; echo oops >&2; printf tail"]))
            .unwrap();
        let e = log
            .run(Command::new("sh").args(["-c", "exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sh failed (exit status: 3)"), "{e}");
        let tail = log.tail();
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(
            tail.contains("\noops\ntail\nstrata-build: running sh -c exit 3"),
            "{tail}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("strata-build: running sh -c seq 1 30"),
            "{text}"
        );
        assert!(text.contains("\n1\n2\n"));
    }
}
