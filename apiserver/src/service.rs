//! The gRPC service: each handler admits its request, makes one store transaction (through
//! [`Accounting`], which adds the Herd usage the change alters), and maps errors to codes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use prost::Name;
use rubeapi::Registry;
use rubeapi::rube::api_server_server::ApiServer;
use rubeapi::rube::{
    ApplyRequest, ApplyResponse, CompactRequest, CompactResponse, DeleteRequest, DeleteResponse,
    GetRequest, ListRequest, ListResponse, Object, PutRequest, PutResponse, TypesRequest,
    TypesResponse, UpdateStatusRequest, WatchEvent, WatchRequest,
};
use rubeapi::runink::Herd;
use rubeapi::selector::Filter;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::admission::{self, Limits};
use crate::auth::{self, Identity};
use crate::herds::Accounting;
use crate::metrics::Metrics;
use crate::rbac::{self, Action, Authorizer, Verb};
use crate::store::{Expect, Key, Op, PutOp, Store, Written};
use crate::types;

/// The `ApiServer` implementation over a store.
pub struct ApiService<S> {
    store: Arc<S>,
    registry: Registry,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Ends every watch stream, so a graceful shutdown does not wait for clients.
    shutdown: CancellationToken,
    /// Herd usage and quotas, kept in the same transaction as each change.
    accounting: Accounting,
    /// Who may do what (RBAC), kept current from the store.
    authorizer: Arc<Authorizer>,
}

impl<S: Store> ApiService<S> {
    pub fn new(
        store: Arc<S>,
        registry: Registry,
        limits: Limits,
        metrics: Arc<Metrics>,
        authorizer: Arc<Authorizer>,
        shutdown: CancellationToken,
    ) -> Self {
        ApiService {
            store,
            registry,
            limits,
            metrics,
            shutdown,
            accounting: Accounting::default(),
            authorizer,
        }
    }

    /// Refuses `action` unless the policy allows it to `who`.
    fn authorize(&self, who: &Identity, action: Action<'_>) -> Result<(), Error> {
        if self.authorizer.policy().allows(who, &action) {
            return Ok(());
        }
        Err(Error::Forbidden(forbidden(who, &action)))
    }

    /// Authorizes `action` on the object at `key`. When the answer depends on the object's
    /// labels (a node acting on what is bound to it), reads the object and decides with the
    /// labels it has in the store, and returns it.
    async fn authorize_stored(
        &self,
        who: &Identity,
        action: Action<'_>,
        key: &Key,
    ) -> Result<Option<Object>, Error> {
        let policy = self.authorizer.policy();
        if policy.allows(who, &action) {
            return Ok(None);
        }
        if policy.depends_on_labels(who, &action) {
            match self.store.get(key.clone()).await {
                Ok(object) => {
                    let allowed = object
                        .metadata
                        .as_ref()
                        .is_some_and(|m| policy.allows(who, &action.on(&m.labels)));
                    if allowed {
                        return Ok(Some(object));
                    }
                }
                // Refused the same whether it exists or not: a denial tells nothing.
                Err(Error::NotFound { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        Err(Error::Forbidden(forbidden(who, &action)))
    }

    /// The verb of a put: `create` when the object does not exist (or must not), `update`
    /// when it does (or must be at a revision).
    async fn put_verb(&self, op: &PutOp) -> Result<Verb, Error> {
        Ok(match op.expect {
            Some(Expect::Absent) => Verb::Create,
            Some(Expect::Revision(_)) => Verb::Update,
            None => match self.store.get(Key::of(&op.object)).await {
                Ok(_) => Verb::Update,
                Err(Error::NotFound { .. }) => Verb::Create,
                Err(other) => return Err(other),
            },
        })
    }

    /// Authorizes one admitted put: its verb on its key, and for roles and bindings that the
    /// caller holds every permission they would give (no escalation).
    async fn authorize_put(
        &self,
        who: &Identity,
        op: &PutOp,
        batch: &[&Object],
    ) -> Result<(), Error> {
        let key = Key::of(&op.object);
        let action = |verb| Action {
            verb,
            kind: &key.type_name,
            namespace: &key.namespace,
            name: &key.name,
            labels: None,
        };
        let policy = self.authorizer.policy();
        // Whoever may both create and update needs no read to tell which this put is.
        let verb = if op.expect.is_none()
            && policy.allows(who, &action(Verb::Create))
            && policy.allows(who, &action(Verb::Update))
        {
            Verb::Update
        } else {
            self.put_verb(op).await?
        };
        self.authorize(
            who,
            Action {
                verb,
                kind: &key.type_name,
                namespace: &key.namespace,
                name: &key.name,
                labels: None,
            },
        )?;
        if !rbac::is_rbac_kind(&key.type_name) {
            return Ok(());
        }
        let (rules, namespace) = self.rules_given(&op.object, batch).await?;
        if self
            .authorizer
            .policy()
            .covers(who, &rules, namespace.as_deref())
        {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "{who} may not {verb} {key}: it would give permissions {who} does not hold{}",
            namespace.map_or_else(
                || " everywhere".to_owned(),
                |n| format!(" in namespace {n}")
            )
        )))
    }

    /// The rules an RBAC object gives, and where (`None`: everywhere).
    async fn rules_given(
        &self,
        object: &Object,
        batch: &[&Object],
    ) -> Result<(Vec<rubeapi::rube::PolicyRule>, Option<String>), Error> {
        use rubeapi::object::ObjectExt;
        use rubeapi::rube::role_ref::Kind as RefKind;
        use rubeapi::rube::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
        let decode = |e: rubeapi::Error| Error::Invalid(e.to_string());
        let namespace = object.namespace().to_owned();
        let cluster_role = |name: String| async move {
            let key = Key::new(&ClusterRole::full_name(), "", &name);
            match self.role_object(&key, batch).await {
                Ok(o) => Ok(o.spec_as::<ClusterRole>().map_err(decode)?.rules),
                Err(Error::NotFound { .. }) => Err(Error::Invalid(format!(
                    "the binding refers to {key}, which does not exist"
                ))),
                Err(other) => Err(other),
            }
        };
        Ok(match object.type_name() {
            t if t == Role::full_name() => (
                object.spec_as::<Role>().map_err(decode)?.rules,
                Some(namespace),
            ),
            t if t == ClusterRole::full_name() => {
                (object.spec_as::<ClusterRole>().map_err(decode)?.rules, None)
            }
            t if t == RoleBinding::full_name() => {
                let binding = object.spec_as::<RoleBinding>().map_err(decode)?;
                let role = binding.role.unwrap_or_default();
                let rules = match role.kind() {
                    RefKind::ClusterRole => cluster_role(role.name).await?,
                    RefKind::Role => {
                        let key = Key::new(&Role::full_name(), &namespace, &role.name);
                        match self.role_object(&key, batch).await {
                            Ok(o) => o.spec_as::<Role>().map_err(decode)?.rules,
                            Err(Error::NotFound { .. }) => {
                                return Err(Error::Invalid(format!(
                                    "the binding refers to {key}, which does not exist"
                                )));
                            }
                            Err(other) => return Err(other),
                        }
                    }
                    RefKind::Unspecified => {
                        return Err(Error::Invalid("role.kind: say ROLE or CLUSTER_ROLE".into()));
                    }
                };
                (rules, Some(namespace))
            }
            t if t == ClusterRoleBinding::full_name() => {
                let binding = object.spec_as::<ClusterRoleBinding>().map_err(decode)?;
                (cluster_role(binding.role).await?, None)
            }
            _ => (Vec::new(), None),
        })
    }

    /// The role at `key`: as `batch` puts it, or as the store has it.
    async fn role_object(&self, key: &Key, batch: &[&Object]) -> Result<Object, Error> {
        match batch.iter().find(|o| Key::of(o) == *key) {
            Some(object) => Ok((*object).clone()),
            None => self.store.get(key.clone()).await,
        }
    }

    /// Reloads the policy when `written` touched an RBAC object, so the change holds for the
    /// next call through this apiserver (others follow by their watch).
    async fn refresh_policy_after(&self, written: &[Written]) -> Result<(), Error> {
        if written
            .iter()
            .any(|w| rbac::is_rbac_kind(&Key::of(&w.object).type_name))
        {
            rbac::refresh(&*self.store, &self.authorizer).await?;
        }
        Ok(())
    }

    async fn observe<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        let code = result
            .as_ref()
            .map_or_else(Error::code, |_| tonic::Code::Ok);
        self.metrics.observe(method, code, started.elapsed());
        match result {
            Ok(value) => Ok(Response::new(value)),
            Err(error) => {
                tracing::debug!(method, %error, "request refused");
                Err(error.into())
            }
        }
    }

    /// [`Self::observe`] for a call that changes something, with an audit line: who, the
    /// method, the objects it named, the revision it took and how it ended (Kubernetes' audit
    /// log at its metadata level: never a spec, a status or a value).
    async fn audited<T>(
        &self,
        method: &'static str,
        who: &Identity,
        objects: Vec<String>,
        revision: impl Fn(&T) -> u64,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let result = self.observe(method, call).await;
        let (code, revision) = match &result {
            Ok(response) => (tonic::Code::Ok, revision(response.get_ref())),
            Err(status) => (status.code(), 0),
        };
        tracing::info!(
            target: AUDIT,
            user = %who.user,
            groups = %who.groups.join(","),
            method,
            objects = %objects.join(" "),
            revision,
            code = ?code,
            "audit"
        );
        result
    }

    /// Admits, authorizes and applies puts atomically; a put of a `rube.Type` is checked
    /// against the other registered types first and reloads the registry after.
    async fn apply_puts(
        &self,
        who: &Identity,
        puts: Vec<PutRequest>,
    ) -> Result<Vec<Written>, Error> {
        let count = puts.len();
        let mut ops = Vec::with_capacity(count);
        for (index, put) in puts.into_iter().enumerate() {
            let key = put.object.as_ref().map(Key::of).unwrap_or_default();
            let op = self
                .admit_put(put)
                .map_err(|e| e.in_batch(index, count, &key))?;
            ops.push(op);
        }
        // A binding may name a role made in the same batch.
        let batch: Vec<&Object> = ops.iter().map(|op| &op.object).collect();
        for (index, op) in ops.iter().enumerate() {
            let key = Key::of(&op.object);
            self.authorize_put(who, op, &batch)
                .await
                .map_err(|e| e.in_batch(index, count, &key))?;
            if key.type_name == types::TYPE_KIND {
                types::admit_type(&*self.store, &self.registry, &op.object)
                    .await
                    .map_err(|e| e.in_batch(index, count, &key))?;
            }
        }
        let touches_types = ops
            .iter()
            .any(|op| Key::of(&op.object).type_name == types::TYPE_KIND);
        let written = self
            .accounting
            .transact(
                &*self.store,
                &self.registry,
                ops.into_iter().map(Op::Put).collect(),
            )
            .await?;
        if touches_types {
            types::refresh(&*self.store, &self.registry).await?;
        }
        self.refresh_policy_after(&written).await?;
        Ok(written)
    }

    /// One op through [`Accounting`], for the handlers that change a single object.
    async fn transact_one(&self, op: Op) -> Result<Written, Error> {
        let mut written = self
            .accounting
            .transact(&*self.store, &self.registry, vec![op])
            .await?;
        Ok(written.remove(0))
    }

    fn admit_put(&self, request: PutRequest) -> Result<PutOp, Error> {
        let mut object = request
            .object
            .ok_or_else(|| Error::Invalid("the request has no object".into()))?;
        admission::admit_object(&self.registry, &self.limits, &mut object)?;
        Ok(PutOp {
            object,
            expect: Expect::from_proto(request.precondition.as_ref()),
        })
    }
}

fn put_response(written: Written) -> PutResponse {
    PutResponse {
        object: Some(written.object),
        outcome: written.outcome.into(),
    }
}

/// The tracing target of audit lines.
pub const AUDIT: &str = "rube::audit";

/// `runink.Slice herd/name`, or `runink.Herd name` when cluster-scoped.
fn target(type_name: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{type_name} {name}")
    } else {
        format!("{type_name} {namespace}/{name}")
    }
}

fn named(object: &Object) -> String {
    use rubeapi::object::ObjectExt;
    target(object.type_name(), object.namespace(), object.name())
}

fn revision_of(object: &Object) -> u64 {
    object.metadata.as_ref().map_or(0, |m| m.revision)
}

/// `alice (tenants) may not create runink.Slice in namespace herd-b`.
fn forbidden(who: &Identity, action: &Action<'_>) -> String {
    let what = if action.kind == rbac::ANY {
        "the store".to_owned()
    } else {
        action.kind.to_owned()
    };
    let place = match (action.namespace.is_empty(), action.name.is_empty()) {
        (false, _) => format!(" in namespace {}", action.namespace),
        (true, false) => format!(" {}", action.name),
        (true, true) => " across namespaces".to_owned(),
    };
    format!("{who} may not {} {what}{place}", action.verb)
}

/// Whether `who` may see `object` through `verb` (list or watch).
fn may_see(policy: &rbac::Policy, who: &Identity, verb: Verb, object: &Object) -> bool {
    use rubeapi::object::ObjectExt;
    policy.allows(
        who,
        &Action {
            verb,
            kind: object.type_name(),
            namespace: object.namespace(),
            name: object.name(),
            labels: object.metadata.as_ref().map(|m| &m.labels),
        },
    )
}

fn filter_of(selector: Option<rubeapi::rube::Selector>) -> Result<Filter, Error> {
    Filter::from_selector(&selector.unwrap_or_default()).map_err(|e| Error::Invalid(e.to_string()))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> ApiServer for ApiService<S> {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = auth::caller(&request)?.clone();
        let objects = request.get_ref().object.iter().map(named).collect();
        let revision = |r: &PutResponse| r.object.as_ref().map_or(0, revision_of);
        self.audited("Put", &who, objects, revision, async {
            let mut written = self.apply_puts(&who, vec![request.into_inner()]).await?;
            Ok(put_response(written.remove(0)))
        })
        .await
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let who = auth::caller(&request)?.clone();
        let objects = request
            .get_ref()
            .puts
            .iter()
            .filter_map(|p| p.object.as_ref())
            .map(named)
            .collect();
        let revision = |r: &ApplyResponse| {
            r.results
                .iter()
                .filter_map(|p| p.object.as_ref())
                .map(revision_of)
                .max()
                .unwrap_or(0)
        };
        self.audited("Apply", &who, objects, revision, async {
            let puts = request.into_inner().puts;
            if puts.is_empty() {
                return Err(Error::Invalid("the request has no objects".into()));
            }
            let written = self.apply_puts(&who, puts).await?;
            Ok(ApplyResponse {
                results: written.into_iter().map(put_response).collect(),
            })
        })
        .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Object>, Status> {
        let who = auth::caller(&request)?.clone();
        self.observe("Get", async {
            let r = request.into_inner();
            let key = admission::admit_key(&self.registry, &r.r#type, &r.namespace, &r.name)?;
            let action = Action::new(Verb::Get, &key.type_name, &key.namespace, &key.name);
            if let Some(object) = self.authorize_stored(&who, action, &key).await? {
                return Ok(object);
            }
            self.store.get(key).await
        })
        .await
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let who = auth::caller(&request)?.clone();
        self.observe("List", async {
            let filter = filter_of(request.into_inner().selector)?;
            if !filter.type_name.is_empty() {
                self.registry
                    .kind(&filter.type_name)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
            }
            let policy = self.authorizer.policy();
            if !policy.allows_some(&who, Verb::List, &filter.type_name, &filter.namespace) {
                return Err(Error::Forbidden(forbidden(
                    &who,
                    &Action {
                        verb: Verb::List,
                        kind: if filter.type_name.is_empty() {
                            rbac::ANY
                        } else {
                            &filter.type_name
                        },
                        namespace: &filter.namespace,
                        name: "",
                        labels: None,
                    },
                )));
            }
            let listing = self.store.list(filter).await?;
            // Only what the caller may see: a tenant listing across namespaces gets its own.
            let objects = listing
                .objects
                .into_iter()
                .filter(|o| may_see(&policy, &who, Verb::List, o))
                .collect();
            Ok(ListResponse {
                objects,
                revision: listing.revision,
            })
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let who = auth::caller(&request)?.clone();
        let r = request.get_ref();
        let objects = vec![target(&r.r#type, &r.namespace, &r.name)];
        let revision = |r: &DeleteResponse| r.object.as_ref().map_or(0, revision_of);
        self.audited("Delete", &who, objects, revision, async {
            let r = request.into_inner();
            let key = admission::admit_key(&self.registry, &r.r#type, &r.namespace, &r.name)?;
            self.authorize(
                &who,
                Action {
                    verb: Verb::Delete,
                    kind: &key.type_name,
                    namespace: &key.namespace,
                    name: &key.name,
                    labels: None,
                },
            )?;
            let is_type = key.type_name == types::TYPE_KIND;
            if is_type {
                types::admit_type_delete(&*self.store, &self.registry, &key.name).await?;
            }
            let expect = Expect::from_proto(r.precondition.as_ref());
            let written = self.transact_one(Op::Delete { key, expect }).await?;
            if is_type {
                types::refresh(&*self.store, &self.registry).await?;
            }
            self.refresh_policy_after(std::slice::from_ref(&written))
                .await?;
            Ok(DeleteResponse {
                object: Some(written.object),
                outcome: written.outcome.into(),
            })
        })
        .await
    }

    async fn update_status(
        &self,
        request: Request<UpdateStatusRequest>,
    ) -> Result<Response<Object>, Status> {
        let who = auth::caller(&request)?.clone();
        let r = request.get_ref();
        let objects = vec![target(&r.r#type, &r.namespace, &r.name)];
        self.audited("UpdateStatus", &who, objects, revision_of, async {
            let r = request.into_inner();
            let key = admission::admit_key(&self.registry, &r.r#type, &r.namespace, &r.name)?;
            let action = Action::new(
                Verb::UpdateStatus,
                &key.type_name,
                &key.namespace,
                &key.name,
            );
            self.authorize_stored(&who, action, &key).await?;
            let mut status = r
                .status
                .ok_or_else(|| Error::Invalid("the request has no status".into()))?;
            admission::admit_status(&self.registry, &self.limits, &key, &mut status)?;
            if key.type_name == Herd::full_name() {
                return Err(Error::Invalid(format!(
                    "the status of {} {} is the usage of its slices, kept by the apiserver; it cannot be written",
                    key.type_name, key.name
                )));
            }
            let expect = Expect::from_proto(r.precondition.as_ref());
            let written = self.transact_one(Op::Status { key, status, expect }).await?;
            Ok(written.object)
        })
        .await
    }

    type WatchStream = EventStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        let who = auth::caller(&request)?.clone();
        self.observe("Watch", async {
            let r = request.into_inner();
            let filter = filter_of(r.selector)?;
            if !filter.type_name.is_empty() {
                self.registry
                    .kind(&filter.type_name)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
            }
            let (kind, namespace) = (filter.type_name.clone(), filter.namespace.clone());
            let denied = move |who: &Identity| {
                forbidden(
                    who,
                    &Action {
                        verb: Verb::Watch,
                        kind: if kind.is_empty() { rbac::ANY } else { &kind },
                        namespace: &namespace,
                        name: "",
                        labels: None,
                    },
                )
            };
            let watchable = {
                let (kind, namespace) = (filter.type_name.clone(), filter.namespace.clone());
                move |policy: &rbac::Policy, who: &Identity| {
                    policy.allows_some(who, Verb::Watch, &kind, &namespace)
                }
            };
            if !watchable(&self.authorizer.policy(), &who) {
                return Err(Error::Forbidden(denied(&who)));
            }
            let events = self
                .store
                .watch(filter, r.from_revision, self.shutdown.child_token())
                .await?;
            let guard = self.metrics.watch_opened();
            Ok(Box::pin(authorized_events(
                events,
                self.authorizer.clone(),
                who,
                watchable,
                denied,
                guard,
            )) as EventStream)
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<CompactRequest>,
    ) -> Result<Response<CompactResponse>, Status> {
        let who = auth::caller(&request)?.clone();
        let objects = vec![format!("history up to {}", request.get_ref().revision)];
        let revision = |r: &CompactResponse| r.compacted_revision;
        self.audited("Compact", &who, objects, revision, async {
            self.authorize(
                &who,
                Action {
                    verb: Verb::Compact,
                    kind: rbac::ANY,
                    namespace: "",
                    name: "",
                    labels: None,
                },
            )?;
            let bounds = self.store.compact(request.into_inner().revision).await?;
            Ok(CompactResponse {
                compacted_revision: bounds.compacted,
                revision: bounds.revision,
            })
        })
        .await
    }

    async fn types(
        &self,
        _request: Request<TypesRequest>,
    ) -> Result<Response<TypesResponse>, Status> {
        self.observe("Types", async {
            Ok(TypesResponse {
                file_descriptor_set: self.registry.encode_file_descriptor_set(),
            })
        })
        .await
    }
}

/// A watch's events as its caller may see them: each event is shown only if the current
/// policy lets the caller watch that object, and when the caller loses the right to watch at
/// all, the stream ends with `PERMISSION_DENIED` rather than go on.
fn authorized_events<E, G>(
    events: E,
    authorizer: Arc<Authorizer>,
    who: Identity,
    watchable: impl Fn(&rbac::Policy, &Identity) -> bool + Send + Sync + 'static,
    denied: impl Fn(&Identity) -> String + Send + Sync + 'static,
    guard: G,
) -> impl Stream<Item = Result<WatchEvent, Status>> + Send
where
    E: Stream<Item = Result<WatchEvent, Error>> + Send + Unpin + 'static,
    G: Send + 'static,
{
    use rubeapi::rube::watch_event::Event;
    let changes = authorizer.subscribe();
    let (watchable, denied) = (Arc::new(watchable), Arc::new(denied));
    futures::stream::unfold(
        (events, changes, false),
        move |(mut events, mut changes, ended)| {
            // The guard lives as long as the stream: it counts the open watch.
            let _open = &guard;
            let authorizer = authorizer.clone();
            let who = who.clone();
            let (watchable, denied) = (watchable.clone(), denied.clone());
            async move {
                if ended {
                    return None;
                }
                loop {
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() {
                                continue;
                            }
                            if !watchable(&authorizer.policy(), &who) {
                                let status = Status::permission_denied(denied(&who));
                                return Some((Err(status), (events, changes, true)));
                            }
                        }
                        item = events.next() => {
                            let event = match item? {
                                Ok(event) => event,
                                Err(error) => {
                                    return Some((Err(Status::from(error)), (events, changes, false)));
                                }
                            };
                            let visible = match &event.event {
                                Some(Event::Update(o) | Event::Delete(o)) => {
                                    may_see(&authorizer.policy(), &who, Verb::Watch, o)
                                }
                                _ => true,
                            };
                            if visible {
                                return Some((Ok(event), (events, changes, false)));
                            }
                        }
                    }
                }
            }
        },
    )
}

#[tonic::async_trait]
impl<S: Store> rubeapi::rube::authorization_server::Authorization for ApiService<S> {
    /// May someone else do this? Asked by rubelets before they serve a slice's logs.
    async fn review(
        &self,
        request: Request<rubeapi::rube::AccessReview>,
    ) -> Result<Response<rubeapi::rube::AccessReviewResult>, Status> {
        let who = auth::caller(&request)?.clone();
        self.observe("Review", async {
            let ask = Action::new(Verb::Create, rbac::ACCESS_REVIEW, "", "");
            if rbac::node_of(&who).is_none() && !self.authorizer.policy().allows(&who, &ask) {
                return Err(Error::Forbidden(forbidden(&who, &ask)));
            }
            let review = request.into_inner();
            let verb = Verb::parse(&review.verb).ok_or_else(|| {
                Error::Invalid(format!(
                    "verb {:?} is not one of {}",
                    review.verb,
                    Verb::ALL.map(Verb::name).join(", ")
                ))
            })?;
            let subject = Identity {
                user: review.user,
                groups: review.groups,
            };
            let key = Key::new(&review.kind, &review.namespace, &review.name);
            let action = Action::new(verb, &key.type_name, &key.namespace, &key.name);
            Ok(match self.authorize_stored(&subject, action, &key).await {
                Ok(_) => rubeapi::rube::AccessReviewResult {
                    allowed: true,
                    reason: String::new(),
                },
                Err(Error::Forbidden(reason)) => rubeapi::rube::AccessReviewResult {
                    allowed: false,
                    reason,
                },
                Err(other) => return Err(other),
            })
        })
        .await
    }
}
