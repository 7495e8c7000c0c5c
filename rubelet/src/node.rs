//! The node's registration and liveness: its `rube.Node` object (labels, capacity, address),
//! its status, and the `rube.Lease` it renews.
//!
//! What to write is decided by pure functions ([`node_object`], [`node_status`],
//! [`renewed_lease`]); [`run`] does the calls on every tick. A failed tick is logged and tried
//! again at the next one: the rubelet keeps running its workloads whatever the apiserver does.
//!
//! Renewing the lease is the only write of a quiet node: the status (with `last_heartbeat`) is
//! written when it changes, not on every tick, so that a thousand idle nodes add only lease
//! renewals to the store, whose history keeps just the latest of each (see the apiserver's
//! `store::core::supersedes_history`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use prost::Name;
use prost_types::Timestamp;
use rubeapi::Client;
use rubeapi::client::{at_revision, must_not_exist};
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::node_status::Condition;
use rubeapi::rube::{Lease, Node, NodeStatus, Object, Resources};
use tokio_util::sync::CancellationToken;

/// Who this node is and how often it says so.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub labels: HashMap<String, String>,
    /// Where the rubelet serves logs and health, as others reach it.
    pub address: String,
    pub capacity: Resources,
    pub renew_every: Duration,
    pub lease_duration: Duration,
}

/// The machine's size: cpus the process may use, memory, and the kernel's pid limit.
pub fn machine() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let pids = read_u64(Path::new("/proc/sys/kernel/pid_max")).unwrap_or(0);
    Resources {
        cpus,
        memory_bytes,
        pids,
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The Node to put, or `None` when `existing` already says everything. Labels from the
/// config win over labels set by others; other labels and the spec (`unschedulable`, set by
/// an operator) are kept.
pub fn node_object(config: &NodeConfig, existing: Option<&Object>) -> Option<Object> {
    let Some(existing) = existing else {
        let mut node = object::new("", &config.name, &Node::default());
        if let Some(metadata) = node.metadata.as_mut() {
            metadata.labels = config.labels.clone();
        }
        return Some(node);
    };
    let labels = &existing.metadata.as_ref()?.labels;
    if config.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return None;
    }
    let mut node = existing.clone();
    let metadata = node.metadata.as_mut()?;
    metadata.labels.extend(config.labels.clone());
    node.status = None;
    Some(node)
}

/// The status a live rubelet reports: READY with the machine's size and its address.
/// `last_heartbeat` is when it was written; comparing two statuses ignores it.
pub fn node_status(config: &NodeConfig, now: SystemTime) -> NodeStatus {
    NodeStatus {
        condition: Condition::Ready as i32,
        capacity: Some(config.capacity),
        allocatable: Some(config.capacity),
        address: config.address.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        last_heartbeat: Some(timestamp(now)),
        message: "rubelet is posting ready status".to_owned(),
    }
}

/// Whether `have` already says what `want` says, `last_heartbeat` aside.
pub fn status_current(have: Option<&NodeStatus>, want: &NodeStatus) -> bool {
    have.is_some_and(|have| {
        NodeStatus {
            last_heartbeat: None,
            ..have.clone()
        } == NodeStatus {
            last_heartbeat: None,
            ..want.clone()
        }
    })
}

/// The lease after a renewal by `holder` at `now`. A new holder counts a transition and
/// acquires anew.
pub fn renewed_lease(
    existing: Option<&Lease>,
    holder: &str,
    duration: Duration,
    now: SystemTime,
) -> Lease {
    let now = timestamp(now);
    match existing {
        Some(lease) if lease.holder == holder => Lease {
            duration_seconds: duration.as_secs() as u32,
            renew_time: Some(now),
            ..lease.clone()
        },
        other => Lease {
            holder: holder.to_owned(),
            duration_seconds: duration.as_secs() as u32,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: other.map_or(0, |l| l.transitions + 1),
        },
    }
}

pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// Registers the node, then renews its lease and keeps its status current every
/// `config.renew_every` until `cancel` fires. `registered` is told once, after the node and
/// its lease were first written.
pub async fn run(
    client: Client,
    config: NodeConfig,
    cancel: CancellationToken,
    registered: tokio::sync::oneshot::Sender<()>,
) {
    let mut registered = Some(registered);
    let mut heart = Heart::default();
    let mut ticker = tokio::time::interval(config.renew_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match heart.beat(&client, &config).await {
            Ok(()) => {
                if !heart.healthy {
                    tracing::info!(node = %config.name, "registered; lease renewed");
                }
                if let Some(registered) = registered.take() {
                    let _ = registered.send(());
                }
                heart.healthy = true;
            }
            Err(error) => {
                heart.healthy = false;
                heart.lease = None;
                tracing::warn!(node = %config.name, %error, "cannot reach the apiserver; trying again at the next renewal");
            }
        }
    }
}

/// What the last beat left behind.
#[derive(Debug, Default)]
struct Heart {
    /// The lease as last written (with its revision), so a renewal needs no read.
    lease: Option<Object>,
    healthy: bool,
}

impl Heart {
    async fn beat(&mut self, client: &Client, config: &NodeConfig) -> Result<(), rubeapi::Error> {
        self.renew(client, config).await?;
        let existing = match client.get(&Node::full_name(), "", &config.name).await {
            Ok(node) => Some(node),
            Err(error) if error.is_not_found() => None,
            Err(error) => return Err(error),
        };
        let mut node = existing;
        if let Some(put) = node_object(config, node.as_ref()) {
            let precondition = match &node {
                Some(existing) => at_revision(existing.revision()),
                None => must_not_exist(),
            };
            let written = client.put(put, Some(precondition)).await?;
            node = written.object;
        }
        let have = node
            .as_ref()
            .and_then(|n| n.status_as::<NodeStatus>().ok().flatten());
        let want = node_status(config, SystemTime::now());
        if !status_current(have.as_ref(), &want) {
            let revision = node.as_ref().map_or(0, ObjectExt::revision);
            client
                .update_status(
                    &Node::full_name(),
                    "",
                    &config.name,
                    object::pack(&want),
                    Some(at_revision(revision)),
                )
                .await?;
            tracing::info!(node = %config.name, "node status: ready");
        }
        Ok(())
    }

    async fn renew(&mut self, client: &Client, config: &NodeConfig) -> Result<(), rubeapi::Error> {
        let name = object::node_lease(&config.name);
        let mut conflict = None;
        for _ in 0..2 {
            let (existing, precondition) = match &self.lease {
                Some(lease) => (lease.spec_as::<Lease>().ok(), at_revision(lease.revision())),
                None => match client.get(&Lease::full_name(), "", &name).await {
                    Ok(lease) => (lease.spec_as::<Lease>().ok(), at_revision(lease.revision())),
                    Err(error) if error.is_not_found() => (None, must_not_exist()),
                    Err(error) => return Err(error),
                },
            };
            let lease = renewed_lease(
                existing.as_ref(),
                &config.name,
                config.lease_duration,
                SystemTime::now(),
            );
            match client
                .put(object::new("", &name, &lease), Some(precondition))
                .await
            {
                Ok(written) => {
                    self.lease = written.object;
                    return Ok(());
                }
                // Someone else wrote it (an operator, an older rubelet): read and renew again.
                Err(error) if error.is_conflict() => {
                    self.lease = None;
                    conflict = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        // It changed under this rubelet twice in a row: the next beat tries again.
        conflict.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig {
            name: "w1".into(),
            labels: HashMap::from([("zone".to_owned(), "a".to_owned())]),
            address: "127.0.0.1:7402".into(),
            capacity: Resources {
                cpus: 2,
                memory_bytes: 1 << 30,
                pids: 4096,
            },
            renew_every: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
        }
    }

    #[test]
    fn registration_creates_then_only_adds_missing_labels_and_keeps_the_rest() {
        let config = config();
        let created = node_object(&config, None).unwrap();
        assert_eq!(created.name(), "w1");
        assert_eq!(created.metadata.as_ref().unwrap().labels["zone"], "a");

        let mut stored = created.clone();
        stored
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("team".into(), "x".into());
        stored.spec = Some(object::pack(&Node {
            unschedulable: true,
            ..Default::default()
        }));
        assert_eq!(
            node_object(&config, Some(&stored)),
            None,
            "nothing to change"
        );

        stored
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("zone".into(), "b".into());
        let put = node_object(&config, Some(&stored)).unwrap();
        let labels = &put.metadata.as_ref().unwrap().labels;
        assert_eq!(
            (labels["zone"].as_str(), labels["team"].as_str()),
            ("a", "x")
        );
        assert!(
            put.spec_as::<Node>().unwrap().unschedulable,
            "the operator's cordon stays"
        );
    }

    #[test]
    fn the_status_is_rewritten_only_when_something_but_the_heartbeat_changed() {
        let config = config();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let written = node_status(&config, t0);
        let later = node_status(&config, t0 + Duration::from_secs(60));
        assert!(status_current(Some(&written), &later));
        assert!(!status_current(None, &later));
        let marked = NodeStatus {
            condition: Condition::NotReady as i32,
            ..written
        };
        assert!(
            !status_current(Some(&marked), &later),
            "a NotReady mark is answered"
        );
    }

    #[test]
    fn renewals_keep_the_holder_and_a_takeover_counts_a_transition() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let t1 = t0 + Duration::from_secs(10);
        let first = renewed_lease(None, "w1", Duration::from_secs(40), t0);
        assert_eq!(
            (first.transitions, first.acquire_time),
            (0, Some(timestamp(t0)))
        );
        let renewed = renewed_lease(Some(&first), "w1", Duration::from_secs(40), t1);
        assert_eq!(renewed.acquire_time, Some(timestamp(t0)));
        assert_eq!(renewed.renew_time, Some(timestamp(t1)));
        let taken = renewed_lease(Some(&renewed), "w2", Duration::from_secs(40), t1);
        assert_eq!((taken.holder.as_str(), taken.transitions), ("w2", 1));
        assert_eq!(taken.acquire_time, Some(timestamp(t1)));
    }
}
