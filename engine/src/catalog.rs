//! Finding stages and runners by name.
//!
//! A stage is an executable plus its options schema. strata looks in every
//! `--libdir DIR` first (`DIR/stages/NAME` + `DIR/schemas/stages/NAME.json`),
//! then among the built-in stages: the schema is compiled into strata, the
//! program is `strata-stage-NAME` beside the `strata` binary (or
//! `../lib/strata/stages/NAME` from it, as installed). Runners are
//! `DIR/runners/NAME`, then the built-in ones compiled into strata.
//!
//! A libdir stage or runner named like a built-in one shadows it only with
//! `--allow-shadow`: otherwise the catalog refuses it. What a stage's id is
//! made of names its program ([`StageDef::program`], `id.rs`): a libdir
//! program (and a libdir runner) by the blake3 digest of its file, so that
//! a store never serves a tree another program made under the same id; a
//! built-in one by [`STAGE_SET`], so that upgrading strata keeps the cache
//! unless the built-in stages changed.

use crate::schema;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Built-in stage schemas, by stage name.
const BUILTIN_SCHEMAS: &[(&str, &str)] = &[
    ("mkdir", include_str!("../../schemas/stages/mkdir.json")),
    ("write", include_str!("../../schemas/stages/write.json")),
    ("copy", include_str!("../../schemas/stages/copy.json")),
    ("tar", include_str!("../../schemas/stages/tar.json")),
    ("untar", include_str!("../../schemas/stages/untar.json")),
    (
        "bootstrap",
        include_str!("../../schemas/stages/bootstrap.json"),
    ),
    (
        "customize",
        include_str!("../../schemas/stages/customize.json"),
    ),
    ("build", include_str!("../../schemas/stages/build.json")),
    ("lintian", include_str!("../../schemas/stages/lintian.json")),
    (
        "tarball-to-incus",
        include_str!("../../schemas/stages/tarball-to-incus.json"),
    ),
    (
        "partition",
        include_str!("../../schemas/stages/partition.json"),
    ),
    ("mkfs", include_str!("../../schemas/stages/mkfs.json")),
    (
        "bootloader",
        include_str!("../../schemas/stages/bootloader.json"),
    ),
    ("convert", include_str!("../../schemas/stages/convert.json")),
];

/// The version of the built-in stages and runners as a set: bump it when
/// one of them changes what it makes (then every id changes, and stores
/// rebuild).
pub const STAGE_SET: &str = "strata-stages 1";

/// Built-in runners, by name.
const BUILTIN_RUNNERS: &[(&str, &str)] = &[
    ("linux", include_str!("../../runners/linux")),
    ("debian", include_str!("../../runners/debian")),
];

/// What a stage needs from its sandbox, from the schema's `x-strata` key:
///
/// | key       | values                                                                 |
/// |-----------|------------------------------------------------------------------------|
/// | `network` | `true`, or `{"when-option": "/pointer"}`: only when that option is non-empty |
/// | `root`    | `"build"` (default: the build root, tree at /run/strata/tree), `"tree"` (the tree itself is `/`, read-write: chroot semantics) or `"build-copy"` (a throw-away writable copy of the build pipeline's tree is `/`; tree at /run/strata/tree) |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// When the stage may open network connections.
    pub network: Network,
    /// What the sandbox's `/` is.
    pub root: StageRoot,
}

/// When a stage gets the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// Never (the default).
    #[default]
    Never,
    /// Always.
    Always,
    /// When the option at this JSON pointer is present and non-empty.
    WhenOption(String),
}

/// What a stage's sandbox root is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StageRoot {
    /// The build root (build pipeline's tree or the host's /usr).
    #[default]
    Build,
    /// The tree being built, read-write at `/`.
    Tree,
    /// A throw-away, writable copy of the build pipeline's tree at `/` (the
    /// tree at /run/strata/tree): for stages that install into their
    /// environment, such as package builds, without changing the stored one.
    BuildCopy,
}

impl Needs {
    /// Whether a stage with these `options` gets the network.
    pub fn network(&self, options: &Value) -> bool {
        match &self.network {
            Network::Never => false,
            Network::Always => true,
            Network::WhenOption(pointer) => match options.pointer(pointer) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(o)) => !o.is_empty(),
                Some(Value::String(s)) => !s.is_empty(),
                Some(_) => true,
            },
        }
    }

    fn parse(x: Option<&Value>) -> Result<Needs, String> {
        let Some(x) = x else {
            return Ok(Needs::default());
        };
        let network = match x.get("network") {
            None | Some(Value::Bool(false)) => Network::Never,
            Some(Value::Bool(true)) => Network::Always,
            Some(v) => match v.get("when-option").and_then(Value::as_str) {
                Some(p) => Network::WhenOption(p.to_owned()),
                None => {
                    return Err(format!(
                        "x-strata.network must be a boolean or {{\"when-option\": POINTER}}, not {v}"
                    ));
                }
            },
        };
        let root = match x.get("root").and_then(Value::as_str) {
            None | Some("build") => StageRoot::Build,
            Some("tree") => StageRoot::Tree,
            Some("build-copy") => StageRoot::BuildCopy,
            Some(other) => {
                return Err(format!(
                    "x-strata.root must be \"build\", \"tree\" or \"build-copy\", not {other:?}"
                ));
            }
        };
        Ok(Needs { network, root })
    }
}

/// A stage found by name.
#[derive(Debug)]
pub struct StageDef {
    /// The stage type.
    pub name: String,
    /// The program.
    pub exe: PathBuf,
    /// Its options schema, compiled.
    pub validator: jsonschema::Validator,
    /// Its needs.
    pub needs: Needs,
    /// What feeds the ids of the stages that use it: [`STAGE_SET`] for a
    /// built-in stage, `blake3:HEX` of the file for a libdir one.
    pub program: String,
}

/// A runner: a script run first inside the build root, which then execs the stage.
#[derive(Debug, Clone)]
pub enum Runner {
    /// A runner file from a libdir.
    File(PathBuf),
    /// A built-in runner's text.
    Builtin(&'static str),
}

/// Errors finding stages and runners.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No stage of that name anywhere.
    #[error("unknown stage type `{name}`")]
    UnknownStage {
        /// The name asked for.
        name: String,
        /// Closest known name.
        suggestion: Option<String>,
    },
    /// The program exists but its schema does not, or vice versa.
    #[error("stage `{name}`: {detail}")]
    Broken {
        /// The stage.
        name: String,
        /// What is missing or wrong.
        detail: String,
    },
    /// A libdir stage or runner has a built-in one's name, without --allow-shadow.
    #[error(
        "{path} has the name of the built-in {what} `{name}` and would shadow it\n    hint: rename it, or pass --allow-shadow (its program's digest then feeds the ids of the stages that use it)"
    )]
    Shadow {
        /// stage or runner.
        what: &'static str,
        /// The name.
        name: String,
        /// The libdir file.
        path: PathBuf,
    },
    /// No runner of that name.
    #[error("unknown runner `{name}` (known: {known})")]
    UnknownRunner {
        /// The name asked for.
        name: String,
        /// The runners that exist.
        known: String,
    },
}

/// Where stages and runners are looked up.
#[derive(Debug)]
pub struct Catalog {
    libdirs: Vec<PathBuf>,
    builtin_dirs: Vec<PathBuf>,
    allow_shadow: bool,
    cache: Mutex<HashMap<String, Arc<StageDef>>>,
}

impl Catalog {
    /// A catalog over `libdirs` (searched in order) and the built-in stages.
    pub fn new(libdirs: Vec<PathBuf>) -> Catalog {
        let mut builtin_dirs = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            builtin_dirs.push(dir.join("../lib/strata/stages"));
            builtin_dirs.push(dir);
        }
        Catalog {
            libdirs,
            builtin_dirs,
            allow_shadow: false,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Lets libdir stages and runners shadow built-in ones (`--allow-shadow`).
    pub fn allowing_shadow(mut self, allow: bool) -> Catalog {
        self.allow_shadow = allow;
        self
    }

    /// Also looks for built-in stage programs in `dir` (first): for
    /// programs that link the library but do not live beside `strata`.
    pub fn with_builtin_dir(mut self, dir: PathBuf) -> Catalog {
        self.builtin_dirs.insert(0, dir);
        self
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Result<Arc<StageDef>, CatalogError> {
        if let Some(def) = self.cache.lock().expect("catalog lock").get(name) {
            return Ok(def.clone());
        }
        let def = Arc::new(self.find_stage(name)?);
        self.cache
            .lock()
            .expect("catalog lock")
            .insert(name.to_owned(), def.clone());
        Ok(def)
    }

    fn find_stage(&self, name: &str) -> Result<StageDef, CatalogError> {
        let broken = |detail: String| CatalogError::Broken {
            name: name.to_owned(),
            detail,
        };
        for dir in &self.libdirs {
            let exe = dir.join("stages").join(name);
            if !exe.exists() {
                continue;
            }
            if !self.allow_shadow && BUILTIN_SCHEMAS.iter().any(|(n, _)| *n == name) {
                return Err(CatalogError::Shadow {
                    what: "stage",
                    name: name.to_owned(),
                    path: exe,
                });
            }
            let schema_path = dir.join("schemas/stages").join(format!("{name}.json"));
            let text = fs_err::read_to_string(&schema_path)
                .map_err(|e| broken(format!("{e} (every stage needs an options schema)")))?;
            let schema: Value = serde_json::from_str(&text)
                .map_err(|e| broken(format!("{}: {e}", schema_path.display())))?;
            let program = file_digest(&exe).map_err(broken)?;
            return compile(name, exe, &schema, program).map_err(broken);
        }
        if let Some((_, text)) = BUILTIN_SCHEMAS.iter().find(|(n, _)| *n == name) {
            let schema: Value = serde_json::from_str(text).expect("built-in schemas are JSON");
            let exe = self
                .builtin_dirs
                .iter()
                .flat_map(|d| [d.join(format!("strata-stage-{name}")), d.join(name)])
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    broken(format!(
                        "the program strata-stage-{name} is not installed beside strata \
                         (build the workspace: cargo build --workspace)"
                    ))
                })?;
            return compile(name, exe, &schema, STAGE_SET.to_owned()).map_err(broken);
        }
        Err(CatalogError::UnknownStage {
            name: name.to_owned(),
            suggestion: closest(name, &self.stage_names()),
        })
    }

    /// Every stage name this catalog knows.
    pub fn stage_names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN_SCHEMAS.iter().map(|(n, _)| n.to_string()).collect();
        for dir in &self.libdirs {
            if let Ok(entries) = std::fs::read_dir(dir.join("stages")) {
                names.extend(
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// The runner named `name`.
    pub fn runner(&self, name: &str) -> Result<Runner, CatalogError> {
        for dir in &self.libdirs {
            let path = dir.join("runners").join(name);
            if path.is_file() {
                if !self.allow_shadow && BUILTIN_RUNNERS.iter().any(|(n, _)| *n == name) {
                    return Err(CatalogError::Shadow {
                        what: "runner",
                        name: name.to_owned(),
                        path,
                    });
                }
                return Ok(Runner::File(path));
            }
        }
        BUILTIN_RUNNERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| Runner::Builtin(text))
            .ok_or_else(|| CatalogError::UnknownRunner {
                name: name.to_owned(),
                known: BUILTIN_RUNNERS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn compile(name: &str, exe: PathBuf, schema: &Value, program: String) -> Result<StageDef, String> {
    let needs = Needs::parse(schema.get("x-strata"))?;
    let validator = schema::compile(schema).map_err(|e| format!("bad options schema: {e}"))?;
    Ok(StageDef {
        name: name.to_owned(),
        exe,
        validator,
        needs,
        program,
    })
}

/// `blake3:HEX` of the file at `path`.
pub fn file_digest(path: &Path) -> Result<String, String> {
    let mut hasher = blake3::Hasher::new();
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    hasher
        .update_reader(file)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}

impl Runner {
    /// What feeds the ids of the stages it starts: [`STAGE_SET`] for a
    /// built-in runner, the digest of a libdir one.
    pub fn program(&self) -> Result<String, String> {
        match self {
            Runner::Builtin(_) => Ok(STAGE_SET.to_owned()),
            Runner::File(path) => file_digest(path),
        }
    }
}

/// The known name closest to `name`, if it is close enough to be a likely typo.
pub fn closest(name: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_compile() {
        for (name, text) in BUILTIN_SCHEMAS {
            let schema: Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            crate::schema::compile(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
            Needs::parse(schema.get("x-strata")).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn needs_from_x_strata() {
        let n = Needs::parse(Some(
            &serde_json::json!({"network": {"when-option": "/packages"}, "root": "tree"}),
        ))
        .unwrap();
        assert_eq!(n.root, StageRoot::Tree);
        assert!(!n.network(&serde_json::json!({"packages": []})));
        assert!(n.network(&serde_json::json!({"packages": ["hello"]})));
        assert!(!n.network(&serde_json::json!({})));
        assert!(Needs::parse(Some(&serde_json::json!({"network": "yes"}))).is_err());
        assert_eq!(Needs::parse(None).unwrap(), Needs::default());
    }

    #[test]
    fn suggests_near_names_only() {
        let known: Vec<String> = ["mkdir", "write", "copy", "tar"].map(String::from).to_vec();
        assert_eq!(closest("mkdri", &known).as_deref(), Some("mkdir"));
        assert_eq!(closest("wirte", &known).as_deref(), Some("write"));
        assert_eq!(closest("bootstrap", &known), None);
    }
}
