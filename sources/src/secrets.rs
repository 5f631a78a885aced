//! Secrets: values a build needs (a mirror's password, a token) that must
//! never be printed, stored, hashed into an id or put on a command line.
//!
//! ```text
//!   --secrets FILE  {"mirror-auth": "user:password", "token": {"file": "/root/token"}}
//!        │
//!        ▼
//!   Secrets ── by name ──▶ curl items ("secrets": {"name": …})      curl's stdin
//!                      └─▶ extra_repositories entries               the stage's /run/strata/secrets/NAME
//! ```
//!
//! A manifest names a secret, never holds it, so ids (which hash the
//! manifest) do not change with a password. [`Secret`] prints as
//! `<redacted>` whichever way it is formatted, so a stray `{:?}` leaks
//! nothing. A URL written with `user:password@` still works: the
//! credentials are split off at parse time ([`split_userinfo`]) and the
//! URL kept without them is the only one ever printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::Value;

/// One secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`, refusing what cannot be passed on safely: control
    /// characters (a newline would end a netrc or curl config line).
    pub fn new(value: String) -> Result<Self, String> {
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err("is empty or holds a newline or control character".into());
        }
        Ok(Secret(value))
    }

    /// The value, for the one place that hands it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The secrets of one build, by name.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, Secret>,
}

impl Secrets {
    /// Reads a `--secrets` file: a JSON object mapping names to a string,
    /// or to `{"file": PATH}` whose content (one trailing newline dropped)
    /// is the value. Errors name the file and the secret, never a value.
    pub fn load(path: &Path) -> Result<Self, String> {
        let at = |what: String| format!("{}: {what}", path.display());
        let text = std::fs::read(path).map_err(|e| at(e.to_string()))?;
        let doc: Value = serde_json::from_slice(&text).map_err(|e| {
            at(format!(
                "not JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let Value::Object(map) = doc else {
            return Err(at("expected an object of secret names".into()));
        };
        let mut values = BTreeMap::new();
        for (name, v) in map {
            if !is_name(&name) {
                return Err(at(format!(
                    "secret name {name:?}: use letters, digits, `.`, `_`, `-`"
                )));
            }
            let value = match &v {
                Value::String(s) => s.clone(),
                Value::Object(o) if o.len() == 1 && o.get("file").is_some_and(Value::is_string) => {
                    let file = o["file"].as_str().expect("checked");
                    let mut s = std::fs::read_to_string(file)
                        .map_err(|e| at(format!("secret {name:?}: {file}: {e}")))?;
                    if s.ends_with('\n') {
                        s.pop();
                    }
                    s
                }
                _ => {
                    return Err(at(format!(
                        "secret {name:?}: expected a string or {{\"file\": PATH}}"
                    )));
                }
            };
            let secret = Secret::new(value).map_err(|why| at(format!("secret {name:?} {why}")))?;
            values.insert(name, secret);
        }
        Ok(Secrets { values })
    }

    /// Secrets given directly (the library API, tests).
    pub fn from_pairs<I: IntoIterator<Item = (String, Secret)>>(pairs: I) -> Self {
        Secrets {
            values: pairs.into_iter().collect(),
        }
    }

    /// The secret called `name`.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by `<redacted>`: the last
    /// guard on what a tool run with a secret prints.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.values.values() {
            // Each side of a `user:password` is a secret too.
            let whole = secret.expose();
            let parts = whole.split_once(':').map(|(_, p)| p);
            for v in std::iter::once(whole).chain(parts) {
                if v.len() >= 4 && out.contains(v) {
                    out = out.replace(v, "<redacted>");
                }
            }
        }
        out
    }
}

/// A secret name: what a manifest writes as `"secrets": {"name": …}`.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `url` without its `user:password@`, and that userinfo: the URL printed
/// and stored is the first.
pub fn split_userinfo(url: &str) -> (String, Option<Secret>) {
    let (bare, user) = strata_protocol::split_userinfo(url);
    (bare, user.and_then(|u| Secret::new(u).ok()))
}

/// `url` with any `user:password@` shown as `<redacted>@`.
pub fn redact_url(url: &str) -> String {
    match split_userinfo(url) {
        (bare, Some(_)) => {
            let (scheme, rest) = bare.split_once("://").expect("split_userinfo found ://");
            format!("{scheme}://<redacted>@{rest}")
        }
        (bare, None) => bare,
    }
}

/// `value` with [`redact_url`] applied to every string in it: a stage's
/// options as strata prints or keeps them.
pub fn redact_urls(value: &Value) -> Value {
    match value {
        Value::String(s) if s.contains('@') => Value::String(redact_url(s)),
        Value::Array(items) => Value::Array(items.iter().map(redact_urls).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_urls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter22".into()).unwrap();
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "<redacted> <redacted> Some(<redacted>)"
        );
        assert!(Secret::new("a\nb".into()).is_err());
    }

    #[test]
    fn userinfo_is_split_off_urls() {
        let (bare, user) = split_userinfo("https://bob:pa@ss@127.0.0.1:8/debian?x=@");
        assert_eq!(bare, "https://127.0.0.1:8/debian?x=@");
        assert_eq!(user.unwrap().expose(), "bob:pa@ss");
        assert_eq!(split_userinfo("http://127.0.0.1/a@b").1, None);
        assert_eq!(
            redact_url("http://u:p@127.0.0.1/x"),
            "http://<redacted>@127.0.0.1/x"
        );
        assert_eq!(redact_url("file:///x"), "file:///x");
        assert_eq!(
            redact_urls(&serde_json::json!({"r": [{"url": "https://u:p@127.0.0.1/"}], "n": 1})),
            serde_json::json!({"r": [{"url": "https://<redacted>@127.0.0.1/"}], "n": 1})
        );
    }

    #[test]
    fn secrets_files_name_what_is_wrong_but_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok-en\n").unwrap();
        let f = dir.path().join("s.json");
        std::fs::write(
            &f,
            serde_json::json!({"auth": "bob:hunter22", "tok": {"file": token}}).to_string(),
        )
        .unwrap();
        let s = Secrets::load(&f).unwrap();
        assert_eq!(s.get("tok").unwrap().expose(), "tok-en");
        assert_eq!(
            s.redact("GET bob:hunter22 hunter22 x"),
            "GET <redacted> <redacted> x"
        );
        std::fs::write(&f, r#"{"bad": "line\nbreak-hunter22"}"#).unwrap();
        let err = Secrets::load(&f).unwrap_err();
        assert!(
            err.contains("secret \"bad\"") && !err.contains("hunter22"),
            "{err}"
        );
    }
}
