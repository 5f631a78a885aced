//! The stage's options: debusine's SystemBootstrap task_data.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub bootstrap_options: BootstrapOptions,
    pub bootstrap_repositories: Vec<Repository>,
    #[serde(default)]
    pub customization_script: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapOptions {
    pub architecture: String,
    #[serde(default = "minbase")]
    pub variant: String,
    #[serde(default)]
    pub extra_packages: Vec<String>,
    #[serde(default = "yes")]
    pub use_signed_by: bool,
}

pub fn minbase() -> String {
    "minbase".into()
}

pub fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    #[serde(default = "deb")]
    pub types: Vec<String>,
    #[serde(default)]
    pub mirror: Option<String>,
    pub suite: String,
    #[serde(default)]
    pub components: Option<Vec<String>>,
    #[serde(default)]
    pub check_signature_with: Check,
    #[serde(default)]
    pub keyring_package: Option<String>,
    #[serde(default)]
    pub keyring: Option<KeyringOption>,
}

pub fn deb() -> Vec<String> {
    vec!["deb".into()]
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    #[default]
    System,
    External,
    #[serde(rename = "no-check")]
    Unchecked,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringOption {
    pub url: String,
    #[serde(default)]
    pub sha256sum: Option<String>,
    #[serde(default)]
    pub install: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_take_debusine_names_and_defaults() {
        let o: Options = serde_json::from_value(json!({
            "bootstrap_options": {"architecture": "amd64"},
            "bootstrap_repositories": [{"suite": "bookworm", "check_signature_with": "no-check",
                "keyring": {"url": "file:///usr/share/keyrings/k.gpg"}}]
        }))
        .unwrap();
        assert_eq!(o.bootstrap_options.variant, "minbase");
        assert!(o.bootstrap_options.use_signed_by);
        assert!(o.bootstrap_options.extra_packages.is_empty());
        let r = &o.bootstrap_repositories[0];
        assert_eq!(r.types, ["deb"]);
        assert_eq!(r.check_signature_with, Check::Unchecked);
        assert!(!r.keyring.as_ref().unwrap().install);
    }
}
