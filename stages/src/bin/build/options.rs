//! The stage's options: debusine's PackageBuild names, with its defaults.

use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default = "any_only")]
    pub build_components: Vec<Component>,
    pub host_architecture: String,
    /// Absent: the host architecture; `null`: whatever the environment is.
    #[serde(default, deserialize_with = "present")]
    pub build_architecture: Option<Option<String>>,
    #[serde(default)]
    pub build_profiles: Vec<String>,
    #[serde(default)]
    pub build_options: Option<String>,
    #[serde(default = "default_build_path")]
    pub build_path: String,
    #[serde(default)]
    pub binnmu: Option<Binnmu>,
    #[serde(default)]
    pub extra_repositories: Vec<Repository>,
}

/// `dpkg-buildpackage --build` parts, in the order it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Any,
    All,
    Source,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::All => "all",
            Self::Source => "source",
        }
    }
}

pub fn any_only() -> Vec<Component> {
    vec![Component::Any]
}

pub fn default_build_path() -> String {
    "/build/strata".into()
}

/// Tells a `null` apart from a missing key (serde's `default` covers that).
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binnmu {
    pub changelog: String,
    #[serde(default = "default_suffix")]
    pub suffix: String,
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    #[serde(default = "default_maintainer")]
    pub maintainer: String,
}

pub fn default_suffix() -> String {
    "+b1".into()
}

pub fn default_maintainer() -> String {
    "strata <strata@localhost>".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    Epoch(u64),
    Date(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub url: String,
    pub suite: String,
    #[serde(default)]
    pub components: Option<Vec<String>>,
    #[serde(default)]
    pub signing_key: Option<String>,
    /// The secret holding the repository's `user:password`.
    #[serde(default)]
    pub secrets: Option<SecretRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub fn options(v: Value) -> Result<Options, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn options_default_as_documented() {
        let o = options(json!({"host_architecture": "amd64"})).unwrap();
        assert_eq!(o.build_components, [Component::Any]);
        assert_eq!(o.build_architecture, None);
        assert_eq!(o.build_path, "/build/strata");
        assert!(o.build_profiles.is_empty() && o.extra_repositories.is_empty());
        assert!(o.build_options.is_none() && o.binnmu.is_none());

        let o = options(
            json!({"host_architecture": "amd64", "build_architecture": null,
            "binnmu": {"changelog": "x", "timestamp": 1_700_000_000}}),
        )
        .unwrap();
        assert_eq!(o.build_architecture, Some(None));
        let b = o.binnmu.unwrap();
        assert_eq!(b.suffix, "+b1");
        assert_eq!(b.maintainer, "strata <strata@localhost>");
        assert_eq!(b.timestamp, Some(Timestamp::Epoch(1_700_000_000)));

        assert!(options(json!({})).is_err());
        assert!(options(json!({"host_architecture": "amd64", "components": []})).is_err());
        assert!(
            options(json!({"host_architecture": "amd64", "build_components": ["both"]})).is_err()
        );
    }
}
