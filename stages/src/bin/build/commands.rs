//! The command lines of apt-get build-dep and dpkg-buildpackage, and the
//! names dpkg-buildpackage gives what it writes.

use crate::arch::Architectures;
use crate::options::Component;

/// `any,all,source` as `--build=` takes it.
pub fn build_flag(components: &[Component]) -> String {
    let names: Vec<&str> = components.iter().map(|c| c.name()).collect();
    format!("--build={}", names.join(","))
}

/// Long options: dpkg-buildpackage takes `-P` only joined to its value.
pub fn dpkg_buildpackage_argv(
    components: &[Component],
    arch: &Architectures,
    profiles: &[String],
) -> Vec<String> {
    let mut argv = vec![
        "dpkg-buildpackage".to_owned(),
        build_flag(components),
        "-us".into(),
        "-uc".into(),
    ];
    if arch.cross {
        argv.push(format!("--host-arch={}", arch.host));
    }
    if !profiles.is_empty() {
        argv.push(format!("--build-profiles={}", profiles.join(",")));
    }
    argv
}

/// Build-Depends-Arch / -Indep are left out when their half is not built.
pub fn build_dep_argv(
    components: &[Component],
    arch: &Architectures,
    profiles: &[String],
    dir: &str,
) -> Vec<String> {
    let mut argv: Vec<String> = ["apt-get", "build-dep", "-y", "--no-install-recommends"]
        .map(str::to_owned)
        .into();
    match components {
        [Component::Any] => argv.push("--arch-only".into()),
        [Component::All] => argv.push("--indep-only".into()),
        _ => {}
    }
    if arch.cross {
        argv.extend(["-a".into(), arch.host.clone()]);
    }
    if !profiles.is_empty() {
        argv.extend(["-P".into(), profiles.join(",")]);
    }
    argv.push(format!("./{dir}"));
    argv
}

/// The architecture part of the .changes (and build log) name, as
/// dpkg-buildpackage chooses it.
pub fn changes_architecture(components: &[Component], host: &str) -> String {
    if components.contains(&Component::Any) {
        host.to_owned()
    } else if components.contains(&Component::All) {
        "all".into()
    } else {
        "source".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::tests::arch;
    use crate::normalized;

    #[test]
    fn dpkg_buildpackage_gets_components_arch_and_profiles() {
        let native = arch("amd64", "amd64");
        assert_eq!(
            dpkg_buildpackage_argv(&[Component::Any], &native, &[]),
            ["dpkg-buildpackage", "--build=any", "-us", "-uc"]
        );
        let all = normalized(&[
            Component::Source,
            Component::Any,
            Component::All,
            Component::Any,
        ])
        .unwrap();
        assert_eq!(
            dpkg_buildpackage_argv(
                &all,
                &arch("arm64", "amd64"),
                &["nodoc".into(), "nocheck".into()]
            ),
            [
                "dpkg-buildpackage",
                "--build=any,all,source",
                "-us",
                "-uc",
                "--host-arch=arm64",
                "--build-profiles=nodoc,nocheck"
            ]
        );
        assert_eq!(
            dpkg_buildpackage_argv(&[Component::Source], &native, &[]),
            ["dpkg-buildpackage", "--build=source", "-us", "-uc"]
        );
        assert!(normalized(&[]).is_err());
    }

    #[test]
    fn build_dep_installs_what_the_components_need() {
        let native = arch("amd64", "amd64");
        assert_eq!(
            build_dep_argv(&[Component::Any], &native, &[], "hello-1.0"),
            [
                "apt-get",
                "build-dep",
                "-y",
                "--no-install-recommends",
                "--arch-only",
                "./hello-1.0"
            ]
        );
        assert_eq!(
            build_dep_argv(
                &[Component::All],
                &arch("arm64", "amd64"),
                &["nodoc".into()],
                "h-1"
            ),
            [
                "apt-get",
                "build-dep",
                "-y",
                "--no-install-recommends",
                "--indep-only",
                "-a",
                "arm64",
                "-P",
                "nodoc",
                "./h-1"
            ]
        );
        assert_eq!(
            build_dep_argv(&[Component::Any, Component::All], &native, &[], "h-1"),
            [
                "apt-get",
                "build-dep",
                "-y",
                "--no-install-recommends",
                "./h-1"
            ]
        );
    }

    #[test]
    fn the_changes_file_is_named_for_what_was_built() {
        assert_eq!(
            changes_architecture(&[Component::Any, Component::Source], "arm64"),
            "arm64"
        );
        assert_eq!(changes_architecture(&[Component::All], "arm64"), "all");
        assert_eq!(
            changes_architecture(&[Component::Source], "arm64"),
            "source"
        );
    }
}
