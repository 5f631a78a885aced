//! mmdebstrap's command line (with the customize hooks that put the final
//! sources, keyrings and script in place), and what its output says when
//! it fails.

use std::path::{Path, PathBuf};

use crate::keyrings::{INSTALLED_KEYRINGS, Keyring};
use crate::repos::Repo;

/// The sources file mmdebstrap is given; it copies it to 0000 + this name.
pub const BOOTSTRAP_SOURCES: &str = "strata.sources";

/// The sources file the new system keeps.
pub const FINAL_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

pub const SCRIPT_IN_CHROOT: &str = "/tmp/strata-customization-script";

/// Everything the mmdebstrap command line is made of.
#[derive(Debug)]
pub struct Plan<'a> {
    pub variant: &'a str,
    pub architecture: &'a str,
    pub include: Vec<String>,
    /// A folder of keyrings replacing apt's trusted.gpg.d while bootstrapping.
    pub keyring_dir: Option<PathBuf>,
    pub hooks: Vec<String>,
    pub suite: &'a str,
    pub tree: &'a Path,
    pub sources: PathBuf,
}

/// mmdebstrap's customize hooks, in order: the system's own sources file
/// replaces the bootstrap one, keyrings are installed, then the user's
/// script runs inside the new system and is removed whatever it did.
/// `upload` writes through mmdebstrap's chroot-aware path resolution.
pub fn customize_hooks(work: &Path, keyrings: &[Keyring], script: Option<&Path>) -> Vec<String> {
    let mut hooks = vec![
        format!(
            "upload {} {FINAL_SOURCES}",
            work.join("debian.sources").display()
        ),
        format!("rm -f \"$1/etc/apt/sources.list.d/0000{BOOTSTRAP_SOURCES}\""),
    ];
    let installed: Vec<&Keyring> = keyrings.iter().filter(|k| k.install).collect();
    if !installed.is_empty() {
        hooks.push(format!("mkdir -p \"$1{INSTALLED_KEYRINGS}\""));
    }
    for k in installed {
        hooks.push(format!(
            "upload {} {}",
            k.path.display(),
            k.installed_path()
        ));
    }
    if let Some(script) = script {
        hooks.push(format!("upload {} {SCRIPT_IN_CHROOT}", script.display()));
        hooks.push(format!(
            "rc=0; chroot \"$1\" sh {SCRIPT_IN_CHROOT} || rc=$?; rm -f \"$1{SCRIPT_IN_CHROOT}\"; \
             if [ \"$rc\" -ne 0 ]; then echo \"E: customization_script failed (exit $rc)\" >&2; exit \"$rc\"; fi"
        ));
    }
    hooks
}

pub fn mmdebstrap_argv(plan: &Plan) -> Vec<String> {
    let mut argv = vec![
        "mmdebstrap".to_owned(),
        "--mode=root".to_owned(),
        format!("--variant={}", plan.variant),
        format!("--architectures={}", plan.architecture),
    ];
    if !plan.include.is_empty() {
        argv.push(format!("--include={}", plan.include.join(",")));
    }
    if let Some(dir) = &plan.keyring_dir {
        argv.push(format!("--keyring={}", dir.display()));
    }
    for hook in &plan.hooks {
        argv.push(format!("--customize-hook={hook}"));
    }
    argv.push(plan.suite.to_owned());
    argv.push(plan.tree.display().to_string());
    argv.push(plan.sources.display().to_string());
    argv
}

/// What went wrong, from mmdebstrap's output: the culprit first (a package,
/// a suite, the script), then the last of apt's E:/W: lines.
pub fn explain_failure(output: &str, code: Option<i32>, repos: &[Repo]) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    let where_ = repos
        .iter()
        .map(|r| format!("{} ({})", r.suite, r.mirror))
        .collect::<Vec<_>>()
        .join(", ");
    let exit = code.map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));

    let mut head = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("E: Unable to locate package ") {
            head = Some(format!(
                "package {} does not exist in {where_}",
                name.trim()
            ));
        } else if let Some(rest) = line.strip_prefix("E: Package '") {
            let name = rest.split('\'').next().unwrap_or(rest);
            head = Some(format!(
                "package {name} has no installation candidate in {where_}"
            ));
        } else if line.starts_with("E: customization_script failed") {
            head = Some(line.trim_start_matches("E: ").to_owned());
        } else if let Some((mirror, suite)) = missing_release(line, lines.get(i + 1)) {
            head = Some(format!("suite {suite} not found at {mirror}"));
        }
        if head.is_some() {
            break;
        }
    }
    let head = head.unwrap_or_else(|| format!("mmdebstrap failed ({exit})"));
    let messages: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .filter(|l| !SANDBOX_NOISE.iter().any(|n| l.starts_with(n)))
        .map(|l| shorten(l))
        .collect();
    let tail = &messages[messages.len().saturating_sub(10)..];
    if tail.is_empty() {
        head
    } else {
        format!("{head}\n{}", tail.join("\n"))
    }
}

/// mmdebstrap's warnings about the sandbox, said on every run: not news.
pub const SANDBOX_NOISE: &[&str] = &[
    "W: Host system does not have a /etc/hostname",
    "W: skipping creation of ./dev/console",
    "W: skipping mounting /sys",
];

/// A line cut to a length an error line can carry (apt's command lines
/// run to a screenful).
pub fn shorten(line: &str) -> String {
    const MAX: usize = 240;
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// The mirror and suite of a Release file apt could not find:
/// `E: The repository 'MIRROR SUITE Release' does not have a Release file.`
/// or `Err:N MIRROR SUITE Release` followed by `404  Not Found`.
pub fn missing_release<'a>(line: &'a str, next: Option<&&str>) -> Option<(&'a str, &'a str)> {
    let release = |s: &'a str| {
        let mut w = s.split_whitespace();
        let (mirror, suite, file) = (w.next()?, w.next()?, w.next()?);
        (file == "Release" || file == "InRelease").then_some((mirror, suite))
    };
    if let Some(rest) = line.strip_prefix("E: The repository '")
        && line.contains("does not have a Release file")
    {
        return release(rest.split('\'').next()?);
    }
    if line.starts_with("Err:") && next.is_some_and(|n| n.contains("404")) {
        return release(line.split_once(' ')?.1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repos::tests::repo;

    #[test]
    fn the_command_line_holds_every_choice() {
        let work = Path::new("/tmp/w");
        let keyrings = [Keyring {
            path: "/tmp/w/keyring-0/k.asc".into(),
            name: "k.asc".into(),
            install: true,
        }];
        let plan = Plan {
            variant: "apt",
            architecture: "arm64",
            include: vec!["hello".into(), "k-keyring".into()],
            keyring_dir: Some("/tmp/w/trusted.gpg.d".into()),
            hooks: customize_hooks(work, &keyrings, Some(&work.join("customize.sh"))),
            suite: "bookworm",
            tree: Path::new("/run/strata/tree"),
            sources: work.join(BOOTSTRAP_SOURCES),
        };
        let argv = mmdebstrap_argv(&plan);
        assert_eq!(
            argv[..6],
            [
                "mmdebstrap",
                "--mode=root",
                "--variant=apt",
                "--architectures=arm64",
                "--include=hello,k-keyring",
                "--keyring=/tmp/w/trusted.gpg.d"
            ]
        );
        assert_eq!(
            argv[argv.len() - 3..],
            ["bookworm", "/run/strata/tree", "/tmp/w/strata.sources"]
        );
        let hooks: Vec<&str> = argv
            .iter()
            .filter_map(|a| a.strip_prefix("--customize-hook="))
            .collect();
        assert_eq!(
            hooks[0],
            "upload /tmp/w/debian.sources /etc/apt/sources.list.d/debian.sources"
        );
        assert_eq!(
            hooks[1],
            "rm -f \"$1/etc/apt/sources.list.d/0000strata.sources\""
        );
        assert_eq!(hooks[2], "mkdir -p \"$1/usr/local/share/keyrings\"");
        assert_eq!(
            hooks[3],
            "upload /tmp/w/keyring-0/k.asc /usr/local/share/keyrings/k.asc"
        );
        assert_eq!(
            hooks[4],
            "upload /tmp/w/customize.sh /tmp/strata-customization-script"
        );
        assert!(hooks[5].contains("chroot \"$1\" sh /tmp/strata-customization-script"));
        assert_eq!(hooks.len(), 6);

        let bare = Plan {
            include: vec![],
            keyring_dir: None,
            hooks: vec![],
            ..plan
        };
        assert_eq!(mmdebstrap_argv(&bare).len(), 7);
    }

    #[test]
    fn failures_name_the_package_or_suite() {
        let repos = [repo("bookworm", &["main"])];
        let out = "I: running apt-get update...\nE: Unable to locate package nonexistent-pkg\n\
                   E: setup failed: E: apt-get install failed\n";
        let msg = explain_failure(out, Some(1), &repos);
        assert_eq!(
            msg,
            "package nonexistent-pkg does not exist in bookworm (http://127.0.0.1/debian)\n\
             E: Unable to locate package nonexistent-pkg\nE: setup failed: E: apt-get install failed"
        );

        let out = "Err:2 http://127.0.0.1/debian bookwormx Release\n  404  Not Found [IP: 127.0.0.1 80]\n\
                   E: The repository 'http://127.0.0.1/debian bookwormx Release' does not have a Release file.\n";
        assert!(explain_failure(out, Some(1), &repos).starts_with(
            "suite bookwormx not found at http://127.0.0.1/debian\nE: The repository"
        ));
        let only_e = "E: The repository 'http://127.0.0.1/debian bookwormy Release' does not have a Release file.\n";
        assert!(
            explain_failure(only_e, Some(1), &repos)
                .starts_with("suite bookwormy not found at http://127.0.0.1/debian\n")
        );

        let out = "E: Package 'virtual' has no installation candidate\n";
        assert!(
            explain_failure(out, Some(1), &repos)
                .starts_with("package virtual has no installation candidate in bookworm")
        );
        let out = "boom\nE: customization_script failed (exit 3)\nE: command failed: ...\n";
        assert!(
            explain_failure(out, Some(1), &repos)
                .starts_with("customization_script failed (exit 3)\n")
        );

        assert_eq!(
            explain_failure("nothing useful\n", Some(25), &repos),
            "mmdebstrap failed (exit 25)"
        );
        let noise = "W: skipping mounting /sys because /sys does not exist on the outside\n";
        let long = format!("E: {}\n", "x".repeat(500));
        let msg = explain_failure(&format!("{noise}{long}"), Some(1), &repos);
        assert_eq!(
            msg,
            format!("mmdebstrap failed (exit 1)\nE: {}…", "x".repeat(237))
        );

        let many: String = (0..15).map(|i| format!("W: warning {i}\n")).collect();
        let msg = explain_failure(&many, None, &repos);
        assert!(
            msg.starts_with("mmdebstrap failed (killed by a signal)\nW: warning 5\n"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 11);
    }
}
