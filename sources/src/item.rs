//! Source types and the items they list, parsed from a manifest's
//! `sources.<type>.items` entries.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::secrets::{Secret, is_name, redact_url, split_userinfo};
use crate::{Checksum, SourceError, UnknownSourceType};

/// The kinds of source strata can fetch. A closed set: adding one means a
/// new fetcher in this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceType {
    /// Data embedded in the manifest.
    Inline,
    /// A URL downloaded with the `curl` program.
    Curl,
}

impl SourceType {
    /// Every source type, in the order error messages list them.
    pub const ALL: [SourceType; 2] = [SourceType::Inline, SourceType::Curl];

    /// The name used in manifests and as the store directory.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Inline => "inline",
            SourceType::Curl => "curl",
        }
    }
}

impl FromStr for SourceType {
    type Err = UnknownSourceType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownSourceType(s.to_owned()))
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to get one source item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The item's bytes, already decoded from the manifest.
    Inline {
        /// The decoded data.
        data: Vec<u8>,
    },
    /// An `http`, `https` or `file` URL.
    Curl {
        /// The URL to download, without credentials: the one printed.
        url: String,
        /// Credentials the manifest wrote into the URL (`user:password@`).
        inline_user: Option<Secret>,
        /// The secret (by name, from `--secrets`) whose `user:password`
        /// the server wants.
        secret: Option<String>,
        /// The most bytes the item may have; else the store's default.
        size: Option<u64>,
    },
}

/// URL schemes a curl item may use: curl fetches http and https, strata
/// reads file:// itself.
pub(crate) const CURL_SCHEMES: [&str; 3] = ["http", "https", "file"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineSpec {
    encoding: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CurlSpec {
    url: String,
    size: Option<u64>,
    secrets: Option<SecretRef>,
}

/// `"secrets": {"name": "mirror-auth"}`, osbuild's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRef {
    name: String,
}

/// Parses the manifest entry `"<checksum>": <value>` of a `source_type`.
///
/// Everything that can be checked without fetching is checked here, so a
/// manifest with a bad item fails at load time, not halfway through a build.
pub fn parse_item(
    source_type: SourceType,
    checksum: &str,
    value: &Value,
) -> Result<(Checksum, Item), SourceError> {
    let checksum: Checksum = checksum.parse().map_err(|_| SourceError::InvalidChecksum {
        ty: source_type,
        checksum: checksum.to_owned(),
    })?;
    let item = match source_type {
        SourceType::Inline => parse_inline(value),
        SourceType::Curl => parse_curl(value),
    }
    .map_err(|reason| SourceError::InvalidItem {
        ty: source_type,
        checksum: checksum.clone(),
        reason,
    })?;
    Ok((checksum, item))
}

fn parse_inline(value: &Value) -> Result<Item, String> {
    let spec = InlineSpec::deserialize(value)
        .map_err(|e| format!(r#"expected {{"encoding": "base64", "data": "…"}}: {e}"#))?;
    if spec.encoding != "base64" {
        return Err(format!(
            r#"unsupported encoding {:?}; only "base64" is accepted"#,
            spec.encoding
        ));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(spec.data.as_bytes())
        .map_err(|e| format!("data is not valid base64: {e}"))?;
    Ok(Item::Inline { data })
}

fn parse_curl(value: &Value) -> Result<Item, String> {
    let spec = match value {
        Value::String(url) => CurlSpec {
            url: url.clone(),
            size: None,
            secrets: None,
        },
        Value::Object(_) => CurlSpec::deserialize(value).map_err(|e| {
            format!(r#"expected a URL string or {{"url": "…", "size": BYTES, "secrets": {{"name": "…"}}}}: {e}"#)
        })?,
        _ => return Err(r#"expected a URL string or {"url": "…"}"#.to_owned()),
    };
    let (url, inline_user) = split_userinfo(&spec.url);
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !scheme.is_some_and(|s| CURL_SCHEMES.contains(&s.as_str())) {
        return Err(format!(
            "unsupported URL {:?}: expected an http://, https:// or file:// URL",
            redact_url(&spec.url)
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "URL {url:?} holds whitespace or a control character (percent-encode it)"
        ));
    }
    let secret = match spec.secrets {
        Some(SecretRef { name }) if !is_name(&name) => {
            return Err(format!(
                "secret name {name:?}: use letters, digits, `.`, `_`, `-`"
            ));
        }
        Some(SecretRef { name }) => Some(name),
        None => None,
    };
    Ok(Item::Curl {
        url,
        inline_user,
        secret,
        size: spec.size,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SUM: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn source_type_names() {
        for t in SourceType::ALL {
            assert_eq!(t.as_str().parse::<SourceType>().unwrap(), t);
        }
        let err = "git".parse::<SourceType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown source type "git"; known types: inline, curl"#
        );
    }

    #[test]
    fn inline_item() {
        let (sum, item) = parse_item(
            SourceType::Inline,
            SUM,
            &json!({"encoding": "base64", "data": "YWJj"}),
        )
        .unwrap();
        assert_eq!(sum.as_str(), SUM);
        assert_eq!(
            item,
            Item::Inline {
                data: b"abc".to_vec()
            }
        );
    }

    #[test]
    fn curl_items() {
        for value in [
            json!("http://127.0.0.1/x"),
            json!({"url": "http://127.0.0.1/x"}),
        ] {
            let (_, item) = parse_item(SourceType::Curl, SUM, &value).unwrap();
            assert_eq!(
                item,
                Item::Curl {
                    url: "http://127.0.0.1/x".into(),
                    inline_user: None,
                    secret: None,
                    size: None,
                }
            );
        }
        for url in ["HTTPS://127.0.0.1/x", "file:///srv/x"] {
            parse_item(SourceType::Curl, SUM, &json!(url)).unwrap();
        }
        let (_, item) = parse_item(
            SourceType::Curl,
            SUM,
            &json!({"url": "https://bob:hunter22@127.0.0.1/x", "size": 7, "secrets": {"name": "m-1"}}),
        )
        .unwrap();
        let Item::Curl {
            url,
            inline_user,
            secret,
            size,
        } = &item
        else {
            panic!()
        };
        assert_eq!(url, "https://127.0.0.1/x");
        assert_eq!(inline_user.as_ref().unwrap().expose(), "bob:hunter22");
        assert_eq!((secret.as_deref(), *size), (Some("m-1"), Some(7)));
        assert!(!format!("{item:?}").contains("hunter22"));
    }

    /// Each bad item gives one message that names the item and says what is
    /// wrong.
    #[test]
    fn bad_items() {
        let cases: &[(SourceType, &str, Value, &str)] = &[
            (
                SourceType::Inline,
                "sha256:abc",
                json!({"encoding": "base64", "data": ""}),
                r#"source item "sha256:abc" (inline): invalid checksum: expected `sha256:` followed by 64 lowercase hex digits"#,
            ),
            (
                SourceType::Inline,
                SUM,
                json!({"encoding": "base64", "data": "not base64!"}),
                "(inline): data is not valid base64: ",
            ),
            (
                SourceType::Inline,
                SUM,
                json!({"encoding": "lzma+base64", "data": "YWJj"}),
                r#"(inline): unsupported encoding "lzma+base64"; only "base64" is accepted"#,
            ),
            (
                SourceType::Inline,
                SUM,
                json!({"data": "YWJj"}),
                "missing field `encoding`",
            ),
            (
                SourceType::Inline,
                SUM,
                json!({"encoding": "base64", "data": "YWJj", "extra": 1}),
                "unknown field `extra`",
            ),
            (
                SourceType::Inline,
                SUM,
                json!("YWJj"),
                "(inline): expected {",
            ),
            (
                SourceType::Curl,
                SUM,
                json!("ftp://127.0.0.1/x"),
                r#"(curl): unsupported URL "ftp://127.0.0.1/x": expected an http://, https:// or file:// URL"#,
            ),
            (
                SourceType::Curl,
                SUM,
                json!("--output=/etc/passwd"),
                "(curl): unsupported URL",
            ),
            (
                SourceType::Curl,
                SUM,
                json!("http://127.0.0.1/a\nb"),
                "holds whitespace or a control character",
            ),
            (
                SourceType::Curl,
                SUM,
                json!({"url": "http://127.0.0.1/x", "secrets": {"name": "a b"}}),
                "secret name \"a b\"",
            ),
            (
                SourceType::Curl,
                SUM,
                json!(42),
                "(curl): expected a URL string",
            ),
            (
                SourceType::Curl,
                SUM,
                json!({"url": "http://127.0.0.1/x", "insecure": true}),
                "unknown field `insecure`",
            ),
        ];
        for (ty, sum, value, want) in cases {
            let err = parse_item(*ty, sum, value).unwrap_err().to_string();
            assert!(err.starts_with("source item "), "{err}");
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
