//! One TCP connection: a reader task and a writer task. Transport only: every byte read goes
//! to the driver, every byte written comes from the node.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_net::TcpStream;
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWrite, FutureExt, future};
use herdcache_proto::ConnId;
use herdcache_runtime::{Activity, MAX_GATHER, Outflow, READ_CHUNK, WriteQueue};

use crate::driver::{Event, elapsed};

/// Reads until EOF, an error, or `idle` without traffic either way, handing every chunk to the
/// driver; then reports [`Event::ReaderDone`].
///
/// Each chunk is copied out of one reused buffer (exactly the bytes read). The event channel
/// is bounded, so a slow driver stops this reader and TCP pushes back on the peer; so does a
/// send buffer above its high-water mark (`outflow`): the reader waits for the low-water mark
/// before it reads on.
pub(crate) async fn read_loop(
    conn: ConnId,
    mut socket: TcpStream,
    events: Sender<Event>,
    activity: Arc<Activity>,
    outflow: Arc<Outflow>,
    idle: Option<Duration>,
) {
    let mut buffer = vec![0; READ_CHUNK];
    loop {
        // The writer's stall timeout ends a connection that never drains.
        outflow.may_read().await;
        let read = match idle {
            None => socket.read(&mut buffer).await,
            Some(idle) => {
                let wait = idle.saturating_sub(activity.idle_for());
                let timed_out = elapsed(wait, None);
                match async { Some(socket.read(&mut buffer).await) }.or(timed_out).await {
                    Some(read) => read,
                    None if activity.idle_for() >= idle => {
                        tracing::debug!(conn = conn.0, "closing idle connection");
                        break;
                    }
                    // The writer moved bytes meanwhile: wait for the rest of the window.
                    None => continue,
                }
            }
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                activity.touch();
                let data = Bytes::copy_from_slice(&buffer[..n]);
                if events.send(Event::Received { conn, data }).await.is_err() {
                    return; // the driver is gone
                }
            }
            Err(error) => {
                tracing::debug!(conn = conn.0, %error, "read failed");
                break;
            }
        }
    }
    let _ = events.send(Event::ReaderDone { conn }).await;
}

/// Writes every chunk the driver queues, in order, gathering what is queued into one vectored
/// write. When the driver drops its sender (the node closed the connection), writes what is
/// left, shuts the socket down and reports [`Event::WriterDone`]; a write error, or queued
/// bytes that see no write progress for the send buffer's write-stall timeout, report it at
/// once.
///
/// The channel is unbounded in type, because the driver must never wait on one peer's socket
/// (two nodes writing to each other would deadlock); the bytes in it are counted in
/// `outflow`, which the driver checks against the hard cap and the reader against the
/// high-water mark.
pub(crate) async fn write_loop(
    conn: ConnId,
    mut socket: TcpStream,
    queue: Receiver<Vec<u8>>,
    events: Sender<Event>,
    activity: Arc<Activity>,
    outflow: Arc<Outflow>,
) {
    let mut pending = WriteQueue::new();
    let result = loop {
        let Ok(first) = queue.recv().await else { break Ok(()) };
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
        Ok(()) => drop(socket.shutdown(Shutdown::Write)),
        Err(error) => tracing::debug!(conn = conn.0, %error, "write failed"),
    }
    let _ = events.send(Event::WriterDone { conn }).await;
}

/// Writes every byte of `pending` (emptying it), with vectored writes that may be partial,
/// counting each one's progress in `outflow` and `activity`. A write that takes nothing for
/// the write-stall timeout is [`io::ErrorKind::TimedOut`].
async fn write_all_vectored(
    socket: &mut TcpStream,
    pending: &mut WriteQueue,
    outflow: &Outflow,
    activity: &Activity,
) -> io::Result<()> {
    let stall = outflow.limits().write_stall;
    while !pending.is_empty() {
        let write = future::poll_fn(|cx| {
            pending.poll_write_some(cx, |cx, slices| {
                Pin::new(&mut *socket).poll_write_vectored(cx, slices)
            })
        });
        let stalled = elapsed(stall, Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled")));
        // The deadline first: async-io retries the write on every wake-up, the timer's too,
        // and the kernel takes a few bytes whenever its send buffer has any room, while it
        // reports the socket writable only with a third of it free. Polled first, the write
        // made progress at the very deadline its own timer set, and the stall clock restarted.
        let written = stalled.or(write).await?;
        outflow.written(written);
        activity.touch();
    }
    Ok(())
}
