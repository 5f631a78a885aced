//! The command channel into a qemu guest: a small POSIX shell agent on a
//! virtio-serial port, and strata's end of it on the port's unix socket.
//!
//! ```text
//!  host (strata)                         INSTANCE/agent.sock ══ virtserialport org.strata.agent ══ guest
//!  connect ─▶ PING <nonce>\n ──────────────────────────────────────────────▶ strata-agent (systemd unit)
//!          ◀─ … whatever an earlier, abandoned session still had in flight
//!          ◀─ PONG <nonce>\n                       (everything before it is skipped)
//!  RUN <nonce> <timeout ms> <uid> <cwd> <n> <env>… <n> <argv>… <stdin length>\n <stdin bytes>
//!          ◀─ OUT <nonce> <length>\n <stdout bytes>
//!          ◀─ ERR <nonce> <length>\n <stderr bytes>
//!          ◀─ END <nonce> <status>\n          or  NOCMD <nonce>\n (argv[0] is not a command)
//! ```
//!
//! Every string in a request is `.` + base64, so that an empty one is a word
//! too and no byte of it means anything to the shell. Everything else in the
//! channel (push, pull, user creation, poweroff) is a RUN of a shell
//! command with stdin, as the incus backend does it over `incus exec`.
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

/// The agent: POSIX sh and coreutils (base64, head, stat, timeout, env)
/// and util-linux's setpriv, all in every Debian system.
pub const AGENT_SCRIPT: &str = r#"#!/bin/sh
# strata-agent: runs what strata's qemu backend asks, on the virtio-serial
# port org.strata.agent. The protocol is drawn in strata's
# engine/src/backend/qemu/agent.rs.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
NAME=org.strata.agent

# By sysfs, not /dev/virtio-ports: that link is udev's, and udev may be late.
find_port() {
  for d in /sys/class/virtio-ports/*; do
    [ -r "$d/name" ] || continue
    if [ "$(cat "$d/name")" = "$NAME" ]; then
      echo "/dev/${d##*/}"
      return 0
    fi
  done
  return 1
}

modprobe virtio_console 2>/dev/null || :
i=0
until port=$(find_port) && [ -c "$port" ]; do
  i=$((i + 1))
  # Not booted by strata: nothing to serve, and nothing failed.
  [ "$i" -lt 600 ] || exit 0
  sleep 0.1
done

work=/var/lib/strata-agent
rm -rf "$work"
mkdir -p -m 0700 "$work"

# An argument as the host sends it: "." then base64.
dec() { v=$(printf '%s' "${1#.}" | base64 -d; echo .); v=${v%.}; }

send() { # KIND FILE
  printf '%s %s %s\n' "$1" "$nonce" "$(stat -c %s "$2")" >&3
  cat "$2" >&3
}

serve_run() { # nonce timeout-ms uid cwd n env… n argv… stdin-length
  nonce=$1 ms=$2 uid=$3
  dec "$4"; cwd=$v
  shift 4
  ne=$1; shift; i=0
  while [ "$i" -lt "$ne" ]; do i=$((i + 1)); dec "$1"; shift; eval "e_$i=\$v"; done
  na=$1; shift; i=0
  while [ "$i" -lt "$na" ]; do i=$((i + 1)); dec "$1"; shift; eval "a_$i=\$v"; done
  head -c "$1" <&3 >"$work/in"
  path=$PATH
  set --
  i=0
  while [ "$i" -lt "$ne" ]; do
    i=$((i + 1)); eval "e=\$e_$i"
    set -- "$@" "$e"
    case $e in PATH=*) path=${e#PATH=} ;; esac
  done
  if ! (PATH=$path; command -v -- "$a_1") >/dev/null 2>&1; then
    printf 'NOCMD %s\n' "$nonce" >&3
    rm -f "$work/in"
    return
  fi
  [ "$uid" = 0 ] || set -- "$@" setpriv --reuid="$uid" --regid="$uid" --init-groups --
  i=0
  while [ "$i" -lt "$na" ]; do i=$((i + 1)); eval "set -- \"\$@\" \"\$a_$i\""; done
  set -- env -i "$@"
  if [ "$ms" -gt 0 ]; then
    set -- timeout -s KILL "$((ms / 1000)).$(printf %03d $((ms % 1000)))" "$@"
  fi
  (cd -- "$cwd" && exec "$@") <"$work/in" >"$work/out" 2>"$work/err" 3>&-
  status=$?
  send OUT "$work/out"
  send ERR "$work/err"
  printf 'END %s %s\n' "$nonce" "$status" >&3
  rm -f "$work/in" "$work/out" "$work/err"
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
/// options: the agent, its unit, and the unit enabled.
pub fn customize_options() -> serde_json::Value {
    serde_json::json!({
        "files": [
            {"path": AGENT_PATH, "content": AGENT_SCRIPT, "mode": 0o755},
            {"path": UNIT_PATH, "content": AGENT_UNIT, "mode": 0o644},
        ],
        "enable_units": [UNIT_NAME],
    })
}

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

/// The request line and stdin of `req`, under `nonce`.
pub fn encode(nonce: &str, req: &Request<'_>) -> Vec<u8> {
    use base64::Engine;
    let word = |s: &[u8]| format!(".{}", base64::engine::general_purpose::STANDARD.encode(s));
    let mut line = format!(
        "RUN {nonce} {} {} {} {}",
        req.timeout.map_or(0, |t| t.as_millis().max(1)),
        req.uid,
        word(req.cwd.as_bytes()),
        req.env.len()
    );
    for (k, v) in req.env {
        line.push(' ');
        line.push_str(&word(format!("{k}={v}").as_bytes()));
    }
    line.push_str(&format!(" {}", req.argv.len()));
    for a in req.argv {
        line.push(' ');
        line.push_str(&word(a.as_bytes()));
    }
    line.push_str(&format!(" {}\n", req.stdin.len()));
    let mut out = line.into_bytes();
    out.extend_from_slice(req.stdin);
    out
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
        self.send(&encode(&n, req))?;
        let header = |s: &mut Session<'_>| -> Result<Vec<String>, AgentError> {
            let line = s
                .line(deadline)?
                .ok_or_else(|| AgentError::Protocol("an overlong header line".into()))?;
            let text = String::from_utf8_lossy(&line).into_owned();
            let words: Vec<String> = text.split(' ').map(str::to_owned).collect();
            if words.get(1) != Some(&n) {
                return Err(AgentError::Protocol(format!(
                    "`{}` answers another request",
                    text.chars().take(80).collect::<String>()
                )));
            }
            Ok(words)
        };
        let output = |s: &mut Session<'_>, kind: &str| -> Result<Vec<u8>, AgentError> {
            let words = header(s)?;
            if words.first().map(String::as_str) == Some("NOCMD") {
                return Err(AgentError::Protocol("NOCMD".into()));
            }
            let len: u64 = match (words.first().map(String::as_str), words.get(2)) {
                (Some(k), Some(len)) if k == kind && words.len() == 3 => len
                    .parse()
                    .map_err(|_| AgentError::Protocol(format!("bad {kind} length `{len}`")))?,
                _ => {
                    return Err(AgentError::Protocol(format!(
                        "expected {kind}, got `{}`",
                        words.join(" ").chars().take(80).collect::<String>()
                    )));
                }
            };
            if len > MAX_OUTPUT {
                return Err(AgentError::Protocol(format!(
                    "{kind} of {len} bytes is more than the {MAX_OUTPUT} strata takes"
                )));
            }
            s.exactly(len as usize, deadline)
        };
        let stdout = match output(self, "OUT") {
            Err(AgentError::Protocol(p)) if p == "NOCMD" => return Ok(Reply::NoCommand),
            other => other?,
        };
        let stderr = output(self, "ERR")?;
        let end = header(self)?;
        match (end.first().map(String::as_str), end.get(2)) {
            (Some("END"), Some(status)) if end.len() == 3 => Ok(Reply::Ran {
                status: status
                    .parse()
                    .map_err(|_| AgentError::Protocol(format!("bad status `{status}`")))?,
                stdout,
                stderr,
            }),
            _ => Err(AgentError::Protocol(format!(
                "expected END, got `{}`",
                end.join(" ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_line_of_words_then_stdin() {
        let argv = ["sh".to_owned(), String::new()];
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
            String::from_utf8(encode("n1", &req)).unwrap(),
            "RUN n1 1500 4242 .Lw== 1 .QT0xIDI= 2 .c2g= . 2\nin"
        );
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
