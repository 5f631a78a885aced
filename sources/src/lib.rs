//! Source fetchers: get every item a manifest's `sources` lists into the
//! store, verified against its checksum, on the host before any stage runs.
//!
//! ```text
//! "sources": {
//!   "inline": {"items": {"sha256:<hex>": {"encoding": "base64", "data": "…"}}},
//!   "curl":   {"items": {"sha256:<hex>": {"url": "https://…", "size": BYTES,
//!                                         "secrets": {"name": "mirror-auth"}},
//!                        "sha256:<hex>": "file:///…"}}
//! }
//!        │ parse_item                      (manifest load: shape, checksum, URL scheme)
//!        ▼
//! (Checksum, Item) ── SourceStore::fetch ──▶ sources/<type>/sha256:<hex>
//! ```

mod checksum;
mod curl;
mod error;
mod item;
mod secrets;
mod store;

pub use checksum::{Checksum, InvalidChecksum, sha256_file, sha256_reader};
pub use curl::{DEFAULT_MAX_BYTES, Limits, file_url_path};
pub use error::{SourceError, UnknownSourceType};
pub use item::{Item, SourceType, parse_item};
pub use secrets::{Secret, Secrets, redact_url, redact_urls, split_userinfo};
pub use store::{Fetched, SourceStore};
