//! The type registry: every message type the API knows, by full name, and which of them are
//! storable kinds.
//!
//! A kind is a message with the `(rube.kind)` option, which says whether its objects live in a
//! namespace and which message their status holds. The built-in registry comes from the
//! descriptor set compiled at build time; more types can be added from a FileDescriptorSet.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

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

/// Message types by full name. Cheap to clone; clones share one set of types, so types
/// registered at run time ([`Registry::set_extra`]) are seen by every clone.
#[derive(Debug, Clone)]
pub struct Registry {
    pool: Arc<RwLock<DescriptorPool>>,
    /// The types before any were registered at run time.
    base: DescriptorPool,
    kind_option: ExtensionDescriptor,
}

impl Registry {
    /// The types compiled into this build: `rube.*`, `runink.*`, `api.systemd.*`.
    /// Each call gives a registry of its own: types registered in one are not in another.
    pub fn builtin() -> Registry {
        static BUILTIN: OnceLock<DescriptorPool> = OnceLock::new();
        let pool = BUILTIN.get_or_init(|| {
            DescriptorPool::decode(BUILTIN_DESCRIPTORS)
                .expect("the descriptor set compiled at build time is valid")
        });
        Registry::from_pool(pool.clone()).expect("the built-in types include rube.kind")
    }

    fn from_pool(pool: DescriptorPool) -> Result<Registry, Error> {
        let kind_option = pool.get_extension_by_name(KIND_OPTION).ok_or_else(|| {
            Error::Descriptor(format!("the descriptor set lacks the {KIND_OPTION} option"))
        })?;
        Ok(Registry {
            pool: Arc::new(RwLock::new(pool.clone())),
            base: pool,
            kind_option,
        })
    }

    fn read(&self) -> DescriptorPool {
        self.pool.read().expect("registry lock").clone()
    }

    /// The base types plus every file of `sets` (encoded `FileDescriptorSet`s, each one
    /// registered type), checked but not applied. Returns the new pool and the kinds each set
    /// defines.
    ///
    /// # Errors
    /// `Descriptor` when a set does not decode, refers to types that exist nowhere, or defines a
    /// file that another set (or the base) defines differently.
    pub fn build_extra(
        &self,
        sets: &[(&str, &[u8])],
    ) -> Result<(DescriptorPool, Vec<Vec<String>>), Error> {
        let mut pool = self.base.clone();
        let mut owners: HashMap<String, (String, prost_types::FileDescriptorProto)> =
            HashMap::new();
        let mut kinds = Vec::with_capacity(sets.len());
        for (owner, bytes) in sets {
            let set = prost_types::FileDescriptorSet::decode(*bytes).map_err(|e| {
                Error::Descriptor(format!("type {owner}: not a FileDescriptorSet: {e}"))
            })?;
            let mut names = Vec::new();
            for file in &set.file {
                let name = file.name().to_owned();
                if let Some(base) = self.base.get_file_by_name(&name) {
                    if base.file_descriptor_proto() != file {
                        return Err(Error::Descriptor(format!(
                            "type {owner}: file {name} is built in and cannot be replaced"
                        )));
                    }
                    continue;
                }
                match owners.get(&name) {
                    Some((other, existing)) if existing != file => {
                        return Err(Error::Descriptor(format!(
                            "type {owner}: file {name} is already defined differently by type {other}"
                        )));
                    }
                    Some(_) => {}
                    None => {
                        owners.insert(name.clone(), ((*owner).to_owned(), file.clone()));
                    }
                }
                names.push(name);
            }
            // Decoded again from the bytes: prost_types keeps no custom options, prost-reflect
            // does, and `(rube.kind)` is one.
            pool.decode_file_descriptor_set(*bytes)
                .map_err(|e| Error::Descriptor(format!("type {owner}: {e}")))?;
            let defined: Vec<String> = names
                .iter()
                .filter_map(|n| pool.get_file_by_name(n))
                .flat_map(|f| f.messages().collect::<Vec<_>>())
                .filter(|m| m.options().has_extension(&self.kind_option))
                .map(|m| m.full_name().to_owned())
                .collect();
            kinds.push(defined);
        }
        Ok((pool, kinds))
    }

    /// Replaces the types registered at run time with the files of `sets`; see
    /// [`Registry::build_extra`].
    pub fn set_extra(&self, sets: &[(&str, &[u8])]) -> Result<(), Error> {
        let (pool, _) = self.build_extra(sets)?;
        *self.pool.write().expect("registry lock") = pool;
        Ok(())
    }

    /// A registry of the types in an encoded `google.protobuf.FileDescriptorSet`, which must
    /// include `rube/api.proto` and every other dependency.
    pub fn from_file_descriptor_set(bytes: &[u8]) -> Result<Registry, Error> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| Error::Descriptor(e.to_string()))?;
        Registry::from_pool(pool)
    }

    /// The current types.
    pub fn pool(&self) -> DescriptorPool {
        self.read()
    }

    /// Every file in the registry, as an encoded `FileDescriptorSet`.
    pub fn encode_file_descriptor_set(&self) -> Vec<u8> {
        self.read().encode_to_vec()
    }

    /// Any message type by full name.
    pub fn message(&self, full_name: &str) -> Result<MessageDescriptor, Error> {
        self.read()
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
            .read()
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
            Some(Value::String(name)) if !name.is_empty() => {
                descriptor.parent_pool().get_message_by_name(name)
            }
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
            ("rube.ClusterRole", Scope::Cluster, None),
            ("rube.ClusterRoleBinding", Scope::Cluster, None),
            ("rube.JoinToken", Scope::Cluster, None),
            ("rube.Lease", Scope::Cluster, None),
            ("rube.Node", Scope::Cluster, Some("rube.NodeStatus")),
            ("rube.Role", Scope::Namespaced, None),
            ("rube.RoleBinding", Scope::Namespaced, None),
            ("rube.Type", Scope::Cluster, None),
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
