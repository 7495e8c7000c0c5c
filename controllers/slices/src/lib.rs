//! Slices: one pipeline step as one isolated process tree on one node.
//!
//! # Layout
//! - [`shim`]: the per-slice shim process (launch, stop, read what it left) and the one
//!   module that forks (`shim/spawn.rs`, the only `unsafe` here).
//! - [`spec`]: the files shim and controller share (launch spec, outcome, running record).
//! - [`logs`]: the workload's rotated output log: write, read from an offset, follow.
//! - [`controller`]: [`SliceController`], the `controllers::Controller` for `runink.Slice`s
//!   bound to this node, with its pure `reconcile`, and [`sweep`] for orphaned cgroups.
//!
//! Only the controller talks to the apiserver; the shim never does, so a workload runs and its
//! outcome is recorded with no rubelet and no apiserver around.

pub mod controller;
mod error;
pub mod logs;
pub mod shim;
pub mod spec;

pub use controller::{Config, SliceController, sweep};
pub use error::Error;
pub use shim::{Launched, launch, main_from_args, stop};
pub use spec::{LaunchSpec, Outcome, ShimState, read};
