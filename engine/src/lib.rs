//! strata: builds Debian systems, images and packages from declarative JSON
//! manifests.
//!
//! ```text
//! JSON → manifest::load → graph (order) → plan (ids) → exec: sources, stages in
//!        sandboxes, store commits → export
//! ```

pub mod backend;
pub mod catalog;
pub mod cli;
pub mod cli_docs;
pub mod cli_env;
pub mod cli_io;
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
