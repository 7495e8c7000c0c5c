//! Who is calling: the [`Identity`] in the client certificate the TLS handshake verified against
//! the client CA (CN: the user, every O: a group; Kubernetes' convention). A call without one is
//! refused with `UNAUTHENTICATED` before any handler runs.

use tonic::{Request, Status};

pub use rubeapi::identity::Identity;

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
    let identity = Identity::from_der(leaf.as_ref()).map_err(Status::unauthenticated)?;
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
        let identity = Identity::from_der(&der.contents).unwrap();
        assert_eq!(
            identity,
            Identity {
                user: "rube:node:worker-1".into(),
                groups: vec!["rube:nodes".into()],
            }
        );
        assert_eq!(identity.to_string(), "rube:node:worker-1 (rube:nodes)");
        assert!(Identity::from_der(b"not a certificate").is_err());
    }
}
