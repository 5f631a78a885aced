//! `partition`: a sparse image file at the root of the tree with a GPT on
//! it, written by the build root's sfdisk on the file (no loop device).
//!
//! ```json
//! {"filename": "disk.raw", "size": "2G", "architecture": "amd64",
//!  "partitions": [
//!    {"name": "esp", "size": "100M", "filesystem": "vfat", "mountpoint": "/boot/efi"},
//!    {"name": "swap", "size": "256M", "filesystem": "swap"},
//!    {"size": "64M", "filesystem": "freespace"},
//!    {"name": "root", "filesystem": "ext4", "mountpoint": "/"}]}
//! ```
//!
//! ```text
//!   options ─> layout (MiB-aligned byte ranges, DPS type GUIDs,
//!              uuids derived from the stage id)
//!          ─> sfdisk script ─> sfdisk TREE/.disk.raw.strata-tmp ─rename─> TREE/disk.raw
//!          ─> TREE/disk.raw.json (the layout, strata_stage::disk) and meta.json
//! ```

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use strata_stage::disk::{ALIGN, Layout, Partition, SECTOR, derived_uuid, parse_size};
use strata_stage::{Args, Root, feed, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default = "default_filename")]
    filename: String,
    size: Value,
    #[serde(default = "default_architecture")]
    architecture: String,
    partitions: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    size: Option<Value>,
    filesystem: String,
    mountpoint: Option<String>,
    #[serde(rename = "type")]
    type_guid: Option<String>,
}

fn default_filename() -> String {
    "disk.raw".into()
}

fn default_architecture() -> String {
    "amd64".into()
}

/// The Discoverable Partitions Specification's EFI System Partition.
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
/// Linux filesystem data: what a partition with no role of its own is.
const LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// The DPS root partition type for a Debian architecture.
fn root_type(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "arm64" => "b921b045-1df0-41c3-af44-4c6f280d3fae",
        "i386" => "44479540-f297-41b2-9af7-d131d5f0458a",
        "armhf" | "armel" => "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
        "riscv64" => "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
        "ppc64el" => "c31c45e6-3f39-412e-80fb-4809c4980599",
        "s390x" => "5eead9a9-fe09-4a1e-a1d7-520d00531306",
        "loong64" => "77055800-792c-4f94-b39a-98c91b762bb6",
        "mips64el" => "700bda43-7a34-4507-b179-eeb93d7a7ca3",
        _ => return None,
    })
}

/// The DPS type of a partition mounted elsewhere than `/`.
fn mount_type(mountpoint: &str) -> &'static str {
    match mountpoint {
        "/home" => "933ac7e1-2eb4-4f13-b844-0e14e2aef915",
        "/srv" => "3b8f8425-20e0-4f3b-907f-1a25a76f98e8",
        "/var" => "4d21b016-b534-45c2-a9fb-5c16e091fd2d",
        "/var/tmp" => "7ec6f557-3bc5-4aca-b293-16ef5df639d1",
        // The Extended Boot Loader Partition.
        "/boot" => "bc13c2ff-59e6-4262-a352-b275fd6f7172",
        _ => LINUX_DATA,
    }
}

/// The GPT keeps 33 sectors at the end for its backup.
const BACKUP_GPT: u64 = 33 * SECTOR;

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let layout = layout(&options, &args.meta.id)?;
    let tree = Root::tree(args)?;

    let staged = tree.stage_file(&layout.filename)?;
    let made = staged
        .file
        .set_len(layout.size)
        .context("cannot size the image")
        .and_then(|()| {
            let path = tree.path().join(format!(".{}.strata-tmp", layout.filename));
            feed(
                Command::new("sfdisk")
                    .args([
                        "--quiet",
                        "--no-reread",
                        "--no-tell-kernel",
                        "--wipe",
                        "never",
                    ])
                    .arg(&path),
                script(&layout).as_bytes(),
            )
            .context("sfdisk could not write the partition table")
        });
    if let Err(e) = made {
        staged.discard();
        return Err(e);
    }
    staged.publish()?;

    let text = serde_json::to_vec_pretty(&layout).expect("a layout serializes");
    tree.write_file(
        &format!("/{}", Layout::file_name(&layout.filename)),
        &mut text.as_slice(),
        0o644,
    )?;
    for p in &layout.partitions {
        println!(
            "partition {} {:?}: {} bytes at {}, {}, type {}",
            p.number, p.name, p.size, p.start, p.filesystem, p.type_guid
        );
    }
    write_meta(args, &serde_json::to_value(&layout)?)?;
    Ok(())
}

/// The layout the options ask for, every error naming the option.
fn layout(options: &Options, seed: &str) -> anyhow::Result<Layout> {
    let name = &options.filename;
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !plain || name.starts_with('.') || name.is_empty() {
        bail!(
            "options.filename: {name:?} is not a plain file name ([A-Za-z0-9._+-]+, no leading dot)"
        );
    }
    let size = parse_size(&options.size).map_err(|e| anyhow::anyhow!("options.size: {e}"))?;
    if size % SECTOR != 0 {
        bail!("options.size: {size} bytes is not a whole number of {SECTOR}-byte sectors");
    }
    let root = root_type(&options.architecture).with_context(|| {
        format!(
            "options.architecture: {:?} has no root partition type in the Discoverable Partitions Specification",
            options.architecture
        )
    })?;
    // Everything after the last partition: the backup GPT, aligned down.
    let usable_end = size.saturating_sub(BACKUP_GPT) / ALIGN * ALIGN;
    let mut at = ALIGN;
    let mut partitions: Vec<Partition> = Vec::new();
    let count = options.partitions.len();
    for (i, entry) in options.partitions.iter().enumerate() {
        let key = format!("options.partitions[{i}]");
        let wanted = match &entry.size {
            Some(v) => {
                let bytes = parse_size(v).map_err(|e| anyhow::anyhow!("{key}.size: {e}"))?;
                // Rounded up so the next one starts aligned.
                bytes.div_ceil(ALIGN) * ALIGN
            }
            None if i + 1 == count => usable_end.saturating_sub(at),
            None => bail!(
                "{key}.size: only the last partition may leave out its size (it takes the rest)"
            ),
        };
        if wanted == 0 || at + wanted > usable_end {
            bail!(
                "{key}: {wanted} bytes at offset {at} do not fit in the {size}-byte image \
                 (partitions end at {usable_end}: the GPT takes the first MiB and its backup the last sectors)"
            );
        }
        if entry.filesystem == "freespace" {
            if entry.name.is_some() || entry.mountpoint.is_some() || entry.type_guid.is_some() {
                bail!("{key}: freespace is a gap, with only a size (no name, mountpoint or type)");
            }
            at += wanted;
            continue;
        }
        let number = partitions.len() as u32 + 1;
        let type_guid = match (
            &entry.type_guid,
            entry.filesystem.as_str(),
            entry.mountpoint.as_deref(),
        ) {
            (Some(t), _, _) => {
                if !is_guid(t) {
                    bail!("{key}.type: {t:?} is not a GUID");
                }
                t.to_ascii_lowercase()
            }
            (None, "vfat", Some("/boot/efi" | "/efi")) => ESP.into(),
            (None, "swap", _) => SWAP.into(),
            (None, _, Some("/")) => root.into(),
            (None, _, Some(m)) => mount_type(m).into(),
            (None, _, None) => LINUX_DATA.into(),
        };
        if let Some(m) = &entry.mountpoint {
            if !m.starts_with('/')
                || m.split('/').any(|c| c == "..")
                || m.contains(char::is_whitespace)
            {
                bail!("{key}.mountpoint: {m:?} is not an absolute path without \"..\" or spaces");
            }
            if entry.filesystem == "swap" || entry.filesystem == "none" {
                bail!(
                    "{key}.mountpoint: a {} partition is not mounted",
                    entry.filesystem
                );
            }
            if let Some(other) = partitions
                .iter()
                .find(|p| p.mountpoint.as_deref() == Some(m))
            {
                bail!(
                    "{key}.mountpoint: {m} is already partition {}'s",
                    other.number
                );
            }
        }
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| format!("part{number}"));
        if name.is_empty()
            || name.len() > 36
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            bail!("{key}.name: {name:?} is not a partition name ([A-Za-z0-9._-], at most 36)");
        }
        if partitions.iter().any(|p| p.name == name) {
            bail!("{key}.name: {name:?} names two partitions");
        }
        partitions.push(Partition {
            number,
            uuid: derived_uuid(seed, &format!("partition {number}")),
            name,
            filesystem: entry.filesystem.clone(),
            mountpoint: entry.mountpoint.clone(),
            type_guid,
            start: at,
            size: wanted,
        });
        at += wanted;
    }
    if partitions.is_empty() {
        bail!("options.partitions: there is no partition to make");
    }
    let layout = Layout {
        filename: options.filename.clone(),
        size,
        sector_size: SECTOR,
        disk_guid: derived_uuid(seed, "disk"),
        partitions,
    };
    layout.check()?;
    Ok(layout)
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// sfdisk's input: every start and size given, in sectors, so the table is
/// the layout whatever sfdisk's defaults.
fn script(layout: &Layout) -> String {
    let mut s = format!(
        "label: gpt\nlabel-id: {}\nunit: sectors\nsector-size: {SECTOR}\nfirst-lba: {}\n\n",
        layout.disk_guid,
        ALIGN / SECTOR
    );
    for p in &layout.partitions {
        s.push_str(&format!(
            "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
            p.start / SECTOR,
            p.size / SECTOR,
            p.type_guid,
            p.uuid,
            p.name
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(v: Value) -> Options {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn freespace_offsets_the_next_partition_and_the_last_takes_the_rest() {
        let l = layout(
            &options(json!({"size": "1G", "partitions": [
                {"name": "esp", "size": "100M", "filesystem": "vfat", "mountpoint": "/boot/efi"},
                {"size": "1M", "filesystem": "freespace"},
                {"filesystem": "swap", "size": 1000},
                {"name": "root", "filesystem": "ext4", "mountpoint": "/"}]})),
            "seed",
        )
        .unwrap();
        let p = &l.partitions;
        assert_eq!(
            (p[0].start, p[0].size, p[0].type_guid.as_str()),
            (1 << 20, 100 << 20, ESP)
        );
        assert_eq!(
            (p[1].start, p[1].size, p[1].name.as_str()),
            (102 << 20, 1 << 20, "part2")
        );
        assert_eq!(p[1].type_guid, SWAP);
        assert_eq!(p[2].start, 103 << 20);
        assert_eq!(p[2].start + p[2].size, 1023 << 20);
        assert_eq!(p[2].type_guid, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert_eq!(p[2].number, 3);
        let s = script(&l);
        assert!(s.contains("start=2048, size=204800, type=c12a7328"), "{s}");
    }

    #[test]
    fn bad_layouts_name_the_option() {
        let bad = |v: Value, want: &str| {
            let e = format!("{:#}", layout(&options(v), "s").unwrap_err());
            assert!(e.contains(want), "{e} lacks {want}");
        };
        bad(
            json!({"size": "10M", "partitions": [{"size": "20M", "filesystem": "ext4"}]}),
            "options.partitions[0]: 20971520 bytes at offset 1048576 do not fit",
        );
        bad(
            json!({"size": "1G", "partitions": [{"filesystem": "ext4"}, {"filesystem": "swap", "size": "1M"}]}),
            "options.partitions[0].size: only the last",
        );
        bad(
            json!({"size": "1G", "partitions": [{"filesystem": "ext4", "mountpoint": "boot"}]}),
            "options.partitions[0].mountpoint: \"boot\" is not an absolute path",
        );
        bad(
            json!({"size": "1G", "architecture": "vax", "partitions": []}),
            "options.architecture",
        );
        bad(
            json!({"size": "1Q", "partitions": []}),
            "options.size: \"1Q\" has an unknown unit",
        );
        bad(
            json!({"size": "1G", "partitions": [{"filesystem": "swap", "mountpoint": "/x", "size": "1M"}]}),
            "a swap partition is not mounted",
        );
        bad(
            json!({"size": "1G", "partitions": [{"name": "a", "filesystem": "ext4", "size": "1M"}, {"name": "a", "filesystem": "ext4"}]}),
            "options.partitions[1].name: \"a\" names two partitions",
        );
        bad(
            json!({"size": "1G", "partitions": [{"filesystem": "ext4", "type": "nope"}]}),
            "options.partitions[0].type: \"nope\" is not a GUID",
        );
    }
}
