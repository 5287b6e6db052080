//! Starting a node on its event-loop thread, and ending it: herdcache-mio's [`Start`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use herdcache_runtime::front::WakeDriver;
use herdcache_runtime::{CLOSE_GRACE, Control, Setup, Start, StartError, blocking};
use mio::net::TcpListener;

use crate::event_loop::{Command, EventLoop, LoopConfig, Remote, WAKER};
use crate::workers::DEFAULT_WORKER_STACK;

/// Worker threads for data sources and name lookups, unless [`Mio::workers`] says.
pub const DEFAULT_WORKERS: usize = 8;

/// The entry point: `Node::builder()` sets up a cluster member.
pub type Node = herdcache_runtime::Node<Mio>;

/// Sets a node up (the builder every herdcache runtime shares); `start()` starts its event
/// loop and returns the node's [`blocking::Handle`] once it accepts connections.
pub type Builder = herdcache_runtime::Builder<Mio>;

/// The mio runtime, as the [`Builder`] names it, with its own settings: the worker pool that
/// calls data sources ([`Builder::runtime`](herdcache_runtime::Builder::runtime)).
///
/// ```
/// use herdcache_mio::{Mio, Node};
/// let builder = Node::builder().runtime(Mio::default().workers(4));
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mio {
    workers: usize,
    worker_stack_size: usize,
}

impl Default for Mio {
    /// At most [`DEFAULT_WORKERS`] worker threads with [`DEFAULT_WORKER_STACK`] of stack each.
    fn default() -> Self {
        Mio { workers: DEFAULT_WORKERS, worker_stack_size: DEFAULT_WORKER_STACK }
    }
}

impl Mio {
    /// The most worker threads calling data sources (and looking up peers named by host
    /// name) at once; started on demand, at least one (default [`DEFAULT_WORKERS`]). While
    /// every worker is busy, loads wait in line.
    #[must_use]
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = count.max(1);
        self
    }

    /// The stack reserved for each worker thread, in bytes (default
    /// [`DEFAULT_WORKER_STACK`], 2 MiB, Rust's default for a spawned thread). Data sources
    /// run on it: a call chain deeper than the stack aborts the whole process (a stack
    /// overflow cannot be caught), so lower it only for sources you know. It is address
    /// space; memory is taken only for the pages a call touches.
    #[must_use]
    pub fn worker_stack_size(mut self, bytes: usize) -> Self {
        self.worker_stack_size = bytes;
        self
    }
}

impl Start for Mio {
    type Started = Result<blocking::Handle, StartError>;

    /// Binds the listener, builds the node and starts its event-loop thread; returns once the
    /// node accepts connections.
    ///
    /// # Errors
    /// As [`Builder::start`](herdcache_runtime::Builder::start), and
    /// [`StartError::Runtime`] when the poller or the thread cannot be made.
    fn start(self, setup: Setup) -> Self::Started {
        let listener = TcpListener::bind(setup.listen_addr()).map_err(StartError::Bind)?;
        let local_addr = listener.local_addr().map_err(StartError::Bind)?;
        let poll = mio::Poll::new().map_err(StartError::Runtime)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(StartError::Runtime)?);
        let wake_driver: WakeDriver = {
            let waker = Arc::clone(&waker);
            Arc::new(move || {
                if let Err(error) = waker.wake() {
                    tracing::error!(%error, "cannot wake the event loop");
                }
            })
        };
        let node = setup.assemble(local_addr, wake_driver)?;
        let config = LoopConfig {
            connect_timeout: node.connect_timeout,
            idle_timeout: node.idle_timeout,
            send_limits: node.send_limits,
            workers: self.workers,
            worker_stack_size: self.worker_stack_size,
        };
        let remote = Arc::new(Remote::new(waker));
        let event_loop =
            EventLoop::new(Arc::clone(&node.shared), Arc::clone(&remote), poll, listener, config)
                .map_err(StartError::Runtime)?;
        let ended = Arc::new(Signal::default());
        let thread = {
            let ended = Arc::clone(&ended);
            thread::Builder::new()
                .name(format!("herdcache-mio {}", node.shared.node_id()))
                .spawn(move || {
                    // Raised when the loop ends, however it ends (a panic unwinds through it).
                    let _ended = RaiseOnDrop(ended);
                    event_loop.run();
                })
                .map_err(StartError::Runtime)?
        };
        tracing::info!(node = node.shared.node_id(), %local_addr, "node started");
        let control = Box::new(LoopControl { remote, thread: Some(thread), ended });
        Ok(herdcache_runtime::Handle::new(node.shared, control, node.stop_timeout).into())
    }
}

/// A flag raised once, which threads can wait for (with a timeout) and futures can await.
#[derive(Default)]
struct Signal {
    state: Mutex<(bool, Option<Waker>)>,
    raised: Condvar,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, (bool, Option<Waker>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn raise(&self) {
        let mut state = self.lock();
        state.0 = true;
        let waker = state.1.take();
        drop(state);
        self.raised.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits up to `limit` for the flag; whether it is raised.
    fn wait_for(&self, limit: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .raised
            .wait_timeout_while(state, limit, |state| !state.0)
            .unwrap_or_else(PoisonError::into_inner);
        state.0
    }
}

struct RaiseOnDrop(Arc<Signal>);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.raise();
    }
}

/// The future of a raised [`Signal`].
struct Raised(Arc<Signal>);

impl Future for Raised {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0.lock();
        if state.0 {
            return Poll::Ready(());
        }
        state.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The event-loop thread, as a handle ends it.
struct LoopControl {
    remote: Arc<Remote>,
    thread: Option<JoinHandle<()>>,
    /// Raised when the loop ended (even by a panic).
    ended: Arc<Signal>,
}

impl fmt::Debug for LoopControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopControl").finish_non_exhaustive()
    }
}

impl LoopControl {
    /// Joins the thread if it ended (it holds nothing then), else lets it go.
    fn reap(mut self) {
        let Some(thread) = self.thread.take() else { return };
        if self.ended.wait_for(Duration::ZERO) && thread.thread().id() != thread::current().id() {
            let _ = thread.join();
        }
    }
}

impl Control for LoopControl {
    /// Waits on a thread of its own (the loop's end has no timer on the caller's executor),
    /// as [`Control::stop_blocking`] does.
    fn stop(self: Box<Self>, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let stopped = Arc::new(Signal::default());
        let control = Arc::new(Mutex::new(Some(self)));
        let take = |control: &Mutex<Option<Box<Self>>>| {
            control.lock().unwrap_or_else(PoisonError::into_inner).take()
        };
        let spawned = thread::Builder::new().name("herdcache-mio stop".into()).spawn({
            let (control, raise) = (Arc::clone(&control), RaiseOnDrop(Arc::clone(&stopped)));
            move || {
                let _raise = raise;
                if let Some(control) = take(&control) {
                    control.stop_blocking(timeout);
                }
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no thread to stop the node on: stopping on this one");
            if let Some(control) = take(&control) {
                control.stop_blocking(timeout);
            }
        }
        Box::pin(Raised(stopped))
    }

    /// Waits for the loop to drain and end (up to `timeout`), then asks it to close every
    /// connection (up to twice the close grace), then kills it.
    fn stop_blocking(self: Box<Self>, timeout: Duration) {
        if !self.ended.wait_for(timeout) {
            tracing::warn!("not drained in time: closing");
            self.remote.send(Command::Close);
            if !self.ended.wait_for(CLOSE_GRACE * 2) {
                self.remote.send(Command::Kill);
                self.ended.wait_for(CLOSE_GRACE);
            }
        }
        self.reap();
    }

    /// Ends the loop at its next turn, which drops every socket; returns once it did (or the
    /// close grace passed).
    fn kill(self: Box<Self>) {
        self.remote.send(Command::Kill);
        self.ended.wait_for(CLOSE_GRACE);
        self.reap();
    }
}
