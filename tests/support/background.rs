//! A server running on its own thread and tokio runtime.
//!
//! Tests stay synchronous, and stopping a server drops its whole runtime, which closes every
//! connection it held at once (a graceful shutdown would wait for claude's keep-alive gRPC
//! connection and so could never simulate an outage).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

/// The serving half returned by a server's setup: runs until the server is stopped.
pub type Serve = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Handle of a running background server; dropping it stops the server.
pub struct Background {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `setup` on a fresh thread and runtime. `setup` binds its listeners and returns their
    /// addresses plus the serving future; this returns once the listeners are bound, so the
    /// addresses are connectable as soon as the caller gets them.
    pub fn spawn<S, F>(name: &str, setup: S) -> io::Result<(Background, Vec<SocketAddr>)>
    where
        S: FnOnce() -> F + Send + 'static,
        F: Future<Output = io::Result<(Vec<SocketAddr>, Serve)>>,
    {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<Vec<SocketAddr>>>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match setup().await {
                        Ok((addrs, serve)) => {
                            let _ = ready_tx.send(Ok(addrs));
                            tokio::select! {
                                _ = serve => {}
                                _ = stop_rx => {}
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                // Dropping the runtime cancels every connection task: sockets close now.
                drop(runtime);
            })?;
        let addrs = ready_rx
            .recv()
            .map_err(|_| io::Error::other("server thread ended before binding"))??;
        Ok((
            Background {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            addrs,
        ))
    }

    /// Stops the server and waits until its sockets are closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds a listener with `SO_REUSEADDR`, so a stopped server can be restarted on the same port
/// while its old connections linger in TIME_WAIT.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
