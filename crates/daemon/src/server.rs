//! The accept loop on the Unix socket: one task per connection, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;

use crate::Daemon;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long calls in flight may run on after shutdown was asked for.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves the socket API on `listener` until `shutdown` completes, then lets calls in
/// flight finish (up to 30 s) and flushes the store. A panicking call ends only its
/// connection.
pub async fn run(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let daemon = daemon.clone();
        let service = service_fn(move |request| {
            let daemon = daemon.clone();
            async move {
                Ok::<_, std::convert::Infallible>(crate::routes::handle(daemon, request).await)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!("shutting down with calls still running"),
    }
    if let Err(e) = daemon.flush() {
        tracing::warn!(error = %e, "flushing the cache index failed");
    }
    Ok(())
}
