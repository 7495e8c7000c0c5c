//! Client configuration files: `rube.ClientConfig` in textproto, which say where the apiserver
//! is, which CA signed its certificate, and the client's own certificate and key (kubeconfig's
//! job, done in the platform's own format).
//!
//! [`find`] is where every client (ructl, a rubelet, a user's controller) looks, in order:
//! 1. the file given explicitly (`--config FILE`),
//! 2. `$RUBE_CONFIG`,
//! 3. the admin file of a local apiserver's default data dir (`<data dir>/rube/admin.conf`),
//! 4. the user's config dir (`<config dir>/rube/config`).

use std::path::{Path, PathBuf};

use crate::rube::ClientConfig;
use crate::{Error, Registry};

/// The environment variable that names a client configuration file.
pub const ENV: &str = "RUBE_CONFIG";
/// The admin's configuration file, in an apiserver's data dir.
pub const ADMIN_FILE: &str = "admin.conf";
/// The cluster controllers' client configuration the apiserver writes next to `admin.conf`:
/// what a rubelet that may run the pipeline controller is given (`--controller-config`).
pub const CONTROLLERS_FILE: &str = "controllers.conf";
/// The join token the apiserver makes at first start, in its data dir.
pub const TOKEN_FILE: &str = "token";

/// Where a configuration was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Given explicitly (`--config`).
    Explicit,
    /// `$RUBE_CONFIG`.
    Environment,
    /// The admin file of a local apiserver's default data dir.
    LocalApiserver,
    /// The user's config dir.
    UserConfig,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Explicit => "given with --config",
            Source::Environment => "from $RUBE_CONFIG",
            Source::LocalApiserver => "the admin file of the local apiserver",
            Source::UserConfig => "the user's config dir",
        })
    }
}

/// A configuration, and where it came from.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub source: Source,
    pub config: ClientConfig,
}

/// The data dir an apiserver uses when it is given none: `<user data dir>/rube`.
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("rube"))
}

/// The configuration in the user's config dir: `<user config dir>/rube/config`.
pub fn user_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("rube").join("config"))
}

/// The configuration a client uses: `explicit`, else `$RUBE_CONFIG`, else the local apiserver's
/// admin file, else the user's. An explicit or environment file that cannot be read is an error
/// (never a silent fall-through to another identity).
///
/// # Errors
/// [`Error::Config`] for a file that cannot be read or parsed; [`Error::NoConfig`], naming every
/// place looked at, when there is none.
pub fn find(explicit: Option<&Path>) -> Result<Found, Error> {
    let from_env = std::env::var_os(ENV).filter(|v| !v.is_empty());
    let named = explicit
        .map(|p| (p.to_owned(), Source::Explicit))
        .or_else(|| from_env.map(|p| (PathBuf::from(p), Source::Environment)));
    if let Some((path, source)) = named {
        let config = load(&path)?;
        return Ok(Found {
            path,
            source,
            config,
        });
    }
    let candidates = [
        default_data_dir().map(|d| (d.join(ADMIN_FILE), Source::LocalApiserver)),
        user_config_path().map(|p| (p, Source::UserConfig)),
    ];
    let mut tried = Vec::new();
    for (path, source) in candidates.into_iter().flatten() {
        if path.exists() {
            let config = load(&path)?;
            return Ok(Found {
                path,
                source,
                config,
            });
        }
        tried.push(path.display().to_string());
    }
    Err(Error::NoConfig { tried })
}

/// Reads the configuration at `path`.
///
/// # Errors
/// [`Error::Config`] naming the file: unreadable, not textproto of `rube.ClientConfig` (with
/// line and column), or missing a field a client needs.
pub fn load(path: &Path) -> Result<ClientConfig, Error> {
    let invalid = |reason: String| Error::Config {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let config: ClientConfig = crate::text::parse_message(&Registry::builtin(), &text)
        .map_err(|e| invalid(e.to_string()))?;
    check(&config).map_err(invalid)?;
    Ok(config)
}

/// What a client cannot do without.
fn check(config: &ClientConfig) -> Result<(), String> {
    for (field, value) in [
        ("server", &config.server),
        ("ca_pem", &config.ca_pem),
        ("cert_pem", &config.cert_pem),
        ("key_pem", &config.key_pem),
    ] {
        if value.trim().is_empty() {
            return Err(format!("{field} is empty"));
        }
    }
    Ok(())
}

/// Writes `config` to `path` with mode 0600 (it holds a private key), atomically: a reader
/// sees the old file or the new one, never a part.
///
/// # Errors
/// [`Error::Config`] naming the file.
pub fn save(path: &Path, config: &ClientConfig) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| Error::Config {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let text = crate::text::print_message(&Registry::builtin(), config);
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> ClientConfig {
        ClientConfig {
            server: "127.0.0.1:7400".into(),
            server_name: String::new(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nMIID\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[test]
    fn a_saved_config_reads_back_and_only_its_owner_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("admin.conf");
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), sample());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let found = find(Some(&path)).unwrap();
        assert_eq!(found.source, Source::Explicit);
        assert_eq!(found.config, sample());
    }

    #[test]
    fn a_bad_config_names_the_file_and_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.conf");
        std::fs::write(&path, "server: \"a:1\"\nca_pem: 12 x\n").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(error.contains("2:"), "{error}");
        std::fs::write(&path, "server: \"a:1\"\n").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.ends_with("ca_pem is empty"), "{error}");
        let missing = dir.path().join("missing.conf");
        assert!(matches!(find(Some(&missing)), Err(Error::Config { .. })));
    }
}
