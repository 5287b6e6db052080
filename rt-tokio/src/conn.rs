//! One TCP connection: a reader task and a writer task. Transport only: every byte read goes
//! to the driver, every byte written comes from the node.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use herdcache_proto::ConnId;
use herdcache_runtime::{Activity, CLOSE_GRACE, MAX_GATHER, Outflow, READ_CHUNK, WriteQueue};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::driver::IoEvent;

/// Reads until EOF, an error, or `idle` without traffic either way, handing every chunk to the
/// driver; then reports [`IoEvent::ReaderDone`].
///
/// The buffer is reused: each chunk is split off and frozen, and once the driver has dropped
/// it, `reserve` reclaims the same allocation. The event channel is bounded, so a slow driver
/// stops this reader and TCP pushes back on the peer; so does a send buffer above its
/// high-water mark (`outflow`): the reader waits for the low-water mark before it reads on.
pub(crate) async fn read_loop(
    conn: ConnId,
    mut socket: OwnedReadHalf,
    events: mpsc::Sender<IoEvent>,
    activity: Arc<Activity>,
    outflow: Arc<Outflow>,
    idle: Option<Duration>,
) {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    loop {
        // The writer's stall timeout ends a connection that never drains.
        outflow.may_read().await;
        buffer.reserve(READ_CHUNK);
        let read = match idle {
            None => socket.read_buf(&mut buffer).await,
            Some(idle) => {
                let wait = idle.saturating_sub(activity.idle_for());
                match tokio::time::timeout(wait, socket.read_buf(&mut buffer)).await {
                    Ok(read) => read,
                    Err(_elapsed) if activity.idle_for() >= idle => {
                        tracing::debug!(conn = conn.0, "closing idle connection");
                        break;
                    }
                    // The writer moved bytes meanwhile: wait for the rest of the window.
                    Err(_elapsed) => continue,
                }
            }
        };
        match read {
            Ok(0) => break,
            Ok(_) => {
                activity.touch();
                let data = buffer.split().freeze();
                if events.send(IoEvent::Received { conn, data }).await.is_err() {
                    return; // the driver is gone
                }
            }
            Err(error) => {
                tracing::debug!(conn = conn.0, %error, "read failed");
                break;
            }
        }
    }
    let _ = events.send(IoEvent::ReaderDone { conn }).await;
}

/// Writes every chunk the driver queues, in order, gathering what is queued into one vectored
/// write. When the driver drops its sender (the node closed the connection), writes what is
/// left, shuts the socket down and reports [`IoEvent::WriterDone`]; a write error, or queued
/// bytes that see no write progress for the send buffer's write-stall timeout, report it at
/// once.
///
/// The channel is unbounded in type, because the driver must never wait on one peer's socket
/// (two nodes writing to each other would deadlock); the bytes in it are counted in
/// `outflow`, which the driver checks against the hard cap and the reader against the
/// high-water mark.
pub(crate) async fn write_loop(
    conn: ConnId,
    mut socket: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::Sender<IoEvent>,
    activity: Arc<Activity>,
    outflow: Arc<Outflow>,
) {
    let mut pending = WriteQueue::new();
    let result = loop {
        let Some(first) = queue.recv().await else { break Ok(()) };
        pending.push(first);
        while pending.len() < MAX_GATHER {
            match queue.try_recv() {
                Ok(chunk) => pending.push(chunk),
                Err(_) => break,
            }
        }
        if let Err(error) = write_all_vectored(&mut socket, &mut pending, &outflow, &activity).await
        {
            break Err(error);
        }
    };
    match result {
        Ok(()) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, socket.shutdown()).await;
        }
        Err(error) => tracing::debug!(conn = conn.0, %error, "write failed"),
    }
    let _ = events.send(IoEvent::WriterDone { conn }).await;
}

/// Writes every byte of `pending` (emptying it), with vectored writes that may be partial,
/// counting each one's progress in `outflow` and `activity`. A write that takes nothing for
/// the write-stall timeout is [`io::ErrorKind::TimedOut`].
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    socket: &mut W,
    pending: &mut WriteQueue,
    outflow: &Outflow,
    activity: &Activity,
) -> io::Result<()> {
    let stall = outflow.limits().write_stall;
    while !pending.is_empty() {
        let write = std::future::poll_fn(|cx| {
            pending.poll_write_some(cx, |cx, slices| {
                Pin::new(&mut *socket).poll_write_vectored(cx, slices)
            })
        });
        let written = tokio::time::timeout(stall, write)
            .await
            .map_err(|_elapsed| io::Error::new(io::ErrorKind::TimedOut, "write stalled"))??;
        outflow.written(written);
        activity.touch();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdcache_proto::NodeConfig;
    use herdcache_runtime::SendBuffer;
    use std::io::IoSlice;
    use std::task::{Context, Poll};

    fn outflow(stall: Duration) -> Outflow {
        let buffer = SendBuffer { write_stall: stall, ..SendBuffer::default() };
        Outflow::new(buffer.limits(&NodeConfig::new("n", "c")))
    }

    /// Queues `chunks` as the driver would.
    fn queued(outflow: &Outflow, chunks: &[&[u8]]) -> WriteQueue {
        let mut pending = WriteQueue::new();
        for chunk in chunks {
            assert!(outflow.queue(chunk.len()));
            pending.push(chunk.to_vec());
        }
        pending
    }

    /// A socket that takes at most `step` bytes per write, across the slices it is given.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut room = self.step;
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(room);
                self.written.extend_from_slice(&buf[..n]);
                room -= n;
                taken += n;
            }
            Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_trickling_socket_gets_every_byte_in_order() {
        let (outflow, activity) = (outflow(Duration::from_secs(1)), Activity::default());
        let mut pending = queued(&outflow, &[b"hello", b" world"]);
        let mut socket = Trickle { written: Vec::new(), step: 3 };
        write_all_vectored(&mut socket, &mut pending, &outflow, &activity).await.expect("written");
        assert_eq!(socket.written, b"hello world");
        assert!(pending.is_empty());
        assert_eq!(outflow.queued(), 0, "every written byte is counted");
    }

    #[tokio::test]
    async fn a_socket_that_takes_nothing_is_an_error() {
        let (outflow, activity) = (outflow(Duration::from_secs(1)), Activity::default());
        let mut pending = queued(&outflow, &[b"x"]);
        let mut socket = Trickle { written: Vec::new(), step: 0 };
        let error = write_all_vectored(&mut socket, &mut pending, &outflow, &activity)
            .await
            .expect_err("write zero");
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
    }

    #[tokio::test]
    async fn a_write_without_progress_for_the_stall_timeout_fails() {
        let stall = Duration::from_millis(200);
        let (outflow, activity) = (outflow(stall), Activity::default());
        let mut pending = queued(&outflow, &[b"stuck"]);
        // A peer that never reads: the socket half whose other end is never read from.
        let (mut socket, _unread) = tokio::io::duplex(1);
        let started = std::time::Instant::now();
        let error = write_all_vectored(&mut socket, &mut pending, &outflow, &activity)
            .await
            .expect_err("stalled");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= stall && took < stall * 10, "after the stall timeout: {took:?}");
        assert_eq!(outflow.queued(), 4, "one byte went through");
    }
}
