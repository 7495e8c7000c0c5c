//! The apiserver's certificates, made at first start with no manual work (k3s' way):
//!
//! - a **server CA** and a **client CA**, 10 years each, in `<tls dir>/server-ca.{crt,key}` and
//!   `<tls dir>/client-ca.{crt,key}`;
//! - a **serving certificate** signed by the server CA, `<tls dir>/serving.{crt,key}`, for the
//!   machine's hostname, `localhost`, 127.0.0.1, ::1 and every `--tls-san`; 1 year, and issued
//!   again at start when it is within [`RENEW_BEFORE`] of expiry or does not cover the names;
//! - **client credentials** signed by the client CA: CN is the user, O the group (Kubernetes'
//!   convention), 1 year; the admin's (`admin`, group [`ADMINS`]) is written as a client
//!   configuration next to the data (`admin.conf`, mode 0600), renewed like the serving one.
//!
//! Keys are ECDSA P-256, written with mode 0600 and atomically. Nothing here serves anything.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rubeapi::rube::ClientConfig;
use time::OffsetDateTime;

use crate::Error;

/// How long a CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a serving certificate or a client credential is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate this close to its expiry is issued again at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);
/// The admin's group, which may do everything.
pub const ADMINS: &str = crate::rbac::SUPERUSERS;
/// The admin's user name.
pub const ADMIN: &str = "admin";

/// What the gRPC server needs: its certificate chain and key, and the CA whose client
/// certificates it accepts.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// PEM: the serving certificate, then the CA that signed it.
    pub cert_pem: String,
    pub key_pem: String,
    /// PEM: the CA client certificates must chain to.
    pub client_ca_pem: String,
    /// The CAs that issue node credentials (`Bootstrap.Join`); `None` when the operator
    /// brought the certificates and no CA key is here.
    pub issuer: Option<std::sync::Arc<Pki>>,
}

impl ServerTls {
    /// Certificates an operator brings (`--tls-cert-file`, `--tls-key-file`,
    /// `--client-ca-file`).
    ///
    /// # Errors
    /// [`Error::Pki`] naming the file that cannot be read or holds no PEM.
    pub fn from_files(cert: &Path, key: &Path, client_ca: &Path) -> Result<ServerTls, Error> {
        Ok(ServerTls {
            cert_pem: read_pem(cert, "CERTIFICATE")?,
            key_pem: read_pem(key, "PRIVATE KEY")?,
            client_ca_pem: read_pem(client_ca, "CERTIFICATE")?,
            issuer: None,
        })
    }
}

/// A CA: its certificate and the key it signs with.
struct Ca {
    cert_pem: String,
    key: KeyPair,
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, Error> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(|e| Error::Pki(format!("cannot use the CA certificate: {e}")))
    }
}

/// The CAs of one apiserver, in one directory.
pub struct Pki {
    dir: PathBuf,
    server_ca: Ca,
    client_ca: Ca,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

impl Pki {
    /// The CAs in `dir`, made there first when it has none.
    ///
    /// # Errors
    /// [`Error::Pki`] when a file cannot be read, parsed or written.
    pub fn open(dir: &Path) -> Result<Pki, Error> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let server_ca = open_ca(dir, "server-ca", "rube-server-ca")?;
        let client_ca = open_ca(dir, "client-ca", "rube-client-ca")?;
        Ok(Pki {
            dir: dir.to_owned(),
            server_ca,
            client_ca,
        })
    }

    /// What a start does with `data_dir` for a server listening on `addr`: the CAs of
    /// `<data dir>/tls` (made the first time), the serving certificate for `names` and the
    /// listen address, and the admin's configuration `<data dir>/admin.conf` pointed at the
    /// address a local client dials (loopback, for a wildcard listen address).
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn start(
        data_dir: &Path,
        names: &[String],
        addr: std::net::SocketAddr,
    ) -> Result<(std::sync::Arc<Pki>, ServerTls, ClientConfig), Error> {
        let pki = std::sync::Arc::new(Pki::open(&data_dir.join("tls"))?);
        let mut names = names.to_vec();
        let dial = if addr.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            names.push(addr.ip().to_string());
            addr
        };
        let mut serving = pki.serving(&names)?;
        serving.issuer = Some(pki.clone());
        let admin = data_dir.join(rubeapi::config::ADMIN_FILE);
        let config = pki.admin_config(&admin, &dial.to_string())?;
        let controllers = data_dir.join(rubeapi::config::CONTROLLERS_FILE);
        pki.credential_file(
            &controllers,
            &dial.to_string(),
            crate::rbac::PIPELINE_CONTROLLER,
            crate::rbac::CONTROLLERS,
        )?;
        Ok((pki, serving, config))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PEM of the CA that signs serving certificates: what clients trust.
    pub fn server_ca_pem(&self) -> &str {
        &self.server_ca.cert_pem
    }

    /// PEM of the CA that signs client certificates.
    pub fn client_ca_pem(&self) -> &str {
        &self.client_ca.cert_pem
    }

    /// The serving certificate for `names` (DNS names or IP addresses, beside the hostname,
    /// `localhost`, 127.0.0.1 and ::1): the one in the dir while it covers them and is not near
    /// expiry, else a new one written there.
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn serving(&self, names: &[String]) -> Result<ServerTls, Error> {
        let mut wanted = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        if let Some(host) = hostname() {
            wanted.push(host);
        }
        wanted.extend(names.iter().cloned());
        wanted.sort();
        wanted.dedup();
        let (crt, key) = (self.dir.join("serving.crt"), self.dir.join("serving.key"));
        if let (Ok(cert_pem), Ok(key_pem)) =
            (std::fs::read_to_string(&crt), std::fs::read_to_string(&key))
            && let Ok(leaf) = leaf_pem(&cert_pem)
            && !near_expiry(&leaf)
            && covers(&leaf, &wanted)
        {
            return Ok(ServerTls {
                cert_pem,
                key_pem,
                client_ca_pem: self.client_ca.cert_pem.clone(),
                issuer: None,
            });
        }
        let mut params = leaf_params("rube-apiserver", None)?;
        params.subject_alt_names = wanted
            .iter()
            .map(|name| san(name))
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key_pair = KeyPair::generate().map_err(pki)?;
        let cert = params
            .signed_by(&key_pair, &self.server_ca.issuer()?)
            .map_err(pki)?;
        // The chain: a client that has only the token's CA hash finds the CA in it.
        let cert_pem = format!("{}{}", cert.pem(), self.server_ca.cert_pem);
        let key_pem = key_pair.serialize_pem();
        write_private(&key, key_pem.as_bytes())?;
        write_public(&crt, cert_pem.as_bytes())?;
        tracing::info!(path = %crt.display(), names = ?wanted, "issued the serving certificate");
        Ok(ServerTls {
            cert_pem,
            key_pem,
            client_ca_pem: self.client_ca.cert_pem.clone(),
            issuer: None,
        })
    }

    /// A client certificate and key for `user` in `group`, valid for `validity`: (cert PEM,
    /// key PEM).
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn issue_client(
        &self,
        user: &str,
        group: Option<&str>,
        validity: Duration,
    ) -> Result<(String, String), Error> {
        let mut params = leaf_params(user, group)?;
        params.not_after = OffsetDateTime::now_utc() + validity;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key_pair = KeyPair::generate().map_err(pki)?;
        let cert = params
            .signed_by(&key_pair, &self.client_ca.issuer()?)
            .map_err(pki)?;
        Ok((cert.pem(), key_pair.serialize_pem()))
    }

    /// A node's certificates for the key of `csr_pem` (whose subject and names are ignored):
    /// a client certificate for `rube:node:<node>` in `rube:nodes` from the client CA, and a
    /// serving certificate for `<node>.node.rube` only, from the server CA.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a request that does not parse or whose signature does not
    /// hold; [`Error::Pki`].
    pub fn issue_node(
        &self,
        node: &str,
        csr_pem: &str,
    ) -> Result<rubeapi::rube::NodeCredentials, Error> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            Error::Invalid(format!(
                "csr_pem: not a PEM certificate request signed by its key: {e}"
            ))
        })?;
        let user = format!("{}{node}", crate::rbac::NODE_PREFIX);
        let mut client = leaf_params(&user, Some(crate::rbac::NODES))?;
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = rcgen::CertificateSigningRequestParams {
            params: client,
            public_key: csr.public_key.clone(),
        }
        .signed_by(&self.client_ca.issuer()?)
        .map_err(pki)?;
        let mut serving = leaf_params(&user, None)?;
        serving.subject_alt_names = vec![san(&rubeapi::identity::node_server_name(node))?];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving = rcgen::CertificateSigningRequestParams {
            params: serving,
            public_key: csr.public_key,
        }
        .signed_by(&self.server_ca.issuer()?)
        .map_err(pki)?;
        Ok(rubeapi::rube::NodeCredentials {
            client_cert_pem: client.pem(),
            serving_cert_pem: format!("{}{}", serving.pem(), self.server_ca.cert_pem),
            ca_pem: self.server_ca.cert_pem.clone(),
        })
    }

    /// The admin's client configuration at `path` for the apiserver at `server`: the one there,
    /// with `server` brought up to date, while its certificate is from this client CA and not
    /// near expiry; else a new credential.
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn admin_config(&self, path: &Path, server: &str) -> Result<ClientConfig, Error> {
        self.credential_file(path, server, ADMIN, ADMINS)
    }

    /// The client configuration at `path` for `user` in `group`, kept like the admin's
    /// ([`Pki::admin_config`]).
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn credential_file(
        &self,
        path: &Path,
        server: &str,
        user: &str,
        group: &str,
    ) -> Result<ClientConfig, Error> {
        let wanted = rubeapi::identity::Identity {
            user: user.to_owned(),
            groups: vec![group.to_owned()],
        };
        let mut config = match rubeapi::config::load(path) {
            Ok(config)
                if config.ca_pem == self.server_ca.cert_pem
                    && leaf_pem(&config.cert_pem).is_ok_and(|leaf| {
                        !near_expiry(&leaf)
                            && signed_by(&leaf, &self.client_ca.cert_pem)
                            && rubeapi::identity::Identity::from_der(&leaf)
                                .is_ok_and(|who| who == wanted)
                    }) =>
            {
                config
            }
            _ => {
                let (cert_pem, key_pem) = self.issue_client(user, Some(group), LEAF_VALIDITY)?;
                tracing::info!(path = %path.display(), %user, "issued a client credential");
                ClientConfig {
                    server: String::new(),
                    server_name: String::new(),
                    ca_pem: self.server_ca.cert_pem.clone(),
                    cert_pem,
                    key_pem,
                }
            }
        };
        config.server = server.to_owned();
        rubeapi::config::save(path, &config).map_err(|e| Error::Pki(e.to_string()))?;
        Ok(config)
    }
}

/// Loads the CA `<dir>/<file>.{crt,key}`, or makes one named `name`.
fn open_ca(dir: &Path, file: &str, name: &str) -> Result<Ca, Error> {
    let (crt, key) = (
        dir.join(format!("{file}.crt")),
        dir.join(format!("{file}.key")),
    );
    if crt.exists() || key.exists() {
        let cert_pem = std::fs::read_to_string(&crt).map_err(io(&crt))?;
        let key_pem = std::fs::read_to_string(&key).map_err(io(&key))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| Error::Pki(format!("{}: {e}", key.display())))?;
        return Ok(Ca { cert_pem, key });
    }
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{name}@{}", now.unix_timestamp()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(serial());
    let key_pair = KeyPair::generate().map_err(pki)?;
    let cert = params.self_signed(&key_pair).map_err(pki)?;
    // The key first: a crash between the two leaves a key without a certificate, which the next
    // start refuses loudly, never a certificate whose key is lost.
    write_private(&key, key_pair.serialize_pem().as_bytes())?;
    write_public(&crt, cert.pem().as_bytes())?;
    tracing::info!(path = %crt.display(), "created a CA");
    Ok(Ca {
        cert_pem: cert.pem(),
        key: key_pair,
    })
}

fn leaf_params(common_name: &str, organization: Option<&str>) -> Result<CertificateParams, Error> {
    if common_name.is_empty() {
        return Err(Error::Pki("a certificate needs a common name".into()));
    }
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        dn.push(DnType::OrganizationName, organization);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + LEAF_VALIDITY;
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn serial() -> SerialNumber {
    let mut bytes = uuid::Uuid::new_v4().into_bytes().to_vec();
    // Positive, as RFC 5280 asks.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn san(name: &str) -> Result<SanType, Error> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let refused = || {
        Error::Pki(format!(
            "--tls-san {name:?} is not a DNS name or an IP address: use letters, digits, '-' and \
             '.', each label starting and ending with a letter or digit (a leading '*.' is allowed)"
        ))
    };
    let dns = name.to_ascii_lowercase();
    if !is_dns_name(dns.strip_prefix("*.").unwrap_or(&dns)) {
        return Err(refused());
    }
    Ok(SanType::DnsName(dns.try_into().map_err(|_| refused())?))
}

/// RFC 1123 host names: labels of at most 63 letters, digits and '-', not starting or ending
/// with '-', 253 characters in all.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()?
        .into_string()
        .ok()
        .filter(|h| !h.is_empty())
}

/// The first certificate of a PEM chain, as DER.
fn leaf_pem(pem: &str) -> Result<Vec<u8>, Error> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Pki(format!("not a PEM certificate: {e}")))?;
    Ok(pem.contents)
}

fn near_expiry(der: &[u8]) -> bool {
    rubeapi::identity::expires_within(der, RENEW_BEFORE)
}

/// Whether the certificate names every one of `names` in its SANs.
fn covers(der: &[u8], names: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(sans)) = cert.subject_alternative_name() else {
        return false;
    };
    let have: Vec<String> = sans
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names.iter().all(|name| {
        let name = name
            .parse::<IpAddr>()
            .map_or_else(|_| name.clone(), |ip| ip.to_string());
        have.contains(&name)
    })
}

/// Whether `der` is signed by the CA in `ca_pem`.
fn signed_by(der: &[u8], ca_pem: &str) -> bool {
    let Ok(ca_der) = leaf_pem(ca_pem) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(der),
        x509_parser::parse_x509_certificate(&ca_der),
    ) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

fn read_pem(path: &Path, label: &str) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    // `label` as a suffix: a key may be `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`.
    if !text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&format!("{label}-----")))
    {
        return Err(Error::Pki(format!(
            "{}: no PEM {label} in it",
            path.display()
        )));
    }
    Ok(text)
}

/// Writes a secret (a key, a token) with mode 0600, atomically.
///
/// # Errors
/// [`Error::Pki`] naming the file.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_private(path, bytes)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic(path, bytes, 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)
        .map_err(io(&partial))?;
    file.write_all(bytes).map_err(io(&partial))?;
    file.sync_all().map_err(io(&partial))?;
    std::fs::rename(&partial, path).map_err(io(path))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Pki(format!("{}: {e}", path.display()))
}

fn pki(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_start_makes_cas_a_serving_certificate_and_an_admin_that_later_starts_keep() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let pki = Pki::open(&tls).unwrap();
        let serving = pki
            .serving(&["rube.example".into(), "10.1.2.3".into()])
            .unwrap();
        let leaf = leaf_pem(&serving.cert_pem).unwrap();
        assert!(covers(
            &leaf,
            &[
                "rube.example".into(),
                "10.1.2.3".into(),
                "127.0.0.1".into(),
                "::1".into()
            ]
        ));
        assert!(signed_by(&leaf, pki.server_ca_pem()));
        assert!(!signed_by(&leaf, pki.client_ca_pem()));
        for key in ["server-ca.key", "client-ca.key", "serving.key"] {
            let mode = std::fs::metadata(tls.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let admin_path = dir.path().join("admin.conf");
        let admin = pki.admin_config(&admin_path, "127.0.0.1:7400").unwrap();
        assert!(signed_by(
            &leaf_pem(&admin.cert_pem).unwrap(),
            pki.client_ca_pem()
        ));

        // A second start: the same CAs, the same serving certificate and admin credential,
        // and the admin file follows the address.
        let again = Pki::open(&tls).unwrap();
        assert_eq!(again.server_ca_pem(), pki.server_ca_pem());
        let serving_again = again
            .serving(&["rube.example".into(), "10.1.2.3".into()])
            .unwrap();
        assert_eq!(serving_again.cert_pem, serving.cert_pem);
        let admin_again = again.admin_config(&admin_path, "127.0.0.1:9999").unwrap();
        assert_eq!(admin_again.cert_pem, admin.cert_pem);
        assert_eq!(
            rubeapi::config::load(&admin_path).unwrap().server,
            "127.0.0.1:9999"
        );

        // A new name: a new serving certificate from the same CA.
        let wider = again.serving(&["other.example".into()]).unwrap();
        assert_ne!(wider.cert_pem, serving.cert_pem);
        assert!(covers(
            &leaf_pem(&wider.cert_pem).unwrap(),
            &["other.example".into()]
        ));
    }

    #[test]
    fn a_certificate_near_its_expiry_is_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open(dir.path()).unwrap();
        let (short, _) = pki
            .issue_client("someone", None, Duration::from_secs(30 * 24 * 3600))
            .unwrap();
        assert!(near_expiry(&leaf_pem(&short).unwrap()));
        let (long, _) = pki.issue_client("someone", None, LEAF_VALIDITY).unwrap();
        assert!(!near_expiry(&leaf_pem(&long).unwrap()));
    }

    #[test]
    fn brought_certificates_are_read_and_a_file_of_the_wrong_kind_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open(dir.path()).unwrap();
        pki.serving(&[]).unwrap();
        let (crt, key, ca) = (
            dir.path().join("serving.crt"),
            dir.path().join("serving.key"),
            dir.path().join("client-ca.crt"),
        );
        let tls = ServerTls::from_files(&crt, &key, &ca).unwrap();
        assert_eq!(tls.client_ca_pem, pki.client_ca_pem());
        let error = ServerTls::from_files(&crt, &ca, &ca)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&ca.display().to_string()) && error.contains("PRIVATE KEY"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_san_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open(dir.path()).unwrap();
        for bad in ["not a name!", "-leading.example", "a..b", ""] {
            let error = pki.serving(&[bad.into()]).unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
        assert!(pki.serving(&["*.Apps.Example".into()]).is_ok());
    }
}
