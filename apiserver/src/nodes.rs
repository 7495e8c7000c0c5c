//! Node lifecycle: a node whose lease is not renewed within a grace period is marked
//! `NOT_READY`, as Kubernetes' node lifecycle controller does (renew every 10 s, NotReady after
//! 40 s by default).
//!
//! Time is the apiserver's own: a lease counts as renewed when this apiserver sees its
//! revision change, not by the `renew_time` the node wrote, so clocks that disagree between
//! machines cannot make a node look alive or dead. After a start every lease gets a full grace
//! period. Several apiservers on one etcd each run this; their marks are idempotent and written
//! with a revision precondition.
//!
//! [`Liveness`] and [`to_mark`] are pure; [`spawn_node_monitor`] polls the store and writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Name;
use rubeapi::object::{self, Key, ObjectExt};
use rubeapi::rube::node_status::Condition;
use rubeapi::rube::{Lease, Node, NodeStatus, Object};
use rubeapi::selector::Filter;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{Expect, Store};

/// When a node counts as gone.
#[derive(Debug, Clone, Copy)]
pub struct NodeMonitorOptions {
    /// A node whose lease was not renewed for this long is marked NOT_READY.
    pub grace: Duration,
    /// How often leases are looked at.
    pub period: Duration,
}

impl Default for NodeMonitorOptions {
    fn default() -> Self {
        NodeMonitorOptions {
            grace: Duration::from_secs(40),
            period: Duration::from_secs(2),
        }
    }
}

/// When this apiserver last saw each lease change.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    seen: HashMap<String, (u64, Instant)>,
}

impl Liveness {
    pub fn new(now: Instant) -> Liveness {
        Liveness {
            started: now,
            seen: HashMap::new(),
        }
    }

    /// Records the leases as listed at `now`: `(name, revision)`.
    pub fn observe<'a>(&mut self, leases: impl IntoIterator<Item = (&'a str, u64)>, now: Instant) {
        let mut fresh = HashMap::new();
        for (name, revision) in leases {
            let seen = match self.seen.get(name) {
                Some(&(was, at)) if was == revision => (was, at),
                _ => (revision, now),
            };
            fresh.insert(name.to_owned(), seen);
        }
        self.seen = fresh;
    }

    /// How long lease `name` has gone unrenewed at `now`; a lease never seen counts from the
    /// start of this monitor.
    pub fn unrenewed_for(&self, name: &str, now: Instant) -> Duration {
        let since = self.seen.get(name).map_or(self.started, |&(_, at)| at);
        now.saturating_duration_since(since)
    }
}

/// The nodes to mark NOT_READY at `now`, with the status to write. Nodes already NOT_READY
/// are left alone; so are nodes that never reported a status (they never were Ready).
pub fn to_mark(
    nodes: &[Object],
    liveness: &Liveness,
    now: Instant,
    grace: Duration,
) -> Vec<(Key, u64, NodeStatus)> {
    let mut marks = Vec::new();
    for node in nodes {
        let Ok(Some(status)) = node.status_as::<NodeStatus>() else {
            continue;
        };
        if status.condition != Condition::Ready as i32 {
            continue;
        }
        let lease = object::node_lease(node.name());
        let silent = liveness.unrenewed_for(&lease, now);
        if silent < grace {
            continue;
        }
        let marked = NodeStatus {
            condition: Condition::NotReady as i32,
            message: format!(
                "lease {lease} not renewed for {}s (grace {}s)",
                silent.as_secs(),
                grace.as_secs()
            ),
            ..status
        };
        marks.push((Key::of(node), node.revision(), marked));
    }
    marks
}

/// Marks nodes NOT_READY when their leases expire, until `cancel` fires.
pub fn spawn_node_monitor<S: Store>(
    store: Arc<S>,
    options: NodeMonitorOptions,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut liveness = Liveness::new(Instant::now());
        let mut ticker = tokio::time::interval(options.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = check(&*store, &mut liveness, options.grace).await {
                tracing::warn!(%error, "node check failed; trying again");
            }
        }
    })
}

async fn check<S: Store>(
    store: &S,
    liveness: &mut Liveness,
    grace: Duration,
) -> Result<(), crate::Error> {
    let leases = store.list(Filter::of_type(&Lease::full_name())).await?;
    let now = Instant::now();
    liveness.observe(leases.objects.iter().map(|l| (l.name(), l.revision())), now);
    let nodes = store.list(Filter::of_type(&Node::full_name())).await?;
    for (key, revision, status) in to_mark(&nodes.objects, liveness, now, grace) {
        tracing::warn!(node = %key.name, message = %status.message, "node not ready");
        match store
            .update_status(key, object::pack(&status), Some(Expect::Revision(revision)))
            .await
        {
            // The node changed meanwhile (its rubelet reported, say): look again next time.
            Ok(_) | Err(crate::Error::Conflict { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::rube::Node;

    fn node(name: &str, revision: u64, condition: Option<Condition>) -> Object {
        let mut node = object::new("", name, &Node::default());
        node.metadata.as_mut().unwrap().revision = revision;
        node.status = condition.map(|c| {
            object::pack(&NodeStatus {
                condition: c as i32,
                address: "10.0.0.1:7402".into(),
                ..Default::default()
            })
        });
        node
    }

    #[test]
    fn a_node_goes_not_ready_only_after_its_lease_is_silent_for_the_grace_period() {
        let grace = Duration::from_secs(40);
        let t0 = Instant::now();
        let mut liveness = Liveness::new(t0);
        let nodes = [
            node("a", 5, Some(Condition::Ready)),
            node("b", 6, Some(Condition::Ready)),
            node("c", 7, Some(Condition::NotReady)),
            node("d", 8, None),
        ];
        liveness.observe([("node-a", 10), ("node-b", 11)], t0);
        // a keeps renewing; b stops; c and d are never marked.
        for s in [10, 20, 30] {
            let t = t0 + Duration::from_secs(s);
            liveness.observe([("node-a", 10 + s), ("node-b", 11)], t);
            assert!(to_mark(&nodes, &liveness, t, grace).is_empty(), "at {s}s");
        }
        let t = t0 + Duration::from_secs(41);
        liveness.observe([("node-a", 99), ("node-b", 11)], t);
        let marks = to_mark(&nodes, &liveness, t, grace);
        assert_eq!(marks.len(), 1);
        let (key, revision, status) = &marks[0];
        assert_eq!((key.name.as_str(), *revision), ("b", 6));
        assert_eq!(status.condition, Condition::NotReady as i32);
        assert_eq!(
            status.address, "10.0.0.1:7402",
            "the rest of the status is kept"
        );
        assert_eq!(
            status.message,
            "lease node-b not renewed for 41s (grace 40s)"
        );
    }

    #[test]
    fn a_ready_node_without_a_lease_counts_from_the_monitors_start() {
        let grace = Duration::from_secs(40);
        let t0 = Instant::now();
        let mut liveness = Liveness::new(t0);
        let nodes = [node("a", 5, Some(Condition::Ready))];
        liveness.observe([], t0 + Duration::from_secs(39));
        assert!(to_mark(&nodes, &liveness, t0 + Duration::from_secs(39), grace).is_empty());
        liveness.observe([], t0 + Duration::from_secs(40));
        assert_eq!(
            to_mark(&nodes, &liveness, t0 + Duration::from_secs(40), grace).len(),
            1
        );
    }
}
