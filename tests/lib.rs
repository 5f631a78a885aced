//! Integration tests live in `it/`, benchmarks in `benches/`; this library
//! holds what both need.

use std::io::Write;
use std::process::Command;

/// The ordinary user `name`, created when missing (`useradd`, no password,
/// a home), with the subordinate id range `sub` ("FIRST:COUNT") in
/// /etc/subuid and /etc/subgid unless it has one there — Debian's useradd
/// gives a new user one (100000 on, by SUB_UID_MIN), which is then the one
/// used. Idempotent; root only. Returns its uid and gid.
pub fn ordinary_user(name: &str, sub: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let made = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", name])
            .status()
            .unwrap();
        assert!(made.success(), "useradd {name} failed");
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with(&format!("{name}:"))) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(file)
                .unwrap();
            writeln!(f, "{name}:{sub}").unwrap();
        }
    }
    (id("-u").unwrap(), id("-g").unwrap())
}
