//! `customize`: changes a system tree from inside, with the tree as `/`.
//!
//! ```json
//! {"packages": ["hello"],
//!  "files": [{"path": "/etc/motd", "content": "hi\n", "owner": "root:root"}],
//!  "script": "echo built > /etc/strata-release",
//!  "hostname": "box",
//!  "enable_units": ["strata-hello.service"], "disable_units": [],
//!  "users": [{"name": "builder", "uid": 1500, "groups": ["users"]}]}
//! ```
//!
//! The engine runs this stage with chroot semantics (`"x-strata": {"root":
//! "tree"}`): the tree is `/`, read-write, with fresh /proc, /dev, /tmp and
//! /run, so the tools spawned here (apt-get, chown, sh, systemctl, useradd)
//! are the tree's own and act on it as on a booted system. Only this program
//! comes from the host, through the host's loader. The options are applied
//! in a fixed order, whatever their order in the manifest:
//!
//! ```text
//! packages ─> files ─> script ─> hostname ─> enable/disable units ─> users
//! ```

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use base64::Engine;
use rustix::fs::{FileType, Mode, OFlags};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use strata_stage::{Args, Error, Root, locate, run_tool, status, write_meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    files: Vec<File>,
    script: Option<Script>,
    hostname: Option<String>,
    #[serde(default)]
    enable_units: Vec<String>,
    #[serde(default)]
    disable_units: Vec<String>,
    #[serde(default)]
    users: Vec<User>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    path: String,
    content: Option<String>,
    base64: Option<String>,
    from: Option<String>,
    #[serde(default = "default_mode")]
    mode: u32,
    owner: Option<String>,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum Script {
    Inline(String),
    From(ScriptFrom),
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFrom {
    from: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    name: String,
    uid: Option<u32>,
    #[serde(default)]
    groups: Vec<String>,
    shell: Option<String>,
    home: Option<String>,
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    if args.tree != Path::new("/") {
        // Everything below names paths as the tree sees them and runs the
        // tree's tools; with the tree elsewhere it would change the build root.
        bail!(
            "customize runs with the tree as / (x-strata root \"tree\"), but its tree is {}",
            args.tree.display()
        );
    }
    let mut meta = Map::new();

    if !options.packages.is_empty() {
        strata_stage::apt::install(&options.packages)
            .with_context(|| format!("cannot install {}", options.packages.join(" ")))?;
        meta.insert("packages_installed".into(), json!(options.packages));
    }
    for (i, file) in options.files.iter().enumerate() {
        write_file(args, file).with_context(|| format!("options.files[{i}] ({})", file.path))?;
    }
    if let Some(script) = &options.script {
        run_script(args, script)?;
    }
    if let Some(name) = &options.hostname {
        set_hostname(name)?;
        meta.insert("hostname".into(), json!(name));
    }
    units("enable", "enable_units", &options.enable_units)?;
    units("disable", "disable_units", &options.disable_units)?;
    if !options.users.is_empty() {
        add_users(&options.users)?;
        let names: Vec<&str> = options.users.iter().map(|u| u.name.as_str()).collect();
        meta.insert("users".into(), json!(names));
    }

    write_meta(args, &Value::Object(meta))?;
    Ok(())
}

/// Writes one file through the stages' one writer ([`Root::write_file`],
/// the tree being this stage's `/`), then sets its owner with the tree's
/// `chown` (so names mean the tree's users) and its mode again (chown
/// clears set-id bits).
fn write_file(args: &Args, file: &File) -> anyhow::Result<()> {
    if file.mode > 0o7777 {
        bail!("mode {:#o} is not a file mode", file.mode);
    }
    let owner = file.owner.as_deref().map(chown_owner).transpose()?;
    let path = Path::new(&file.path);
    if !file.path.starts_with('/') || path.components().any(|c| c.as_os_str() == "..") {
        bail!("path must be absolute, without \"..\"");
    }
    let system = Root::system(Path::new("/"))?;
    match (&file.content, &file.base64, &file.from) {
        (Some(text), None, None) => {
            system.write_file(&file.path, &mut text.as_bytes(), file.mode)?;
        }
        (None, Some(b64), None) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .context("base64 is not base64")?;
            system.write_file(&file.path, &mut bytes.as_slice(), file.mode)?;
        }
        (None, None, Some(url)) => {
            let mut from = open_input(args, url)?;
            system.write_file(&file.path, &mut from, file.mode)?;
        }
        _ => bail!("needs exactly one of content, base64 and from"),
    }

    if let Some(owner) = owner {
        run_tool(
            Command::new("chown")
                .arg("--no-dereference")
                .arg(&owner)
                .arg(path),
        )
        .with_context(|| format!("cannot set the owner of {} to {owner}", file.path))?;
        std::fs::set_permissions(
            path,
            std::os::unix::fs::PermissionsExt::from_mode(file.mode),
        )
        .with_context(|| format!("cannot set the mode of {}", file.path))?;
    }
    Ok(())
}

/// Opens the regular file an `input://` URL names.
fn open_input(args: &Args, url: &str) -> anyhow::Result<std::fs::File> {
    let entry = locate(args, url)?;
    match entry.lstat()? {
        None => bail!("{url} does not exist"),
        Some(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => {
            bail!("{url} is not a regular file")
        }
        Some(_) => {}
    }
    let fd = rustix::fs::openat(
        entry.dir(),
        entry.name(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Io {
        what: "cannot open",
        path: url.into(),
        source: e.into(),
    })?;
    Ok(std::fs::File::from(fd))
}

/// `user` or `user:group`, names or numbers, as `chown` takes it. A number
/// gets chown's `+` so that it is never looked up as a name.
fn chown_owner(owner: &str) -> anyhow::Result<String> {
    let part = |p: &str| -> anyhow::Result<String> {
        // As the schema's pattern: no leading `-`, which chown would take
        // for an option.
        let fine = p
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"_.".contains(&b))
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-$".contains(&b));
        if !fine {
            bail!("owner {owner:?} is not \"user\" or \"user:group\" (names or numbers)");
        }
        Ok(if p.bytes().all(|b| b.is_ascii_digit()) {
            format!("+{p}")
        } else {
            p.to_owned()
        })
    };
    match owner.split_once(':') {
        None => part(owner),
        Some((user, group)) => Ok(format!("{}:{}", part(user)?, part(group)?)),
    }
}

fn run_script(args: &Args, script: &Script) -> anyhow::Result<()> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-e");
    let what = match script {
        Script::Inline(text) => {
            cmd.arg("-c").arg(text);
            "the script".to_owned()
        }
        Script::From(ScriptFrom { from }) => {
            let entry = locate(args, from)?;
            if entry.lstat()?.is_none() {
                bail!("options.script.from: {from} does not exist");
            }
            cmd.arg(entry.real_path()?);
            format!("the script {from}")
        }
    };
    println!("running {what}");
    // Its output, both streams, is the log's.
    let status = status(cmd.current_dir("/")).context("cannot run /bin/sh in the tree")?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn set_hostname(name: &str) -> anyhow::Result<()> {
    if !is_hostname(name) {
        bail!("options.hostname: {name:?} is not a host name (RFC 1123 label)");
    }
    let system = Root::system(Path::new("/"))?;
    system.write_file("/etc/hostname", &mut format!("{name}\n").as_bytes(), 0o644)?;
    let hosts = match std::fs::read_to_string("/etc/hosts") {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("cannot read /etc/hosts"),
    };
    // Written in place: the tree's mode and owner of the file stay.
    let mode = std::fs::symlink_metadata("/etc/hosts").map_or(0o644, |m| {
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
    });
    system.write_file(
        "/etc/hosts",
        &mut with_hostname(hosts.as_deref(), name).as_bytes(),
        mode,
    )?;
    println!("hostname set to {name}");
    Ok(())
}

/// One label: letters, digits and inner hyphens, at most 63.
fn is_hostname(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `hosts` with `127.0.1.1` mapped to `name`, Debian's way of naming the
/// machine without a network: that line replaced where it is, or else put
/// after the `127.0.0.1` line. A missing file gets localhost as well.
fn with_hostname(hosts: Option<&str>, name: &str) -> String {
    let ours = format!("127.0.1.1\t{name}");
    let Some(hosts) = hosts else {
        return format!("127.0.0.1\tlocalhost\n{ours}\n");
    };
    let first = |l: &str| l.split_whitespace().next().map(str::to_owned);
    let mut lines: Vec<String> = Vec::new();
    let mut placed = false;
    for line in hosts.lines() {
        if first(line).as_deref() == Some("127.0.1.1") {
            if !placed {
                lines.push(ours.clone());
                placed = true;
            }
            continue;
        }
        lines.push(line.to_owned());
    }
    if !placed {
        let at = lines
            .iter()
            .rposition(|l| first(l).as_deref() == Some("127.0.0.1"))
            .map_or(lines.len(), |i| i + 1);
        lines.insert(at, ours);
    }
    lines.join("\n") + "\n"
}

/// `systemctl enable|disable UNIT` for each unit. systemctl sees no running
/// systemd here and edits the unit symlinks in the tree, as in a chroot.
fn units(verb: &str, option: &str, units: &[String]) -> anyhow::Result<()> {
    if units.is_empty() {
        return Ok(());
    }
    if !["/usr/bin/systemctl", "/bin/systemctl"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        bail!("{option} needs systemd installed in the tree (there is no /usr/bin/systemctl)");
    }
    for unit in units {
        run_tool(Command::new("systemctl").arg(verb).arg(unit))
            .with_context(|| format!("{option}: cannot {verb} {unit}"))?;
        println!("{verb}d {unit}");
    }
    Ok(())
}

fn add_users(users: &[User]) -> anyhow::Result<()> {
    let shell = if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    for user in users {
        let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
        if has_user(&passwd, &user.name) {
            bail!(
                "options.users: user {} already exists in the tree",
                user.name
            );
        }
        let argv = useradd_argv(user, shell);
        run_tool(Command::new(&argv[0]).args(&argv[1..]))
            .with_context(|| format!("options.users: cannot add user {}", user.name))?;
        println!("added user {}", user.name);
    }
    Ok(())
}

fn has_user(passwd: &str, name: &str) -> bool {
    passwd.lines().any(|l| l.split(':').next() == Some(name))
}

fn useradd_argv(user: &User, default_shell: &str) -> Vec<String> {
    let home = user
        .home
        .clone()
        .unwrap_or_else(|| format!("/home/{}", user.name));
    let shell = user.shell.as_deref().unwrap_or(default_shell);
    let mut argv: Vec<String> = [
        "useradd",
        "--create-home",
        "--home-dir",
        &home,
        "--shell",
        shell,
    ]
    .map(str::to_owned)
    .into();
    if let Some(uid) = user.uid {
        argv.extend(["--uid".into(), uid.to_string()]);
    }
    if !user.groups.is_empty() {
        argv.extend(["--groups".into(), user.groups.join(",")]);
    }
    argv.push(user.name.clone());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(v: Value) -> Result<Options, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn every_option_has_a_default() {
        let o = options(json!({})).unwrap();
        assert!(o.packages.is_empty() && o.files.is_empty() && o.users.is_empty());
        assert!(o.enable_units.is_empty() && o.disable_units.is_empty());
        assert!(o.script.is_none() && o.hostname.is_none());
    }

    #[test]
    fn options_deserialize_in_their_documented_shapes() {
        let o = options(json!({
            "packages": ["hello"],
            "files": [
                {"path": "/etc/motd", "content": "hi\n"},
                {"path": "/etc/key", "base64": "AAE=", "mode": 384, "owner": "root:0"},
                {"path": "/usr/local/bin/x", "from": "input://files/x", "mode": 493},
            ],
            "script": "echo hi",
            "hostname": "box",
            "enable_units": ["a.service"],
            "disable_units": ["b.timer"],
            "users": [{"name": "builder", "uid": 1500, "groups": ["users", "sudo"],
                       "shell": "/bin/zsh", "home": "/srv/b"}],
        }))
        .unwrap();
        assert_eq!(o.files[0].mode, 0o644);
        assert_eq!(o.files[1].owner.as_deref(), Some("root:0"));
        assert_eq!(o.files[2].from.as_deref(), Some("input://files/x"));
        assert_eq!(o.script, Some(Script::Inline("echo hi".into())));
        assert_eq!(o.users[0].uid, Some(1500));

        let o = options(json!({"script": {"from": "input://s/setup.sh"}})).unwrap();
        assert_eq!(
            o.script,
            Some(Script::From(ScriptFrom {
                from: "input://s/setup.sh".into()
            }))
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(options(json!({"package": ["x"]})).is_err());
        assert!(options(json!({"files": [{"path": "/x", "content": "", "uid": 0}]})).is_err());
        assert!(options(json!({"users": [{"name": "x", "password": "y"}]})).is_err());
        assert!(options(json!({"script": {"from": "input://s/x", "args": []}})).is_err());
    }

    #[test]
    fn owners_become_chown_arguments() {
        assert_eq!(chown_owner("root:root").unwrap(), "root:root");
        assert_eq!(chown_owner("www-data").unwrap(), "www-data");
        assert_eq!(chown_owner("1000:1000").unwrap(), "+1000:+1000");
        assert_eq!(chown_owner("builder:100").unwrap(), "builder:+100");
        for bad in [
            "",
            ":",
            "root:",
            ":root",
            "a:b:c",
            "-R",
            "x y",
            "root:$(id)",
        ] {
            let e = chown_owner(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("owner {bad:?} is not \"user\" or \"user:group\" (names or numbers)")
            );
        }
    }

    #[test]
    fn hosts_gets_one_127_0_1_1_line() {
        let debian = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n";
        assert_eq!(
            with_hostname(Some(debian), "box"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tbox\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        );
        let named =
            "127.0.0.1 localhost\n127.0.1.1 old old.example\n# 127.0.1.1 x\n127.0.1.1 dup\n";
        assert_eq!(
            with_hostname(Some(named), "box"),
            "127.0.0.1 localhost\n127.0.1.1\tbox\n# 127.0.1.1 x\n"
        );
        assert_eq!(with_hostname(Some(""), "box"), "127.0.1.1\tbox\n");
        assert_eq!(
            with_hostname(Some("::1 localhost"), "box"),
            "::1 localhost\n127.0.1.1\tbox\n"
        );
        assert_eq!(
            with_hostname(None, "box"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tbox\n"
        );
        // Applying it twice changes nothing more.
        let once = with_hostname(Some(debian), "box");
        assert_eq!(with_hostname(Some(&once), "box"), once);
    }

    #[test]
    fn hostnames_are_single_labels() {
        for good in ["box", "strata-demo", "a", "x1", &"a".repeat(63)] {
            assert!(is_hostname(good), "{good}");
        }
        for bad in ["", "-box", "box-", "a.b", "a_b", "b ox", &"a".repeat(64)] {
            assert!(!is_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn useradd_gets_home_shell_uid_and_groups() {
        let user = |v: Value| -> User { serde_json::from_value(v).unwrap() };
        assert_eq!(
            useradd_argv(&user(json!({"name": "builder"})), "/bin/bash"),
            [
                "useradd",
                "--create-home",
                "--home-dir",
                "/home/builder",
                "--shell",
                "/bin/bash",
                "builder"
            ]
        );
        assert_eq!(
            useradd_argv(
                &user(
                    json!({"name": "b", "uid": 1500, "groups": ["users", "sudo"],
                             "shell": "/bin/sh", "home": "/srv/b"})
                ),
                "/bin/bash"
            ),
            [
                "useradd",
                "--create-home",
                "--home-dir",
                "/srv/b",
                "--shell",
                "/bin/sh",
                "--uid",
                "1500",
                "--groups",
                "users,sudo",
                "b"
            ]
        );
    }

    #[test]
    fn existing_users_are_found_by_name() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nbuilder:x:1000:1000::/home/builder:/bin/sh\n";
        assert!(has_user(passwd, "root"));
        assert!(has_user(passwd, "builder"));
        assert!(!has_user(passwd, "build"));
        assert!(!has_user(passwd, "x"));
    }
}
