//! Serving connections another part of the process accepted: the one binary's single
//! port reads each connection's request head once, keeps event streams on the gateway's
//! socket path, and hands every other connection here with the bytes it already read.
//!
//! actix-web's `HttpServer` only serves sockets it accepts itself, so this does what it
//! does with actix-http's own parts: worker threads, each an actix runtime with its own
//! `App` (actix services are not `Send`), fed round-robin through bounded channels.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use actix_service::{IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, map_config};
use actix_web::dev::AppConfig;
use actix_web::web;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::startup::AppFactory;

/// Connections waiting for a worker, per worker: a full queue makes the accepting side
/// wait (it stops accepting) rather than queue without bound.
const QUEUE: usize = 1024;

/// How long a worker lets its connections finish once it is told to stop (an idle
/// kept-alive connection closes within actix's keep-alive of 5 s).
const GRACE: Duration = Duration::from_secs(6);

/// A connection with the bytes already read from it.
#[derive(Debug)]
struct Handed {
    stream: std::net::TcpStream,
    read: Bytes,
}

/// The API's workers for handed-on connections. Dropping it (or [`stop`](Self::stop))
/// lets them finish their connections and exit.
#[derive(Debug)]
pub struct Handoff {
    /// One per worker; emptied by `stop`, which ends the workers' loops.
    queues: std::sync::Mutex<Vec<mpsc::Sender<Handed>>>,
    next: AtomicUsize,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Handoff {
    /// Starts `workers` threads serving the API of `factory`.
    pub fn start<E>(factory: &AppFactory<E>, workers: usize) -> io::Result<Arc<Self>>
    where
        E: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = mpsc::channel(QUEUE);
            let factory = factory.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("flowsync-http-{i}"))
                    .spawn(move || actix_web::rt::System::new().block_on(work(factory, rx)))?,
            );
            queues.push(tx);
        }
        Ok(Arc::new(Self {
            queues: std::sync::Mutex::new(queues),
            next: AtomicUsize::new(0),
            threads: std::sync::Mutex::new(threads),
        }))
    }

    /// Hands a connection to the next worker, with the bytes already read from it.
    pub async fn serve(&self, stream: TcpStream, read: Bytes) {
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let queue = {
            let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            if queues.is_empty() {
                return; // stopping: the connection is dropped
            }
            queues[self.next.fetch_add(1, Ordering::Relaxed) % queues.len()].clone()
        };
        let _ = queue.send(Handed { stream, read }).await;
    }

    /// Stops taking connections and waits for the workers to finish theirs.
    pub async fn stop(&self) {
        // Dropping the senders ends each worker's loop once its queue is empty.
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// One worker: an `App`, and each handed connection served by actix-http's HTTP/1 service.
async fn work<E>(factory: AppFactory<E>, mut queue: mpsc::Receiver<Handed>)
where
    E: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let app = factory
        .app()
        .into_factory()
        .map_err(|err| err.error_response());
    let http = HttpService::<Replayed, _, _>::build()
        .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
        .client_request_timeout(Duration::from_secs(5))
        .h1(map_config(app, |()| AppConfig::default()));
    let service = match http.new_service(()).await {
        Ok(service) => Rc::new(service),
        Err(e) => {
            tracing::error!(error = ?e, "the API's HTTP worker could not start");
            return;
        }
    };
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some(handed) = queue.recv().await {
        let Ok(stream) = TcpStream::from_std(handed.stream) else {
            continue;
        };
        let peer = stream.peer_addr().ok();
        let io = Replayed {
            read: handed.read,
            stream,
        };
        let service = service.clone();
        tracker.spawn_local(async move {
            let _ = service.call((io, peer)).await;
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(GRACE, tracker.wait()).await;
}

/// A socket whose first bytes were already read: they are read again, then the socket.
struct Replayed {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
