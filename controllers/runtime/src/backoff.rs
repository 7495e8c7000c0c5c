//! [`Backoff`]: how long to wait after the n-th failure in a row. Pure: no clock, no randomness.
//! The work queue uses it as is for per-key retries; the reflector adds jitter (through `backon`)
//! for reconnects, where many clients would otherwise retry in lockstep.

use std::time::Duration;

/// An initial delay that doubles after every failure in a row, up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// No delay is longer than this.
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max }
    }

    /// The delay after `failures` failures in a row: `initial · 2^(failures−1)`, capped at
    /// `max`. Zero failures means no delay.
    pub fn delay(&self, failures: u32) -> Duration {
        let Some(doublings) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        let factor = 2u32.saturating_pow(doublings);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The same policy as a `backon` builder with jitter and no limit on attempts.
    pub fn jittered(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 minutes.
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let backoff = Backoff::default();
        let ms = |n| backoff.delay(n).as_millis();
        assert_eq!(ms(0), 0);
        assert_eq!(ms(1), 100);
        assert_eq!(ms(2), 200);
        assert_eq!(ms(3), 400);
        assert_eq!(ms(12), 204_800);
        assert_eq!(ms(13), 300_000);
        assert_eq!(ms(u32::MAX), 300_000);
    }
}
