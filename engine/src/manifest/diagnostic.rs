//! Problems found in a manifest, each with where it is.

use serde_json::{Value, json};
use std::fmt;

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// JSON pointer to the offending value (`""` is the whole document).
    pub pointer: String,
    /// The pipeline it is in, by name (or `#index` when the name is unusable).
    pub pipeline: Option<String>,
    /// The stage it is in: index and type.
    pub stage: Option<(usize, String)>,
    /// What is wrong and what was expected.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem at `pointer`; pipeline and stage are filled in from `doc`.
    pub fn at(doc: &Value, pointer: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        let pointer = pointer.into();
        let (pipeline, stage) = context_of(doc, &pointer);
        Diagnostic {
            pointer,
            pipeline,
            stage,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// The JSON form used in `--json` results.
    pub fn to_json(&self) -> Value {
        json!({
            "pointer": self.pointer,
            "pipeline": self.pipeline,
            "stage": self.stage.as_ref().map(|(i, t)| json!({"index": i, "type": t})),
            "message": self.message,
            "hint": self.hint,
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)?;
        match (&self.pipeline, &self.stage) {
            (Some(p), Some((i, t))) => write!(f, "\n    in pipeline `{p}`, stage {i} ({t})")?,
            (Some(p), None) => write!(f, "\n    in pipeline `{p}`")?,
            _ => {}
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// A manifest that cannot be built, with every problem found.
#[derive(Debug, Clone)]
pub struct ManifestError {
    /// Where the manifest came from (a path or `<stdin>`).
    pub origin: String,
    /// The problems, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        write!(
            f,
            "invalid manifest {}: {n} problem{}",
            self.origin,
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

/// The pipeline and stage a pointer lies in, read off the document.
fn context_of(doc: &Value, pointer: &str) -> (Option<String>, Option<(usize, String)>) {
    let mut tokens = pointer.split('/').skip(1);
    if tokens.next() != Some("pipelines") {
        return (None, None);
    }
    let Some(pi) = tokens.next().and_then(|t| t.parse::<usize>().ok()) else {
        return (None, None);
    };
    let Some(pipeline) = doc.get("pipelines").and_then(|p| p.get(pi)) else {
        return (None, None);
    };
    let name = pipeline
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("#{pi}"), str::to_owned);
    if tokens.next() != Some("stages") {
        return (Some(name), None);
    }
    let stage = tokens
        .next()
        .and_then(|t| t.parse::<usize>().ok())
        .and_then(|si| {
            let ty = pipeline.get("stages")?.get(si)?.get("type");
            Some((si, ty.and_then(Value::as_str).unwrap_or("?").to_owned()))
        });
    (Some(name), stage)
}

/// Escapes one JSON pointer token (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
