//! Whether the upstream could be reached the last time anyone asked it (a resolution, the
//! outbox, a file source): what `status` shows.

use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

/// When the upstream last answered, and why it could not be reached if it could not.
#[derive(Default)]
pub(crate) struct Reachability(Mutex<Option<(Instant, Option<String>)>>);

impl Reachability {
    /// Records what an upstream call's result says about reaching it: an unreachable
    /// upstream, or one that answered (even with an error).
    pub(crate) fn note<T>(&self, result: &Result<T, hoard_upstream::Error>) {
        let outcome = match result {
            Err(e) if e.is_unreachable() => Some(e.reason()),
            _ => None,
        };
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), outcome));
    }

    /// `reachable (3 s ago)`, `unreachable (2 s ago): …`, or `unknown`.
    pub(crate) fn describe(&self) -> String {
        let last = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match last {
            None => "unknown (no call yet)".to_owned(),
            Some((at, None)) => format!("reachable ({} s ago)", at.elapsed().as_secs()),
            Some((at, Some(why))) => {
                format!("unreachable ({} s ago): {why}", at.elapsed().as_secs())
            }
        }
    }
}
