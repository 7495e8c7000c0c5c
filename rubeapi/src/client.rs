//! The async client: one method per `ApiServer` call, typed errors, zstd on request. Always
//! TLS, with the client certificate of a [`ClientConfig`]: there is no plaintext connection.

use std::time::Duration;

use futures::{Stream, StreamExt};
use prost_types::Any;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Error;
use crate::Registry;
use crate::rube::api_server_client::ApiServerClient;
use crate::rube::authorization_client::AuthorizationClient;
use crate::rube::precondition::Condition;
use crate::rube::{
    ApplyRequest, ClientConfig, CompactRequest, CompactResponse, DeleteRequest, DeleteResponse,
    GetRequest, ListRequest, ListResponse, Object, Precondition, PutRequest, PutResponse, Selector,
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
    /// Boxed: rarely used, and the client is cloned for every call.
    authorization: Box<AuthorizationClient<Channel>>,
}

impl Client {
    /// Connects to the apiserver `config` names, over TLS, proving who it is with the
    /// config's certificate.
    pub async fn connect(config: &ClientConfig) -> Result<Client, Error> {
        let channel = endpoint(config)?
            .connect()
            .await
            .map_err(|source| Error::Connect {
                addr: config.server.clone(),
                source,
            })?;
        Ok(Client::from_channel(channel))
    }

    /// A client for `config`'s apiserver that connects on its first call and reconnects after
    /// failures, so it can be made while the apiserver is down (as a rubelet must). Fails only
    /// when the config is not usable.
    pub fn connect_lazy(config: &ClientConfig) -> Result<Client, Error> {
        Ok(Client::from_channel(endpoint(config)?.connect_lazy()))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Client {
        let authorization = Box::new(AuthorizationClient::new(channel.clone()));
        let inner = ApiServerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Client {
            inner,
            authorization,
        }
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

    /// Whether `who` may do `verb` on `kind` `namespace/name` (Kubernetes'
    /// SubjectAccessReview): `Ok(None)` when it may, `Ok(Some(reason))` when it may not.
    pub async fn review(
        &self,
        who: &crate::identity::Identity,
        verb: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, Error> {
        let request = crate::rube::AccessReview {
            user: who.user.clone(),
            groups: who.groups.clone(),
            verb: verb.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let result = self
            .authorization
            .as_ref()
            .clone()
            .review(request)
            .await?
            .into_inner();
        Ok((!result.allowed).then_some(result.reason))
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

/// The TLS endpoint of `config`: its CA is the only root trusted, its certificate and key the
/// client's identity, and the server's certificate must carry `server_name` (default: the
/// host of `server`).
/// The endpoint of `config`'s apiserver: TLS checked against its CA, with its client
/// certificate when it has one (a node that is joining has none yet).
pub(crate) fn endpoint(config: &ClientConfig) -> Result<Endpoint, Error> {
    let addr = &tls_address(&config.server)?;
    let host = server_host(addr);
    let server_name = if config.server_name.is_empty() {
        host.to_owned()
    } else {
        config.server_name.clone()
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.ca_pem))
        .domain_name(server_name);
    if !config.cert_pem.is_empty() {
        tls = tls.identity(Identity::from_pem(&config.cert_pem, &config.key_pem));
    }
    let connect = |source| Error::Connect {
        addr: addr.clone(),
        source,
    };
    Ok(Endpoint::from_shared(format!("https://{addr}"))
        .map_err(connect)?
        .tls_config(tls)
        .map_err(connect)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// `host:port` of a server given as that or as `https://host:port`; any other scheme is
/// refused, never downgraded to.
pub(crate) fn tls_address(server: &str) -> Result<String, Error> {
    let addr = server
        .strip_prefix("https://")
        .unwrap_or(server)
        .trim_end_matches('/');
    if addr.contains("://") {
        return Err(Error::Config {
            path: "server".into(),
            reason: format!(
                "{server:?}: the apiserver speaks only TLS; give host:port (or https://host:port)"
            ),
        });
    }
    Ok(addr.to_owned())
}

/// The host of `host:port` (an IPv6 address without its brackets).
pub(crate) fn server_host(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_addresses_are_refused_by_name() {
        let error = tls_address("http://127.0.0.1:7400")
            .unwrap_err()
            .to_string();
        assert!(error.contains("only TLS"), "{error}");
        assert_eq!(
            tls_address("https://127.0.0.1:7400/").unwrap(),
            "127.0.0.1:7400"
        );
        assert_eq!(tls_address("[::1]:7400").unwrap(), "[::1]:7400");
    }

    #[test]
    fn the_server_name_defaults_to_the_host() {
        assert_eq!(server_host("127.0.0.1:7400"), "127.0.0.1");
        assert_eq!(server_host("[::1]:7400"), "::1");
        assert_eq!(server_host("apiserver.example:443"), "apiserver.example");
    }
}
