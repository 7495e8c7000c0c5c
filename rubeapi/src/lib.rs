//! Rube's API as a library: the generated protobuf types, the type registry, the textproto and
//! JSON codecs, label selectors and the typed gRPC client.
//!
//! # Layout
//! - [`rube`], [`runink`], [`api::systemd`]: prost types generated from `proto/` at build time.
//! - [`registry`]: which message types exist and which of them are storable kinds (`(rube.kind)`).
//! - [`text`]: textproto parse and print of `Object`s with `[rube/...]` Any expansion, several
//!   objects in one input separated by `---` lines; errors carry line and column.
//! - [`json`]: the same objects as protobuf JSON.
//! - [`selector`]: label selectors (`node=worker-1,tier!=db`) and object filters.
//! - [`object`]: helpers to build and read objects with typed specs.
//! - [`client`]: the async client over tonic, always TLS with a client certificate.
//! - [`config`]: client configuration files (`rube.ClientConfig`): where clients look for
//!   them, reading and writing them.
//! - [`identity`]: who a client certificate names (CN the user, O the groups).
//! - [`join`]: join tokens, and a node's join and certificate renewal.
//! - `testing` (feature `testing`): object builders and the skip banner every crate's tests
//!   share.
//! - [`validate`]: semantic rules of built-in kinds (a pipeline has no cycle, a unit no
//!   contradiction), used by admission.
//!
//! This crate never touches storage and never runs controllers.

pub mod client;
pub mod config;
pub mod identity;
pub mod join;
pub mod json;
pub mod object;
pub mod registry;
pub mod selector;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod validate;

mod error;
pub use error::{Location, error_keys};

pub use client::Client;
pub use error::Error;
pub use registry::{Kind, Registry, Scope};

/// Core API: the object envelope, metadata, requests and the `ApiServer` service.
#[allow(clippy::all)]
pub mod rube {
    include!(concat!(env!("OUT_DIR"), "/rube.rs"));
}

/// Data-pipeline kinds: Herd, Slice, Pipeline.
#[allow(clippy::all)]
pub mod runink {
    include!(concat!(env!("OUT_DIR"), "/runink.rs"));
}

/// Kinds managed by platform controllers.
pub mod api {
    /// systemd units.
    #[allow(clippy::all)]
    pub mod systemd {
        include!(concat!(env!("OUT_DIR"), "/api.systemd.rs"));
    }
}

/// The prefix of every type URL in an `Object`'s spec and status: `rube/api.systemd.Unit`.
pub const TYPE_URL_PREFIX: &str = "rube/";

/// The type URL for a full message name.
pub fn type_url(full_name: &str) -> String {
    format!("{TYPE_URL_PREFIX}{full_name}")
}

/// The full message name in a type URL: everything after the last `/`.
pub fn type_name_of_url(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}
