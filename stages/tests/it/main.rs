//! Each built-in stage, run for real as a program the way the engine runs
//! it, but outside a sandbox: `STRATA_ARGS` points at an arguments file whose
//! tree, inputs and meta paths are in a temporary folder.

mod copy;
mod customize;
mod images;
mod mkdir;
mod tar;
mod tarball_to_incus;
mod untar;
mod write;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

/// One stage run's folder: `tree/`, `inputs/NAME/`, `meta.json`, `args.json`.
struct Stage {
    _dir: tempfile::TempDir,
    root: PathBuf,
    inputs: Vec<String>,
    /// Each input's `data`, as the engine passes it; `{}` when not set.
    data: std::collections::BTreeMap<String, Value>,
    epoch: Option<u64>,
    /// Where the stage finds its tools; the sandbox's PATH unless a test fakes one.
    path: String,
}

impl Stage {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::create_dir_all(root.join("tree")).unwrap();
        std::fs::create_dir_all(root.join("inputs")).unwrap();
        Self {
            _dir: dir,
            root,
            inputs: vec![],
            data: Default::default(),
            epoch: None,
            path: "/usr/sbin:/usr/bin:/sbin:/bin".into(),
        }
    }

    fn tree(&self) -> PathBuf {
        self.root.join("tree")
    }

    /// Declares input `name` and returns its (empty) folder.
    fn input(&mut self, name: &str) -> PathBuf {
        let path = self.root.join("inputs").join(name);
        std::fs::create_dir_all(&path).unwrap();
        self.inputs.push(name.to_owned());
        path
    }

    /// The folder of input `name`, declared before.
    fn root_input(&self, name: &str) -> PathBuf {
        self.root.join("inputs").join(name)
    }

    fn meta(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.root.join("meta.json")).unwrap()).unwrap()
    }

    /// Runs `exe` with `options`, in the sandbox's cleared environment.
    fn run(&self, exe: &str, options: Value) -> Output {
        self.run_argv(&[exe], options)
    }

    /// [`Stage::run`] of a command line: the stage behind a wrapper.
    fn run_argv(&self, argv: &[&str], options: Value) -> Output {
        let tree = self.tree();
        let inputs: serde_json::Map<String, Value> = self
            .inputs
            .iter()
            .map(|n| {
                let path = self.root.join("inputs").join(n);
                let data = self.data.get(n).cloned().unwrap_or_else(|| json!({}));
                (n.clone(), json!({"path": path, "data": data}))
            })
            .collect();
        let args = json!({
            "tree": tree,
            "options": options,
            "inputs": inputs,
            "paths": {
                "tree": tree,
                "inputs": self.root.join("inputs"),
                "meta": self.root.join("meta.json"),
            },
            "meta": {"id": "00", "source-epoch": self.epoch, "pipeline": "test", "stage": "test"},
        });
        let args_path = self.root.join("args.json");
        std::fs::write(&args_path, serde_json::to_vec(&args).unwrap()).unwrap();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        cmd.env_clear()
            .env("PATH", &self.path)
            .env("STRATA_ARGS", &args_path);
        if let Some(epoch) = self.epoch {
            cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
        cmd.output().unwrap()
    }
}

#[track_caller]
fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stage failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The stage's `error: ...` line, after checking it failed with exit code 1.
#[track_caller]
fn error(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: "), "stderr: {stderr}");
    last
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}
