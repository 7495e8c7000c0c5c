//! Watch fan-out for backends that keep their own event log (sqlite).
//!
//! A watcher first catches up from the backend's history, page by page, then subscribes to the
//! hub for live events. The writer publishes each committed batch to the hub under one lock, in
//! revision order. A subscriber's buffer is bounded: when it is full, the hub drops the
//! subscriber and the watcher goes back to catching up from history where it left off, so a
//! slow client costs disk reads, never unbounded memory. If the history it needs is compacted
//! meanwhile, the watch ends with `Compacted`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rubeapi::rube::{Bookmark, WatchEvent, watch_event};
use rubeapi::selector::Filter;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{Event, Revision, WatchStream};
use crate::Error;

/// Events a history read returns at most; also bounds a catching-up watcher's memory.
pub const PAGE: usize = 512;

/// A page of history.
#[derive(Debug, Default)]
pub struct Page {
    /// Events with revision > `after`, in order, whose type, namespace and name match the filter
    /// (labels are not applied: a put that stops matching must still be seen).
    pub events: Vec<Arc<Event>>,
    /// Every event up to this revision has been looked at: the read's snapshot revision when
    /// the page is not full, else the last event's revision.
    pub complete_to: Revision,
}

/// A backend's event log.
pub trait History: Send + Sync + 'static {
    /// Reads up to `limit` events after `after`.
    ///
    /// # Errors
    /// `Compacted` when `after` is older than the compaction point.
    fn read(
        &self,
        filter: &Filter,
        after: Revision,
        limit: usize,
    ) -> impl Future<Output = Result<Page, Error>> + Send;
}

enum Signal {
    Event(Arc<Event>),
    /// Every event up to this revision has been sent to this subscriber.
    Progress(Revision),
}

struct Subscriber {
    filter: Arc<Filter>,
    tx: mpsc::Sender<Signal>,
}

struct State {
    published: Revision,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
}

/// Live fan-out of committed events.
pub struct Hub {
    state: Mutex<State>,
    buffer: usize,
    /// Subscribers dropped because their buffer was full.
    demoted: AtomicU64,
}

/// How watchers behave.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Events buffered per live watcher before it is demoted to catching up from history.
    pub buffer: usize,
    /// A quiet watch gets a bookmark about this often.
    pub bookmark_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            buffer: 1024,
            bookmark_interval: Duration::from_secs(10),
        }
    }
}

impl Hub {
    pub fn new(revision: Revision, buffer: usize) -> Hub {
        Hub {
            state: Mutex::new(State {
                published: revision,
                next_id: 0,
                subscribers: HashMap::new(),
            }),
            buffer,
            demoted: AtomicU64::new(0),
        }
    }

    /// How many times a slow watcher was sent back to reading history.
    pub fn demoted(&self) -> u64 {
        self.demoted.load(Ordering::Relaxed)
    }

    /// The revision up to which events have been published.
    pub fn published(&self) -> Revision {
        self.state.lock().expect("hub lock").published
    }

    /// Live watchers.
    pub fn subscribers(&self) -> usize {
        self.state.lock().expect("hub lock").subscribers.len()
    }

    /// Publishes committed events (in revision order) and the revision they bring the store to.
    /// A subscriber whose buffer is full is dropped; its watcher catches up from history.
    pub fn publish(&self, events: &[Arc<Event>], revision: Revision) {
        let mut state = self.state.lock().expect("hub lock");
        let before = state.subscribers.len();
        state.subscribers.retain(|_, subscriber| {
            events.iter().all(|event| {
                if event.seen_by(&subscriber.filter).is_none() {
                    return true;
                }
                subscriber.tx.try_send(Signal::Event(event.clone())).is_ok()
            })
        });
        let dropped = before - state.subscribers.len();
        if dropped > 0 {
            self.demoted.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        state.published = state.published.max(revision);
    }

    /// Tells every subscriber how far it is up to date, for bookmarks.
    pub fn progress(&self) {
        let mut state = self.state.lock().expect("hub lock");
        let published = state.published;
        // A full buffer only means this progress note is skipped; the next one will do.
        state.subscribers.retain(|_, s| {
            !matches!(
                s.tx.try_send(Signal::Progress(published)),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }

    /// Subscribes a watcher that has seen everything up to `seen`, or returns `None` when more
    /// has been published since and the watcher must read history first.
    fn subscribe(&self, filter: Arc<Filter>, seen: Revision) -> Option<mpsc::Receiver<Signal>> {
        let mut state = self.state.lock().expect("hub lock");
        if state.published > seen {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.insert(id, Subscriber { filter, tx });
        Some(rx)
    }
}

/// Starts a watcher task and returns its stream.
pub fn watch<H: History>(
    history: Arc<H>,
    hub: Arc<Hub>,
    options: WatchOptions,
    filter: Filter,
    from: Option<Revision>,
    cancel: CancellationToken,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(64);
    let start = from.unwrap_or_else(|| hub.published());
    if from.is_none() {
        // Tell the client where "now" is, so it can resume from there after a disconnect.
        let bookmark = watch_event::Event::Bookmark(Bookmark { revision: start });
        let _ = tx.try_send(Ok(WatchEvent {
            event: Some(bookmark),
        }));
    }
    tokio::spawn(async move {
        let watcher = Watcher {
            history,
            hub,
            options,
            filter: Arc::new(filter),
            tx,
            last: start,
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            () = watcher.run() => {}
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

struct Watcher<H> {
    history: Arc<H>,
    hub: Arc<Hub>,
    options: WatchOptions,
    filter: Arc<Filter>,
    tx: mpsc::Sender<Result<WatchEvent, Error>>,
    /// Every matching event up to here has been sent.
    last: Revision,
}

/// The client went away.
struct Gone;

impl<H: History> Watcher<H> {
    async fn run(mut self) {
        loop {
            match self.catch_up().await {
                Ok(()) => {}
                Err(CatchUpError::Gone) => return,
                Err(CatchUpError::Store(error)) => {
                    let _ = self.tx.send(Err(error)).await;
                    return;
                }
            }
            let Some(rx) = self.hub.subscribe(self.filter.clone(), self.last) else {
                continue;
            };
            if self.live(rx).await.is_err() {
                return;
            }
        }
    }

    async fn catch_up(&mut self) -> Result<(), CatchUpError> {
        loop {
            let page = self
                .history
                .read(&self.filter, self.last, PAGE)
                .await
                .map_err(CatchUpError::Store)?;
            let full = page.events.len() == PAGE;
            for event in page.events {
                if let Some(out) = event.for_filter(&self.filter) {
                    self.send(out).await.map_err(|_| CatchUpError::Gone)?;
                }
                self.last = event.revision;
            }
            self.last = self.last.max(page.complete_to);
            if !full {
                return Ok(());
            }
        }
    }

    /// Forwards live events until the hub drops this subscriber (Ok: catch up again) or the
    /// client goes away (Err).
    async fn live(&mut self, mut rx: mpsc::Receiver<Signal>) -> Result<(), Gone> {
        let mut last_sent = Instant::now();
        loop {
            let signal = tokio::select! {
                signal = rx.recv() => signal,
                () = self.tx.closed() => return Err(Gone),
            };
            match signal {
                None => return Ok(()),
                Some(Signal::Event(event)) => {
                    if event.revision <= self.last {
                        continue;
                    }
                    if let Some(out) = event.for_filter(&self.filter) {
                        self.send(out).await?;
                        last_sent = Instant::now();
                    }
                    self.last = event.revision;
                }
                Some(Signal::Progress(revision)) => {
                    self.last = self.last.max(revision);
                    if last_sent.elapsed() >= self.options.bookmark_interval {
                        let bookmark = watch_event::Event::Bookmark(Bookmark {
                            revision: self.last,
                        });
                        self.send(WatchEvent {
                            event: Some(bookmark),
                        })
                        .await?;
                        last_sent = Instant::now();
                    }
                }
            }
        }
    }

    async fn send(&self, event: WatchEvent) -> Result<(), Gone> {
        self.tx.send(Ok(event)).await.map_err(|_| Gone)
    }
}

enum CatchUpError {
    Store(Error),
    Gone,
}

/// Sends progress notes to every subscriber about twice per bookmark interval, until cancelled.
pub fn spawn_progress_ticker(hub: Arc<Hub>, options: WatchOptions, cancel: CancellationToken) {
    let period = (options.bookmark_interval / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => hub.progress(),
            }
        }
    });
}
