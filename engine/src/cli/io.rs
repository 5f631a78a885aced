//! The command line's two ends: where a manifest or task document comes
//! from, and a stdout its reader may close early (`strata inspect … | head`).

use std::fmt::Display;
use std::io::{IsTerminal, Read, Write};

/// What `strata build` and `inspect` read: the MANIFEST argument, else
/// stdin (`-`), or exit code 2 (already explained) when it is missing and
/// stdin is a terminal.
pub fn manifest_source(arg: Option<&str>, command: &[&str]) -> Result<String, i32> {
    source(arg, command, "MANIFEST", "a manifest")
}

/// What `strata task compile|run` reads, as [`manifest_source`].
pub fn task_source(arg: Option<&str>, command: &[&str]) -> Result<String, i32> {
    source(arg, command, "TASK", "a task document")
}

fn source(arg: Option<&str>, command: &[&str], value: &str, what: &str) -> Result<String, i32> {
    match arg {
        Some(arg) => Ok(arg.to_owned()),
        // osbuild requires the manifest; reading a terminal would look like
        // a hang to someone who forgot it, so only an explicit `-` does.
        None if std::io::stdin().is_terminal() => {
            let line = command.join(" ");
            eprintln!(
                "error: no {value} given, and stdin is a terminal: strata will not wait for {what} typed there\n\n{}\n    hint: name the file, or give `-` to read {what} from stdin (`strata {line} - < FILE`)",
                usage(command).trim_end()
            );
            Err(2)
        }
        None => Ok("-".to_owned()),
    }
}

/// The text at `source` (`-`: stdin) and its name for messages, or exit
/// code 2 with the error said; `what` names it ("the manifest").
pub fn read_input(source: &str, what: &str) -> Result<(String, String), i32> {
    if source == "-" {
        let mut text = String::new();
        return match std::io::stdin().read_to_string(&mut text) {
            Ok(_) => Ok((text, "<stdin>".into())),
            Err(e) => Err(super::fail(&super::Usage(format!(
                "reading {what} from stdin: {e}"
            )))),
        };
    }
    match fs_err::read_to_string(source) {
        Ok(text) => Ok((text, source.to_owned())),
        Err(e) => Err(super::fail(&super::Usage(e.to_string()))),
    }
}

/// clap's usage line of the subcommand at `path` (`["task", "run"]`).
fn usage(path: &[&str]) -> String {
    let mut cmd = <super::Cli as clap::CommandFactory>::command();
    cmd.build();
    let mut sub = &mut cmd;
    for name in path {
        sub = sub
            .find_subcommand_mut(name)
            .expect("a subcommand strata defines");
    }
    sub.render_usage().to_string()
}

/// Prints `text` and a newline on stdout; see [`out_raw`].
pub fn out(text: impl Display) {
    out_raw(&format!("{text}\n"));
}

/// Prints `text` on stdout. When the reader has closed it (`| head`),
/// strata ends quietly with 141, the status of a process SIGPIPE ends, as
/// `cat` would: Rust ignores SIGPIPE, and `print!` would panic instead.
pub fn out_raw(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// The exit status when stdout's reader went away: 128 + SIGPIPE, what a
/// shell reports for a process SIGPIPE killed.
pub const BROKEN_PIPE: i32 = 141;
