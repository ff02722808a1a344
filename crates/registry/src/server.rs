//! [`run`]: the registry on a TCP listener.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::State;

/// Serves the registry on `listener` until `shutdown` completes, then lets in-flight
/// requests finish (for up to 30 s). A panicking request ends only its connection.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let handle = move |request| crate::routes::handle(state.clone(), request);
    hoard_http::serve(listener, handle, shutdown, hoard_http::DRAIN).await
}
