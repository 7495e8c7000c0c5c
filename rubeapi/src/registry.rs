//! The type registry: every message type the API knows, by full name, and which of them are
//! storable kinds.
//!
//! A kind is a message with the `(rube.kind)` option, which says whether its objects live in a
//! namespace and which message their status holds. The built-in registry comes from the
//! descriptor set compiled at build time; more types can be added from a FileDescriptorSet.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, ExtensionDescriptor, MessageDescriptor, Value};

use crate::Error;

static BUILTIN_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rube_descriptor.bin"));

/// The name of the extension on `google.protobuf.MessageOptions` that marks a kind.
const KIND_OPTION: &str = "rube.kind";

/// Where objects of a kind live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In a namespace (a Herd's name), which must be set.
    Namespaced,
    /// With an empty namespace.
    Cluster,
}

/// A storable kind.
#[derive(Debug, Clone)]
pub struct Kind {
    pub descriptor: MessageDescriptor,
    pub scope: Scope,
    /// The message `Object.status` holds, when the kind names one.
    pub status: Option<MessageDescriptor>,
}

impl Kind {
    pub fn name(&self) -> &str {
        self.descriptor.full_name()
    }
}

/// Message types by full name. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    pool: DescriptorPool,
    kind_option: ExtensionDescriptor,
}

impl Registry {
    /// The types compiled into this build: `rube.*`, `runink.*`, `api.systemd.*`.
    pub fn builtin() -> Registry {
        static BUILTIN: OnceLock<Registry> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                Registry::from_file_descriptor_set(BUILTIN_DESCRIPTORS)
                    .expect("the descriptor set compiled at build time is valid")
            })
            .clone()
    }

    /// A registry of the types in an encoded `google.protobuf.FileDescriptorSet`, which must
    /// include `rube/api.proto` and every other dependency.
    pub fn from_file_descriptor_set(bytes: &[u8]) -> Result<Registry, Error> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| Error::Descriptor(e.to_string()))?;
        let kind_option = pool.get_extension_by_name(KIND_OPTION).ok_or_else(|| {
            Error::Descriptor(format!("the descriptor set lacks the {KIND_OPTION} option"))
        })?;
        Ok(Registry { pool, kind_option })
    }

    /// Adds the files of an encoded `FileDescriptorSet`. Files already present must be identical.
    pub fn add_file_descriptor_set(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let set = prost_types::FileDescriptorSet::decode(bytes)
            .map_err(|e| Error::Descriptor(e.to_string()))?;
        let mut pool = self.pool.clone();
        pool.add_file_descriptor_protos(set.file)
            .map_err(|e| Error::Descriptor(e.to_string()))?;
        self.pool = pool;
        Ok(())
    }

    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Every file in the registry, as an encoded `FileDescriptorSet`.
    pub fn encode_file_descriptor_set(&self) -> Vec<u8> {
        self.pool.encode_to_vec()
    }

    /// Any message type by full name.
    pub fn message(&self, full_name: &str) -> Result<MessageDescriptor, Error> {
        self.pool
            .get_message_by_name(full_name)
            .ok_or_else(|| Error::UnknownType {
                name: full_name.to_owned(),
            })
    }

    /// A storable kind by full name.
    ///
    /// # Errors
    /// `UnknownType` if no such message exists, `NotAKind` if it lacks `(rube.kind)`.
    pub fn kind(&self, full_name: &str) -> Result<Kind, Error> {
        let descriptor = self.message(full_name)?;
        self.kind_of(descriptor).ok_or_else(|| Error::NotAKind {
            name: full_name.to_owned(),
        })
    }

    /// Every storable kind, sorted by name.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = self
            .pool
            .all_messages()
            .filter_map(|m| self.kind_of(m))
            .collect();
        kinds.sort_by(|a, b| a.name().cmp(b.name()));
        kinds
    }

    fn kind_of(&self, descriptor: MessageDescriptor) -> Option<Kind> {
        let options = descriptor.options();
        if !options.has_extension(&self.kind_option) {
            return None;
        }
        let value = options.get_extension(&self.kind_option);
        let Value::Message(kind_options) = value.as_ref() else {
            return None;
        };
        let scope = match kind_options.get_field_by_name("scope").as_deref() {
            Some(Value::EnumNumber(2)) => Scope::Cluster,
            _ => Scope::Namespaced,
        };
        let status = match kind_options.get_field_by_name("status").as_deref() {
            Some(Value::String(name)) if !name.is_empty() => self.pool.get_message_by_name(name),
            _ => None,
        };
        Some(Kind {
            descriptor,
            scope,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_and_their_scopes() {
        let registry = Registry::builtin();
        let kinds: Vec<(String, Scope, Option<String>)> = registry
            .kinds()
            .into_iter()
            .map(|k| {
                (
                    k.name().to_owned(),
                    k.scope,
                    k.status.map(|s| s.full_name().to_owned()),
                )
            })
            .collect();
        let expected = [
            (
                "api.systemd.Unit",
                Scope::Namespaced,
                Some("api.systemd.UnitStatus"),
            ),
            ("rube.Lease", Scope::Cluster, None),
            ("rube.Node", Scope::Cluster, Some("rube.NodeStatus")),
            ("runink.Herd", Scope::Cluster, Some("runink.HerdStatus")),
            (
                "runink.Pipeline",
                Scope::Namespaced,
                Some("runink.PipelineStatus"),
            ),
            (
                "runink.Slice",
                Scope::Namespaced,
                Some("runink.SliceStatus"),
            ),
        ];
        let expected: Vec<(String, Scope, Option<String>)> = expected
            .iter()
            .map(|(n, s, st)| (n.to_string(), *s, st.map(str::to_owned)))
            .collect();
        assert_eq!(kinds, expected);
    }

    #[test]
    fn unknown_and_non_kind_types_are_told_apart() {
        let registry = Registry::builtin();
        assert!(matches!(
            registry.kind("no.Such"),
            Err(Error::UnknownType { .. })
        ));
        assert!(matches!(
            registry.kind("runink.Step"),
            Err(Error::NotAKind { .. })
        ));
    }

    #[test]
    fn round_trips_through_an_encoded_descriptor_set() {
        let registry = Registry::builtin();
        let again =
            Registry::from_file_descriptor_set(&registry.encode_file_descriptor_set()).unwrap();
        assert_eq!(again.kinds().len(), registry.kinds().len());
    }
}
