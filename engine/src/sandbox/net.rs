//! Private networks for stages that declare `network`.
//!
//! ```text
//!   strata ── run_logged ──> strata-sandbox --strata-sandbox-net PORTS -- bwrap … --unshare-net
//!                              │      --cap-drop CAP_NET_ADMIN --info-fd 3 --block-fd 4 …
//!                              │
//!                              ├─ reads bwrap's {"child-pid": N} from fd 3
//!                              ├─ pasta --foreground --config-net --no-map-gw -T PORTS … N
//!                              │    (user-mode networking into N's network namespace:
//!                              │     the namespace's default route leads out through
//!                              │     pasta's sockets on the host; our child, ended
//!                              │     with the sandbox)
//!                              ├─ blackhole route for 169.254.0.0/16 in N's namespace
//!                              └─ one byte on fd 4: bwrap starts the stage
//! ```
//!
//! The stage reaches the mirror and the internet, and not: the host's
//! loopback services (`--no-map-gw`: the gateway address is not the host;
//! 127.0.0.1 is the namespace's own), its abstract unix sockets (they are
//! per network namespace), link-local addresses such as a cloud's metadata
//! service (the blackhole route; the stage cannot remove it: it has no
//! CAP_NET_ADMIN over its network namespace). A mirror or proxy that is on
//! the host's loopback (an apt-cacher-ng on 127.0.0.1:3142) keeps working:
//! exactly its port is forwarded (`-T`), from the namespace's loopback to
//! the host's.
//!
//! Nothing outlives strata: the wrapper dies with strata (parent-death
//! signal), bwrap with the wrapper (`--die-with-parent`), and pasta, which
//! stays in the foreground as the wrapper's child, with the wrapper too.
//! A SIGKILLed strata leaves neither a stage running nor a pasta holding a
//! network namespace and one of root's inotify instances.
//!
//! Without pasta (package `passt`) a network stage shares the host's
//! network, as before: [`private_network`] says which.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The hidden first argument of the strata binary that makes it the
/// network wrapper around a sandbox.
pub const NET_FLAG: &str = "--strata-sandbox-net";

/// pasta, if installed.
pub fn pasta() -> Option<&'static Path> {
    static PASTA: OnceLock<Option<PathBuf>> = OnceLock::new();
    PASTA
        .get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
            std::env::split_paths(&path)
                .map(|d| d.join("pasta"))
                .find(|p| p.is_file())
        })
        .as_deref()
}

/// Whether network stages get a network of their own (pasta is there and
/// the stages' user namespace is in use).
///
/// pasta also needs to open /dev/net/tun, which udev makes 0666 on Debian;
/// where it is 0600 (no udev), only root gets a private network and an
/// ordinary user's network stages share the host's network, as before
/// issue 14 (strata's own namespace still holds them: they are the user).
pub fn private_network() -> bool {
    static TUN: OnceLock<bool> = OnceLock::new();
    let tun = *TUN.get_or_init(|| {
        rustix::fs::access(
            "/dev/net/tun",
            rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
        )
        .is_ok()
    });
    super::userns::mode().is_some() && pasta().is_some() && tun
}

/// The bwrap arguments of a sandbox with a private network; the command
/// must then be started through [`wrap`].
pub const BWRAP_ARGS: &[&str] = &[
    "--unshare-net",
    "--cap-drop",
    "CAP_NET_ADMIN",
    "--info-fd",
    "3",
    "--block-fd",
    "4",
];

/// `program argv…` started through the network wrapper.
pub fn wrap(program: &str, argv: Vec<OsString>, also: &[u16]) -> (OsString, Vec<OsString>) {
    let exe = super::userns::helper_program().unwrap_or_else(|| "strata-sandbox".into());
    let mut ports = loopback_ports();
    ports.extend_from_slice(also);
    ports.sort_unstable();
    ports.dedup();
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut args: Vec<OsString> = vec![NET_FLAG.into(), ports.into(), "--".into(), program.into()];
    args.extend(argv);
    (exe.into_os_string(), args)
}

/// The ports on the host's loopback that stages must still reach: apt's
/// mirrors and the proxies given in the environment that are on
/// 127.0.0.1, ::1 or localhost.
pub fn loopback_ports() -> Vec<u16> {
    let mut urls: Vec<String> = Vec::new();
    for key in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        if let Ok(v) = std::env::var(key) {
            urls.push(v);
        }
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        urls.extend(
            text.split_whitespace()
                .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
                .map(str::to_owned),
        );
    }
    let mut ports: Vec<u16> = urls.iter().filter_map(|u| loopback_port(u)).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The loopback ports of the URLs among the strings of `options` (a
/// stage's): what it names on the host that its private network must reach.
pub fn loopback_ports_in(options: &serde_json::Value) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut stack = vec![options];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::String(s) => ports.extend(loopback_port(s)),
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The port of `url` when its host is the loopback.
fn loopback_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let loopback = host == "localhost" || host == "::1" || host.starts_with("127.");
    if !loopback {
        return None;
    }
    match port {
        Some(p) => p.parse().ok(),
        None if scheme == "https" => Some(443),
        None => Some(80),
    }
}

/// `strata-sandbox --strata-sandbox-net PORTS -- PROGRAM ARGS…`: starts PROGRAM
/// (bwrap, or `unshare … bwrap`) with bwrap's info pipe on fd 3 and its
/// block pipe on fd 4, gives the sandbox's network namespace its network,
/// lets the sandbox go on, and exits as PROGRAM did.
pub fn net_main(args: &[OsString]) -> i32 {
    match net_main_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: sandbox network: {e}");
            126
        }
    }
}

fn net_main_inner(args: &[OsString]) -> Result<i32, String> {
    let [ports, dash, program, rest @ ..] = args else {
        return Err("usage: --strata-sandbox-net PORTS -- PROGRAM ARGS…".into());
    };
    if dash != "--" {
        return Err("usage: --strata-sandbox-net PORTS -- PROGRAM ARGS…".into());
    }
    let ports = ports.to_string_lossy().into_owned();
    die_with_parent().map_err(|e| format!("following strata: {e}"))?;
    let (mut info_r, info_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (block_r, mut block_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (info_fd, block_fd) = (fd(&info_w), fd(&block_r));
    let mut cmd = Command::new(program);
    cmd.args(rest).stdin(Stdio::inherit());
    // SAFETY: dup2 is async-signal-safe; it only puts the two pipe ends on
    // the descriptors bwrap is told about (dup2 clears close-on-exec).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(info_fd, 3) < 0 || libc::dup2(block_fd, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", program.to_string_lossy()))?;
    drop((info_w, block_r));
    let pid = match sandbox_pid(&mut info_r) {
        Some(pid) => pid,
        // bwrap failed before its sandbox was up: it said why on stderr.
        None => return Ok(exit_code(child.wait())),
    };
    let pasta = connect(pid, &ports);
    if let Err(e) = &pasta {
        // Fail closed: the sandbox must not start on the host's network,
        // or with none while it expects one. Everything of this stage is
        // in our process group (strata made it for the stage).
        eprintln!("strata: sandbox network: {e}");
        if rustix::process::getpgrp() == rustix::process::getpid() {
            // SAFETY: kill(0, …) signals our own process group.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(0, libc::SIGKILL);
            }
        }
        // (A --break shell shares strata's group: end bwrap alone.)
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.clone());
    }
    let _ = block_w.write_all(b"g");
    drop(block_w);
    // bwrap writes more to its info pipe (the exit status, when asked); drain it.
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = info_r.read_to_end(&mut sink);
    });
    let code = exit_code(child.wait());
    let _ = drain.join();
    if let Ok(mut pasta) = pasta {
        // Already gone when it saw the namespace end; otherwise ended here.
        let _ = pasta.kill();
        let _ = pasta.wait();
    }
    Ok(code)
}

/// SIGKILL when the parent (strata, or the wrapper for pasta) dies; fails
/// if it died already. For a child: runs between fork and exec, so only
/// async-signal-safe calls.
fn die_with_parent() -> std::io::Result<()> {
    let parent = rustix::process::getppid();
    // SAFETY: prctl(PR_SET_PDEATHSIG) changes only this process's own
    // setting; it is async-signal-safe.
    #[allow(unsafe_code)]
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if rustix::process::getppid() != parent {
        return Err(std::io::Error::other("the parent process ended"));
    }
    Ok(())
}

fn fd(f: &impl std::os::fd::AsRawFd) -> libc::c_int {
    f.as_raw_fd()
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 126,
    }
}

/// The sandbox's pid from bwrap's `--info-fd` JSON.
fn sandbox_pid(info: &mut impl Read) -> Option<i32> {
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    // bwrap writes one JSON object, then keeps the pipe open: read to its `}`.
    while info.read(&mut byte).ok()? == 1 {
        text.push(byte[0]);
        if byte[0] == b'}' {
            break;
        }
    }
    let doc: serde_json::Value = serde_json::from_slice(&text).ok()?;
    doc["child-pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
}

/// bwrap brings the sandbox's loopback up after it has told its pid, and
/// fails (`loopback: Failed RTM_NEWADDR`) when it finds it up already;
/// pasta brings it up too. So pasta starts once bwrap's is done: its
/// 127.0.0.1 is in the namespace's local table, which nothing else fills.
fn wait_for_loopback(pid: i32) -> Result<(), String> {
    let path = format!("/proc/{pid}/net/fib_trie");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(&path) {
            Ok(table) if table.contains("127.0.0.1") => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "{path}: {e}: the sandbox ended before its loopback was up"
                ));
            }
        }
        if std::time::Instant::now() > deadline {
            // Not seen (an odd kernel): go on, bwrap says so if it fails.
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// pasta into `pid`'s network namespace, and the link-local blackhole.
/// Returns pasta, running in the foreground as our child: the caller ends
/// it when the sandbox has ended, and it dies with us.
fn connect(pid: i32, ports: &str) -> Result<std::process::Child, String> {
    let pasta = pasta().ok_or("pasta is not installed (package passt)")?;
    wait_for_loopback(pid)?;
    let tcp_ns = if ports.is_empty() { "none" } else { ports };
    // In the foreground: daemonized, pasta would be nobody's child, and it
    // is meant to end when the namespace does, but it watches the
    // namespace's path with inotify, which says nothing for
    // /proc/self/fd/3: run by root, bookworm's pasta outlived every
    // sandbox whose wrapper was killed, each holding one of root's inotify
    // instances (128 by default, which containers' systemd needs too).
    // Its output goes to a file: a pipe would have to be drained.
    let errors = tempfile::tempfile().map_err(|e| format!("a temporary file: {e}"))?;
    // pasta drops its capabilities before it opens the namespace, and
    // bwrap's first process is not dumpable: open it here, hand it over.
    let netns_path = format!("/proc/{pid}/ns/net");
    let netns = std::fs::File::open(&netns_path).map_err(|e| format!("{netns_path}: {e}"))?;
    let netns_fd = fd(&netns);
    let mut cmd = Command::new(pasta);
    cmd.args(["--foreground", "--config-net", "--no-map-gw", "--quiet"])
        .args(["-t", "none", "-u", "none", "-U", "none", "-T", tcp_ns])
        .args(["--netns", "/proc/self/fd/3"])
        // Dropping to `nobody` (pasta's default for root, and strata is
        // root of its namespace even as a user) loses the right to join the
        // namespace; pasta drops its capabilities all the same.
        .args(["--runas", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors.try_clone().map_err(|e| e.to_string())?);
    // SAFETY: dup2 and prctl are async-signal-safe; they place the
    // namespace's fd and tie pasta's life to ours.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(netns_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            die_with_parent()
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting pasta: {e}"))?;
    drop(netns);
    let failed = |child: &mut std::process::Child, why: String| {
        let _ = child.kill();
        let status = child.wait();
        let mut text = String::new();
        let mut errors = errors.try_clone().ok();
        if let Some(errors) = &mut errors {
            use std::io::Seek;
            let _ = errors.seek(std::io::SeekFrom::Start(0));
            let _ = errors.take(4096).read_to_string(&mut text);
        }
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        format!("{why} ({status}): {}", text.trim())
    };
    // Ready once the namespace has its default route, which pasta adds
    // last (copied from the host's); before that, a stage would find no
    // network.
    let forwarded: Vec<u16> = ports.split(',').filter_map(|p| p.parse().ok()).collect();
    if let Err(why) = wait_for_route(pid, &forwarded, &mut child) {
        return Err(failed(&mut child, why));
    }
    // Link-local addresses (a cloud's metadata service) are the host's business.
    let out = Command::new("nsenter")
        .args(["--net=".to_owned() + &format!("/proc/{pid}/ns/net")])
        .args(["ip", "route", "add", "blackhole", "169.254.0.0/16"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => Ok(child),
        Ok(out) => Err(failed(
            &mut child,
            format!(
                "could not close 169.254.0.0/16 in the sandbox's network: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )),
        Err(e) => Err(failed(&mut child, format!("starting nsenter: {e}"))),
    }
}

/// Waits until pasta has configured `pid`'s network namespace: until it
/// listens there on every port it forwards to the host's loopback
/// (`forwarded`), and the namespace has a default route, which pasta adds
/// last, copied from the host's; on a host without one (a mirror on its
/// loopback, no way out), an address besides loopback, and a moment for
/// the routes pasta copies after it. Fails if pasta ends; after 10 s
/// without all that, the stage starts with what it has (a warning says so).
fn wait_for_route(
    pid: i32,
    forwarded: &[u16],
    pasta: &mut std::process::Child,
) -> Result<(), String> {
    use std::time::{Duration, Instant};
    let host_has_default = has_default_route("self");
    let ns = pid.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if listens_on(&ns, forwarded) {
            if host_has_default && has_default_route(&ns) {
                return Ok(());
            }
            if !host_has_default && has_address(&ns) {
                std::thread::sleep(Duration::from_millis(100));
                return Ok(());
            }
        }
        if let Ok(Some(_)) = pasta.try_wait() {
            return Err("pasta could not give the sandbox a network".into());
        }
        if Instant::now() > deadline {
            eprintln!(
                "strata: sandbox network: pasta did not set up the forwarded ports and the {} within 10s; the stage starts with what there is",
                if host_has_default {
                    "default route"
                } else {
                    "address"
                }
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether the network namespace of /proc/`who` routes 0.0.0.0/0 or ::/0.
fn has_default_route(who: &str) -> bool {
    let v4 = std::fs::read_to_string(format!("/proc/{who}/net/route")).unwrap_or_default();
    let v6 = std::fs::read_to_string(format!("/proc/{who}/net/ipv6_route")).unwrap_or_default();
    default_route_in(&v4, &v6)
}

/// Whether TCP sockets listen on each of `ports` in the network namespace
/// of /proc/`who`.
fn listens_on(who: &str, ports: &[u16]) -> bool {
    if ports.is_empty() {
        return true;
    }
    let v4 = std::fs::read_to_string(format!("/proc/{who}/net/tcp")).unwrap_or_default();
    let v6 = std::fs::read_to_string(format!("/proc/{who}/net/tcp6")).unwrap_or_default();
    let listening = listening_ports(&v4, &v6);
    ports.iter().all(|p| listening.contains(p))
}

/// The ports of the listening sockets in /proc/net/tcp and tcp6 text.
fn listening_ports(v4: &str, v6: &str) -> Vec<u16> {
    v4.lines()
        .chain(v6.lines())
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            // sl, local_address (ADDR:PORT in hex), rem_address, st
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            (state == "0A").then_some(())?;
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// Whether the network namespace of /proc/`who` has an address besides
/// loopback's.
fn has_address(who: &str) -> bool {
    let v4 = std::fs::read_to_string(format!("/proc/{who}/net/fib_trie")).unwrap_or_default();
    let v6 = std::fs::read_to_string(format!("/proc/{who}/net/if_inet6")).unwrap_or_default();
    address_in(&v4, &v6)
}

/// Whether /proc/net/fib_trie (`v4`) has a local address outside 127/8, or
/// /proc/net/if_inet6 (`v6`) an address on an interface other than lo.
fn address_in(v4: &str, v6: &str) -> bool {
    let mut last = "";
    let v4_local = v4.lines().any(|l| {
        let l = l.trim_start_matches([' ', '|', '+', '-']);
        if l.starts_with("/32 host LOCAL") {
            !last.starts_with("127.")
        } else {
            last = l.split_whitespace().next().unwrap_or("");
            false
        }
    });
    let v6_any = v6
        .lines()
        .any(|l| l.split_whitespace().last().is_some_and(|dev| dev != "lo"));
    v4_local || v6_any
}

/// Whether /proc/net/route (`v4`) or /proc/net/ipv6_route (`v6`) text
/// lists a default route.
fn default_route_in(v4: &str, v6: &str) -> bool {
    let v4_default = v4
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"));
    let v6_default = v6.lines().any(|l| {
        let mut f = l.split_whitespace();
        // destination, its prefix length, …, the interface last.
        f.next() == Some("00000000000000000000000000000000")
            && f.next() == Some("00")
            && l.split_whitespace().last() != Some("lo")
    });
    v4_default || v6_default
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_give_ports() {
        assert_eq!(loopback_port("http://127.0.0.1:3142/debian"), Some(3142));
        assert_eq!(loopback_port("http://localhost/debian"), Some(80));
        assert_eq!(loopback_port("https://[::1]/x"), Some(443));
        assert_eq!(loopback_port("http://user:pw@127.0.0.1:8080"), Some(8080));
        assert_eq!(loopback_port("http://mirror.invalid/debian"), None);
        assert_eq!(loopback_port("http://10.0.0.1:3142/"), None);
    }

    #[test]
    fn default_routes_are_found_in_procs_route_tables() {
        let v4 = "Iface\tDestination\tGateway\tFlags\nens3\t00000000\t0102A8C0\t0003\nens3\t0002A8C0\t00000000\t0001\n";
        assert!(default_route_in(v4, ""));
        let v4_local = "Iface\tDestination\tGateway\tFlags\nens3\t0002A8C0\t00000000\t0001\n";
        assert!(!default_route_in(v4_local, ""));
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 ens3\n";
        assert!(default_route_in("", v6));
        // The kernel's unreachable ::/0 on lo is no route out.
        let v6_lo = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert!(!default_route_in("", v6_lo));
    }

    #[test]
    fn listening_ports_are_read_from_procs_tcp_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0C46 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        // 3142 listens, 8080 is a connection, 80 listens on ::1.
        assert_eq!(listening_ports(v4, v6), [3142, 80]);
    }

    #[test]
    fn addresses_besides_loopbacks_are_found() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.1\n              /32 host LOCAL\n";
        assert!(!address_in(
            trie,
            "00000000000000000000000000000001 01 80 10 80       lo\n"
        ));
        let with = format!("{trie}        |-- 192.0.2.2\n           /32 host LOCAL\n");
        assert!(address_in(&with, ""));
        assert!(address_in(
            "",
            "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n"
        ));
    }

    #[test]
    fn bwraps_info_json_gives_the_pid() {
        let mut info: &[u8] = b"{\n    \"child-pid\": 4242,\n    \"cgroup-namespace\": 1\n}";
        assert_eq!(sandbox_pid(&mut info), Some(4242));
        let mut nothing: &[u8] = b"";
        assert_eq!(sandbox_pid(&mut nothing), None);
    }
}
