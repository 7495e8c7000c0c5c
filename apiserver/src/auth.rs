//! Who is calling: the [`Identity`] in the client certificate the TLS handshake verified against
//! the client CA (CN: the user, every O: a group; Kubernetes' convention). A call without one is
//! refused with `UNAUTHENTICATED` before any handler runs.

use tonic::{Request, Status};

/// A caller, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.user)?;
        if !self.groups.is_empty() {
            write!(f, " ({})", self.groups.join(", "))?;
        }
        Ok(())
    }
}

/// The identity in a DER certificate.
///
/// # Errors
/// What is wrong with it: not a certificate, or no common name.
pub fn identity_of(der: &[u8]) -> Result<Identity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or("the client certificate has no common name (CN), which names the user")?
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Ok(Identity { user, groups })
}

/// The interceptor in front of every call: reads the caller's identity from its verified
/// certificate and hands it to the handlers in the request's extensions.
///
/// # Errors
/// `UNAUTHENTICATED` naming what is missing.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn authenticate(mut request: Request<()>) -> Result<Request<()>, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        tracing::info!(
            target: crate::service::AUDIT,
            user = "",
            code = ?tonic::Code::Unauthenticated,
            "audit: a call without a client certificate"
        );
        Status::unauthenticated(
            "no client certificate: connect with a client configuration (ructl --config FILE)",
        )
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let identity = identity_of(leaf.as_ref()).map_err(Status::unauthenticated)?;
    request.extensions_mut().insert(identity);
    Ok(request)
}

/// The identity [`authenticate`] found for `request`.
///
/// # Errors
/// `UNAUTHENTICATED` when the request did not pass [`authenticate`] (a server wired without
/// it).
#[allow(clippy::result_large_err)]
pub fn caller<T>(request: &Request<T>) -> Result<&Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .ok_or_else(|| Status::unauthenticated("the caller was not authenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Pki};

    #[test]
    fn the_certificate_names_the_user_and_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open(dir.path()).unwrap();
        let (pem, _) = pki
            .issue_client("rube:node:worker-1", Some("rube:nodes"), pki::LEAF_VALIDITY)
            .unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let identity = identity_of(&der.contents).unwrap();
        assert_eq!(
            identity,
            Identity {
                user: "rube:node:worker-1".into(),
                groups: vec!["rube:nodes".into()],
            }
        );
        assert_eq!(identity.to_string(), "rube:node:worker-1 (rube:nodes)");
        assert!(identity_of(b"not a certificate").is_err());
    }
}
