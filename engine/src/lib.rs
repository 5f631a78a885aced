//! strata: builds Debian systems, images and packages from declarative JSON
//! manifests.
//!
//! ```text
//! JSON → manifest::load → derive::plan (derived pipelines, manifest::plan: ids) → exec: sources,
//!        stages through the runner seam (sandbox::runner), store commits → export
//! ```
//!
//! The crate is the library behind the `strata` binary. A manifest comes
//! from JSON ([`manifest::load`], [`manifest::load_value`]) or is composed
//! from values ([`manifest::Manifest::new`] and its builders), and
//! [`exec::Build`] builds it:
//!
//! ```no_run
//! use serde_json::json;
//! use strata::catalog::Catalog;
//! use strata::exec::Build;
//! use strata::manifest::{Input, Manifest, Pipeline, Stage};
//! use strata::monitor::Monitor;
//!
//! /// A stage value: configure it once, add it wherever it is wanted.
//! fn motd(text: &str) -> Stage {
//!     Stage::new("write", json!({"files": [{"path": "/etc/motd", "content": text}]}))
//! }
//!
//! let catalog = Catalog::new(Vec::new());
//! let manifest = Manifest::new()
//!     .add_pipeline(
//!         Pipeline::new("tree")
//!             .with_source_epoch(1_700_000_000)
//!             .add_stage(Stage::new("mkdir", json!({"paths": [{"path": "/etc"}]})))
//!             .add_stage(motd("Built by strata.\n")),
//!     )
//!     .add_pipeline(
//!         Pipeline::new("tarball").add_stage(
//!             Stage::new("tar", json!({"filename": "tree.tar.gz", "compression": "gzip"}))
//!                 .add_input("tree", Input::tree("tree")),
//!         ),
//!     )
//!     // The loader's checks; errors name JSON pointers into `manifest.to_value()`.
//!     .check(&catalog)?;
//!
//! // Building mounts the store's layers (as root), in a mount namespace of
//! // the process's own: enter it before any thread starts.
//! strata::store::layers::enter_private_namespace()?;
//! let (report, result) = Build::new(&manifest, &catalog, "/var/cache/strata")
//!     .export("tarball")
//!     .output_directory("out")
//!     .run(&Monitor::plain(false));
//! result?;
//! println!("{:?}", report.exports);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `engine/examples/compose.rs` composes and builds a Debian image the same
//! way.
//! ## Who may import whom
//!
//! Each room has one job; imports run one way, down this table. A test
//! (tests/it/layout.rs) reads every source file and fails when one imports
//! a room its row does not list.
//!
//! | room     | may import                                                                                   |
//! |----------|----------------------------------------------------------------------------------------------|
//! | main     | cli                                                                                          |
//! | bin      | sandbox (`strata-sandbox`: the per-stage enter and network steps)                            |
//! | cli      | task system exec derive manifest backend catalog store sandbox monitor clock id kind         |
//! | task     | system exec derive manifest backend catalog store sandbox monitor clock id kind              |
//! | system   | exec derive manifest backend catalog store monitor id kind                                   |
//! | exec     | derive manifest backend catalog store sandbox monitor id kind                                |
//! | derive   | manifest catalog id kind                                                                     |
//! | manifest | catalog schema id kind                                                                       |
//! | backend  | store sandbox clock id kind                                                                  |
//! | catalog  | schema                                                                                       |
//! | store    | sandbox id                                                                                   |
//! | monitor  | id                                                                                           |
//! | sandbox  |                                                                                              |
//! | schema   |                                                                                              |
//! | clock    |                                                                                              |
//! | id       |                                                                                              |
//! | kind     |                                                                                              |
//!
//! `manifest` knows no backend or scheduler; a backend runs what it is
//! given and never drives a build; the scheduler (`exec`) never knows it is
//! building a system for an environment (`system`) or a task.

pub mod backend;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod derive;
pub mod exec;
pub mod id;
pub mod kind;
pub mod manifest;
pub mod monitor;
pub mod sandbox;
pub mod schema;
pub mod store;
pub mod system;
pub mod task;
