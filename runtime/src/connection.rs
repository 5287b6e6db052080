//! The connection loop of the async driver, written once for every [`Runtime`]: one TCP
//! connection is a reader task and a writer task. Transport only: every byte read goes to
//! the driver, every byte written comes from the node.
//!
//! Contract:
//! - The reader reads into one reused buffer and hands each chunk to the driver over the
//!   bounded event channel. Before each read it waits for its gate ([`Outflow::may_read`]):
//!   at most [`READ_AHEAD`](crate::READ_AHEAD) chunks the driver has not fed to the node yet
//!   (a slow driver stops it, and TCP pushes back on the peer), and the send buffer's
//!   high-water mark. EOF, an error or the idle timeout end it with
//!   [`IoEvent::ReaderDone`].
//! - The writer gathers what the driver queued into vectored writes, in order. Its queue is
//!   unbounded in type (the driver never waits on one peer's socket: two nodes writing to
//!   each other would deadlock); its bytes are counted in the [`Outflow`], which the driver
//!   checks against the hard cap. Queued bytes without write progress for the write-stall
//!   timeout end it, decided against the clock before a write is retried (see
//!   [`poll_write_or_stall`]). When the driver drops the queue (the node closed the
//!   connection) it writes what is left, shuts the socket down, and reports
//!   [`IoEvent::WriterDone`], as after an error.
//! - With TLS ([`TlsLink`]) the handshake ran before (see [`handshake`]); the reader decrypts
//!   what it reads and hands the driver plaintext, exactly as above; the writer encrypts
//!   what it gathered and writes ciphertext. They share the session behind a mutex held only
//!   while bytes are converted, never across an await. When reading leaves the session with
//!   bytes to send (alerts, key updates), the reader wakes the writer, which sends them
//!   without waiting for a chunk from the driver. The [`Outflow`] counts what the socket has
//!   not taken: the driver counts plaintext, the writer adds the ciphertext's overhead
//!   ([`Outflow::grow`]), so the hard cap and the write-stall timeout stay honest. A close
//!   sends close_notify before the socket is shut down.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::task::{Context, Poll};
use core::time::Duration;
use std::io::{self, IoSlice};
use std::time::Instant;

use async_channel::{Receiver, Sender};
use bytes::BytesMut;
use futures_lite::FutureExt;
use herdcache_proto::ConnId;

use std::sync::{Mutex, PoisonError};

use crate::async_driver::IoEvent;
use crate::rt::{Runtime, deadline_in, elapsed};
use crate::tls::{SessionError, TlsSession};
use crate::transport::{Activity, CLOSE_GRACE, MAX_GATHER, Outflow, READ_CHUNK, WriteQueue};

/// A connection's TLS session, shared by its reader and its writer (see the module docs).
#[derive(Debug)]
pub(crate) struct TlsLink {
    session: Mutex<TlsSession>,
    /// The reader's wake-up for the writer (capacity 1: one pending is enough).
    wake_writer: Sender<()>,
}

impl TlsLink {
    /// The link over an established `session`, and the writer's end of its wake-ups.
    pub(crate) fn new(session: TlsSession) -> (Arc<TlsLink>, Receiver<()>) {
        let (wake_writer, wakes) = async_channel::bounded(1);
        (Arc::new(TlsLink { session: Mutex::new(session), wake_writer }), wakes)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, TlsSession> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decrypts `ciphertext` into `plaintext`; wakes the writer when the session has bytes
    /// to send. `Ok(true)`: the peer closed the session.
    fn decrypt(&self, ciphertext: &[u8], plaintext: &mut BytesMut) -> Result<bool, SessionError> {
        let mut session = self.session();
        let received = session.receive(ciphertext, plaintext);
        if session.wants_write() {
            let _ = self.wake_writer.try_send(());
        }
        received.map(|()| session.peer_closed())
    }

    /// Encrypts `chunks` (and whatever else the session has to send) into one buffer.
    fn encrypt(&self, chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut ciphertext = Vec::new();
        let mut session = self.session();
        for chunk in chunks {
            session.send(chunk, &mut ciphertext);
        }
        session.pending_ciphertext(&mut ciphertext);
        ciphertext
    }

    fn close(&self) -> Vec<u8> {
        let mut ciphertext = Vec::new();
        self.session().close(&mut ciphertext);
        ciphertext
    }
}

/// Runs `session`'s handshake over a split socket: writes what it has to send, reads what
/// comes, until it completes. Returns the plaintext that arrived with the last handshake
/// bytes (the peer's first frames), for the driver. The caller bounds it in time
/// ([`TlsConfig::handshake_timeout`](crate::tls::TlsConfig)); the session bounds the bytes.
/// On a TLS error the alert for the peer is written (best effort) before it returns.
pub(crate) async fn handshake<R: Runtime>(
    reader: &mut R::Reader,
    writer: &mut R::Writer,
    session: &mut TlsSession,
) -> Result<BytesMut, SessionError> {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut plaintext = BytesMut::new();
    let mut ciphertext = Vec::new();
    loop {
        session.pending_ciphertext(&mut ciphertext);
        write_bytes::<R>(writer, &ciphertext).await.map_err(SessionError::Io)?;
        ciphertext.clear();
        if !session.is_handshaking() {
            return Ok(plaintext);
        }
        buffer.clear();
        buffer.reserve(READ_CHUNK);
        if R::read(reader, &mut buffer).await.map_err(SessionError::Io)? == 0 {
            return Err(SessionError::Closed);
        }
        if let Err(error) = session.receive(&buffer, &mut plaintext) {
            session.pending_ciphertext(&mut ciphertext);
            let _ = write_bytes::<R>(writer, &ciphertext).await;
            return Err(error);
        }
    }
}

/// Writes all of `bytes` (no stall timer: the handshake's timeout bounds it).
async fn write_bytes<R: Runtime>(writer: &mut R::Writer, bytes: &[u8]) -> io::Result<()> {
    let mut pending = WriteQueue::new();
    pending.push(bytes.to_vec());
    while !pending.is_empty() {
        core::future::poll_fn(|cx| {
            pending.poll_write_some(cx, |cx, slices| R::poll_write_vectored(writer, cx, slices))
        })
        .await?;
    }
    Ok(())
}

/// Reads `reader` until EOF, an error, or `idle` without traffic either way (the writer's
/// progress counts too), handing every chunk to the driver; then reports
/// [`IoEvent::ReaderDone`].
pub(crate) async fn read_loop<R: Runtime>(
    conn: ConnId,
    mut reader: R::Reader,
    events: Sender<IoEvent<R>>,
    activity: Arc<Activity>,
    outflow: Arc<Outflow>,
    idle: Option<Duration>,
    tls: Option<Arc<TlsLink>>,
) {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut plaintext = BytesMut::new();
    // One idle timer for the connection's life, moved before each read.
    let mut idle_timer = idle.map(|idle| R::timer(deadline_in(idle)));
    loop {
        // The writer's stall timeout ends a connection that never drains.
        outflow.may_read().await;
        // Reclaims the allocation once the driver dropped the chunks split off it.
        buffer.reserve(READ_CHUNK);
        let read = match (idle, idle_timer.as_mut()) {
            (Some(idle), Some(timer)) => {
                R::reset_timer(timer, deadline_in(idle.saturating_sub(activity.idle_for())));
                let read = async { Some(R::read(&mut reader, &mut buffer).await) };
                let timed_out = core::future::poll_fn(|cx| R::poll_timer(timer, cx).map(|()| None));
                match read.or(timed_out).await {
                    Some(read) => read,
                    None if activity.idle_for() >= idle => {
                        tracing::debug!(conn = conn.0, "closing idle connection");
                        break;
                    }
                    // The writer moved bytes meanwhile: wait for the rest of the window.
                    None => continue,
                }
            }
            _ => R::read(&mut reader, &mut buffer).await,
        };
        match read {
            Ok(0) => break,
            Ok(_) => {
                activity.touch();
                let data = match &tls {
                    None => buffer.split().freeze(),
                    Some(link) => {
                        let decrypted = link.decrypt(&buffer, &mut plaintext);
                        buffer.clear();
                        match decrypted {
                            Ok(peer_closed) if plaintext.is_empty() => {
                                if peer_closed {
                                    break;
                                }
                                continue;
                            }
                            Ok(_) => plaintext.split().freeze(),
                            Err(error) => {
                                tracing::debug!(conn = conn.0, %error, "TLS read failed");
                                break;
                            }
                        }
                    }
                };
                let permit = outflow.read_permit();
                if events.send(IoEvent::Received { conn, data, permit }).await.is_err() {
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

/// Writes every chunk the driver queues on `queue`, in order, gathering what is queued into
/// vectored writes; see the module docs for how it ends.
pub(crate) async fn write_loop<R: Runtime>(
    conn: ConnId,
    mut writer: R::Writer,
    queue: Receiver<Vec<u8>>,
    events: Sender<IoEvent<R>>,
    activity: Arc<Activity>,
    outflow: Arc<Outflow>,
    tls: Option<(Arc<TlsLink>, Receiver<()>)>,
) {
    let mut pending = WriteQueue::new();
    // One stall timer for the connection's life, moved before each write.
    let mut stall_timer = R::timer(deadline_in(outflow.limits().write_stall));
    let mut batch = Vec::new();
    let result = loop {
        match &tls {
            None => {
                let Ok(first) = queue.recv().await else { break Ok(()) };
                pending.push(first);
                while pending.len() < MAX_GATHER {
                    match queue.try_recv() {
                        Ok(chunk) => pending.push(chunk),
                        Err(_) => break,
                    }
                }
            }
            Some((link, wakes)) => {
                // A chunk from the driver, or the reader's wake-up (the session has bytes
                // to send of its own).
                let next = async { queue.recv().await.ok() }
                    .or(async {
                        let _ = wakes.recv().await;
                        Some(Vec::new())
                    })
                    .await;
                let Some(first) = next else { break Ok(()) };
                batch.push(first);
                while batch.len() < MAX_GATHER {
                    match queue.try_recv() {
                        Ok(chunk) => batch.push(chunk),
                        Err(_) => break,
                    }
                }
                let plain: usize = batch.iter().map(Vec::len).sum();
                let ciphertext = link.encrypt(&batch);
                batch.clear();
                // The driver counted the plaintext; the socket takes the ciphertext.
                match ciphertext.len().checked_sub(plain) {
                    Some(overhead) => outflow.grow(overhead),
                    None => outflow.written(plain - ciphertext.len()),
                }
                pending.push(ciphertext);
            }
        }
        let written =
            write_all::<R>(&mut writer, &mut pending, &mut stall_timer, &outflow, &activity);
        if let Err(error) = written.await {
            break Err(error);
        }
    };
    match result {
        Ok(()) => {
            if let Some((link, _)) = &tls {
                let close_notify = link.close();
                outflow.grow(close_notify.len());
                pending.push(close_notify);
                let written = write_all::<R>(
                    &mut writer,
                    &mut pending,
                    &mut stall_timer,
                    &outflow,
                    &activity,
                );
                let _ = written.or(elapsed::<R, _>(CLOSE_GRACE, Ok(()))).await;
            }
            let _ = R::shutdown(&mut writer).or(elapsed::<R, _>(CLOSE_GRACE, Ok(()))).await;
        }
        Err(error) => tracing::debug!(conn = conn.0, %error, "write failed"),
    }
    let _ = events.send(IoEvent::WriterDone { conn }).await;
}

/// Writes every byte of `pending` (emptying it), with vectored writes that may be partial,
/// counting each one's progress in `outflow` and `activity`. No progress for the write-stall
/// timeout is [`io::ErrorKind::TimedOut`].
async fn write_all<R: Runtime>(
    writer: &mut R::Writer,
    pending: &mut WriteQueue,
    stall_timer: &mut R::Timer,
    outflow: &Outflow,
    activity: &Activity,
) -> io::Result<()> {
    let stall = outflow.limits().write_stall;
    while !pending.is_empty() {
        let deadline = deadline_in(stall);
        R::reset_timer(stall_timer, deadline);
        let written = core::future::poll_fn(|cx| {
            poll_write_or_stall(
                cx,
                pending,
                deadline,
                Instant::now(),
                |cx, slices| R::poll_write_vectored(writer, cx, slices),
                |cx| R::poll_timer(stall_timer, cx),
            )
        })
        .await?;
        outflow.written(written);
        activity.touch();
    }
    Ok(())
}

/// One step of a write under the write-stall deadline: [`io::ErrorKind::TimedOut`] when `now`
/// is at or past `deadline` **before the write is retried**, else one write of `pending`
/// ([`WriteQueue::poll_write_some`]), else the stall timer.
///
/// Why the clock comes first: a runtime may retry the write on any wake-up of the task, the
/// stall timer's own included (async-io does), and the kernel takes a few bytes of a write
/// whenever its send buffer has any room, while it reports the socket writable only once a
/// third of it is free. A peer that never reads can let that little room open (its kernel
/// compacts its receive queue); with the write retried first, the stall timer's wake-up
/// found it, made "progress" at the very deadline, and the stall clock started over — the
/// stalled connection stayed open seconds longer than the write-stall timeout (the flaky
/// stalled-client test on async-std).
pub(crate) fn poll_write_or_stall(
    cx: &mut Context<'_>,
    pending: &mut WriteQueue,
    deadline: Instant,
    now: Instant,
    write_vectored: impl FnOnce(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    poll_timer: impl FnOnce(&mut Context<'_>) -> Poll<()>,
) -> Poll<io::Result<usize>> {
    let stalled = || io::Error::new(io::ErrorKind::TimedOut, "write stalled");
    if now >= deadline {
        return Poll::Ready(Err(stalled()));
    }
    if let Poll::Ready(written) = pending.poll_write_some(cx, write_vectored) {
        return Poll::Ready(written);
    }
    poll_timer(cx).map(|()| Err(stalled()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SendBuffer;
    use herdcache_proto::NodeConfig;

    fn outflow() -> Outflow {
        Outflow::new(SendBuffer::default().limits(&NodeConfig::new("n", "c")))
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

    /// Steps until `pending` is written or the step fails, through a socket that takes at
    /// most `step` bytes per write, at `now` against `deadline`.
    fn write_through(
        outflow: &Outflow,
        pending: &mut WriteQueue,
        step: usize,
        deadline: Instant,
        now: Instant,
    ) -> (Vec<u8>, io::Result<()>) {
        let mut cx = Context::from_waker(core::task::Waker::noop());
        let mut written = Vec::new();
        while !pending.is_empty() {
            let took = poll_write_or_stall(
                &mut cx,
                pending,
                deadline,
                now,
                |_, slices| {
                    let mut room = step;
                    let mut taken = 0;
                    for slice in slices {
                        let n = slice.len().min(room);
                        written.extend_from_slice(&slice[..n]);
                        room -= n;
                        taken += n;
                    }
                    Poll::Ready(Ok(taken))
                },
                |_| Poll::Pending,
            );
            match took {
                Poll::Ready(Ok(n)) => outflow.written(n),
                Poll::Ready(Err(error)) => return (written, Err(error)),
                Poll::Pending => unreachable!("the socket always takes or fails"),
            }
        }
        (written, Ok(()))
    }

    #[test]
    fn an_alert_owed_after_a_read_wakes_the_writer_which_sends_it_without_a_driver_chunk() {
        use crate::tls::tests::{Ca, pair, pump};
        let ca = Ca::new();
        let (mut server, mut client) =
            pair(&ca.config_for_id("a:1"), &ca.config_for_id("b:1"), "a:1");
        pump(&mut server, &mut client, 1000);
        let (link, wakes) = TlsLink::new(server.session);
        let mut record = Vec::new();
        client.session.send(b"hello", &mut record);
        let mut plaintext = BytesMut::new();
        assert!(!link.decrypt(&record, &mut plaintext).expect("a good record"));
        assert_eq!(&plaintext[..], b"hello");
        assert!(wakes.try_recv().is_err(), "nothing of its own to send");
        // A record tampered with in flight: the session owes the peer an alert.
        let mut tampered = Vec::new();
        client.session.send(b"again", &mut tampered);
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(link.decrypt(&tampered, &mut plaintext).is_err());
        assert!(wakes.try_recv().is_ok(), "the reader woke the writer");
        let alert = link.encrypt(&[]);
        assert!(!alert.is_empty(), "the writer sends the session's own record");
        let refused = client.session.receive(&alert, &mut client.received);
        assert!(refused.is_err(), "the peer reads the alert: {refused:?}");
    }

    #[test]
    fn a_trickling_socket_gets_every_byte_in_order_before_the_deadline() {
        let outflow = outflow();
        let mut pending = queued(&outflow, &[b"hello", b" world"]);
        let now = Instant::now();
        let (written, result) =
            write_through(&outflow, &mut pending, 3, now + Duration::from_secs(1), now);
        result.expect("written");
        assert_eq!(written, b"hello world");
        assert_eq!(outflow.queued(), 0, "every written byte is counted");
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error() {
        let outflow = outflow();
        let mut pending = queued(&outflow, &[b"x"]);
        let now = Instant::now();
        let (_, result) =
            write_through(&outflow, &mut pending, 0, now + Duration::from_secs(1), now);
        assert_eq!(result.expect_err("write zero").kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn at_the_deadline_a_write_is_not_retried_even_if_the_socket_would_take_it() {
        let outflow = outflow();
        let mut pending = queued(&outflow, &[b"stuck"]);
        let deadline = Instant::now();
        let (written, result) = write_through(&outflow, &mut pending, 1000, deadline, deadline);
        assert_eq!(result.expect_err("stalled").kind(), io::ErrorKind::TimedOut);
        assert!(written.is_empty(), "no write at the deadline");
        assert_eq!(outflow.queued(), 5, "nothing went through");
    }

    #[test]
    fn a_blocked_write_stalls_when_the_timer_fires() {
        let outflow = outflow();
        let mut pending = queued(&outflow, &[b"stuck"]);
        let mut cx = Context::from_waker(core::task::Waker::noop());
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1);
        let blocked = |_: &mut Context<'_>, _: &[IoSlice<'_>]| Poll::Pending;
        let waiting =
            poll_write_or_stall(&mut cx, &mut pending, deadline, now, blocked, |_| Poll::Pending);
        assert!(waiting.is_pending(), "before the deadline: waits for the socket or the timer");
        let fired =
            poll_write_or_stall(&mut cx, &mut pending, deadline, now, blocked, |_| Poll::Ready(()));
        let error = match fired {
            Poll::Ready(Err(error)) => error,
            other => panic!("the timer ends the write: {other:?}"),
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(pending.len(), 1, "unwritten bytes stay queued");
    }
}
