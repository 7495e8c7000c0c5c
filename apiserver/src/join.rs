//! Joining nodes (k3s' way): join tokens as `rube.JoinToken` objects, the token a first start
//! makes (`<data dir>/token`), and the `Bootstrap` service, the one service a caller without a
//! client certificate may reach: `Join` gives a node that holds a valid token its
//! certificates; `Renew` gives a node, authenticated by its current certificate, new ones.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Name;
use rubeapi::join::{Token, sha256_hex, split_credential};
use rubeapi::object::ObjectExt;
use rubeapi::rube::bootstrap_server::Bootstrap;
use rubeapi::rube::{JoinRequest, JoinToken, NodeCredentials, RenewRequest};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::auth::Identity;
use crate::pki::Pki;
use crate::service::AUDIT;
use crate::store::{Expect, Key, Op, PutOp, Store};

/// The join token of `data_dir` (`<data dir>/token`, mode 0600), made with its
/// `rube.JoinToken` at the first start. A token deleted from the store stays revoked: the
/// file is not a reason to make it again.
///
/// # Errors
/// When the file cannot be read or written, or the store refuses the token.
pub async fn first_token<S: Store>(
    store: &S,
    data_dir: &Path,
    server_ca_pem: &str,
) -> Result<Token, Error> {
    let path = data_dir.join(rubeapi::config::TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Token::parse(&text).map_err(|e| Error::Pki(format!("{}: {e}", path.display())));
    }
    let token = Token::generate(server_ca_pem).map_err(|e| Error::Pki(e.to_string()))?;
    let object = rubeapi::object::new(
        "",
        &token.id,
        &JoinToken {
            secret_sha256: token.secret_sha256(),
            expires_unix: 0,
            description: "made at the apiserver's first start".into(),
        },
    );
    store
        .transact(vec![Op::Put(PutOp {
            object,
            expect: Some(Expect::Absent),
        })])
        .await?;
    crate::pki::write_secret(&path, format!("{token}\n").as_bytes())?;
    tracing::info!(path = %path.display(), id = %token.id, "made the join token");
    Ok(token)
}

/// The `Bootstrap` service.
pub struct BootstrapService<S> {
    store: Arc<S>,
    /// `None` when the apiserver serves certificates it was given and holds no CA key.
    pki: Option<Arc<Pki>>,
}

impl<S: Store> BootstrapService<S> {
    pub fn new(store: Arc<S>, pki: Option<Arc<Pki>>) -> Self {
        BootstrapService { store, pki }
    }

    fn pki(&self) -> Result<&Pki, Error> {
        self.pki.as_deref().ok_or_else(|| {
            Error::Unsupported(
                "this apiserver serves certificates it was given (--tls-cert-file) and holds no \
                 CA key: it cannot issue node credentials; issue them with your CA and start \
                 the rubelet with --config"
                    .into(),
            )
        })
    }

    /// Checks `credential` (`<id>.<secret>`) against its stored token.
    async fn check_token(&self, credential: &str) -> Result<String, Error> {
        let (id, secret) = split_credential(credential)
            .map_err(|why| Error::Unauthenticated(format!("not a join token: {why}")))?;
        let key = Key::new(&JoinToken::full_name(), "", id);
        let object = match self.store.get(key).await {
            Ok(object) => object,
            Err(Error::NotFound { .. }) => {
                return Err(Error::Unauthenticated(format!(
                    "join token {id} does not exist (revoked, or never made): ask for a new one \
                     (ructl token create)"
                )));
            }
            Err(other) => return Err(other),
        };
        let token: JoinToken = object
            .spec_as()
            .map_err(|e| Error::Internal(e.to_string()))?;
        if !same(
            sha256_hex(secret.as_bytes()).as_bytes(),
            token.secret_sha256.as_bytes(),
        ) {
            return Err(Error::Unauthenticated(format!(
                "join token {id}: the secret is wrong"
            )));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if token.expires_unix > 0 && now >= u64::try_from(token.expires_unix).unwrap_or(0) {
            return Err(Error::Unauthenticated(format!(
                "join token {id} expired at {}: ask for a new one (ructl token create)",
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + std::time::Duration::from_secs(token.expires_unix.unsigned_abs())
                )
            )));
        }
        Ok(id.to_owned())
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn audit(user: &str, method: &str, node: &str, result: &Result<NodeCredentials, Error>) {
    let code = result
        .as_ref()
        .map_or_else(Error::code, |_| tonic::Code::Ok);
    tracing::info!(
        target: AUDIT,
        user,
        groups = "",
        method,
        objects = %format!("node {node}"),
        revision = 0u64,
        code = ?code,
        "audit"
    );
}

#[tonic::async_trait]
impl<S: Store> Bootstrap for BootstrapService<S> {
    async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<Response<NodeCredentials>, Status> {
        let r = request.into_inner();
        let id = r.token.split('.').next().unwrap_or_default().to_owned();
        let result = async {
            crate::admission::check_dns_name("node", &r.node)?;
            self.check_token(&r.token).await?;
            self.pki()?.issue_node(&r.node, &r.csr_pem)
        }
        .await;
        audit(&format!("join-token:{id}"), "Join", &r.node, &result);
        Ok(Response::new(result?))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<NodeCredentials>, Status> {
        // This service is not behind the interceptor (Join has no certificate to show), so the
        // caller's certificate is read here.
        let who = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| Identity::from_der(c.as_ref())));
        let who = match who {
            Some(Ok(who)) => who,
            Some(Err(why)) => return Err(Status::unauthenticated(why)),
            None => {
                return Err(Status::unauthenticated(
                    "no client certificate: renewing needs the node's current one",
                ));
            }
        };
        let node = crate::rbac::node_of(&who).map(str::to_owned);
        let result = match &node {
            Some(node) => self
                .pki()
                .and_then(|pki| pki.issue_node(node, &request.get_ref().csr_pem)),
            None => Err(Error::Forbidden(format!(
                "{who} is not a node: only nodes renew their certificates here"
            ))),
        };
        audit(&who.user, "Renew", node.as_deref().unwrap_or(""), &result);
        Ok(Response::new(result?))
    }
}
