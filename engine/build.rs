//! Sets `STRATA_VERSION` for `strata --version`: the crate's version, and
//! the git revision it was built from when it was built from a git checkout
//! (a release tarball has none, and then the version stands alone).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    // The crate directory is inside the checkout, so git finds it from here
    // (a linked worktree too: its .git is a file).
    let full = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            // Rebuild when HEAD moves: a commit or checkout changes the ref
            // HEAD names (or HEAD itself, when detached), and `git gc` may
            // move refs into packed-refs.
            for file in ["HEAD", "packed-refs"] {
                if let Some(path) = git(&["rev-parse", "--git-path", file]) {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            if let Some(path) = git(&["symbolic-ref", "-q", "HEAD"])
                .and_then(|r| git(&["rev-parse", "--git-path", &r]))
            {
                println!("cargo:rerun-if-changed={path}");
            }
            format!("{version} (git {rev})")
        }
        None => version.to_owned(),
    };
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=STRATA_VERSION={full}");
}
