//! Leader election for cluster controllers: of all rubelets that offer to run one, exactly
//! one holds the `rube.Lease` named `controller-<name>` and runs it; when that one dies, another
//! takes over after the lease's duration. The model is client-go's leaderelection.
//!
//! Expiry is judged by this rubelet's own clock: a lease held by another counts as expired when
//! its revision has not changed for `duration` as seen from here, never by comparing the
//! `renew_time` another machine wrote with our clock. Every write is a compare-and-swap on the
//! lease's revision, so two candidates can never both succeed.
//!
//! A leader that cannot renew within `renew_deadline` stops its controller before anyone else
//! may take over (`renew_deadline` < `duration`), so two leaders never run at once unless
//! clocks run at very different speeds.
//!
//! [`decide`] is pure; [`lead`] does the calls.

use std::future::Future;
use std::time::{Duration, SystemTime};

use prost::Name;
use rubeapi::Client;
use rubeapi::client::{at_revision, must_not_exist};
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::Lease;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::node::renewed_lease;

/// How long a lease lasts, how often the leader renews it, and how long a leader goes on
/// without a successful renewal.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub duration: Duration,
    pub renew_every: Duration,
    pub renew_deadline: Duration,
}

impl Timing {
    /// client-go's proportions: renew every duration/7.5, give up after two thirds.
    pub fn for_duration(duration: Duration) -> Timing {
        Timing {
            duration,
            renew_every: duration * 2 / 15,
            renew_deadline: duration * 2 / 3,
        }
    }
}

/// What a candidate does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it.
    Create,
    /// The lease is ours, or free, or expired: write it at this revision.
    Write { revision: u64 },
    /// Another holds it and it is fresh.
    Wait,
}

/// The next step for `me`, given the lease as read (with its revision) and how long its
/// revision has gone unchanged as seen from here.
pub fn decide(
    lease: Option<(&Lease, u64)>,
    me: &str,
    unchanged_for: Duration,
    duration: Duration,
) -> Decision {
    match lease {
        None => Decision::Create,
        Some((lease, revision)) => {
            if lease.holder == me || lease.holder.is_empty() || unchanged_for >= duration {
                Decision::Write { revision }
            } else {
                Decision::Wait
            }
        }
    }
}

/// Runs `work` while this candidate (`me`) leads `lease_name`, and competes again whenever it
/// loses the lead, until `cancel` fires. `work` gets a token that fires when the lead is lost
/// (or on shutdown) and must return soon after. On shutdown a leader releases the lease so
/// that another candidate takes over at once.
pub async fn lead<F, Fut>(
    client: Client,
    lease_name: String,
    me: String,
    timing: Timing,
    cancel: CancellationToken,
    mut work: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut candidate = Candidate {
        client,
        lease_name,
        me,
        timing,
        seen: None,
    };
    loop {
        let Some(held) = candidate.acquire(&cancel).await else {
            return;
        };
        tracing::info!(lease = %candidate.lease_name, holder = %candidate.me, "leading");
        let lost = CancellationToken::new();
        let running = tokio::spawn(work(lost.clone()));
        let released = candidate.hold(held, &cancel).await;
        lost.cancel();
        let _ = running.await;
        if let Some(revision) = released {
            candidate.release(revision).await;
            return;
        }
        tracing::warn!(lease = %candidate.lease_name, holder = %candidate.me, "lost the lead");
    }
}

struct Candidate {
    client: Client,
    lease_name: String,
    me: String,
    timing: Timing,
    /// The other holder's lease revision and when this candidate first saw it.
    seen: Option<(u64, Instant)>,
}

impl Candidate {
    /// Tries until the lease is ours; returns it with its revision, or `None` on shutdown.
    async fn acquire(&mut self, cancel: &CancellationToken) -> Option<(u64, Lease)> {
        loop {
            match self.try_acquire().await {
                Ok(Some(held)) => return Some(held),
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(lease = %self.lease_name, %error, "cannot take the lease")
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(self.timing.renew_every) => {}
            }
        }
    }

    async fn try_acquire(&mut self) -> Result<Option<(u64, Lease)>, rubeapi::Error> {
        let read = match self
            .client
            .get(&Lease::full_name(), "", &self.lease_name)
            .await
        {
            Ok(object) => Some((object.spec_as::<Lease>()?, object.revision())),
            Err(error) if error.is_not_found() => None,
            Err(error) => return Err(error),
        };
        let now = Instant::now();
        let unchanged_for = match (&read, self.seen) {
            (Some((_, revision)), Some((seen, since))) if *revision == seen => now - since,
            (Some((_, revision)), _) => {
                self.seen = Some((*revision, now));
                Duration::ZERO
            }
            (None, _) => Duration::ZERO,
        };
        let decision = decide(
            read.as_ref().map(|(lease, revision)| (lease, *revision)),
            &self.me,
            unchanged_for,
            self.timing.duration,
        );
        let precondition = match decision {
            Decision::Wait => return Ok(None),
            Decision::Create => must_not_exist(),
            Decision::Write { revision } => at_revision(revision),
        };
        self.write(read.as_ref().map(|(lease, _)| lease), precondition)
            .await
            .map(Some)
    }

    async fn write(
        &self,
        existing: Option<&Lease>,
        precondition: rubeapi::rube::Precondition,
    ) -> Result<(u64, Lease), rubeapi::Error> {
        let lease = renewed_lease(existing, &self.me, self.timing.duration, SystemTime::now());
        let written = self
            .client
            .put(
                object::new("", &self.lease_name, &lease),
                Some(precondition),
            )
            .await?;
        Ok((written.object.map_or(0, |o| o.revision()), lease))
    }

    /// Renews until a renewal fails for longer than the deadline (returns `None`: the lead is
    /// lost) or `cancel` fires (returns the revision to release).
    async fn hold(&mut self, held: (u64, Lease), cancel: &CancellationToken) -> Option<u64> {
        let (mut revision, mut lease) = held;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Some(revision),
                () = tokio::time::sleep(self.timing.renew_every) => {}
            }
            match self.write(Some(&lease), at_revision(revision)).await {
                Ok((next, renewed_lease)) => {
                    revision = next;
                    lease = renewed_lease;
                    renewed = Instant::now();
                }
                // Someone else wrote the lease: it is not ours any more.
                Err(error) if error.is_conflict() => return None,
                Err(error) => {
                    tracing::warn!(lease = %self.lease_name, %error, "cannot renew the lease");
                    if renewed.elapsed() >= self.timing.renew_deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// Gives the lease up, so that another candidate need not wait for it to expire.
    async fn release(&self, revision: u64) {
        let lease = Lease {
            holder: String::new(),
            duration_seconds: self.timing.duration.as_secs() as u32,
            ..Default::default()
        };
        if let Err(error) = self
            .client
            .put(
                object::new("", &self.lease_name, &lease),
                Some(at_revision(revision)),
            )
            .await
        {
            tracing::warn!(lease = %self.lease_name, %error, "cannot release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> Lease {
        Lease {
            holder: holder.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_lease_of_another_is_waited_for_and_an_expired_one_taken() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "a", Duration::ZERO, d), Decision::Create);
        let other = held_by("b");
        assert_eq!(
            decide(Some((&other, 7)), "a", Duration::from_secs(14), d),
            Decision::Wait
        );
        assert_eq!(
            decide(Some((&other, 7)), "a", Duration::from_secs(15), d),
            Decision::Write { revision: 7 }
        );
        let mine = held_by("a");
        assert_eq!(
            decide(Some((&mine, 9)), "a", Duration::ZERO, d),
            Decision::Write { revision: 9 }
        );
        let released = held_by("");
        assert_eq!(
            decide(Some((&released, 11)), "a", Duration::ZERO, d),
            Decision::Write { revision: 11 }
        );
    }
}
