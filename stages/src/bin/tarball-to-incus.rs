//! `tarball-to-incus`: turns the input named `tree`, a Debian system, into
//! the files `incus image import` takes, changed for life in a container;
//! the same bytes for the same tree and source-epoch.
//!
//! ```json
//! {"format": "split", "compression": "zstd", "artifact_id": "…"}
//! ```
//!
//! With `"format": "vm"` the system is described, not packed: the image
//! is the qcow2 disk named by `disk` in the input named `image` (a system
//! image pipeline's output), copied as `rootfs.img` beside `incus.tar.*`,
//! whose metadata.yaml adds the property `requirements.secureboot: "false"`
//! (the image's bootloader is not signed).
//!
//! ```text
//!   split (default)                              unified
//!   incus.tar.zst                                image.tar.zst
//!     metadata.yaml                                metadata.yaml
//!     templates/hostname.tpl, hosts.tpl            rootfs/…        GNU tar over the input
//!   rootfs.tar.zst                                 rootfs/etc/…    ours
//!     ./…       GNU tar over the input             templates/…
//!     ./etc/…   ours, after tar's members
//! ```
//!
//! The input is read-only, so nothing is changed in it: GNU tar packs it
//! as the tar stage does (leaving out the two paths this stage owns), and
//! the added members follow in the same archive (see
//! [`strata_stage::archive::splice`]):
//!
//! ```text
//!   /etc/systemd/system-generators/lxc                       0755, our generator
//!   /etc/systemd/system/multi-user.target.wants/
//!       systemd-networkd.service -> /lib/systemd/system/systemd-networkd.service
//!   and any of their parent folders the input lacks           0755
//! ```
//!
//! Every member we write is owned by 0:0 and dated at the creation date:
//! the pipeline's source-epoch, or without one the input's
//! /var/lib/dpkg/status time (when its packages last changed).

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, anyhow, bail};
use rustix::fs::{AtFlags, FileType};
use serde::Deserialize;
use serde_json::json;
use strata_stage::archive::{Compression, Sink, splice, tar_command};
use strata_stage::debian::{parse_deb822, read_os_release, read_regular};
use strata_stage::{Args, Error, Input, Root, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default)]
    format: Format,
    #[serde(default = "default_compression")]
    compression: Compression,
    architecture: Option<String>,
    description: Option<String>,
    os: Option<String>,
    release: Option<String>,
    artifact_id: Option<String>,
    /// vm: the disk's file name in the input named `image`.
    #[serde(default = "default_disk")]
    disk: String,
}

fn default_disk() -> String {
    "disk.qcow2".into()
}

/// zstd: incus unpacks it, and it is many times faster than xz for a
/// system of a few hundred megabytes, at a size close to gzip's best.
fn default_compression() -> Compression {
    Compression::Zstd
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Split,
    Unified,
    Vm,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Self::Split => "split",
            Self::Unified => "unified",
            Self::Vm => "vm",
        }
    }
}

/// Debian's architecture names and Incus's, which are the kernel's.
const ARCHITECTURES: &[(&str, &str)] = &[
    ("amd64", "x86_64"),
    ("arm64", "aarch64"),
    ("armhf", "armv7l"),
    ("i386", "i686"),
    ("ppc64el", "ppc64le"),
    ("s390x", "s390x"),
    ("riscv64", "riscv64"),
];

const GENERATOR: &str = "etc/systemd/system-generators/lxc";
const NETWORKD_LINK: &str = "etc/systemd/system/multi-user.target.wants/systemd-networkd.service";
/// The folders our two members go in, parents first.
const FOLDERS: &[&str] = &[
    "etc",
    "etc/systemd",
    "etc/systemd/system",
    "etc/systemd/system/multi-user.target.wants",
    "etc/systemd/system-generators",
];

const HOSTNAME_TPL: &str = "{{ container.name }}\n";
const HOSTS_TPL: &str = "127.0.1.1\t{{ container.name }}\n\
                         127.0.0.1\tlocalhost\n\
                         ::1\t\tlocalhost ip6-localhost ip6-loopback\n\
                         ff02::1\t\tip6-allnodes\n\
                         ff02::2\t\tip6-allrouters\n";

/// What the image says about itself, in metadata.yaml and the stage's metadata.
#[derive(Debug)]
struct Image {
    /// Incus's name.
    architecture: String,
    creation_date: u64,
    description: String,
    os: Option<String>,
    release: Option<String>,
    artifact_id: Option<String>,
}

/// What goes into the rootfs besides the input.
#[derive(Debug)]
struct Additions {
    /// Folders the input lacks, parents first.
    folders: Vec<&'static str>,
    /// Where the networkd symlink points.
    networkd_unit: &'static str,
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let input = args.input("tree").ok_or_else(|| {
        anyhow!("the tarball-to-incus stage packs its input named tree, and it was given none")
    })?;
    let system = Root::open(&input.path, "the input tree", "/")?;
    check_init(&system)?;

    let image = describe(&options, input, &system, args.meta.source_epoch)?;
    let tree = Root::tree(args)?;
    let mut files = Vec::new();
    let written = match options.format {
        Format::Vm => vm_disk(args, &options.disk)
            .and_then(|disk| write_vm(&tree, &options, &image, disk, &mut files)),
        _ => {
            let additions = additions(&system)?;
            let tar = rootfs_tar(&input.path, args.meta.source_epoch);
            write_all(&tree, &options, &image, &additions, tar, &mut files)
        }
    };
    if let Err(e) = written {
        // A split image is two files: leave neither if one failed.
        for name in &files {
            let _ = tree
                .entry(&format!("/{name}"))
                .map(|f| rustix::fs::unlinkat(f.dir(), f.name(), AtFlags::empty()));
        }
        return Err(e);
    }

    for name in &files {
        println!("wrote /{name}");
    }
    write_meta(
        args,
        &json!({
            "format": options.format.name(),
            "compression": options.compression.name(),
            "architecture": image.architecture,
            "os": image.os,
            "release": image.release,
            "description": image.description,
            "artifact_id": image.artifact_id,
            "creation_date": image.creation_date,
            "files": files,
        }),
    )?;
    Ok(())
}

/// What the image says about itself: the options, else what the system
/// in the input tree says, else what the engine said about the input.
fn describe(
    options: &Options,
    input: &Input,
    system: &Root,
    epoch: Option<u64>,
) -> anyhow::Result<Image> {
    let debian_arch = match &options.architecture {
        Some(arch) => arch.clone(),
        None => dpkg_architecture(system)?,
    };
    let architecture = ARCHITECTURES
        .iter()
        .find(|(debian, _)| *debian == debian_arch)
        .map(|(_, incus)| (*incus).to_owned())
        .ok_or_else(|| {
            let known: Vec<&str> = ARCHITECTURES.iter().map(|(d, _)| *d).collect();
            anyhow!(
                "Incus has no name for the Debian architecture {debian_arch:?} (it knows {})",
                known.join(", ")
            )
        })?;
    let os_release = read_os_release(system)?;
    let os = options.os.clone().or_else(|| os_release.get("ID").cloned());
    let release = options
        .release
        .clone()
        .or_else(|| os_release.get("VERSION_CODENAME").cloned());
    let description = options
        .description
        .clone()
        .or_else(|| os_release.get("PRETTY_NAME").cloned())
        .unwrap_or_else(|| "A system built by strata".to_owned());
    let artifact_id = options.artifact_id.clone().or_else(|| {
        input
            .data
            .get("id")
            .and_then(|id| id.as_str())
            .map(str::to_owned)
    });
    let creation_date = match epoch {
        Some(epoch) => epoch,
        None => system_date(system)?,
    };
    Ok(Image {
        architecture,
        creation_date,
        description,
        os,
        release,
        artifact_id,
    })
}

/// GNU tar over the input, as the tar stage packs trees, less the two
/// paths whose members this stage writes itself.
fn rootfs_tar(input: &Path, epoch: Option<u64>) -> Command {
    let mut tar = tar_command(input, epoch);
    // Ours replace the input's own, if it has them, rather than follow them
    // as second members of the same name.
    tar.args(["--anchored", "--no-wildcards"]);
    for path in [GENERATOR, NETWORKD_LINK] {
        tar.arg(format!("--exclude=./{path}"));
    }
    tar
}

/// Writes the image's files, adding each name to `files` once it is there.
fn write_all(
    tree: &Root,
    options: &Options,
    image: &Image,
    additions: &Additions,
    mut tar: Command,
    files: &mut Vec<String>,
) -> anyhow::Result<()> {
    let ext = options.compression.extension();
    let date = image.creation_date;
    match options.format {
        Format::Split => {
            let meta = format!("incus.tar{ext}");
            write_output(tree, &meta, options.compression, |sink| {
                metadata_members(sink, image, false)?;
                end_archive(sink)
            })?;
            files.push(meta);
            let rootfs = format!("rootfs.tar{ext}");
            write_output(tree, &rootfs, options.compression, |sink| {
                splice(tar, &["."], sink)?;
                added_members(sink, "./", additions, date)?;
                end_archive(sink)
            })?;
            files.push(rootfs);
        }
        Format::Vm => unreachable!("write_vm writes VM images"),
        Format::Unified => {
            let name = format!("image.tar{ext}");
            // "." becomes "rootfs", "./etc" "rootfs/etc"; hard link targets
            // are member names too, symlink targets are not.
            tar.arg(r"--transform=s,^\.,rootfs,S");
            write_output(tree, &name, options.compression, |sink| {
                // Top-level names in order: metadata.yaml, rootfs, templates.
                let yaml = metadata_yaml(image, false);
                member(sink, "metadata.yaml", Kind::File(yaml.as_bytes()), date)?;
                splice(tar, &["."], sink)?;
                added_members(sink, "rootfs/", additions, date)?;
                template_members(sink, date)?;
                end_archive(sink)
            })?;
            files.push(name);
        }
    }
    Ok(())
}

/// The qcow2 disk `name` in the input named `image`, checked to be one: a
/// plain file name, a regular file (no link followed), qcow2's magic.
fn vm_disk(args: &Args, name: &str) -> anyhow::Result<std::fs::File> {
    let input = args.input("image").ok_or_else(|| {
        anyhow!("format vm takes the disk from an input named image, and it was given none")
    })?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("options.disk {name:?} is not a file name in the input image");
    }
    let image = Root::open(&input.path, "the input image", "/")?;
    let mut disk = image
        .open_regular(&format!("/{name}"))?
        .ok_or_else(|| anyhow!("the input image has no regular file {name:?} (options.disk)"))?;
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut disk, &mut magic)
        .with_context(|| format!("cannot read the input image's {name}"))?;
    if magic != *b"QFI\xfb" {
        bail!(
            "the input image's {name} is not a qcow2 disk (Incus takes a VM's rootfs.img as qcow2; convert the raw image first)"
        );
    }
    std::io::Seek::rewind(&mut disk).context("cannot rewind the disk")?;
    Ok(disk)
}

/// A VM image: incus.tar.EXT (metadata.yaml, templates/) and rootfs.img,
/// a copy of the disk.
fn write_vm(
    tree: &Root,
    options: &Options,
    image: &Image,
    mut disk: std::fs::File,
    files: &mut Vec<String>,
) -> anyhow::Result<()> {
    let meta = format!("incus.tar{}", options.compression.extension());
    write_output(tree, &meta, options.compression, |sink| {
        metadata_members(sink, image, true)?;
        end_archive(sink)
    })?;
    files.push(meta);
    let staged = tree.stage_file("rootfs.img")?;
    let copied = staged
        .file
        .try_clone()
        .and_then(|mut out| std::io::copy(&mut disk, &mut out));
    match copied {
        Ok(_) => staged.publish()?,
        Err(e) => {
            staged.discard();
            return Err(anyhow!(e).context("cannot copy the disk to /rootfs.img"));
        }
    }
    files.push("rootfs.img".into());
    Ok(())
}

/// Refuses a system Incus could not start: a container runs /sbin/init,
/// resolved the way the system itself sees its symlinks.
fn check_init(system: &Root) -> anyhow::Result<()> {
    let hint = "an Incus container starts /sbin/init: install an init system in the tree \
                (systemd-sysv for systemd)";
    let link = system
        .entry("/sbin/init")
        .ok()
        .and_then(|e| e.lstat().ok().flatten().map(|st| (e, st)))
        .filter(|(_, st)| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
        .and_then(|(e, _)| rustix::fs::readlinkat(e.dir(), e.name(), Vec::new()).ok())
        .map(|target| format!(" (a symlink to {})", target.to_string_lossy()));
    match system.stat_in_root("/sbin/init")? {
        None => match link {
            Some(link) => {
                bail!("the input tree's /sbin/init{link} does not resolve inside the tree; {hint}")
            }
            None => bail!("the input tree has no /sbin/init; {hint}"),
        },
        Some(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => bail!(
            "the input tree's /sbin/init{} is not a regular file; {hint}",
            link.unwrap_or_default()
        ),
        Some(st) if st.st_mode & 0o111 == 0 => bail!(
            "the input tree's /sbin/init{} is not executable; {hint}",
            link.unwrap_or_default()
        ),
        Some(_) => Ok(()),
    }
}

/// The architecture of the tree's installed dpkg: the system's own.
fn dpkg_architecture(system: &Root) -> anyhow::Result<String> {
    let hint = "set options.architecture";
    let status = read_regular(system, "/var/lib/dpkg/status")?.ok_or_else(|| {
        anyhow!("cannot tell the input tree's architecture: it has no /var/lib/dpkg/status; {hint}")
    })?;
    parse_deb822(&status)
        .into_iter()
        .find(|p| {
            p.get("package").map(String::as_str) == Some("dpkg")
                && p.get("status").is_some_and(|s| s.ends_with(" installed"))
        })
        .and_then(|p| p.get("architecture").cloned())
        .ok_or_else(|| {
            anyhow!(
                "cannot tell the input tree's architecture: /var/lib/dpkg/status lists no \
                 installed dpkg with an Architecture; {hint}"
            )
        })
}

/// Without a source-epoch: when the system's packages last changed, else
/// when its root folder did. Both travel with the tree, so the same tree
/// still gives the same image.
fn system_date(system: &Root) -> anyhow::Result<u64> {
    for path in ["/var/lib/dpkg/status", "/"] {
        let st = match system.entry(path) {
            Ok(entry) => entry.lstat()?,
            Err(Error::NoParent { .. } | Error::NotDirectory { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(st) = st {
            return Ok(u64::try_from(st.st_mtime).unwrap_or(0));
        }
    }
    Ok(0)
}

/// Which of our folders the input lacks, and where networkd's unit is.
fn additions(system: &Root) -> anyhow::Result<Additions> {
    let mut folders = Vec::new();
    for folder in FOLDERS {
        if folders
            .iter()
            .any(|f: &&str| folder.starts_with(&format!("{f}/")))
        {
            folders.push(*folder);
            continue;
        }
        match system.entry(&format!("/{folder}"))?.lstat()? {
            None => folders.push(*folder),
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Some(_) => bail!(
                "the input tree's /{folder} is not a folder (a symlink or file there would \
                 redirect what this stage adds beneath it)"
            ),
        }
    }
    // Where the system's own systemctl would point the link: Debian up to
    // bookworm ships units in /lib, later releases in /usr/lib.
    let candidates = [
        "/lib/systemd/system/systemd-networkd.service",
        "/usr/lib/systemd/system/systemd-networkd.service",
    ];
    let mut networkd_unit = None;
    for unit in candidates {
        if system.stat_in_root(unit)?.is_some() {
            networkd_unit = Some(unit);
            break;
        }
    }
    let networkd_unit = networkd_unit.unwrap_or_else(|| {
        eprintln!(
            "warning: the input tree has no systemd-networkd.service; the link to it is \
             added anyway and does nothing until systemd is installed"
        );
        candidates[0]
    });
    Ok(Additions {
        folders,
        networkd_unit,
    })
}

/// Writes the archive `name` at the root of the tree through `fill`: into
/// a hidden file first, renamed once complete, removed on failure.
fn write_output(
    tree: &Root,
    name: &str,
    compression: Compression,
    fill: impl FnOnce(&mut Sink) -> Result<(), Error>,
) -> anyhow::Result<()> {
    let staged = tree.stage_file(name)?;
    let filled = staged
        .file
        .try_clone()
        .context("cannot duplicate the archive's descriptor")
        .and_then(|keep| {
            let mut sink = Sink::new(compression, keep)?;
            match fill(&mut sink) {
                Ok(()) => Ok(sink.finish()?),
                Err(Error::Write(e)) => Err(sink.fail(e).into()),
                Err(e) => {
                    // The compressor is fine; what failed is the cause.
                    let _ = sink.finish();
                    Err(e.into())
                }
            }
        });
    match filled {
        Ok(()) => Ok(staged.publish()?),
        Err(e) => {
            // Leave no half archive behind; the error that matters is `e`.
            staged.discard();
            Err(e)
        }
    }
}

/// metadata.yaml: strings are written as JSON strings, which YAML reads
/// as double-quoted scalars, so no value can break the document.
fn metadata_yaml(image: &Image, vm: bool) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut y = String::new();
    y.push_str(&format!("architecture: {}\n", q(&image.architecture)));
    y.push_str(&format!("creation_date: {}\n", image.creation_date));
    y.push_str("profiles:\n- debusine\n");
    y.push_str("properties:\n");
    y.push_str(&format!("  description: {}\n", q(&image.description)));
    for (key, value) in [
        ("os", &image.os),
        ("release", &image.release),
        ("artifact_id", &image.artifact_id),
    ] {
        if let Some(value) = value {
            y.push_str(&format!("  {key}: {}\n", q(value)));
        }
    }
    if vm {
        // Incus reads a VM image's needs from `requirements.*` properties:
        // strata's images boot through an unsigned systemd-boot or GRUB.
        y.push_str("  requirements.secureboot: \"false\"\n");
    }
    y.push_str("templates:\n");
    for (path, template) in [
        ("/etc/hostname", "hostname.tpl"),
        ("/etc/hosts", "hosts.tpl"),
    ] {
        y.push_str(&format!(
            "  {path}:\n    when:\n    - create\n    - copy\n    create_only: false\n    template: {template}\n"
        ));
    }
    y
}

/// incus.tar: metadata.yaml and templates/, in name order.
fn metadata_members(sink: &mut Sink, image: &Image, vm: bool) -> Result<(), Error> {
    member(
        sink,
        "metadata.yaml",
        Kind::File(metadata_yaml(image, vm).as_bytes()),
        image.creation_date,
    )?;
    template_members(sink, image.creation_date)
}

fn template_members(sink: &mut Sink, date: u64) -> Result<(), Error> {
    member(sink, "templates/", Kind::Folder, date)?;
    member(
        sink,
        "templates/hostname.tpl",
        Kind::File(HOSTNAME_TPL.as_bytes()),
        date,
    )?;
    member(
        sink,
        "templates/hosts.tpl",
        Kind::File(HOSTS_TPL.as_bytes()),
        date,
    )
}

/// The generator, the networkd link and the folders they need, under
/// `prefix` ("./" or "rootfs/"), parents first.
fn added_members(
    sink: &mut Sink,
    prefix: &str,
    additions: &Additions,
    date: u64,
) -> Result<(), Error> {
    let mut members: Vec<(String, Kind<'_>)> = additions
        .folders
        .iter()
        .map(|f| (format!("{prefix}{f}/"), Kind::Folder))
        .collect();
    members.push((
        format!("{prefix}{GENERATOR}"),
        Kind::Executable(include_bytes!("../../assets/lxc-generator")),
    ));
    members.push((
        format!("{prefix}{NETWORKD_LINK}"),
        Kind::Symlink(additions.networkd_unit),
    ));
    // Name order component by component, as GNU tar's --sort=name walks
    // (system/ and all it holds before system-generators/).
    members.sort_by(|a, b| {
        let parts = |n: &str| {
            n.trim_end_matches('/')
                .split('/')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        parts(&a.0).cmp(&parts(&b.0))
    });
    for (name, kind) in members {
        member(sink, &name, kind, date)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Kind<'a> {
    Folder,
    File(&'a [u8]),
    Executable(&'a [u8]),
    Symlink(&'a str),
}

/// One ustar member owned by 0:0 (numeric, no user or group names).
/// Names and link targets go in as given: the `tar` crate's own setters
/// would normalise "./etc" to "etc".
fn member(sink: &mut Sink, name: &str, kind: Kind<'_>, date: u64) -> Result<(), Error> {
    let mut header = tar::Header::new_ustar();
    let (mode, data, entry_type): (u32, &[u8], tar::EntryType) = match kind {
        Kind::Folder => (0o755, &[], tar::EntryType::Directory),
        Kind::File(data) => (0o644, data, tar::EntryType::Regular),
        Kind::Executable(data) => (0o755, data, tar::EntryType::Regular),
        Kind::Symlink(target) => {
            let old = header.as_old_mut();
            assert!(target.len() < old.linkname.len(), "short link targets only");
            old.linkname[..target.len()].copy_from_slice(target.as_bytes());
            (0o777, &[], tar::EntryType::Symlink)
        }
    };
    let old = header.as_old_mut();
    assert!(name.len() < old.name.len(), "short member names only");
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(date);
    header.set_size(data.len() as u64);
    header.set_entry_type(entry_type);
    header.set_cksum();
    let padding = [0u8; 512];
    let pad = (512 - data.len() % 512) % 512;
    sink.write_all(header.as_bytes())
        .and_then(|()| sink.write_all(data))
        .and_then(|()| sink.write_all(&padding[..pad]))
        .map_err(Error::Write)
}

/// The end-of-archive marker: two zero blocks.
fn end_archive(sink: &mut Sink) -> Result<(), Error> {
    sink.write_all(&[0u8; 1024]).map_err(Error::Write)
}
