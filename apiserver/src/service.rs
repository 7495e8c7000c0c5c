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
use crate::herds::Accounting;
use crate::metrics::Metrics;
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
}

impl<S: Store> ApiService<S> {
    pub fn new(
        store: Arc<S>,
        registry: Registry,
        limits: Limits,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        ApiService {
            store,
            registry,
            limits,
            metrics,
            shutdown,
            accounting: Accounting::default(),
        }
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

    /// Admits and applies puts atomically; a put of a `rube.Type` is checked against the other
    /// registered types first and reloads the registry after.
    async fn apply_puts(&self, puts: Vec<PutRequest>) -> Result<Vec<Written>, Error> {
        let count = puts.len();
        let mut ops = Vec::with_capacity(count);
        for (index, put) in puts.into_iter().enumerate() {
            let key = put.object.as_ref().map(Key::of).unwrap_or_default();
            let op = self
                .admit_put(put)
                .map_err(|e| e.in_batch(index, count, &key))?;
            if key.type_name == types::TYPE_KIND {
                types::admit_type(&*self.store, &self.registry, &op.object)
                    .await
                    .map_err(|e| e.in_batch(index, count, &key))?;
            }
            ops.push(op);
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

fn filter_of(selector: Option<rubeapi::rube::Selector>) -> Result<Filter, Error> {
    Filter::from_selector(&selector.unwrap_or_default()).map_err(|e| Error::Invalid(e.to_string()))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> ApiServer for ApiService<S> {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.observe("Put", async {
            let mut written = self.apply_puts(vec![request.into_inner()]).await?;
            Ok(put_response(written.remove(0)))
        })
        .await
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        self.observe("Apply", async {
            let puts = request.into_inner().puts;
            if puts.is_empty() {
                return Err(Error::Invalid("the request has no objects".into()));
            }
            let written = self.apply_puts(puts).await?;
            Ok(ApplyResponse {
                results: written.into_iter().map(put_response).collect(),
            })
        })
        .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Object>, Status> {
        self.observe("Get", async {
            let r = request.into_inner();
            let key = admission::admit_key(&self.registry, &r.r#type, &r.namespace, &r.name)?;
            self.store.get(key).await
        })
        .await
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.observe("List", async {
            let filter = filter_of(request.into_inner().selector)?;
            if !filter.type_name.is_empty() {
                self.registry
                    .kind(&filter.type_name)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
            }
            let listing = self.store.list(filter).await?;
            Ok(ListResponse {
                objects: listing.objects,
                revision: listing.revision,
            })
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.observe("Delete", async {
            let r = request.into_inner();
            let key = admission::admit_key(&self.registry, &r.r#type, &r.namespace, &r.name)?;
            let is_type = key.type_name == types::TYPE_KIND;
            if is_type {
                types::admit_type_delete(&*self.store, &self.registry, &key.name).await?;
            }
            let expect = Expect::from_proto(r.precondition.as_ref());
            let written = self.transact_one(Op::Delete { key, expect }).await?;
            if is_type {
                types::refresh(&*self.store, &self.registry).await?;
            }
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
        self.observe("UpdateStatus", async {
            let r = request.into_inner();
            let key = admission::admit_key(&self.registry, &r.r#type, &r.namespace, &r.name)?;
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
        self.observe("Watch", async {
            let r = request.into_inner();
            let filter = filter_of(r.selector)?;
            if !filter.type_name.is_empty() {
                self.registry
                    .kind(&filter.type_name)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
            }
            let events = self
                .store
                .watch(filter, r.from_revision, self.shutdown.child_token())
                .await?;
            let guard = self.metrics.watch_opened();
            let stream = events.map(move |item| {
                let _open = &guard;
                item.map_err(Status::from)
            });
            Ok(Box::pin(stream) as EventStream)
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<CompactRequest>,
    ) -> Result<Response<CompactResponse>, Status> {
        self.observe("Compact", async {
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
