//! strata: builds Debian systems, images and packages from declarative JSON
//! manifests.
//!
//! ```text
//! JSON → manifest::load → graph (order) → plan (ids) → exec: sources, stages in
//!        sandboxes, store commits → export
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

pub mod backend;
pub mod catalog;
pub mod cli;
pub mod cli_env;
pub mod clock;
pub mod exec;
pub mod graph;
pub mod id;
pub mod manifest;
pub mod monitor;
pub mod plan;
pub mod sandbox;
pub mod schema;
pub mod store;
pub mod task;
