//! Accepting connections under a global cap: at the cap the accept loop
//! waits (new clients queue in the kernel's backlog) until a connection
//! closes, instead of taking connections the server cannot serve.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection holding one of the cap's permits until it closes.
#[derive(Debug)]
pub struct CappedStream {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
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

/// The connections accepted on `listener`, at most `max` open at once.
pub fn capped_incoming(
    listener: TcpListener,
    max: usize,
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
