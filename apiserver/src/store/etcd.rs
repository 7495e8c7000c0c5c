//! The etcd backend: several apiservers share one etcd cluster, and revisions, watch, CAS and
//! compaction map onto etcd's own.
//!
//! Layout: `{prefix}/o/{type}/{namespace}/{name}` holds an encoded `Object`; its `revision` and
//! `create_revision` are etcd's `mod_revision` and `create_revision`, filled in on every read,
//! so they are never stale. `{prefix}/meta/compacted` records the last compaction.
//!
//! Every change is planned with the shared rules (`core`) against what was read, then committed
//! in one etcd transaction that compares each key's `mod_revision` with what was read: if
//! another apiserver changed one meanwhile, the change is re-read and re-planned. Changes of one
//! `Apply` therefore share one etcd revision, and several puts to one key in one `Apply` are
//! seen by watchers as one event.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, Txn, TxnOp,
    WatchOptions as EtcdWatchOptions,
};
use prost::Message;
use prost_types::{Any, Timestamp};
use rubeapi::Registry;
use rubeapi::rube::{Bookmark, Metadata, Object, Outcome, WatchEvent, watch_event};
use rubeapi::selector::Filter;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::core::{self, Plan, Stamp};
use super::{
    Compaction, Event, EventKind, Expect, Key, Listing, Op, Revision, Store, WatchStream, Written,
};
use crate::Error;

/// How many times a change is re-planned when other writers keep winning.
const MAX_ATTEMPTS: usize = 32;

/// Settings of the etcd backend.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix; apiservers sharing a cluster must agree on it.
    pub prefix: String,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/rube".into(),
        }
    }
}

/// The etcd `Store`.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    registry: Registry,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn is_transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

fn unavailable(error: etcd_client::Error) -> Error {
    Error::Unavailable(format!("etcd: {error}"))
}

impl EtcdStore {
    /// Connects to the cluster.
    ///
    /// # Errors
    /// `Unavailable` when no endpoint answers.
    pub async fn connect(options: EtcdOptions, registry: Registry) -> Result<EtcdStore, Error> {
        let connect = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let mut client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(unavailable)?;
        // Fail now, not at the first request, when nothing answers.
        client.status().await.map_err(unavailable)?;
        Ok(EtcdStore {
            client,
            prefix: options.prefix.trim_end_matches('/').to_owned(),
            registry,
        })
    }

    /// Runs an etcd call, retrying when it could not reach a member: with a member down, the
    /// client's balancer may still pick it for a while. A refused connection sent nothing; any
    /// other retried write is guarded by its transaction's compares.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(10)
            .with_jitter();
        (|| call(self.client.clone()))
            .retry(policy)
            .when(is_transient)
            .await
            .map_err(unavailable)
    }

    fn object_key(&self, key: &Key) -> String {
        format!(
            "{}/o/{}/{}/{}",
            self.prefix, key.type_name, key.namespace, key.name
        )
    }

    /// The narrowest key prefix that holds every object a filter can match.
    fn filter_prefix(&self, filter: &Filter) -> String {
        match (
            filter.type_name.is_empty(),
            filter.namespace.is_empty(),
            filter.name.is_empty(),
        ) {
            (true, _, _) => format!("{}/o/", self.prefix),
            (false, true, _) => format!("{}/o/{}/", self.prefix, filter.type_name),
            (false, false, true) => format!(
                "{}/o/{}/{}/",
                self.prefix, filter.type_name, filter.namespace
            ),
            (false, false, false) => format!(
                "{}/o/{}/{}/{}",
                self.prefix, filter.type_name, filter.namespace, filter.name
            ),
        }
    }

    fn compacted_key(&self) -> String {
        format!("{}/meta/compacted", self.prefix)
    }

    /// The object and its mod revision, or `None`.
    async fn read(&self, key: &Key) -> Result<Option<(Object, i64)>, Error> {
        let etcd_key = self.object_key(key);
        let response = self
            .call(|mut c| {
                let etcd_key = etcd_key.clone();
                async move { c.get(etcd_key, None).await }
            })
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| decode(kv).map(|o| (o, kv.mod_revision())))
            .transpose()
    }

    /// Plans changes against fresh reads and commits them in one transaction guarded by the
    /// mod revisions read, re-planning when another writer got there first.
    async fn change<T>(
        &self,
        keys: &[Key],
        plan: impl Fn(&mut Staging<'_>) -> Result<T, Error>,
    ) -> Result<(T, Vec<Written>), Error> {
        for _ in 0..MAX_ATTEMPTS {
            let mut read = BTreeMap::new();
            for key in keys {
                if !read.contains_key(key) {
                    read.insert(key.clone(), self.read(key).await?);
                }
            }
            let mut staging = Staging {
                registry: &self.registry,
                read: &read,
                staged: BTreeMap::new(),
                guarded: Vec::new(),
                written: Vec::new(),
            };
            let answer = plan(&mut staging)?;
            let Staging {
                staged,
                guarded,
                mut written,
                ..
            } = staging;
            if staged.is_empty() {
                return Ok((answer, written.into_iter().map(|s| s.written).collect()));
            }
            // Every key written, and every key a `Check` guards, must still be as it was read.
            let compared = staged
                .keys()
                .chain(guarded.iter().filter(|k| !staged.contains_key(*k)));
            let compares: Vec<Compare> = compared
                .map(|key| {
                    let etcd_key = self.object_key(key);
                    match read.get(key).and_then(Option::as_ref) {
                        Some((_, mod_revision)) => {
                            Compare::mod_revision(etcd_key, CompareOp::Equal, *mod_revision)
                        }
                        None => Compare::version(etcd_key, CompareOp::Equal, 0),
                    }
                })
                .collect();
            let mut ops = Vec::new();
            for (key, after) in &staged {
                let etcd_key = self.object_key(key);
                ops.push(match after {
                    Some(object) => TxnOp::put(etcd_key, stored_form(object), None),
                    None => TxnOp::delete(etcd_key, None),
                });
            }
            let txn = Txn::new().when(compares).and_then(ops);
            let response = self
                .call(|mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            if !response.succeeded() {
                continue;
            }
            let revision = response.header().map_or(0, |h| h.revision()) as u64;
            for staged in written.iter_mut().filter(|s| s.changed) {
                let m = staged
                    .written
                    .object
                    .metadata
                    .get_or_insert_with(Default::default);
                m.revision = revision;
                if staged.written.outcome == Outcome::Created {
                    m.create_revision = revision;
                }
            }
            return Ok((answer, written.into_iter().map(|s| s.written).collect()));
        }
        Err(Error::Unavailable(format!(
            "gave up after {MAX_ATTEMPTS} attempts: other writers kept changing the same objects"
        )))
    }
}

/// What one change wrote, before its revision is known.
struct Staged {
    written: Written,
    /// It takes the transaction's revision (it is not `Unchanged`).
    changed: bool,
}

/// Changes planned against one set of reads.
struct Staging<'a> {
    registry: &'a Registry,
    read: &'a BTreeMap<Key, Option<(Object, i64)>>,
    /// The final state of every changed key: `None` deletes it.
    staged: BTreeMap<Key, Option<Object>>,
    /// Keys a `Check` read: unchanged since, or the transaction fails.
    guarded: Vec<Key>,
    written: Vec<Staged>,
}

impl Staging<'_> {
    fn current(&self, key: &Key) -> Option<Object> {
        match self.staged.get(key) {
            Some(after) => after.clone(),
            None => self
                .read
                .get(key)
                .and_then(Option::as_ref)
                .map(|(o, _)| o.clone()),
        }
    }

    fn stamp() -> Stamp {
        // The revision is etcd's, known after the commit; `change` fills it in.
        Stamp {
            revision: 0,
            now: Timestamp::from(SystemTime::now()),
            uid: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Records a `Check` of `key` that held when read.
    fn guard(&mut self, key: Key, written: Written) {
        self.guarded.push(key);
        self.written.push(Staged {
            written,
            changed: false,
        });
    }

    fn perform(&mut self, key: Key, plan: Plan) {
        let staged = match plan {
            Plan::Unchanged { object, outcome } => Staged {
                written: Written { object, outcome },
                changed: false,
            },
            Plan::Write {
                object, outcome, ..
            } => {
                self.staged.insert(key, Some(object.clone()));
                Staged {
                    written: Written { object, outcome },
                    changed: true,
                }
            }
            Plan::Remove { object } => {
                self.staged.insert(key, None);
                Staged {
                    written: Written {
                        object,
                        outcome: Outcome::Deleted,
                    },
                    changed: true,
                }
            }
        };
        self.written.push(staged);
    }
}

/// Objects are stored without the revisions etcd keeps for them.
fn stored_form(object: &Object) -> Vec<u8> {
    let mut object = object.clone();
    if let Some(m) = object.metadata.as_mut() {
        m.revision = 0;
        m.create_revision = 0;
    }
    object.encode_to_vec()
}

fn decode(kv: &KeyValue) -> Result<Object, Error> {
    let mut object = Object::decode(kv.value())?;
    let m = object.metadata.get_or_insert_with(Default::default);
    m.revision = kv.mod_revision() as u64;
    m.create_revision = kv.create_revision() as u64;
    Ok(object)
}

impl Store for EtcdStore {
    async fn transact(&self, ops: Vec<Op>) -> Result<Vec<Written>, Error> {
        let keys: Vec<Key> = ops.iter().map(Op::key).collect();
        let count = ops.len();
        let ((), written) = self
            .change(&keys, |staging| {
                for (index, op) in ops.iter().enumerate() {
                    let key = keys[index].clone();
                    let existing = staging.current(&key);
                    let plan =
                        core::plan_op(staging.registry, existing.as_ref(), op, &Staging::stamp())
                            .map_err(|e| e.in_batch(index, count, &key))?;
                    match plan {
                        Some(plan) => staging.perform(key, plan),
                        None => staging.guard(key, core::checked(existing.as_ref())),
                    }
                }
                Ok(())
            })
            .await?;
        Ok(written)
    }

    async fn get(&self, key: Key) -> Result<Object, Error> {
        self.read(&key)
            .await?
            .map(|(o, _)| o)
            .ok_or(Error::NotFound { key })
    }

    async fn list(&self, filter: Filter) -> Result<Listing, Error> {
        let prefix = self.filter_prefix(&filter);
        let options = (!is_exact(&filter)).then(|| GetOptions::new().with_prefix());
        let response = self
            .call(|mut c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.get(prefix, options).await }
            })
            .await?;
        let revision = response.header().map_or(0, |h| h.revision()) as u64;
        let mut objects = Vec::new();
        for kv in response.kvs() {
            let object = decode(kv)?;
            if filter.matches(&object) {
                objects.push(object);
            }
        }
        objects.sort_by_cached_key(Key::of);
        Ok(Listing { objects, revision })
    }

    async fn delete(&self, key: Key, expect: Option<Expect>) -> Result<Written, Error> {
        let keys = [key.clone()];
        let ((), mut written) = self
            .change(&keys, |staging| {
                let existing = staging.current(&key);
                let plan = core::plan_delete(existing.as_ref(), &key, expect, &Staging::stamp())?;
                staging.perform(key.clone(), plan);
                Ok(())
            })
            .await?;
        Ok(written.remove(0))
    }

    async fn update_status(
        &self,
        key: Key,
        status: Any,
        expect: Option<Expect>,
    ) -> Result<Written, Error> {
        let keys = [key.clone()];
        let ((), mut written) = self
            .change(&keys, |staging| {
                let existing = staging.current(&key);
                let plan = core::plan_update_status(
                    staging.registry,
                    existing.as_ref(),
                    &key,
                    &status,
                    expect,
                    &Staging::stamp(),
                )?;
                staging.perform(key.clone(), plan);
                Ok(())
            })
            .await?;
        Ok(written.remove(0))
    }

    async fn watch(
        &self,
        filter: Filter,
        from: Option<Revision>,
        cancel: CancellationToken,
    ) -> Result<WatchStream, Error> {
        let bounds = self.revision().await?;
        let start = match from {
            Some(from) => {
                core::check_resume(Some(from), bounds.compacted)?;
                from
            }
            None => bounds.revision,
        };
        let prefix = self.filter_prefix(&filter);
        let exact = is_exact(&filter);
        let mut options = EtcdWatchOptions::new()
            .with_start_revision(start as i64 + 1)
            .with_prev_key();
        if !exact {
            options = options.with_prefix();
        }
        let mut etcd_stream = self
            .call(|mut c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.watch(prefix, Some(options)).await }
            })
            .await?;
        let (tx, rx) = mpsc::channel(64);
        if from.is_none() {
            let bookmark = watch_event::Event::Bookmark(Bookmark { revision: start });
            let _ = tx.try_send(Ok(WatchEvent {
                event: Some(bookmark),
            }));
        }
        let compacted = bounds.compacted;
        // No periodic bookmarks from etcd's progress notifications: some etcd 3.4 releases can
        // report progress at a revision ahead of events an unsynced watcher has not received
        // yet (an upstream bug), and a client resuming from such a bookmark would miss them.
        // Quiet etcd watches resume from their last event instead; only the first bookmark of
        // a watch "from now" is sent.
        tokio::spawn(async move {
            let mut last = start;
            loop {
                let message = tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tx.closed() => return,
                    message = etcd_stream.message() => message,
                };
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(Error::Unavailable("etcd ended the watch".into())))
                            .await;
                        return;
                    }
                    Err(error) => {
                        let _ = tx.send(Err(unavailable(error))).await;
                        return;
                    }
                };
                if response.canceled() {
                    let error = if response.compact_revision() > 0 {
                        Error::Compacted {
                            requested: last,
                            compacted: (response.compact_revision() as u64)
                                .saturating_sub(1)
                                .max(compacted),
                        }
                    } else {
                        Error::Unavailable(format!(
                            "etcd cancelled the watch: {}",
                            response.cancel_reason()
                        ))
                    };
                    let _ = tx.send(Err(error)).await;
                    return;
                }
                if response.events().is_empty() {
                    continue;
                }
                for event in response.events() {
                    let Some(converted) = convert(event) else {
                        continue;
                    };
                    last = last.max(converted.revision);
                    if let Some(out) = converted.for_filter(&filter)
                        && tx.send(Ok(out)).await.is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn compact(&self, revision: Revision) -> Result<Compaction, Error> {
        let bounds = self.revision().await?;
        core::check_compaction(revision, bounds.revision)?;
        if revision <= bounds.compacted {
            return Ok(bounds);
        }
        // etcd keeps, for every key, its newest version at the compaction revision; compacting
        // at `revision` itself (not one past it) keeps the versions that deletes after it need
        // as their previous value. Watches from before `revision` are refused from the recorded
        // compaction point, so the one revision etcd keeps is never served.
        let compacted = self
            .call(|mut c| async move {
                match c.compact(revision as i64, None).await {
                    Ok(_) => Ok(()),
                    // Another apiserver compacted further already.
                    Err(etcd_client::Error::GRpcStatus(status))
                        if status.message().contains("compacted") =>
                    {
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            })
            .await;
        compacted?;
        // Record the compaction point, never moving it back.
        let key = self.compacted_key();
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .call(|mut c| {
                    let key = key.clone();
                    async move { c.get(key, None).await }
                })
                .await?;
            let (recorded, compare) = match current.kvs().first() {
                Some(kv) => (
                    parse_revision(kv.value()),
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                ),
                None => (0, Compare::version(key.clone(), CompareOp::Equal, 0)),
            };
            if recorded >= revision {
                break;
            }
            let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                key.clone(),
                revision.to_string(),
                None,
            )]);
            let done = self
                .call(|mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            if done.succeeded() {
                break;
            }
        }
        self.revision().await
    }

    async fn revision(&self) -> Result<Compaction, Error> {
        let key = self.compacted_key();
        let response = self
            .call(|mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(Compaction {
            revision: response.header().map_or(0, |h| h.revision()) as u64,
            compacted: response
                .kvs()
                .first()
                .map_or(0, |kv| parse_revision(kv.value())),
        })
    }
}

/// A filter that names one key: no prefix search.
fn is_exact(filter: &Filter) -> bool {
    !filter.type_name.is_empty() && !filter.namespace.is_empty() && !filter.name.is_empty()
}

fn parse_revision(value: &[u8]) -> Revision {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A bare object named by an etcd key `{prefix}/o/{type}/{namespace}/{name}`.
fn object_of_key(key: &[u8]) -> Option<Object> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.rsplitn(4, '/');
    let (name, namespace, type_name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Object {
        metadata: Some(Metadata {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        }),
        spec: Some(Any {
            type_url: rubeapi::type_url(type_name),
            value: Vec::new(),
        }),
        status: None,
    })
}

/// An etcd event as a store event; `None` for keys that do not hold objects.
fn convert(event: &etcd_client::Event) -> Option<Event> {
    let kv = event.kv()?;
    let revision = kv.mod_revision() as u64;
    match event.event_type() {
        EventType::Put => {
            let object = decode(kv).ok()?;
            let prev_labels = event
                .prev_kv()
                .and_then(|prev| Object::decode(prev.value()).ok())
                .map(|prev| prev.metadata.unwrap_or_default().labels)
                .filter(|prev| object.metadata.as_ref().is_none_or(|m| &m.labels != prev));
            Some(Event {
                revision,
                kind: EventKind::Put,
                object,
                prev_labels,
            })
        }
        EventType::Delete => {
            // Without the previous value (a compaction raced the watch), the object is known
            // only by its key; a delete is still a delete.
            let mut object = match event.prev_kv().map(decode) {
                Some(Ok(object)) => object,
                _ => object_of_key(kv.key())?,
            };
            object
                .metadata
                .get_or_insert_with(Metadata::default)
                .revision = revision;
            Some(Event {
                revision,
                kind: EventKind::Delete,
                object,
                prev_labels: None,
            })
        }
    }
}
