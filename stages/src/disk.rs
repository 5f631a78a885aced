//! Disk images in a tree: the layout the `partition` stage writes beside
//! the image, and what the stages after it (`mkfs`, `bootloader`) read
//! from it.
//!
//! ```text
//! TREE/disk.raw         the image: a sparse file with a GPT (sfdisk)
//! TREE/disk.raw.json    its Layout: every partition's byte range, type,
//!                       uuid, filesystem and mount point
//! ```
//!
//! The layout travels as a file rather than being read back from the GPT
//! (`sfdisk --json`): the GPT has no filesystem role or mount point, and
//! the bootloader stage runs with a system tree as `/`, which need not have
//! sfdisk. Whoever reads it checks it against the image ([`Layout::check`]).
//!
//! Everything that would be random in a fresh disk (disk GUID, partition
//! uuids, filesystem uuids, hash seeds, vfat volume ids) is [`derived`]
//! from the stage's id, so the same manifest gives the same bytes.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The sector size of the images made here.
pub const SECTOR: u64 = 512;

/// Partitions start on MiB boundaries, as sfdisk and every partitioner
/// align them.
pub const ALIGN: u64 = 1 << 20;

/// What a `partition` stage made, saved as `FILENAME.json` beside the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// The image's file name in the tree.
    pub filename: String,
    /// The image's size in bytes.
    pub size: u64,
    pub sector_size: u64,
    /// The GPT's disk GUID.
    pub disk_guid: String,
    pub partitions: Vec<Partition>,
}

/// One partition of a [`Layout`]; byte offsets from the start of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// The partition number (1-based, as the GPT and /dev/vdaN count).
    pub number: u32,
    /// The GPT partition name, which the stages after use to name it.
    pub name: String,
    /// ext4, vfat, swap or none.
    pub filesystem: String,
    pub mountpoint: Option<String>,
    /// The partition type GUID.
    #[serde(rename = "type")]
    pub type_guid: String,
    /// The partition's unique GUID (PARTUUID).
    pub uuid: String,
    pub start: u64,
    pub size: u64,
}

impl Layout {
    /// The path of the layout of image `filename` in a tree.
    pub fn file_name(filename: &str) -> String {
        format!("{filename}.json")
    }

    /// Reads the layout of image `filename` kept in the folder `dir`.
    pub fn read(dir: &Path, filename: &str) -> anyhow::Result<Self> {
        let path = dir.join(Self::file_name(filename));
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read the layout {} (made by the partition stage)",
                path.display()
            )
        })?;
        let layout: Self = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a partition layout", path.display()))?;
        layout
            .check()
            .with_context(|| format!("{} is not a sound layout", path.display()))?;
        Ok(layout)
    }

    /// Refuses a layout whose partitions overlap or leave the image.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut end = 0;
        for p in &self.partitions {
            if p.start < end || p.size == 0 {
                bail!("partition {} overlaps the one before it", p.number);
            }
            end = p
                .start
                .checked_add(p.size)
                .filter(|&e| e <= self.size)
                .with_context(|| format!("partition {} ends past the image", p.number))?;
        }
        Ok(())
    }

    /// The partition named `name` (its GPT name, or its number).
    pub fn find(&self, name: &str) -> anyhow::Result<&Partition> {
        self.partitions
            .iter()
            .find(|p| p.name == name || p.number.to_string() == name)
            .with_context(|| {
                let known: Vec<&str> = self.partitions.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "{} has no partition {name:?} (it has: {})",
                    self.filename,
                    known.join(", ")
                )
            })
    }
}

/// 16 bytes derived from `seed` (a stage id) and `what` names their use.
pub fn derived(seed: &str, what: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"strata disk\0");
    h.update(seed.as_bytes());
    h.update(b"\0");
    h.update(what.as_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// A UUID derived as [`derived`], marked as version 4 (random-looking) and
/// RFC 4122 variant, so tools that check the form accept it.
pub fn derived_uuid(seed: &str, what: &str) -> String {
    let mut b = derived(seed, what);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A size in bytes, as the image options give it: a number of bytes, or a
/// string of digits with a binary unit `K`, `M`, `G` or `T` (KiB … TiB,
/// `100M`, `2G`; `MiB` and `MB` mean the same).
pub fn parse_size(value: &serde_json::Value) -> Result<u64, String> {
    match value {
        serde_json::Value::Number(n) => n
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{n} is not a positive number of bytes")),
        serde_json::Value::String(s) => {
            let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &s[digits.len()..];
            let shift = match unit {
                "" => 0,
                "K" | "KiB" | "KB" => 10,
                "M" | "MiB" | "MB" => 20,
                "G" | "GiB" | "GB" => 30,
                "T" | "TiB" | "TB" => 40,
                _ => return Err(format!("{s:?} has an unknown unit (K, M, G or T)")),
            };
            digits
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| n.checked_mul(1 << shift))
                .ok_or_else(|| format!("{s:?} is not a positive size such as 512M or 2G"))
        }
        other => Err(format!(
            "{other} is not a size (bytes, or a string like 2G)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_are_bytes_or_binary_units() {
        assert_eq!(parse_size(&json!(4096)), Ok(4096));
        assert_eq!(parse_size(&json!("100M")), Ok(100 << 20));
        assert_eq!(parse_size(&json!("2GiB")), Ok(2 << 30));
        assert_eq!(parse_size(&json!("1T")), Ok(1 << 40));
        assert_eq!(parse_size(&json!("512")), Ok(512));
        for bad in [
            json!(0),
            json!(-1),
            json!("0M"),
            json!("1X"),
            json!("M"),
            json!(1.5),
        ] {
            assert!(parse_size(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uuids_are_derived_and_well_formed() {
        let a = derived_uuid("id1", "partition 1");
        assert_eq!(a, derived_uuid("id1", "partition 1"));
        assert_ne!(a, derived_uuid("id1", "partition 2"));
        assert_ne!(a, derived_uuid("id2", "partition 1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }
}
