//! What can go wrong with a source item.
//!
//! Every message starts with the item (`source item sha256:… (curl): …`) and
//! carries its cause in the text itself: the engine reports these with
//! `to_string()`, so nothing is left to a `source()` chain, which is also why
//! the wrapped `io::Error`s are not marked `#[source]` (a `{:#}` print would
//! say them twice).

use std::fmt;
use std::io;

use crate::{Checksum, SourceType};

/// A source item could not be parsed or fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The item's key is not a `sha256:<hex>` checksum.
    #[error(
        "source item {checksum:?} ({ty}): invalid checksum: expected `sha256:` followed by 64 lowercase hex digits"
    )]
    InvalidChecksum {
        /// The source type listing the item.
        ty: SourceType,
        /// The key as written.
        checksum: String,
    },
    /// The item's value has the wrong shape or content.
    #[error("source item {checksum} ({ty}): {reason}")]
    InvalidItem {
        /// The source type listing the item.
        ty: SourceType,
        /// The item's checksum.
        checksum: Checksum,
        /// What is wrong, in words.
        reason: String,
    },
    /// The fetched data does not hash to the item's checksum.
    #[error("source item {checksum} ({ty}): checksum mismatch: expected {checksum}, got {actual}")]
    Mismatch {
        /// The source type listing the item.
        ty: SourceType,
        /// The expected checksum.
        checksum: Checksum,
        /// The checksum of what was fetched.
        actual: Checksum,
    },
    /// curl ran but could not download the URL.
    #[error("source item {checksum} (curl): could not download {url}: {message}")]
    Download {
        /// The item's checksum.
        checksum: Checksum,
        /// The URL given to curl.
        url: String,
        /// curl's own error line, or its exit status when it printed none.
        message: String,
    },
    /// A curl item names a secret that `--secrets` does not hold.
    #[error(
        "source item {checksum} (curl): it needs the secret {name:?}, which no --secrets file gave\n    hint: pass --secrets FILE holding {{\"{name}\": \"user:password\"}}"
    )]
    MissingSecret {
        /// The item's checksum.
        checksum: Checksum,
        /// The secret's name.
        name: String,
    },
    /// The `curl` program could not be started.
    #[error(
        "source item {checksum} (curl): could not run `curl`: {error}\n    hint: install curl on the host (e.g. `apt-get install curl`)"
    )]
    CurlSpawn {
        /// The item's checksum.
        checksum: Checksum,
        /// Why spawning failed.
        error: io::Error,
    },
    /// Reading or writing the store failed; the message names the path.
    #[error("source item {checksum} ({ty}): {error}")]
    Io {
        /// The source type listing the item.
        ty: SourceType,
        /// The item's checksum.
        checksum: Checksum,
        /// The I/O error (from `fs-err`, so it names the path).
        error: io::Error,
    },
}

/// A source type name that strata does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownSourceType(pub String);

impl fmt::Display for UnknownSourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown source type {:?}; known types: ", self.0)?;
        let names: Vec<&str> = SourceType::ALL.iter().map(|t| t.as_str()).collect();
        f.write_str(&names.join(", "))
    }
}
