//! The objects a reflector has seen, by key: one [`CacheWriter`] (the reflector's), any number
//! of cheap [`Cache`] read handles (the workers').
//!
//! Applying a [`Change`] returns which keys changed, how ([`Trigger`]) and from what to what
//! ([`Changed`]), so a relist triggers only what actually differs and a secondary watch can map
//! a deleted object to its owner. Reads never wait for the network; nothing here does I/O.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rubeapi::rube::Object;
use tokio::sync::watch;

use crate::watcher::Change;
use crate::{Key, Trigger};

type Objects = HashMap<Key, Arc<Object>>;

/// One key that a change touched: how, and the object before and after (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    pub key: Key,
    pub trigger: Trigger,
    pub before: Option<Arc<Object>>,
    pub after: Option<Arc<Object>>,
}

/// A read-only handle on the cache. Clones share it.
#[derive(Debug, Clone)]
pub struct Cache {
    objects: Arc<RwLock<Objects>>,
    revision: watch::Receiver<Option<u64>>,
}

/// The one handle that changes the cache. Not `Clone`: one writer.
#[derive(Debug)]
pub struct CacheWriter {
    objects: Arc<RwLock<Objects>>,
    revision: watch::Sender<Option<u64>>,
}

/// An empty cache: its writer, and a read handle.
pub fn new() -> (CacheWriter, Cache) {
    let objects = Arc::new(RwLock::new(Objects::new()));
    let (sender, receiver) = watch::channel(None);
    (
        CacheWriter {
            objects: objects.clone(),
            revision: sender,
        },
        Cache {
            objects,
            revision: receiver,
        },
    )
}

impl Cache {
    pub fn get(&self, key: &Key) -> Option<Arc<Object>> {
        self.read().get(key).cloned()
    }

    /// Every cached key, in no particular order.
    pub fn keys(&self) -> Vec<Key> {
        self.read().keys().cloned().collect()
    }

    /// Every cached object, in no particular order: a snapshot, cheap (shared objects).
    pub fn objects(&self) -> Vec<Arc<Object>> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The revision the cache is consistent at: every matching change up to it has been
    /// applied. `None` until the first list.
    pub fn revision(&self) -> Option<u64> {
        *self.revision.borrow()
    }

    /// Waits until the cache has been listed and is consistent at `revision` or later.
    /// Returns false if the writer is gone first.
    pub async fn wait_for(&self, revision: u64) -> bool {
        let mut receiver = self.revision.clone();
        receiver
            .wait_for(|seen| seen.is_some_and(|seen| seen >= revision))
            .await
            .is_ok()
    }

    /// Waits until the first list is in. Returns false if the writer is gone first.
    pub async fn ready(&self) -> bool {
        self.wait_for(0).await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects> {
        // Writers never panic while holding the lock with the map half-changed.
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CacheWriter {
    /// Applies `change` and returns the keys that changed, each with how and from what.
    pub fn apply(&mut self, change: Change) -> Vec<Changed> {
        let mut objects = self.objects.write().unwrap_or_else(PoisonError::into_inner);
        let (changed, revision) = match change {
            Change::Replace {
                objects: listed,
                revision,
            } => {
                let mut fresh = Objects::with_capacity(listed.len());
                let mut changed = Vec::new();
                for object in listed {
                    let key = Key::of(&object);
                    let before = objects.get(&key).cloned();
                    let after = Arc::new(object);
                    if let Some(trigger) = trigger_for(before.as_deref(), &after) {
                        changed.push(Changed {
                            key: key.clone(),
                            trigger,
                            before,
                            after: Some(after.clone()),
                        });
                    }
                    fresh.insert(key, after);
                }
                // What the list no longer has was deleted while we were not watching.
                for (key, before) in objects.iter() {
                    if !fresh.contains_key(key) {
                        changed.push(Changed {
                            key: key.clone(),
                            trigger: Trigger::SpecChanged,
                            before: Some(before.clone()),
                            after: None,
                        });
                    }
                }
                *objects = fresh;
                (changed, revision)
            }
            Change::Put(object) => {
                let key = Key::of(&object);
                let revision = revision_of(&object);
                let after = Arc::new(object);
                let before = objects.insert(key.clone(), after.clone());
                let changed = trigger_for(before.as_deref(), &after).map(|trigger| Changed {
                    key,
                    trigger,
                    before,
                    after: Some(after),
                });
                (changed.into_iter().collect(), revision)
            }
            Change::Delete(object) => {
                let key = Key::of(&object);
                let revision = revision_of(&object);
                let before = objects.remove(&key).or_else(|| Some(Arc::new(object)));
                let changed = Changed {
                    key,
                    trigger: Trigger::SpecChanged,
                    before,
                    after: None,
                };
                (vec![changed], revision)
            }
            Change::Bookmark(revision) => (Vec::new(), revision),
        };
        drop(objects);
        self.revision.send_if_modified(|seen| {
            let next = Some(seen.map_or(revision, |seen| seen.max(revision)));
            let modified = *seen != next;
            *seen = next;
            modified
        });
        changed
    }

    /// The revision the cache is consistent at; `None` until the first list.
    pub fn revision(&self) -> Option<u64> {
        *self.revision.borrow()
    }

    /// A new read handle.
    pub fn cache(&self) -> Cache {
        Cache {
            objects: self.objects.clone(),
            revision: self.revision.subscribe(),
        }
    }
}

fn revision_of(object: &Object) -> u64 {
    object.metadata.as_ref().map_or(0, |m| m.revision)
}

/// How `new` differs from `old`, if it does.
fn trigger_for(old: Option<&Object>, new: &Object) -> Option<Trigger> {
    let Some(old) = old else {
        return Some(Trigger::SpecChanged);
    };
    let (Some(was), Some(is)) = (&old.metadata, &new.metadata) else {
        return Some(Trigger::SpecChanged);
    };
    if was.uid != is.uid || was.generation != is.generation || old.spec != new.spec {
        Some(Trigger::SpecChanged)
    } else if was.revision != is.revision || old != new {
        Some(Trigger::ObjectChanged)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::rube::Metadata;

    fn object(name: &str, uid: &str, generation: u64, revision: u64) -> Object {
        Object {
            metadata: Some(Metadata {
                namespace: "ns".into(),
                name: name.into(),
                uid: uid.into(),
                generation,
                revision,
                ..Default::default()
            }),
            spec: None,
            status: None,
        }
    }

    fn key(name: &str) -> Key {
        Key::new("", "ns", name)
    }

    /// What the tests compare: which keys changed and how.
    fn triggers(changed: Vec<Changed>) -> Vec<(Key, Trigger)> {
        changed.into_iter().map(|c| (c.key, c.trigger)).collect()
    }

    fn sorted(changed: Vec<Changed>) -> Vec<(Key, Trigger)> {
        let mut changed = triggers(changed);
        changed.sort();
        changed
    }

    #[test]
    fn puts_say_whether_the_spec_changed() {
        let (mut writer, cache) = new();
        let created = triggers(writer.apply(Change::Put(object("a", "u1", 1, 2))));
        assert_eq!(created, vec![(key("a"), Trigger::SpecChanged)]);
        let status_only = triggers(writer.apply(Change::Put(object("a", "u1", 1, 3))));
        assert_eq!(status_only, vec![(key("a"), Trigger::ObjectChanged)]);
        let new_generation = triggers(writer.apply(Change::Put(object("a", "u1", 2, 4))));
        assert_eq!(new_generation, vec![(key("a"), Trigger::SpecChanged)]);
        let recreated = triggers(writer.apply(Change::Put(object("a", "u2", 2, 6))));
        assert_eq!(recreated, vec![(key("a"), Trigger::SpecChanged)]);
        assert_eq!(
            cache.get(&key("a")).unwrap().metadata.as_ref().unwrap().uid,
            "u2"
        );
        assert_eq!(cache.revision(), Some(6));

        let deleted = triggers(writer.apply(Change::Delete(object("a", "u2", 2, 7))));
        assert_eq!(deleted, vec![(key("a"), Trigger::SpecChanged)]);
        assert!(cache.get(&key("a")).is_none());
        assert_eq!(cache.revision(), Some(7));
    }

    #[test]
    fn a_relist_triggers_only_what_changed_and_what_vanished() {
        let (mut writer, cache) = new();
        writer.apply(Change::Replace {
            objects: vec![
                object("same", "u1", 1, 2),
                object("status", "u2", 1, 3),
                object("gone", "u3", 1, 4),
            ],
            revision: 4,
        });
        let changed = writer.apply(Change::Replace {
            objects: vec![
                object("same", "u1", 1, 2),
                object("status", "u2", 1, 8),
                object("new", "u4", 1, 9),
            ],
            revision: 10,
        });
        assert_eq!(
            sorted(changed),
            vec![
                (key("gone"), Trigger::SpecChanged),
                (key("new"), Trigger::SpecChanged),
                (key("status"), Trigger::ObjectChanged),
            ]
        );
        let mut keys = cache.keys();
        keys.sort();
        assert_eq!(keys, vec![key("new"), key("same"), key("status")]);
        assert_eq!(cache.revision(), Some(10));
    }

    #[tokio::test]
    async fn readers_wait_for_the_first_list_and_for_a_revision() {
        let (mut writer, cache) = new();
        assert_eq!(cache.revision(), None);
        let waiting = tokio::spawn({
            let cache = cache.clone();
            async move { cache.wait_for(5).await }
        });
        writer.apply(Change::Replace {
            objects: vec![],
            revision: 3,
        });
        assert!(cache.ready().await);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "revision 3 is not 5");
        writer.apply(Change::Bookmark(5));
        assert!(waiting.await.unwrap());
        // A bookmark never moves the revision back.
        writer.apply(Change::Bookmark(4));
        assert_eq!(cache.revision(), Some(5));
    }
}
