//! [`PipelineController`]: `runink.Pipeline` objects (all namespaces) turned into slices.
//!
//! What lives here: `observe` (the pipeline and its Herd from the apiserver; its slices, every
//! other active slice and the nodes from the caches of the runtime's secondary watches), the
//! pure [`reconcile`] and its model [`simulate`], and `execute` (puts, deletes, status writes).
//! What never does: decisions about steps or nodes ([`crate::dag`], [`crate::schedule`],
//! [`crate::plan`]).
//!
//! Reading one's own writes: the watch caches lag behind the apiserver, so `execute` remembers
//! the highest revision it wrote a slice at and `observe` first waits until the slice cache
//! holds it; a reconcile never decides from a cache that does not have its own last change.
//!
//! Deletion: the controller puts [`FINALIZER`] on every pipeline before it makes slices; a
//! deleted pipeline is only marked, its slices are deleted (the rubelets stop them), and once
//! none is left the finalizer comes off and the apiserver removes the pipeline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use controllers::{Cache, Controller, Key, Wake, Watch};
use prost::Name;
use rubeapi::Client;
use rubeapi::client::{at_revision, must_not_exist};
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::node_status::Condition;
use rubeapi::rube::{Node, NodeStatus, Object, OwnerReference, PutRequest, Selector};
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::slice_status::Phase as SliceStatusPhase;
use rubeapi::runink::{Herd, Pipeline, PipelineStatus, Quota, RestartPolicy, Slice, SliceStatus};

use crate::Error;
use crate::dag::{SlicePhase, SliceView};
use crate::plan::{self, NewSlice};
use crate::schedule::{Amount, Cluster, NodeView};

/// Held on every pipeline that may have slices, until they are gone.
pub const FINALIZER: &str = "runink.pipelines/slices";
/// Labels of the slices the controller makes.
pub const LABEL_NODE: &str = "node";
pub const LABEL_PIPELINE: &str = "pipeline";
pub const LABEL_STEP: &str = "step";
/// Label values are at most 63 characters, and a slice carries its pipeline's name in one.
pub const MAX_PIPELINE_NAME: usize = 63;

/// An active slice of anyone else: it takes room on its node, and in the Herd's quota when it
/// is in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    pub node: String,
    pub request: Amount,
    pub in_herd: bool,
}

/// What `observe` reads for one pipeline.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// The pipeline as the apiserver has it now (`None`: deleted).
    pub pipeline: Option<Object>,
    /// The slices labelled `pipeline=<name>` in its namespace.
    pub slices: Vec<SliceView>,
    /// Every other active slice placed on a node.
    pub others: Vec<Occupant>,
    pub nodes: Vec<NodeView>,
    /// The quota of the Herd named like the namespace (`None`: no Herd, no quota).
    pub quota: Option<Quota>,
}

/// One change, as data.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Put the pipeline with its finalizers changed, if it is still at its revision.
    PutPipeline(Object),
    /// Create a slice that must not exist yet. Consecutive creates go in one `Apply`.
    CreateSlice(Object),
    DeleteSlice(String),
    WriteStatus(PipelineStatus),
}

/// Reads a slice of pipeline `pipeline` as the core sees it.
pub fn slice_view(slice: &Object, pipeline: &str) -> SliceView {
    let metadata = slice.metadata.clone().unwrap_or_default();
    let spec: Slice = slice.spec_as().unwrap_or_default();
    let status: SliceStatus = slice.status_as().ok().flatten().unwrap_or_default();
    let step = metadata
        .labels
        .get(LABEL_STEP)
        .cloned()
        .unwrap_or_else(|| spec.step.clone());
    let phase = match SliceStatusPhase::try_from(status.phase) {
        Ok(SliceStatusPhase::Running) => SlicePhase::Running,
        Ok(SliceStatusPhase::Succeeded) => SlicePhase::Succeeded,
        Ok(SliceStatusPhase::Failed) => SlicePhase::Failed,
        _ => SlicePhase::Pending,
    };
    let (attempt, shard) =
        plan::parse_slice_name(&metadata.name, pipeline, &step).unwrap_or((0, None));
    SliceView {
        attempt,
        shard,
        name: metadata.name,
        node: metadata.labels.get(LABEL_NODE).cloned().unwrap_or_default(),
        request: Amount::of_slice(spec.resources.as_ref()),
        phase,
        exit_code: status.exit_code,
        message: status.message,
        deleting: metadata.deletion_timestamp.is_some(),
        owner_uid: metadata
            .owner_references
            .iter()
            .find(|o| o.controller)
            .map(|o| o.uid.clone())
            .unwrap_or_default(),
        step,
    }
}

/// Reads a node as the scheduler sees it.
pub fn node_view(node: &Object) -> NodeView {
    let metadata = node.metadata.clone().unwrap_or_default();
    let spec: Node = node.spec_as().unwrap_or_default();
    let status: NodeStatus = node.status_as().ok().flatten().unwrap_or_default();
    NodeView {
        name: metadata.name,
        labels: metadata.labels.into_iter().collect::<BTreeMap<_, _>>(),
        ready: status.condition == Condition::Ready as i32,
        schedulable: !spec.unschedulable && metadata.deletion_timestamp.is_none(),
        allocatable: Amount::of_node(status.allocatable.as_ref()),
    }
}

/// What to change so that the world matches the pipeline in `observed` (read fresh by
/// `observe`, so the cached copy is not needed). Pure.
pub fn reconcile(observed: &Observed) -> Vec<Effect> {
    let mut effects = Vec::new();
    let Some(object) = &observed.pipeline else {
        // Deleted without the finalizer (or before it was put): remove what is left.
        for slice in &observed.slices {
            if !slice.deleting && !slice.owner_uid.is_empty() {
                effects.push(Effect::DeleteSlice(slice.name.clone()));
            }
        }
        return effects;
    };
    let metadata = object.metadata.clone().unwrap_or_default();
    // Slices without a controlling owner are someone else's; slices owned by an earlier
    // pipeline of the same name are orphans.
    let owned: Vec<&SliceView> = observed
        .slices
        .iter()
        .filter(|s| !s.owner_uid.is_empty())
        .collect();
    for orphan in owned
        .iter()
        .filter(|s| s.owner_uid != metadata.uid && !s.deleting)
    {
        effects.push(Effect::DeleteSlice(orphan.name.clone()));
    }
    let has_finalizer = metadata.finalizers.iter().any(|f| f == FINALIZER);
    if metadata.deletion_timestamp.is_some() {
        for slice in owned
            .iter()
            .filter(|s| !s.deleting && s.owner_uid == metadata.uid)
        {
            effects.push(Effect::DeleteSlice(slice.name.clone()));
        }
        if owned.is_empty() && has_finalizer {
            let mut put = object.clone();
            if let Some(m) = put.metadata.as_mut() {
                m.finalizers.retain(|f| f != FINALIZER);
            }
            effects.push(Effect::PutPipeline(put));
        }
        return effects;
    }
    if !has_finalizer {
        let mut put = object.clone();
        if let Some(m) = put.metadata.as_mut() {
            m.finalizers.push(FINALIZER.to_owned());
        }
        effects.push(Effect::PutPipeline(put));
    }
    let recorded: Option<PipelineStatus> = object.status_as().ok().flatten();
    let status = match object.spec_as::<Pipeline>() {
        Err(e) => failed(&metadata, format!("cannot read the spec: {e}")),
        Ok(_) if metadata.name.len() > MAX_PIPELINE_NAME => failed(
            &metadata,
            format!(
                "the name is {} characters long; slices carry it in a label, which takes at \
                 most {MAX_PIPELINE_NAME}",
                metadata.name.len()
            ),
        ),
        Ok(spec) => {
            let mine: Vec<SliceView> = observed
                .slices
                .iter()
                .filter(|s| s.owner_uid == metadata.uid)
                .cloned()
                .collect();
            let mut cluster = Cluster::new(
                observed.nodes.clone(),
                &metadata.namespace,
                observed.quota.as_ref(),
            );
            for other in &observed.others {
                cluster.occupy(&other.node, &other.request, other.in_herd);
            }
            let recorded_steps = recorded.as_ref().map_or(&[][..], |r| &r.steps[..]);
            let plan = plan::plan(&metadata.name, &spec, recorded_steps, &mine, &mut cluster);
            for name in &plan.delete {
                effects.push(Effect::DeleteSlice(name.clone()));
            }
            for new in &plan.create {
                effects.push(Effect::CreateSlice(slice_object(object, &spec, new)));
            }
            PipelineStatus {
                phase: plan.phase as i32,
                steps: plan.steps,
                observed_generation: metadata.generation,
            }
        }
    };
    if recorded.as_ref() != Some(&status) {
        effects.push(Effect::WriteStatus(status));
    }
    effects
}

fn failed(metadata: &rubeapi::rube::Metadata, message: String) -> PipelineStatus {
    PipelineStatus {
        phase: Phase::Failed as i32,
        steps: vec![rubeapi::runink::StepStatus {
            name: String::new(),
            message,
            ..Default::default()
        }],
        observed_generation: metadata.generation,
    }
}

/// The capacity of the pipes between STREAMING steps when the pipeline does not say: 1 MiB,
/// sixteen times the kernel's default. Between cgroups every wakeup of a reader or writer
/// costs more than within one (see docs/benchmarks.md, *streaming*); a larger buffer moves
/// the same bytes with fewer of them. It is still a bound on what is in flight per pipe, and
/// the most `/proc/sys/fs/pipe-max-size` allows an unprivileged process by default.
pub const DEFAULT_PIPE_BUFFER_BYTES: u64 = 1 << 20;

/// The slice object for `new`: labelled with its node, pipeline and step, owned by the
/// pipeline. Its restart policy is NEVER: retrying is the pipeline's business.
pub fn slice_object(pipeline: &Object, spec: &Pipeline, new: &NewSlice) -> Object {
    let step = &spec.steps[new.step];
    let slice = Slice {
        command: step.command.clone(),
        args: step.args.clone(),
        env: plan::slice_env(&step.env, new),
        working_dir: String::new(),
        resources: step.resources,
        isolation: step.isolation.clone(),
        restart_policy: RestartPolicy::Never as i32,
        timeout_seconds: step.timeout_seconds,
        pipeline: pipeline.name().to_owned(),
        step: step.name.clone(),
        stdin_pipe: new.stdin_pipe.clone(),
        stdout_pipe: new.stdout_pipe.clone(),
        pipe_buffer_bytes: if new.stdin_pipe.is_empty() && new.stdout_pipe.is_empty() {
            0
        } else if spec.pipe_buffer_bytes == 0 {
            DEFAULT_PIPE_BUFFER_BYTES
        } else {
            spec.pipe_buffer_bytes
        },
    };
    let mut object = object::new(pipeline.namespace(), &new.name, &slice);
    if let Some(m) = object.metadata.as_mut() {
        m.labels.insert(LABEL_NODE.into(), new.node.clone());
        m.labels
            .insert(LABEL_PIPELINE.into(), pipeline.name().into());
        m.labels.insert(LABEL_STEP.into(), step.name.clone());
        m.owner_references.push(OwnerReference {
            r#type: Pipeline::full_name(),
            name: pipeline.name().into(),
            uid: pipeline
                .metadata
                .as_ref()
                .map_or_else(String::new, |p| p.uid.clone()),
            controller: true,
        });
    }
    object
}

/// The executor as a pure model, for the fixpoint tests: slices are removed at once (no
/// finalizers), a put takes the next revision, a put that removes the last finalizer of a
/// marked pipeline removes it.
pub fn simulate(observed: &Observed, effects: &[Effect]) -> Observed {
    let mut world = observed.clone();
    for effect in effects {
        match effect {
            Effect::PutPipeline(put) => {
                let m = put.metadata.clone().unwrap_or_default();
                if m.deletion_timestamp.is_some() && m.finalizers.is_empty() {
                    world.pipeline = None;
                } else if let Some(p) = world.pipeline.as_mut() {
                    let mut put = put.clone();
                    put.status = p.status.clone();
                    if let Some(pm) = put.metadata.as_mut() {
                        pm.revision += 1;
                    }
                    *p = put;
                }
            }
            Effect::CreateSlice(slice) => {
                let pipeline = slice
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.get(LABEL_PIPELINE).cloned())
                    .unwrap_or_default();
                world.slices.push(slice_view(slice, &pipeline));
            }
            Effect::DeleteSlice(name) => world.slices.retain(|s| s.name != *name),
            Effect::WriteStatus(status) => {
                if let Some(p) = world.pipeline.as_mut() {
                    p.status = Some(object::pack(status));
                }
            }
        }
    }
    world
}

/// The controller of every `runink.Pipeline`. Meant to run as a cluster controller (one at a
/// time): [`crate::run`] runs it with the slice and node watches [`PipelineController::new`]
/// makes.
#[derive(Debug, Clone)]
pub struct PipelineController {
    client: Client,
    /// Every slice (all namespaces), from the runtime's watch.
    slices: Cache,
    /// Every node, from the runtime's watch.
    nodes: Cache,
    /// The highest revision `execute` wrote a slice at: what the slice cache must hold before
    /// `observe` reads it.
    written: Arc<AtomicU64>,
}

/// How long `observe` waits for the slice cache to hold the controller's own last write
/// before it fails (and the key is retried with backoff).
const CACHE_WAIT: Duration = Duration::from_secs(10);

/// Whether a change to a node matters to placement: readiness, schedulability, labels and
/// allocatable (heartbeats alone do not).
fn placement_changed(changed: &controllers::Changed) -> bool {
    let view = |node: &Option<Arc<Object>>| node.as_deref().map(node_view);
    view(&changed.before) != view(&changed.after)
}

impl PipelineController {
    /// The controller, and the watches the runtime must run for it: every slice (a change
    /// wakes the pipeline its `pipeline` label names) and every node (a change that matters to
    /// placement wakes every pipeline).
    pub fn new(client: Client) -> (PipelineController, Vec<Watch>) {
        let (slice_watch, slices) = Watch::owned_by_label(
            Selector::of::<Slice>(),
            LABEL_PIPELINE,
            &Pipeline::full_name(),
        );
        let (node_watch, nodes) = Watch::new(Selector::of::<Node>(), |changed| {
            if placement_changed(changed) {
                Wake::All
            } else {
                Wake::none()
            }
        });
        let controller = PipelineController {
            client,
            slices,
            nodes,
            written: Arc::default(),
        };
        (controller, vec![slice_watch, node_watch])
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn wrote(&self, revision: u64) {
        self.written.fetch_max(revision, Ordering::Relaxed);
    }

    async fn get_optional<M: Name>(&self, ns: &str, name: &str) -> Result<Option<Object>, Error> {
        let type_name = M::full_name();
        match self.client.get(&type_name, ns, name).await {
            Ok(o) => Ok(Some(o)),
            Err(rubeapi::Error::NotFound(_)) => Ok(None),
            Err(source) => Err(Error::Api {
                action: format!("get {type_name} {ns}/{name}"),
                source,
            }),
        }
    }
}

/// The most slices created in one `Apply` call.
const CREATE_BATCH: usize = 256;

impl Controller for PipelineController {
    type Observed = Observed;
    type Effect = Effect;
    type Error = Error;

    fn name(&self) -> &str {
        "pipelines"
    }

    fn selector(&self) -> Selector {
        Selector::of::<Pipeline>()
    }

    async fn observe(&self, key: &Key, _desired: Option<&Object>) -> Result<Observed, Error> {
        let pipeline = self
            .get_optional::<Pipeline>(&key.namespace, &key.name)
            .await?;
        let written = self.written.load(Ordering::Relaxed);
        if !matches!(
            tokio::time::timeout(CACHE_WAIT, self.slices.wait_for(written)).await,
            Ok(true)
        ) {
            return Err(Error::CacheBehind {
                revision: written,
                at: self.slices.revision(),
            });
        }
        let mut observed = Observed {
            pipeline,
            ..Default::default()
        };
        for slice in self.slices.objects() {
            let metadata = slice.metadata.as_ref();
            let labels = metadata.map(|m| &m.labels);
            let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
            if slice.namespace() == key.namespace && label(LABEL_PIPELINE) == Some(&key.name) {
                observed.slices.push(slice_view(&slice, &key.name));
                continue;
            }
            let finished = rubeapi::object::slice_finished(&slice);
            let deleting = metadata.is_some_and(|m| m.deletion_timestamp.is_some());
            if let Some(node) = label(LABEL_NODE)
                && !finished
                && !deleting
            {
                let spec: Slice = slice.spec_as().unwrap_or_default();
                observed.others.push(Occupant {
                    node: node.to_owned(),
                    request: Amount::of_slice(spec.resources.as_ref()),
                    in_herd: slice.namespace() == key.namespace,
                });
            }
        }
        // The cache is a map: put the pipeline's slices in a stable order.
        observed.slices.sort_by(|a, b| a.name.cmp(&b.name));
        if observed.pipeline.is_none() {
            return Ok(observed);
        }
        let mut nodes: Vec<NodeView> = self.nodes.objects().iter().map(|n| node_view(n)).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        observed.nodes = nodes;
        if let Some(herd) = self.get_optional::<Herd>("", &key.namespace).await? {
            let herd: Herd = herd.spec_as().map_err(|source| Error::Decode {
                what: format!("herd {}", key.namespace),
                source,
            })?;
            observed.quota = herd.quota;
        }
        Ok(observed)
    }

    fn reconcile(&self, _desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
        reconcile(observed)
    }

    async fn execute(&self, key: &Key, effects: Vec<Effect>) -> Result<(), Error> {
        let mut creates: Vec<PutRequest> = Vec::new();
        let mut effects = effects.into_iter().peekable();
        while let Some(effect) = effects.next() {
            match effect {
                Effect::CreateSlice(slice) => {
                    creates.push(PutRequest {
                        object: Some(slice),
                        precondition: Some(must_not_exist()),
                    });
                    let more = matches!(effects.peek(), Some(Effect::CreateSlice(_)));
                    if !more || creates.len() == CREATE_BATCH {
                        let count = creates.len();
                        let created = self
                            .client
                            .apply(std::mem::take(&mut creates))
                            .await
                            .map_err(|source| Error::Api {
                                action: format!("create {count} slices for {key}"),
                                source,
                            })?;
                        for put in &created {
                            self.wrote(put.object.as_ref().map_or(0, ObjectExt::revision));
                        }
                    }
                }
                Effect::DeleteSlice(name) => {
                    let slice = Slice::full_name();
                    match self
                        .client
                        .delete(&slice, &key.namespace, &name, None)
                        .await
                    {
                        Ok(deleted) => {
                            self.wrote(deleted.object.as_ref().map_or(0, ObjectExt::revision));
                        }
                        Err(rubeapi::Error::NotFound(_)) => {}
                        Err(source) => {
                            return Err(Error::Api {
                                action: format!("delete slice {}/{name}", key.namespace),
                                source,
                            });
                        }
                    }
                }
                Effect::PutPipeline(pipeline) => {
                    let revision = pipeline.revision();
                    self.client
                        .put(pipeline, Some(at_revision(revision)))
                        .await
                        .map_err(|source| Error::Api {
                            action: format!("update the finalizers of {key}"),
                            source,
                        })?;
                }
                Effect::WriteStatus(status) => {
                    self.client
                        .update_status(
                            &Pipeline::full_name(),
                            &key.namespace,
                            &key.name,
                            object::pack(&status),
                            None,
                        )
                        .await
                        .map_err(|source| Error::Api {
                            action: format!("write the status of {key}"),
                            source,
                        })?;
                }
            }
        }
        Ok(())
    }

    /// The pipelines that slices still name, so slices of pipelines deleted while no
    /// controller ran are cleaned up at start. Read from the slice cache, which the runtime
    /// has listed before it asks.
    async fn inventory(&self) -> Result<Vec<Key>, Error> {
        let mut keys: Vec<Key> = self
            .slices
            .objects()
            .iter()
            .filter_map(|s| {
                let name = s.metadata.as_ref()?.labels.get(LABEL_PIPELINE)?;
                Some(Key::typed::<Pipeline>(s.namespace(), name))
            })
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}
