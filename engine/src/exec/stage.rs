//! One stage made ready and run: its program, inputs, arguments and root
//! as a [`StageSpec`], handed to the pipeline's runner.

use super::{BuildError, Builder, StageCtx};
use crate::catalog::{Runner, StageDef, StageRoot};
use crate::manifest::{InputType, Origin};
use crate::monitor::Event;
use crate::sandbox::process::{self, Outcome};
use crate::sandbox::runner::{StageLog, StageRunner};
use crate::sandbox::{self, HostLayout, HostView, Limits, Mount, Overlay, Root, StageSpec};
use crate::store::StoreError;
use crate::store::copy::{copy_tree, copy_tree_mapped};
use crate::store::untrusted;
use fs_err as fs;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_protocol as protocol;

impl Builder<'_> {
    /// Runs stage `st` over `tree` with `runner`, keeping its output in
    /// `log`; returns its metadata and wall time.
    pub(super) fn run_stage(
        &self,
        st: StageCtx<'_>,
        runner: &dyn StageRunner,
        tree: &Path,
        log: &Path,
    ) -> Result<(Value, Duration), BuildError> {
        let stage = st.stage;
        let def = self
            .catalog
            .stage(&stage.ty)
            .map_err(|e| BuildError::Usage(e.to_string()))?;
        // The TempDir removes the run dir (args, inputs, runner, overlay
        // layers) on every path.
        let run = self.store().work_dir("stage")?;
        let bound = run.path().join("run");
        fs::create_dir(&bound).map_err(StoreError::from)?;
        if runner.sees_our_mounts() {
            // The stage (root of its namespace) writes meta.json here.
            sandbox::userns::chown_for_tree(&bound, 0, 0).map_err(StoreError::from)?;
        }
        // bwrap would make these mount points' folders 0700 and the host's:
        // closed to the stage's namespace.
        for dir in ["host", "inputs"] {
            fs::create_dir(bound.join(dir)).map_err(StoreError::from)?;
            fs::set_permissions(bound.join(dir), std::fs::Permissions::from_mode(0o755))
                .map_err(StoreError::from)?;
        }

        let (mut mounts, argv) = self.stage_program(st, &def, run.path())?;
        mounts.insert(0, Mount::Bind(bound.clone(), protocol::RUN_DIR.into()));
        let chroot = def.needs.root == StageRoot::Tree;
        let tree_inside = if chroot {
            protocol::CHROOT_TREE
        } else {
            protocol::TREE_PATH
        };
        if !chroot {
            mounts.push(Mount::Bind(tree.to_path_buf(), protocol::TREE_PATH.into()));
        }
        let (input_mounts, inputs) = self.prepare_inputs(st, runner, run.path())?;
        mounts.extend(input_mounts);
        let args = protocol::Arguments {
            tree: tree_inside.into(),
            options: stage.options.clone(),
            inputs,
            paths: protocol::Paths::for_tree(tree_inside),
            meta: protocol::Meta {
                id: st.id.to_string(),
                source_epoch: st.pipeline.source_epoch,
                pipeline: st.pipeline.name.clone(),
                stage: stage.ty.clone(),
            },
        };
        let args_path = run.path().join("args.json");
        fs::write(&args_path, serde_json::to_vec_pretty(&args).expect("json"))
            .map_err(StoreError::from)?;
        mounts.push(Mount::RoBind(args_path, protocol::ARGS_PATH.into()));

        // Kept until the stage ends: the folder its secrets are bound from.
        let (secret_mounts, secrets_dir) = self.stage_secrets(st, runner, &bound)?;
        let has_secrets = secrets_dir.is_some();
        mounts.extend(secret_mounts);
        let redact = |text: &str| {
            if has_secrets {
                self.opts.secrets.redact(text)
            } else {
                text.to_owned()
            }
        };

        let network = def.needs.network(&stage.options);
        let spec = StageSpec {
            root: self.stage_root(st, def.needs.root, tree, run.path())?,
            mounts,
            network,
            loopback_ports: sandbox::net::loopback_ports_in(&stage.options),
            env: sandbox::environment(&stage.ty, st.pipeline.source_epoch, network),
            argv,
            limits: Limits {
                timeout: self.opts.stage_timeout,
            },
        };
        if self.breaks.contains(&(st.pi, st.si)) {
            let shell = self.break_shell(st, runner, &spec, tree_inside)?;
            if !shell.success() {
                return Err(st.failure(
                    format!(
                        "stopped at --break: the shell ended with {}",
                        shell.describe()
                    ),
                    vec![],
                ));
            }
        }
        let stage_ref = st.stage_ref();
        let on_line = |line: &[u8]| {
            if self.monitor.wants_logs() {
                self.monitor.emit(Event::Log {
                    stage: stage_ref.clone(),
                    line: redact(&String::from_utf8_lossy(line)),
                });
            }
        };
        let started = Instant::now();
        let outcome = runner
            .run(
                &spec,
                &StageLog {
                    path: log,
                    on_line: &on_line,
                },
            )
            .map_err(|e| st.failure(e.to_string(), process::tail(log, 20)))?;
        let duration = started.elapsed();
        if has_secrets {
            // The log is stored with the object: whatever the stage's tools
            // printed of a secret goes before it is.
            let text = fs::read(log).map_err(StoreError::from)?;
            fs::write(log, redact(&String::from_utf8_lossy(&text))).map_err(StoreError::from)?;
        }
        if matches!(outcome, Outcome::Interrupted) {
            return Err(BuildError::Interrupted);
        }
        if !outcome.success() {
            let mut error = st.failure(outcome.describe(), process::tail(log, 20));
            if self.opts.keep_failed
                && let BuildError::Stage(failure) = &mut error
            {
                failure.kept = Some(self.keep_failed(st, tree, run.path(), log, &spec.mounts)?);
            }
            return Err(error);
        }
        // META_PATH, seen from the host: the bound run dir, where the stage
        // may have left a link to a host file, a FIFO or a huge file.
        let meta = match untrusted::read_capped(&bound, "meta.json", untrusted::READ_CAP) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
                st.failure(
                    format!("it wrote {} that is not JSON: {e}", protocol::META_PATH),
                    vec![],
                )
            })?,
            Ok(None) => Value::Null,
            Err(e) => {
                return Err(st.failure(
                    format!("its {} was not read: {e}", protocol::META_PATH),
                    vec![],
                ));
            }
        };
        Ok((meta, duration))
    }

    /// The runner and the stage program, bound into the sandbox, and the
    /// command that starts them: built-in (ELF) stages behind the host's
    /// dynamic loader, so they run in any build root.
    fn stage_program(
        &self,
        st: StageCtx<'_>,
        def: &StageDef,
        run: &Path,
    ) -> Result<(Vec<Mount>, Vec<OsString>), BuildError> {
        let runner = self
            .catalog
            .runner(st.pipeline.runner_name())
            .map_err(|e| BuildError::Usage(e.to_string()))?;
        let runner_path = match runner {
            Runner::File(path) => path,
            Runner::Builtin(text) => {
                let path = run.join("runner");
                fs::write(&path, text).map_err(StoreError::from)?;
                fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(StoreError::from)?;
                path
            }
        };
        let mut mounts = vec![
            Mount::RoBind(runner_path, protocol::RUNNER_PATH.into()),
            Mount::RoBind(def.exe.clone(), protocol::STAGE_PATH.into()),
        ];
        let mut argv: Vec<OsString> = vec![protocol::RUNNER_PATH.into()];
        if let Some(interp) = sandbox::elf_interpreter(&def.exe) {
            mounts.push(Mount::RoBind(interp, protocol::HOST_LOADER_PATH.into()));
            mounts.push(Mount::RoBind(
                sandbox::host_libdir(),
                protocol::HOST_LIB_DIR.into(),
            ));
            argv.extend(
                [
                    protocol::HOST_LOADER_PATH,
                    "--library-path",
                    protocol::HOST_LIB_DIR,
                ]
                .map(OsString::from),
            );
        }
        argv.push(protocol::STAGE_PATH.into());
        Ok((mounts, argv))
    }

    /// Each input of stage `st` made ready under `run`, as read-only mounts
    /// at /run/strata/inputs/NAME, and its entry in the arguments document.
    fn prepare_inputs(
        &self,
        st: StageCtx<'_>,
        runner: &dyn StageRunner,
        run: &Path,
    ) -> Result<(Vec<Mount>, BTreeMap<String, protocol::Input>), BuildError> {
        let mut mounts = Vec::new();
        let mut inputs = BTreeMap::new();
        for (name, input) in &st.stage.inputs {
            let inside = protocol::input_path(name);
            let prepared = match (input.ty, input.origin) {
                (InputType::Tree, Origin::Pipeline) => {
                    let dep = input.references[0].pipeline().expect("checked at load");
                    let di = self.m.index(dep);
                    let id = self.plan.pipeline_id(di).map(|id| id.as_str());
                    let mut tree = self.tree_of(di)?;
                    if !runner.sees_our_mounts() {
                        // The runner cannot see our mounts: a plain copy, gone
                        // with `run`, with in-tree owners (it shifts them itself).
                        let copy = run.join("trees").join(name);
                        fs::create_dir_all(run.join("trees")).map_err(StoreError::from)?;
                        copy_tree_mapped(&tree, &copy, &sandbox::userns::host_to_tree)
                            .map_err(StoreError::from)?;
                        tree = copy;
                    }
                    strata_inputs::prepare_tree(name, &tree, id)
                }
                _ => {
                    let sources = self.store().sources();
                    let files: Vec<(String, PathBuf)> = input
                        .references
                        .iter()
                        .map(|r| {
                            let item = &self.m.sources[&r.id];
                            (r.id.clone(), sources.path(item.ty, &item.checksum))
                        })
                        .collect();
                    fs::create_dir_all(run.join("inputs")).map_err(StoreError::from)?;
                    let dir = run.join("inputs").join(name);
                    let prepared = strata_inputs::prepare_files(name, &dir, &files)
                        .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
                    // Source items belong to in-tree root, as the stage sees
                    // them (they are links to the store's own copies, which
                    // nobody else reaches).
                    if runner.sees_our_mounts() {
                        for entry in fs::read_dir(&dir).map_err(StoreError::from)? {
                            let path = entry.map_err(StoreError::from)?.path();
                            sandbox::userns::chown_for_tree(&path, 0, 0)
                                .map_err(StoreError::from)?;
                        }
                    }
                    prepared
                }
            };
            mounts.push(Mount::RoBind(prepared.host_path.clone(), inside.clone()));
            inputs.insert(
                name.clone(),
                protocol::Input {
                    path: inside.into(),
                    data: prepared.data,
                },
            );
        }
        Ok((mounts, inputs))
    }

    /// The host's root for a stage without a build pipeline: the layout,
    /// mounted once for the whole build on the first such stage (host.rs).
    fn host_root(&self) -> Result<HostLayout, BuildError> {
        let mut view = self.host_view.lock().expect("host view lock");
        let view = match view.as_ref() {
            Some(view) => view,
            None => {
                let dir = self.store().work_dir("host")?;
                view.insert(HostView::mount(dir, &self.host).map_err(StoreError::from)?)
            }
        };
        Ok(HostLayout {
            view: Some(view.path().to_path_buf()),
            ..self.host.clone()
        })
    }

    /// What the stage's `/` is.
    fn stage_root(
        &self,
        st: StageCtx<'_>,
        needs: StageRoot,
        tree: &Path,
        run: &Path,
    ) -> Result<Root, BuildError> {
        let env = match st.pipeline.build_name() {
            Some(build) => Some(self.tree_of(self.m.index(build))?),
            None => None,
        };
        Ok(match (needs, env) {
            (StageRoot::Tree, _) => Root::TreeRw(tree.to_path_buf()),
            (StageRoot::BuildCopy, Some(env)) => {
                // The environment may be changed (build-dependencies
                // installed) but never the stored one: an overlay whose
                // upper layer lives in `run` and goes with it.
                let layers = run.join("layers");
                for dir in ["upper", "work", "root"] {
                    fs::create_dir_all(layers.join(dir)).map_err(StoreError::from)?;
                }
                // The merged root shows the upper dir's owner and mode:
                // the environment's, as the stage's namespace sees it.
                let top = fs::metadata(&env).map_err(StoreError::from)?;
                let upper = layers.join("upper");
                std::os::unix::fs::lchown(&upper, Some(top.uid()), Some(top.gid()))
                    .map_err(StoreError::from)?;
                fs::set_permissions(&upper, std::fs::Permissions::from_mode(top.mode() & 0o7777))
                    .map_err(StoreError::from)?;
                Root::Copy(Overlay {
                    lower: env,
                    upper: layers.join("upper"),
                    work: layers.join("work"),
                    merged: layers.join("root"),
                })
            }
            (StageRoot::BuildCopy, None) => {
                return Err(BuildError::Usage(format!(
                    "stage {} ({}) of pipeline `{}` needs a build pipeline: its environment",
                    st.si, st.stage.ty, st.pipeline.name
                )));
            }
            (StageRoot::Build, Some(env)) => Root::Tree(env),
            (StageRoot::Build, None) => Root::Host(self.host_root()?),
        })
    }

    /// `--break`: an interactive shell in the stage's sandbox (same root,
    /// mounts, arguments and inputs), on the terminal, before the stage
    /// runs. Exit 0 lets the stage run; anything else stops the build.
    fn break_shell(
        &self,
        st: StageCtx<'_>,
        runner: &dyn StageRunner,
        spec: &StageSpec,
        tree_inside: &str,
    ) -> Result<Outcome, BuildError> {
        let (name, si, ty) = (&st.pipeline.name, st.si, &st.stage.ty);
        let tty = self.tty.as_ref().expect("opened when --break was resolved");
        let mut shell = spec.clone();
        shell.argv = vec!["/bin/sh".into(), "-i".into()];
        shell.limits = Limits::default();
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        shell.env.push(("TERM".into(), term));
        shell
            .env
            .push(("PS1".into(), format!("strata {name}/{ty}# ")));
        let mut banner = tty;
        let _ = writeln!(
            banner,
            "strata: --break: a shell in the sandbox of stage {si} ({ty}) of pipeline `{name}`, before it runs.\n  \
             its tree is {tree_inside}, its inputs are under /run/strata/inputs, its arguments in /run/strata/args.json\n  \
             `exit` runs the stage; `exit 1` stops the build"
        );
        runner
            .shell(&shell, tty)
            .map_err(|e| st.failure(e.to_string(), vec![]))
    }

    /// The secrets stage `st`'s options name (`"secrets": {"name": N}`,
    /// anywhere in them), each a 0400 file in a private folder outside the
    /// store, bound read-only at /run/strata/secrets/N; the folder goes
    /// when the returned guard is dropped. No secret is in the stage's
    /// options, arguments, id or tree.
    fn stage_secrets(
        &self,
        st: StageCtx<'_>,
        runner: &dyn StageRunner,
        bound: &Path,
    ) -> Result<(Vec<Mount>, Option<tempfile::TempDir>), BuildError> {
        let mut names = BTreeSet::new();
        secret_names(&st.stage.options, &mut names);
        if names.is_empty() {
            return Ok((Vec::new(), None));
        }
        if !runner.sees_our_mounts() {
            return Err(st.failure(
                "it names secrets, which strata passes only to stages in its own sandbox (not to incus)"
                    .into(),
                vec![],
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("strata-secrets-")
            .tempdir()
            .map_err(StoreError::from)?;
        let inside = bound.join("secrets");
        fs::create_dir(&inside).map_err(StoreError::from)?;
        fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o755))
            .map_err(StoreError::from)?;
        let mut mounts = Vec::new();
        for name in names {
            let secret = self.opts.secrets.get(&name).ok_or_else(|| {
                st.failure(
                    format!(
                        "it needs the secret {name:?}, which no --secrets file gave\n  hint: pass --secrets FILE holding {{\"{name}\": \"user:password\"}}"
                    ),
                    vec![],
                )
            })?;
            let file = dir.path().join(&name);
            fs::write(&file, secret.expose()).map_err(StoreError::from)?;
            fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400))
                .map_err(StoreError::from)?;
            sandbox::userns::chown_for_tree(&file, 0, 0).map_err(StoreError::from)?;
            mounts.push(Mount::RoBind(
                file,
                format!("{}/{name}", protocol::SECRETS_DIR),
            ));
        }
        Ok((mounts, Some(dir)))
    }

    /// `--keep-failed`: copies the failed stage's tree to
    /// STORE/failed/<id>-<pid>/tree and copies beside it its inputs, its
    /// arguments and its log, for inspection; `strata store gc` removes it.
    fn keep_failed(
        &self,
        st: StageCtx<'_>,
        tree: &Path,
        run: &Path,
        log: &Path,
        mounts: &[Mount],
    ) -> Result<PathBuf, BuildError> {
        let dir = self.store().failed_dir(st.id)?;
        // The tree is the merged view of this pipeline's workspace, which
        // goes when the build ends: copy what the stage saw and left.
        copy_tree(tree, &dir.join("tree")).map_err(StoreError::from)?;
        for mount in mounts {
            if let Mount::RoBind(host, inside) = mount
                && let Some(name) = inside
                    .strip_prefix(protocol::INPUTS_DIR)
                    .and_then(|rest| rest.strip_prefix('/'))
            {
                fs::create_dir_all(dir.join("inputs")).map_err(StoreError::from)?;
                copy_tree(host, &dir.join("inputs").join(name)).map_err(StoreError::from)?;
            }
        }
        // Kept as the stage got them, but for credentials written into a URL.
        let mut args: Value =
            serde_json::from_slice(&fs::read(run.join("args.json")).map_err(StoreError::from)?)
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        args["options"] = strata_sources::redact_urls(&args["options"]);
        fs::write(
            dir.join("args.json"),
            serde_json::to_vec_pretty(&args).expect("json"),
        )
        .map_err(StoreError::from)?;
        if log.exists() {
            fs::copy(log, dir.join("log")).map_err(StoreError::from)?;
        }
        Ok(dir)
    }
}

/// The names of every `"secrets": {"name": N}` in `options`.
fn secret_names(options: &Value, out: &mut BTreeSet<String>) {
    match options {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.get("name").and_then(Value::as_str)) {
                    ("secrets", Some(name)) => {
                        out.insert(name.to_owned());
                    }
                    _ => secret_names(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| secret_names(v, out)),
        _ => {}
    }
}
