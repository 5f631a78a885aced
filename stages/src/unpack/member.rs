//! One member of an archive: its one name, its kind, owner, mode, time and
//! xattrs, judged by its names alone.
//!
//! ```text
//!   tar crate, raw entries:  [g] [L] [K] [x] HEADER data   [x] HEADER data ...
//!                             │   └──┴───┴─> Pending ──┐
//!                             └─ global: only a comment │  read: Member
//!                                                       └───────> (PAX path > GNU long name > header)
//! ```
//!
//! The crate frames the archive (headers, sizes, padding); the extension
//! headers that describe the next member (GNU long names `L` and `K`, PAX
//! `x`) are read here, and [`read`] is the only place that decides a
//! member's names: the same names are judged and written. Where a member
//! has both a GNU long name and a PAX `path` (or `linkpath`), the PAX
//! record is the name, as in GNU tar and POSIX.
//!
//! Why not the crate's own folding of those headers: it reads PAX records
//! by splitting on newlines (tar-rs issues 428 and 452), and GNU tar's own
//! ACL records (`SCHILY.acl.access=user::rw-\nuser:1000:r--\n…`) and some
//! binary xattrs hold newlines: it stops at the first such record and loses
//! the rest, and a crafted value can hide a `path` or `size` record that a
//! length-prefixed reader (GNU tar) never sees. Here records are read by
//! their length, as POSIX has them. The crate's framing uses each header's
//! own size, so a PAX `size` that disagrees with it (members of 8 GiB and
//! more) is refused, as are GNU sparse members, whose extra headers only
//! the crate's folding reads.

use std::io::Read;

use rustix::fs::{Dev, Timespec};
use tar::EntryType;

use super::UnpackError;
use super::acl;

/// What a member makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    /// Its target, as stored.
    Symlink(Vec<u8>),
    /// An earlier member: its normalized path, and its name as stored.
    HardLink {
        target: Vec<u8>,
        shown: String,
    },
    Char(Dev),
    Block(Dev),
    Fifo,
}

/// A member, read and judged by its names; nothing is written yet.
#[derive(Debug)]
pub(super) struct Member {
    /// The name as the archive has it, for messages.
    pub shown: String,
    /// The name below the tree: components joined by `/`, without `.` or
    /// empty ones; empty for the tree's root.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, set-id and sticky bits included.
    pub mode: u32,
    pub mtime: Timespec,
    /// Extended attributes (`SCHILY.xattr.*`, and POSIX ACLs given only as
    /// text), in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of content (regular files; 0 for the rest).
    pub size: u64,
    /// What could not be kept, said but not fatal (as GNU tar warns).
    pub warnings: Vec<String>,
}

impl Member {
    /// `(parent, final component)` of [`Member::path`]; the parent is empty
    /// for a member at the top of the tree.
    pub fn split(&self) -> (&[u8], &[u8]) {
        split(&self.path)
    }

    pub fn refused(&self, why: impl Into<String>) -> UnpackError {
        UnpackError::Refused {
            member: self.shown.clone(),
            why: why.into(),
        }
    }

    pub fn failed(&self, what: impl Into<String>, e: impl Into<std::io::Error>) -> UnpackError {
        UnpackError::Failed {
            member: self.shown.clone(),
            what: what.into(),
            source: e.into(),
        }
    }
}

pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// What [`read`] found.
pub(super) enum Found {
    Member(Box<Member>),
    /// Nothing to unpack: an extension header (kept in [`Pending`] for the
    /// member it describes), a global PAX header without effect, a volume
    /// label.
    Nothing,
}

/// The extension headers read since the last member: they describe the
/// next one.
#[derive(Debug, Default)]
pub(super) struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
    /// The first of them, for an archive that ends after it.
    first: Option<String>,
}

impl Pending {
    /// Refuses an archive that ends with extension headers and no member.
    pub fn finish(&self) -> Result<(), UnpackError> {
        match &self.first {
            None => Ok(()),
            Some(name) => Err(UnpackError::Refused {
                member: name.clone(),
                why: "is an extension header that no member follows".into(),
            }),
        }
    }
}

/// The most an extension header may hold: a PAX header carries a member's
/// xattrs (each at most 64 KiB in Linux), a GNU long name a path.
const PAX_CAP: u64 = 1 << 20;
const LONG_NAME_CAP: u64 = 64 << 10;

/// Reads the header (not the content) of the raw `entry`: an extension
/// header goes into `pending`, a member takes what is pending.
pub(super) fn read<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    pending: &mut Pending,
) -> Result<Found, UnpackError> {
    let header = entry.header();
    let ty = header.entry_type();
    let header_name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
    let refuse = |why: String| UnpackError::Refused {
        member: header_name.clone(),
        why,
    };
    let (slot, cap) = match ty {
        EntryType::GNULongName => (&mut pending.long_name, LONG_NAME_CAP),
        EntryType::GNULongLink => (&mut pending.long_link, LONG_NAME_CAP),
        EntryType::XHeader => (&mut pending.pax, PAX_CAP),
        EntryType::XGlobalHeader => {
            let data = read_capped(entry, PAX_CAP).map_err(refuse)?;
            global_header(&data).map_err(refuse)?;
            return Ok(Found::Nothing);
        }
        // A GNU volume label names the archive, not a file.
        _ if ty.as_byte() == b'V' => return Ok(Found::Nothing),
        _ => return member(entry, std::mem::take(pending)).map(Found::Member),
    };
    if slot.is_some() {
        return Err(refuse(format!(
            "is a second {} header for the same member",
            kind_name(ty)
        )));
    }
    let mut data = read_capped(entry, cap).map_err(refuse)?;
    if ty != EntryType::XHeader {
        // GNU tar ends the name with a NUL.
        while data.last() == Some(&0) {
            data.pop();
        }
    }
    *slot = Some(data);
    pending.first.get_or_insert(header_name);
    Ok(Found::Nothing)
}

fn kind_name(ty: EntryType) -> &'static str {
    match ty {
        EntryType::GNULongName => "GNU long name",
        EntryType::GNULongLink => "GNU long link",
        _ => "PAX",
    }
}

fn read_capped<R: Read>(entry: &mut tar::Entry<'_, R>, cap: u64) -> Result<Vec<u8>, String> {
    if entry.size() > cap {
        return Err(format!(
            "is an extension header of {} bytes (at most {cap})",
            entry.size()
        ));
    }
    let mut data = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut data)
        .map_err(|e| format!("is an extension header that cannot be read: {e}"))?;
    Ok(data)
}

/// The member whose header `entry` is, described also by `pending`.
fn member<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    pending: Pending,
) -> Result<Box<Member>, UnpackError> {
    let header = entry.header();
    let ty = header.entry_type();
    let mut pax = Pax::default();
    if let Some(data) = &pending.pax {
        pax.read(data).map_err(|why| UnpackError::Refused {
            member: String::from_utf8_lossy(&header.path_bytes()).into_owned(),
            why,
        })?;
    }
    let raw_path = pax
        .path
        .clone()
        .or(pending.long_name)
        .unwrap_or_else(|| header.path_bytes().into_owned());
    let shown = String::from_utf8_lossy(&raw_path).into_owned();
    let refuse = |why: String| UnpackError::Refused {
        member: shown.clone(),
        why,
    };
    if let Some(key) = &pax.sparse {
        return Err(refuse(format!(
            "is a GNU sparse file in PAX form ({key}), which untar does not unpack"
        )));
    }
    if let Some(size) = pax.size
        && size != entry.size()
    {
        return Err(refuse(format!(
            "has a PAX size of {size} bytes where its header says {}: untar frames members by \
             their headers (and so does not unpack members of 8 GiB and more)",
            entry.size()
        )));
    }
    let path = normalize(&raw_path).map_err(refuse)?;
    let field = |what: &str, e: std::io::Error| refuse(format!("has an unreadable {what}: {e}"));
    let link = || {
        pax.linkpath
            .clone()
            .or_else(|| pending.long_link.clone())
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()))
            .unwrap_or_default()
    };
    let dev = || -> Result<Dev, UnpackError> {
        let major = blank_is_zero(header, DEV_MAJOR, || header.device_major())
            .map_err(|e| field("device major", e))?;
        let minor = blank_is_zero(header, DEV_MINOR, || header.device_minor())
            .map_err(|e| field("device minor", e))?;
        Ok(rustix::fs::makedev(major.unwrap_or(0), minor.unwrap_or(0)))
    };
    let kind = match ty {
        EntryType::Regular | EntryType::Continuous => Kind::File,
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => {
            let target = link();
            judge_symlink(&path, &target).map_err(refuse)?;
            Kind::Symlink(target)
        }
        EntryType::Link => {
            let raw = link();
            let target_shown = String::from_utf8_lossy(&raw).into_owned();
            let target = normalize(&raw).map_err(|_| {
                refuse(format!(
                    "is a hard link to {target_shown}, outside the archive"
                ))
            })?;
            Kind::HardLink {
                target,
                shown: target_shown,
            }
        }
        EntryType::Char => Kind::Char(dev()?),
        EntryType::Block => Kind::Block(dev()?),
        EntryType::Fifo => Kind::Fifo,
        EntryType::GNUSparse => {
            return Err(refuse(
                "is a GNU sparse file (tar --sparse --format=gnu), which untar does not unpack"
                    .into(),
            ));
        }
        other => {
            return Err(refuse(format!(
                "is of type '{}', which untar does not unpack",
                other.as_byte().escape_ascii()
            )));
        }
    };
    if path.is_empty() && kind != Kind::Dir {
        return Err(refuse(
            "names the tree's root but is not a directory".into(),
        ));
    }
    let id = |what: &str, pax: Option<u64>, v: std::io::Result<u64>| -> Result<u32, UnpackError> {
        let v = match pax {
            Some(v) => v,
            None => v.map_err(|e| field(what, e))?,
        };
        u32::try_from(v).map_err(|_| refuse(format!("has {what} {v}, which no system has")))
    };
    let uid = id("uid", pax.uid, blank_is_zero(header, UID, || header.uid()))?;
    let gid = id("gid", pax.gid, blank_is_zero(header, GID, || header.gid()))?;
    let mode =
        blank_is_zero(header, MODE, || header.mode()).map_err(|e| field("mode", e))? & 0o7777;
    let mtime = match pax.mtime {
        Some(t) => t,
        None => Timespec {
            tv_sec: i64::try_from(
                blank_is_zero(header, MTIME, || header.mtime()).map_err(|e| field("mtime", e))?,
            )
            .unwrap_or(i64::MAX),
            tv_nsec: 0,
        },
    };
    let size = if kind == Kind::File { entry.size() } else { 0 };
    let mut warnings = pax.warnings;
    let mut xattrs = pax.xattrs;
    for (key, text) in pax.acls {
        let name = acl::xattr_name(&key);
        if xattrs.iter().any(|(n, _)| n == name.as_bytes()) {
            // GNU tar writes the ACL twice (text and the raw xattr): the raw
            // one carries numeric ids, the text one names from the packing host.
            continue;
        }
        match acl::from_text(&text) {
            Ok(value) => xattrs.push((name.as_bytes().to_vec(), value)),
            Err(why) => warnings.push(format!("its ACL ({key}) is not kept: {why}")),
        }
    }
    Ok(Box::new(Member {
        shown,
        path,
        kind,
        uid,
        gid,
        mode,
        mtime,
        xattrs,
        size,
        warnings,
    }))
}

/// Where a header keeps its numeric fields (the crate reads them; only
/// whether one is blank is looked at here).
const MODE: std::ops::Range<usize> = 100..108;
const UID: std::ops::Range<usize> = 108..116;
const GID: std::ops::Range<usize> = 116..124;
const MTIME: std::ops::Range<usize> = 136..148;
const DEV_MAJOR: std::ops::Range<usize> = 329..337;
const DEV_MINOR: std::ops::Range<usize> = 337..345;

/// A numeric field left blank (NULs and spaces) is 0, as GNU tar reads
/// it; the crate would call it not a number.
fn blank_is_zero<T: Default>(
    header: &tar::Header,
    at: std::ops::Range<usize>,
    read: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    if header.as_bytes()[at].iter().all(|&b| b == 0 || b == b' ') {
        return Ok(T::default());
    }
    read()
}

/// The records of a member's PAX header that untar uses; a later record
/// of a key wins, as in GNU tar.
#[derive(Debug, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Timespec>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `SCHILY.acl.access` / `.default` and their text.
    acls: Vec<(String, Vec<u8>)>,
    /// The first `GNU.sparse.*` key, if any.
    sparse: Option<String>,
    warnings: Vec<String>,
}

const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

impl Pax {
    fn read(&mut self, data: &[u8]) -> Result<(), String> {
        for (key, value) in records(data)? {
            let number = |what: &str| -> Result<u64, String> {
                std::str::from_utf8(value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        format!(
                            "has a PAX {what} {} that is not a number",
                            value.escape_ascii()
                        )
                    })
            };
            match key {
                b"path" => self.path = Some(value.to_vec()),
                b"linkpath" => self.linkpath = Some(value.to_vec()),
                b"size" => self.size = Some(number("size")?),
                b"uid" => self.uid = Some(number("uid")?),
                b"gid" => self.gid = Some(number("gid")?),
                b"mtime" => match parse_time(value) {
                    Some(t) => self.mtime = Some(t),
                    None => self.warnings.push(format!(
                        "its PAX mtime {} is not a time; the header's is used",
                        value.escape_ascii()
                    )),
                },
                b"SCHILY.acl.access" | b"SCHILY.acl.default" => self
                    .acls
                    .push((String::from_utf8_lossy(key).into_owned(), value.to_vec())),
                k if k.starts_with(XATTR_PREFIX) => {
                    let name = decode_xattr_name(&k[XATTR_PREFIX.len()..]);
                    if name.is_empty() || name.contains(&0) {
                        return Err(format!("has a bad xattr name {}", k.escape_ascii()));
                    }
                    self.xattrs.push((name, value.to_vec()));
                }
                k if k.starts_with(b"GNU.sparse.") && self.sparse.is_none() => {
                    self.sparse = Some(String::from_utf8_lossy(k).into_owned());
                }
                // Names (uname, gname) are not used: owners are numeric.
                _ => {}
            }
        }
        Ok(())
    }
}

/// A PAX record: key and value.
type Record<'a> = (&'a [u8], &'a [u8]);

/// The records of PAX header data, each `LEN KEY=VALUE\n` where LEN counts
/// the whole record: a value may hold newlines (and any byte).
fn records(mut data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let bad = |why: &str| format!("has a PAX header that cannot be read: {why}");
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("a record without its length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad("a record without its length"))?;
        if len <= space + 1 || len > data.len() {
            return Err(bad("a record longer than the header"));
        }
        let (record, rest) = data.split_at(len);
        let body = record[space + 1..]
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("a record that does not end where its length says"))?;
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("a record without '='"))?;
        out.push((&body[..eq], &body[eq + 1..]));
        data = rest;
    }
    Ok(out)
}

/// A global PAX header's records would apply to every later member in GNU
/// tar; untar applies none, so it refuses one that says anything but a
/// comment (git archive writes its commit there).
fn global_header(data: &[u8]) -> Result<(), String> {
    for (key, _) in records(data)? {
        if key != b"comment" {
            return Err(format!(
                "is a global PAX header setting {}, which would apply to every later member; \
                 untar does not apply it",
                key.escape_ascii()
            ));
        }
    }
    Ok(())
}

/// GNU tar writes `=` and `%` in xattr names as `%3D` and `%25`.
fn decode_xattr_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match &raw[i..] {
            [b'%', b'3', b'D' | b'd', ..] => {
                out.push(b'=');
                i += 3;
            }
            [b'%', b'2', b'5', ..] => {
                out.push(b'%');
                i += 3;
            }
            [b, ..] => {
                out.push(*b);
                i += 1;
            }
            [] => unreachable!("i < len"),
        }
    }
    out
}

/// A PAX time: `[-]SECONDS[.FRACTION]`.
fn parse_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, b) in fraction.bytes().take(9).enumerate() {
        nsec += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(match (negative, nsec) {
        (false, _) => Timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        },
        (true, 0) => Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nsec,
        },
    })
}

/// A member name as a path below the tree; refused when it is absolute,
/// climbs with `..` or holds a NUL byte.
pub(super) fn normalize(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.contains(&0) {
        return Err("has a NUL byte in its name".into());
    }
    if raw.starts_with(b"/") {
        return Err("has an absolute path".into());
    }
    let mut path = Vec::with_capacity(raw.len());
    for c in components(raw) {
        if c == b".." {
            return Err("has a \"..\" component".into());
        }
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(c);
    }
    Ok(path)
}

/// A symlink's target is kept as written, except one that climbs above the
/// tree's root: absolute targets mean the tree's own root in a system
/// (`/etc/resolv.conf -> /run/...`).
fn judge_symlink(path: &[u8], target: &[u8]) -> Result<(), String> {
    if target.contains(&0) {
        return Err("is a symlink whose target has a NUL byte".into());
    }
    if !target.starts_with(b"/") && climbs(path, target) {
        return Err(format!(
            "is a symlink to {}, which climbs above the tree",
            String::from_utf8_lossy(target)
        ));
    }
    Ok(())
}

/// The non-empty, non-`.` components of a name.
fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Whether `target`, read from the directory holding the link at `path`,
/// goes above the root at some point.
fn climbs(path: &[u8], target: &[u8]) -> bool {
    let mut depth = components(path).count().saturating_sub(1);
    for c in components(target) {
        if c == b".." {
            let Some(up) = depth.checked_sub(1) else {
                return true;
            };
            depth = up;
        } else {
            depth += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_below_the_tree() {
        let n = |s: &str| normalize(s.as_bytes()).map(|p| String::from_utf8(p).unwrap());
        assert_eq!(n("./etc/hostname"), Ok("etc/hostname".into()));
        assert_eq!(n("etc//x/./y/"), Ok("etc/x/y".into()));
        for root in [".", "./", "", "././"] {
            assert_eq!(n(root), Ok(String::new()), "{root:?}");
        }
        // A name merely starting with dots is a name.
        assert_eq!(n("..x/..."), Ok("..x/...".into()));
        assert_eq!(n("/etc/passwd"), Err("has an absolute path".into()));
        for bad in ["../x", "a/../../x", "a/..", "./..", "a/../b"] {
            assert_eq!(n(bad), Err("has a \"..\" component".into()), "{bad}");
        }
        assert_eq!(n("a\0b"), Err("has a NUL byte in its name".into()));
    }

    #[test]
    fn symlinks_climbing_out_are_refused_absolute_ones_are_not() {
        let ok = [
            ("etc/resolv.conf", "/run/systemd/resolve/stub-resolv.conf"),
            ("bin", "usr/bin"),
            ("usr/lib/x/y", "../../../etc/z"),
            ("a/b", "../c"),
            ("a/b", "c/../../d"),
        ];
        for (path, target) in ok {
            assert_eq!(
                judge_symlink(path.as_bytes(), target.as_bytes()),
                Ok(()),
                "{path} -> {target}"
            );
        }
        let bad = [
            ("x", ".."),
            ("a/b", "../../x"),
            ("a/b", "./../../x"),
            ("usr/lib/x/y", "../../../../etc"),
            ("a/b", "c/../../../d"),
        ];
        for (path, target) in bad {
            assert_eq!(
                judge_symlink(path.as_bytes(), target.as_bytes()),
                Err(format!(
                    "is a symlink to {target}, which climbs above the tree"
                ))
            );
        }
    }

    #[test]
    fn pax_times_keep_their_fraction() {
        let t = |s: &str| parse_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1796026789.056343408"), Some((1796026789, 56343408)));
        assert_eq!(t("1700000000"), Some((1700000000, 0)));
        assert_eq!(t("1.5"), Some((1, 500_000_000)));
        assert_eq!(t("1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        for bad in ["", ".5", "x", "1.x", "1e9", "--1"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn pax_records_are_framed_by_their_length() {
        let data = b"30 mtime=1796026789.056343408\n54 SCHILY.acl.access=user::rwx\ngroup::r-x\nother::r-x\n\n16 linkpath=a\nb\n";
        let got = records(data).unwrap();
        assert_eq!(
            got,
            [
                (&b"mtime"[..], &b"1796026789.056343408"[..]),
                (b"SCHILY.acl.access", b"user::rwx\ngroup::r-x\nother::r-x\n"),
                (b"linkpath", b"a\nb"),
            ]
        );
        assert_eq!(records(b""), Ok(vec![]));
        for bad in [
            &b"x path=a\n"[..],
            b"99 path=a\n",
            b"9 path=ab\n",
            b"10 pathab\n",
            b"4 a=\n",
            b"path=a\n",
            b"3 \n",
        ] {
            assert!(records(bad).is_err(), "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn gnu_tar_xattr_names_are_decoded() {
        assert_eq!(decode_xattr_name(b"user.a%3Db%25c"), b"user.a=b%c");
        assert_eq!(decode_xattr_name(b"user.%41"), b"user.%41");
        assert_eq!(decode_xattr_name(b"user.x%"), b"user.x%");
    }

    #[test]
    fn split_keeps_the_final_component_aside() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }
}
