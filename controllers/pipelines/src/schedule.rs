//! The scheduler: which node a step's slice goes to. Pure: it sees nodes, what is placed on
//! them and the Herd's quota as values, and answers with a node name or the reason none fits.
//!
//! What lives here: fitting (ready, schedulable, labels match the node selector, free capacity
//! = allocatable minus the requests of active slices already placed), the Herd quota, the
//! spreading score and its deterministic tie-break, and placing a whole STREAMING pipeline on
//! one node. What never does: I/O, clocks, randomness, and which steps are ready (that is
//! [`crate::dag`]'s).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use rubeapi::runink::{Quota, Resources};

/// What the scheduler needs of one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The condition is READY (the apiserver turns it NOT_READY when the lease expires).
    pub ready: bool,
    /// Neither `unschedulable` nor being deleted.
    pub schedulable: bool,
    /// What slices may request in total. A zero field is not enforced (the node did not say).
    pub allocatable: Amount,
}

/// An amount of the resources slices request: CPU in thousandths of a core, memory in bytes,
/// pids. Also counts slices, for the Herd's `max_slices` and for spreading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amount {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pids: u64,
    pub slices: u64,
}

impl Amount {
    /// What one slice with `resources` requests.
    pub fn of_slice(resources: Option<&Resources>) -> Amount {
        let r = resources.cloned().unwrap_or_default();
        Amount {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            pids: r.pids,
            slices: 1,
        }
    }

    /// A node's allocatable resources (whole CPUs) as an amount; slices are not limited.
    pub fn of_node(resources: Option<&rubeapi::rube::Resources>) -> Amount {
        let r = resources.cloned().unwrap_or_default();
        Amount {
            cpu_millis: u64::from(r.cpus) * 1000,
            memory_bytes: r.memory_bytes,
            pids: r.pids,
            slices: 0,
        }
    }

    /// A Herd's quota as an amount; zero fields are unlimited.
    pub fn of_quota(quota: &Quota) -> Amount {
        Amount {
            cpu_millis: quota.cpu_millis,
            memory_bytes: quota.memory_bytes,
            pids: quota.pids,
            slices: u64::from(quota.max_slices),
        }
    }

    pub fn add(&mut self, other: &Amount) {
        self.cpu_millis = self.cpu_millis.saturating_add(other.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.pids = self.pids.saturating_add(other.pids);
        self.slices = self.slices.saturating_add(other.slices);
    }

    fn fields(&self) -> [(&'static str, u64); 4] {
        [
            ("cpu_millis", self.cpu_millis),
            ("memory_bytes", self.memory_bytes),
            ("pids", self.pids),
            ("slices", self.slices),
        ]
    }

    /// The first field where `used + request` exceeds a non-zero `limit`.
    fn exceeded(used: &Amount, request: &Amount, limit: &Amount) -> Option<&'static str> {
        let used = used.fields();
        let request = request.fields();
        limit
            .fields()
            .into_iter()
            .zip(used.into_iter().zip(request))
            .find(|((_, max), ((_, u), (_, r)))| *max > 0 && u.saturating_add(*r) > *max)
            .map(|((name, _), _)| name)
    }

    /// The highest share, in thousandths, that `used` takes of each enforced field of `limit`.
    fn permille_of(&self, limit: &Amount) -> u64 {
        self.fields()
            .into_iter()
            .zip(limit.fields())
            .filter(|(_, (_, max))| *max > 0)
            .map(|((_, used), (_, max))| used.saturating_mul(1000) / max)
            .max()
            .unwrap_or(0)
    }
}

/// Why a slice cannot be placed now. Its `Display` is the message in the step's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unplaceable {
    /// The Herd's quota would be exceeded in `field`.
    Quota { herd: String, field: &'static str },
    /// No node fits; counts of nodes per reason, in a fixed order.
    NoNode {
        nodes: usize,
        reasons: Vec<(String, usize)>,
    },
    /// STREAMING: the pipeline's running slices are on `node`, which cannot take this one.
    Pinned { node: String, reason: String },
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::Quota { herd, field } => {
                write!(
                    f,
                    "waiting for quota: herd '{herd}' has no room for more {field}"
                )
            }
            Unplaceable::NoNode { nodes: 0, .. } => write!(f, "waiting for a node: there are none"),
            Unplaceable::NoNode { nodes, reasons } => {
                let reasons: Vec<String> =
                    reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                write!(
                    f,
                    "waiting for a node: {nodes} nodes, {}",
                    reasons.join(", ")
                )
            }
            Unplaceable::Pinned { node, reason } => write!(
                f,
                "waiting for node '{node}', where this streaming pipeline runs: {reason}"
            ),
        }
    }
}

/// What one slice asks for.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    pub request: Amount,
    pub node_selector: &'a HashMap<String, String>,
}

/// The cluster as the scheduler sees it while it places one pipeline's slices: the nodes,
/// what active slices take on each, and the Herd's quota and use. Each placement adds its
/// request, so the next one sees it.
#[derive(Debug, Clone)]
pub struct Cluster {
    nodes: Vec<NodeView>,
    load: HashMap<String, Amount>,
    herd: String,
    quota: Amount,
    herd_used: Amount,
}

impl Cluster {
    /// `nodes` in any order (they are sorted by name for the tie-break); `quota` of the Herd
    /// `herd` (zero fields unlimited; `None` when the Herd does not exist).
    pub fn new(mut nodes: Vec<NodeView>, herd: &str, quota: Option<&Quota>) -> Cluster {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Cluster {
            nodes,
            load: HashMap::new(),
            herd: herd.to_owned(),
            quota: quota.map(Amount::of_quota).unwrap_or_default(),
            herd_used: Amount::default(),
        }
    }

    /// Counts an active slice on `node` (any node name, known or not) and, when it belongs to
    /// this Herd, against the quota.
    pub fn occupy(&mut self, node: &str, request: &Amount, in_herd: bool) {
        if !node.is_empty() {
            self.load.entry(node.to_owned()).or_default().add(request);
        }
        if in_herd {
            self.herd_used.add(request);
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Whether `node` exists and is READY: slices elsewhere are lost.
    pub fn is_ready(&self, node: &str) -> bool {
        self.node(node).is_some_and(|n| n.ready)
    }

    fn check_quota(&self, request: &Amount) -> Result<(), Unplaceable> {
        match Amount::exceeded(&self.herd_used, request, &self.quota) {
            Some(field) => Err(Unplaceable::Quota {
                herd: self.herd.clone(),
                field,
            }),
            None => Ok(()),
        }
    }

    /// Why `node` cannot take `demand`, or `None` when it can.
    fn misfit(&self, node: &NodeView, demand: &Demand<'_>) -> Option<String> {
        if !node.ready {
            return Some("not ready".into());
        }
        if !node.schedulable {
            return Some("unschedulable".into());
        }
        if demand
            .node_selector
            .iter()
            .any(|(k, v)| node.labels.get(k) != Some(v))
        {
            return Some("not matching the node selector".into());
        }
        let used = self.load.get(&node.name).copied().unwrap_or_default();
        Amount::exceeded(&used, &demand.request, &node.allocatable)
            .map(|field| format!("without enough {field}"))
    }

    /// Places one slice: the fitting node that would be least loaded with it (the highest
    /// share of any enforced resource, then the fewest slices, then the name), and counts it.
    ///
    /// # Errors
    /// [`Unplaceable::Quota`] when the Herd has no room, [`Unplaceable::NoNode`] when no node
    /// fits; nothing is counted then.
    pub fn place(&mut self, demand: &Demand<'_>) -> Result<String, Unplaceable> {
        self.check_quota(&demand.request)?;
        let node = self.choose(demand)?;
        self.occupy(&node, &demand.request, true);
        Ok(node)
    }

    /// The best node for `demand`, counting nothing.
    fn choose(&self, demand: &Demand<'_>) -> Result<String, Unplaceable> {
        let mut reasons: Vec<(String, usize)> = Vec::new();
        let mut best: Option<((u64, u64), &NodeView)> = None;
        for node in &self.nodes {
            if let Some(reason) = self.misfit(node, demand) {
                match reasons.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, n)) => *n += 1,
                    None => reasons.push((reason, 1)),
                }
                continue;
            }
            let mut after = self.load.get(&node.name).copied().unwrap_or_default();
            after.add(&demand.request);
            let score = (after.permille_of(&node.allocatable), after.slices);
            // Nodes are sorted by name, so on equal scores the first name wins.
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, node));
            }
        }
        match best {
            Some((_, node)) => Ok(node.name.clone()),
            None => {
                reasons.sort();
                Err(Unplaceable::NoNode {
                    nodes: self.nodes.len(),
                    reasons,
                })
            }
        }
    }

    /// Places several slices together on one node (a STREAMING pipeline: FIFOs are
    /// node-local): on `pinned` when some of the pipeline already run there, else on the node
    /// that fits all of them best. All or none are counted.
    ///
    /// # Errors
    /// As [`Cluster::place`], and [`Unplaceable::Pinned`] when `pinned` cannot take them.
    pub fn place_together(
        &mut self,
        demands: &[Demand<'_>],
        pinned: Option<&str>,
    ) -> Result<String, Unplaceable> {
        let mut total = Amount::default();
        let mut selector = HashMap::new();
        for demand in demands {
            total.add(&demand.request);
            for (k, v) in demand.node_selector {
                if selector
                    .insert(k.clone(), v.clone())
                    .is_some_and(|old| old != *v)
                {
                    return Err(Unplaceable::NoNode {
                        nodes: self.nodes.len(),
                        reasons: vec![(format!("steps disagree on node label '{k}'"), 1)],
                    });
                }
            }
        }
        let together = Demand {
            request: total,
            node_selector: &selector,
        };
        self.check_quota(&together.request)?;
        let node = match pinned {
            Some(pinned) => {
                let reason = match self.node(pinned) {
                    None => Some("it does not exist".to_owned()),
                    Some(node) => self.misfit(node, &together),
                };
                if let Some(reason) = reason {
                    return Err(Unplaceable::Pinned {
                        node: pinned.to_owned(),
                        reason,
                    });
                }
                pinned.to_owned()
            }
            None => self.choose(&together)?,
        };
        for demand in demands {
            self.occupy(&node, &demand.request, true);
        }
        Ok(node)
    }
}
