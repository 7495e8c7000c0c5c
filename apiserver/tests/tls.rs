//! TLS and client certificates through the real server: who is let in, who is refused and how,
//! and that a refused call changes nothing.

use std::time::Duration;

use apiserver::pki::Pki;
use apiserver::testing::TestServer;
use rubeapi::Client;
use rubeapi::rube::{ClientConfig, Selector};
use rubeapi::runink::Herd;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

async fn count(server: &TestServer) -> usize {
    server
        .client()
        .await
        .list(Selector::of::<Herd>())
        .await
        .unwrap()
        .objects
        .len()
}

/// Connects with `config` and puts a Herd: what a refused client gets.
async fn try_put(config: &ClientConfig) -> Result<(), rubeapi::Error> {
    Client::connect(config)
        .await?
        .put(herd("a"), None)
        .await
        .map(|_| ())
}

/// A credential of `server`'s CA (or of `other`'s) with `server`'s address and trust.
fn credential(server: &TestServer, (cert_pem, key_pem): (String, String)) -> ClientConfig {
    ClientConfig {
        cert_pem,
        key_pem,
        ..server.config().clone()
    }
}

fn herd(name: &str) -> rubeapi::rube::Object {
    rubeapi::object::new("", name, &Herd::default())
}

/// A TLS channel that trusts the server's CA but shows no certificate of its own.
async fn anonymous(server: &TestServer) -> Client {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&server.config().ca_pem))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://{}", server.address()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    Client::from_channel(channel)
}

#[tokio::test]
async fn the_admin_of_the_first_start_is_let_in() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.put(herd("a"), None).await.unwrap();
    assert_eq!(count(&server).await, 1);
}

#[tokio::test]
async fn a_call_without_a_client_certificate_is_unauthenticated_and_changes_nothing() {
    let server = TestServer::start().await;
    let client = anonymous(&server).await;
    let refused = client.put(herd("a"), None).await.unwrap_err();
    assert!(
        matches!(refused, rubeapi::Error::Unauthenticated(_)),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("no client certificate"),
        "{refused}"
    );
    assert!(matches!(
        client.list(Selector::default()).await,
        Err(rubeapi::Error::Unauthenticated(_))
    ));
    assert_eq!(count(&server).await, 0);
}

#[tokio::test]
async fn a_certificate_of_another_ca_fails_the_handshake() {
    let server = TestServer::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Pki::open(elsewhere.path()).unwrap();
    let foreign = other
        .issue_client("mallory", Some("rube:admins"), Duration::from_secs(3600))
        .unwrap();
    let config = credential(&server, foreign);
    let outcome = try_put(&config).await;
    assert!(outcome.is_err(), "a foreign certificate was accepted");
    assert_eq!(count(&server).await, 0);
}

#[tokio::test]
async fn an_expired_certificate_fails_the_handshake() {
    let server = TestServer::start().await;
    // Valid until the moment it is made.
    let expired = server
        .pki
        .issue_client("late", None, Duration::ZERO)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let config = credential(&server, expired);
    let outcome = try_put(&config).await;
    assert!(outcome.is_err(), "an expired certificate was accepted");
    assert_eq!(count(&server).await, 0);
}

#[tokio::test]
async fn a_plaintext_client_is_refused_not_downgraded() {
    let server = TestServer::start().await;
    let channel: Result<Channel, _> = Endpoint::from_shared(format!("http://{}", server.address()))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = channel {
        let refused = Client::from_channel(channel).put(herd("a"), None).await;
        assert!(refused.is_err(), "a plaintext call was served");
    }
    assert_eq!(count(&server).await, 0);
}

#[tokio::test]
async fn a_client_refuses_a_server_its_ca_did_not_sign() {
    let server = TestServer::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Pki::open(elsewhere.path()).unwrap();
    // The right client credential, but trusting another CA for the server.
    let config = ClientConfig {
        ca_pem: other.server_ca_pem().to_owned(),
        ..server.config().clone()
    };
    let outcome = try_put(&config).await;
    assert!(
        outcome.is_err(),
        "the client trusted a server of another CA"
    );
    assert_eq!(count(&server).await, 0);
}
