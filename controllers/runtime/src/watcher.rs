//! The reflector's state machine: list, then watch from the list's revision; relist when the
//! history is compacted; back off and resume from the last seen revision after a disconnect.
//!
//! [`step`] is pure: it takes the state and what the last I/O produced, and returns the next
//! state and the change to apply to the cache. The I/O itself (which call to make in each
//! state, how long to sleep) lives in [`crate::reflector`]; nothing here touches the network or
//! the clock.

use rubeapi::object::ObjectExt;
use rubeapi::rube::{Object, watch_event};

/// Where the reflector is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Next: list everything the selector matches.
    Listing,
    /// Next: read (opening it first if needed) a watch of every change after `from`, the last
    /// revision the cache is consistent at.
    Watching { from: u64 },
    /// The last call failed. Next: wait, then watch from `from`, or relist when `from` is
    /// `None` (nothing has been listed yet).
    Backoff { from: Option<u64> },
}

/// What the last I/O produced.
// One input exists at a time and is consumed at once: boxing the event would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Input {
    /// A list succeeded: every matching object, consistent at `revision`.
    Listed { objects: Vec<Object>, revision: u64 },
    /// The open watch delivered an event.
    Event(watch_event::Event),
    /// A list, a watch call or the watch stream failed.
    Failed(rubeapi::Error),
    /// The watch stream ended without an error (the apiserver shut down).
    Ended,
    /// The backoff delay has passed.
    Waited,
}

/// What to apply to the cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Replace everything: the result of a (re)list, consistent at `revision`.
    Replace { objects: Vec<Object>, revision: u64 },
    /// An object was created or changed.
    Put(Object),
    /// An object was deleted (or stopped matching the selector), as it was at deletion.
    Delete(Object),
    /// Nothing changed up to `revision`.
    Bookmark(u64),
}

/// The next state, and the change to the cache, if any.
///
/// An input that does not belong to the state (an event while listing, say) cannot come from
/// the reflector's driver; it is ignored and the state stays as it was.
pub fn step(state: State, input: Input) -> (State, Option<Change>) {
    match (state, input) {
        (State::Listing, Input::Listed { objects, revision }) => (
            State::Watching { from: revision },
            Some(Change::Replace { objects, revision }),
        ),
        (State::Listing, Input::Failed(_)) => (State::Backoff { from: None }, None),

        (State::Watching { from }, Input::Event(event)) => match event {
            watch_event::Event::Update(object) => (
                State::Watching {
                    from: object.revision().max(from),
                },
                Some(Change::Put(object)),
            ),
            watch_event::Event::Delete(object) => (
                State::Watching {
                    from: object.revision().max(from),
                },
                Some(Change::Delete(object)),
            ),
            watch_event::Event::Bookmark(bookmark) => {
                let from = bookmark.revision.max(from);
                (State::Watching { from }, Some(Change::Bookmark(from)))
            }
        },
        // The history after `from` is gone: only a fresh list can tell what changed. There is
        // nothing to wait for, so relist at once.
        (State::Watching { .. }, Input::Failed(rubeapi::Error::Compacted { .. })) => {
            (State::Listing, None)
        }
        // Disconnects, apiserver restarts, timeouts: everything up to `from` is in the cache,
        // so resume from there after a pause.
        (State::Watching { from }, Input::Failed(_) | Input::Ended) => {
            (State::Backoff { from: Some(from) }, None)
        }

        (State::Backoff { from }, Input::Waited) => match from {
            Some(from) => (State::Watching { from }, None),
            None => (State::Listing, None),
        },

        (state, _) => (state, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::rube::{Bookmark, Metadata};

    fn object(name: &str, revision: u64) -> Object {
        Object {
            metadata: Some(Metadata {
                namespace: "ns".into(),
                name: name.into(),
                revision,
                ..Default::default()
            }),
            spec: None,
            status: None,
        }
    }

    fn unavailable() -> Input {
        Input::Failed(rubeapi::Error::Unavailable(tonic::Status::unavailable(
            "connection reset",
        )))
    }

    fn update(name: &str, revision: u64) -> Input {
        Input::Event(watch_event::Event::Update(object(name, revision)))
    }

    #[test]
    fn a_list_is_followed_by_a_watch_from_its_revision() {
        let (state, change) = step(
            State::Listing,
            Input::Listed {
                objects: vec![object("a", 3)],
                revision: 7,
            },
        );
        assert_eq!(state, State::Watching { from: 7 });
        assert_eq!(
            change,
            Some(Change::Replace {
                objects: vec![object("a", 3)],
                revision: 7
            })
        );
    }

    #[test]
    fn events_and_bookmarks_advance_the_revision() {
        let (state, change) = step(State::Watching { from: 7 }, update("a", 8));
        assert_eq!(state, State::Watching { from: 8 });
        assert_eq!(change, Some(Change::Put(object("a", 8))));

        let deleted = Input::Event(watch_event::Event::Delete(object("a", 9)));
        let (state, change) = step(state, deleted);
        assert_eq!(state, State::Watching { from: 9 });
        assert_eq!(change, Some(Change::Delete(object("a", 9))));

        let bookmark = Input::Event(watch_event::Event::Bookmark(Bookmark { revision: 12 }));
        let (state, change) = step(state, bookmark);
        assert_eq!(state, State::Watching { from: 12 });
        assert_eq!(change, Some(Change::Bookmark(12)));
    }

    #[test]
    fn compacted_history_relists_at_once() {
        let compacted = Input::Failed(rubeapi::Error::Compacted {
            requested: 7,
            compacted: 20,
        });
        let (state, change) = step(State::Watching { from: 7 }, compacted);
        assert_eq!(state, State::Listing);
        assert_eq!(change, None);

        let (state, change) = step(
            state,
            Input::Listed {
                objects: vec![],
                revision: 25,
            },
        );
        assert_eq!(state, State::Watching { from: 25 });
        assert!(matches!(change, Some(Change::Replace { revision: 25, .. })));
    }

    #[test]
    fn a_disconnect_backs_off_then_resumes_from_the_last_seen_revision() {
        let (state, _) = step(State::Watching { from: 7 }, update("a", 8));
        let bookmark = Input::Event(watch_event::Event::Bookmark(Bookmark { revision: 10 }));
        let (state, _) = step(state, bookmark);

        let (state, change) = step(state, unavailable());
        assert_eq!(state, State::Backoff { from: Some(10) });
        assert_eq!(change, None);

        // The watch call fails again while the apiserver is down: still from 10.
        let (state, _) = step(state, Input::Waited);
        assert_eq!(state, State::Watching { from: 10 });
        let (state, _) = step(state, unavailable());
        assert_eq!(state, State::Backoff { from: Some(10) });

        let (state, _) = step(state, Input::Waited);
        assert_eq!(state, State::Watching { from: 10 });
    }

    #[test]
    fn a_stream_that_ends_cleanly_resumes_too() {
        let (state, change) = step(State::Watching { from: 4 }, Input::Ended);
        assert_eq!(state, State::Backoff { from: Some(4) });
        assert_eq!(change, None);
    }

    #[test]
    fn a_failed_first_list_backs_off_then_lists_again() {
        let (state, _) = step(State::Listing, unavailable());
        assert_eq!(state, State::Backoff { from: None });
        let (state, _) = step(state, Input::Waited);
        assert_eq!(state, State::Listing);
    }

    #[test]
    fn the_revision_never_goes_back() {
        // A bookmark older than an event already seen must not rewind the resume point.
        let bookmark = Input::Event(watch_event::Event::Bookmark(Bookmark { revision: 5 }));
        let (state, change) = step(State::Watching { from: 9 }, bookmark);
        assert_eq!(state, State::Watching { from: 9 });
        assert_eq!(change, Some(Change::Bookmark(9)));
    }

    #[test]
    fn inputs_that_do_not_belong_to_the_state_are_ignored() {
        assert_eq!(step(State::Listing, update("a", 1)).0, State::Listing);
        assert_eq!(
            step(State::Backoff { from: Some(3) }, update("a", 4)).0,
            State::Backoff { from: Some(3) }
        );
        assert_eq!(
            step(State::Watching { from: 3 }, Input::Waited).0,
            State::Watching { from: 3 }
        );
    }
}
