//! The tier's circuit breaker: after a few failures in a row (one, for a refused
//! credential) the tier is left alone for a while, then one call tries it again. While
//! it is open every caller goes straight to the upstream, without waiting on timeouts.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::Error;

/// Failures in a row that open the breaker.
const TRIP: u32 = 3;

/// How long it stays open before a trial call.
const OPEN: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct Health(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// A trial call is under way (the breaker is half-open).
    trial: bool,
    last_error: Option<(String, SystemTime)>,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to the tier now.
    pub(crate) fn allow(&self) -> bool {
        let mut state = self.state();
        match state.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) if state.trial => false,
            Some(_) => {
                state.trial = true;
                true
            }
        }
    }

    pub(crate) fn success(&self) {
        let mut state = self.state();
        state.failures = 0;
        state.open_until = None;
        state.trial = false;
    }

    pub(crate) fn failure(&self, error: &Error) {
        let mut state = self.state();
        state.failures += 1;
        state.last_error = Some((hoard_types::error_chain(error), SystemTime::now()));
        let refused = matches!(error, Error::Unauthorized { .. });
        if state.trial || refused || state.failures >= TRIP {
            if state.open_until.is_none() {
                tracing::warn!(error = %hoard_types::error_chain(error), "the tier is off for {} s; gets go to the upstream", OPEN.as_secs());
            }
            state.open_until = Some(Instant::now() + OPEN);
            state.trial = false;
        }
    }

    /// `on`, or `off for 23 s more: <the last error>`.
    pub(crate) fn describe(&self) -> String {
        let state = self.state();
        match state.open_until {
            None => "on".to_owned(),
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now()).as_secs();
                let why = state.last_error.as_ref().map_or("", |(e, _)| e.as_str());
                if left == 0 {
                    format!("off, to be tried again at the next call: {why}")
                } else {
                    format!("off for {left} s more, then tried again: {why}")
                }
            }
        }
    }

    /// The last failure, and how long ago.
    pub(crate) fn last_error(&self) -> Option<String> {
        let state = self.state();
        let (error, at) = state.last_error.as_ref()?;
        let ago = at.elapsed().unwrap_or_default().as_secs();
        Some(format!("{error} ({ago} s ago)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Error {
        Error::Unreachable {
            url: "s3://t".into(),
            attempts: 1,
            cause: "Connection refused".into(),
        }
    }

    #[test]
    fn failures_in_a_row_open_it_and_one_trial_closes_it() {
        let health = Health::default();
        assert!(health.allow());
        health.failure(&unreachable());
        health.failure(&unreachable());
        assert!(health.allow(), "two failures leave it closed");
        health.success();
        for _ in 0..TRIP {
            health.failure(&unreachable());
        }
        assert!(!health.allow());
        assert!(
            health.describe().starts_with("off for"),
            "{}",
            health.describe()
        );
        assert!(health.last_error().unwrap().contains("Connection refused"));
        // Once the time is up, one trial goes through; others wait for its outcome.
        health.state().open_until = Some(Instant::now());
        assert!(health.allow());
        assert!(!health.allow());
        health.success();
        assert!(health.allow());
        assert_eq!(health.describe(), "on");
    }

    #[test]
    fn a_refused_credential_opens_it_at_once() {
        let health = Health::default();
        health.failure(&Error::Unauthorized {
            upstream: "s3://t".into(),
            detail: "403 InvalidAccessKeyId".into(),
        });
        assert!(!health.allow());
        assert!(health.describe().contains("InvalidAccessKeyId"));
    }
}
