//! [`run`]: the daemon on its Unix socket; [`run_metrics`]: `/metrics` alone on a TCP
//! address, for node exporters and scrapers that cannot reach the socket.

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::Daemon;

/// How long calls in flight may go on after `shutdown`: SIGTERM must end the daemon within
/// seconds whatever is in flight (an interrupted fetch resumes at the next start).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the socket API on `listener` until `shutdown` completes, then lets calls in
/// flight finish (up to `DRAIN`) and flushes the store. A panicking call ends only its
/// connection.
pub async fn run(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let served = daemon.clone();
    let handle = move |request| crate::routes::handle(served.clone(), request);
    hoard_http::serve(listener, handle, shutdown, DRAIN).await?;
    if let Err(e) = daemon.flush().await {
        tracing::warn!(error = %e, "flushing the cache index failed");
    }
    Ok(())
}

/// Serves only `GET /metrics` on `listener` (a loopback TCP address from the config) until
/// `shutdown` completes.
pub async fn run_metrics(
    listener: tokio::net::TcpListener,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let handle = move |request| crate::routes::handle_metrics_only(daemon.clone(), request);
    hoard_http::serve(listener, handle, shutdown, DRAIN).await
}
