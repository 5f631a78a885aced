//! `sha256:<hex>` content checksums, the names of source items.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

/// A validated `sha256:<64 lowercase hex digits>` checksum.
///
/// Only lowercase hex is accepted (not normalised) because the string is also
/// a file name in the store: two spellings of one digest would be two files.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Checksum(String);

/// A string that is not a `sha256:<hex>` checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid checksum {0:?}: expected `sha256:` followed by 64 lowercase hex digits")]
pub struct InvalidChecksum(pub String);

impl Checksum {
    /// The whole `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex digest without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The checksum of `data`.
    pub fn of_bytes(data: &[u8]) -> Self {
        Self::from_digest(&Sha256::digest(data))
    }

    fn from_digest(digest: &[u8]) -> Self {
        use fmt::Write as _;
        let mut s = String::with_capacity(PREFIX.len() + HEX_LEN);
        s.push_str(PREFIX);
        for b in digest {
            write!(s, "{b:02x}").expect("writing to a String cannot fail");
        }
        Self(s)
    }
}

impl FromStr for Checksum {
    type Err = InvalidChecksum;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.strip_prefix(PREFIX).is_some_and(|hex| {
            hex.len() == HEX_LEN
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidChecksum(s.to_owned()))
        }
    }
}

impl TryFrom<String> for Checksum {
    type Error = InvalidChecksum;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Checksum> for String {
    fn from(c: Checksum) -> Self {
        c.0
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sha256 checksum of the file at `path`, read in chunks so large
/// downloads need not fit in memory.
pub fn sha256_file(path: &Path) -> io::Result<Checksum> {
    sha256_reader(fs_err::File::open(path)?)
}

/// The sha256 checksum of what `reader` gives until its end, read in
/// chunks (a file the caller opened its own way, say).
pub fn sha256_reader(mut reader: impl Read) -> io::Result<Checksum> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(Checksum::from_digest(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays() {
        let c: Checksum = EMPTY.parse().unwrap();
        assert_eq!(c.as_str(), EMPTY);
        assert_eq!(c.to_string(), EMPTY);
        assert_eq!(c.hex(), &EMPTY[7..]);
    }

    #[test]
    fn rejects_malformed() {
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        for bad in [
            "",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            &EMPTY[..EMPTY.len() - 1],
            &format!("{EMPTY}0"),
            &upper,
            &EMPTY.replace('e', "g"),
            "sha256:../../../../etc/passwd",
        ] {
            let err = bad.parse::<Checksum>().unwrap_err();
            assert!(err.to_string().contains("64 lowercase hex digits"), "{err}");
        }
    }

    #[test]
    fn digests_bytes_and_files() {
        assert_eq!(Checksum::of_bytes(b"").as_str(), EMPTY);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs_err::write(&path, b"").unwrap();
        assert_eq!(sha256_file(&path).unwrap().as_str(), EMPTY);
        // Known vector: sha256("abc").
        fs_err::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap().hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn missing_file_error_names_path() {
        let err = sha256_file(Path::new("/nonexistent/strata-test")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/strata-test"),
            "{err}"
        );
    }

    #[test]
    fn serde_round_trip() {
        let c: Checksum = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{EMPTY}\""));
        assert!(serde_json::from_str::<Checksum>("\"sha256:00\"").is_err());
    }
}
