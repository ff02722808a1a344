//! The one retry policy: how long to wait before asking again, and which answers are
//! worth asking again. The registry client, W&B, reference entries over HTTP and the
//! daemon's outbox all wait by [`RetryPolicy::backoff`].

use std::time::Duration;

use reqwest::StatusCode;

/// When and how often to try again.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt (a refused connection is retried once at most).
    pub retries: u32,
    /// The first backoff step; each retry doubles it, up to `max` (see [`Self::backoff`]).
    pub base: Duration,
    pub max: Duration,
    /// A 429 asking to wait longer than this fails at once instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 5,
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based): "full jitter", a uniform draw
    /// between zero and the exponential step (`base` doubled per attempt, at most `max`),
    /// so that many clients that failed together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.step(attempt).mul_f64(fastrand::f64())
    }

    /// The exponential step of retry number `attempt`, before jitter.
    pub fn step(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1 << attempt.min(16)).min(self.max)
    }
}

/// Whether an answer with this status may succeed if asked again: 429 and 5xx.
pub(crate) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full jitter: every wait lies within the step, and the draws spread over it (not
    /// only its upper half).
    #[test]
    fn backoff_draws_from_zero_to_the_capped_step() {
        let policy = RetryPolicy {
            retries: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        assert_eq!(policy.step(0), Duration::from_millis(100));
        assert_eq!(policy.step(3), Duration::from_millis(800));
        assert_eq!(policy.step(4), Duration::from_secs(1), "capped at max");
        assert_eq!(policy.step(40), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..2000).map(|_| policy.backoff(5)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(1)));
        let low = waits
            .iter()
            .filter(|w| **w < Duration::from_millis(250))
            .count();
        assert!(
            low > 200,
            "only {low} of 2000 waits below a quarter of the step"
        );
    }
}
