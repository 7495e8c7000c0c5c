//! The async client: one method per `ApiServer` call, typed errors, zstd on request.

use std::time::Duration;

use futures::{Stream, StreamExt};
use prost_types::Any;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use crate::Error;
use crate::Registry;
use crate::rube::api_server_client::ApiServerClient;
use crate::rube::precondition::Condition;
use crate::rube::{
    ApplyRequest, CompactRequest, CompactResponse, DeleteRequest, DeleteResponse, GetRequest,
    ListRequest, ListResponse, Object, Precondition, PutRequest, PutResponse, Selector,
    TypesRequest, UpdateStatusRequest, WatchEvent, WatchRequest,
};

/// The largest message the client accepts: lists of many objects can be large.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The default address of a local apiserver.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7400";

/// A cheap-to-clone handle on one apiserver connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: ApiServerClient<Channel>,
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        let channel = endpoint(addr)?
            .connect()
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Client::from_channel(channel))
    }

    /// A client for `addr` that connects on its first call and reconnects after failures, so
    /// it can be made while the apiserver is down (as a rubelet must). Fails only when `addr`
    /// is not an address.
    pub fn connect_lazy(addr: &str) -> Result<Client, Error> {
        Ok(Client::from_channel(endpoint(addr)?.connect_lazy()))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Client {
        let inner = ApiServerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Client { inner }
    }

    /// Compresses requests and asks for compressed responses with zstd. Worth it over slow
    /// links with large objects; on loopback and LANs it costs more CPU than it saves (tonic
    /// sets up a compressor per message), so it is off unless asked for.
    pub fn with_compression(mut self) -> Client {
        self.inner = self
            .inner
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd);
        self
    }

    /// Creates or replaces one object. See `Precondition` for compare-and-swap.
    pub async fn put(
        &self,
        object: Object,
        precondition: Option<Precondition>,
    ) -> Result<PutResponse, Error> {
        let request = PutRequest {
            object: Some(object),
            precondition,
        };
        Ok(self.inner.clone().put(request).await?.into_inner())
    }

    /// Applies several puts atomically: all of them or none.
    pub async fn apply(&self, puts: Vec<PutRequest>) -> Result<Vec<PutResponse>, Error> {
        let response = self.inner.clone().apply(ApplyRequest { puts }).await?;
        Ok(response.into_inner().results)
    }

    pub async fn get(&self, type_name: &str, namespace: &str, name: &str) -> Result<Object, Error> {
        let request = GetRequest {
            r#type: type_name.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        Ok(self.inner.clone().get(request).await?.into_inner())
    }

    pub async fn list(&self, selector: Selector) -> Result<ListResponse, Error> {
        let request = ListRequest {
            selector: Some(selector),
        };
        Ok(self.inner.clone().list(request).await?.into_inner())
    }

    pub async fn delete(
        &self,
        type_name: &str,
        namespace: &str,
        name: &str,
        precondition: Option<Precondition>,
    ) -> Result<DeleteResponse, Error> {
        let request = DeleteRequest {
            r#type: type_name.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            precondition,
        };
        Ok(self.inner.clone().delete(request).await?.into_inner())
    }

    pub async fn update_status(
        &self,
        type_name: &str,
        namespace: &str,
        name: &str,
        status: Any,
        precondition: Option<Precondition>,
    ) -> Result<Object, Error> {
        let request = UpdateStatusRequest {
            r#type: type_name.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            status: Some(status),
            precondition,
        };
        Ok(self
            .inner
            .clone()
            .update_status(request)
            .await?
            .into_inner())
    }

    /// Streams every change after `from_revision` (or after now, when `None`), then live changes.
    /// A `Compacted` error means the history is gone: relist and watch from the list's revision.
    pub async fn watch(
        &self,
        selector: Selector,
        from_revision: Option<u64>,
    ) -> Result<impl Stream<Item = Result<WatchEvent, Error>> + Send + 'static, Error> {
        let request = WatchRequest {
            selector: Some(selector),
            from_revision,
        };
        let stream = self.inner.clone().watch(request).await?.into_inner();
        Ok(stream.map(|item| item.map_err(Error::from)))
    }

    pub async fn compact(&self, revision: u64) -> Result<CompactResponse, Error> {
        Ok(self
            .inner
            .clone()
            .compact(CompactRequest { revision })
            .await?
            .into_inner())
    }

    /// The server's type registry, for parsing and printing types this build does not know.
    pub async fn registry(&self) -> Result<Registry, Error> {
        let response = self
            .inner
            .clone()
            .types(TypesRequest {})
            .await?
            .into_inner();
        Registry::from_file_descriptor_set(&response.file_descriptor_set)
    }
}

/// A precondition that the object is at exactly `revision`.
pub fn at_revision(revision: u64) -> Precondition {
    Precondition {
        condition: Some(Condition::Revision(revision)),
    }
}

/// A precondition that the object does not exist.
pub fn must_not_exist() -> Precondition {
    Precondition {
        condition: Some(Condition::MustNotExist(true)),
    }
}

fn endpoint(addr: &str) -> Result<Endpoint, Error> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|source| Error::Connect {
            addr: addr.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}
