//! The command channel into a qemu guest: a small bash agent on a
//! virtio-serial port, and strata's end of it on the port's unix socket.
//!
//! ```text
//!  host (strata)                         INSTANCE/agent.sock ══ virtserialport org.strata.agent ══ guest
//!  connect ─▶ PING <nonce>\n ──────────────────────────────────────────────▶ strata-agent (systemd unit)
//!          ◀─ … whatever an earlier, abandoned session still had in flight
//!          ◀─ PONG <nonce>\n                       (everything before it is skipped)
//!  RUN <nonce> <timeout ms> <uid> <n env> <n argv> <stdin length>\n
//!      <cwd>\0 <KEY=VALUE>\0… <arg>\0… <stdin bytes>
//!          ◀─ RES <nonce> <status> <stdout length> <stderr length>\n <stdout bytes><stderr bytes>
//!          ◀─ NOCMD <nonce>\n                  (argv[0] is not a command)
//! ```
//!
//! Strings travel NUL-terminated, as the kernel takes argv: bash reads
//! them with `read -d ''` without a process per string (under TCG every
//! process the agent starts costs a good part of a second), and a
//! command's stdout and stderr come back with one `cat`. Everything else
//! in the channel (push, pull, user creation, poweroff) is a RUN of a
//! shell command with stdin, as the incus backend does it over `incus exec`.
//!
//! Why virtio-serial: it is a unix socket on the host, so no TCP port, no
//! key and no NIC is needed (environments without network have none), and
//! only who can open the instance folder can talk to the guest. The port
//! is one stream: qemu serves one connection at a time, so strata
//! processes queue on the socket's backlog instead of interleaving. A
//! session abandoned half way (strata killed) leaves the agent blocked on a
//! write until the next host connects; the nonce of PING lets that host
//! skip the rest of the old reply.
//!
//! What the guest says is believed in nothing but its framing: lines are
//! bounded, lengths are capped, and the nonce must match.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The virtio-serial port's name (the guest finds its device by it).
pub const PORT_NAME: &str = "org.strata.agent";
/// Where the image keeps the agent.
pub const AGENT_PATH: &str = "/usr/local/sbin/strata-agent";
/// The agent's systemd unit name.
pub const UNIT_NAME: &str = "strata-agent.service";
/// Where the image keeps the unit.
pub const UNIT_PATH: &str = "/etc/systemd/system/strata-agent.service";

/// The agent: bash, coreutils (head, stat, cat, timeout, env) and
/// util-linux's setpriv, all Essential in Debian.
pub const AGENT_SCRIPT: &str = r#"#!/bin/bash
# strata-agent: runs what strata's qemu backend asks, on the virtio-serial
# port org.strata.agent. The protocol is drawn in strata's
# engine/src/backend/qemu/agent.rs.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
NAME=org.strata.agent

# By sysfs, not /dev/virtio-ports: that link is udev's, and udev may be late.
find_port() {
  local d n
  for d in /sys/class/virtio-ports/*; do
    [ -r "$d/name" ] || continue
    read -r n <"$d/name" || continue
    if [ "$n" = "$NAME" ]; then
      port=/dev/${d##*/}
      return 0
    fi
  done
  return 1
}

modprobe virtio_console 2>/dev/null || :
i=0
until find_port && [ -c "$port" ]; do
  i=$((i + 1))
  # Not booted by strata: nothing to serve, and nothing failed.
  [ "$i" -lt 600 ] || exit 0
  sleep 0.1
done

work=/var/lib/strata-agent
rm -rf "$work"
mkdir -p -m 0700 "$work"

serve_run() { # nonce timeout-ms uid n-env n-argv stdin-length
  local nonce=$1 ms=$2 uid=$3 ne=$4 na=$5 len=$6 cwd s i frac path=$PATH
  local -a env=() argv=() pre=() cmd=()
  # A host gone mid-request leaves a string cut short: run nothing then.
  IFS= read -r -d '' cwd <&3 || return
  for ((i = 0; i < ne; i++)); do
    IFS= read -r -d '' s <&3 || return
    env+=("$s")
    case $s in PATH=*) path=${s#PATH=} ;; esac
  done
  for ((i = 0; i < na; i++)); do
    IFS= read -r -d '' s <&3 || return
    argv+=("$s")
  done
  head -c "$len" <&3 >"$work/in"
  set -- $(stat -c %s "$work/in")
  [ "$1" = "$len" ] || return
  if ! (PATH=$path; type -P -- "${argv[0]}") >/dev/null 2>&1; then
    printf 'NOCMD %s\n' "$nonce" >&3
    return
  fi
  [ "$uid" = 0 ] || pre=(setpriv --reuid="$uid" --regid="$uid" --init-groups --)
  cmd=(env -i "${env[@]}" "${pre[@]}" "${argv[@]}")
  if [ "$ms" -gt 0 ]; then
    printf -v frac %03d $((ms % 1000))
    cmd=(timeout -s KILL "$((ms / 1000)).$frac" "${cmd[@]}")
  fi
  (cd -- "$cwd" && exec "${cmd[@]}") <"$work/in" >"$work/out" 2>"$work/err" 3>&-
  local status=$?
  set -- $(stat -c %s "$work/out" "$work/err")
  printf 'RES %s %s %s %s\n' "$nonce" "$status" "$1" "$2" >&3
  cat "$work/out" "$work/err" >&3
}

exec 3<>"$port"
set -f
while :; do
  while IFS=' ' read -r verb nonce rest <&3; do
    case $verb in
      PING) printf 'PONG %s\n' "$nonce" >&3 ;;
      RUN) serve_run "$nonce" $rest ;;
    esac
  done
  # No host is connected: the port reads end-of-file until one is.
  sleep 0.05
done
"#;

/// The agent's unit. It starts as soon as the root filesystem is writable
/// (and /var/lib mounted, where it keeps a command's files), not after
/// local-fs or multi-user: the time to the first command is the boot time
/// users wait for.
pub const AGENT_UNIT: &str = "[Unit]
Description=strata guest agent (commands from strata's qemu backend on a virtio-serial port)
DefaultDependencies=no
After=systemd-remount-fs.service
RequiresMountsFor=/var/lib
Conflicts=shutdown.target
Before=shutdown.target

[Service]
ExecStart=/usr/local/sbin/strata-agent
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
";

/// What a system image needs for this backend, as the `customize` stage's
/// options: the agent, its unit, and the unit enabled; and an initramfs of
/// the drivers a virtual machine's disk needs (virtio, SCSI as incus
/// attaches disks, AHCI, NVMe) instead of Debian's every driver: under TCG
/// unpacking the default one (≈ 35 MB) takes a quarter of a boot. That
/// takes effect when the kernel's initramfs is made next: customize before
/// the kernel is installed, or run update-initramfs after. (A script, not
/// files: initramfs-tools may not be installed yet, and its folders with
/// it; the list goes where packages put theirs, not in the conffile
/// /etc/initramfs-tools/modules, which dpkg would then ask about.)
pub fn customize_options() -> serde_json::Value {
    serde_json::json!({
        "files": [
            {"path": AGENT_PATH, "content": AGENT_SCRIPT, "mode": 0o755},
            {"path": UNIT_PATH, "content": AGENT_UNIT, "mode": 0o644},
        ],
        "script": INITRAMFS_SCRIPT,
        "enable_units": [UNIT_NAME],
    })
}

/// MODULES=list, and the drivers a VM's initramfs holds (with what they
/// depend on).
const INITRAMFS_SCRIPT: &str = "set -e
mkdir -p /etc/initramfs-tools/conf.d /usr/share/initramfs-tools/modules.d
echo MODULES=list > /etc/initramfs-tools/conf.d/strata-vm.conf
printf '%s\\n' virtio_pci virtio_blk virtio_scsi sd_mod ahci nvme ext4 > /usr/share/initramfs-tools/modules.d/strata-vm
";

/// A header line longer than this is not the agent's.
const MAX_LINE: usize = 4096;
/// The most stdout or stderr one command may hand back (it is held in memory).
pub const MAX_OUTPUT: u64 = 1 << 30;
/// How often a blocked read looks at the deadline, qemu and Ctrl-C.
const TICK: Duration = Duration::from_millis(100);

/// Why a session ended without an answer.
#[derive(Debug)]
pub enum AgentError {
    /// The socket failed.
    Io(std::io::Error),
    /// qemu is gone.
    Gone,
    /// The deadline passed.
    Deadline,
    /// strata was interrupted.
    Interrupted,
    /// The guest said something that is not the protocol.
    Protocol(String),
    /// The request cannot be sent.
    Invalid(String),
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> AgentError {
        AgentError::Io(e)
    }
}

/// A finished RUN.
#[derive(Debug)]
pub enum Reply {
    /// The command ran: its status and output.
    Ran {
        /// Exit status (128 + N for signal N, as the shell says).
        status: i32,
        /// stdout.
        stdout: Vec<u8>,
        /// stderr.
        stderr: Vec<u8>,
    },
    /// argv\[0\] is not a command.
    NoCommand,
}

/// One command to run.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The command.
    pub argv: &'a [String],
    /// Its whole environment (`env -i`).
    pub env: &'a [(String, String)],
    /// Its working directory.
    pub cwd: &'a str,
    /// 0 for root, else the uid (and gid) it runs as.
    pub uid: u32,
    /// What it reads.
    pub stdin: &'a [u8],
    /// Ended with SIGKILL inside after this long.
    pub timeout: Option<Duration>,
}

/// The request line, strings and stdin of `req`, under `nonce`; a string
/// with a NUL in it cannot be sent (nor be an argument, a folder or a
/// variable inside).
pub fn encode(nonce: &str, req: &Request<'_>) -> Result<Vec<u8>, String> {
    let mut out = format!(
        "RUN {nonce} {} {} {} {} {}\n",
        req.timeout.map_or(0, |t| t.as_millis().max(1)),
        req.uid,
        req.env.len(),
        req.argv.len(),
        req.stdin.len()
    )
    .into_bytes();
    let mut string = |s: &[u8]| {
        if s.contains(&0) {
            return Err(format!(
                "`{}` has a NUL byte, which no argument, folder or variable can hold",
                String::from_utf8_lossy(s)
            ));
        }
        out.extend_from_slice(s);
        out.push(0);
        Ok(())
    };
    string(req.cwd.as_bytes())?;
    for (k, v) in req.env {
        string(format!("{k}={v}").as_bytes())?;
    }
    for a in req.argv {
        string(a.as_bytes())?;
    }
    out.extend_from_slice(req.stdin);
    Ok(out)
}

/// A fresh nonce: what an abandoned session's leftovers cannot contain.
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random));
    let mut h = blake3::Hasher::new();
    h.update(&random);
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::SeqCst).to_le_bytes());
    h.finalize().to_hex()[..24].to_owned()
}

/// A connection to the agent.
pub struct Session<'a> {
    stream: UnixStream,
    /// Bytes read but not yet consumed.
    pending: Vec<u8>,
    /// Whether qemu still runs.
    alive: &'a dyn Fn() -> bool,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl<'a> Session<'a> {
    /// Connects to the agent socket `sock` of a qemu that `alive` says runs.
    pub fn connect(sock: &Path, alive: &'a dyn Fn() -> bool) -> Result<Session<'a>, AgentError> {
        let stream = UnixStream::connect(sock).map_err(|e| {
            if alive() {
                AgentError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", sock.display()),
                ))
            } else {
                AgentError::Gone
            }
        })?;
        stream.set_read_timeout(Some(TICK))?;
        Ok(Session {
            stream,
            pending: Vec::new(),
            alive,
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), AgentError> {
        // A guest that stopped reading would block a large write for good.
        self.stream
            .set_write_timeout(Some(Duration::from_secs(60)))?;
        self.stream.write_all(bytes).map_err(|e| {
            if (self.alive)() {
                AgentError::Io(e)
            } else {
                AgentError::Gone
            }
        })
    }

    /// Reads more bytes into `pending`, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<(), AgentError> {
        let mut buf = [0u8; 65536];
        loop {
            if crate::sandbox::process::interrupted() {
                return Err(AgentError::Interrupted);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(AgentError::Deadline);
            }
            match self.stream.read(&mut buf) {
                // qemu closed the socket: it is on its way out.
                Ok(0) => return Err(AgentError::Gone),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if !(self.alive)() {
                        return Err(AgentError::Gone);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next line (without its newline); `None` for one longer than
    /// [`MAX_LINE`], whose start is dropped.
    fn line(&mut self, deadline: Option<Instant>) -> Result<Option<Vec<u8>>, AgentError> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                if line.len() > MAX_LINE {
                    return Ok(None);
                }
                return Ok(Some(line[..line.len() - 1].to_vec()));
            }
            if self.pending.len() > MAX_LINE {
                self.pending.clear();
                self.fill(deadline)?;
                // The rest of an overlong line: skip to its end.
                while !self.pending.contains(&b'\n') {
                    self.pending.clear();
                    self.fill(deadline)?;
                }
                let at = self.pending.iter().position(|&b| b == b'\n').unwrap_or(0);
                self.pending.drain(..=at);
                return Ok(None);
            }
            self.fill(deadline)?;
        }
    }

    fn exactly(&mut self, n: usize, deadline: Option<Instant>) -> Result<Vec<u8>, AgentError> {
        while self.pending.len() < n {
            self.fill(deadline)?;
        }
        Ok(self.pending.drain(..n).collect())
    }

    /// Sends PING and skips everything up to its PONG.
    pub fn sync(&mut self, deadline: Instant) -> Result<(), AgentError> {
        let n = nonce();
        self.send(format!("PING {n}\n").as_bytes())?;
        let want = format!("PONG {n}");
        loop {
            if let Some(line) = self.line(Some(deadline))?
                && line == want.as_bytes()
            {
                return Ok(());
            }
        }
    }

    /// Runs `req` and reads its reply; `deadline` bounds the whole exchange
    /// (none: as long as qemu runs).
    pub fn run(
        &mut self,
        req: &Request<'_>,
        sync_deadline: Instant,
        deadline: Option<Instant>,
    ) -> Result<Reply, AgentError> {
        self.sync(sync_deadline)?;
        let n = nonce();
        let request = encode(&n, req).map_err(AgentError::Invalid)?;
        self.send(&request)?;
        let line = self
            .line(deadline)?
            .ok_or_else(|| AgentError::Protocol("an overlong header line".into()))?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let words: Vec<&str> = text.split(' ').collect();
        let shown = || text.chars().take(80).collect::<String>();
        if words.get(1) != Some(&n.as_str()) {
            return Err(AgentError::Protocol(format!(
                "`{}` answers another request",
                shown()
            )));
        }
        let number = |w: &str| -> Result<u64, AgentError> {
            w.parse()
                .map_err(|_| AgentError::Protocol(format!("`{}`: `{w}` is no number", shown())))
        };
        match words[..] {
            ["NOCMD", _] => Ok(Reply::NoCommand),
            ["RES", _, status, out, err] => {
                let status = i32::try_from(number(status)?)
                    .map_err(|_| AgentError::Protocol(format!("status `{status}`")))?;
                let (out, err) = (number(out)?, number(err)?);
                if out > MAX_OUTPUT || err > MAX_OUTPUT {
                    return Err(AgentError::Protocol(format!(
                        "{} bytes of output are more than the {MAX_OUTPUT} strata takes",
                        out.max(err)
                    )));
                }
                Ok(Reply::Ran {
                    status,
                    stdout: self.exactly(out as usize, deadline)?,
                    stderr: self.exactly(err as usize, deadline)?,
                })
            }
            _ => Err(AgentError::Protocol(format!(
                "`{}` is no answer to RUN",
                shown()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_a_line_then_nul_terminated_strings_then_stdin() {
        let argv = ["sh".to_owned(), String::new(), "a\nb".to_owned()];
        let env = [("A".to_owned(), "1 2".to_owned())];
        let req = Request {
            argv: &argv,
            env: &env,
            cwd: "/",
            uid: 4242,
            stdin: b"in",
            timeout: Some(Duration::from_millis(1500)),
        };
        assert_eq!(
            encode("n1", &req).unwrap(),
            b"RUN n1 1500 4242 1 3 2\n/\0A=1 2\0sh\0\0a\nb\0in"
        );
        let nul = ["a\0b".to_owned()];
        let err = encode("n1", &Request { argv: &nul, ..req }).unwrap_err();
        assert!(err.contains("NUL"), "{err}");
    }

    #[test]
    fn the_image_gets_the_agent_and_its_unit_enabled() {
        let o = customize_options();
        assert_eq!(o["files"][0]["path"], AGENT_PATH);
        assert_eq!(o["files"][0]["mode"], 0o755);
        assert_eq!(o["enable_units"][0], UNIT_NAME);
        assert!(AGENT_UNIT.contains(&format!("ExecStart={AGENT_PATH}")));
        assert!(AGENT_SCRIPT.contains(&format!("NAME={PORT_NAME}")));
    }
}
