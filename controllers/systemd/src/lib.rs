//! Rube's systemd unit controller: every `api.systemd.Unit` bound to a node becomes a unit file
//! in the node's unit directory, installed, enabled or disabled, started, restarted when it
//! changes, stopped and removed when the object goes, with its state read back into the
//! object's status.
//!
//! # Layout
//! - [`render`]: a `Unit` as unit-file text, and the marker line that says which object a file
//!   belongs to. Pure.
//! - [`reconcile`]: what the controller sees ([`Observed`]), the changes it makes ([`Effect`]),
//!   the pure [`reconcile()`](reconcile::reconcile) and [`apply`](reconcile::apply), its model of
//!   the executor for the fixpoint tests.
//! - [`systemd`]: the [`Systemd`] trait (daemon-reload, enable, start, show, ...), the real
//!   [`Systemctl`] and the [`RecordingSystemd`] fake.
//! - [`controller`]: [`UnitController`], the `controllers::Controller`: observe reads only local
//!   state (the unit dir, systemd, its own records in its state dir), execute is the only I/O
//!   that changes anything.
//! - [`user_manager`]: starts a private systemd user manager in a mount and PID namespace, so
//!   tests run real units on machines where systemd is not PID 1.
//! - [`error`]: the crate's one [`Error`].
//!
//! Nothing here talks to the apiserver except `execute` writing a status; nothing here touches
//! a unit file that does not start with this controller's marker.

pub mod controller;
pub mod error;
pub mod reconcile;
pub mod render;
pub mod systemd;
pub mod user_manager;

pub use controller::UnitController;
pub use error::Error;
pub use reconcile::{Effect, Observed, UnitFile};
pub use render::render;
pub use systemd::{Manager, RecordingSystemd, Scope, Systemctl, Systemd, UnitState};
