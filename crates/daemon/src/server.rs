//! [`run`]: the daemon on its Unix socket; [`run_metrics`]: `/metrics` alone on a TCP
//! address, for node exporters and scrapers that cannot reach the socket.

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::Daemon;

/// Serves the socket API on `listener` until `shutdown` completes, then lets calls in
/// flight finish (up to 30 s) and flushes the store. A panicking call ends only its
/// connection.
pub async fn run(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let served = daemon.clone();
    let handle = move |request| crate::routes::handle(served.clone(), request);
    hoard_http::serve(listener, handle, shutdown).await?;
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
    hoard_http::serve(listener, handle, shutdown).await
}
