//! Accepting connections under a global cap: at the cap the accept loop
//! waits (new clients queue in the kernel's backlog) until a connection
//! closes, instead of taking connections the server cannot serve. A
//! connection that does not send its greeting in time is closed, so silent
//! sockets cannot hold the cap's places.
//!
//! Writes are coalesced. h2 flushes after every DATA frame larger than
//! 256 bytes, so a connection carrying a hundred swarm streams made one
//! `writev` per event per stream: a third of the server's CPU in a large
//! fan-out went to the kernel's TCP path. Here a write goes into the
//! connection's outbox and a flush hands it to a drain task, which runs
//! once the tasks already queued (the other streams' sends) have run, and
//! writes everything gathered by then in one call. Nothing waits longer
//! than it takes the scheduler to reach that task; nothing is lost: a
//! shutdown waits until the outbox is empty.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 connection preface is 24 bytes; a TLS ClientHello is longer.
const GREETING_BYTES: usize = 24;

/// Past this many bytes waiting in an outbox, writers wait for it to drain.
/// A write of this size already costs little per byte; more would only add
/// memory a stalled client holds (beside the kernel's socket buffer).
const OUTBOX_LIMIT: usize = 64 * 1024;

/// Bytes written to a connection and not yet handed to the kernel.
#[derive(Debug, Default)]
struct Outbox {
    bytes: BytesMut,
    /// A drain task is queued or running; set whenever `bytes` is not empty.
    draining: bool,
    /// The connection's task, waiting for room or (shutting down) for the
    /// outbox to empty.
    waiting: Option<Waker>,
    /// The socket failed; every later write fails alike.
    failed: Option<(io::ErrorKind, String)>,
    /// System calls that wrote bytes, for the tests of the coalescing.
    writes: u64,
}

impl Outbox {
    fn error(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }

    fn wake_waiting(&mut self) {
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
    }
}

/// The sending side of a connection, shared with its drain task.
#[derive(Debug)]
struct Writer {
    half: OwnedWriteHalf,
    outbox: Mutex<Outbox>,
    /// Fired when the connection is dropped without a shutdown: what is
    /// left unsent is dropped with it, as a closed socket would.
    abandoned: CancellationToken,
}

impl Writer {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // The outbox holds bytes and flags only; a panic elsewhere cannot
        // leave it half-changed.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a drain task unless one is queued already.
    fn schedule(self: &Arc<Self>, outbox: &mut Outbox) {
        if !outbox.draining && !outbox.bytes.is_empty() {
            outbox.draining = true;
            tokio::spawn(self.clone().drain());
        }
    }

    /// Writes the outbox out, waiting for the socket when it is full.
    async fn drain(self: Arc<Self>) {
        loop {
            {
                let mut outbox = self.outbox();
                while !outbox.bytes.is_empty() && outbox.failed.is_none() {
                    match self.half.try_write(&outbox.bytes) {
                        Ok(0) => {
                            outbox.failed = Some((io::ErrorKind::WriteZero, "socket closed".into()))
                        }
                        Ok(n) => {
                            outbox.bytes.advance(n);
                            outbox.writes += 1;
                            let metrics = crate::metrics::metrics();
                            metrics.socket_writes.inc();
                            metrics.socket_write_bytes.inc_by(n as u64);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => outbox.failed = Some((e.kind(), e.to_string())),
                    }
                }
                if outbox.bytes.len() < OUTBOX_LIMIT {
                    outbox.wake_waiting();
                }
                if outbox.bytes.is_empty() || outbox.failed.is_some() {
                    // An idle connection holds no buffer.
                    outbox.bytes = BytesMut::new();
                    outbox.draining = false;
                    outbox.wake_waiting();
                    return;
                }
            }
            let failed = tokio::select! {
                writable = self.half.writable() => writable
                    .err()
                    .map(|e| (e.kind(), e.to_string())),
                _ = self.abandoned.cancelled() => Some((
                    io::ErrorKind::BrokenPipe,
                    "connection dropped".to_owned(),
                )),
            };
            if let Some(failed) = failed {
                // The top of the loop then empties the outbox and ends.
                self.outbox().failed = Some(failed);
            }
        }
    }
}

/// A connection holding one of the cap's permits until it closes.
#[derive(Debug)]
pub struct CappedStream {
    read: OwnedReadHalf,
    writer: Arc<Writer>,
    info: TcpConnectInfo,
    _permit: OwnedSemaphorePermit,
    /// Until the greeting has arrived: when it must have.
    greeting_deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
}

impl CappedStream {
    fn new(io: TcpStream, permit: OwnedSemaphorePermit, greeting_timeout: Duration) -> Self {
        let info = io.connect_info();
        let (read, half) = io.into_split();
        CappedStream {
            read,
            writer: Arc::new(Writer {
                half,
                outbox: Mutex::new(Outbox::default()),
                abandoned: CancellationToken::new(),
            }),
            info,
            _permit: permit,
            greeting_deadline: Some(Box::pin(tokio::time::sleep(greeting_timeout))),
            received: 0,
        }
    }

    /// Appends `bufs` to the outbox and queues its drain.
    fn queue(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut outbox = self.writer.outbox();
        if let Some(e) = outbox.error() {
            return Poll::Ready(Err(e));
        }
        if outbox.bytes.len() >= OUTBOX_LIMIT {
            outbox.waiting = Some(cx.waker().clone());
            self.writer.schedule(&mut outbox);
            return Poll::Pending;
        }
        let n = bufs.iter().map(|b| b.len()).sum();
        outbox.bytes.reserve(n);
        for b in bufs {
            outbox.bytes.extend_from_slice(b);
        }
        self.writer.schedule(&mut outbox);
        Poll::Ready(Ok(n))
    }
}

impl Drop for CappedStream {
    fn drop(&mut self) {
        // A drain task waiting for a peer that no longer reads would hold
        // the socket open forever.
        self.writer.abandoned.cancel();
    }
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
        let polled = Pin::new(&mut this.read).poll_read(cx, buf);
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
        self.queue(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.queue(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // h2 then hands a frame's header and payload over together.
        true
    }

    /// The outbox's drain task is already queued by the write; a flush does
    /// not wait for it, so that the next frames join the same system call.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.writer.outbox().error() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Waits until every byte written has gone to the kernel; the socket
    /// closes when the connection is dropped.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut outbox = self.writer.outbox();
        if outbox.bytes.is_empty() || outbox.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        outbox.waiting = Some(cx.waker().clone());
        self.writer.schedule(&mut outbox);
        Poll::Pending
    }
}

impl Connected for CappedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
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
                    let stream = CappedStream::new(io, permit, greeting_timeout);
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server-side stream accepted through `capped_incoming`, and its peer.
    async fn pair() -> (CappedStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(capped_incoming(listener, 4, Duration::from_secs(60)));
        let peer = TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        (accepted, peer)
    }

    fn frame(i: u32) -> Vec<u8> {
        let mut f = i.to_be_bytes().to_vec();
        f.resize(700, (i % 251) as u8);
        f
    }

    #[tokio::test]
    async fn frames_flushed_one_by_one_leave_in_one_write_and_in_order() {
        let (mut stream, mut peer) = pair().await;
        let frames: Vec<Vec<u8>> = (0..100).map(frame).collect();
        // As h2 does: a header and a payload, then a flush, per frame, all
        // in one turn of the task.
        for f in &frames {
            let (head, payload) = f.split_at(9);
            let slices = [io::IoSlice::new(head), io::IoSlice::new(payload)];
            let n = stream.write_vectored(&slices).await.unwrap();
            assert_eq!(n, f.len());
            stream.flush().await.unwrap();
        }
        let expected: Vec<u8> = frames.concat();
        let mut got = vec![0u8; expected.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
        let writes = stream.writer.outbox().writes;
        assert!(
            writes <= 2,
            "100 frames took {writes} system calls; they should share one"
        );
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_holds_writers_back_and_loses_nothing() {
        let (mut stream, mut peer) = pair().await;
        let chunk = vec![7u8; 64 * 1024];
        let total = 64 * 1024 * 1024;
        let writer = tokio::spawn(async move {
            let mut sent = 0;
            while sent < total {
                stream.write_all(&chunk).await.unwrap();
                stream.flush().await.unwrap();
                let queued = stream.writer.outbox().bytes.len();
                assert!(
                    queued <= OUTBOX_LIMIT + chunk.len(),
                    "outbox grew to {queued}"
                );
                sent += chunk.len();
            }
            stream.shutdown().await.unwrap();
            assert!(stream.writer.outbox().bytes.is_empty());
        });
        // Not reading yet: the writer must be held back, not buffer 64 MiB.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!writer.is_finished());
        let mut received = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = peer.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == 7));
            received += n;
            if received == total {
                break;
            }
        }
        writer.await.unwrap();
        assert_eq!(received, total);
    }

    #[tokio::test]
    async fn a_connection_dropped_while_its_peer_stalls_lets_go_of_the_socket() {
        let (mut stream, _peer) = pair().await;
        let writer = Arc::downgrade(&stream.writer);
        let chunk = vec![1u8; 64 * 1024];
        let writing = tokio::spawn(async move {
            loop {
                stream.write_all(&chunk).await.unwrap();
            }
        });
        // The peer never reads: socket buffers fill, the drain task waits.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!writing.is_finished());
        assert!(writer.upgrade().is_some_and(|w| w.outbox().draining));
        writing.abort();
        let _ = writing.await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while writer.upgrade().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the drain task kept the dropped connection's socket"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_closed_peer_fails_later_writes() {
        let (mut stream, peer) = pair().await;
        drop(peer);
        let mut failed = false;
        for _ in 0..200 {
            if stream.write_all(&[1u8; 4096]).await.is_err() || stream.flush().await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(failed, "writes to a closed peer kept succeeding");
    }
}
