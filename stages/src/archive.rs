//! Reproducible tarballs: GNU tar from the build root, set so that only the
//! tree decides the bytes, through a compressor with fixed settings.
//!
//! ```text
//!   pack:     tar_command(DIR) ──pipe──> compressor ──> FILE
//!
//!   Sink:     tar_command(DIR) ──pipe──> splice ─┐
//!             tar::Builder (members of our own) ─┴──pipe──> compressor ──> FILE
//! ```
//!
//! GNU tar does the packing of trees: it alone knows every corner (ACLs,
//! xattrs, device nodes, sparse files) the way the tools that unpack the
//! archive will expect. When a stage adds members of its own to a tree it
//! may not write into (a read-only input), [`splice`] copies tar's archive
//! without its end-of-archive marker into a [`Sink`], so that members
//! written with the `tar` crate follow in the same archive.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;

use serde::Deserialize;

use crate::{Error, Failure, program};

/// How an archive is compressed; the same settings always, so that the
/// output depends only on the input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
        }
    }

    /// What follows `.tar` in a file name: `""`, `".gz"`, `".xz"`, `".zst"`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Gzip => ".gz",
            Self::Xz => ".xz",
            Self::Zstd => ".zst",
        }
    }

    /// Judged by a file's first bytes, not its name: inputs are named by
    /// their checksum.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Self::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The build root's decompressor, stdin to stdout.
    pub fn decompressor(self) -> Option<Command> {
        let name = match self {
            Self::None => return None,
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
        };
        let mut cmd = Command::new(name);
        cmd.arg("-dc");
        Some(cmd)
    }

    /// GNU tar's flag for the same decompressor.
    pub fn tar_flag(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("--gzip"),
            Self::Xz => Some("--xz"),
            Self::Zstd => Some("--zstd"),
        }
    }

    /// The compressor, stdin to stdout. Each setting is fixed so the output
    /// depends only on the input: gzip -n leaves out name and time, and one
    /// thread keeps xz and zstd from splitting blocks by the machine's cores.
    pub fn command(self) -> Option<Command> {
        let argv: &[&str] = match self {
            Self::None => return None,
            Self::Gzip => &["gzip", "-n", "-6", "-c"],
            Self::Xz => &["xz", "-T1", "-6", "-c"],
            Self::Zstd => &["zstd", "-q", "-T1", "-3", "-c"],
        };
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        Some(cmd)
    }
}

/// GNU tar creating an archive of `dir` on stdout, set so that only the
/// tree decides the bytes: names sorted, numeric owners, pax headers
/// without atime, ctime or the process id, and times clamped to the
/// source-epoch when the pipeline has one. The caller adds the members
/// (`"."`), after any options of its own: some of tar's are positional.
pub fn tar_command(dir: &Path, epoch: Option<u64>) -> Command {
    let mut directory = OsString::from("--directory=");
    directory.push(dir);
    let mut tar = Command::new("tar");
    tar.args(["--create", "--file=-"]).arg(directory).args([
        "--sort=name",
        "--numeric-owner",
        "--format=pax",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
    ]);
    if let Some(epoch) = epoch {
        tar.arg(format!("--mtime=@{epoch}")).arg("--clamp-mtime");
    }
    // Same messages everywhere, and name sorting that no locale can reorder.
    tar.env("LC_ALL", "C");
    tar
}

/// Runs `tar` (writing an archive to stdout), through the compressor if
/// any, into `out`.
pub fn pack(mut tar: Command, compression: Compression, out: &File) -> Result<(), Error> {
    let tar_name = program(&tar);
    let keep = || {
        out.try_clone().map_err(|source| Error::Io {
            what: "cannot duplicate the descriptor of",
            path: "the archive".into(),
            source,
        })
    };
    tar.stdin(Stdio::null()).stderr(Stdio::piped());

    let Some(mut compressor) = compression.command() else {
        let done = tar
            .stdout(keep()?)
            .output()
            .map_err(|e| Failure::spawn(&tar_name, e))?;
        return Ok(Failure::check(&tar_name, done.status, &done.stderr)?);
    };

    let comp_name = program(&compressor);
    let mut tar = tar
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::spawn(&tar_name, e))?;
    let pipe = tar.stdout.take().expect("stdout is piped");
    let spawned = compressor
        .stdin(pipe)
        .stdout(keep()?)
        .stderr(Stdio::piped())
        .spawn();
    // The Command keeps our copy of the pipe's read end until dropped; tar
    // must see the compressor's end alone, or it would block forever on a
    // compressor that died instead of failing with SIGPIPE.
    drop(compressor);
    let compressor = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = tar.kill();
            let _ = tar.wait();
            return Err(Failure::spawn(&comp_name, e).into());
        }
    };

    // Both stderr pipes drain at once: either tool would stall on a full one.
    let (tar_done, comp_done) = std::thread::scope(|s| {
        let tar_done = s.spawn(|| tar.wait_with_output());
        let comp_done = compressor.wait_with_output();
        (
            tar_done.join().expect("the waiting thread does not panic"),
            comp_done,
        )
    });
    let tar_done = tar_done.map_err(|e| Failure::wait(&tar_name, e))?;
    let comp_done = comp_done.map_err(|e| Failure::wait(&comp_name, e))?;
    // A dead compressor kills tar with SIGPIPE; its own error is the cause.
    Failure::check(&comp_name, comp_done.status, &comp_done.stderr)?;
    Failure::check(&tar_name, tar_done.status, &tar_done.stderr)?;
    Ok(())
}

/// Where an archive's bytes go: the file itself, or a compressor that
/// writes it. [`Sink::finish`] says whether all of it arrived.
#[derive(Debug)]
pub struct Sink {
    to: To,
}

#[derive(Debug)]
enum To {
    File(std::io::BufWriter<File>),
    Compressor {
        name: String,
        child: Child,
        stdin: ChildStdin,
        stderr: JoinHandle<Vec<u8>>,
    },
}

impl Sink {
    /// Starts writing into `out`, through `compression`'s compressor.
    pub fn new(compression: Compression, out: File) -> Result<Self, Failure> {
        let Some(mut cmd) = compression.command() else {
            return Ok(Self {
                to: To::File(std::io::BufWriter::with_capacity(1 << 16, out)),
            });
        };
        let name = program(&cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::spawn(&name, e))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        Ok(Self {
            to: To::Compressor {
                name,
                child,
                stdin,
                stderr,
            },
        })
    }

    /// Ends the stream and waits for the compressor: `Ok` only if every
    /// byte reached the file. After a failed write, this names the cause
    /// (a compressor that died) better than the write's broken pipe.
    pub fn finish(self) -> Result<(), Error> {
        match self.to {
            To::File(mut out) => out.flush().map_err(|source| Error::Io {
                what: "cannot write",
                path: "the archive".into(),
                source,
            }),
            To::Compressor {
                name,
                mut child,
                stdin,
                stderr,
            } => {
                drop(stdin);
                let status = child.wait().map_err(|e| Failure::wait(&name, e))?;
                let stderr = stderr.join().expect("the draining thread does not panic");
                Ok(Failure::check(&name, status, &stderr)?)
            }
        }
    }

    /// The error to report for `e`, a failed write: the compressor's own
    /// failure when it has one.
    pub fn fail(self, e: std::io::Error) -> Error {
        let write_error = |source| Error::Io {
            what: "cannot write",
            path: "the archive".into(),
            source,
        };
        match &self.to {
            To::File(_) => write_error(e),
            To::Compressor { .. } => match self.finish() {
                Err(cause) => cause,
                Ok(()) => write_error(e),
            },
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.to {
            To::File(out) => out.write(buf),
            To::Compressor { stdin, .. } => stdin.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.to {
            To::File(out) => out.flush(),
            To::Compressor { stdin, .. } => stdin.flush(),
        }
    }
}

/// Reads `pipe` to its end in a thread, so that a chatty tool never stalls
/// on a full pipe while we wait on another.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// A tar archive ends with two zero blocks; with a blocking factor of 1,
/// GNU tar writes exactly those and no padding after them.
const END_OF_ARCHIVE: usize = 2 * 512;

/// Runs `tar` (see [`tar_command`]) over `members` and copies its archive
/// into `sink` without the end-of-archive marker, so that the caller can
/// add members after it and end the archive itself.
pub fn splice(mut tar: Command, members: &[&str], sink: &mut impl Write) -> Result<(), Error> {
    let name = program(&tar);
    let mut child = tar
        .arg("--blocking-factor=1")
        .args(members)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::spawn(&name, e))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let stderr = drain(child.stderr.take().expect("stderr is piped"));

    let copied = hold_back_copy(&mut stdout, sink, END_OF_ARCHIVE);
    drop(stdout);
    if copied.is_err() {
        // The sink failed: tar may be blocked on its pipe; its archive is
        // of no use any more.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| Failure::wait(&name, e))?;
    let stderr = stderr.join().expect("the draining thread does not panic");
    let tail = copied?;
    Failure::check(&name, status, &stderr)?;
    if tail.len() != END_OF_ARCHIVE || tail.iter().any(|&b| b != 0) {
        return Err(Error::Io {
            what: "the archive does not end with the end-of-archive marker",
            path: name,
            source: std::io::Error::other(format!("last {} bytes are not zero", tail.len())),
        });
    }
    Ok(())
}

/// Copies `from` into `to` except its last `keep` bytes, which it returns.
fn hold_back_copy(
    from: &mut impl Read,
    to: &mut impl Write,
    keep: usize,
) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; 1 << 16];
    let mut pending: Vec<u8> = Vec::with_capacity(keep + buf.len());
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::Io {
                    what: "cannot read the archive from",
                    path: "tar".into(),
                    source,
                });
            }
        };
        pending.extend_from_slice(&buf[..n]);
        if pending.len() > keep {
            let ready = pending.len() - keep;
            to.write_all(&pending[..ready]).map_err(Error::Write)?;
            pending.drain(..ready);
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `n` bytes a call, to cross buffer edges.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn compression_is_told_by_magic_bytes() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::detect(b"\xfd7zXZ\x00"), Compression::Xz, "xz");
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"./etc"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
        assert_eq!(Compression::detect(b"\xfd7zX"), Compression::None);
    }

    #[test]
    fn the_tail_is_held_back_whatever_the_reads() {
        let mut data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect();
        data.extend([0u8; END_OF_ARCHIVE]);
        for step in [1, 511, 1024, 65_536, 1 << 20] {
            let mut out = Vec::new();
            let tail = hold_back_copy(&mut Trickle(&data, step), &mut out, END_OF_ARCHIVE).unwrap();
            assert_eq!(out, data[..200_000], "step {step}");
            assert_eq!(tail, [0u8; END_OF_ARCHIVE]);
        }
        let mut out = Vec::new();
        let tail = hold_back_copy(&mut Trickle(b"short", 2), &mut out, END_OF_ARCHIVE).unwrap();
        assert!(out.is_empty());
        assert_eq!(tail, b"short");
    }

    #[test]
    fn a_failing_sink_is_a_write_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let data = vec![1u8; 4096];
        let e = hold_back_copy(&mut Trickle(&data, 4096), &mut Broken, END_OF_ARCHIVE);
        assert!(matches!(e, Err(Error::Write(_))), "{e:?}");
    }
}
