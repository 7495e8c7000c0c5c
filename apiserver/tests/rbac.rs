//! RBAC through the real server: default deny, a tenant who owns one namespace, lists and
//! watches that show only what the caller may see, no escalation, and a watch that ends when
//! its caller's permission is taken away. Every refusal changes nothing.

use std::time::Duration;

use apiserver::testing::TestServer;
use futures::StreamExt;
use prost::Name;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::role_ref::Kind as RefKind;
use rubeapi::rube::subject::Kind as SubjectKind;
use rubeapi::rube::{
    ClusterRoleBinding, Object, PolicyRule, Role, RoleBinding, RoleRef, Selector, Subject,
    watch_event,
};
use rubeapi::runink::Slice;
use rubeapi::{Client, Error, testing};

fn slice(namespace: &str, name: &str) -> Object {
    testing::slice(namespace, name).build()
}

fn everything() -> Vec<PolicyRule> {
    vec![PolicyRule {
        verbs: vec!["*".into()],
        kinds: vec!["*".into()],
        names: vec![],
    }]
}

fn user(name: &str) -> Subject {
    Subject {
        kind: SubjectKind::User as i32,
        name: name.into(),
    }
}

/// A Role `owner` with every permission in `namespace`, bound to `owner`.
fn ownership(namespace: &str, owner: &str) -> Vec<Object> {
    vec![
        object::new(
            namespace,
            "owner",
            &Role {
                rules: everything(),
            },
        ),
        object::new(
            namespace,
            &format!("owner-{owner}"),
            &RoleBinding {
                role: Some(RoleRef {
                    kind: RefKind::Role as i32,
                    name: "owner".into(),
                }),
                subjects: vec![user(owner)],
            },
        ),
    ]
}

async fn as_user(server: &TestServer, name: &str) -> Client {
    Client::connect(&server.config_for(name, Some("tenants")))
        .await
        .unwrap()
}

fn slices() -> Selector {
    Selector::of::<Slice>()
}

fn denied(result: Result<impl std::fmt::Debug, Error>, says: &[&str]) {
    match result {
        Err(Error::PermissionDenied(status)) => {
            for word in says {
                assert!(
                    status.message().contains(word),
                    "{:?} does not say {word:?}",
                    status.message()
                );
            }
        }
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}

async fn names(client: &Client, selector: Selector) -> Vec<String> {
    let mut names: Vec<String> = client
        .list(selector)
        .await
        .unwrap()
        .objects
        .iter()
        .map(|o| format!("{}/{}", o.namespace(), o.name()))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_user_without_a_binding_may_do_nothing_and_is_told_what_was_refused() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    admin.put(slice("herd-a", "s"), None).await.unwrap();
    let mallory = as_user(&server, "mallory").await;

    denied(
        mallory.put(slice("herd-a", "t"), None).await,
        &["mallory", "create", "runink.Slice", "namespace herd-a"],
    );
    denied(
        mallory.put(slice("herd-a", "s"), None).await,
        &["update", "runink.Slice"],
    );
    denied(
        mallory.get(&Slice::full_name(), "herd-a", "s").await,
        &["get", "runink.Slice", "herd-a"],
    );
    denied(
        mallory.list(slices()).await,
        &["list", "runink.Slice", "across namespaces"],
    );
    denied(
        mallory.watch(slices(), None).await.map(|_| ()),
        &["watch", "runink.Slice"],
    );
    denied(
        mallory
            .delete(&Slice::full_name(), "herd-a", "s", None)
            .await,
        &["delete"],
    );
    denied(mallory.compact(1).await, &["compact"]);
    // Types are everyone's: a client needs them to parse and print.
    mallory.registry().await.unwrap();
    assert_eq!(names(&admin, slices()).await, vec!["herd-a/s"]);
}

#[tokio::test]
async fn a_tenant_owns_its_namespace_and_sees_nothing_of_another() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    for o in ownership("herd-a", "alice")
        .into_iter()
        .chain(ownership("herd-b", "bob"))
    {
        admin.put(o, None).await.unwrap();
    }
    let alice = as_user(&server, "alice").await;
    let bob = as_user(&server, "bob").await;
    alice.put(slice("herd-a", "a1"), None).await.unwrap();
    bob.put(slice("herd-b", "b1"), None).await.unwrap();

    alice
        .get(&Slice::full_name(), "herd-a", "a1")
        .await
        .unwrap();
    denied(
        alice.get(&Slice::full_name(), "herd-b", "b1").await,
        &["alice", "get", "namespace herd-b"],
    );
    denied(alice.put(slice("herd-b", "a2"), None).await, &["create"]);
    denied(
        alice
            .delete(&Slice::full_name(), "herd-b", "b1", None)
            .await,
        &["delete"],
    );
    // A list across namespaces shows each tenant its own; one of another's namespace is refused.
    assert_eq!(names(&alice, slices()).await, vec!["herd-a/a1"]);
    assert_eq!(names(&bob, slices()).await, vec!["herd-b/b1"]);
    denied(alice.list(slices().in_namespace("herd-b")).await, &["list"]);
    // The cluster-scoped kinds are not a tenant's.
    denied(
        alice
            .put(
                object::new("", "herd-c", &rubeapi::runink::Herd::default()),
                None,
            )
            .await,
        &["create", "runink.Herd"],
    );

    // A watch across namespaces carries only the tenant's events.
    let stream = alice.watch(slices(), None).await.unwrap();
    futures::pin_mut!(stream);
    bob.put(slice("herd-b", "b2"), None).await.unwrap();
    alice.put(slice("herd-a", "a2"), None).await.unwrap();
    let seen = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if let Some(watch_event::Event::Update(o)) = event.event {
            break format!("{}/{}", o.namespace(), o.name());
        }
    };
    assert_eq!(
        seen, "herd-a/a2",
        "bob's b2 came first and must not be shown"
    );
    assert_eq!(
        names(&admin, slices()).await,
        vec!["herd-a/a1", "herd-a/a2", "herd-b/b1", "herd-b/b2"]
    );
}

#[tokio::test]
async fn nobody_gives_what_they_do_not_hold() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    admin
        .put(
            object::new(
                "",
                "cluster-admin",
                &rubeapi::rube::ClusterRole {
                    rules: everything(),
                },
            ),
            None,
        )
        .await
        .unwrap();
    for o in ownership("herd-a", "alice") {
        admin.put(o, None).await.unwrap();
    }
    let alice = as_user(&server, "alice").await;
    // Everything in her namespace she may give away there, a role and its binding at once...
    let carol = ownership("herd-a", "carol")
        .into_iter()
        .map(|o| rubeapi::rube::PutRequest {
            object: Some(o),
            precondition: None,
        })
        .collect();
    alice.apply(carol).await.unwrap();
    // ...but not elsewhere, and not everywhere.
    let cluster_admin = object::new(
        "",
        "alice-is-admin",
        &ClusterRoleBinding {
            role: "cluster-admin".into(),
            subjects: vec![user("alice")],
        },
    );
    denied(
        alice.put(cluster_admin, None).await,
        &["create", "rube.ClusterRoleBinding"],
    );
    denied(
        alice
            .put(
                object::new(
                    "herd-b",
                    "owner",
                    &Role {
                        rules: everything(),
                    },
                ),
                None,
            )
            .await,
        &["create", "rube.Role", "herd-b"],
    );
    // A binding in her namespace to a ClusterRole that holds more than she does everywhere is
    // fine only for what it gives there: cluster-admin bound in herd-a gives herd-a's all.
    let inside = object::new(
        "herd-a",
        "dave-admin-here",
        &RoleBinding {
            role: Some(RoleRef {
                kind: RefKind::ClusterRole as i32,
                name: "cluster-admin".into(),
            }),
            subjects: vec![user("dave")],
        },
    );
    alice.put(inside, None).await.unwrap();

    // Bob may read slices in herd-a and nothing else; he cannot make himself a writer.
    let reader = Role {
        rules: vec![PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            kinds: vec![Slice::full_name()],
            names: vec![],
        }],
    };
    admin
        .put(object::new("herd-a", "reader", &reader), None)
        .await
        .unwrap();
    let bind = |role: &str, who: &str| {
        object::new(
            "herd-a",
            &format!("{role}-{who}"),
            &RoleBinding {
                role: Some(RoleRef {
                    kind: RefKind::Role as i32,
                    name: role.into(),
                }),
                subjects: vec![user(who)],
            },
        )
    };
    admin.put(bind("reader", "bob"), None).await.unwrap();
    let bob = as_user(&server, "bob").await;
    denied(bob.put(bind("owner", "bob"), None).await, &["create"]);
    let bindings = names(&admin, Selector::of::<RoleBinding>()).await;
    assert!(
        !bindings.contains(&"herd-a/owner-bob".to_owned()),
        "{bindings:?}"
    );
}

#[tokio::test]
async fn a_watch_ends_when_its_caller_loses_the_right_to_watch() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    for o in ownership("herd-a", "alice") {
        admin.put(o, None).await.unwrap();
    }
    let alice = as_user(&server, "alice").await;
    let stream = alice
        .watch(slices().in_namespace("herd-a"), None)
        .await
        .unwrap();
    futures::pin_mut!(stream);
    admin
        .delete(&RoleBinding::full_name(), "herd-a", "owner-alice", None)
        .await
        .unwrap();
    admin.put(slice("herd-a", "later"), None).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    if let Some(watch_event::Event::Update(o)) = event.event {
                        panic!("an event after the permission went: {}", o.name());
                    }
                }
                Some(Err(error)) => return Some(error),
                None => return None,
            }
        }
    })
    .await
    .expect("the watch ends within 10 s");
    match ended {
        Some(Error::PermissionDenied(status)) => {
            assert!(status.message().contains("watch"), "{}", status.message());
        }
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
    denied(
        alice.get(&Slice::full_name(), "herd-a", "later").await,
        &["get"],
    );
}

#[tokio::test]
async fn the_tenant_example_gives_alice_the_analytics_namespace_and_nothing_else() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    let registry = rubeapi::Registry::builtin();
    for file in ["herds/analytics.textproto", "herds/tenant.textproto"] {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        for o in rubeapi::text::parse_objects(&registry, &text).unwrap() {
            admin.put(o, None).await.unwrap();
        }
    }
    let alice = as_user(&server, "alice").await;
    alice.put(slice("analytics", "mine"), None).await.unwrap();
    denied(alice.put(slice("other", "theirs"), None).await, &["create"]);
    assert_eq!(names(&alice, slices()).await, vec!["analytics/mine"]);
}
