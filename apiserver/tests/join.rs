//! Joining nodes and what a node may do, through the real server: a node joins with the
//! token the first start made and gets `rube:node:<name>`; a wrong, revoked or expired token,
//! and a server of another cluster, are refused; a node writes only its own Node and lease and
//! the status of what is bound to it, and sees only that; the pipeline controller acts with
//! its own credential; access reviews answer for a tenant. Every refusal changes nothing.

use apiserver::testing::TestServer;
use prost::Name;
use rubeapi::identity::Identity;
use rubeapi::join::{self, Token};
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{JoinToken, Lease, Node, NodeStatus, PutRequest, Selector};
use rubeapi::runink::{Herd, Slice, SliceStatus};
use rubeapi::{Client, Error, testing};

async fn joined(server: &TestServer, node: &str) -> Client {
    let joined = join::join(&server.address(), &server.token().await, node)
        .await
        .expect("join");
    let (who, _) = Identity::from_pem(&joined.config.cert_pem).unwrap();
    assert_eq!(who.user, format!("rube:node:{node}"));
    assert_eq!(who.groups, vec!["rube:nodes".to_owned()]);
    assert!(
        joined.serving_cert_pem.contains("BEGIN CERTIFICATE"),
        "no serving certificate"
    );
    Client::connect(&joined.config)
        .await
        .expect("connect as the node")
}

fn denied(result: Result<impl std::fmt::Debug, Error>, what: &str) -> String {
    match result {
        Err(Error::PermissionDenied(status)) => status.message().to_owned(),
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

fn unauthenticated(result: Result<join::Joined, Error>, what: &str) -> String {
    match result {
        Err(Error::Unauthenticated(status)) => status.message().to_owned(),
        other => panic!("{what}: expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[tokio::test]
async fn a_node_joins_with_the_first_token_and_is_held_to_its_own_objects() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    admin
        .put(object::new("", "analytics", &Herd::default()), None)
        .await
        .unwrap();
    for (name, node) in [("mine", "w1"), ("theirs", "w2")] {
        let slice = testing::slice("analytics", name).node(node).build();
        admin.put(slice, None).await.unwrap();
    }
    let w1 = joined(&server, "w1").await;

    // Its own Node and lease: yes. Another node's: no.
    w1.put(object::new("", "w1", &Node::default()), None)
        .await
        .unwrap();
    w1.put(object::new("", "node-w1", &Lease::default()), None)
        .await
        .unwrap();
    let message = denied(
        w1.put(object::new("", "w2", &Node::default()), None).await,
        "another node's Node",
    );
    assert!(
        message.contains("rube:node:w1") && message.contains("rube.Node"),
        "{message}"
    );
    denied(
        w1.put(object::new("", "node-w2", &Lease::default()), None)
            .await,
        "another node's lease",
    );
    denied(
        w1.update_status(
            &Node::full_name(),
            "",
            "w2",
            object::pack(&NodeStatus::default()),
            None,
        )
        .await,
        "another node's status",
    );

    // Slices: the status of its own, not of another node's; never a spec.
    let status = object::pack(&SliceStatus {
        node: "w1".into(),
        ..Default::default()
    });
    w1.update_status(
        &Slice::full_name(),
        "analytics",
        "mine",
        status.clone(),
        None,
    )
    .await
    .unwrap();
    let before = admin
        .get(&Slice::full_name(), "analytics", "theirs")
        .await
        .unwrap();
    denied(
        w1.update_status(&Slice::full_name(), "analytics", "theirs", status, None)
            .await,
        "another node's slice status",
    );
    denied(
        w1.put(testing::slice("analytics", "new").node("w1").build(), None)
            .await,
        "a new slice",
    );
    denied(
        w1.get(&Slice::full_name(), "analytics", "theirs").await,
        "get another node's slice",
    );
    denied(
        w1.get(&Slice::full_name(), "analytics", "absent").await,
        "get a slice that does not exist",
    );
    let after = admin
        .get(&Slice::full_name(), "analytics", "theirs")
        .await
        .unwrap();
    assert_eq!(after.revision(), before.revision(), "a refusal changed it");

    // A list shows only what is bound to it.
    let listed = w1.list(Selector::of::<Slice>()).await.unwrap();
    let names: Vec<&str> = listed.objects.iter().map(|o| o.name()).collect();
    assert_eq!(names, ["mine"]);
    denied(
        w1.list(Selector::of::<JoinToken>()).await,
        "list join tokens",
    );
}

#[tokio::test]
async fn wrong_revoked_and_expired_tokens_and_another_cluster_are_refused() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    let good = server.token().await;

    let wrong = Token {
        secret: "x".repeat(32),
        ..good.clone()
    };
    let message = unauthenticated(
        join::join(&server.address(), &wrong, "w1").await,
        "a wrong secret",
    );
    assert!(message.contains("secret is wrong"), "{message}");

    // Expired: a token whose expiry has passed.
    let expired = Token::generate(&server.config().ca_pem).unwrap();
    admin
        .apply(vec![PutRequest {
            object: Some(object::new(
                "",
                &expired.id,
                &JoinToken {
                    secret_sha256: expired.secret_sha256(),
                    expires_unix: 1_000_000,
                    description: String::new(),
                },
            )),
            precondition: None,
        }])
        .await
        .unwrap();
    let message = unauthenticated(
        join::join(&server.address(), &expired, "w1").await,
        "an expired token",
    );
    assert!(message.contains("expired at 1970"), "{message}");

    // Revoked: the first token deleted.
    admin
        .delete(&JoinToken::full_name(), "", &good.id, None)
        .await
        .unwrap();
    let message = unauthenticated(
        join::join(&server.address(), &good, "w1").await,
        "a revoked token",
    );
    assert!(message.contains("does not exist"), "{message}");

    // A token of another cluster: its CA is not the one this server presents.
    let other = TestServer::start().await;
    let error = join::join(&server.address(), &other.token().await, "w1")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Join(why) if why.contains("presented no CA")),
        "{error:?}"
    );

    // Nothing was joined: no node can be seen, no token was added.
    let tokens = admin.list(Selector::of::<JoinToken>()).await.unwrap();
    assert_eq!(tokens.objects.len(), 1, "only the expired token is left");
}

#[tokio::test]
async fn a_node_renews_its_certificates_with_its_current_ones() {
    let server = TestServer::start().await;
    let first = join::join(&server.address(), &server.token().await, "w1")
        .await
        .unwrap();
    let renewed = join::renew(&first.config, "w1").await.unwrap();
    assert_ne!(renewed.config.cert_pem, first.config.cert_pem);
    assert_ne!(renewed.config.key_pem, first.config.key_pem);
    let (who, _) = Identity::from_pem(&renewed.config.cert_pem).unwrap();
    assert_eq!(who.user, "rube:node:w1");
    let client = Client::connect(&renewed.config).await.unwrap();
    client
        .put(object::new("", "w1", &Node::default()), None)
        .await
        .unwrap();
    // A user who is not a node cannot get a node's certificates this way.
    let alice = server.config_for("alice", Some("tenants"));
    let error = join::renew(&alice, "w1").await.unwrap_err();
    assert!(matches!(error, Error::PermissionDenied(_)), "{error:?}");
}

#[tokio::test]
async fn the_pipeline_controller_acts_with_its_own_credential_and_no_more() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    admin
        .put(object::new("", "analytics", &Herd::default()), None)
        .await
        .unwrap();
    let config = rubeapi::config::load(&server.controller_config_path()).unwrap();
    let controller = Client::connect(&config).await.unwrap();
    controller
        .put(testing::slice("analytics", "step").node("w1").build(), None)
        .await
        .unwrap();
    controller
        .put(
            object::new("", "controller-pipelines", &Lease::default()),
            None,
        )
        .await
        .unwrap();
    denied(
        controller
            .put(object::new("", "other", &Herd::default()), None)
            .await,
        "a Herd",
    );
    denied(
        controller
            .put(object::new("", "node-w1", &Lease::default()), None)
            .await,
        "a node's lease",
    );
    // A node may not do the controller's work.
    let w1 = joined(&server, "w1").await;
    denied(
        w1.put(
            object::new("", "controller-pipelines", &Lease::default()),
            None,
        )
        .await,
        "the controller's lease, as a node",
    );
}

#[tokio::test]
async fn access_reviews_answer_for_a_tenant_and_only_nodes_and_admins_may_ask() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    for object in rubeapi_herd("herd-a", "alice") {
        admin.put(object, None).await.unwrap();
    }
    let w1 = joined(&server, "w1").await;
    let alice = Identity {
        user: "alice".into(),
        groups: vec!["tenants".into()],
    };
    assert_eq!(
        w1.review(&alice, "logs", &Slice::full_name(), "herd-a", "s")
            .await
            .unwrap(),
        None
    );
    let reason = w1
        .review(&alice, "logs", &Slice::full_name(), "herd-b", "s")
        .await
        .unwrap()
        .expect("refused");
    assert!(
        reason.contains("alice") && reason.contains("logs") && reason.contains("herd-b"),
        "{reason}"
    );
    let as_alice = Client::connect(&server.config_for("alice", Some("tenants")))
        .await
        .unwrap();
    denied(
        as_alice
            .review(&alice, "logs", &Slice::full_name(), "herd-b", "s")
            .await,
        "a tenant asking",
    );
}

/// A Role with every permission in `namespace`, bound to `owner`.
fn rubeapi_herd(namespace: &str, owner: &str) -> Vec<rubeapi::rube::Object> {
    use rubeapi::rube::role_ref::Kind as RefKind;
    use rubeapi::rube::subject::Kind as SubjectKind;
    use rubeapi::rube::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    vec![
        object::new(
            namespace,
            "owner",
            &Role {
                rules: vec![PolicyRule {
                    verbs: vec!["*".into()],
                    kinds: vec!["*".into()],
                    names: vec![],
                }],
            },
        ),
        object::new(
            namespace,
            "owners",
            &RoleBinding {
                role: Some(RoleRef {
                    kind: RefKind::Role as i32,
                    name: "owner".into(),
                }),
                subjects: vec![Subject {
                    kind: SubjectKind::User as i32,
                    name: owner.into(),
                }],
            },
        ),
    ]
}
