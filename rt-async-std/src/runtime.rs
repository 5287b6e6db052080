//! herdcache's [`Runtime`] on the async-io types async-std and smol share: the operations the
//! shared driver runs on.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use async_executor::{Executor, Task};
use async_io::Timer;
use async_net::{TcpListener, TcpStream};
use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWrite};
use herdcache_runtime::{READ_CHUNK, Runtime};

/// The async-std/smol runtime, as the builder names it: each node runs on an executor of its
/// own (`async-executor`) on one dedicated thread, `herdcache-node`, driven by
/// `async_io::block_on`; sockets and timers are async-io's, whose reactor serves every
/// executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

/// The size of a connection's first read scratch (see [`AsyncStd`]'s `read`).
const FIRST_SCRATCH: usize = 2 << 10;

/// The reading half of a connection: the stream (async-net's streams are shared handles)
/// and the buffer reads land in before they are appended to the driver's chunk.
#[derive(Debug)]
pub struct TcpReader {
    stream: TcpStream,
    scratch: Box<[u8]>,
}

impl Runtime for AsyncStd {
    /// The node's executor. Weak: its thread owns it, so that ending the thread drops every
    /// task still on it, the driver included.
    type Spawner = Weak<Executor<'static>>;
    type Task = Task<()>;
    type Listener = TcpListener;
    type Stream = TcpStream;
    type Reader = TcpReader;
    type Writer = TcpStream;
    type Timer = Timer;

    /// Starts the node's thread and its executor; the thread ends when what is returned
    /// beside the spawner (the sender of its quit channel) is dropped.
    fn home(&self) -> io::Result<(Self::Spawner, Box<dyn Send + Sync>)> {
        let executor = Arc::new(Executor::new());
        let spawner = Arc::downgrade(&executor);
        let (quit, quit_rx) = async_channel::bounded::<()>(1);
        std::thread::Builder::new()
            .name("herdcache-node".into())
            // When the quit channel closes `run` returns, and dropping the executor drops
            // every task on it.
            .spawn(move || async_io::block_on(executor.run(quit_rx.recv())))?;
        Ok((spawner, Box::new(quit)))
    }

    fn spawn(
        spawner: &Self::Spawner,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self::Task {
        spawner
            .upgrade()
            .expect("the driver spawns from the node's executor, so the executor is alive")
            .spawn(task)
    }

    async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(address).await
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
        listener.accept().await.map(|(stream, _)| stream)
    }

    async fn connect(address: &str) -> io::Result<TcpStream> {
        TcpStream::connect(address).await
    }

    fn split(stream: TcpStream) -> io::Result<(TcpReader, TcpStream)> {
        stream.set_nodelay(true)?;
        let reader = TcpReader { stream: stream.clone(), scratch: vec![0; FIRST_SCRATCH].into() };
        Ok((reader, stream))
    }

    /// Reads into the reader's scratch buffer and appends exactly the bytes read (async-io
    /// reads into initialised memory only). The scratch starts small and doubles, up to
    /// [`READ_CHUNK`], each time a read fills it: a connection that sends little (or nothing:
    /// one held open before its hello) costs a few KiB, not a whole chunk.
    async fn read<'a>(reader: &'a mut TcpReader, buffer: &'a mut BytesMut) -> io::Result<usize> {
        let read = reader.stream.read(&mut reader.scratch).await?;
        buffer.extend_from_slice(&reader.scratch[..read]);
        if read == reader.scratch.len() && read < READ_CHUNK {
            reader.scratch = vec![0; (read * 2).min(READ_CHUNK)].into();
        }
        Ok(read)
    }

    fn poll_write_vectored(
        writer: &mut TcpStream,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(writer).poll_write_vectored(cx, slices)
    }

    async fn shutdown(writer: &mut TcpStream) -> io::Result<()> {
        writer.shutdown(std::net::Shutdown::Write)
    }

    fn timer(at: Instant) -> Timer {
        Timer::at(at)
    }

    fn reset_timer(timer: &mut Timer, at: Instant) {
        timer.set_at(at);
    }

    fn poll_timer(timer: &mut Timer, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(timer).poll(cx).map(drop)
    }
}
