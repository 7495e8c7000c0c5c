//! [`Identity`]: who a client certificate names — its CN is the user, every O a group
//! (Kubernetes' convention). The apiserver reads it from the certificate a caller's TLS
//! handshake verified; `ructl config` from the configuration's own.

/// The one DNS name a node's serving certificate carries, `<node>.node.rube`: what a client
/// of the node's HTTPS endpoint checks, whatever address it dials. No apiserver certificate
/// carries such a name, so a node cannot pass for the apiserver, nor for another node.
pub fn node_server_name(node: &str) -> String {
    format!("{node}.node.rube")
}

/// The group of every node's identity.
pub const NODES: &str = "rube:nodes";
/// A node's user name is this followed by the node's name.
pub const NODE_PREFIX: &str = "rube:node:";

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

impl Identity {
    /// The node this identity is, when it is one: user `rube:node:<name>` in group
    /// [`NODES`].
    pub fn node(&self) -> Option<&str> {
        self.user
            .strip_prefix(NODE_PREFIX)
            .filter(|name| !name.is_empty() && self.groups.iter().any(|g| g == NODES))
    }

    /// The identity in a DER certificate.
    ///
    /// # Errors
    /// What is wrong with it: not a certificate, or no common name.
    pub fn from_der(der: &[u8]) -> Result<Identity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("the client certificate does not parse: {e}"))?;
        Identity::of(&cert)
    }

    /// The identity in the first certificate of a PEM chain, and when that certificate
    /// expires.
    ///
    /// # Errors
    /// As [`Identity::from_der`], or the text holds no PEM certificate.
    pub fn from_pem(pem: &str) -> Result<(Identity, String), String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| format!("the certificate is not PEM: {e}"))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| format!("the client certificate does not parse: {e}"))?;
        Ok((Identity::of(&cert)?, cert.validity().not_after.to_string()))
    }

    fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<Identity, String> {
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
}

/// Whether the DER certificate `der` expires within `within` (or does not parse, or has
/// expired): the one test of when a certificate is issued again, by the apiserver for its own
/// and by a rubelet for the node's.
pub fn expires_within(der: &[u8], within: std::time::Duration) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return true;
    };
    cert.validity().time_to_expiration().is_none_or(|left| {
        left.whole_seconds() < i64::try_from(within.as_secs()).unwrap_or(i64::MAX)
    })
}
