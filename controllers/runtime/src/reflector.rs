//! The [`Reflector`]: runs the [`crate::watcher`] state machine against the apiserver, keeps a
//! [`Cache`] and reports the keys that change.
//!
//! This is the only module that lists and watches. It decides nothing itself: which call to
//! make next and what a result means is [`watcher::step`]'s job; this module performs the call,
//! sleeps the reconnect backoff (jittered, reset whenever the apiserver answers), and applies the
//! resulting change to the cache.

use std::pin::Pin;
use std::sync::Arc;

use backon::BackoffBuilder;
use futures::{Stream, StreamExt};
use rubeapi::Client;
use rubeapi::rube::{Selector, WatchEvent};
use tokio_util::sync::CancellationToken;

use crate::Backoff;
use crate::cache::{self, Cache, CacheWriter, Changed};
use crate::metrics::ControllerMetrics;
use crate::mirror::Mirror;
use crate::watcher::{self, Change, Input, State};

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, rubeapi::Error>> + Send>>;

/// Lists and watches one selector into a cache.
#[derive(Debug)]
pub struct Reflector {
    client: Client,
    selector: Selector,
    writer: CacheWriter,
    reconnect: Backoff,
    metrics: ControllerMetrics,
    mirror: Option<Arc<dyn Mirror>>,
}

impl Reflector {
    /// A reflector of the objects `selector` chooses, and a read handle on its cache.
    /// `reconnect` paces retries after failed calls and disconnects.
    pub fn new(client: Client, selector: Selector, reconnect: Backoff) -> (Reflector, Cache) {
        let (writer, cache) = cache::new();
        (
            Reflector::filling(client, selector, writer, reconnect),
            cache,
        )
    }

    /// A reflector that fills a cache made beforehand (a secondary watch's, whose read handle
    /// the controller holds before the runtime connects).
    pub fn filling(
        client: Client,
        selector: Selector,
        writer: CacheWriter,
        reconnect: Backoff,
    ) -> Reflector {
        Reflector {
            client,
            selector,
            writer,
            reconnect,
            metrics: ControllerMetrics::default(),
            mirror: None,
        }
    }

    /// Counts lists and watches and tracks the revision in `metrics`.
    pub fn with_metrics(mut self, metrics: ControllerMetrics) -> Reflector {
        self.metrics = metrics;
        self
    }

    /// Keeps a durable copy of the cache in `mirror`, and starts from what it holds.
    pub fn with_mirror(mut self, mirror: Arc<dyn Mirror>) -> Reflector {
        self.mirror = Some(mirror);
        self
    }

    /// Fills the cache from the mirror, if it holds anything, and returns where to go on:
    /// watching from the mirror's revision, or listing.
    fn seed(&mut self, on_change: &mut impl FnMut(Changed)) -> State {
        let Some(mirror) = &self.mirror else {
            return State::Listing;
        };
        match mirror.load() {
            Ok(Some((objects, revision))) => {
                tracing::info!(
                    objects = objects.len(),
                    revision,
                    selector = ?self.selector,
                    "cache seeded from the local mirror"
                );
                for changed in self.writer.apply(Change::Replace { objects, revision }) {
                    on_change(changed);
                }
                State::Watching { from: revision }
            }
            Ok(None) => State::Listing,
            Err(error) => {
                tracing::warn!(%error, "cannot load the local mirror; listing instead");
                State::Listing
            }
        }
    }

    /// Runs until `cancel` fires, calling `on_change` for every key that changes, in order,
    /// after the cache holds the change.
    ///
    /// With a mirror that holds a copy, the cache is filled from it first (triggering every
    /// key) and the watch resumes from its revision; every change is saved to the mirror after
    /// it is applied.
    pub async fn run(mut self, mut on_change: impl FnMut(Changed), cancel: CancellationToken) {
        let mut state = self.seed(&mut on_change);
        let mut stream: Option<WatchStream> = None;
        let mut backoff = self.reconnect.jittered().build();
        loop {
            let input = tokio::select! {
                () = cancel.cancelled() => return,
                input = self.next_input(state, &mut stream, &mut backoff) => input,
            };
            let answered = matches!(input, Input::Listed { .. } | Input::Event(_));
            if answered {
                backoff = self.reconnect.jittered().build();
            }
            if let Input::Failed(error) = &input {
                tracing::warn!(?state, %error, selector = ?self.selector, "list or watch failed");
            }
            if matches!(input, Input::Listed { .. }) {
                self.metrics.lists.inc();
            }
            let (next, change) = watcher::step(state, input);
            if !matches!(next, State::Watching { .. }) {
                // Only `Watching` reads the stream; anything else starts over with a new one.
                stream = None;
            }
            if let Some(change) = change {
                let saved = self
                    .mirror
                    .as_ref()
                    .map(|mirror| (mirror.clone(), change.clone()));
                for changed in self.writer.apply(change) {
                    on_change(changed);
                }
                if let Some((mirror, change)) = saved
                    && let Err(error) = mirror.save(&change)
                {
                    tracing::warn!(%error, "cannot save to the local mirror; it lags");
                }
                if let Some(revision) = self.writer.revision() {
                    self.metrics.revision.set(revision as i64);
                }
            }
            if next != state {
                tracing::debug!(from = ?state, to = ?next, "reflector");
            }
            state = next;
        }
    }

    /// Performs the I/O that `state` calls for and returns what it produced.
    async fn next_input(
        &self,
        state: State,
        stream: &mut Option<WatchStream>,
        backoff: &mut backon::ExponentialBackoff,
    ) -> Input {
        match state {
            State::Listing => match self.client.list(self.selector.clone()).await {
                Ok(list) => Input::Listed {
                    objects: list.objects,
                    revision: list.revision,
                },
                Err(error) => Input::Failed(error),
            },
            State::Watching { from } => {
                if stream.is_none() {
                    match self.client.watch(self.selector.clone(), Some(from)).await {
                        Ok(opened) => {
                            self.metrics.watches.inc();
                            *stream = Some(Box::pin(opened));
                        }
                        Err(error) => return Input::Failed(error),
                    }
                }
                let Some(open) = stream.as_mut() else {
                    return Input::Ended;
                };
                match open.next().await {
                    Some(Ok(WatchEvent { event: Some(event) })) => Input::Event(event),
                    // An empty event carries nothing; reading on is the same as a bookmark at
                    // the current revision.
                    Some(Ok(WatchEvent { event: None })) => {
                        Input::Event(rubeapi::rube::watch_event::Event::Bookmark(
                            rubeapi::rube::Bookmark { revision: from },
                        ))
                    }
                    Some(Err(error)) => Input::Failed(error),
                    None => Input::Ended,
                }
            }
            State::Backoff { .. } => {
                let delay = backoff.next().unwrap_or(self.reconnect.max);
                tokio::time::sleep(delay).await;
                Input::Waited
            }
        }
    }
}
