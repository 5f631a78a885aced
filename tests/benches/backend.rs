//! `make bench`: execution environments. For unshare (bwrap over the
//! environment's tree) and incus-lxc (the incus CLI), medians over runs that
//! alternate between the two backends:
//!
//! - start to first command: `start` + `run true` (incus: a stopped instance
//!   booted until systemd is running, then the command);
//! - run round trip: `run true` in a started environment;
//! - launch to ready (incus): create an instance from the imported image,
//!   start it, wait for systemd, destroy it.
//!
//! Targets (issue 5): unshare start+run ≤ 30 ms; incus-lxc run round trip
//! ≤ 100 ms; launch to ready ≤ 3 s on a btrfs pool. The instances use the
//! `debusine` profile's pool (`dir` as docs/incus-setup.sh makes it); with
//! `STRATA_BENCH_INCUS_POOL=POOL` the profile's root disk points at POOL for
//! the bench and back afterwards, e.g. after
//! `incus storage create strata-bench-btrfs btrfs size=8GiB`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::backend::cli::SystemCli;
use strata::backend::envs;
use strata::backend::image;
use strata::backend::{Backend, ExecutionEnvironment, RunOptions};
use strata::catalog::Catalog;
use strata::system::{self, Image, Source};

const MANIFEST: &str = r#"{"version": "2", "pipelines": [{"name": "system", "runner": "debian", "source-epoch": 1700000000,
  "stages": [{"type": "bootstrap", "options": {
    "bootstrap_options": {"architecture": "amd64", "variant": "minbase", "extra_packages": ["systemd-sysv"]},
    "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}}]}]}"#;

/// Points the `debusine` profile's root disk at another pool while it lives.
struct ProfilePool(Option<String>);

impl ProfilePool {
    fn set(pool: Option<String>) -> ProfilePool {
        let Some(pool) = pool else {
            return ProfilePool(None);
        };
        let was = Command::new("incus")
            .args(["profile", "device", "get", "debusine", "root", "pool"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap();
        set_profile_pool(&pool);
        ProfilePool(Some(was))
    }
}

impl Drop for ProfilePool {
    fn drop(&mut self) {
        if let Some(was) = &self.0 {
            set_profile_pool(was);
        }
    }
}

fn set_profile_pool(pool: &str) {
    let ok = Command::new("incus")
        .args(["profile", "device", "set", "debusine", "root"])
        .arg(format!("pool={pool}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "cannot point the debusine profile at pool {pool}");
}

fn main() {
    let _pool = ProfilePool::set(std::env::var("STRATA_BENCH_INCUS_POOL").ok());
    // Stored systems are read through overlay mounts: keep them ours.
    strata::store::layers::enter_private_namespace().expect("a mount namespace of our own");
    let (root, strata) = common::strata();
    let runs = common::runs(11);
    let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("backend-bench-store");
    let mut child = Command::new(&strata)
        .args(["build", "-", "-q", "--checkpoint", "*", "--store"])
        .arg(&store)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(MANIFEST.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "bootstrap failed");
    let catalog = Catalog::new(vec![]).with_builtin_dir(root.join("target/release"));
    let source = Source::Pipeline {
        text: MANIFEST.into(),
        origin: "bench".into(),
        name: "system".into(),
    };
    let root = store;
    let store = strata::store::Store::open(&root, strata::store::DEFAULT_LOCK_TIMEOUT).unwrap();
    let system = system::build_system(&store, &catalog, &source, true, true).unwrap();
    let alias = image::alias(&system.id);
    image::import(
        &SystemCli,
        &root,
        system.image_files.as_ref().unwrap(),
        &alias,
    )
    .unwrap();

    let make = |name: &str, backend: Backend| -> Box<dyn ExecutionEnvironment> {
        let _ = envs::delete(&store, name);
        let _ = std::fs::remove_dir_all(store.layout().instance(name).dir());
        let _ = Command::new("incus")
            .args(["delete", "--force", &format!("strata-{name}")])
            .output();
        let image = match backend {
            Backend::Unshare => Image::Build(source.clone()),
            _ => Image::Alias(alias.clone()),
        };
        system::create_env(
            &store,
            &catalog,
            name,
            backend,
            &image,
            Arc::new(SystemCli),
            true,
        )
        .unwrap()
    };
    let mut unshare = make("bench-u", Backend::Unshare);
    let mut lxc = make("bench-l", Backend::IncusLxc);
    let argv = vec!["true".to_owned()];
    let opts = RunOptions::captured();

    let (mut u_start, mut l_start, mut u_run, mut l_run, mut launch, mut launch_create) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let t = Instant::now();
        unshare.start().unwrap();
        assert_eq!(unshare.run(&argv, &opts).unwrap().status, 0);
        u_start.push(t.elapsed());

        let t = Instant::now();
        lxc.start().unwrap();
        assert_eq!(lxc.run(&argv, &opts).unwrap().status, 0);
        l_start.push(t.elapsed());

        for _ in 0..3 {
            let t = Instant::now();
            assert_eq!(unshare.run(&argv, &opts).unwrap().status, 0);
            u_run.push(t.elapsed());
            let t = Instant::now();
            assert_eq!(lxc.run(&argv, &opts).unwrap().status, 0);
            l_run.push(t.elapsed());
        }
        unshare.stop().unwrap();
        lxc.stop().unwrap();

        if i % 2 == 0 {
            let t = Instant::now();
            let mut fresh = make("bench-launch", Backend::IncusLxc);
            let made = t.elapsed();
            fresh.start().unwrap();
            launch.push(t.elapsed());
            launch_create.push(made);
            envs::delete(&store, "bench-launch").unwrap();
        }
    }
    envs::delete(&store, "bench-u").unwrap();
    envs::delete(&store, "bench-l").unwrap();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pool = Command::new("incus")
        .args(["profile", "device", "get", "debusine", "root", "pool"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let driver = Command::new("incus")
        .args(["storage", "show", &pool])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("driver: ").map(str::to_owned))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    println!(
        "execution environments, medians of {runs} alternating runs (incus pool {pool}, driver {driver})"
    );
    println!(
        "  unshare   start + first run   {:8.1} ms   (target ≤ 30 ms)",
        ms(common::median(&mut u_start))
    );
    println!(
        "  unshare   run round trip      {:8.1} ms",
        ms(common::median(&mut u_run))
    );
    println!(
        "  incus-lxc start + first run   {:8.1} ms   (boot until systemd is running)",
        ms(common::median(&mut l_start))
    );
    println!(
        "  incus-lxc run round trip      {:8.1} ms   (target ≤ 100 ms)",
        ms(common::median(&mut l_run))
    );
    println!(
        "  incus-lxc launch to ready     {:8.1} ms   (target ≤ 3 s on btrfs; {} runs)",
        ms(common::median(&mut launch)),
        launch.len()
    );
    println!(
        "            of which create     {:8.1} ms   (incus init: the image unpacked into the pool)",
        ms(common::median(&mut launch_create))
    );
}
