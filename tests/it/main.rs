//! strata's integration tests: one binary, one module per feature. They run
//! the built `strata` and its stages for real (bubblewrap, GNU tar, curl),
//! so build the workspace first: `make test` does both.

mod archives;
mod backend;
mod backend_lint;
mod binds;
mod build;
mod cli;
mod debian;
mod fsck;
mod hardening;
mod ids;
mod images;
mod incus_image;
mod isolation;
mod layout;
mod library;
mod manifest_errors;
mod package;
mod packaging;
mod progress;
mod protocol;
mod rootless;
mod secrets;
mod store;
mod support;
mod task;
