//! Accepting connections under a global cap: at the cap the accept loop
//! waits (new clients queue in the kernel's backlog) until a connection
//! closes, instead of taking connections the server cannot serve. A
//! connection that does not send its greeting in time is closed, so silent
//! sockets cannot hold the cap's places.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 connection preface is 24 bytes; a TLS ClientHello is longer.
const GREETING_BYTES: usize = 24;

/// A connection holding one of the cap's permits until it closes.
#[derive(Debug)]
pub struct CappedStream {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Until the greeting has arrived: when it must have.
    greeting_deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.greeting_deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent no greeting in time",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.greeting_deadline.is_some() {
            this.received += buf.filled().len() - before;
            if this.received >= GREETING_BYTES {
                this.greeting_deadline = None;
            }
        }
        polled
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for CappedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The connections accepted on `listener`, at most `max` open at once,
/// each closed unless its first bytes arrive within `greeting_timeout`.
pub fn capped_incoming(
    listener: TcpListener,
    max: usize,
    greeting_timeout: Duration,
) -> impl Stream<Item = io::Result<CappedStream>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(max));
    futures_util::stream::unfold((listener, permits), move |(listener, permits)| async move {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(max, "connection cap reached; new connections wait");
                permits.clone().acquire_owned().await.ok()?
            }
        };
        loop {
            match listener.accept().await {
                Ok((io, _)) => {
                    // Small unary calls and events must not wait for Nagle.
                    let _ = io.set_nodelay(true);
                    let stream = CappedStream {
                        io,
                        _permit: permit,
                        greeting_deadline: Some(Box::pin(tokio::time::sleep(greeting_timeout))),
                        received: 0,
                    };
                    return Some((Ok(stream), (listener, permits)));
                }
                // Out of file descriptors and the like: ending the stream
                // would stop the server, so wait a moment and go on.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}
