//! Environments: systems in the store that tasks can run in, and the
//! lookups (`debian/match:codename=bookworm:variant=buildd`) that find them.
//!
//! ```text
//! STORE/systems/<id>.json     one per system a task run bootstrapped
//!   {"id", "vendor", "codename", "variant", "architecture",
//!    "backends": ["unshare"(, "incus-lxc")], "packages": [names], "created",
//!    "pipeline": {"runner", "source-epoch", "stages": [...]}}
//! ```
//!
//! Why a record beside the object rather than the object's metadata alone:
//! the bootstrap stage's metadata says what the system is (os-release,
//! variant, architecture, packages), but a task reuses a system by putting
//! the pipeline that made it into its own manifest, so that the ids match and
//! the store short-circuits it; for that the record keeps the pipeline as it
//! was compiled. And the backends a system is imported into grow after the
//! object is committed (an incus import is later), while objects never
//! change. A record whose object is gone (collected) is ignored.

use crate::store::{Store, durable};
use fs_err as fs;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A lookup: `VENDOR/match:KEY=VALUE[:KEY=VALUE…]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lookup {
    /// debian, …
    pub vendor: String,
    /// bookworm, …
    pub codename: Option<String>,
    /// buildd, minbase, …
    pub variant: Option<String>,
    /// amd64, …
    pub architecture: Option<String>,
    /// unshare, …
    pub backend: Option<String>,
}

const LOOKUP_KEYS: [&str; 5] = ["codename", "variant", "architecture", "backend", "format"];

impl Lookup {
    /// Parses a lookup string; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Lookup, String> {
        let shape = "a lookup is VENDOR/match:KEY=VALUE[:KEY=VALUE…], such as debian/match:codename=bookworm:variant=buildd";
        let Some((vendor, rest)) = s.split_once("/match") else {
            return Err(format!("`{s}`: {shape}"));
        };
        if vendor.is_empty()
            || !vendor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!("`{s}`: `{vendor}` is not a vendor name; {shape}"));
        }
        let mut l = Lookup {
            vendor: vendor.to_owned(),
            ..Lookup::default()
        };
        if rest.is_empty() {
            return Ok(l);
        }
        let Some(rest) = rest.strip_prefix(':') else {
            return Err(format!("`{s}`: {shape}"));
        };
        for part in rest.split(':') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("`{s}`: `{part}` is not KEY=VALUE"));
            };
            if value.is_empty()
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
            {
                return Err(format!("`{s}`: `{value}` is not a value for {key}"));
            }
            let slot = match key {
                "codename" => &mut l.codename,
                "variant" => &mut l.variant,
                "architecture" => &mut l.architecture,
                "backend" => &mut l.backend,
                // Every stored system is a tree strata can pack; only
                // tarball systems exist.
                "format" if value == "tarball" => continue,
                "format" => {
                    return Err(format!(
                        "`{s}`: format `{value}`: strata's environments are tarballs"
                    ));
                }
                other => {
                    return Err(format!(
                        "`{s}`: unknown key `{other}`; keys are {}",
                        LOOKUP_KEYS.join(", ")
                    ));
                }
            };
            if slot.replace(value.to_owned()).is_some() {
                return Err(format!("`{s}`: `{key}` is given twice"));
            }
        }
        Ok(l)
    }

    /// The lookup as a string, keys in a fixed order.
    pub fn render(&self) -> String {
        let mut s = format!("{}/match", self.vendor);
        for (k, v) in [
            ("codename", &self.codename),
            ("variant", &self.variant),
            ("architecture", &self.architecture),
            ("backend", &self.backend),
        ] {
            if let Some(v) = v {
                s.push_str(&format!(":{k}={v}"));
            }
        }
        s
    }

    /// Whether `env` is what this lookup asks for. Every stored system can
    /// be imported into incus (strata does it when a stage runs there), but
    /// incus boots it: for incus-lxc the system needs systemd-sysv (its
    /// /sbin/init), whether or not a task ran on it there yet.
    pub fn matches(&self, env: &Environment) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let backend = |b: &String| match b.as_str() {
            "incus-lxc" => env.packages.iter().any(|p| p == "systemd-sysv"),
            _ => env.backends.contains(b),
        };
        self.vendor == env.vendor
            && eq(&self.codename, &env.codename)
            && eq(&self.variant, &env.variant)
            && eq(&self.architecture, &env.architecture)
            && self.backend.as_ref().is_none_or(backend)
    }
}

/// A system in the store that tasks can run in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// The object (the bootstrap stage's id).
    pub id: String,
    /// os-release ID.
    pub vendor: String,
    /// os-release VERSION_CODENAME, else the first suite.
    pub codename: String,
    /// mmdebstrap's variant.
    pub variant: String,
    /// dpkg architecture.
    pub architecture: String,
    /// Backends that ran it: unshare for every stored tree, incus-lxc once
    /// a task ran there.
    pub backends: Vec<String>,
    /// Installed package names.
    pub packages: Vec<String>,
    /// When it was recorded (seconds since the epoch).
    pub created: u64,
    /// The pipeline that made it, without its name.
    pub pipeline: Value,
}

/// Errors reading or writing environment records.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The stored metadata does not describe a system.
    #[error("object {id} has no bootstrap metadata ({missing} missing): not a system")]
    NotASystem {
        /// The object.
        id: String,
        /// The key that is missing.
        missing: &'static str,
    },
}

/// The environments in `store`, newest first.
pub fn list(store: &Store) -> Result<Vec<Environment>, EnvError> {
    let dir = store.layout().systems();
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        // A record we cannot read is skipped, not fatal: it only costs a
        // rebuild of that system.
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Ok(env) = serde_json::from_str::<Environment>(&text) else {
            continue;
        };
        let Some(id) = crate::id::Id::parse(&env.id) else {
            continue;
        };
        if store.has(&id) {
            out.push(env);
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Records the stored system `id`, made by `pipeline`, as an environment.
pub fn record(
    store: &Store,
    id: &crate::id::Id,
    pipeline: &Value,
) -> Result<Environment, EnvError> {
    let meta = store.meta(id);
    let get = |v: &Value| v.as_str().map(str::to_owned);
    let missing = |missing| EnvError::NotASystem {
        id: id.to_string(),
        missing,
    };
    let os = &meta["os-release"];
    let vendor = get(&os["ID"]).ok_or_else(|| missing("os-release ID"))?;
    let codename = get(&os["VERSION_CODENAME"])
        .or_else(|| get(&meta["suites"][0]))
        .ok_or_else(|| missing("os-release VERSION_CODENAME"))?;
    let variant = get(&meta["variant"]).ok_or_else(|| missing("variant"))?;
    let architecture = get(&meta["architecture"]).ok_or_else(|| missing("architecture"))?;
    let mut packages: Vec<String> = meta["packages"]
        .as_array()
        .ok_or_else(|| missing("packages"))?
        .iter()
        .filter_map(|p| get(&p["name"]))
        .collect();
    packages.sort();
    packages.dedup();
    let mut pipeline = pipeline.clone();
    if let Some(p) = pipeline.as_object_mut() {
        p.remove("name");
    }
    let env = Environment {
        id: id.to_string(),
        vendor,
        codename,
        variant,
        architecture,
        backends: vec!["unshare".into()],
        packages,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        pipeline,
    };
    durable::create_dir_all(&store.layout().systems())?;
    let dest = store.layout().system(id.as_str());
    // A record already there was written for the same object; keep its date.
    if let Ok(text) = fs::read_to_string(&dest)
        && let Ok(old) = serde_json::from_str::<Environment>(&text)
    {
        return Ok(old);
    }
    // Its object is on disk already (the commit made it so); the record
    // follows it there before its name appears.
    let tmp = store.work_dir("environment")?;
    let staged = tmp.path().join("record.json");
    durable::write(
        &staged,
        &dest,
        &serde_json::to_vec_pretty(&env).expect("json"),
    )?;
    Ok(env)
}

/// Adds `backend` to the backends of the environment `id` (a task ran on it
/// there). A system without a record is left alone.
pub fn add_backend(store: &Store, id: &str, backend: &str) -> Result<(), EnvError> {
    let dest = store.layout().system(id);
    let text = match fs::read_to_string(&dest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let Ok(mut env) = serde_json::from_str::<Environment>(&text) else {
        return Ok(());
    };
    if env.backends.iter().any(|b| b == backend) {
        return Ok(());
    }
    env.backends.push(backend.to_owned());
    let tmp = store.work_dir("environment")?;
    let staged = tmp.path().join("record.json");
    durable::write(
        &staged,
        &dest,
        &serde_json::to_vec_pretty(&env).expect("json"),
    )?;
    Ok(())
}

/// `strata env ls`: one line per environment.
pub fn table(envs: &[Environment]) -> String {
    let mut out = format!(
        "{:<16} {:<8} {:<12} {:<10} {:<8} {}\n",
        "ID", "VENDOR", "CODENAME", "VARIANT", "ARCH", "BACKENDS"
    );
    for e in envs {
        out.push_str(&format!(
            "{:<16} {:<8} {:<12} {:<10} {:<8} {}\n",
            &e.id[..e.id.len().min(16)],
            e.vendor,
            e.codename,
            e.variant,
            e.architecture,
            e.backends.join(",")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_their_object_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let timeout = crate::store::DEFAULT_LOCK_TIMEOUT;
        assert!(
            Store::open_existing(&root, timeout).unwrap().is_none(),
            "no store, no environments"
        );
        assert!(!root.exists(), "listing creates no store");
        let store = Store::open(&root, timeout).unwrap();
        let id = crate::id::Id::of(&serde_json::json!("a system"));
        let env = Environment {
            id: id.to_string(),
            vendor: "debian".into(),
            codename: "bookworm".into(),
            variant: "buildd".into(),
            architecture: "amd64".into(),
            backends: vec!["unshare".into()],
            packages: vec!["dpkg-dev".into()],
            created: 1,
            pipeline: serde_json::json!({"stages": []}),
        };
        let layout = store.layout();
        fs::create_dir_all(layout.systems()).unwrap();
        fs::write(
            layout.system(id.as_str()),
            serde_json::to_vec(&env).unwrap(),
        )
        .unwrap();
        fs::write(layout.system("garbage"), "{").unwrap();
        assert!(list(&store).unwrap().is_empty(), "its object is gone");
        fs::create_dir_all(layout.object(id.as_str()).layer()).unwrap();
        assert_eq!(list(&store).unwrap(), std::slice::from_ref(&env));
        let lookup = Lookup::parse("debian/match:codename=bookworm:backend=unshare").unwrap();
        assert!(lookup.matches(&env));
        assert!(
            !Lookup::parse("debian/match:variant=minbase")
                .unwrap()
                .matches(&env)
        );
        let incus = Lookup::parse("debian/match:backend=incus-lxc").unwrap();
        assert!(!incus.matches(&env), "no /sbin/init");
        let booting = Environment {
            packages: vec!["dpkg-dev".into(), "systemd-sysv".into()],
            ..env.clone()
        };
        assert!(incus.matches(&booting), "importable, bootable");
        drop(store);
    }

    #[test]
    fn lookups_parse() {
        let l = Lookup::parse("debian/match:codename=bookworm:variant=buildd").unwrap();
        assert_eq!(l.vendor, "debian");
        assert_eq!(l.codename.as_deref(), Some("bookworm"));
        assert_eq!(l.variant.as_deref(), Some("buildd"));
        assert_eq!(l.render(), "debian/match:codename=bookworm:variant=buildd");
        let t = Lookup::parse("debian/match:format=tarball:codename=trixie").unwrap();
        assert_eq!(t.render(), "debian/match:codename=trixie");
        assert!(Lookup::parse("debian/match:format=image").is_err());
        for bad in [
            "bookworm",
            "debian/match:codename",
            "debian/match:colour=red",
            "debian/match:codename=a:codename=b",
            "/match",
        ] {
            assert!(Lookup::parse(bad).is_err(), "{bad}");
        }
    }
}
