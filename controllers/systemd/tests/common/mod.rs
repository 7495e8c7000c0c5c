//! What the executor tests share: building unit objects, and driving a controller to its
//! fixpoint the way `controllers::run` does (observe, reconcile, execute, until no effects).

#![allow(dead_code)]

use controllers::{Controller, Key};
use prost::Name;
use rubeapi::api::systemd::{Exec, Install, Service, ServiceType, Unit};
use rubeapi::object;
use rubeapi::rube::Object;
use systemd_units::{Effect, Systemd, UnitController};

pub fn simple(command: &str, enabled: bool, wanted_by: &str) -> Unit {
    Unit {
        description: format!("runs {command}"),
        service: Some(Service {
            r#type: ServiceType::Simple as i32,
            exec: Some(Exec {
                start: vec![command.into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        install: Some(Install {
            wanted_by: vec![wanted_by.into()],
            ..Default::default()
        }),
        enabled,
        ..Default::default()
    }
}

pub fn labelled(namespace: &str, name: &str, node: &str, unit: &Unit) -> Object {
    let mut o = object::new(namespace, name, unit);
    o.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("node".into(), node.into());
    o
}

pub fn key(namespace: &str, name: &str) -> Key {
    Key::new(&Unit::full_name(), namespace, name)
}

/// Puts `unit` and returns the stored object (with its generation), as the cache would hold it.
pub async fn put(client: &rubeapi::Client, object: Object) -> Object {
    let (namespace, name) = {
        let m = object.metadata.as_ref().unwrap();
        (m.namespace.clone(), m.name.clone())
    };
    client.put(object, None).await.unwrap();
    client
        .get(&Unit::full_name(), &namespace, &name)
        .await
        .unwrap()
}

/// Runs observe → reconcile → execute until reconcile returns nothing; the effects of each
/// round. Panics after 5 rounds or on an error.
pub async fn converge<S: Systemd>(
    controller: &UnitController<S>,
    key: &Key,
    desired: Option<&Object>,
) -> Vec<Vec<Effect>> {
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let observed = controller.observe(key, desired).await.unwrap();
        let effects = controller.reconcile(desired, &observed);
        if effects.is_empty() {
            return rounds;
        }
        rounds.push(effects.clone());
        controller
            .execute(key, effects)
            .await
            .unwrap_or_else(|e| panic!("execute {rounds:?}: {e}"));
    }
    panic!("no fixpoint after 5 rounds: {rounds:?}");
}

/// The kinds of effects of each round, for compact assertions.
pub fn shape(rounds: &[Vec<Effect>]) -> Vec<Vec<&'static str>> {
    rounds
        .iter()
        .map(|round| {
            round
                .iter()
                .map(|e| match e {
                    Effect::WriteFile(_) => "write",
                    Effect::DaemonReload => "reload",
                    Effect::Enable => "enable",
                    Effect::Disable => "disable",
                    Effect::Start { .. } => "start",
                    Effect::Restart { .. } => "restart",
                    Effect::Stop => "stop",
                    Effect::RemoveFile => "remove",
                    Effect::ResetFailed => "reset-failed",
                    Effect::Forget => "forget",
                    Effect::WriteStatus(_) => "status",
                })
                .collect()
        })
        .collect()
}
