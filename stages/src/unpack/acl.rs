//! POSIX ACLs that an archive gives only as text (`SCHILY.acl.access`,
//! written by `tar --acls` without `--xattrs`), turned into the
//! `system.posix_acl_*` value the kernel takes:
//!
//! ```text
//!   "user::rw-\nuser:1000:r--\ngroup::r--\nmask::r--\nother::r--\n"
//!   → version 2 (u32), then per entry: tag (u16), perm (u16), id (u32), little-endian,
//!     sorted by tag then id (the kernel refuses another order)
//! ```
//!
//! Only numeric qualifiers are taken: a name (`user:alice:r--`) is the
//! packing host's, and neither the build root nor the tree says which id it
//! was there. GNU tar writes the raw xattr beside the text, with the ids,
//! and that one is used whenever it is there.

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// The xattr that the PAX key `SCHILY.acl.access` / `.default` stands for.
pub(super) fn xattr_name(key: &str) -> &'static str {
    if key.ends_with(".default") {
        "system.posix_acl_default"
    } else {
        "system.posix_acl_access"
    }
}

/// The xattr value of the ACL `text`.
pub(super) fn from_text(text: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "it is not UTF-8 text".to_owned())?;
    let mut entries: Vec<(u16, u16, u32)> = Vec::new();
    for entry in text.split([',', '\n']) {
        let entry = entry.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        entries.push(parse_entry(entry)?);
    }
    if entries.is_empty() {
        return Err("it has no entries".into());
    }
    entries.sort_unstable_by_key(|&(tag, _, id)| (tag, id));
    let mut value = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        value.extend(tag.to_le_bytes());
        value.extend(perm.to_le_bytes());
        value.extend(id.to_le_bytes());
    }
    Ok(value)
}

fn parse_entry(entry: &str) -> Result<(u16, u16, u32), String> {
    let fields: Vec<&str> = entry.split(':').map(str::trim).collect();
    let (tag, qualifier, perms) = match fields[..] {
        [tag, qualifier, perms] => (tag, qualifier, perms),
        // `mask:rwx` and `other:r-x` may leave the empty qualifier out.
        [tag @ ("m" | "mask" | "o" | "other"), perms] => (tag, "", perms),
        _ => return Err(format!("entry {entry:?} is not TAG:QUALIFIER:PERMS")),
    };
    let id = match qualifier {
        "" => UNDEFINED_ID,
        q => q
            .parse::<u32>()
            .map_err(|_| format!("entry {entry:?} names {q}, and untar takes numeric ids only"))?,
    };
    let tag = match (tag, id == UNDEFINED_ID) {
        ("u" | "user", true) => USER_OBJ,
        ("u" | "user", false) => USER,
        ("g" | "group", true) => GROUP_OBJ,
        ("g" | "group", false) => GROUP,
        ("m" | "mask", true) => MASK,
        ("o" | "other", true) => OTHER,
        _ => return Err(format!("entry {entry:?} has an unknown tag or qualifier")),
    };
    let mut perm = 0u16;
    for c in perms.chars() {
        let bit = match c {
            'r' => 4,
            'w' => 2,
            'x' => 1,
            '-' => continue,
            _ => return Err(format!("entry {entry:?} has a permission {c:?}")),
        };
        if perm & bit != 0 {
            return Err(format!("entry {entry:?} repeats {c:?}"));
        }
        perm |= bit;
    }
    Ok((tag, perm, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        v
    }

    #[test]
    fn text_becomes_the_kernels_value_in_its_order() {
        let u = UNDEFINED_ID;
        let want = value(&[
            (USER_OBJ, 6, u),
            (USER, 4, 1000),
            (GROUP_OBJ, 4, u),
            (MASK, 4, u),
            (OTHER, 4, u),
        ]);
        let long = "user::rw-\nuser:1000:r--\t#effective:r--\ngroup::r--\nmask::r--\nother::r--\n";
        assert_eq!(from_text(long.as_bytes()), Ok(want.clone()));
        let short = "o::r,m::r,g::r,u:1000:r,u::rw";
        assert_eq!(from_text(short.as_bytes()), Ok(want));
        assert_eq!(
            from_text(b"u::rwx,g::r-x,o:r-x"),
            Ok(value(&[(USER_OBJ, 7, u), (GROUP_OBJ, 5, u), (OTHER, 5, u)]))
        );
    }

    #[test]
    fn names_and_nonsense_are_refused() {
        assert_eq!(
            from_text(b"user::rw-\nuser:alice:r--\n"),
            Err("entry \"user:alice:r--\" names alice, and untar takes numeric ids only".into())
        );
        assert!(from_text(b"").is_err());
        assert!(from_text(b"user::rwz").is_err());
        assert!(from_text(b"user::rr").is_err());
        assert!(from_text(b"mask:5:r").is_err());
        assert!(from_text(b"dog::r").is_err());
    }
}
