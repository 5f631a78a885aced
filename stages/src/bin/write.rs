//! `write`: writes files in the tree from text or base64 in the manifest.
//!
//! ```json
//! {"files": [{"path": "/etc/hostname", "content": "box\n", "mode": 420},
//!            {"path": "/etc/key", "base64": "AAEC"}]}
//! ```

use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;

use serde::Deserialize;
use strata_stage::{Args, Root};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    files: Vec<File>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    path: String,
    content: Option<String>,
    base64: Option<String>,
    #[serde(default = "default_mode")]
    mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

fn main() -> ExitCode {
    strata_stage::main(run)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options: Options = args.options()?;
    let tree = Root::tree(args)?;
    for (i, file) in options.files.iter().enumerate() {
        let bytes = match (&file.content, &file.base64) {
            (Some(text), None) => text.clone().into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .with_context(|| {
                    format!("options.files[{i}].base64 of {} is not base64", file.path)
                })?,
            _ => bail!(
                "options.files[{i}] ({}) needs exactly one of content and base64",
                file.path
            ),
        };
        if file.mode > 0o7777 {
            bail!("mode {:#o} of {} is not a file mode", file.mode, file.path);
        }
        tree.write_file(&file.path, &mut bytes.as_slice(), file.mode)?;
    }
    Ok(())
}
