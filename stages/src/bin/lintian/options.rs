//! The stage's options: debusine's Lintian names, with its defaults.

use serde::Deserialize;

use crate::hints::Severity;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default)]
    pub include_tags: Vec<String>,
    #[serde(default)]
    pub exclude_tags: Vec<String>,
    #[serde(default)]
    pub fail_on_severity: FailOn,
    #[serde(default = "every_analysis")]
    pub analyses: Vec<Analysis>,
}

pub fn every_analysis() -> Vec<Analysis> {
    vec![Analysis::Source, Analysis::BinaryAll, Analysis::BinaryAny]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Analysis {
    Source,
    BinaryAll,
    BinaryAny,
}

/// `fail_on_severity`: the least severe tag that fails the stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    #[default]
    Error,
    Warning,
    Info,
    Pedantic,
    Experimental,
    Overridden,
    None,
}

impl FailOn {
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::Pedantic => "pedantic",
            Self::Experimental => "experimental",
            Self::Overridden => "overridden",
            Self::None => "none",
        }
    }

    /// Whether a tag of `severity` fails the stage. Overridden sits below
    /// experimental, as in debusine: choosing it fails on every tag that is
    /// not a classification, overridden or not. Classifications describe
    /// the package and never fail it.
    pub fn fails(self, severity: Severity) -> bool {
        let threshold = match self {
            Self::None => return false,
            Self::Error => Severity::Error,
            Self::Warning => Severity::Warning,
            Self::Info => Severity::Info,
            Self::Pedantic => Severity::Pedantic,
            Self::Experimental => Severity::Experimental,
            Self::Overridden => Severity::Overridden,
        };
        severity <= threshold
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub fn options(value: Value) -> Options {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn unknown_options_are_refused() {
        assert!(serde_json::from_value::<Options>(json!({"tags": []})).is_err());
        assert!(serde_json::from_value::<Options>(json!({"fail_on_severity": "fatal"})).is_err());
        assert!(serde_json::from_value::<Options>(json!({"analyses": ["binary"]})).is_err());
    }

    #[test]
    fn severities_fail_at_or_above_the_threshold() {
        use Severity::*;
        let table: [(FailOn, &[Severity]); 7] = [
            (FailOn::Error, &[Error]),
            (FailOn::Warning, &[Error, Warning]),
            (FailOn::Info, &[Error, Warning, Info]),
            (FailOn::Pedantic, &[Error, Warning, Info, Pedantic]),
            (
                FailOn::Experimental,
                &[Error, Warning, Info, Pedantic, Experimental],
            ),
            (
                FailOn::Overridden,
                &[Error, Warning, Info, Pedantic, Experimental, Overridden],
            ),
            (FailOn::None, &[]),
        ];
        for (fail_on, failing) in table {
            for severity in Severity::ALL {
                assert_eq!(
                    fail_on.fails(severity),
                    failing.contains(&severity),
                    "{} on {}",
                    fail_on.name(),
                    severity.name()
                );
            }
        }
    }
}
