//! `mkfs`: a filesystem written into one partition's byte range of an
//! image file in the tree, populated from the input named `tree`, with the
//! build root's tools working on the file (no loop device, no mount).
//!
//! ```json
//! {"filename": "disk.raw", "partition": "root", "type": "ext4",
//!  "path": "/", "exclude": ["/boot/efi"], "label": "root"}
//! ```
//!
//! ```text
//!   TREE/disk.raw.json ─> the partition's range (strata_stage::disk)
//!   range punched to holes (same bytes whatever was there; stays sparse)
//!   ext4: mkfs.ext4 -d INPUT -E offset=START …, then one debugfs -w script:
//!         excluded contents removed, every inode's times set to the epoch
//!         (mkfs.ext4 1.47.0 copies ctime and atime from the source)
//!   vfat: mkfs.vfat --offset=SECTORS …, then mmd + mcopy -i IMG@@START per folder
//!   swap: mkswap on a scratch file in the tree, copied into the range
//! ```
//!
//! Filesystem UUIDs, hash seeds and volume ids derive from the stage id
//! (strata_stage::disk::derived), filesystem times from SOURCE_DATE_EPOCH
//! (mke2fs's E2FSPROGS_FAKE_TIME, mtools' SOURCE_DATE_EPOCH), so the same
//! input gives the same bytes.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, anyhow, bail};
use rustix::fs::FallocateFlags;
use serde::Deserialize;
use serde_json::json;
use strata_stage::disk::{Layout, Partition, SECTOR, derived, derived_uuid};
use strata_stage::{Args, Root, run_tool, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default = "default_filename")]
    filename: String,
    partition: String,
    #[serde(rename = "type")]
    fs_type: FsType,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    exclude: Vec<String>,
    label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FsType {
    Ext4,
    Vfat,
    Swap,
}

impl FsType {
    fn name(self) -> &'static str {
        match self {
            Self::Ext4 => "ext4",
            Self::Vfat => "vfat",
            Self::Swap => "swap",
        }
    }
}

fn default_filename() -> String {
    "disk.raw".into()
}

fn default_path() -> String {
    "/".into()
}

/// ext4's block size here: what mke2fs picks for anything but tiny disks.
const EXT4_BLOCK: u64 = 4096;

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let layout = Layout::read(&args.tree, &options.filename)?;
    let part = layout
        .find(&options.partition)
        .context("options.partition")?
        .clone();
    if part.filesystem != options.fs_type.name() {
        bail!(
            "options.type: partition {:?} was laid out for {}, not {}",
            part.name,
            part.filesystem,
            options.fs_type.name()
        );
    }
    for (i, x) in options.exclude.iter().enumerate() {
        if !x.starts_with('/') || x.split('/').any(|c| c == "..") || x == "/" {
            bail!(
                "options.exclude[{i}]: {x:?} is not an absolute path below the source, without \"..\""
            );
        }
    }
    let image = image_path(args, &layout)?;
    punch(&image, &part)?;
    let id = &args.meta.id;
    let epoch = args.meta.source_epoch;
    let uuid = match options.fs_type {
        FsType::Swap => {
            let uuid = derived_uuid(id, "swap");
            swap(args, &image, &part, &uuid, options.label.as_deref())?;
            uuid
        }
        FsType::Ext4 => {
            let source = source(args, &options.path)?;
            let uuid = derived_uuid(id, "ext4");
            ext4(
                &image,
                &part,
                &source,
                &options,
                &uuid,
                &derived_uuid(id, "ext4 hash seed"),
                epoch,
            )?;
            uuid
        }
        FsType::Vfat => {
            let source = source(args, &options.path)?;
            let b = derived(id, "vfat volume id");
            let volid = format!("{:02X}{:02X}{:02X}{:02X}", b[0], b[1], b[2], b[3]);
            vfat(&image, &part, &source, &options, &volid)?;
            format!("{}-{}", &volid[..4], &volid[4..])
        }
    };
    println!(
        "{} on partition {} {:?} ({} bytes at {}), uuid {uuid}",
        options.fs_type.name(),
        part.number,
        part.name,
        part.size,
        part.start
    );
    write_meta(
        args,
        &json!({
            "filename": layout.filename,
            "partition": part.number,
            "name": part.name,
            "type": options.fs_type.name(),
            "uuid": uuid,
            "label": options.label,
            "start": part.start,
            "size": part.size,
        }),
    )?;
    Ok(())
}

/// The image as a path the tools can open, after checking that it is a
/// regular file of the layout's size in this tree.
fn image_path(args: &Args, layout: &Layout) -> anyhow::Result<PathBuf> {
    let tree = Root::tree(args)?;
    let entry = tree.entry(&format!("/{}", layout.filename))?;
    let st = entry.lstat()?.with_context(|| {
        format!(
            "/{} is not in the tree (the partition stage makes it)",
            layout.filename
        )
    })?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        bail!("/{} is not a regular file", layout.filename);
    }
    if st.st_size as u64 != layout.size {
        bail!(
            "/{} is {} bytes, but its layout says {}",
            layout.filename,
            st.st_size,
            layout.size
        );
    }
    Ok(args.tree.join(&layout.filename))
}

/// Turns the partition's range into a hole: it reads as zeros whatever a
/// stage before left there, and takes no space until written.
fn punch(image: &Path, part: &Partition) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(image)
        .with_context(|| format!("cannot open {}", image.display()))?;
    rustix::fs::fallocate(
        &file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        part.start,
        part.size,
    )
    .with_context(|| {
        format!(
            "cannot clear partition {} of {}",
            part.number,
            image.display()
        )
    })
}

/// The folder to fill the filesystem from: `path` in the input `tree`,
/// resolved as that system would, never leaving it.
fn source(args: &Args, path: &str) -> anyhow::Result<PathBuf> {
    let input = args.input("tree").ok_or_else(|| {
        anyhow!("mkfs fills ext4 and vfat from its input named tree, and it was given none")
    })?;
    let root = Root::system(&input.path)?;
    root.open_dir(path)
        .with_context(|| format!("options.path {path}"))?;
    let real = root.entry(path)?.real_path()?;
    Ok(real)
}

fn ext4(
    image: &Path,
    part: &Partition,
    source: &Path,
    options: &Options,
    uuid: &str,
    hash_seed: &str,
    epoch: Option<u64>,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-b"])
        .arg(EXT4_BLOCK.to_string())
        .arg("-U")
        .arg(uuid)
        .arg("-E")
        .arg(format!("hash_seed={hash_seed},offset={}", part.start))
        .arg("-d")
        .arg(source);
    if let Some(label) = &options.label {
        cmd.arg("-L").arg(label);
    }
    cmd.arg(image).arg((part.size / EXT4_BLOCK).to_string());
    if let Some(epoch) = epoch {
        cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
    run_tool(&mut cmd).context("mkfs.ext4 failed")?;

    let script = debugfs_script(source, &options.exclude, epoch)?;
    if script.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("debugfs");
    cmd.arg("-w")
        .arg("-f")
        .arg("-")
        .arg(format!("{}?offset={}", image.display(), part.start));
    if let Some(epoch) = epoch {
        cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
    // debugfs reports a failed command on stderr and still exits 0: what
    // it says is checked.
    let out = strata_stage::feed_stderr(&mut cmd, script.as_bytes())
        .context("debugfs could not finish the filesystem")?;
    let complaints: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !complaints.is_empty() {
        bail!(
            "debugfs could not finish the filesystem: {}",
            complaints.join("; ")
        );
    }
    Ok(())
}

/// The debugfs commands that finish an ext4 made by `mkfs.ext4 -d`: with
/// an epoch, every inode's times set (atime, ctime and crtime to the
/// epoch, mtime clamped to it), then the contents of excluded folders
/// removed, deepest first (the folders stay, as mount points; their times
/// become debugfs's, which E2FSPROGS_FAKE_TIME makes the epoch).
fn debugfs_script(source: &Path, exclude: &[String], epoch: Option<u64>) -> anyhow::Result<String> {
    let mut script = String::new();
    let mut entries = Vec::new();
    walk(source, "", &mut entries)?;
    let excluded = |p: &str| {
        exclude.iter().any(|x| {
            p.strip_prefix(x.trim_end_matches('/'))
                .is_some_and(|r| r.starts_with('/'))
        })
    };
    if let Some(epoch) = epoch {
        // Excluded inodes too: a removed inode keeps its times on disk.
        let root_mtime = std::fs::metadata(source).map(|m| m.mtime()).unwrap_or(0);
        let mut all = vec![("/".to_owned(), true, root_mtime)];
        all.extend(entries.iter().cloned());
        all.push(("/lost+found".into(), true, 0));
        for (path, _, mtime) in &all {
            let q = quoted(path)?;
            for field in ["atime", "ctime", "crtime"] {
                script.push_str(&format!("sif {q} {field} @{epoch}\n"));
            }
            if *mtime < 0 || *mtime as u64 > epoch {
                script.push_str(&format!("sif {q} mtime @{epoch}\n"));
            }
        }
    }
    for (path, is_dir, _) in entries.iter().rev() {
        if excluded(path) {
            let verb = if *is_dir { "rmdir" } else { "rm" };
            script.push_str(&format!("{verb} {}\n", quoted(path)?));
        }
    }
    Ok(script)
}

/// Every entry below `dir`, parents before children, sorted by name:
/// (path from the source root, is a folder, mtime).
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, bool, i64)>) -> anyhow::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    names.sort();
    for name in names {
        let name = name
            .to_str()
            .with_context(|| format!("{rel}/{} is not UTF-8", name.to_string_lossy()))?
            .to_owned();
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?;
        let rel = format!("{rel}/{name}");
        out.push((rel.clone(), meta.is_dir(), meta.mtime()));
        if meta.is_dir() {
            walk(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// A path as one debugfs argument.
fn quoted(path: &str) -> anyhow::Result<String> {
    // debugfs's parser knows double quotes and nothing else: a backslash
    // (systemd's unit names have them) is taken as it is.
    if path.contains(['"', '\n']) {
        bail!("{path:?}: debugfs cannot be given a path with double quotes or newlines");
    }
    Ok(format!("\"{path}\""))
}

fn vfat(
    image: &Path,
    part: &Partition,
    source: &Path,
    options: &Options,
    volid: &str,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("mkfs.vfat");
    cmd.arg(format!("--offset={}", part.start / SECTOR))
        .args(["--invariant", "-i", volid])
        .args(fat_size(part.size));
    if let Some(label) = &options.label {
        cmd.arg("-n").arg(label);
    }
    // mkfs.vfat counts the size in KiB blocks.
    cmd.arg(image).arg((part.size / 1024).to_string());
    run_tool(&mut cmd).context("mkfs.vfat failed")?;

    let mut entries = Vec::new();
    walk(source, "", &mut entries)?;
    let target = format!("{}@@{}", image.display(), part.start);
    let excluded = |p: &str| {
        options.exclude.iter().any(|x| {
            p.strip_prefix(x.trim_end_matches('/'))
                .is_some_and(|r| r.starts_with('/'))
        })
    };
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|(p, _, _)| !excluded(p))
        .collect();
    let dirs: Vec<String> = entries
        .iter()
        .filter(|(_, d, _)| *d)
        .map(|(p, _, _)| format!("::{p}"))
        .collect();
    if !dirs.is_empty() {
        run_tool(mtools("mmd", &target).args(&dirs)).context("mmd failed")?;
    }
    // One mcopy per folder, with every file of that folder.
    let mut by_dir: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for (path, is_dir, _) in &entries {
        if *is_dir {
            continue;
        }
        let meta = std::fs::symlink_metadata(source.join(&path[1..]))?;
        if !meta.is_file() {
            bail!("{path} in the source is not a regular file or folder, which vfat cannot hold");
        }
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        by_dir
            .entry(format!("::{parent}/"))
            .or_default()
            .push(source.join(&path[1..]));
    }
    for (dir, files) in by_dir {
        run_tool(mtools("mcopy", &target).args(&files).arg(&dir))
            .with_context(|| format!("mcopy into {dir} failed"))?;
    }
    Ok(())
}

/// The FAT type (and cluster size) for a partition of `size` bytes.
/// mkfs.fat would choose by the size of the whole image file, not the
/// partition's, and refuse the FAT32 it chose for an ESP of 100 MiB; FAT32,
/// which UEFI asks of an ESP, needs 65525 clusters: one-sector clusters
/// below 512 MiB give that from 33 MiB up.
fn fat_size(size: u64) -> Vec<&'static str> {
    const MIB: u64 = 1 << 20;
    if size < 64 * MIB {
        vec!["-F", "16"]
    } else if size < 512 * MIB {
        vec!["-F", "32", "-s", "1"]
    } else {
        vec!["-F", "32"]
    }
}

/// An mtools command on the filesystem at `target` (IMAGE@@OFFSET).
fn mtools(program: &str, target: &str) -> Command {
    let mut cmd = Command::new(program);
    // No mtools.conf checks of the drive geometry: this is a file.
    cmd.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(target);
    if program == "mcopy" {
        cmd.arg("-Q");
    }
    cmd
}

/// mkswap on a scratch file in the tree (util-linux's mkswap writes at
/// offset 0 only), copied into the range, holes skipped.
fn swap(
    args: &Args,
    image: &Path,
    part: &Partition,
    uuid: &str,
    label: Option<&str>,
) -> anyhow::Result<()> {
    let scratch = args.tree.join(".strata-mkswap.tmp");
    let made = (|| -> anyhow::Result<()> {
        File::create(&scratch)
            .and_then(|f| f.set_len(part.size))
            .with_context(|| format!("cannot make {}", scratch.display()))?;
        let mut cmd = Command::new("mkswap");
        cmd.arg("-U").arg(uuid);
        if let Some(label) = label {
            cmd.arg("-L").arg(label);
        }
        run_tool(cmd.arg(&scratch)).context("mkswap failed")?;
        let mut from = File::open(&scratch)?;
        let to = OpenOptions::new().write(true).open(image)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0u64;
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                to.write_all_at(&buf[..n], part.start + at)?;
            }
            at += n as u64;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&scratch);
    made
}
