//! herdcache's [`Runtime`] on tokio: the operations the shared driver runs on.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use herdcache_runtime::Runtime;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

/// The tokio runtime, as the builder names it: a node's tasks run on the tokio runtime whose
/// context starts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A tokio task that is aborted when dropped.
#[derive(Debug)]
pub struct TokioTask(JoinHandle<()>);

impl Drop for TokioTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for TokioTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // An aborted task has nothing to report (nothing the driver spawns panics).
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

impl Runtime for Tokio {
    type Spawner = tokio::runtime::Handle;
    type Task = TokioTask;
    type Listener = TcpListener;
    type Stream = TcpStream;
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;
    type Timer = Pin<Box<Sleep>>;

    /// The tokio runtime this is called on; nothing to end with the node.
    fn home(&self) -> io::Result<(Self::Spawner, Box<dyn Send + Sync>)> {
        let handle = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        Ok((handle, Box::new(())))
    }

    /// With the runtime's context: its timers need it.
    fn block_on<T>(spawner: &Self::Spawner, future: impl Future<Output = T>) -> T {
        spawner.block_on(future)
    }

    fn spawn(
        spawner: &Self::Spawner,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self::Task {
        TokioTask(spawner.spawn(task))
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

    fn split(stream: TcpStream) -> io::Result<(OwnedReadHalf, OwnedWriteHalf)> {
        stream.set_nodelay(true)?;
        Ok(stream.into_split())
    }

    /// Reads into the buffer's spare room: no copy.
    async fn read<'a>(
        reader: &'a mut OwnedReadHalf,
        buffer: &'a mut BytesMut,
    ) -> io::Result<usize> {
        reader.read_buf(buffer).await
    }

    fn poll_write_vectored(
        writer: &mut OwnedWriteHalf,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(writer).poll_write_vectored(cx, slices)
    }

    async fn shutdown(writer: &mut OwnedWriteHalf) -> io::Result<()> {
        writer.shutdown().await
    }

    fn timer(at: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn reset_timer(timer: &mut Self::Timer, at: Instant) {
        timer.as_mut().reset(at.into());
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().poll(cx)
    }
}
