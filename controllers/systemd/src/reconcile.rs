//! The controller's decisions: [`reconcile`] maps the desired object and what was observed to
//! [`Effect`]s. Pure and synchronous; [`apply`] is the executor's model for the fixpoint tests.
//! No I/O lives here.
//!
//! The rules:
//! - The file is rewritten when its content differs from the rendering, then the manager
//!   reloads; a pending reload (`NeedDaemonReload`) is done even without a write.
//! - Enabled or disabled as the spec says (`UnitFileState`).
//! - The unit is started once per content: the controller records the content it last started
//!   or restarted, and starts (stopped unit) or restarts (running unit) when the content differs
//!   from that record. After that systemd's own `Restart=` decides: a oneshot that finished or a
//!   service that failed is not started again by the controller until its content changes.
//!   After a reboot, enabled units are started by systemd and disabled ones stay stopped.
//! - A file that does not carry this object's marker is never touched; the status says so.
//! - Deleted: stop, disable, remove the file, reload, forget a failure, forget the records.
//! - The status is written alone, when nothing else is left to do, from what systemd reported:
//!   a status is never a prediction. So convergence takes two rounds (changes, then the status),
//!   and the fixpoint tests check exactly that.

use prost_types::Timestamp;
use rubeapi::api::systemd::{Unit, UnitStatus};
use rubeapi::object::ObjectExt;
use rubeapi::rube::Object;
use rubeapi::validate;

use crate::render::{parse_marker, render};
use crate::systemd::UnitState;

/// The unit file at this object's path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UnitFile {
    #[default]
    Absent,
    /// Written by this controller for this object: the whole content.
    Ours(String),
    /// Written by someone else, or by this controller for another object (the same name in
    /// another namespace): `owner` is the object its marker names, if any.
    Foreign { owner: Option<String> },
}

impl UnitFile {
    /// Classifies the content found at the path of object `namespace/name`.
    pub fn classify(namespace: &str, name: &str, content: String) -> UnitFile {
        match parse_marker(&content) {
            Some(key) if key.namespace == namespace && key.name == name => UnitFile::Ours(content),
            Some(key) => UnitFile::Foreign {
                owner: Some(format!("{}/{}", key.namespace, key.name)),
            },
            None => UnitFile::Foreign { owner: None },
        }
    }
}

/// What the node holds for one object; read from local state only, never the apiserver.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub file: UnitFile,
    /// What the manager says about `<name>.service`.
    pub state: UnitState,
    /// The content this controller last started or restarted the unit with (its record).
    pub started: Option<String>,
    /// The status this controller last wrote successfully (its record).
    pub status: Option<UnitStatus>,
}

/// One change, as data. `execute` performs them in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write the unit file atomically (temp file, fsync, rename, fsync the directory).
    WriteFile(String),
    DaemonReload,
    Enable,
    Disable,
    /// Start the unit, then record `content` as started (also when its job failed: the unit's
    /// failure is in its state, and starting it again would not help).
    Start {
        content: String,
    },
    /// Restart the unit, then record `content` as started.
    Restart {
        content: String,
    },
    Stop,
    RemoveFile,
    ResetFailed,
    /// Remove this object's records from the state dir.
    Forget,
    /// `update_status` with this status, then record it.
    WriteStatus(UnitStatus),
}

/// What reconcile needs besides the object: who it is and where units are wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// This node's name, for the status.
    pub node: String,
    /// The target units without `[Install]` targets of their own are wanted by.
    pub default_target: String,
}

/// What to change so the node matches `desired` (`None`: the object is gone). Pure.
pub fn reconcile(cx: &Context, desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
    let Some(object) = desired else {
        return remove(observed);
    };
    let generation = object.metadata.as_ref().map_or(0, |m| m.generation);
    let status = |message: String, state: &UnitState| UnitStatus {
        load_state: state.load_state.clone(),
        active_state: state.active_state.clone(),
        sub_state: state.sub_state.clone(),
        main_pid: state.main_pid,
        exec_main_status: state.exec_main_status,
        unit_file_state: state.unit_file_state.clone(),
        observed_generation: generation,
        node: cx.node.clone(),
        message,
        last_transition: state
            .state_change
            .map(|seconds| Timestamp { seconds, nanos: 0 }),
    };
    let only_status = |status: UnitStatus| -> Vec<Effect> {
        if observed.status.as_ref() == Some(&status) {
            vec![]
        } else {
            vec![Effect::WriteStatus(status)]
        }
    };
    let unit = match object.spec_as::<Unit>() {
        Ok(unit) => unit,
        Err(e) => return only_status(status(e.to_string(), &UnitState::default())),
    };
    // Admission refuses these; an object stored before a rule existed is reported, not run.
    if let Err(invalid) = validate::unit::validate(object.name(), &unit) {
        return only_status(status(format!("invalid: {invalid}"), &UnitState::default()));
    }
    if let UnitFile::Foreign { owner } = &observed.file {
        let path = validate::unit::unit_name(object.name());
        let whose = match owner {
            Some(owner) => format!("was written by Rube for {owner}"),
            None => "was not written by Rube".to_owned(),
        };
        return only_status(status(
            format!("{path} already exists and {whose}; it is left alone"),
            &UnitState::default(),
        ));
    }

    let want = render(object.namespace(), object.name(), &unit, &cx.default_target);
    let mut effects = Vec::new();
    if observed.file != UnitFile::Ours(want.clone()) {
        effects.push(Effect::WriteFile(want.clone()));
        effects.push(Effect::DaemonReload);
    } else if observed.state.need_daemon_reload {
        effects.push(Effect::DaemonReload);
    }
    let enabled = observed.state.unit_file_state == "enabled";
    if unit.enabled && !enabled {
        effects.push(Effect::Enable);
    } else if !unit.enabled && enabled {
        effects.push(Effect::Disable);
    }
    if observed.started.as_ref() != Some(&want) {
        effects.push(if observed.state.is_running() {
            Effect::Restart { content: want }
        } else {
            Effect::Start { content: want }
        });
    }
    if effects.is_empty() {
        return only_status(status(String::new(), &observed.state));
    }
    effects
}

/// The object is gone: undo what this controller did, and only that.
fn remove(observed: &Observed) -> Vec<Effect> {
    let mut effects = Vec::new();
    if let UnitFile::Ours(_) = observed.file {
        if observed.state.is_running() {
            effects.push(Effect::Stop);
        }
        if observed.state.unit_file_state == "enabled" {
            effects.push(Effect::Disable);
        }
        effects.push(Effect::RemoveFile);
        effects.push(Effect::DaemonReload);
        // A unit that failed stays in the manager's memory after its file is gone.
        if observed.state.active_state == "failed" {
            effects.push(Effect::ResetFailed);
        }
    }
    if matches!(observed.file, UnitFile::Ours(_))
        || observed.started.is_some()
        || observed.status.is_some()
    {
        effects.push(Effect::Forget);
    }
    effects
}

/// The executor as a pure model of the world it changes (the manager as the fake keeps it).
pub fn apply(observed: &Observed, effects: &[Effect]) -> Observed {
    let mut world = observed.clone();
    let mut loaded_current = !world.state.need_daemon_reload;
    for effect in effects {
        let state = &mut world.state;
        match effect {
            Effect::WriteFile(content) => {
                world.file = UnitFile::Ours(content.clone());
                loaded_current = false;
                if state.unit_file_state.is_empty() {
                    state.unit_file_state = "disabled".into();
                }
            }
            Effect::DaemonReload => {
                loaded_current = true;
                state.load_state = match world.file {
                    UnitFile::Absent => "not-found".into(),
                    _ => "loaded".into(),
                };
            }
            Effect::Enable => state.unit_file_state = "enabled".into(),
            Effect::Disable => state.unit_file_state = "disabled".into(),
            Effect::Start { content } | Effect::Restart { content } => {
                state.active_state = "active".into();
                state.sub_state = "running".into();
                state.main_pid = state.main_pid.wrapping_add(1).max(1);
                world.started = Some(content.clone());
            }
            Effect::Stop => {
                if state.active_state != "failed" {
                    state.active_state = "inactive".into();
                    state.sub_state = "dead".into();
                }
                state.main_pid = 0;
            }
            Effect::RemoveFile => {
                world.file = UnitFile::Absent;
                state.unit_file_state = String::new();
                loaded_current = false;
            }
            Effect::ResetFailed => {
                state.active_state = "inactive".into();
                state.sub_state = "dead".into();
            }
            Effect::Forget => {
                world.started = None;
                world.status = None;
            }
            Effect::WriteStatus(status) => world.status = Some(status.clone()),
        }
        world.state.need_daemon_reload = !loaded_current;
    }
    world
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rubeapi::api::systemd::{Exec, Install, Service, ServiceType};
    use rubeapi::object;

    fn cx() -> Context {
        Context {
            node: "n1".into(),
            default_target: "multi-user.target".into(),
        }
    }

    fn unit(command: &str, enabled: bool) -> Unit {
        Unit {
            description: "test".into(),
            service: Some(Service {
                r#type: ServiceType::Simple as i32,
                exec: Some(Exec {
                    start: vec![command.into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            enabled,
            ..Default::default()
        }
    }

    fn object(unit: &Unit, generation: u64) -> Object {
        let mut o = object::new("system", "web", unit);
        o.metadata.as_mut().unwrap().generation = generation;
        o
    }

    fn content(unit: &Unit) -> String {
        render("system", "web", unit, "multi-user.target")
    }

    fn running(enabled: bool) -> UnitState {
        UnitState {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            main_pid: 7,
            unit_file_state: if enabled { "enabled" } else { "disabled" }.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_unit_is_written_reloaded_enabled_and_started_then_reported() {
        let u = unit("/bin/sleep 100", true);
        let o = object(&u, 1);
        let effects = reconcile(&cx(), Some(&o), &Observed::default());
        assert_eq!(
            effects,
            vec![
                Effect::WriteFile(content(&u)),
                Effect::DaemonReload,
                Effect::Enable,
                Effect::Start {
                    content: content(&u)
                },
            ]
        );
        let after = apply(&Observed::default(), &effects);
        let status = reconcile(&cx(), Some(&o), &after);
        let [Effect::WriteStatus(status)] = status.as_slice() else {
            panic!("{status:?}")
        };
        assert_eq!(status.active_state, "active");
        assert_eq!(status.observed_generation, 1);
        assert_eq!(status.node, "n1");
        assert_eq!(status.unit_file_state, "enabled");
    }

    #[test]
    fn changed_content_restarts_a_running_unit() {
        let old = unit("/bin/sleep 100", false);
        let new = unit("/bin/sleep 200", false);
        let observed = Observed {
            file: UnitFile::Ours(content(&old)),
            state: running(false),
            started: Some(content(&old)),
            status: None,
        };
        assert_eq!(
            reconcile(&cx(), Some(&object(&new, 2)), &observed),
            vec![
                Effect::WriteFile(content(&new)),
                Effect::DaemonReload,
                Effect::Restart {
                    content: content(&new)
                },
            ]
        );
    }

    #[test]
    fn a_unit_that_stopped_on_its_own_is_not_started_again() {
        let u = unit("/bin/true", false);
        let state = UnitState {
            load_state: "loaded".into(),
            active_state: "failed".into(),
            sub_state: "failed".into(),
            exec_main_status: 3,
            unit_file_state: "disabled".into(),
            ..Default::default()
        };
        let observed = Observed {
            file: UnitFile::Ours(content(&u)),
            state,
            started: Some(content(&u)),
            status: None,
        };
        let effects = reconcile(&cx(), Some(&object(&u, 1)), &observed);
        let [Effect::WriteStatus(status)] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        assert_eq!(
            (status.active_state.as_str(), status.exec_main_status),
            ("failed", 3)
        );
    }

    #[test]
    fn enabled_toggles_without_touching_the_file() {
        let on = unit("/bin/sleep 1", true);
        let off = unit("/bin/sleep 1", false);
        assert_eq!(content(&on), content(&off));
        let observed = Observed {
            file: UnitFile::Ours(content(&on)),
            state: running(true),
            started: Some(content(&on)),
            status: None,
        };
        assert_eq!(
            reconcile(&cx(), Some(&object(&off, 2)), &observed),
            vec![Effect::Disable]
        );
    }

    #[test]
    fn a_foreign_file_is_left_alone_and_reported() {
        let u = unit("/bin/sleep 1", true);
        for (owner, whose) in [
            (None, "was not written by Rube"),
            (
                Some("other/web".to_owned()),
                "was written by Rube for other/web",
            ),
        ] {
            let observed = Observed {
                file: UnitFile::Foreign { owner },
                ..Default::default()
            };
            let effects = reconcile(&cx(), Some(&object(&u, 1)), &observed);
            let [Effect::WriteStatus(status)] = effects.as_slice() else {
                panic!("{effects:?}")
            };
            assert_eq!(
                status.message,
                format!("web.service already exists and {whose}; it is left alone")
            );
            assert_eq!(reconcile(&cx(), None, &observed), vec![]);
        }
    }

    #[test]
    fn an_invalid_unit_is_reported_not_written() {
        let bad = Unit {
            description: "a\nb".into(),
            ..unit("/bin/true", false)
        };
        let effects = reconcile(&cx(), Some(&object(&bad, 1)), &Observed::default());
        let [Effect::WriteStatus(status)] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        assert!(
            status.message.starts_with("invalid: description:"),
            "{}",
            status.message
        );
    }

    #[test]
    fn a_deleted_unit_is_stopped_disabled_removed_and_forgotten() {
        let u = unit("/bin/sleep 1", true);
        let observed = Observed {
            file: UnitFile::Ours(content(&u)),
            state: running(true),
            started: Some(content(&u)),
            status: Some(UnitStatus::default()),
        };
        assert_eq!(
            reconcile(&cx(), None, &observed),
            vec![
                Effect::Stop,
                Effect::Disable,
                Effect::RemoveFile,
                Effect::DaemonReload,
                Effect::Forget,
            ]
        );
        assert_eq!(reconcile(&cx(), None, &Observed::default()), vec![]);
    }

    #[test]
    fn the_file_names_its_object_and_a_classified_file_says_whose_it_is() {
        let text = content(&unit("/bin/true", false));
        assert_eq!(
            UnitFile::classify("system", "web", text.clone()),
            UnitFile::Ours(text.clone())
        );
        assert_eq!(
            UnitFile::classify("other", "web", text),
            UnitFile::Foreign {
                owner: Some("system/web".into())
            }
        );
        assert_eq!(
            UnitFile::classify("system", "web", "[Unit]\n".into()),
            UnitFile::Foreign { owner: None }
        );
    }

    fn any_state() -> impl Strategy<Value = UnitState> {
        (
            prop::sample::select(vec!["loaded", "not-found", "bad-setting"]),
            prop::sample::select(vec![
                "active",
                "inactive",
                "failed",
                "activating",
                "deactivating",
            ]),
            prop::sample::select(vec!["enabled", "disabled", "static", ""]),
            any::<bool>(),
            0u32..3,
            -1i32..3,
        )
            .prop_map(|(load, active, file, reload, pid, exit)| UnitState {
                load_state: load.into(),
                active_state: active.into(),
                sub_state: "x".into(),
                main_pid: pid,
                exec_main_status: exit,
                unit_file_state: file.into(),
                need_daemon_reload: reload,
                state_change: None,
            })
    }

    /// Specs that differ in content, in `enabled`, and one that validation refuses.
    fn any_desired() -> impl Strategy<Value = Option<Object>> {
        prop_oneof![
            Just(None),
            (0usize..3, any::<bool>(), 1u64..4).prop_map(|(command, enabled, generation)| {
                let commands = ["/bin/sleep 1", "/bin/sleep 2", "bad\ncommand"];
                Some(object(&unit(commands[command], enabled), generation))
            }),
            Just(Some(object(
                &Unit {
                    install: Some(Install {
                        wanted_by: vec!["default.target".into()],
                        ..Default::default()
                    }),
                    ..unit("/bin/sleep 1", true)
                },
                1
            ))),
        ]
    }

    fn any_observed() -> impl Strategy<Value = Observed> {
        let contents = vec![
            None,
            Some(content(&unit("/bin/sleep 1", false))),
            Some(content(&unit("/bin/sleep 2", false))),
            Some("stale".to_owned()),
        ];
        (
            prop::sample::select(vec![
                UnitFile::Absent,
                UnitFile::Ours(content(&unit("/bin/sleep 1", true))),
                UnitFile::Ours("# old\n".into()),
                UnitFile::Foreign { owner: None },
                UnitFile::Foreign {
                    owner: Some("x/web".into()),
                },
            ]),
            any_state(),
            prop::sample::select(contents),
            prop::option::of(Just(UnitStatus {
                active_state: "active".into(),
                ..Default::default()
            })),
        )
            .prop_map(|(file, state, started, status)| Observed {
                file,
                state,
                started,
                status,
            })
    }

    proptest! {
        /// From any world, to any desired object (or none): the changes, then the status, then
        /// nothing. The second round writes only the status.
        #[test]
        fn reconcile_reaches_a_fixpoint_in_two_rounds(
            desired in any_desired(),
            start in any_observed(),
        ) {
            let first = reconcile(&cx(), desired.as_ref(), &start);
            let world = apply(&start, &first);
            let second = reconcile(&cx(), desired.as_ref(), &world);
            prop_assert!(
                second.iter().all(|e| matches!(e, Effect::WriteStatus(_))),
                "second round {second:?} after {first:?}"
            );
            let world = apply(&world, &second);
            let third = reconcile(&cx(), desired.as_ref(), &world);
            prop_assert_eq!(third, vec![], "after {:?} and {:?}", first, second);
            if let Some(object) = &desired {
                // Converged: a valid unit of ours is on disk, loaded, started once, reported.
                if !matches!(start.file, UnitFile::Foreign { .. })
                    && world.status.as_ref().is_some_and(|s| s.message.is_empty())
                {
                    prop_assert!(matches!(world.file, UnitFile::Ours(_)));
                    prop_assert!(!world.state.need_daemon_reload);
                    let spec: Unit = object.spec_as().unwrap();
                    prop_assert_eq!(
                        world.state.unit_file_state == "enabled",
                        spec.enabled
                    );
                    prop_assert_eq!(world.status.as_ref().unwrap().observed_generation,
                        object.metadata.as_ref().unwrap().generation);
                }
            } else if matches!(start.file, UnitFile::Ours(_)) {
                prop_assert_eq!(&world.file, &UnitFile::Absent);
                prop_assert_eq!(world.started, None);
                prop_assert!(!world.state.is_running());
            }
        }
    }
}
