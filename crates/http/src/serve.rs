//! The HTTP/1.1 accept loop: one task per connection (a panicking request ends only its
//! connection), a deadline for request headers against slow clients, and a graceful
//! shutdown that lets requests in flight finish for a bounded time.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in flight may run on after shutdown was asked for.
pub const DRAIN: Duration = Duration::from_secs(30);

/// A listening socket.
pub trait Listener: Send {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A connection, and who is on the other end when the socket can tell.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Option<Peer>)>> + Send;
}

/// The process on the other end of a Unix socket (`SO_PEERCRED`), as the kernel reports
/// it: never taken from the request. Every request of the connection carries it as an
/// extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&self) -> std::io::Result<(Self::Io, Option<Peer>)> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, None))
    }
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&self) -> std::io::Result<(Self::Io, Option<Peer>)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        let peer = stream.peer_cred().ok().map(|cred| Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        });
        Ok((stream, peer))
    }
}

/// Serves `handle` on `listener` until `shutdown` completes, then lets requests in flight
/// finish for up to `drain` ([`DRAIN`] is what the registry gives them).
pub async fn serve<L, H, F, B>(
    listener: L,
    handle: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()>
where
    L: Listener,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let handle = handle.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            if let Some(peer) = peer {
                request.extensions_mut().insert(peer);
            }
            let response = handle(request);
            async move { Ok::<_, Infallible>(response.await) }
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
        () = tokio::time::sleep(drain) => tracing::warn!("shutting down with requests still running"),
    }
    Ok(())
}
