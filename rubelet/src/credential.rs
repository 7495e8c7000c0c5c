//! The node's credential: `--config FILE` when the operator issued one; else the one kept in
//! the state dir (`rubelet.conf`, mode 0600, with the serving certificate beside it); else a
//! join with `--server` and `--token`, whose result is kept there. A kept certificate within
//! 90 days of its expiry is renewed at start, with itself as the proof.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rubeapi::identity::Identity;
use rubeapi::join::{Joined, Token};
use rubeapi::rube::ClientConfig;

use crate::Args;

/// The client configuration a joined node keeps in its state dir.
pub const CONFIG_FILE: &str = "rubelet.conf";
/// The node's serving certificate chain, for its HTTPS endpoint (its key is the config's).
pub const SERVING_FILE: &str = "serving.crt";

/// A kept certificate this close to expiry is renewed at start.
const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);

/// The configuration this rubelet connects with, and where it is.
///
/// # Errors
/// No credential and no token; a token that does not parse; a credential for another node.
pub async fn resolve(args: &Args, node: &str) -> Result<(ClientConfig, PathBuf)> {
    if let Some(path) = &args.config {
        let config = rubeapi::config::load(path)?;
        check_identity(&config, node, path)?;
        return Ok((config, path.clone()));
    }
    let path = args.state_dir.join(CONFIG_FILE);
    if path.exists() {
        let mut config = rubeapi::config::load(&path)?;
        check_identity(&config, node, &path)?;
        if let Some(server) = &args.server {
            config.server.clone_from(server);
        }
        if near_expiry(&config.cert_pem) {
            match rubeapi::join::renew(&config, node).await {
                Ok(joined) => {
                    keep(&args.state_dir, &joined)?;
                    tracing::info!(path = %path.display(), "renewed the node's certificates");
                    return Ok((joined.config, path));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot renew the node's certificates; using the old ones")
                }
            }
        }
        return Ok((config, path));
    }
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        bail!(
            "no credential: join the node with --server ADDR --token TOKEN (the apiserver's \
             <data dir>/token), or pass --config FILE; looked for {}",
            path.display()
        );
    };
    let token = Token::parse(token)?;
    let joined = join(server, &token, node).await?;
    keep(&args.state_dir, &joined)?;
    tracing::info!(%server, path = %path.display(), "joined the cluster");
    Ok((joined.config, path))
}

/// Joins, trying again while the apiserver cannot be reached (it may be starting too); a
/// refusal (a revoked, expired or wrong token, another cluster) ends it at once.
async fn join(server: &str, token: &Token, node: &str) -> Result<Joined> {
    let mut wait = Duration::from_millis(200);
    for _ in 0..30 {
        match rubeapi::join::join(server, token, node).await {
            Ok(joined) => return Ok(joined),
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "cannot reach the apiserver to join; trying again");
            }
            Err(error) => return Err(error).context(format!("cannot join {server}")),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    bail!("cannot join {server}: it did not answer")
}

/// Writes the credentials into the state dir (key material mode 0600).
fn keep(state_dir: &Path, joined: &Joined) -> Result<()> {
    rubeapi::config::save(&state_dir.join(CONFIG_FILE), &joined.config)?;
    let serving = state_dir.join(SERVING_FILE);
    std::fs::write(&serving, &joined.serving_cert_pem)
        .with_context(|| format!("cannot write {}", serving.display()))?;
    Ok(())
}

/// A credential of another node is refused; one that is no node's (an operator's) is used,
/// loudly, since nothing then restricts it to this node.
fn check_identity(config: &ClientConfig, node: &str, path: &Path) -> Result<()> {
    let (who, _) = Identity::from_pem(&config.cert_pem)
        .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
    match who.node() {
        Some(name) if name == node => return Ok(()),
        Some(name) => bail!(
            "{} is the credential of node {name}, not of node {node}",
            path.display()
        ),
        None => {}
    }
    tracing::warn!(
        identity = %who,
        path = %path.display(),
        "this rubelet acts as {who}, not as node {node}: node restriction does not hold it"
    );
    Ok(())
}

fn near_expiry(cert_pem: &str) -> bool {
    x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_or(true, |(_, pem)| {
        rubeapi::identity::expires_within(&pem.contents, RENEW_BEFORE)
    })
}
