//! `bootloader`: makes a system tree bootable from a disk laid out by the
//! partition stage: installs the kernel and systemd-boot from inside the
//! tree (as customize installs packages: strata_stage::apt), writes the
//! ESP's files, the loader entry with the kernel command line, and
//! `/etc/fstab`.
//!
//! ```json
//! {"filename": "disk.raw", "kernel_package": "linux-image-amd64",
//!  "bootloader": "systemd-boot", "root": "partuuid",
//!  "kernel_cmdline": "console=tty0 console=ttyS0"}
//! ```
//!
//! ```text
//!   input disk: FILENAME.json (the layout) ─> root, ESP and swap PARTUUIDs
//!   apt-get install KERNEL systemd-boot ─> /boot/vmlinuz-V, /boot/initrd.img-V
//!   ESP (the partition mounted at /boot/efi or /efi, in this tree):
//!     EFI/BOOT/BOOTX64.EFI, EFI/systemd/systemd-bootx64.efi   systemd-boot
//!     loader/loader.conf, loader/entries/debian.conf            the entry
//!     debian/vmlinuz, debian/initrd.img                         copies of the kernel
//!   /etc/kernel/cmdline, /etc/fstab (PARTUUID= for each partition with a
//!   mount point, and swap)
//! ```
//!
//! The files are copied rather than `bootctl install`ed: bootctl wants
//! the ESP mounted (a vfat statfs) and writes EFI variables, neither of
//! which a tree has. What apt logs is removed afterwards, as mmdebstrap
//! does, so the tree (and the image made from it) is the same each build.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::json;
use strata_stage::disk::{Layout, Partition};
use strata_stage::{Args, Root, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default = "default_filename")]
    filename: String,
    #[serde(default = "default_kernel")]
    kernel_package: String,
    #[serde(default = "default_bootloader")]
    bootloader: String,
    #[serde(default = "default_root")]
    root: String,
    #[serde(default = "default_cmdline")]
    kernel_cmdline: String,
}

fn default_filename() -> String {
    "disk.raw".into()
}
fn default_kernel() -> String {
    "linux-image-amd64".into()
}
fn default_bootloader() -> String {
    "systemd-boot".into()
}
fn default_root() -> String {
    "partuuid".into()
}
fn default_cmdline() -> String {
    "console=tty0 console=ttyS0".into()
}

const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const SYSTEMD_BOOT_DIR: &str = "/usr/lib/systemd/boot/efi";

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    if args.tree != Path::new("/") {
        bail!(
            "bootloader runs with the tree as / (x-strata root \"tree\"), but its tree is {}",
            args.tree.display()
        );
    }
    if options.bootloader != "systemd-boot" {
        bail!(
            "options.bootloader: {:?} is not supported (only systemd-boot is, so far)",
            options.bootloader
        );
    }
    if options.kernel_cmdline.contains(['\n', '\r']) {
        bail!("options.kernel_cmdline: one line, please");
    }
    let disk = args
        .input("disk")
        .ok_or_else(|| anyhow!("bootloader reads the disk layout from its input named disk (the partition stage's tree), and it was given none"))?;
    let layout = Layout::read(&disk.path, &options.filename).context("input disk")?;
    let root = layout
        .partitions
        .iter()
        .find(|p| p.mountpoint.as_deref() == Some("/"))
        .with_context(|| format!("{} has no partition mounted at /", layout.filename))?;
    let esp = layout
        .partitions
        .iter()
        .find(|p| p.type_guid == ESP_TYPE && p.mountpoint.is_some())
        .with_context(|| {
            format!(
                "{} has no EFI system partition with a mount point",
                layout.filename
            )
        })?;
    let esp_dir = esp.mountpoint.clone().expect("found with one");
    let cmdline = match options.root.as_str() {
        "partuuid" => format!("root=PARTUUID={} ro {}", root.uuid, options.kernel_cmdline),
        // systemd's gpt-auto-generator finds the root by its DPS type on
        // the disk the ESP is on; it needs systemd in the initrd.
        "auto" => format!("ro {}", options.kernel_cmdline),
        other => bail!("options.root: {other:?} is not partuuid or auto"),
    };
    let cmdline = cmdline.trim().to_owned();

    let system = Root::system(Path::new("/"))?;
    // Written first: the kernel's postinst hooks read both.
    std::fs::create_dir_all("/etc/kernel").context("cannot make /etc/kernel")?;
    system.write_file(
        "/etc/kernel/cmdline",
        &mut format!("{cmdline}\n").as_bytes(),
        0o644,
    )?;
    system.write_file("/etc/fstab", &mut fstab(&layout).as_bytes(), 0o644)?;

    let packages = vec![options.kernel_package.clone(), "systemd-boot".to_owned()];
    strata_stage::apt::install(&packages)
        .with_context(|| format!("cannot install {}", packages.join(" ")))?;
    strata_stage::apt::forget_logs()?;

    let version = kernel_version()?;
    let (efi, fallback) = systemd_boot_binary()?;
    let put = |to: &str, from: &str, mode: u32| -> anyhow::Result<()> {
        let path = format!("{esp_dir}{to}");
        let parent = Path::new(&path).parent().expect("an absolute path");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot make {}", parent.display()))?;
        let mut src = std::fs::File::open(from).with_context(|| format!("cannot open {from}"))?;
        system.write_file(&path, &mut src, mode)?;
        Ok(())
    };
    let efi_path = format!("{SYSTEMD_BOOT_DIR}/{efi}");
    put(&format!("/EFI/BOOT/{fallback}"), &efi_path, 0o644)?;
    put(&format!("/EFI/systemd/{efi}"), &efi_path, 0o644)?;
    put(
        "/debian/vmlinuz",
        &format!("/boot/vmlinuz-{version}"),
        0o644,
    )?;
    put(
        "/debian/initrd.img",
        &format!("/boot/initrd.img-{version}"),
        0o644,
    )?;
    let text = |path: &str, body: String| -> anyhow::Result<()> {
        let path = format!("{esp_dir}{path}");
        let parent = Path::new(&path).parent().expect("an absolute path");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot make {}", parent.display()))?;
        system.write_file(&path, &mut body.as_bytes(), 0o644)?;
        Ok(())
    };
    text(
        "/loader/loader.conf",
        "default debian.conf\ntimeout 0\neditor no\n".into(),
    )?;
    text(
        "/loader/entries/debian.conf",
        format!(
            "title Debian GNU/Linux\nversion {version}\nlinux /debian/vmlinuz\ninitrd /debian/initrd.img\noptions {cmdline}\n"
        ),
    )?;
    println!("kernel {version}, systemd-boot ({fallback}), options {cmdline}");
    write_meta(
        args,
        &json!({
            "kernel_package": options.kernel_package,
            "kernel_version": version,
            "bootloader": options.bootloader,
            "kernel_cmdline": cmdline,
            "esp": esp_dir,
            "root_partuuid": root.uuid,
        }),
    )?;
    Ok(())
}

/// `/etc/fstab` for every partition with a mount point (the root first,
/// then by depth, so parents mount before children) and every swap.
fn fstab(layout: &Layout) -> String {
    let mut mounted: Vec<&Partition> = layout
        .partitions
        .iter()
        .filter(|p| p.mountpoint.is_some())
        .collect();
    mounted.sort_by_key(|p| {
        let m = p.mountpoint.as_deref().unwrap_or("");
        (m != "/", m.matches('/').count(), m.to_owned())
    });
    let mut s = String::from("# written by strata's bootloader stage from the disk layout\n");
    for p in mounted {
        let m = p.mountpoint.as_deref().expect("filtered");
        let (opts, pass) = match (p.filesystem.as_str(), m) {
            (_, "/") => ("errors=remount-ro", 1),
            ("vfat", _) => ("umask=0077", 2),
            _ => ("defaults", 2),
        };
        s.push_str(&format!(
            "PARTUUID={}\t{m}\t{}\t{opts}\t0\t{pass}\n",
            p.uuid, p.filesystem
        ));
    }
    for p in layout.partitions.iter().filter(|p| p.filesystem == "swap") {
        s.push_str(&format!("PARTUUID={}\tnone\tswap\tsw\t0\t0\n", p.uuid));
    }
    s
}

/// The version of the one kernel in /boot (the newest when there are more).
fn kernel_version() -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir("/boot")
        .context("cannot list /boot")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .filter(|v| Path::new(&format!("/boot/initrd.img-{v}")).is_file())
        .collect();
    versions.sort_by_key(|v| version_key(v));
    versions
        .pop()
        .context("no kernel with an initrd in /boot after installing the kernel package (/boot/vmlinuz-V and /boot/initrd.img-V)")
}

/// Numbers compared as numbers: 6.1.0-10 after 6.1.0-9.
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split(|c: char| !c.is_ascii_alphanumeric())
        .map(|part| (part.parse().unwrap_or(0), part.to_owned()))
        .collect()
}

/// systemd-boot's EFI binary for this architecture, and its name on the
/// removable-media path (systemd-bootx64.efi, BOOTX64.EFI).
fn systemd_boot_binary() -> anyhow::Result<(String, String)> {
    let mut found: Vec<String> = std::fs::read_dir(SYSTEMD_BOOT_DIR)
        .with_context(|| format!("cannot list {SYSTEMD_BOOT_DIR} (is systemd-boot installed?)"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("systemd-boot") && n.ends_with(".efi"))
        .collect();
    found.sort();
    let efi = found
        .pop()
        .with_context(|| format!("no systemd-boot*.efi in {SYSTEMD_BOOT_DIR}"))?;
    let arch = &efi["systemd-boot".len()..efi.len() - ".efi".len()];
    Ok((
        efi.clone(),
        format!("BOOT{}.EFI", arch.to_ascii_uppercase()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, fs: &str, mountpoint: Option<&str>) -> Partition {
        Partition {
            number,
            name: format!("p{number}"),
            filesystem: fs.into(),
            mountpoint: mountpoint.map(Into::into),
            type_guid: String::new(),
            uuid: format!("u{number}"),
            start: 0,
            size: 0,
        }
    }

    #[test]
    fn fstab_mounts_root_first_then_by_depth_and_swap_last() {
        let layout = Layout {
            filename: "disk.raw".into(),
            size: 0,
            sector_size: 512,
            disk_guid: String::new(),
            partitions: vec![
                part(1, "vfat", Some("/boot/efi")),
                part(2, "swap", None),
                part(3, "ext4", Some("/srv")),
                part(4, "ext4", Some("/")),
                part(5, "none", None),
            ],
        };
        let text = fstab(&layout);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "PARTUUID=u4\t/\text4\terrors=remount-ro\t0\t1",
                "PARTUUID=u3\t/srv\text4\tdefaults\t0\t2",
                "PARTUUID=u1\t/boot/efi\tvfat\tumask=0077\t0\t2",
                "PARTUUID=u2\tnone\tswap\tsw\t0\t0",
            ]
        );
    }

    #[test]
    fn the_newest_kernel_is_chosen() {
        let mut v = ["6.1.0-10-amd64", "6.1.0-9-amd64"];
        v.sort_by_key(|v| version_key(v));
        assert_eq!(v.last(), Some(&"6.1.0-10-amd64"));
    }
}
