//! The core of akbackup: everything except argument parsing and rendering.
//!
//! Map of the crate (arrows point from caller to callee):
//!
//! ```text
//! config ──> plan ──> backup / restore / verify / forget
//!                          │
//!                          ├──> component::{files, ...}   (what a platform part is)
//!                          └──> repository                (sets, locks; the only user of the engine)
//!                                   └──> repository::engine   (private; the only module naming rustic_core)
//! ```
//!
//! - [`config`] owns the TOML schema and the defaults of a standard Altcraft install.
//! - [`component`] defines the [`component::Component`] trait; one module per kind.
//! - [`repository`] owns the restic-format repository: sets, manifests, locking (a local
//!   lock per host, and restic's lock files in the repository, which other hosts and the
//!   restic client honour), and which host's sets a command acts on.
//! - [`backup`], [`restore`], [`verify`], [`forget`] are the operations; each builds a plan first.
//! - [`stage`] (private working directories, each owned by its run) and [`stopped`] (the
//!   journal of services a run stopped) let the next run clean up after one that was killed;
//!   [`cleanup`] does it on the paths a run lives through.
//! - [`demo`] and [`sandbox`] generate a sandbox platform for the README's first command.
//!
//! Deliberately absent: terminal output. Progress is reported through [`progress::Progress`],
//! and every operation returns a `*Summary` that the binary renders.

pub mod archive;
pub mod backup;
pub mod backup_set;
pub mod cleanup;
pub mod component;
pub mod config;
pub mod copy;
pub mod demo;
pub mod doctor;
pub mod error;
pub mod forget;
pub mod fsutil;
pub mod hooks;
pub mod job;
pub mod monitoring;
pub mod plan;
pub mod platform;
pub mod process;
pub mod progress;
pub mod redact;
pub mod repository;
pub mod restore;
pub mod sandbox;
pub mod schedule;
pub mod service;
pub mod snapshot;
pub mod stage;
pub mod stopped;
pub mod tree;
pub mod units;
pub mod verify;

/// The version recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
