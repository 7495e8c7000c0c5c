//! Joining a node with a token (k3s' way), and renewing its certificates.
//!
//! A [`Token`] reads `rube-join::<sha256 of the server CA>::<id>.<secret>`. [`join`] makes the
//! node's key, opens a TLS connection to the apiserver only to see the certificates it
//! presents, trusts the CA among them whose hash the token names (and nothing else), then
//! asks `Bootstrap.Join` over a verified connection for the node's certificates. The key never
//! leaves the node: the apiserver signs a certificate request.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::Error;
use crate::client::{endpoint, server_host, tls_address};
use crate::rube::bootstrap_client::BootstrapClient;
use crate::rube::{ClientConfig, JoinRequest, NodeCredentials, RenewRequest};

/// What every token starts with.
pub const PREFIX: &str = "rube-join::";

/// A join token: the CA it vouches for and the credential it opens `Bootstrap.Join` with.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// SHA-256 of the server CA's DER, lowercase hex.
    pub ca_sha256: String,
    /// The `rube.JoinToken` object's name: 6 characters of `[a-z0-9]`.
    pub id: String,
    /// 32 characters of `[a-z0-9]`; only its hash is stored.
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, whatever prints it.
        f.debug_struct("Token")
            .field("ca_sha256", &self.ca_sha256)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}::{}.{}", self.ca_sha256, self.id, self.secret)
    }
}

impl Token {
    /// A new random token for the cluster whose server CA is `ca_pem`.
    ///
    /// # Errors
    /// [`Error::Join`] when `ca_pem` holds no certificate or the system has no randomness.
    pub fn generate(ca_pem: &str) -> Result<Token, Error> {
        Ok(Token {
            ca_sha256: ca_sha256(ca_pem)?,
            id: random_chars(6)?,
            secret: random_chars(32)?,
        })
    }

    /// Reads a token.
    ///
    /// # Errors
    /// [`Error::Join`] naming the part that is wrong.
    pub fn parse(text: &str) -> Result<Token, Error> {
        let bad = |why: &str| {
            Error::Join(format!(
                "not a join token ({why}): it reads {PREFIX}<CA hash>::<id>.<secret>, as \
                 `ructl token create` prints it and the apiserver keeps it in <data dir>/token"
            ))
        };
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("no rube-join:: prefix"))?;
        let (hash, credential) = rest
            .split_once("::")
            .ok_or_else(|| bad("no :: after the CA hash"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA hash is not 64 hex digits"));
        }
        let (id, secret) = split_credential(credential).map_err(|why| bad(&why))?;
        Ok(Token {
            ca_sha256: hash.to_ascii_lowercase(),
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// `<id>.<secret>`: what `Bootstrap.Join` is given.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// SHA-256 of the secret, lowercase hex: what the `rube.JoinToken` stores.
    pub fn secret_sha256(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
}

/// `<id>.<secret>` split and checked.
///
/// # Errors
/// What is wrong, in words.
pub fn split_credential(credential: &str) -> Result<(&str, &str), String> {
    let (id, secret) = credential
        .split_once('.')
        .ok_or("no '.' between the id and the secret")?;
    let lower = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if id.len() != 6 || !lower(id) {
        return Err("the id is not 6 characters of a-z and 0-9".into());
    }
    if secret.len() < 16 || !lower(secret) {
        return Err("the secret is not at least 16 characters of a-z and 0-9".into());
    }
    Ok((id, secret))
}

/// SHA-256 of data, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of the DER of the first certificate in `pem`, lowercase hex (k3s' CA hash).
///
/// # Errors
/// [`Error::Join`] when `pem` holds no certificate.
pub fn ca_sha256(pem: &str) -> Result<String, Error> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Join(format!("the CA is not a PEM certificate: {e}")))?;
    Ok(sha256_hex(&parsed.contents))
}

fn random_chars(n: usize) -> Result<String, Error> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut chars = String::with_capacity(n);
    while chars.len() < n {
        let mut bytes = [0u8; 64];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| Error::Join(format!("no randomness for a token: {e}")))?;
        // 252 = 7 * 36: rejecting the rest keeps every character equally likely.
        for b in bytes.into_iter().filter(|b| *b < 252) {
            if chars.len() == n {
                break;
            }
            chars.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
        }
    }
    Ok(chars)
}

/// What joining gives a node: its client configuration (whose key is also the serving
/// certificate's) and its serving certificate chain.
#[derive(Clone)]
pub struct Joined {
    pub config: ClientConfig,
    pub serving_cert_pem: String,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("server", &self.config.server)
            .finish_non_exhaustive()
    }
}

/// Joins node `node` to the apiserver at `server` with `token`.
///
/// # Errors
/// [`Error::Join`] when the server presents no CA with the token's hash (another cluster, or
/// someone in between); the apiserver's refusal (`UNAUTHENTICATED` for a revoked, expired or
/// wrong token) as it said it; [`Error::Connect`] when it cannot be reached.
pub async fn join(server: &str, token: &Token, node: &str) -> Result<Joined, Error> {
    let addr = tls_address(server)?;
    let chain = presented_chain(&addr).await?;
    let ca_der = chain
        .iter()
        .find(|der| sha256_hex(der) == token.ca_sha256)
        .ok_or_else(|| {
            Error::Join(format!(
                "{addr} presented no CA with the token's hash {}: it is not the cluster the \
                 token is for (or something in between answered)",
                token.ca_sha256
            ))
        })?;
    let ca_pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca_der.clone()));
    let (key_pem, csr_pem) = request(node)?;
    // From here on the server is checked against the CA the token vouches for.
    let anonymous = ClientConfig {
        server: addr.clone(),
        ca_pem: ca_pem.clone(),
        ..ClientConfig::default()
    };
    let channel = connect(&anonymous).await?;
    let credentials = BootstrapClient::new(channel)
        .join(JoinRequest {
            token: token.credential(),
            node: node.to_owned(),
            csr_pem,
        })
        .await?
        .into_inner();
    Ok(joined(&addr, key_pem, credentials))
}

/// New certificates for the node `config` is a credential of, for a new key, asked with its
/// current certificate before it expires.
///
/// # Errors
/// The apiserver's refusal, or [`Error::Connect`].
pub async fn renew(config: &ClientConfig, node: &str) -> Result<Joined, Error> {
    let (key_pem, csr_pem) = request(node)?;
    let channel = connect(config).await?;
    let credentials = BootstrapClient::new(channel)
        .renew(RenewRequest { csr_pem })
        .await?
        .into_inner();
    let mut joined = joined(&config.server, key_pem, credentials);
    joined.config.server_name.clone_from(&config.server_name);
    Ok(joined)
}

fn joined(server: &str, key_pem: String, credentials: NodeCredentials) -> Joined {
    Joined {
        config: ClientConfig {
            server: server.to_owned(),
            server_name: String::new(),
            ca_pem: credentials.ca_pem,
            cert_pem: credentials.client_cert_pem,
            key_pem,
        },
        serving_cert_pem: credentials.serving_cert_pem,
    }
}

async fn connect(config: &ClientConfig) -> Result<tonic::transport::Channel, Error> {
    endpoint(config)?
        .connect()
        .await
        .map_err(|source| Error::Connect {
            addr: config.server.clone(),
            source,
        })
}

/// A new ECDSA P-256 key and a certificate request for it: (key PEM, request PEM).
fn request(node: &str) -> Result<(String, String), Error> {
    let failed = |e: rcgen::Error| Error::Join(format!("cannot make the node's key: {e}"));
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let params = rcgen::CertificateParams::new(vec![crate::identity::node_server_name(node)])
        .map_err(failed)?;
    let csr = params.serialize_request(&key).map_err(failed)?;
    Ok((key.serialize_pem(), csr.pem().map_err(failed)?))
}

/// The certificates `addr` presents in its TLS handshake, unverified: only to find the CA
/// the token names among them. Nothing is sent over this connection.
async fn presented_chain(addr: &str) -> Result<Vec<Vec<u8>>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Join(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture { provider }))
        .with_no_client_auth();
    let host = server_host(addr).to_owned();
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| Error::Join(format!("{addr}: {e}")))?;
    let unreachable = |reason: String| Error::Unreachable {
        addr: addr.to_owned(),
        reason,
    };
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Join(format!("TLS with {addr}: {e}")))?;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    Ok(chain)
}

/// Accepts any certificate (the handshake's signatures are still checked): the chain is
/// judged afterwards by the token's CA hash.
#[derive(Debug)]
struct Capture {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_bad_ones_are_named() {
        let token = Token {
            ca_sha256: "ab".repeat(32),
            id: "abc123".into(),
            secret: "0123456789abcdefghijklmnopqrstuv".into(),
        };
        let text = token.to_string();
        assert_eq!(Token::parse(&text).unwrap(), token);
        assert!(!format!("{token:?}").contains(&token.secret));
        for (bad, why) in [
            ("abc123.0123456789abcdef", "prefix"),
            ("rube-join::abcd::abc123.0123456789abcdef", "64 hex"),
            (
                &format!("{PREFIX}{}::abc1230123456789abcdef", "ab".repeat(32)),
                "'.'",
            ),
            (
                &format!("{PREFIX}{}::ABC123.0123456789abcdef", "ab".repeat(32)),
                "id",
            ),
            (
                &format!("{PREFIX}{}::abc123.short", "ab".repeat(32)),
                "secret",
            ),
        ] {
            let error = Token::parse(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn random_tokens_differ_and_use_the_alphabet() {
        let a = random_chars(32).unwrap();
        let b = random_chars(32).unwrap();
        assert_ne!(a, b);
        assert!(split_credential(&format!("{}.{a}", &b[..6])).is_ok());
    }
}
