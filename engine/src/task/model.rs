//! Task documents as serde types, checked as strictly as debusine's pydantic
//! models (extra keys forbidden).
//!
//! ```text
//! {"task": "SystemBootstrap" | "PackageBuild" | "Lintian",
//!  "task_data": {...}}
//!     │
//!     ├─ serde (deny_unknown_fields), through serde_path_to_error:
//!     │    unknown keys, wrong types, missing keys → `task_data.a[0].b: …`
//!     └─ rules no type can say (patterns, flat suites, binNMU, keyrings…)
//!          → the same `path: message` shape
//! ```
//!
//! Option names are debusine's, and the ones a stage takes are passed to it
//! unchanged (the `bootstrap` and `build` stages were made for that).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A task document that is not valid: where (`task_data.x[0].y`) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Invalid {
    /// The key path, as `task_data.bootstrap_repositories[0].suite`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl Invalid {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A checked task. One is made per command, so the variants' sizes differ
/// at no cost worth a box.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Task {
    /// A Debian system by mmdebstrap, handed back as a tarball.
    SystemBootstrap(SystemBootstrapData),
    /// A Debian system as a bootable disk image.
    SystemImageBuild(SystemImageBuildData),
    /// A source package built in an environment.
    PackageBuild(PackageBuildData),
    /// lintian over packages, in an environment.
    Lintian(LintianData),
}

impl Task {
    /// The task's name as documents spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Task::SystemBootstrap(_) => "SystemBootstrap",
            Task::SystemImageBuild(_) => "SystemImageBuild",
            Task::PackageBuild(_) => "PackageBuild",
            Task::Lintian(_) => "Lintian",
        }
    }

    /// Who to tell when the task fails.
    pub fn on_failure(&self) -> &[Notification] {
        let n = match self {
            Task::SystemBootstrap(d) => &d.notifications,
            Task::SystemImageBuild(d) => &d.notifications,
            Task::PackageBuild(d) => &d.notifications,
            Task::Lintian(d) => &d.notifications,
        };
        n.as_ref().map_or(&[], |n| n.on_failure.as_slice())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    task: String,
    task_data: Value,
}

const KINDS: [&str; 4] = [
    "SystemBootstrap",
    "SystemImageBuild",
    "PackageBuild",
    "Lintian",
];

/// What a task may ask for at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The sum of a disk image's partitions, in GiB.
    pub max_image_gib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_image_gib: 64 }
    }
}

/// Parses and checks a task document.
pub fn parse(text: &str, limits: &Limits) -> Result<Task, Invalid> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        Invalid::at(
            "(document)",
            format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let doc: Document = typed(&doc, "")?;
    let task = match doc.task.as_str() {
        "SystemBootstrap" => Task::SystemBootstrap(typed(&doc.task_data, "task_data")?),
        "SystemImageBuild" => Task::SystemImageBuild(typed(&doc.task_data, "task_data")?),
        "PackageBuild" => Task::PackageBuild(typed(&doc.task_data, "task_data")?),
        "Lintian" => Task::Lintian(typed(&doc.task_data, "task_data")?),
        other => {
            return Err(Invalid::at(
                "task",
                format!("unknown task `{other}`; strata knows {}", KINDS.join(", ")),
            ));
        }
    };
    let mut check = Check::default();
    match &task {
        Task::SystemBootstrap(d) => d.check(&mut check),
        Task::SystemImageBuild(d) => d.check(&mut check, limits),
        Task::PackageBuild(d) => d.check(&mut check),
        Task::Lintian(d) => d.check(&mut check),
    }
    match check.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(task),
    }
}

/// Deserializes `value` (found at `prefix`), naming the key path on error.
fn typed<T: serde::de::DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix, inner.as_str()) {
            ("", ".") => "(document)".to_owned(),
            ("", p) => p.to_owned(),
            (pre, ".") => pre.to_owned(),
            (pre, p) if p.starts_with('[') => format!("{pre}{p}"),
            (pre, p) => format!("{pre}.{p}"),
        };
        Invalid::at(path, e.into_inner().to_string())
    })
}

/// Collects rule violations with their paths.
#[derive(Debug, Default)]
struct Check {
    errors: Vec<Invalid>,
}

impl Check {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Invalid::at(path, message));
    }

    fn pattern(&mut self, path: &str, value: &str, ok: impl Fn(&str) -> bool, what: &str) {
        if !ok(value) {
            self.fail(path, format!("`{value}` is not {what}"));
        }
    }

    fn architecture(&mut self, path: &str, value: &str) {
        self.pattern(
            path,
            value,
            is_architecture,
            "a Debian architecture (such as amd64)",
        );
    }

    fn notifications(&mut self, n: &Option<Notifications>) {
        let Some(n) = n else { return };
        for (i, item) in n.on_failure.iter().enumerate() {
            let at = format!("task_data.notifications.on_failure[{i}]");
            self.pattern(
                &format!("{at}.channel"),
                &item.channel,
                is_identifier,
                "a channel name (letters, digits, `_`, `-`, `.`)",
            );
            let Some(data) = &item.data else { continue };
            if let Some(from) = &data.from {
                self.pattern(
                    &format!("{at}.data.from"),
                    from,
                    is_email,
                    "an email address",
                );
            }
            for (key, list) in [("to", &data.to), ("cc", &data.cc)] {
                for (j, addr) in list.iter().flatten().enumerate() {
                    self.pattern(
                        &format!("{at}.data.{key}[{j}]"),
                        addr,
                        is_email,
                        "an email address",
                    );
                }
            }
            if let Some(subject) = &data.subject
                && subject.contains(['\r', '\n'])
            {
                self.fail(
                    format!("{at}.data.subject"),
                    "a subject is one line: no line breaks",
                );
            }
        }
    }
}

/// The execution backends debusine names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// strata's choice: unshare.
    #[default]
    Auto,
    /// bubblewrap over a stored tree.
    Unshare,
    /// An incus container.
    IncusLxc,
    /// An incus virtual machine.
    IncusVm,
    /// qemu over a disk image.
    Qemu,
}

impl Backend {
    /// `auto` resolved: unshare.
    pub fn resolved(self) -> Backend {
        match self {
            Backend::Auto => Backend::Unshare,
            other => other,
        }
    }

    /// The name as documents spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Unshare => "unshare",
            Backend::IncusLxc => "incus-lxc",
            Backend::IncusVm => "incus-vm",
            Backend::Qemu => "qemu",
        }
    }
}

/// `notifications`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// Sent when the task fails.
    #[serde(default)]
    pub on_failure: Vec<Notification>,
}

/// One message to send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// A channel of the notifications config file.
    pub channel: String,
    /// What overrides the channel's defaults.
    #[serde(default)]
    pub data: Option<EmailData>,
}

/// An email's fields; unset ones come from the channel.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailData {
    /// Sender address.
    #[serde(default)]
    pub from: Option<String>,
    /// Recipients.
    #[serde(default)]
    pub to: Option<Vec<String>>,
    /// Copies.
    #[serde(default)]
    pub cc: Option<Vec<String>>,
    /// Subject, with `$work_request_id` and `$work_request_result`.
    #[serde(default)]
    pub subject: Option<String>,
}

// ---------------------------------------------------------------- SystemBootstrap

/// SystemBootstrap's task_data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemBootstrapData {
    /// mmdebstrap's options.
    pub bootstrap_options: BootstrapOptions,
    /// Where packages come from; the first one's suite is the system's.
    pub bootstrap_repositories: Vec<BootstrapRepository>,
    /// A script run in the new system.
    #[serde(default)]
    pub customization_script: Option<String>,
    /// Who to tell on failure.
    #[serde(default)]
    pub notifications: Option<Notifications>,
}

/// `bootstrap_options`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapOptions {
    /// The system's architecture.
    pub architecture: String,
    /// mmdebstrap's --variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
    /// More packages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_packages: Vec<String>,
    /// Signed-By in the sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_signed_by: Option<bool>,
}

/// mmdebstrap's variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Variant {
    Extract,
    Custom,
    Essential,
    Apt,
    Required,
    Minbase,
    Buildd,
    Important,
    Debootstrap,
    #[serde(rename = "-")]
    Dash,
    Standard,
}

impl Variant {
    /// The name as mmdebstrap spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Extract => "extract",
            Variant::Custom => "custom",
            Variant::Essential => "essential",
            Variant::Apt => "apt",
            Variant::Required => "required",
            Variant::Minbase => "minbase",
            Variant::Buildd => "buildd",
            Variant::Important => "important",
            Variant::Debootstrap => "debootstrap",
            Variant::Dash => "-",
            Variant::Standard => "standard",
        }
    }
}

/// One of `bootstrap_repositories`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRepository {
    /// The repository's URI; left out, the host's Debian mirror (strata's
    /// extension: debusine requires it, but no mirror is written down here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Suite or codename; ending in `/`, a flat repository.
    pub suite: String,
    /// deb, deb-src.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<RepositoryType>>,
    /// Components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
    /// How signatures are checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_signature_with: Option<CheckSignatureWith>,
    /// A package installed too, usually the keyring's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring_package: Option<String>,
    /// The keyring for `external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<Keyring>,
}

/// deb822 Types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[allow(missing_docs)]
pub enum RepositoryType {
    #[serde(rename = "deb")]
    Deb,
    #[serde(rename = "deb-src")]
    DebSrc,
}

/// `check_signature_with`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum CheckSignatureWith {
    System,
    External,
    NoCheck,
}

/// A repository's keyring.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    /// http(s) URL, or file:// under the keyring folders.
    pub url: String,
    /// Expected SHA-256 (hex); empty means unchecked, as in debusine.
    #[serde(default, skip_serializing_if = "is_unset")]
    pub sha256sum: Option<String>,
    /// Copy it into the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<bool>,
}

fn is_unset(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

impl SystemBootstrapData {
    fn check(&self, c: &mut Check) {
        let o = &self.bootstrap_options;
        c.architecture("task_data.bootstrap_options.architecture", &o.architecture);
        for (i, p) in o.extra_packages.iter().enumerate() {
            c.pattern(
                &format!("task_data.bootstrap_options.extra_packages[{i}]"),
                p,
                is_package,
                "a package name",
            );
        }
        if self.bootstrap_repositories.is_empty() {
            c.fail(
                "task_data.bootstrap_repositories",
                "at least one repository is needed",
            );
        }
        for (i, r) in self.bootstrap_repositories.iter().enumerate() {
            let at = format!("task_data.bootstrap_repositories[{i}]");
            check_suite(c, &at, &r.suite, r.components.as_deref(), false);
            if let Some(m) = &r.mirror {
                c.pattern(&format!("{at}.mirror"), m, is_uri, "a URI");
            }
            if let Some(p) = &r.keyring_package {
                c.pattern(
                    &format!("{at}.keyring_package"),
                    p,
                    is_package,
                    "a package name",
                );
            }
            if r.check_signature_with == Some(CheckSignatureWith::External) && r.keyring.is_none() {
                c.fail(
                    format!("{at}.keyring"),
                    "check_signature_with `external` needs a keyring",
                );
            }
            if let Some(k) = &r.keyring {
                check_keyring(c, &format!("{at}.keyring"), k);
            }
        }
        c.notifications(&self.notifications);
    }
}

fn check_suite(
    c: &mut Check,
    at: &str,
    suite: &str,
    components: Option<&[String]>,
    required: bool,
) {
    c.pattern(
        &format!("{at}.suite"),
        suite,
        is_suite,
        "a suite name (letters, digits, `_`, `.`, `/`, ` `, `-`)",
    );
    let flat = suite.ends_with('/');
    match components {
        Some(_) if flat => c.fail(
            format!("{at}.components"),
            format!("suite `{suite}` ends in `/`: a flat repository has no components"),
        ),
        None if required && !flat => c.fail(
            format!("{at}.components"),
            format!("suite `{suite}` is not flat (no trailing `/`): components are required"),
        ),
        Some(list) => {
            for (j, comp) in list.iter().enumerate() {
                c.pattern(
                    &format!("{at}.components[{j}]"),
                    comp,
                    is_component,
                    "a component name (letters, digits, `_`, `-`)",
                );
            }
        }
        None => {}
    }
}

fn check_keyring(c: &mut Check, at: &str, k: &Keyring) {
    let url = k.url.as_str();
    if let Some(path) = url.strip_prefix("file://") {
        let inside = ["/usr/share/keyrings/", "/usr/local/share/keyrings/"]
            .iter()
            .any(|dir| path.starts_with(dir));
        let clean = !path.split('/').any(|part| part == ".." || part == ".");
        if !inside || !clean {
            c.fail(
                format!("{at}.url"),
                format!(
                    "`{url}`: a file:// keyring must be under /usr/share/keyrings/ or /usr/local/share/keyrings/ (no `.` or `..`)"
                ),
            );
        }
    } else if !(url.starts_with("http://") || url.starts_with("https://")) {
        c.fail(
            format!("{at}.url"),
            format!("`{url}`: a keyring URL is http://, https:// or file://"),
        );
    }
    if let Some(sum) = &k.sha256sum
        && !sum.is_empty()
        && !(sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        c.fail(format!("{at}.sha256sum"), "a SHA-256 is 64 hex digits");
    }
}

// ---------------------------------------------------------------- PackageBuild

/// PackageBuild's task_data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageBuildData {
    /// What to build.
    pub input: PackageBuildInput,
    /// Where to build it: a lookup such as `debian/match:codename=bookworm`.
    pub environment: String,
    /// How the environment runs.
    #[serde(default)]
    pub backend: Backend,
    /// The architecture packages are built for.
    pub host_architecture: String,
    /// The architecture the build runs on; `null`: any.
    #[serde(default, deserialize_with = "present")]
    pub build_architecture: Option<Option<String>>,
    /// any, all, source.
    #[serde(default)]
    pub build_components: Option<Vec<BuildComponent>>,
    /// Build profiles.
    #[serde(default)]
    pub build_profiles: Option<Vec<String>>,
    /// DEB_BUILD_OPTIONS.
    #[serde(default)]
    pub build_options: Option<String>,
    /// Where in the environment the build happens.
    #[serde(default)]
    pub build_path: Option<String>,
    /// A binary-only rebuild.
    #[serde(default)]
    pub binnmu: Option<BinNmu>,
    /// More apt repositories.
    #[serde(default)]
    pub extra_repositories: Option<Vec<ExtraRepository>>,
    /// sbuild's build-dependency resolver; strata's build stage resolves
    /// with apt (`apt-get build-dep`), the default, and refuses the others.
    #[serde(default)]
    pub build_dep_resolver: Option<BuildDepResolver>,
    /// Optimisation criteria for the `aspcud` resolver.
    #[serde(default)]
    pub aspcud_criteria: Option<String>,
    /// Who to tell on failure.
    #[serde(default)]
    pub notifications: Option<Notifications>,
}

/// sbuild's build-dependency resolvers, as debusine names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum BuildDepResolver {
    Apt,
    Aptitude,
    Aspcud,
    Xapt,
    Null,
}

/// Tells a key given as `null` (Some(None)) from a key left out (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// PackageBuild's `input`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageBuildInput {
    /// The .dsc: a path or a file:// URL (strata has no artifact ids).
    pub source_artifact: String,
    /// .deb files (or .changes listing them) the build may depend on.
    #[serde(default)]
    pub extra_binary_artifacts: Vec<String>,
}

/// What dpkg-buildpackage builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum BuildComponent {
    Any,
    All,
    Source,
}

/// A binNMU.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BinNmu {
    /// The changelog entry's text.
    pub changelog: String,
    /// What the version gets, such as `+b1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// An RFC 2822 date or seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Value>,
    /// `Name <address>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainer: Option<String>,
}

/// One of `extra_repositories`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraRepository {
    /// The repository's URI.
    pub url: String,
    /// Suite; ending in `/`, a flat repository.
    pub suite: String,
    /// Components; required unless flat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
    /// ASCII-armored key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

impl PackageBuildData {
    fn check(&self, c: &mut Check) {
        check_artifact(
            c,
            "task_data.input.source_artifact",
            &self.input.source_artifact,
            &[".dsc"],
        );
        for (i, a) in self.input.extra_binary_artifacts.iter().enumerate() {
            check_artifact(
                c,
                &format!("task_data.input.extra_binary_artifacts[{i}]"),
                a,
                &[".deb", ".udeb", ".changes"],
            );
        }
        if let Err(e) = super::env::Lookup::parse(&self.environment) {
            c.fail("task_data.environment", e);
        }
        if self.host_architecture != "all" {
            c.architecture("task_data.host_architecture", &self.host_architecture);
        }
        if let Some(Some(a)) = &self.build_architecture {
            c.architecture("task_data.build_architecture", a);
        }
        if let Some(list) = &self.build_components {
            if list.is_empty() {
                c.fail(
                    "task_data.build_components",
                    "at least one of any, all, source",
                );
            }
            for (i, x) in list.iter().enumerate() {
                if list[..i].contains(x) {
                    c.fail(format!("task_data.build_components[{i}]"), "given twice");
                }
            }
            if self.binnmu.is_some() {
                for (bad, why) in [
                    (BuildComponent::All, "a binNMU cannot build `all`"),
                    (BuildComponent::Source, "a binNMU cannot build `source`"),
                ] {
                    if list.contains(&bad) {
                        c.fail("task_data.binnmu", why);
                    }
                }
            }
        }
        for (i, p) in self.build_profiles.iter().flatten().enumerate() {
            c.pattern(
                &format!("task_data.build_profiles[{i}]"),
                p,
                |s| {
                    !s.is_empty()
                        && s.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b)
                        })
                },
                "a build profile (such as nocheck)",
            );
        }
        match self.build_dep_resolver {
            None | Some(BuildDepResolver::Apt) => {}
            Some(other) => c.fail(
                "task_data.build_dep_resolver",
                format!(
                    "`{}` is not available: strata resolves build-dependencies with apt (`apt-get build-dep`) only",
                    format!("{other:?}").to_lowercase()
                ),
            ),
        }
        if self.aspcud_criteria.is_some()
            && self.build_dep_resolver != Some(BuildDepResolver::Aspcud)
        {
            c.fail(
                "task_data.aspcud_criteria",
                "applies only to the `aspcud` build_dep_resolver",
            );
        }
        if let Some(o) = &self.build_options
            && o.contains('\n')
        {
            c.fail("task_data.build_options", "build options are one line");
        }
        if let Some(p) = &self.build_path
            && (!p.starts_with('/') || p.split('/').any(|s| s == ".." || s == "."))
        {
            c.fail(
                "task_data.build_path",
                format!("`{p}` is not an absolute path without `.` or `..`"),
            );
        }
        if let Some(b) = &self.binnmu {
            if b.changelog.is_empty() {
                c.fail("task_data.binnmu.changelog", "the changelog entry is empty");
            }
            if let Some(t) = &b.timestamp
                && !(t.is_string() || t.is_u64())
            {
                c.fail(
                    "task_data.binnmu.timestamp",
                    "a timestamp is an RFC 2822 date string or seconds since the epoch",
                );
            }
        }
        for (i, r) in self.extra_repositories.iter().flatten().enumerate() {
            let at = format!("task_data.extra_repositories[{i}]");
            check_suite(c, &at, &r.suite, r.components.as_deref(), true);
            c.pattern(&format!("{at}.url"), &r.url, is_uri, "a URI");
        }
        c.notifications(&self.notifications);
    }
}

fn check_artifact(c: &mut Check, at: &str, value: &str, suffixes: &[&str]) {
    if value.is_empty() || !suffixes.iter().any(|s| value.ends_with(s)) {
        c.fail(
            at,
            format!(
                "`{value}` is not a path or file:// URL of a {} file (strata has no artifact ids)",
                suffixes.join(" or ")
            ),
        );
    } else if value.contains("://") && !value.starts_with("file:///") {
        c.fail(
            at,
            format!("`{value}`: only local files (paths or file:/// URLs)"),
        );
    }
}

// ---------------------------------------------------------------- Lintian

/// Lintian's task_data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintianData {
    /// What to analyse.
    pub input: LintianInput,
    /// Which analyses.
    #[serde(default)]
    pub output: LintianOutput,
    /// Where lintian runs: a lookup.
    pub environment: String,
    /// How the environment runs.
    #[serde(default)]
    pub backend: Backend,
    /// The environment's architecture; the host's when left out.
    #[serde(default)]
    pub host_architecture: Option<String>,
    /// Only these tags.
    #[serde(default)]
    pub include_tags: Vec<String>,
    /// Never these tags.
    #[serde(default)]
    pub exclude_tags: Vec<String>,
    /// The least severe tag that fails the task (debusine's default: none).
    #[serde(default)]
    pub fail_on_severity: Option<Severity>,
    /// Who to tell on failure.
    #[serde(default)]
    pub notifications: Option<Notifications>,
}

/// Lintian's `input`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintianInput {
    /// A .dsc: path or file:// URL.
    #[serde(default)]
    pub source_artifact: Option<String>,
    /// .deb/.udeb files, or .changes files listing them.
    #[serde(default)]
    pub binary_artifacts: Vec<String>,
}

/// Lintian's `output`: which analyses run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintianOutput {
    /// The source package.
    #[serde(default = "yes")]
    pub source_analysis: bool,
    /// Architecture: all packages.
    #[serde(default = "yes")]
    pub binary_all_analysis: bool,
    /// The other binary packages.
    #[serde(default = "yes")]
    pub binary_any_analysis: bool,
}

impl Default for LintianOutput {
    fn default() -> Self {
        LintianOutput {
            source_analysis: true,
            binary_all_analysis: true,
            binary_any_analysis: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// lintian severities (and none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Severity {
    Error,
    Warning,
    Info,
    Pedantic,
    Experimental,
    Overridden,
    None,
}

impl LintianData {
    fn check(&self, c: &mut Check) {
        if let Some(s) = &self.input.source_artifact {
            check_artifact(c, "task_data.input.source_artifact", s, &[".dsc"]);
        }
        for (i, a) in self.input.binary_artifacts.iter().enumerate() {
            check_artifact(
                c,
                &format!("task_data.input.binary_artifacts[{i}]"),
                a,
                &[".deb", ".udeb", ".changes"],
            );
        }
        if self.input.source_artifact.is_none() && self.input.binary_artifacts.is_empty() {
            c.fail(
                "task_data.input",
                "nothing to analyse: give source_artifact or binary_artifacts",
            );
        }
        let o = &self.output;
        if !(o.source_analysis || o.binary_all_analysis || o.binary_any_analysis) {
            c.fail("task_data.output", "every analysis is turned off");
        }
        if let Err(e) = super::env::Lookup::parse(&self.environment) {
            c.fail("task_data.environment", e);
        }
        if let Some(a) = &self.host_architecture {
            c.architecture("task_data.host_architecture", a);
        }
        for (key, tags) in [
            ("include_tags", &self.include_tags),
            ("exclude_tags", &self.exclude_tags),
        ] {
            for (i, t) in tags.iter().enumerate() {
                c.pattern(
                    &format!("task_data.{key}[{i}]"),
                    t,
                    |s| {
                        s.chars()
                            .next()
                            .is_some_and(|ch| ch.is_ascii_alphanumeric())
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
                    },
                    "a lintian tag",
                );
            }
        }
        c.notifications(&self.notifications);
    }
}

// ---------------------------------------------------------------- SystemImageBuild

/// SystemImageBuild's task_data: SystemBootstrap's keys and the disk image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemImageBuildData {
    /// mmdebstrap's options.
    pub bootstrap_options: BootstrapOptions,
    /// Where packages come from; the first one's suite is the system's.
    pub bootstrap_repositories: Vec<BootstrapRepository>,
    /// A script run in the new system.
    #[serde(default)]
    pub customization_script: Option<String>,
    /// The image.
    pub disk_image: DiskImage,
    /// Who to tell on failure.
    #[serde(default)]
    pub notifications: Option<Notifications>,
}

impl SystemImageBuildData {
    /// The SystemBootstrap part: the system the image holds.
    pub fn system(&self) -> SystemBootstrapData {
        SystemBootstrapData {
            bootstrap_options: self.bootstrap_options.clone(),
            bootstrap_repositories: self.bootstrap_repositories.clone(),
            customization_script: self.customization_script.clone(),
            notifications: self.notifications.clone(),
        }
    }

    fn check(&self, c: &mut Check, limits: &Limits) {
        self.system().check(c);
        self.disk_image.check(c, limits);
    }
}

/// `disk_image`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskImage {
    /// raw or qcow2.
    pub format: ImageFormat,
    /// The image file's name, without its extension.
    #[serde(default = "default_image_filename")]
    pub filename: String,
    /// The kernel; default: the vendor's (`linux-image-amd64` on Debian amd64).
    #[serde(default)]
    pub kernel_package: Option<String>,
    /// The bootloader; default: systemd-boot.
    #[serde(default)]
    pub bootloader: Option<Bootloader>,
    /// In order on the disk.
    pub partitions: Vec<Partition>,
}

fn default_image_filename() -> String {
    "image".into()
}

/// A disk image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

/// The bootloaders strata installs (both boot through UEFI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum Bootloader {
    #[default]
    SystemdBoot,
    GrubEfi,
}

impl Bootloader {
    /// The name as documents (and the bootloader stage) spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::SystemdBoot => "systemd-boot",
            Bootloader::GrubEfi => "grub-efi",
        }
    }
}

/// One of `partitions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// GiB (signed, so that a negative size is named, not a type error).
    pub size: i64,
    /// What it holds.
    pub filesystem: Filesystem,
    /// Where it is mounted: an absolute path, or `none`.
    #[serde(default = "no_mountpoint")]
    pub mountpoint: String,
}

fn no_mountpoint() -> String {
    "none".into()
}

/// What a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Filesystem {
    Ext4,
    Vfat,
    Swap,
    /// A partition left unformatted.
    None,
    /// No partition: a gap before the next one.
    Freespace,
}

impl Filesystem {
    /// The name as documents spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Vfat => "vfat",
            Filesystem::Swap => "swap",
            Filesystem::None => "none",
            Filesystem::Freespace => "freespace",
        }
    }
}

/// Where an EFI system partition is mounted.
pub const ESP_MOUNTPOINTS: [&str; 2] = ["/boot/efi", "/efi"];

impl DiskImage {
    fn check(&self, c: &mut Check, limits: &Limits) {
        let at = "task_data.disk_image";
        c.pattern(
            &format!("{at}.filename"),
            &self.filename,
            |s| {
                !s.starts_with('.')
                    && !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
            },
            "a file name (letters, digits, `+`, `.`, `_`, `-`; not starting with `.`)",
        );
        if let Some(k) = &self.kernel_package {
            c.pattern(
                &format!("{at}.kernel_package"),
                k,
                is_package,
                "a package name",
            );
        }
        if self.bootloader == Some(Bootloader::GrubEfi) {
            c.fail(
                format!("{at}.bootloader"),
                "grub-efi is not supported yet: strata's bootloader stage installs systemd-boot (leave bootloader out, or set systemd-boot)",
            );
        }
        if self.partitions.is_empty() {
            c.fail(
                format!("{at}.partitions"),
                "at least one partition is needed",
            );
            return;
        }
        let mut root = false;
        let mut esp = false;
        // Mountpoints so far, and the partitions they belong to.
        let mut seen: Vec<&str> = Vec::new();
        let mut seen_at: Vec<usize> = Vec::new();
        let mut total: i64 = 0;
        for (i, p) in self.partitions.iter().enumerate() {
            let at = format!("{at}.partitions[{i}]");
            if p.size <= 0 {
                c.fail(
                    format!("{at}.size"),
                    format!("{} is not a positive size (GiB)", p.size),
                );
            }
            total = total.saturating_add(p.size.max(0));
            let mount = p.mountpoint.as_str();
            if mount == "none" {
                continue;
            }
            let unmountable = matches!(
                p.filesystem,
                Filesystem::Swap | Filesystem::None | Filesystem::Freespace
            );
            if unmountable {
                c.fail(
                    format!("{at}.mountpoint"),
                    format!(
                        "a {} partition is not mounted: its mountpoint is `none`, not `{mount}`",
                        p.filesystem.as_str()
                    ),
                );
                continue;
            }
            if !is_mountpoint(mount) {
                c.fail(
                    format!("{at}.mountpoint"),
                    format!(
                        "`{mount}` is not an absolute path (`/` then names of letters, digits, `+`, `.`, `_`, `-`, no `.` or `..`), nor `none`"
                    ),
                );
                continue;
            }
            if let Some(first) = seen.iter().position(|m| *m == mount) {
                let first = seen_at[first];
                c.fail(
                    format!("{at}.mountpoint"),
                    match mount {
                        "/" => format!(
                            "a second root partition: partitions[{first}] is mounted at / already"
                        ),
                        _ => format!("`{mount}` is the mountpoint of partitions[{first}] already"),
                    },
                );
                continue;
            }
            seen.push(mount);
            seen_at.push(i);
            if mount == "/" {
                root = true;
                if p.filesystem != Filesystem::Ext4 {
                    c.fail(
                        format!("{at}.filesystem"),
                        format!("the root partition is ext4, not {}", p.filesystem.as_str()),
                    );
                }
            }
            if ESP_MOUNTPOINTS.contains(&mount) {
                esp = true;
                if p.filesystem != Filesystem::Vfat {
                    c.fail(
                        format!("{at}.filesystem"),
                        format!(
                            "{mount} is the EFI system partition, which is vfat, not {}",
                            p.filesystem.as_str()
                        ),
                    );
                }
            }
        }
        if !root {
            c.fail(
                format!("{at}.partitions"),
                "no root partition: one ext4 partition needs mountpoint `/`",
            );
        }
        if !esp {
            let loader = self.bootloader.unwrap_or_default().as_str();
            c.fail(
                format!("{at}.partitions"),
                format!(
                    "{loader} boots from an EFI system partition: add a vfat partition with mountpoint /boot/efi"
                ),
            );
        }
        let cap = i64::try_from(limits.max_image_gib).unwrap_or(i64::MAX);
        if total > cap {
            c.fail(
                format!("{at}.partitions"),
                format!(
                    "the partitions add up to {total} GiB, more than the cap of {cap} GiB (--max-image-size)"
                ),
            );
        }
    }
}

/// `/` or `/name/name…`, each name something fstab and a path can carry.
fn is_mountpoint(s: &str) -> bool {
    s == "/"
        || (s.starts_with('/')
            && s[1..].split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
            }))
}

// ---------------------------------------------------------------- patterns

/// `^(\w|[./ -])+$` as Python reads it (\w is Unicode word characters).
fn is_suite(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| is_word(c) || "./ -".contains(c))
}

/// `^(\w|-)+$`.
fn is_component(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| is_word(c) || c == '-')
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_architecture(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_package(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.:=~_/-".contains(&b))
}

fn is_uri(s: &str) -> bool {
    s.split_once(':').is_some_and(|(scheme, rest)| {
        scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
            && !rest.is_empty()
            && !rest.contains(char::is_whitespace)
    })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// local@domain, nothing that could end a header or an SMTP command.
pub(crate) fn is_email(s: &str) -> bool {
    let bad = |c: char| c.is_whitespace() || c.is_control() || "<>,;\"()[]\\".contains(c);
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !s.contains(bad)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(text: &str) -> Result<Task, Invalid> {
        parse(text, &Limits::default())
    }

    /// A SystemImageBuild document with these partitions.
    fn image(partitions: serde_json::Value, extra: serde_json::Value) -> String {
        let mut disk = serde_json::json!({"format": "qcow2", "partitions": partitions});
        if let (Some(d), Some(e)) = (disk.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        serde_json::json!({"task": "SystemImageBuild", "task_data": {
            "bootstrap_options": {"architecture": "amd64"},
            "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}],
            "disk_image": disk,
        }})
        .to_string()
    }

    fn esp() -> serde_json::Value {
        serde_json::json!({"size": 1, "filesystem": "vfat", "mountpoint": "/boot/efi"})
    }

    fn root() -> serde_json::Value {
        serde_json::json!({"size": 4, "filesystem": "ext4", "mountpoint": "/"})
    }

    #[test]
    fn a_disk_layout_with_an_esp_swap_a_gap_and_a_root_is_taken() {
        let doc = image(
            serde_json::json!([esp(), {"size": 1, "filesystem": "swap"},
                {"size": 1, "filesystem": "freespace"}, root()]),
            serde_json::json!({"kernel_package": "linux-image-amd64", "bootloader": "systemd-boot"}),
        );
        let Task::SystemImageBuild(d) = parse_default(&doc).unwrap() else {
            panic!("not a SystemImageBuild")
        };
        assert_eq!(d.disk_image.filename, "image");
        assert_eq!(d.disk_image.bootloader, Some(Bootloader::SystemdBoot));
        assert_eq!(d.disk_image.partitions[2].filesystem, Filesystem::Freespace);
        assert_eq!(d.system().bootstrap_options.architecture, "amd64");
    }

    #[test]
    fn bad_disk_layouts_are_refused_naming_the_key() {
        for (partitions, extra, path, message) in [
            (
                serde_json::json!([esp()]),
                serde_json::json!({}),
                "task_data.disk_image.partitions",
                "no root partition",
            ),
            (
                serde_json::json!([esp(), root(), root()]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[2].mountpoint",
                "a second root partition: partitions[1] is mounted at / already",
            ),
            (
                serde_json::json!([esp(), root(), esp()]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[2].mountpoint",
                "`/boot/efi` is the mountpoint of partitions[0] already",
            ),
            (
                serde_json::json!([{"size": 1, "filesystem": "ext4", "mountpoint": "/boot/efi"}, root()]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[0].filesystem",
                "/boot/efi is the EFI system partition, which is vfat, not ext4",
            ),
            (
                serde_json::json!([esp(), {"size": 0, "filesystem": "ext4", "mountpoint": "/"}]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[1].size",
                "0 is not a positive size",
            ),
            (
                serde_json::json!([esp(), {"size": -3, "filesystem": "ext4", "mountpoint": "/"}]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[1].size",
                "-3 is not a positive size",
            ),
            (
                serde_json::json!([esp(), root(), {"size": 1, "filesystem": "ext4", "mountpoint": "srv"}]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[2].mountpoint",
                "`srv` is not an absolute path",
            ),
            (
                serde_json::json!([esp(), root(), {"size": 1, "filesystem": "ext4", "mountpoint": "/srv/../etc"}]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[2].mountpoint",
                "is not an absolute path",
            ),
            (
                serde_json::json!([esp(), root(), {"size": 1, "filesystem": "swap", "mountpoint": "/swap"}]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[2].mountpoint",
                "a swap partition is not mounted",
            ),
            (
                serde_json::json!([root()]),
                serde_json::json!({}),
                "task_data.disk_image.partitions",
                "systemd-boot boots from an EFI system partition",
            ),
            (
                serde_json::json!([{"size": 1, "filesystem": "vfat", "mountpoint": "/"}, esp()]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[0].filesystem",
                "the root partition is ext4, not vfat",
            ),
            (
                serde_json::json!([esp(), {"size": 100, "filesystem": "ext4", "mountpoint": "/"}]),
                serde_json::json!({}),
                "task_data.disk_image.partitions",
                "add up to 101 GiB, more than the cap of 64 GiB",
            ),
            (
                serde_json::json!([]),
                serde_json::json!({}),
                "task_data.disk_image.partitions",
                "at least one partition",
            ),
            (
                serde_json::json!([esp(), root()]),
                serde_json::json!({"filename": "../x"}),
                "task_data.disk_image.filename",
                "is not a file name",
            ),
            (
                serde_json::json!([esp(), root()]),
                serde_json::json!({"bootloader": "grub-efi"}),
                "task_data.disk_image.bootloader",
                "grub-efi is not supported yet",
            ),
            (
                serde_json::json!([esp(), root()]),
                serde_json::json!({"bootloader": "lilo"}),
                "task_data.disk_image.bootloader",
                "unknown variant `lilo`",
            ),
            (
                serde_json::json!([esp(), {"size": 4, "filesystem": "btrfs", "mountpoint": "/"}]),
                serde_json::json!({}),
                "task_data.disk_image.partitions[1].filesystem",
                "unknown variant `btrfs`",
            ),
        ] {
            let e = parse_default(&image(partitions.clone(), extra)).unwrap_err();
            assert_eq!(e.path, path, "{partitions}: {e}");
            assert!(e.message.contains(message), "{partitions}: {e}");
        }
        // The cap is the caller's.
        let big = image(
            serde_json::json!([esp(), {"size": 100, "filesystem": "ext4", "mountpoint": "/"}]),
            serde_json::json!({}),
        );
        assert!(parse(&big, &Limits { max_image_gib: 200 }).is_ok());
    }

    #[test]
    fn paths_name_the_key() {
        let e = parse_default(r#"{"task": "SystemBootstrap", "task_data": {"bootstrap_options": {"architecture": "amd64"}, "bootstrap_repositories": [{"suite": "bookworm", "sute": 1}]}}"#).unwrap_err();
        assert_eq!(e.path, "task_data.bootstrap_repositories[0].sute", "{e}");
        assert!(e.message.contains("unknown field `sute`"), "{e}");
        let e = parse_default(r#"{"task": "SystemBootstrap", "task_data": {"bootstrap_options": {"architecture": "amd64"}, "bootstrap_repositories": [{"suite": 5}]}}"#).unwrap_err();
        assert_eq!(e.path, "task_data.bootstrap_repositories[0].suite", "{e}");
    }

    #[test]
    fn python_word_characters() {
        assert!(is_suite("bookworm-backports"));
        assert!(is_suite("./"));
        assert!(is_suite("tëst"));
        assert!(!is_suite("a;b"));
        assert!(is_component("non-free-firmware"));
        assert!(!is_component("main/debian-installer"));
        assert!(is_email("a.b+c@example.org"));
        assert!(!is_email("a@b\r\nRCPT TO:<x@y>"));
    }
}
