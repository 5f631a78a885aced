//! What a packaged command line needs besides itself: a man page per
//! command (`strata(1)`, `strata-build(1)`, …, generated from the clap
//! definitions, so they cannot drift from `--help`), shell completions,
//! and the table of exit statuses both document.

use super::Cli;
use super::io::out_raw;
use clap::{Args, CommandFactory};
use std::path::{Path, PathBuf};

/// The exit statuses of every command, for `strata --help` (and the man
/// pages' EXIT STATUS section, from [`EXIT_CODES`]).
pub const EXIT_STATUS: &str = "\
Exit status:
  0    success
  1    failure: a stage failed, a source could not be downloaded (unreachable host, HTTP error), the store or an export failed, a task failed
  2    invalid input or usage: a bad manifest or task, an unknown stage, a checksum mismatch, a bad flag, no MANIFEST and stdin a terminal
  130  interrupted (Ctrl-C, SIGTERM)
  141  stdout was closed before strata finished writing it (as for SIGPIPE)";

/// [`EXIT_STATUS`] as (status, meaning) pairs.
pub const EXIT_CODES: &[(&str, &str)] = &[
    ("0", "success"),
    (
        "1",
        "failure: a stage failed, a source could not be downloaded (unreachable host, HTTP error), the store or an export failed, a task failed",
    ),
    (
        "2",
        "invalid input or usage: a bad manifest or task, an unknown stage, a checksum mismatch, a bad flag, no MANIFEST and stdin a terminal",
    ),
    ("130", "interrupted (Ctrl-C, SIGTERM)"),
    (
        "141",
        "stdout was closed before strata finished writing it (as for SIGPIPE)",
    ),
];

/// `strata completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `strata manpages` (hidden: for packaging).
#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Where the pages go (created if missing): strata.1, strata-build.1, …
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Prints the completion script for a shell.
pub fn completions(args: &CompletionsArgs) -> i32 {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "strata", &mut script);
    out_raw(&String::from_utf8_lossy(&script));
    0
}

/// Writes a page per visible command into the directory.
pub fn manpages(args: &ManpagesArgs) -> i32 {
    let mut cmd = Cli::command();
    // Gives every subcommand its display name (strata-store-log) and its
    // bin name (strata store log) for the synopsis.
    cmd.build();
    let written = fs_err::create_dir_all(&args.dir).and_then(|()| write_pages(&cmd, &args.dir));
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn write_pages(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .source(format!("strata {}", env!("CARGO_PKG_VERSION")))
        .manual("strata manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subs.is_empty() {
        man.render_subcommands_section(&mut page)?;
    }
    page.extend_from_slice(exit_status_section().as_bytes());
    page.extend_from_slice(see_also_section(cmd, &name).as_bytes());
    fs_err::write(dir.join(format!("{name}.1")), page)?;
    for sub in subs {
        write_pages(sub, dir)?;
    }
    Ok(())
}

fn exit_status_section() -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (status, meaning) in EXIT_CODES {
        roff.push_str(&format!(".TP\n\\fB{status}\\fR\n{}\n", escape(meaning)));
    }
    roff
}

/// The parent command's page (or, for strata(1), none beyond the subcommands).
fn see_also_section(cmd: &clap::Command, name: &str) -> String {
    let parent = name.rsplit_once('-').map(|(p, _)| p);
    let mut refs: Vec<String> = parent
        .map(|p| format!("\\fB{p}\\fR(1)"))
        .into_iter()
        .collect();
    if cmd.get_name() == "strata" {
        refs.extend(
            [
                "\\fBmmdebstrap\\fR(1)",
                "\\fBbwrap\\fR(1)",
                "\\fBincus\\fR(1)",
            ]
            .map(String::from),
        );
    }
    if refs.is_empty() {
        return String::new();
    }
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(", "))
}

/// Text for a roff line: backslashes doubled, hyphens as hyphens (not the
/// minus signs man would otherwise print), and no leading dot or quote.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\\\").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_and_the_man_pages_give_the_same_exit_codes() {
        let from_table: Vec<String> = EXIT_CODES
            .iter()
            .map(|(s, m)| format!("  {s:<4} {m}"))
            .collect();
        assert_eq!(EXIT_STATUS.lines().skip(1).collect::<Vec<_>>(), from_table);
    }

    #[test]
    fn every_visible_command_gets_a_page_naming_its_synopsis() {
        let dir = tempfile::tempdir().unwrap();
        let code = manpages(&ManpagesArgs {
            dir: dir.path().to_owned(),
        });
        assert_eq!(code, 0);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for page in [
            "strata.1",
            "strata-build.1",
            "strata-store-log.1",
            "strata-task-run.1",
            "strata-env.1",
            "strata-completions.1",
        ] {
            assert!(
                names.iter().any(|n| n == page),
                "{page} missing from {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.contains("manpages")), "{names:?}");
        let build = std::fs::read_to_string(dir.path().join("strata-build.1")).unwrap();
        assert!(build.contains(".TH STRATA-BUILD 1"), "{build}");
        assert!(build.contains("strata build"), "{build}");
        assert!(build.contains("\\-\\-export"), "{build}");
        assert!(build.contains(".SH \"EXIT STATUS\""), "{build}");
        assert!(build.contains("\\fBstrata\\fR(1)"), "{build}");
    }
}
