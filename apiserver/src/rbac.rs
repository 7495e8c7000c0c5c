//! Authorization by RBAC (Kubernetes' model, done small): [`Policy`] is every Role,
//! ClusterRole, RoleBinding and ClusterRoleBinding in the store, and answers whether an
//! [`Identity`] may do one thing. Pure: the service builds a policy from the store
//! ([`Policy::from_objects`]) and keeps it current ([`Authorizer`]).
//!
//! - Everything is denied unless a binding allows it, except to the group [`SUPERUSERS`]
//!   (the admin's), which may do everything (Kubernetes' `system:masters`).
//! - A ClusterRoleBinding gives its ClusterRole's rules everywhere: every namespace and the
//!   cluster-scoped kinds. A RoleBinding gives its Role's (or a ClusterRole's) rules in its own
//!   namespace only.
//! - No escalation: [`Policy::covers`] says whether a caller holds every permission of a set
//!   of rules, which it must to create a role with them or to bind it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rubeapi::object::ObjectExt;
use rubeapi::rube::role_ref::Kind as RefKind;
use rubeapi::rube::subject::Kind as SubjectKind;
use rubeapi::rube::{
    ClusterRole, ClusterRoleBinding, Object, PolicyRule, Role, RoleBinding, Subject,
};

use rubeapi::selector::Filter;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::auth::Identity;
use crate::store::Store;

/// The verbs rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Delete,
    UpdateStatus,
    Logs,
    Compact,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::UpdateStatus => "update-status",
            Verb::Logs => "logs",
            Verb::Compact => "compact",
        }
    }

    pub const ALL: [Verb; 9] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::Delete,
        Verb::UpdateStatus,
        Verb::Logs,
        Verb::Compact,
    ];
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The group whose members may do everything, whatever the store says.
pub const SUPERUSERS: &str = "rube:admins";

/// Every kind, in a rule; also what [`Verb::Compact`] is asked on (it concerns no one kind).
pub const ANY: &str = "*";

/// The kinds of RBAC itself, whose writes are checked for escalation.
pub fn is_rbac_kind(type_name: &str) -> bool {
    kinds().iter().any(|k| k == type_name)
}

/// The group of every node's identity (`rube:node:<name>`): what a node may do is decided by
/// [`node_allows`], not by bindings (Kubernetes' node authorizer).
pub use rubeapi::identity::{NODE_PREFIX, NODES};
/// The pipeline controller's user name: the rubelet that wins its election acts as this, with
/// the built-in grant [`pipeline_controller_rules`], never with a node's identity.
pub const PIPELINE_CONTROLLER: &str = "rube:controller:pipelines";
/// The group of the cluster controllers' identities.
pub const CONTROLLERS: &str = "rube:controllers";
/// The pseudo-kind of the apiserver's `/metrics` (Kubernetes' non-resource URLs): whoever may
/// `get` it may scrape.
pub const METRICS: &str = "/metrics";
/// The kind a caller must be allowed to `create` to ask an [`Action`] about someone else
/// (Kubernetes' SubjectAccessReview); nodes may always.
pub const ACCESS_REVIEW: &str = "rube.AccessReview";

/// One thing a caller wants to do. `namespace` is empty for cluster-scoped kinds and for
/// lists and watches across namespaces; `name` is empty for lists and watches of many.
/// `labels` are the object's (as stored) when the decision may depend on them (a node's
/// rights over the objects bound to it); `None` when they are not known.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub verb: Verb,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: Option<&'a HashMap<String, String>>,
}

impl<'a> Action<'a> {
    pub fn new(verb: Verb, kind: &'a str, namespace: &'a str, name: &'a str) -> Action<'a> {
        Action {
            verb,
            kind,
            namespace,
            name,
            labels: None,
        }
    }

    /// This action on an object with `labels`.
    pub fn on(self, labels: &'a HashMap<String, String>) -> Action<'a> {
        Action {
            labels: Some(labels),
            ..self
        }
    }
}

impl Verb {
    /// The verb a rule names.
    pub fn parse(name: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// The node `who` is, when it is one: user `rube:node:<name>` in group [`NODES`].
pub fn node_of(who: &Identity) -> Option<&str> {
    who.node()
}

/// What node `node` may do (Kubernetes' node authorizer and NodeRestriction, together): read
/// Herds (their quotas) and Nodes; write its own Node and its own lease; read and write the
/// status of the Slices and Units bound to it (label `node=<node>`), and nothing else.
pub fn node_allows(node: &str, action: &Action<'_>) -> bool {
    use prost::Name;
    use rubeapi::api::systemd::Unit;
    use rubeapi::rube::{Lease, Node};
    use rubeapi::runink::{Herd, Slice};
    let kind = action.kind;
    let reads = matches!(action.verb, Verb::Get | Verb::List | Verb::Watch);
    if kind == Herd::full_name() || kind == Node::full_name() {
        return reads
            || (kind == Node::full_name()
                && matches!(
                    action.verb,
                    Verb::Create | Verb::Update | Verb::UpdateStatus
                )
                && action.name == node);
    }
    if kind == Lease::full_name() {
        return matches!(action.verb, Verb::Get | Verb::Create | Verb::Update)
            && action.name == rubeapi::object::node_lease(node);
    }
    if kind == Slice::full_name() || kind == Unit::full_name() {
        let bound = action
            .labels
            .and_then(|labels| labels.get("node"))
            .is_some_and(|n| n == node);
        return bound && (reads || action.verb == Verb::UpdateStatus);
    }
    false
}

/// The kinds whose objects a node may list or watch, each then filtered by [`node_allows`].
fn node_may_list(kind: &str) -> bool {
    use prost::Name;
    [
        rubeapi::runink::Herd::full_name(),
        rubeapi::rube::Node::full_name(),
        rubeapi::runink::Slice::full_name(),
        rubeapi::api::systemd::Unit::full_name(),
    ]
    .iter()
    .any(|k| k == kind)
}

/// What the pipeline controller may do, everywhere: run pipelines (read them, keep their
/// finalizers and status), make and remove their slices, see the nodes and the Herds (their
/// quotas), and hold its election's lease.
pub fn pipeline_controller_rules() -> Vec<PolicyRule> {
    use prost::Name;
    let rule = |verbs: &[&str], kind: String, names: Vec<String>| PolicyRule {
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        kinds: vec![kind],
        names,
    };
    vec![
        rule(
            &["get", "list", "watch", "update", "update-status"],
            rubeapi::runink::Pipeline::full_name(),
            Vec::new(),
        ),
        rule(
            &["get", "list", "watch", "create", "update", "delete"],
            rubeapi::runink::Slice::full_name(),
            Vec::new(),
        ),
        rule(
            &["get", "list", "watch"],
            rubeapi::rube::Node::full_name(),
            Vec::new(),
        ),
        rule(
            &["get", "list", "watch"],
            rubeapi::runink::Herd::full_name(),
            Vec::new(),
        ),
        rule(
            &["get", "create", "update"],
            rubeapi::rube::Lease::full_name(),
            vec![rubeapi::object::controller_lease("pipelines")],
        ),
    ]
}

/// Where a binding's rules apply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Everywhere,
    Namespace(String),
}

#[derive(Debug, Clone)]
struct Grant {
    scope: Scope,
    subjects: Vec<Subject>,
    rules: Vec<PolicyRule>,
}

/// Every binding, resolved to its rules.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<Grant>,
}

impl Policy {
    /// The policy the RBAC objects in `objects` make (objects of other kinds are ignored; a
    /// binding to a role that does not exist gives nothing).
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Object>) -> Policy {
        let mut roles: HashMap<(String, String), Vec<PolicyRule>> = HashMap::new();
        let mut cluster_roles: HashMap<String, Vec<PolicyRule>> = HashMap::new();
        let mut bindings = Vec::new();
        let mut cluster_bindings = Vec::new();
        for object in objects {
            let (namespace, name) = (object.namespace().to_owned(), object.name().to_owned());
            if let Ok(role) = object.spec_as::<Role>() {
                roles.insert((namespace, name), role.rules);
            } else if let Ok(role) = object.spec_as::<ClusterRole>() {
                cluster_roles.insert(name, role.rules);
            } else if let Ok(binding) = object.spec_as::<RoleBinding>() {
                bindings.push((namespace, binding));
            } else if let Ok(binding) = object.spec_as::<ClusterRoleBinding>() {
                cluster_bindings.push(binding);
            }
        }
        // The admin group may do everything, bound by nothing in the store (Kubernetes'
        // system:masters): no store can lock its admin out, and a first start writes nothing.
        let mut grants = vec![Grant {
            scope: Scope::Everywhere,
            subjects: vec![Subject {
                kind: SubjectKind::Group as i32,
                name: SUPERUSERS.into(),
            }],
            rules: vec![PolicyRule {
                verbs: vec![ANY.into()],
                kinds: vec![ANY.into()],
                names: Vec::new(),
            }],
        }];
        grants.push(Grant {
            scope: Scope::Everywhere,
            subjects: vec![Subject {
                kind: SubjectKind::User as i32,
                name: PIPELINE_CONTROLLER.into(),
            }],
            rules: pipeline_controller_rules(),
        });
        for binding in cluster_bindings {
            if let Some(rules) = cluster_roles.get(&binding.role) {
                grants.push(Grant {
                    scope: Scope::Everywhere,
                    subjects: binding.subjects,
                    rules: rules.clone(),
                });
            }
        }
        for (namespace, binding) in bindings {
            let Some(role) = binding.role else { continue };
            let rules = match role.kind() {
                RefKind::Role => roles.get(&(namespace.clone(), role.name)),
                RefKind::ClusterRole => cluster_roles.get(&role.name),
                RefKind::Unspecified => None,
            };
            if let Some(rules) = rules {
                grants.push(Grant {
                    scope: Scope::Namespace(namespace),
                    subjects: binding.subjects,
                    rules: rules.clone(),
                });
            }
        }
        Policy { grants }
    }

    /// Whether `who` may do `action`.
    pub fn allows(&self, who: &Identity, action: &Action<'_>) -> bool {
        if let Some(node) = node_of(who)
            && node_allows(node, action)
        {
            return true;
        }
        self.grants_of(who).any(|grant| {
            in_scope(&grant.scope, action.namespace)
                && grant.rules.iter().any(|rule| rule_allows(rule, action))
        })
    }

    /// Whether `who` may do `verb` on `kind` anywhere at all (in some namespace, or on some
    /// names): the test a list or watch passes before its results are filtered object by
    /// object with [`Policy::allows`].
    pub fn allows_some(&self, who: &Identity, verb: Verb, kind: &str, namespace: &str) -> bool {
        if node_of(who).is_some() && matches!(verb, Verb::List | Verb::Watch) && node_may_list(kind)
        {
            return true;
        }
        self.grants_of(who).any(|grant| {
            (namespace.is_empty() || in_scope(&grant.scope, namespace))
                && grant.rules.iter().any(|rule| {
                    matches(&rule.verbs, verb.name())
                        && (kind.is_empty() || matches(&rule.kinds, kind))
                })
        })
    }

    /// Whether `who` holds every permission of `rules` where they would apply: in `namespace`,
    /// or everywhere when it is `None`. A rule's "*" is held only by a "*" (a caller who may do
    /// every verb it knows of does not thereby hold verbs added later).
    pub fn covers(&self, who: &Identity, rules: &[PolicyRule], namespace: Option<&str>) -> bool {
        rules.iter().all(|rule| {
            let names: Vec<Option<&str>> = if rule.names.is_empty() {
                vec![None]
            } else {
                rule.names.iter().map(|n| Some(n.as_str())).collect()
            };
            rule.verbs.iter().all(|verb| {
                rule.kinds.iter().all(|kind| {
                    names.iter().all(|name| {
                        self.grants_of(who).any(|grant| {
                            let scope_ok = match (&grant.scope, namespace) {
                                (Scope::Everywhere, _) => true,
                                (Scope::Namespace(n), Some(wanted)) => n == wanted,
                                (Scope::Namespace(_), None) => false,
                            };
                            scope_ok
                                && grant
                                    .rules
                                    .iter()
                                    .any(|held| holds(held, verb, kind, *name))
                        })
                    })
                })
            })
        })
    }

    /// Whether `who` may do `action` when it is denied without the object's labels: the
    /// caller should read the object and ask again with them ([`Action::on`]).
    pub fn depends_on_labels(&self, who: &Identity, action: &Action<'_>) -> bool {
        action.labels.is_none() && node_of(who).is_some()
    }

    fn grants_of<'a>(&'a self, who: &'a Identity) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants
            .iter()
            .filter(move |grant| grant.subjects.iter().any(|s| names(s, who)))
    }
}

fn names(subject: &Subject, who: &Identity) -> bool {
    match subject.kind() {
        SubjectKind::User => subject.name == who.user,
        SubjectKind::Group => who.groups.contains(&subject.name),
        SubjectKind::Unspecified => false,
    }
}

/// A binding everywhere applies in every namespace and to cluster-scoped objects (namespace
/// ""); one in a namespace only there.
fn in_scope(scope: &Scope, namespace: &str) -> bool {
    match scope {
        Scope::Everywhere => true,
        Scope::Namespace(n) => !namespace.is_empty() && n == namespace,
    }
}

fn matches(listed: &[String], wanted: &str) -> bool {
    listed.iter().any(|l| l == ANY || l == wanted)
}

fn rule_allows(rule: &PolicyRule, action: &Action<'_>) -> bool {
    matches(&rule.verbs, action.verb.name())
        && matches(&rule.kinds, action.kind)
        && (rule.names.is_empty() || rule.names.iter().any(|n| n == action.name))
}

/// Whether `held` grants (verb, kind, name); `name` `None` means every object. A "*" asked for
/// is granted only by a "*".
fn holds(held: &PolicyRule, verb: &str, kind: &str, name: Option<&str>) -> bool {
    let covers = |listed: &[String], wanted: &str| {
        listed
            .iter()
            .any(|l| l == ANY || (wanted != ANY && l == wanted))
    };
    covers(&held.verbs, verb)
        && covers(&held.kinds, kind)
        && match name {
            None => held.names.is_empty(),
            Some(name) => held.names.is_empty() || held.names.iter().any(|n| n == name),
        }
}

/// The current policy, shared by the service's handlers and replaced whole when an RBAC
/// object changes.
#[derive(Debug, Default)]
pub struct Authorizer {
    policy: RwLock<Arc<Policy>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Authorizer {
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, policy: Policy) {
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Fires whenever the policy is replaced (a watch re-checks its caller then).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The four RBAC kinds.
fn kinds() -> [String; 4] {
    use prost::Name;
    [
        Role::full_name(),
        ClusterRole::full_name(),
        RoleBinding::full_name(),
        ClusterRoleBinding::full_name(),
    ]
}

/// Rebuilds the policy from the store.
///
/// # Errors
/// What the store fails with.
pub async fn refresh<S: Store>(store: &S, authorizer: &Authorizer) -> Result<(), Error> {
    let mut objects = Vec::new();
    for kind in kinds() {
        objects.extend(store.list(Filter::of_type(&kind)).await?.objects);
    }
    authorizer.replace(Policy::from_objects(&objects));
    Ok(())
}

/// Keeps `authorizer` current with RBAC changes made through any apiserver of the store, until
/// `cancel` fires.
pub fn spawn_sync<S: Store>(
    store: Arc<S>,
    authorizer: Arc<Authorizer>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let filters = kinds().iter().map(|k| Filter::of_type(k)).collect();
    crate::follow::spawn(store, filters, "the RBAC policy", cancel, move |store| {
        let authorizer = authorizer.clone();
        async move { refresh(&*store, &authorizer).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::object;
    use rubeapi::rube::RoleRef;

    fn rule(verbs: &[&str], kinds: &[&str], names: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            kinds: kinds.iter().map(|s| (*s).to_owned()).collect(),
            names: names.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn user(name: &str) -> Subject {
        Subject {
            kind: SubjectKind::User as i32,
            name: name.into(),
        }
    }

    fn group(name: &str) -> Subject {
        Subject {
            kind: SubjectKind::Group as i32,
            name: name.into(),
        }
    }

    fn who(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn act<'a>(verb: Verb, kind: &'a str, namespace: &'a str, name: &'a str) -> Action<'a> {
        Action::new(verb, kind, namespace, name)
    }

    /// cluster-admin for group admins; in herd-a, alice owns everything and bob may read
    /// slices; carol may get the Herd herd-a only.
    fn policy() -> Policy {
        let objects = vec![
            object::new(
                "",
                "cluster-admin",
                &ClusterRole {
                    rules: vec![rule(&["*"], &["*"], &[])],
                },
            ),
            object::new(
                "",
                "admins",
                &ClusterRoleBinding {
                    role: "cluster-admin".into(),
                    subjects: vec![group("admins")],
                },
            ),
            object::new(
                "herd-a",
                "owner",
                &Role {
                    rules: vec![rule(&["*"], &["*"], &[])],
                },
            ),
            object::new(
                "herd-a",
                "alice",
                &RoleBinding {
                    role: Some(RoleRef {
                        kind: RefKind::Role as i32,
                        name: "owner".into(),
                    }),
                    subjects: vec![user("alice")],
                },
            ),
            object::new(
                "",
                "slice-reader",
                &ClusterRole {
                    rules: vec![rule(&["get", "list", "watch"], &["runink.Slice"], &[])],
                },
            ),
            object::new(
                "herd-a",
                "bob",
                &RoleBinding {
                    role: Some(RoleRef {
                        kind: RefKind::ClusterRole as i32,
                        name: "slice-reader".into(),
                    }),
                    subjects: vec![user("bob")],
                },
            ),
            object::new(
                "",
                "herd-a-viewer",
                &ClusterRole {
                    rules: vec![rule(&["get"], &["runink.Herd"], &["herd-a"])],
                },
            ),
            object::new(
                "",
                "carol",
                &ClusterRoleBinding {
                    role: "herd-a-viewer".into(),
                    subjects: vec![user("carol")],
                },
            ),
        ];
        Policy::from_objects(&objects)
    }

    #[test]
    fn nothing_is_allowed_without_a_binding() {
        let p = policy();
        let nobody = who("mallory", &["tenants"]);
        for verb in Verb::ALL {
            assert!(!p.allows(&nobody, &act(verb, "runink.Slice", "herd-a", "s")));
            assert!(!p.allows_some(&nobody, verb, "runink.Slice", ""));
        }
        assert!(
            !Policy::default().allows(&who("admin", &["admins"]), &act(Verb::Get, "x", "", ""))
        );
    }

    #[test]
    fn a_cluster_binding_applies_everywhere_and_to_cluster_kinds() {
        let p = policy();
        let admin = who("root", &["admins"]);
        assert!(p.allows(&admin, &act(Verb::Delete, "runink.Herd", "", "herd-b")));
        assert!(p.allows(&admin, &act(Verb::Create, "runink.Slice", "herd-b", "s")));
        assert!(p.allows(&admin, &act(Verb::Compact, ANY, "", "")));
    }

    #[test]
    fn a_namespace_binding_applies_in_its_namespace_only() {
        let p = policy();
        let alice = who("alice", &[]);
        assert!(p.allows(&alice, &act(Verb::Create, "runink.Slice", "herd-a", "s")));
        assert!(p.allows(&alice, &act(Verb::Delete, "rube.Role", "herd-a", "owner")));
        assert!(!p.allows(&alice, &act(Verb::Get, "runink.Slice", "herd-b", "s")));
        // Not the cluster-scoped kinds, not lists across namespaces, not compaction.
        assert!(!p.allows(&alice, &act(Verb::Get, "runink.Herd", "", "herd-a")));
        assert!(!p.allows(&alice, &act(Verb::List, "runink.Slice", "", "")));
        assert!(!p.allows(&alice, &act(Verb::Compact, ANY, "", "")));
        // But some of what she lists she may see.
        assert!(p.allows_some(&alice, Verb::List, "runink.Slice", ""));
        assert!(!p.allows_some(&alice, Verb::List, "runink.Slice", "herd-b"));

        let bob = who("bob", &[]);
        assert!(p.allows(&bob, &act(Verb::Watch, "runink.Slice", "herd-a", "")));
        assert!(!p.allows(&bob, &act(Verb::Create, "runink.Slice", "herd-a", "s")));
        assert!(!p.allows(&bob, &act(Verb::Get, "runink.Pipeline", "herd-a", "p")));
    }

    #[test]
    fn a_rule_with_names_allows_those_objects_only() {
        let p = policy();
        let carol = who("carol", &[]);
        assert!(p.allows(&carol, &act(Verb::Get, "runink.Herd", "", "herd-a")));
        assert!(!p.allows(&carol, &act(Verb::Get, "runink.Herd", "", "herd-b")));
        assert!(!p.allows(&carol, &act(Verb::Update, "runink.Herd", "", "herd-a")));
    }

    #[test]
    fn a_caller_covers_only_what_it_holds_where_it_holds_it() {
        let p = policy();
        let alice = who("alice", &[]);
        let everything = [rule(&["*"], &["*"], &[])];
        assert!(p.covers(&alice, &everything, Some("herd-a")));
        assert!(!p.covers(&alice, &everything, Some("herd-b")));
        assert!(!p.covers(&alice, &everything, None));
        let bob = who("bob", &[]);
        let read = [rule(&["get", "list"], &["runink.Slice"], &[])];
        assert!(p.covers(&bob, &read, Some("herd-a")));
        let write = [rule(&["get", "create"], &["runink.Slice"], &[])];
        assert!(!p.covers(&bob, &write, Some("herd-a")));
        // A wildcard is held only by a wildcard.
        let any_verb = [rule(&["*"], &["runink.Slice"], &[])];
        assert!(!p.covers(&bob, &any_verb, Some("herd-a")));
        let carol = who("carol", &[]);
        assert!(p.covers(
            &carol,
            &[rule(&["get"], &["runink.Herd"], &["herd-a"])],
            None
        ));
        assert!(!p.covers(&carol, &[rule(&["get"], &["runink.Herd"], &[])], None));
        let admin = who("root", &["admins"]);
        assert!(p.covers(&admin, &everything, None));
    }

    #[test]
    fn a_binding_to_a_missing_role_gives_nothing() {
        let objects = vec![object::new(
            "",
            "dangling",
            &ClusterRoleBinding {
                role: "nosuch".into(),
                subjects: vec![user("dave")],
            },
        )];
        let p = Policy::from_objects(&objects);
        assert!(!p.allows_some(&who("dave", &[]), Verb::Get, "runink.Slice", ""));
    }
}
