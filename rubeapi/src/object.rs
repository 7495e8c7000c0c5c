//! Building and reading objects with typed specs and statuses.

use prost::Name;
use prost_types::Any;

use crate::rube::{Metadata, Object};
use crate::{Error, type_name_of_url, type_url};

/// Names one object: its type's full name, its namespace ("" when cluster-scoped) and its name.
/// The store, the caches and the work queues are all keyed by it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub type_name: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(type_name: &str, namespace: &str, name: &str) -> Key {
        Key {
            type_name: type_name.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of the object of generated type `M` (`Key::typed::<Slice>("ns", "a")`).
    pub fn typed<M: Name>(namespace: &str, name: &str) -> Key {
        Key::new(&M::full_name(), namespace, name)
    }

    /// The key of `object`.
    pub fn of(object: &Object) -> Key {
        Key::new(object.type_name(), object.namespace(), object.name())
    }
}

/// `api.systemd.Unit system/indexer`, or `runink.Herd analytics` when cluster-scoped.
impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.type_name, self.name)
        } else {
            write!(f, "{} {}/{}", self.type_name, self.namespace, self.name)
        }
    }
}

/// Packs a generated message into an Any with Rube's `rube/` type URL.
pub fn pack<M: prost::Message + Name>(message: &M) -> Any {
    Any {
        type_url: type_url(&M::full_name()),
        value: message.encode_to_vec(),
    }
}

/// Unpacks an Any into a generated message, checking its type.
pub fn unpack<M: prost::Message + Name + Default>(any: &Any) -> Result<M, Error> {
    let found = type_name_of_url(&any.type_url);
    if found != M::full_name() {
        return Err(Error::Decode {
            type_name: M::full_name(),
            reason: format!("the value holds a {found}"),
        });
    }
    M::decode(any.value.as_slice()).map_err(|e| Error::Decode {
        type_name: M::full_name(),
        reason: e.to_string(),
    })
}

/// Whether `type_name` is the protobuf full name of kind `M`, without building the name.
pub fn is_kind<M: Name>(type_name: &str) -> bool {
    type_name
        .strip_prefix(M::PACKAGE)
        .and_then(|rest| rest.strip_prefix('.'))
        == Some(M::NAME)
}

/// The name of the `rube.Lease` a node's rubelet renews: `node-<node>`. Leases of cluster
/// controllers' elections are named `controller-<name>`, so the two never collide.
pub fn node_lease(node: &str) -> String {
    format!("node-{node}")
}

/// The name of the `rube.Lease` that elects the one rubelet running cluster controller `name`.
pub fn controller_lease(name: &str) -> String {
    format!("controller-{name}")
}

/// Whether a slice whose run ended (successfully or not) is started again under `policy`:
/// the one restart rule, shared by the slice controller (which restarts it) and by
/// [`slice_finished`] (which decides whether it still holds resources).
pub fn restarts_after(policy: crate::runink::RestartPolicy, succeeded: bool) -> bool {
    use crate::runink::RestartPolicy;
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !succeeded,
        RestartPolicy::Never | RestartPolicy::Unspecified => false,
    }
}

/// Whether a `runink.Slice` object has finished for good: its status phase is SUCCEEDED or
/// FAILED and its restart policy will not start it again. Only then are its processes gone for
/// good and does it stop holding its share of a Herd's quota and of a node's capacity; a slice
/// waiting out a restart back-off (FAILED under ON_FAILURE, either phase under ALWAYS) still
/// holds it. Admission (quotas) and the scheduler must agree on this, so both ask here.
pub fn slice_finished(slice: &Object) -> bool {
    use crate::runink::slice_status::Phase;
    use crate::runink::{Slice, SliceStatus};
    let phase = slice
        .status_as::<SliceStatus>()
        .ok()
        .flatten()
        .map(|s| s.phase());
    let succeeded = match phase {
        Some(Phase::Succeeded) => true,
        Some(Phase::Failed) => false,
        _ => return false,
    };
    let policy = slice
        .spec_as::<Slice>()
        .map_or(crate::runink::RestartPolicy::Never, |s| s.restart_policy());
    !restarts_after(policy, succeeded)
}

/// A new object with a typed spec.
pub fn new<M: prost::Message + Name>(namespace: &str, name: &str, spec: &M) -> Object {
    Object {
        metadata: Some(Metadata {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        }),
        spec: Some(pack(spec)),
        status: None,
    }
}

/// Convenience accessors on `Object`.
pub trait ObjectExt {
    /// The spec's full type name, or "" without a spec.
    fn type_name(&self) -> &str;
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    fn revision(&self) -> u64;
    /// `namespace/name`, or `name` for cluster-scoped objects.
    fn display_name(&self) -> String;
    fn spec_as<M: prost::Message + Name + Default>(&self) -> Result<M, Error>;
    /// The status as `M`, or `None` when no status was written yet.
    fn status_as<M: prost::Message + Name + Default>(&self) -> Result<Option<M>, Error>;
}

impl ObjectExt for Object {
    fn type_name(&self) -> &str {
        self.spec
            .as_ref()
            .map_or("", |s| type_name_of_url(&s.type_url))
    }

    fn namespace(&self) -> &str {
        self.metadata.as_ref().map_or("", |m| m.namespace.as_str())
    }

    fn name(&self) -> &str {
        self.metadata.as_ref().map_or("", |m| m.name.as_str())
    }

    fn revision(&self) -> u64 {
        self.metadata.as_ref().map_or(0, |m| m.revision)
    }

    fn display_name(&self) -> String {
        if self.namespace().is_empty() {
            self.name().to_owned()
        } else {
            format!("{}/{}", self.namespace(), self.name())
        }
    }

    fn spec_as<M: prost::Message + Name + Default>(&self) -> Result<M, Error> {
        let spec = self.spec.as_ref().ok_or_else(|| Error::Decode {
            type_name: M::full_name(),
            reason: "the object has no spec".to_owned(),
        })?;
        unpack(spec)
    }

    fn status_as<M: prost::Message + Name + Default>(&self) -> Result<Option<M>, Error> {
        self.status.as_ref().map(unpack).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runink::{Herd, Slice};

    #[test]
    fn typed_specs_round_trip_and_types_are_checked() {
        let herd = Herd {
            description: "tenant".into(),
            quota: None,
        };
        let object = new("", "analytics", &herd);
        assert_eq!(object.type_name(), "runink.Herd");
        assert_eq!(object.display_name(), "analytics");
        assert_eq!(object.spec_as::<Herd>().unwrap(), herd);
        let err = object.spec_as::<Slice>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode runink.Slice: the value holds a runink.Herd"
        );
    }

    /// Regression: a slice waiting out its restart back-off was counted finished, so quota
    /// admission and the scheduler gave away its share while the rubelet started it again.
    #[test]
    fn a_slice_that_will_restart_has_not_finished() {
        use crate::runink::slice_status::Phase;
        use crate::runink::{RestartPolicy, SliceStatus};
        let ended = |policy: RestartPolicy, phase: Phase| {
            let mut slice = Slice::default();
            slice.set_restart_policy(policy);
            let mut object = new("herd", "s", &slice);
            let mut status = SliceStatus::default();
            status.set_phase(phase);
            object.status = Some(pack(&status));
            slice_finished(&object)
        };
        assert!(ended(RestartPolicy::Never, Phase::Failed));
        assert!(ended(RestartPolicy::Unspecified, Phase::Succeeded));
        assert!(ended(RestartPolicy::OnFailure, Phase::Succeeded));
        assert!(!ended(RestartPolicy::OnFailure, Phase::Failed));
        assert!(!ended(RestartPolicy::Always, Phase::Succeeded));
        assert!(!ended(RestartPolicy::Always, Phase::Failed));
        assert!(!ended(RestartPolicy::Never, Phase::Running));
    }
}
