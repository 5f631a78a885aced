//! Which architecture the build is for and on: a host that differs from
//! the environment's is a cross-build, which needs a cross toolchain.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use strata_stage::capture;

use crate::options::Options;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Architectures {
    pub host: String,
    pub build: String,
    pub cross: bool,
}

impl Architectures {
    /// The environment can only build on its own architecture; a host that
    /// differs from it is a cross-build.
    pub fn resolve(options: &Options, env_arch: &str) -> anyhow::Result<Self> {
        // "all": arch-independent packages, built on whatever this is.
        let host = match options.host_architecture.as_str() {
            "all" => env_arch.to_owned(),
            h => h.to_owned(),
        };
        let build = match &options.build_architecture {
            None => host.clone(),
            Some(None) => env_arch.to_owned(),
            Some(Some(b)) => b.clone(),
        };
        if build != env_arch {
            let why = if options.build_architecture.is_none() {
                " (by default, the host_architecture)"
            } else {
                ""
            };
            bail!(
                "build_architecture is {build}{why}, but the build environment is {env_arch}; \
                 to cross-build for {host} on it, set build_architecture to {env_arch} (or null)"
            );
        }
        Ok(Self {
            cross: host != build,
            host,
            build,
        })
    }
}

pub fn dpkg_print_architecture() -> anyhow::Result<String> {
    Ok(capture(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned())
}

/// A cross-build needs `TRIPLET-gcc`, which crossbuild-essential-HOST brings.
pub fn check_cross_toolchain(arch: &Architectures) -> anyhow::Result<()> {
    let triplet = capture(
        Command::new("dpkg-architecture")
            .args(["-a", &arch.host, "-qDEB_HOST_GNU_TYPE"])
            .env_remove("DEB_HOST_ARCH"),
    )
    .with_context(|| format!("host_architecture {} is not one dpkg knows", arch.host))?;
    let gcc = format!("/usr/bin/{}-gcc", triplet.trim());
    if !Path::new(&gcc).exists() {
        bail!(
            "cross-building for {} on {} needs a cross toolchain in the build environment, \
             and it has no {gcc}; hint: add crossbuild-essential-{} to the build pipeline's packages",
            arch.host,
            arch.build,
            arch.host
        );
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::options::tests::options;
    use serde_json::{Value, json};

    pub fn arch(host: &str, build: &str) -> Architectures {
        Architectures {
            host: host.into(),
            build: build.into(),
            cross: host != build,
        }
    }

    #[test]
    fn architectures_resolve_against_the_environment() {
        let o = |v: Value| {
            let mut m = json!({"host_architecture": "arm64"});
            m.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            options(m).unwrap()
        };
        let e = Architectures::resolve(&o(json!({})), "amd64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("build_architecture is arm64 (by default, the host_architecture), but the build environment is amd64"), "{e}");
        let cross =
            Architectures::resolve(&o(json!({"build_architecture": null})), "amd64").unwrap();
        assert_eq!(cross, arch("arm64", "amd64"));
        assert!(cross.cross);
        let same = Architectures::resolve(&o(json!({})), "arm64").unwrap();
        assert!(!same.cross);
        let all = Architectures::resolve(
            &options(json!({"host_architecture": "all"})).unwrap(),
            "amd64",
        )
        .unwrap();
        assert_eq!(all, arch("amd64", "amd64"));
    }
}
