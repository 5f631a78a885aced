//! strata: builds Debian systems, images and packages from declarative JSON
//! manifests.
//!
//! ```text
//! JSON → manifest::load → derive::plan (derived pipelines, ids) → exec: sources,
//!        stages through the runner seam (sandbox::runner), store commits → export
//! ```
//!
//! ## Who may import whom
//!
//! Each room has one job; imports run one way, down this table. A test
//! (tests/it/layout.rs) reads every source file and fails when one imports
//! a room its row does not list.
//!
//! | room     | may import                                                                       |
//! |----------|----------------------------------------------------------------------------------|
//! | main     | cli                                                                              |
//! | cli      | task system exec derive plan manifest backend catalog store sandbox monitor clock id kind cli_env |
//! | cli_env  | task system backend catalog store sandbox                                        |
//! | task     | system exec derive plan manifest backend catalog store sandbox monitor clock id kind |
//! | system   | exec derive plan manifest backend catalog store monitor id kind                  |
//! | exec     | plan manifest backend catalog store sandbox monitor id kind                      |
//! | derive   | plan manifest id kind                                                            |
//! | plan     | manifest id                                                                      |
//! | manifest | catalog schema kind                                                              |
//! | backend  | store sandbox clock id kind                                                      |
//! | catalog  | schema                                                                           |
//! | store    | sandbox id                                                                       |
//! | monitor  | id                                                                               |
//! | sandbox  |                                                                                  |
//! | schema   |                                                                                  |
//! | clock    |                                                                                  |
//! | id       |                                                                                  |
//! | kind     |                                                                                  |
//!
//! `manifest` knows no backend or scheduler; a backend runs what it is
//! given and never drives a build; the scheduler (`exec`) never knows it is
//! building a system for an environment (`system`) or a task.

pub mod backend;
pub mod catalog;
pub mod cli;
pub mod cli_env;
pub mod clock;
pub mod derive;
pub mod exec;
pub mod id;
pub mod kind;
pub mod manifest;
pub mod monitor;
pub mod plan;
pub mod sandbox;
pub mod schema;
pub mod store;
pub mod system;
pub mod task;
