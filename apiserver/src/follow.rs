//! [`spawn`]: keep something derived from stored objects (the type registry, the RBAC policy)
//! in step with them, whichever apiserver writes them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rubeapi::rube::watch_event::Event;
use rubeapi::selector::Filter;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::store::Store;

/// Runs `refresh` at once and after every change to what `filters` choose, until `cancel`;
/// a broken watch is opened again a second later (refreshing first, so nothing is missed).
/// `what` names the derived thing in warnings. The task holds the store until it ends: await
/// it before reopening the store.
pub fn spawn<S, F, Fut>(
    store: Arc<S>,
    filters: Vec<Filter>,
    what: &'static str,
    cancel: CancellationToken,
    refresh: F,
) -> tokio::task::JoinHandle<()>
where
    S: Store,
    F: Fn(Arc<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    tokio::spawn(async move {
        let reload = |store: Arc<S>| {
            let done = refresh(store);
            async move {
                if let Err(error) = done.await {
                    tracing::warn!(%error, "cannot load {what}");
                }
            }
        };
        loop {
            reload(store.clone()).await;
            let mut streams = Vec::new();
            for filter in &filters {
                match store
                    .watch(filter.clone(), None, cancel.child_token())
                    .await
                {
                    Ok(stream) => streams.push(stream),
                    Err(error) => tracing::warn!(%error, "cannot watch for {what}"),
                }
            }
            let mut events = futures::stream::select_all(streams);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    event = events.next() => match event {
                        Some(Ok(e)) if !matches!(e.event, Some(Event::Bookmark(_))) => {
                            reload(store.clone()).await;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}
