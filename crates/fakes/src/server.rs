//! A fake server's plumbing: an HTTP/1.1 server on a loopback port, on its own thread and
//! runtime, until dropped.

use std::future::Future;

use hoard_http::Body;
use http::{Request, Response};

/// A server on `url`; dropping it stops the server and joins its thread.
pub struct Served {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Serves, on a new loopback port, the handler `make` returns for the server's URL.
    pub fn start<M, F, Fut>(make: M) -> Self
    where
        M: FnOnce(&str) -> F,
        F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let handle = make(&url);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = hoard_http::serve(
                    listener,
                    handle,
                    async {
                        let _ = stopped.await;
                    },
                    hoard_http::DRAIN,
                )
                .await;
            });
        });
        Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
