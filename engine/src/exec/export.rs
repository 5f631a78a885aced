//! `--export`: final trees copied out, whole or absent.

use super::{BuildError, Builder};
use crate::monitor::Event;
use crate::store::copy::copy_tree_mapped;
use fs_err as fs;

impl Builder<'_> {
    /// Refuses exports of unknown pipelines, or without an output folder,
    /// or onto something that exists.
    pub(super) fn check_exports(&self) -> Result<(), BuildError> {
        if self.opts.exports.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.m.pipelines.iter().map(|p| p.name.as_str()).collect();
        for name in &self.opts.exports {
            if !names.contains(&name.as_str()) {
                return Err(BuildError::Usage(format!(
                    "--export `{name}`: no such pipeline\n    hint: pipelines: {}",
                    names.join(", ")
                )));
            }
        }
        let Some(out) = &self.opts.output_directory else {
            return Err(BuildError::Usage(
                "--export needs --output-directory DIR".into(),
            ));
        };
        for name in &self.opts.exports {
            let dest = out.join(name);
            if dest.symlink_metadata().is_ok() && !self.opts.replace_exports {
                return Err(BuildError::Usage(format!(
                    "--export `{name}`: {} exists already\n    hint: give --force to replace it, remove it, or choose another --output-directory",
                    dest.display()
                )));
            }
        }
        Ok(())
    }

    /// Copies each exported pipeline's final tree to OUTPUT/NAME.
    pub(super) fn export(&self) -> Result<(), BuildError> {
        let Some(out) = self.opts.output_directory.clone() else {
            return Ok(());
        };
        for name in &self.opts.exports {
            let pi = self.m.index(name);
            let dest = out.join(name);
            let fail = |detail: String| BuildError::Export {
                name: name.clone(),
                path: dest.clone(),
                detail,
            };
            fs::create_dir_all(&out).map_err(|e| fail(e.to_string()))?;
            // Copy beside the destination, then rename: an export is whole or
            // absent. The copy goes into a folder made new here (a fresh name,
            // mkdir: never one someone left, nor a link to elsewhere), which
            // takes whatever is left with it on every path.
            let holder = tempfile::Builder::new()
                .prefix(&format!(".{name}.strata-"))
                .tempdir_in(&out)
                .map_err(|e| fail(e.to_string()))?;
            let staging = holder.path().join(name);
            let src = self.tree_of(pi)?;
            // Stored owners are the stages' namespace's; as root, the export
            // carries the in-tree owners (userns.rs).
            copy_tree_mapped(&src, &staging, &crate::sandbox::userns::host_to_tree)
                .and_then(|()| {
                    super::replace::put_in_place(&staging, &dest, self.opts.replace_exports)
                })
                .map_err(|e| fail(e.to_string()))?;
            self.monitor.emit(Event::Export {
                pipeline: name.clone(),
                path: dest.display().to_string(),
            });
            self.report
                .lock()
                .expect("report lock")
                .exports
                .push((name.clone(), dest));
        }
        Ok(())
    }
}
