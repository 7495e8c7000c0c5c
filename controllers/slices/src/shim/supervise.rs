//! What the shim decides while its workload runs, apart from doing it (raft-rs' `Ready`):
//! [`next`] takes the [`Phase`], one [`Event`] the poll loop saw and the time, and returns the
//! next phase and the [`Action`]s to perform. Pure: no clock, no signals, no files; the loop in
//! `shim::run` gathers events and performs actions.
//!
//! ```text
//! Running ──stop asked / deadline──▶ Terminating ──grace over──▶ Killed
//!    │  (SIGTERM to the cgroup)          │ (SIGKILL to the cgroup)   │
//!    └───────────────reaped──────────────┴───────────reaped──────────┴──▶ Exited
//! ```

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// How the workload ended, as `waitpid` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// A time limit on the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    /// The limit as the slice gave it, for the message.
    pub seconds: u64,
}

/// Where the supervision of one workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The workload runs (or waits for its FIFOs). `grace` is how long SIGTERM gets before
    /// SIGKILL when the deadline ends it.
    Running {
        deadline: Option<Deadline>,
        grace: Duration,
    },
    /// SIGTERM was sent to the cgroup; SIGKILL follows at `kill_at`.
    Terminating { kill_at: Instant },
    /// SIGKILL was sent; waiting to reap.
    Killed,
    /// Reaped: supervision is over.
    Exited { exit: Exit, oom_killed: bool },
}

/// What the poll loop saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The poll woke (a timeout, or anything else): time passed.
    Tick,
    /// SIGTERM, SIGINT or SIGHUP reached the shim (`shim::stop` sends SIGTERM); `grace` is
    /// what the stop file asks for, or the slice's.
    StopAsked { grace: Duration },
    /// The workload's launcher (the child between `clone3` and `execve`, which may wait for
    /// its FIFOs) died or failed before exec, and said why.
    LaunchFailed(String),
    /// The workload was reaped; `oom_kills` is the cgroup's OOM-kill counter at that moment.
    Reaped { exit: Exit, oom_kills: u64 },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this signal to every process of the slice's cgroup.
    SignalCgroup(Signal),
    /// Record this as the outcome's message (the last one wins).
    Note(String),
}

impl Phase {
    /// When the loop must wake even if nothing happens; `None`: only for an event.
    pub fn wake_at(&self) -> Option<Instant> {
        match self {
            Phase::Running { deadline, .. } => deadline.map(|d| d.at),
            Phase::Terminating { kill_at } => Some(*kill_at),
            Phase::Killed | Phase::Exited { .. } => None,
        }
    }

    pub fn is_over(&self) -> bool {
        matches!(self, Phase::Exited { .. })
    }
}

/// The phase after `event` at `now`, and what to do for it.
pub fn next(phase: Phase, event: Event, now: Instant) -> (Phase, Vec<Action>) {
    let terminate = |grace: Duration, why: String| {
        (
            Phase::Terminating {
                kill_at: now + grace,
            },
            vec![Action::Note(why), Action::SignalCgroup(Signal::SIGTERM)],
        )
    };
    match (phase, event) {
        // Nothing changes a workload that has been reaped.
        (Phase::Exited { .. }, _) => (phase, Vec::new()),
        (_, Event::Reaped { exit, oom_kills }) => (
            Phase::Exited {
                exit,
                oom_killed: oom_kills > 0,
            },
            Vec::new(),
        ),
        (_, Event::LaunchFailed(why)) => (phase, vec![Action::Note(why)]),
        (Phase::Running { .. }, Event::StopAsked { grace }) => terminate(grace, "stopped".into()),
        (
            Phase::Running {
                deadline: Some(deadline),
                grace,
            },
            Event::Tick,
        ) if now >= deadline.at => {
            terminate(grace, format!("deadline of {}s exceeded", deadline.seconds))
        }
        (Phase::Terminating { kill_at }, Event::Tick) if now >= kill_at => {
            (Phase::Killed, vec![Action::SignalCgroup(Signal::SIGKILL)])
        }
        // A second stop changes nothing: SIGKILL is already on its way.
        (phase, Event::Tick | Event::StopAsked { .. }) => (phase, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    fn running(start: Instant, seconds: Option<u64>) -> Phase {
        Phase::Running {
            deadline: seconds.map(|seconds| Deadline {
                at: start + Duration::from_secs(seconds),
                seconds,
            }),
            grace: GRACE,
        }
    }

    #[test]
    fn a_deadline_terminates_then_kills_after_the_grace() {
        let t0 = Instant::now();
        let phase = running(t0, Some(10));
        assert_eq!(phase.wake_at(), Some(t0 + Duration::from_secs(10)));
        let early = t0 + Duration::from_secs(9);
        assert_eq!(next(phase, Event::Tick, early), (phase, vec![]));

        let late = t0 + Duration::from_secs(10);
        let (phase, actions) = next(phase, Event::Tick, late);
        assert_eq!(
            phase,
            Phase::Terminating {
                kill_at: late + GRACE
            }
        );
        assert_eq!(
            actions,
            vec![
                Action::Note("deadline of 10s exceeded".into()),
                Action::SignalCgroup(Signal::SIGTERM),
            ]
        );
        assert_eq!(phase.wake_at(), Some(late + GRACE));
        assert_eq!(next(phase, Event::Tick, late + GRACE / 2), (phase, vec![]));
        let (phase, actions) = next(phase, Event::Tick, late + GRACE);
        assert_eq!(phase, Phase::Killed);
        assert_eq!(actions, vec![Action::SignalCgroup(Signal::SIGKILL)]);
        assert_eq!(phase.wake_at(), None);
    }

    #[test]
    fn without_a_deadline_time_alone_changes_nothing() {
        let t0 = Instant::now();
        let phase = running(t0, None);
        assert_eq!(phase.wake_at(), None);
        let much_later = t0 + Duration::from_secs(365 * 24 * 3600);
        assert_eq!(next(phase, Event::Tick, much_later), (phase, vec![]));
    }

    #[test]
    fn a_stop_takes_the_grace_it_asks_for_and_a_second_stop_changes_nothing() {
        let t0 = Instant::now();
        let asked = Duration::from_millis(300);
        let (phase, actions) = next(running(t0, Some(60)), Event::StopAsked { grace: asked }, t0);
        assert_eq!(
            phase,
            Phase::Terminating {
                kill_at: t0 + asked
            }
        );
        assert_eq!(
            actions,
            vec![
                Action::Note("stopped".into()),
                Action::SignalCgroup(Signal::SIGTERM),
            ]
        );
        let again = next(phase, Event::StopAsked { grace: GRACE }, t0 + asked / 2);
        assert_eq!(again, (phase, vec![]));
        // The deadline no longer matters once terminating.
        let (killed, _) = next(phase, Event::Tick, t0 + asked);
        assert_eq!(killed, Phase::Killed);
        assert_eq!(
            next(killed, Event::StopAsked { grace: GRACE }, t0 + asked),
            (Phase::Killed, vec![])
        );
    }

    #[test]
    fn reaping_ends_supervision_in_every_phase_and_nothing_follows() {
        let t0 = Instant::now();
        let exit = Exit::Signal(libc::SIGTERM);
        for phase in [
            running(t0, None),
            Phase::Terminating { kill_at: t0 },
            Phase::Killed,
        ] {
            let (over, actions) = next(phase, Event::Reaped { exit, oom_kills: 0 }, t0);
            assert_eq!(
                over,
                Phase::Exited {
                    exit,
                    oom_killed: false
                }
            );
            assert!(actions.is_empty());
            assert!(over.is_over());
            assert_eq!(over.wake_at(), None);
            for event in [
                Event::Tick,
                Event::StopAsked { grace: GRACE },
                Event::LaunchFailed("late".into()),
                Event::Reaped {
                    exit: Exit::Code(0),
                    oom_kills: 1,
                },
            ] {
                assert_eq!(next(over, event, t0 + GRACE), (over, vec![]));
            }
        }
    }

    #[test]
    fn an_exit_after_an_oom_kill_says_so() {
        let t0 = Instant::now();
        let (phase, _) = next(
            running(t0, None),
            Event::Reaped {
                exit: Exit::Signal(libc::SIGKILL),
                oom_kills: 1,
            },
            t0,
        );
        assert_eq!(
            phase,
            Phase::Exited {
                exit: Exit::Signal(libc::SIGKILL),
                oom_killed: true
            }
        );
        let (clean, _) = next(
            running(t0, None),
            Event::Reaped {
                exit: Exit::Code(0),
                oom_kills: 0,
            },
            t0,
        );
        assert_eq!(
            clean,
            Phase::Exited {
                exit: Exit::Code(0),
                oom_killed: false
            }
        );
    }

    #[test]
    fn a_launcher_that_dies_before_exec_leaves_its_reason_and_the_phase() {
        let t0 = Instant::now();
        let phase = running(t0, Some(10));
        let why = "open stdin pipe: No such file or directory".to_owned();
        let (after, actions) = next(phase, Event::LaunchFailed(why.clone()), t0);
        assert_eq!(after, phase, "the reaping that follows ends it");
        assert_eq!(actions, vec![Action::Note(why)]);
        // While terminating the reason is still recorded, and the kill still comes.
        let terminating = Phase::Terminating {
            kill_at: t0 + GRACE,
        };
        let (after, actions) = next(terminating, Event::LaunchFailed("x".into()), t0);
        assert_eq!(after, terminating);
        assert_eq!(actions, vec![Action::Note("x".into())]);
    }
}
