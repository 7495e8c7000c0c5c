//! [`Watch`]: objects of another kind that a controller reads and that wake its keys
//! (kube-rs' `watches` and `owns`).
//!
//! A pipeline controller reads slices and nodes; a change to a slice must wake the pipeline
//! that owns it, a change to a node's readiness every pipeline. A `Watch` is a selector, a
//! cache the controller holds from the start (made before the runtime connects) and a pure
//! mapper from each change to the keys it wakes. The runtime lists and watches it like the
//! controller's own selector and waits for its first list before the first reconcile, so
//! `observe` can read the cache instead of asking the apiserver.

use std::fmt;

use rubeapi::rube::{Object, Selector};

use crate::cache::{self, Cache, CacheWriter, Changed};
use crate::{Key, Trigger};

/// The keys of the controller's own kind that one change to a watched object wakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// These keys (none, when empty).
    Keys(Vec<Key>),
    /// Every key the controller's cache holds.
    All,
}

impl Wake {
    pub fn none() -> Wake {
        Wake::Keys(Vec::new())
    }

    pub fn key(key: Key) -> Wake {
        Wake::Keys(vec![key])
    }
}

type Mapper = Box<dyn FnMut(&Changed) -> Wake + Send>;

/// A secondary watch: what to list and watch, the cache it fills, and what its changes wake.
pub struct Watch {
    pub(crate) selector: Selector,
    pub(crate) writer: CacheWriter,
    pub(crate) mapper: Mapper,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Watches what `selector` chooses; `mapper` says which keys each change wakes (it sees the
    /// object before and after, so a deleted object still names what it belonged to). Returns
    /// the watch, for the runtime, and a read handle on its cache, for the controller.
    pub fn new(
        selector: Selector,
        mapper: impl FnMut(&Changed) -> Wake + Send + 'static,
    ) -> (Watch, Cache) {
        let (writer, cache) = cache::new();
        let watch = Watch {
            selector,
            writer,
            mapper: Box::new(mapper),
        };
        (watch, cache)
    }

    /// Watches what `selector` chooses and wakes the owner that an object names in its label
    /// `label`: the object of type `owner` with that name in the same namespace. Objects
    /// without the label wake nothing.
    pub fn owned_by_label(selector: Selector, label: &str, owner: &str) -> (Watch, Cache) {
        let label = label.to_owned();
        let owner = owner.to_owned();
        Watch::new(selector, move |changed| {
            let named = |object: &Option<std::sync::Arc<Object>>| {
                let metadata = object.as_ref()?.metadata.as_ref()?;
                let name = metadata.labels.get(&label)?;
                Some(Key::new(&owner, &metadata.namespace, name))
            };
            let mut keys: Vec<Key> = [named(&changed.before), named(&changed.after)]
                .into_iter()
                .flatten()
                .collect();
            keys.dedup();
            Wake::Keys(keys)
        })
    }

    /// Calls the mapper and hands every woken key to `wake`.
    pub(crate) fn wake(
        mapper: &mut Mapper,
        changed: &Changed,
        own: &Cache,
        mut wake: impl FnMut(Key, Trigger),
    ) {
        match mapper(changed) {
            Wake::Keys(keys) => {
                for key in keys {
                    wake(key, Trigger::ObjectChanged);
                }
            }
            Wake::All => {
                for key in own.keys() {
                    wake(key, Trigger::ObjectChanged);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rubeapi::rube::Metadata;

    use super::*;

    fn labelled(name: &str, owner: Option<&str>) -> Arc<Object> {
        let mut metadata = Metadata {
            namespace: "ns".into(),
            name: name.into(),
            ..Default::default()
        };
        if let Some(owner) = owner {
            metadata.labels.insert("pipeline".into(), owner.into());
        }
        Arc::new(Object {
            metadata: Some(metadata),
            ..Default::default()
        })
    }

    fn changed(before: Option<Arc<Object>>, after: Option<Arc<Object>>) -> Changed {
        Changed {
            key: Key::typed::<rubeapi::runink::Slice>("ns", "s"),
            trigger: Trigger::SpecChanged,
            before,
            after,
        }
    }

    fn woken(watch: &mut Watch, change: &Changed) -> Wake {
        (watch.mapper)(change)
    }

    #[test]
    fn an_owned_object_wakes_its_owner_even_once_deleted_or_relabelled() {
        let (mut watch, _) = Watch::owned_by_label(Selector::default(), "pipeline", "P");
        let owner = |name: &str| Key::new("P", "ns", name);
        let created = changed(None, Some(labelled("s", Some("a"))));
        assert_eq!(woken(&mut watch, &created), Wake::key(owner("a")));
        let deleted = changed(Some(labelled("s", Some("a"))), None);
        assert_eq!(woken(&mut watch, &deleted), Wake::key(owner("a")));
        let moved = changed(
            Some(labelled("s", Some("a"))),
            Some(labelled("s", Some("b"))),
        );
        assert_eq!(
            woken(&mut watch, &moved),
            Wake::Keys(vec![owner("a"), owner("b")])
        );
        let unowned = changed(None, Some(labelled("s", None)));
        assert_eq!(woken(&mut watch, &unowned), Wake::none());
    }
}
