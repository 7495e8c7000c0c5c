//! The slice controller's pure reconcile: fixpoint from any observed state, restart policy and
//! back-off as data, deletion.

use std::path::PathBuf;
use std::time::Duration;

use controllers::Backoff;
use proptest::prelude::*;
use rubeapi::object::ObjectExt;
use rubeapi::rube::Object;
use rubeapi::runink::slice_status::Phase;
use rubeapi::runink::{RestartPolicy, Slice, SliceStatus};
use rubeapi::testing;
use slices::ShimState;
use slices::controller::{Effect, Observed, Params, Run, reconcile, simulate};
use slices::spec::{HierarchySpec, RunningRecord};
use slices::{Outcome, controller};

fn params() -> Params {
    Params {
        node: "n1".into(),
        pipes_dir: PathBuf::from("/var/lib/rube/pipes"),
        hierarchy: HierarchySpec::V2("/sys/fs/cgroup/rube".into()),
        kill_grace: Duration::from_secs(1),
        log_file_bytes: 1000,
        log_files: 2,
        restart_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    }
}

fn slice(command: &str, policy: RestartPolicy, generation: u64) -> Object {
    testing::slice("herd", "s")
        .command(command)
        .restart(policy)
        .generation(generation)
        .build()
}

fn exited(code: i32, finished_ms: u64) -> ShimState {
    ShimState::Exited(Outcome {
        exit_code: Some(code),
        started_ms: 1,
        finished_ms,
        pid: 7,
        cgroup: "herd/s".into(),
        ..Default::default()
    })
}

fn running() -> ShimState {
    ShimState::Running(RunningRecord {
        pid: 7,
        shim_pid: 6,
        shim_start_ticks: 5,
        started_ms: 1,
        cgroup: "herd/s".into(),
    })
}

/// Reconciles and simulates until nothing is left to do; panics after `max` rounds. Status is
/// always the last effect of a round.
fn converge(desired: Option<&Object>, start: &Observed, max: usize) -> Observed {
    let mut world = start.clone();
    let rounds = testing::fixpoint(
        &mut world,
        max,
        |w| reconcile(&params(), desired, w),
        simulate,
    );
    for effects in rounds {
        if let Some(i) = effects.iter().position(|e| matches!(e, Effect::Status(_))) {
            assert_eq!(i, effects.len() - 1, "{effects:?}");
        }
    }
    world
}

fn policy() -> impl Strategy<Value = RestartPolicy> {
    prop_oneof![
        Just(RestartPolicy::Unspecified),
        Just(RestartPolicy::Never),
        Just(RestartPolicy::OnFailure),
        Just(RestartPolicy::Always),
    ]
}

fn shim_state() -> impl Strategy<Value = ShimState> {
    prop_oneof![
        Just(ShimState::Absent),
        Just(running()),
        (0..3i32, 0..10_000u64).prop_map(|(code, at)| exited(code, at)),
        Just(ShimState::Lost(RunningRecord::default())),
    ]
}

fn observed() -> impl Strategy<Value = Observed> {
    (
        0..20_000u64,
        any::<bool>(),
        proptest::option::of((0..4u64, 0..4u32)),
        shim_state(),
        proptest::option::of((0..5i32, 0..4u64)),
        any::<bool>(),
        proptest::option::of(0..20_000u64),
    )
        .prop_map(
            |(now_ms, dir, run, shim, status, watching, wake_at)| Observed {
                now_ms,
                dir,
                run: run.map(|(generation, restarts)| Run {
                    generation,
                    restarts,
                }),
                shim,
                status: status.map(|(phase, generation)| SliceStatus {
                    phase,
                    observed_generation: generation,
                    ..Default::default()
                }),
                watching,
                wake_at,
                herd_quota: None,
            },
        )
}

proptest! {
    #[test]
    fn reconcile_reaches_the_desired_fixpoint_from_any_state(
        start in observed(),
        desired in proptest::option::of((policy(), 1..4u64, any::<bool>())),
    ) {
        let desired = desired.map(|(p, g, valid)| slice(if valid { "true" } else { "" }, p, g));
        let end = converge(desired.as_ref(), &start, 5);
        match &desired {
            None => {
                prop_assert!(!end.dir);
                prop_assert_eq!(&end.shim, &ShimState::Absent);
            }
            Some(object) => {
                let generation = object.metadata.as_ref().unwrap().generation;
                let status = end.status.clone().expect("a status is written");
                prop_assert_eq!(status.observed_generation, generation);
                prop_assert_eq!(status.node.as_str(), "n1");
                if object.spec_as::<Slice>().unwrap().command.is_empty() {
                    prop_assert!(!matches!(end.shim, ShimState::Running(_)));
                    prop_assert_eq!(status.phase, Phase::Failed as i32);
                } else {
                    // What runs or ran is this generation's.
                    prop_assert_eq!(end.run.map(|r| r.generation), Some(generation));
                    match &end.shim {
                        ShimState::Running(r) => {
                            prop_assert!(end.watching, "someone wakes the key at exit");
                            prop_assert_eq!(status.phase, Phase::Running as i32);
                            prop_assert_eq!(status.pid, r.pid);
                        }
                        ShimState::Exited(o) => {
                            prop_assert_eq!(status.exit_code, o.exit_code);
                            let policy = object.spec_as::<Slice>().unwrap().restart_policy();
                            if controller::restarts(policy, o) {
                                prop_assert!(end.wake_at.is_some(), "a back-off ends in a wakeup");
                            }
                        }
                        other => prop_assert!(false, "ended {:?}", other),
                    }
                }
            }
        }
    }
}

#[test]
fn an_absent_slice_is_launched_then_reported_running() {
    let desired = slice("true", RestartPolicy::Never, 1);
    let effects = reconcile(&params(), Some(&desired), &Observed::default());
    let [
        Effect::Launch {
            herd, spec, run, ..
        },
    ] = effects.as_slice()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((herd.as_str(), spec.cgroup.as_str()), ("herd", "herd/s"));
    assert_eq!(
        *run,
        Run {
            generation: 1,
            restarts: 0
        }
    );
    let world = simulate(&Observed::default(), &effects);
    let effects = reconcile(&params(), Some(&desired), &world);
    assert!(matches!(effects[0], Effect::Watch));
    let Effect::Status(status) = &effects[1] else {
        panic!("{effects:?}")
    };
    assert_eq!((status.phase, status.pid), (Phase::Running as i32, 1000));
}

#[test]
fn restart_policies_decide_on_exit() {
    let cases = [
        (RestartPolicy::Never, 0, false),
        (RestartPolicy::Never, 1, false),
        (RestartPolicy::OnFailure, 0, false),
        (RestartPolicy::OnFailure, 1, true),
        (RestartPolicy::Always, 0, true),
        (RestartPolicy::Always, 1, true),
        (RestartPolicy::Unspecified, 1, false),
    ];
    for (policy, code, restart) in cases {
        let observed = Observed {
            now_ms: 100_000,
            dir: true,
            run: Some(Run {
                generation: 1,
                restarts: 0,
            }),
            shim: exited(code, 1_000),
            ..Default::default()
        };
        let effects = reconcile(&params(), Some(&slice("true", policy, 1)), &observed);
        let launched = effects.iter().any(|e| matches!(e, Effect::Launch { .. }));
        assert_eq!(
            launched, restart,
            "{policy:?} after exit {code}: {effects:?}"
        );
        if !restart {
            let Some(Effect::Status(status)) = effects.last() else {
                panic!("{effects:?}")
            };
            let phase = if code == 0 {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
            assert_eq!((status.phase, status.exit_code), (phase as i32, Some(code)));
        }
    }
}

#[test]
fn restarts_back_off_exponentially_as_data() {
    let desired = slice("false", RestartPolicy::OnFailure, 1);
    // The third restart waits 1 s · 2² = 4 s after the exit at t = 10 s.
    let mut observed = Observed {
        now_ms: 13_999,
        dir: true,
        run: Some(Run {
            generation: 1,
            restarts: 2,
        }),
        shim: exited(1, 10_000),
        ..Default::default()
    };
    let effects = reconcile(&params(), Some(&desired), &observed);
    assert_eq!(effects[0], Effect::WakeAt(14_000));
    let Effect::Status(status) = &effects[1] else {
        panic!("{effects:?}")
    };
    assert_eq!((status.phase, status.restarts), (Phase::Failed as i32, 2));
    assert!(
        status.message.contains("back-off of 4s"),
        "{}",
        status.message
    );
    observed = simulate(&observed, &effects);
    assert_eq!(reconcile(&params(), Some(&desired), &observed), vec![]);
    observed.now_ms = 14_000;
    let effects = reconcile(&params(), Some(&desired), &observed);
    let [Effect::Launch { run, .. }] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(
        *run,
        Run {
            generation: 1,
            restarts: 3
        }
    );
}

#[test]
fn a_new_generation_stops_the_running_one_and_starts_anew() {
    let observed = Observed {
        dir: true,
        run: Some(Run {
            generation: 1,
            restarts: 4,
        }),
        shim: running(),
        watching: true,
        ..Default::default()
    };
    let desired = slice("true", RestartPolicy::Always, 2);
    assert_eq!(
        reconcile(&params(), Some(&desired), &observed),
        vec![Effect::Stop]
    );
    let stopped = simulate(&observed, &[Effect::Stop]);
    let effects = reconcile(&params(), Some(&desired), &stopped);
    let [Effect::Launch { run, .. }] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(
        *run,
        Run {
            generation: 2,
            restarts: 0
        }
    );
}

#[test]
fn deletion_removes_everything_and_then_nothing() {
    for shim in [
        running(),
        exited(0, 1),
        ShimState::Lost(RunningRecord::default()),
        ShimState::Absent,
    ] {
        let observed = Observed {
            dir: true,
            shim,
            ..Default::default()
        };
        assert_eq!(reconcile(&params(), None, &observed), vec![Effect::Remove]);
    }
    assert_eq!(reconcile(&params(), None, &Observed::default()), vec![]);
}

#[test]
fn a_lost_shim_is_abandoned_and_its_run_reported() {
    let observed = Observed {
        dir: true,
        run: Some(Run {
            generation: 1,
            restarts: 0,
        }),
        shim: ShimState::Lost(RunningRecord {
            pid: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    let desired = slice("true", RestartPolicy::Never, 1);
    assert_eq!(
        reconcile(&params(), Some(&desired), &observed),
        vec![Effect::Abandon]
    );
    let end = converge(Some(&desired), &observed, 3);
    assert_eq!(end.status.unwrap().phase, Phase::Failed as i32);
}
