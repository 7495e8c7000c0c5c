//! `ructl herd create NAME --owner USER`: a tenant's namespace in one Apply (all or none) — the
//! Herd, a Role `owner` with every permission in the namespace and its RoleBinding to the owners,
//! and a ClusterRole and ClusterRoleBinding `herd.NAME` that let them read their Herd (its quota
//! and usage). Outside the namespace the owners may do nothing.

use anyhow::{Context, Result};
use prost::Name;
use rubeapi::Client;
use rubeapi::object;
use rubeapi::rube::role_ref::Kind as RefKind;
use rubeapi::rube::subject::Kind as SubjectKind;
use rubeapi::rube::{
    ClusterRole, ClusterRoleBinding, Object, PolicyRule, PutRequest, Role, RoleBinding, RoleRef,
    Subject,
};
use rubeapi::runink::Herd;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a Herd whose owners may do everything in its namespace and nothing outside it
    Create {
        /// The Herd, and the namespace of its slices and pipelines
        name: String,
        /// A user (a certificate's CN) who owns it; repeatable
        #[arg(long = "owner", required = true)]
        owners: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
}

/// The objects of a tenant's Herd.
pub fn objects(name: &str, owners: &[String], description: &str) -> Vec<Object> {
    let subjects: Vec<Subject> = owners
        .iter()
        .map(|owner| Subject {
            kind: SubjectKind::User as i32,
            name: owner.clone(),
        })
        .collect();
    let viewer = format!("herd.{name}");
    vec![
        object::new(
            "",
            name,
            &Herd {
                description: description.to_owned(),
                quota: None,
            },
        ),
        object::new(
            name,
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
            name,
            "owners",
            &RoleBinding {
                role: Some(RoleRef {
                    kind: RefKind::Role as i32,
                    name: "owner".into(),
                }),
                subjects: subjects.clone(),
            },
        ),
        object::new(
            "",
            &viewer,
            &ClusterRole {
                rules: vec![PolicyRule {
                    verbs: vec!["get".into(), "list".into(), "watch".into()],
                    kinds: vec![Herd::full_name()],
                    names: vec![name.to_owned()],
                }],
            },
        ),
        object::new(
            "",
            &viewer,
            &ClusterRoleBinding {
                role: viewer.clone(),
                subjects,
            },
        ),
    ]
}

pub async fn run(client: &Client, command: Command) -> Result<()> {
    match command {
        Command::Create {
            name,
            owners,
            description,
        } => {
            let puts = objects(&name, &owners, &description)
                .into_iter()
                .map(|object| PutRequest {
                    object: Some(object),
                    precondition: Some(rubeapi::client::must_not_exist()),
                })
                .collect();
            let written = client
                .apply(puts)
                .await
                .with_context(|| format!("cannot create herd {name}"))?;
            for put in written {
                if let Some(o) = put.object {
                    let m = o.metadata.clone().unwrap_or_default();
                    let kind = rubeapi::object::ObjectExt::type_name(&o).to_owned();
                    let place = if m.namespace.is_empty() {
                        m.name
                    } else {
                        format!("{}/{}", m.namespace, m.name)
                    };
                    println!("{kind} {place} created (revision {})", m.revision);
                }
            }
            Ok(())
        }
    }
}
