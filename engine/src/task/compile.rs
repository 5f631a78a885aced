//! Task → manifest.
//!
//! ```text
//! SystemBootstrap   system   [bootstrap: task_data as is]
//!                   tarball  [tar system.tar.zst]  ← tree system
//!
//! SystemImageBuild  disk     [partition: the layout, sizes in GiB]
//!                   system   [bootstrap, customize (the qemu agent), bootloader ← tree disk (its layout)]
//!                   image    [partition (the same id as disk's), mkfs of each
//!                             formatted partition ← tree system]
//!                   qcow2    [convert ← tree image]   (format qcow2 only)
//!
//! PackageBuild      environment  [bootstrap]  (a stored system's pipeline, or a new one)
//!                   extra-binaries [copy]     (only with extra_binary_artifacts)
//!                   build        [build: PackageBuild's options as is]
//!                                  build root: environment; source: files (the .dsc and its files)
//!
//! Lintian           environment  [bootstrap]
//!                   input        [copy: the .dsc/.deb/.changes files by name]
//!                   lintian      [lintian]  build root: environment; input: tree input
//!
//! backend incus-lxc: build and lintian get "backend": "incus-lxc" (the
//!   environment's tree becomes the container image, which boots /sbin/init;
//!   the build stage declares network and reaches the mirror through the
//!   `debusine` profile's NAT bridge), so the environment must hold
//!   systemd-sysv: a bootstrapped one gets it, a stored one matches only if
//!   its packages include it.
//! ```
//!
//! Local files (strata has no artifact ids) become `curl` sources with
//! file:// URLs, named by their SHA-256, so a changed file changes the ids.
//! Every pipeline has the same fixed source-epoch: the same task compiles
//! to the same ids, and the store short-circuits a repeated task.

use super::env::{Environment, Lookup};
use super::model::{
    Backend, DiskImage, Filesystem, ImageFormat, Invalid, LintianData, PackageBuildData,
    SystemBootstrapData, SystemImageBuildData, Task,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// SOURCE_DATE_EPOCH of every compiled pipeline.
pub const SOURCE_EPOCH: u64 = 1_700_000_000;

/// What environments strata bootstraps for tasks carry besides the variant,
/// always the same so that every task asking for one shares it: lintian, so
/// one environment serves PackageBuild and Lintian.
pub const ENVIRONMENT_PACKAGES: [&str; 1] = ["lintian"];

/// What an environment needs to boot in incus (its /sbin/init).
const INIT_PACKAGE: &[&str] = &["systemd-sysv"];

/// What environments bootstrapped for incus-lxc tasks carry: the same, and
/// systemd-sysv, whose /sbin/init incus boots.
pub const INCUS_ENVIRONMENT_PACKAGES: [&str; 2] = ["lintian", "systemd-sysv"];

/// A compiled task.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The manifest (format 2).
    pub manifest: Value,
    /// The pipelines whose trees hold the artifacts.
    pub exports: Vec<String>,
    /// The pipeline that is a system, recorded as an environment once built.
    pub system: Option<String>,
    /// How the environment was chosen (PackageBuild, Lintian).
    pub environment: Option<EnvironmentChoice>,
    /// The backend the task's stages run on besides unshare (incus-lxc),
    /// added to the environment's record once the task ran.
    pub backend: Option<&'static str>,
}

/// How a task's environment was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentChoice {
    /// A stored system matched the lookup.
    Stored {
        /// The lookup, completed.
        lookup: String,
        /// The system's id.
        id: String,
    },
    /// None matched: a bootstrap is compiled in.
    Bootstrapped {
        /// The lookup, completed.
        lookup: String,
    },
}

/// Compiles `task`. `envs` are the store's environments (newest first),
/// `host_arch` the dpkg architecture of this machine.
pub fn compile(task: &Task, envs: &[Environment], host_arch: &str) -> Result<Compiled, Invalid> {
    match task {
        Task::SystemBootstrap(d) => Ok(system_bootstrap(d)),
        Task::SystemImageBuild(d) => Ok(system_image_build(d)),
        Task::PackageBuild(d) => package_build(d, envs, host_arch),
        Task::Lintian(d) => lintian(d, envs, host_arch),
    }
}

fn pipeline(name: &str, build: Option<&str>, stage: Value) -> Value {
    pipeline_on(name, build, Backend::Unshare, stage)
}

/// A pipeline whose stages run on `backend` (only incus-lxc is written out:
/// unshare is the manifest's default, and keeps its pinned manifests).
fn pipeline_on(name: &str, build: Option<&str>, backend: Backend, stage: Value) -> Value {
    let mut p = Map::new();
    p.insert("name".into(), json!(name));
    if let Some(b) = build {
        p.insert("build".into(), json!(format!("name:{b}")));
    }
    if backend == Backend::IncusLxc {
        p.insert("backend".into(), json!(backend.as_str()));
    }
    p.insert("runner".into(), json!("debian"));
    p.insert("source-epoch".into(), json!(SOURCE_EPOCH));
    p.insert("stages".into(), json!([stage]));
    Value::Object(p)
}

fn system_bootstrap(d: &SystemBootstrapData) -> Compiled {
    let system = pipeline("system", None, bootstrap_stage(d));
    let tarball = pipeline(
        "tarball",
        None,
        json!({"type": "tar",
               "inputs": {"tree": {"type": "tree", "origin": "pipeline", "references": ["name:system"]}},
               "options": {"filename": "system.tar.zst", "compression": "zstd"}}),
    );
    Compiled {
        manifest: json!({"version": "2", "pipelines": [system, tarball]}),
        exports: vec!["tarball".into()],
        system: Some("system".into()),
        environment: None,
        backend: None,
    }
}

/// SystemBootstrap's one stage.
fn bootstrap_stage(d: &SystemBootstrapData) -> Value {
    let mut options = json!({
        "bootstrap_options": d.bootstrap_options,
        "bootstrap_repositories": d.bootstrap_repositories,
    });
    if let Some(s) = &d.customization_script {
        options["customization_script"] = json!(s);
    }
    json!({"type": "bootstrap", "options": options})
}

/// One GiB, the unit of a task's partition sizes.
const GIB: u64 = 1 << 30;

/// What the partition stage leaves around the partitions: 1 MiB before the
/// first (alignment, the primary GPT) and room for the backup GPT after.
const GPT_MARGIN: u64 = 2 << 20;

/// The partitions of `disk` as the partition stage takes them, each named
/// for the mkfs stage: esp, root, swap, swap2…, data, data2…
fn partition_layout(disk: &DiskImage) -> (Vec<Value>, Vec<(String, Filesystem, String)>) {
    let mut layout = Vec::new();
    let mut named: Vec<(String, Filesystem, String)> = Vec::new();
    let mut count = BTreeMap::<&str, usize>::new();
    for p in &disk.partitions {
        let size = format!("{}G", p.size);
        if p.filesystem == Filesystem::Freespace {
            layout.push(json!({"size": size, "filesystem": "freespace"}));
            continue;
        }
        let mount = p.mountpoint.as_str();
        let role = match (p.filesystem, mount) {
            (_, "/") => "root",
            (Filesystem::Vfat, m) if super::model::ESP_MOUNTPOINTS.contains(&m) => "esp",
            (Filesystem::Swap, _) => "swap",
            _ => "data",
        };
        let k = count.entry(role).or_default();
        *k += 1;
        let name = match *k {
            1 => role.to_owned(),
            k => format!("{role}{k}"),
        };
        let mut entry = json!({"name": name, "size": size, "filesystem": p.filesystem.as_str()});
        if mount != "none" {
            entry["mountpoint"] = json!(mount);
        }
        layout.push(entry);
        named.push((name, p.filesystem, mount.to_owned()));
    }
    (layout, named)
}

/// The file a SystemImageBuild hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Its name in the export.
    pub filename: String,
    /// raw or qcow2.
    pub format: &'static str,
    /// The disk's size in bytes.
    pub size: u64,
}

/// The image file `disk` compiles to.
pub fn image_file(disk: &DiskImage) -> ImageFile {
    let total: u64 = disk
        .partitions
        .iter()
        .map(|p| u64::try_from(p.size).unwrap_or(0) * GIB)
        .sum();
    let format = match disk.format {
        ImageFormat::Raw => "raw",
        ImageFormat::Qcow2 => "qcow2",
    };
    ImageFile {
        filename: format!("{}.{format}", disk.filename),
        format,
        size: total + GPT_MARGIN,
    }
}

fn system_image_build(d: &SystemImageBuildData) -> Compiled {
    let disk = &d.disk_image;
    let file = image_file(disk);
    let raw = format!("{}.raw", disk.filename);
    let tree = |name: &str| json!({"type": "tree", "origin": "pipeline", "references": [format!("name:{name}")]});
    let (layout, named) = partition_layout(disk);
    let partition = json!({"type": "partition", "options": {
        "filename": raw,
        "size": file.size,
        "architecture": d.bootstrap_options.architecture,
        "partitions": layout,
    }});
    let mut loader = json!({"filename": raw});
    if let Some(k) = &disk.kernel_package {
        loader["kernel_package"] = json!(k);
    }
    if let Some(b) = disk.bootloader {
        loader["bootloader"] = json!(b.as_str());
    }
    // The qemu backend's agent (and a VM's initramfs), before the kernel
    // comes: the image is an environment strata can start.
    let system_stages = vec![
        bootstrap_stage(&d.system()),
        json!({"type": "customize", "options": crate::backend::qemu::agent::customize_options()}),
        json!({"type": "bootloader", "inputs": {"disk": tree("disk")}, "options": loader}),
    ];
    // Each formatted partition from the system's folder at its mount point,
    // less what other partitions hold (mounted over it).
    let mounts: Vec<&str> = named
        .iter()
        .map(|(_, _, m)| m.as_str())
        .filter(|m| *m != "none")
        .collect();
    let mut image_stages = vec![partition];
    for (name, fs, mount) in &named {
        let stage = match fs {
            Filesystem::Swap => {
                json!({"type": "mkfs", "options": {"filename": raw, "partition": name, "type": "swap"}})
            }
            Filesystem::Ext4 | Filesystem::Vfat => {
                let below: Vec<String> = mounts
                    .iter()
                    .filter_map(|m| {
                        let rest = if mount == "/" {
                            m.strip_prefix('/')
                        } else {
                            m.strip_prefix(mount.as_str())
                                .and_then(|r| r.strip_prefix('/'))
                        };
                        rest.filter(|r| !r.is_empty()).map(|r| format!("/{r}"))
                    })
                    .collect();
                let mut options =
                    json!({"filename": raw, "partition": name, "type": fs.as_str(), "path": mount});
                if !below.is_empty() {
                    options["exclude"] = json!(below);
                }
                json!({"type": "mkfs", "inputs": {"tree": tree("system")}, "options": options})
            }
            Filesystem::None | Filesystem::Freespace => continue,
        };
        image_stages.push(stage);
    }
    let mut pipelines = vec![
        pipeline_of("disk", json!([image_stages[0]])),
        pipeline_of("system", Value::Array(system_stages)),
        pipeline_of("image", Value::Array(image_stages)),
    ];
    let export = match disk.format {
        ImageFormat::Raw => "image",
        ImageFormat::Qcow2 => {
            pipelines.push(pipeline(
                "qcow2",
                None,
                json!({"type": "convert", "inputs": {"tree": tree("image")},
                       "options": {"source": raw, "filename": file.filename}}),
            ));
            "qcow2"
        }
    };
    Compiled {
        manifest: json!({"version": "2", "pipelines": pipelines}),
        exports: vec![export.into()],
        // Not an environment for tasks to look up: a system image is one
        // once the qemu backend can run tasks in it.
        system: None,
        environment: None,
        backend: None,
    }
}

/// A pipeline of several stages, as [`pipeline`] makes one of one.
fn pipeline_of(name: &str, stages: Value) -> Value {
    let mut p = pipeline(name, None, Value::Null);
    p["stages"] = stages;
    p
}

/// The backend a task's stages run on: unshare or incus-lxc; the others
/// are refused, saying why.
fn stage_backend(backend: Backend) -> Result<Backend, Invalid> {
    let refuse = |why: &str| {
        Err(Invalid {
            path: "task_data.backend".into(),
            message: format!(
                "`{}` is not available to tasks: {why}; use unshare or incus-lxc",
                backend.as_str()
            ),
        })
    };
    match backend {
        Backend::Auto | Backend::Unshare => Ok(Backend::Unshare),
        Backend::IncusLxc => Ok(Backend::IncusLxc),
        Backend::IncusVm => refuse(
            "tasks do not run in incus VMs yet (and incus here runs no virtual machines: no vhost_vsock, docs/incus.md)",
        ),
        Backend::Qemu => {
            refuse("tasks do not run on the qemu backend yet (strata env can: docs/qemu.md)")
        }
    }
}

/// The environment pipeline for a lookup: a stored system's, or a bootstrap.
fn environment(
    text: &str,
    backend: Backend,
    architecture: &str,
    needs: &[&str],
    envs: &[Environment],
) -> Result<(Value, EnvironmentChoice), Invalid> {
    let at = |m: String| Invalid {
        path: "task_data.environment".into(),
        message: m,
    };
    let mut lookup = Lookup::parse(text).map_err(at)?;
    lookup
        .architecture
        .get_or_insert_with(|| architecture.to_owned());
    lookup
        .backend
        .get_or_insert_with(|| backend.as_str().to_owned());
    let rendered = lookup.render();
    let incus_needs = if backend == Backend::IncusLxc {
        INIT_PACKAGE
    } else {
        &[]
    };
    let found = envs.iter().find(|e| {
        lookup.matches(e)
            && needs
                .iter()
                .chain(incus_needs)
                .all(|n| e.packages.iter().any(|p| p == n))
    });
    if let Some(env) = found {
        let mut p = env.pipeline.clone();
        let mut named = Map::new();
        named.insert("name".into(), json!("environment"));
        if let Some(obj) = p.as_object_mut() {
            named.append(obj);
        }
        p = Value::Object(named);
        return Ok((
            p,
            EnvironmentChoice::Stored {
                lookup: rendered,
                id: env.id.clone(),
            },
        ));
    }
    if lookup.vendor != "debian" {
        return Err(at(format!(
            "no stored environment matches `{rendered}`, and strata bootstraps only debian systems"
        )));
    }
    let Some(codename) = &lookup.codename else {
        return Err(at(format!(
            "no stored environment matches `{rendered}`; to bootstrap one, strata needs its codename (codename=bookworm)"
        )));
    };
    let variant = lookup.variant.as_deref().unwrap_or("buildd");
    let extra: &[&str] = if backend == Backend::IncusLxc {
        &INCUS_ENVIRONMENT_PACKAGES
    } else {
        &ENVIRONMENT_PACKAGES
    };
    let bootstrap = json!({"type": "bootstrap", "options": {
        "bootstrap_options": {"architecture": lookup.architecture, "variant": variant, "extra_packages": extra},
        "bootstrap_repositories": [{"suite": codename, "components": ["main"]}],
    }});
    Ok((
        pipeline("environment", None, bootstrap),
        EnvironmentChoice::Bootstrapped { lookup: rendered },
    ))
}

fn package_build(
    d: &PackageBuildData,
    envs: &[Environment],
    host_arch: &str,
) -> Result<Compiled, Invalid> {
    let arch = if d.host_architecture == "all" {
        host_arch
    } else {
        d.host_architecture.as_str()
    };
    // The build runs on the build architecture; left out it is the host's.
    let env_arch = match &d.build_architecture {
        Some(Some(a)) => a.as_str(),
        _ => arch,
    };
    let backend = stage_backend(d.backend)?;
    let (env, choice) = environment(&d.environment, backend, env_arch, &["dpkg-dev"], envs)?;
    let mut sources = Sources::default();
    let source = sources.add_all("task_data.input.source_artifact", &d.input.source_artifact)?;
    let mut options = json!({"host_architecture": d.host_architecture});
    let fields: [(&str, Option<Value>); 7] = [
        (
            "build_architecture",
            d.build_architecture.clone().map(|a| json!(a)),
        ),
        (
            "build_components",
            d.build_components.as_ref().map(|c| json!(c)),
        ),
        (
            "build_profiles",
            d.build_profiles.as_ref().map(|p| json!(p)),
        ),
        ("build_options", d.build_options.as_ref().map(|o| json!(o))),
        ("build_path", d.build_path.as_ref().map(|o| json!(o))),
        ("binnmu", d.binnmu.as_ref().map(|b| json!(b))),
        (
            "extra_repositories",
            d.extra_repositories.as_ref().map(|r| json!(r)),
        ),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            options[key] = v;
        }
    }
    let mut inputs =
        json!({"source": {"type": "files", "origin": "source", "references": checksums(&source)}});
    let mut pipelines = vec![env];
    if !d.input.extra_binary_artifacts.is_empty() {
        let mut files = Vec::new();
        for (i, a) in d.input.extra_binary_artifacts.iter().enumerate() {
            files.extend(
                sources.add_all(&format!("task_data.input.extra_binary_artifacts[{i}]"), a)?,
            );
        }
        pipelines.push(files_tree("extra-binaries", &files)?);
        inputs["extra_binary_artifacts"] =
            json!({"type": "tree", "origin": "pipeline", "references": ["name:extra-binaries"]});
    }
    pipelines.push(pipeline_on(
        "build",
        Some("environment"),
        backend,
        json!({"type": "build", "inputs": inputs, "options": options}),
    ));
    Ok(Compiled {
        manifest: json!({"version": "2", "pipelines": pipelines, "sources": sources.to_json()}),
        exports: vec!["build".into()],
        system: matches!(choice, EnvironmentChoice::Bootstrapped { .. })
            .then(|| "environment".into()),
        environment: Some(choice),
        backend: (backend == Backend::IncusLxc).then_some(backend.as_str()),
    })
}

fn lintian(d: &LintianData, envs: &[Environment], host_arch: &str) -> Result<Compiled, Invalid> {
    let arch = d.host_architecture.as_deref().unwrap_or(host_arch);
    let backend = stage_backend(d.backend)?;
    let (env, choice) = environment(&d.environment, backend, arch, &["lintian"], envs)?;
    let mut sources = Sources::default();
    let mut files = Vec::new();
    if let Some(s) = &d.input.source_artifact {
        files.extend(sources.add_all("task_data.input.source_artifact", s)?);
    }
    for (i, a) in d.input.binary_artifacts.iter().enumerate() {
        files.extend(sources.add_all(&format!("task_data.input.binary_artifacts[{i}]"), a)?);
    }
    let mut analyses = Vec::new();
    for (on, name) in [
        (d.output.source_analysis, "source"),
        (d.output.binary_all_analysis, "binary-all"),
        (d.output.binary_any_analysis, "binary-any"),
    ] {
        if on {
            analyses.push(name);
        }
    }
    // debusine's Lintian fails on nothing unless asked.
    let severity = d.fail_on_severity.unwrap_or(super::model::Severity::None);
    let mut options = json!({"analyses": analyses, "fail_on_severity": severity});
    if !d.include_tags.is_empty() {
        options["include_tags"] = json!(d.include_tags);
    }
    if !d.exclude_tags.is_empty() {
        options["exclude_tags"] = json!(d.exclude_tags);
    }
    let lint = pipeline_on(
        "lintian",
        Some("environment"),
        backend,
        json!({"type": "lintian",
               "inputs": {"input": {"type": "tree", "origin": "pipeline", "references": ["name:input"]}},
               "options": options}),
    );
    Ok(Compiled {
        manifest: json!({"version": "2",
                         "pipelines": [env, files_tree("input", &files)?, lint],
                         "sources": sources.to_json()}),
        exports: vec!["lintian".into()],
        system: matches!(choice, EnvironmentChoice::Bootstrapped { .. })
            .then(|| "environment".into()),
        environment: Some(choice),
        backend: (backend == Backend::IncusLxc).then_some(backend.as_str()),
    })
}

/// A local file that a task names, and its SHA-256.
#[derive(Debug, Clone)]
struct LocalFile {
    name: String,
    path: PathBuf,
    checksum: String,
}

fn checksums(files: &[LocalFile]) -> Vec<String> {
    files.iter().map(|f| f.checksum.clone()).collect()
}

/// A pipeline whose tree holds `files` by their names (the `copy` stage
/// renames the checksum-named files of a files input).
fn files_tree(name: &str, files: &[LocalFile]) -> Result<Value, Invalid> {
    let mut by_name: BTreeMap<&str, &LocalFile> = BTreeMap::new();
    for f in files {
        if let Some(other) = by_name.insert(&f.name, f)
            && other.checksum != f.checksum
        {
            return Err(Invalid {
                path: "task_data.input".into(),
                message: format!(
                    "two different files are named {}: {} and {}",
                    f.name,
                    other.path.display(),
                    f.path.display()
                ),
            });
        }
    }
    let mut references: Vec<&str> = by_name.values().map(|f| f.checksum.as_str()).collect();
    references.sort();
    references.dedup();
    let paths: Vec<Value> = by_name
        .values()
        .map(|f| json!({"from": format!("input://files/{}", f.checksum), "to": format!("tree:///{}", f.name)}))
        .collect();
    Ok(
        json!({"name": name, "source-epoch": SOURCE_EPOCH, "stages": [{"type": "copy",
        "inputs": {"files": {"type": "files", "origin": "source", "references": references}},
        "options": {"paths": paths}}]}),
    )
}

/// The curl source items of the task's local files.
#[derive(Debug, Default)]
struct Sources {
    items: BTreeMap<String, String>,
}

impl Sources {
    /// The file `value` (path or file:// URL) names, and for a .dsc or
    /// .changes every file it lists, each made a source item.
    fn add_all(&mut self, at: &str, value: &str) -> Result<Vec<LocalFile>, Invalid> {
        let fail = |m: String| Invalid {
            path: at.to_owned(),
            message: m,
        };
        let path = local_path(value).map_err(&fail)?;
        let path = fs_err::canonicalize(&path).map_err(|e| fail(e.to_string()))?;
        let mut files = vec![local_file(&path).map_err(&fail)?];
        let name = files[0].name.clone();
        if name.ends_with(".dsc") || name.ends_with(".changes") {
            let text = fs_err::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
            let dir = path.parent().unwrap_or(Path::new("/"));
            for (listed, sha256) in super::artifacts::listed_files(&text) {
                if listed.contains('/') || listed.starts_with('.') {
                    return Err(fail(format!(
                        "{name} lists `{listed}`, which is not a plain file name"
                    )));
                }
                let f = local_file(&dir.join(&listed))
                    .map_err(|e| fail(format!("{name} lists {listed}: {e}")))?;
                if let Some(want) = sha256
                    && f.checksum != format!("sha256:{want}")
                {
                    return Err(fail(format!(
                        "{} does not have the SHA-256 {name} gives ({want})",
                        f.path.display()
                    )));
                }
                files.push(f);
            }
        }
        for f in &files {
            self.items.insert(f.checksum.clone(), file_url(&f.path));
        }
        Ok(files)
    }

    fn to_json(&self) -> Value {
        let items: Map<String, Value> = self
            .items
            .iter()
            .map(|(k, url)| (k.clone(), json!({"url": url})))
            .collect();
        json!({"curl": {"items": items}})
    }
}

fn local_file(path: &Path) -> Result<LocalFile, String> {
    let checksum = strata_sources::sha256_file(path).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} has no file name", path.display()))?;
    Ok(LocalFile {
        name,
        path: path.to_path_buf(),
        checksum: checksum.as_str().to_owned(),
    })
}

/// A path or a file:/// URL (percent-decoded) as a path.
fn local_path(value: &str) -> Result<PathBuf, String> {
    strata_sources::file_url_path(value).unwrap_or_else(|| Ok(PathBuf::from(value)))
}

/// file:// URL of an absolute path, bytes outside the safe set escaped.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~+".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_round_trip() {
        let p = Path::new("/tmp/a b/ü%.dsc");
        let url = file_url(p);
        assert_eq!(url, "file:///tmp/a%20b/%C3%BC%25.dsc");
        assert_eq!(local_path(&url).unwrap(), p);
    }

    #[test]
    fn a_system_image_build_lays_out_fills_boots_and_converts() {
        let doc = json!({"task": "SystemImageBuild", "task_data": {
        "bootstrap_options": {"architecture": "amd64", "variant": "minbase", "extra_packages": ["systemd-sysv"]},
        "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}],
        "disk_image": {"format": "qcow2", "filename": "vm", "kernel_package": "linux-image-cloud-amd64",
            "partitions": [
                {"size": 1, "filesystem": "vfat", "mountpoint": "/boot/efi"},
                {"size": 1, "filesystem": "swap"},
                {"size": 1, "filesystem": "freespace"},
                {"size": 3, "filesystem": "ext4", "mountpoint": "/"},
                {"size": 2, "filesystem": "ext4", "mountpoint": "/home"},
                {"size": 1, "filesystem": "none"}
            ]}}});
        let task = super::super::model::parse(&doc.to_string(), &Default::default()).unwrap();
        let c = compile(&task, &[], "amd64").unwrap();
        assert_eq!(c.exports, ["qcow2"]);
        let m = &c.manifest;
        let names: Vec<&str> = m["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["disk", "system", "image", "qcow2"]);
        let stages = |i: usize| m["pipelines"][i]["stages"].as_array().unwrap().clone();
        // The disk pipeline's partition stage is the image pipeline's first.
        assert_eq!(stages(0)[0], stages(2)[0]);
        let partition = &stages(0)[0]["options"];
        assert_eq!(partition["filename"], "vm.raw");
        assert_eq!(partition["size"], 9 * GIB + GPT_MARGIN);
        assert_eq!(
            partition["partitions"],
            json!([
                {"name": "esp", "size": "1G", "filesystem": "vfat", "mountpoint": "/boot/efi"},
                {"name": "swap", "size": "1G", "filesystem": "swap"},
                {"size": "1G", "filesystem": "freespace"},
                {"name": "root", "size": "3G", "filesystem": "ext4", "mountpoint": "/"},
                {"name": "data", "size": "2G", "filesystem": "ext4", "mountpoint": "/home"},
                {"name": "data2", "size": "1G", "filesystem": "none"}
            ])
        );
        let system = stages(1);
        assert_eq!(system[0]["type"], "bootstrap");
        assert_eq!(system[1]["type"], "customize");
        assert_eq!(system[2]["type"], "bootloader");
        assert_eq!(
            system[2]["options"]["kernel_package"],
            "linux-image-cloud-amd64"
        );
        assert_eq!(
            system[2]["inputs"]["disk"]["references"],
            json!(["name:disk"])
        );
        let mkfs: Vec<Value> = stages(2)[1..]
            .iter()
            .map(|s| s["options"].clone())
            .collect();
        assert_eq!(
            mkfs,
            [
                json!({"filename": "vm.raw", "partition": "esp", "type": "vfat", "path": "/boot/efi"}),
                json!({"filename": "vm.raw", "partition": "swap", "type": "swap"}),
                json!({"filename": "vm.raw", "partition": "root", "type": "ext4", "path": "/", "exclude": ["/boot/efi", "/home"]}),
                json!({"filename": "vm.raw", "partition": "data", "type": "ext4", "path": "/home"}),
            ]
        );
        assert_eq!(
            stages(3)[0]["options"],
            json!({"source": "vm.raw", "filename": "vm.qcow2"})
        );
        assert_eq!(
            image_file(match &task {
                Task::SystemImageBuild(d) => &d.disk_image,
                _ => unreachable!(),
            })
            .filename,
            "vm.qcow2"
        );
    }
}
