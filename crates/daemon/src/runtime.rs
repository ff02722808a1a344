//! Small runtime helpers every part uses: blocking work off the runtime, the wall clock.

pub(crate) use hoard_types::now_ms;

use crate::error::ApiError;

/// Runs blocking store work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("a store task failed: {e}"))))
}
