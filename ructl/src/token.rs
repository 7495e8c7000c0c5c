//! `ructl token create|list|delete`: join tokens (k3s' node tokens) as `rube.JoinToken`
//! objects. `create` makes the secret here and stores only its hash; the token it prints, with
//! the hash of the CA this configuration trusts, is shown once and never again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prost::Name;
use rubeapi::Client;
use rubeapi::join::Token;
use rubeapi::object::ObjectExt;
use rubeapi::rube::{ClientConfig, JoinToken, PutRequest, Selector};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a join token and print it (once): `rubelet --server ADDR --token TOKEN`
    Create {
        /// How long it is valid (`24h`, `7d`); 0 for ever
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List join tokens: their ids, expiry and descriptions (never a secret)
    List,
    /// Revoke a join token: nodes can no longer join with it (joined nodes keep their
    /// certificates)
    Delete { id: String },
}

pub async fn run(client: &Client, config: &ClientConfig, command: Command) -> Result<()> {
    match command {
        Command::Create { ttl, description } => {
            let token = Token::generate(&config.ca_pem)?;
            let expires_unix = if ttl.is_zero() {
                0
            } else {
                let at = SystemTime::now() + ttl;
                i64::try_from(at.duration_since(UNIX_EPOCH)?.as_secs())?
            };
            let object = rubeapi::object::new(
                "",
                &token.id,
                &JoinToken {
                    secret_sha256: token.secret_sha256(),
                    expires_unix,
                    description,
                },
            );
            client
                .apply(vec![PutRequest {
                    object: Some(object),
                    precondition: Some(rubeapi::client::must_not_exist()),
                }])
                .await
                .context("cannot store the join token")?;
            println!("{token}");
            Ok(())
        }
        Command::List => {
            let listing = client
                .list(Selector {
                    r#type: JoinToken::full_name(),
                    ..Default::default()
                })
                .await?;
            println!("{:<8} {:<22} DESCRIPTION", "ID", "EXPIRES");
            for object in &listing.objects {
                let token: JoinToken = object.spec_as()?;
                let expires = if token.expires_unix == 0 {
                    "never".to_owned()
                } else {
                    humantime::format_rfc3339_seconds(
                        UNIX_EPOCH + Duration::from_secs(token.expires_unix.unsigned_abs()),
                    )
                    .to_string()
                };
                println!("{:<8} {:<22} {}", object.name(), expires, token.description);
            }
            Ok(())
        }
        Command::Delete { id } => {
            client
                .delete(&JoinToken::full_name(), "", &id, None)
                .await
                .with_context(|| format!("cannot revoke join token {id}"))?;
            println!("join token {id} revoked");
            Ok(())
        }
    }
}
