//! Setting a node up and starting its event loop.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::{KeyspaceConfig, NodeConfig};
use herdcache_runtime::front::WakeDriver;
use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::event_loop::{EventLoop, LoopConfig, Shared, WAKER};
use crate::handle::{Handle, LoopThread};
use herdcache_runtime::{SendBuffer, Setup, StartError};

use crate::source::{DataSource, SharedSource, erase};
pub use crate::workers::DEFAULT_WORKER_STACK;

/// Worker threads for data sources and name lookups, unless [`Builder::workers`] says.
pub const DEFAULT_WORKERS: usize = 8;

/// The entry point: `Node::builder()` sets up a cluster member.
#[derive(Debug, Clone, Copy)]
pub struct Node;

impl Node {
    /// A [`Builder`] with defaults (see [`Builder::new`]).
    #[must_use]
    pub fn builder() -> Builder {
        Builder::new()
    }
}

/// Sets a node up: where it listens, who its peers are, its keyspaces and limits, how many
/// worker threads call its data sources.
pub struct Builder {
    settings: Setup<SharedSource>,
    workers: usize,
    worker_stack_size: usize,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .field("workers", &self.workers)
            .field("worker_stack_size", &self.worker_stack_size)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: listen on `127.0.0.1:0` (a free port), advertise the bound address, cluster
    /// `"herdcache"`, no peers (a ring of one), no keyspaces, no idle timeout, a 10 s deadline
    /// for a graceful stop, at most [`DEFAULT_WORKERS`] worker threads with
    /// [`DEFAULT_WORKER_STACK`] of stack each, and [`NodeConfig::new`]'s limits and timeouts.
    #[must_use]
    pub fn new() -> Self {
        Builder {
            settings: Setup::new(),
            workers: DEFAULT_WORKERS,
            worker_stack_size: DEFAULT_WORKER_STACK,
        }
    }

    /// The address to listen on for peers; port 0 picks a free one.
    #[must_use]
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.settings.set_listen(address);
        self
    }

    /// The address peers reach this node at, which is also its node id (default: the bound
    /// address, so port 0 works; set it when listening on an unspecified address such as
    /// `0.0.0.0`). Every member must name this node the same way in its peer list.
    #[must_use]
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.settings.set_advertise(address.into());
        self
    }

    /// Joins a ring of Go groupcache peers, as herdcache-tokio's and herdcache-async-std's
    /// builders do: the node speaks groupcache's HTTP protocol on its listener and to its
    /// peers and places keys on groupcache's ring; [`Builder::advertise`] is its base URL
    /// (default `http://{bound address}`), [`Builder::peers`] are base URLs, keyspace names
    /// are group names, and puts and deletes apply to this node only.
    #[must_use]
    pub fn groupcache_compat(mut self) -> Self {
        self.settings.set_groupcache_compat();
        self
    }

    /// The cluster label: peers with another label are refused.
    #[must_use]
    pub fn cluster(mut self, label: impl Into<Bytes>) -> Self {
        self.settings.set_cluster(label.into());
        self
    }

    /// The cluster's members by advertised address (static discovery); this node's own may
    /// be among them. Replace the list at run time with [`Handle::set_peers`].
    #[must_use]
    pub fn peers<I, S>(mut self, peers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.set_peers(peers.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a keyspace and the data source its misses load from.
    #[must_use]
    pub fn keyspace(mut self, config: KeyspaceConfig, source: impl DataSource) -> Self {
        self.settings.add_keyspace(config, erase(source));
        self
    }

    /// Adjusts the node's configuration (limits, timeouts, ring scheme, seed, breaker, …)
    /// after the builder filled in the node id, the cluster label, the keyspaces and the
    /// wall-clock time at start. Several calls apply in order.
    #[must_use]
    pub fn config(mut self, configure: impl FnOnce(&mut NodeConfig) + Send + 'static) -> Self {
        self.settings.add_config(configure);
        self
    }

    /// Closes a connection with no traffic either way for this long (default: never; the
    /// node reconnects when it next needs the peer).
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.settings.set_idle_timeout(idle);
        self
    }

    /// How many bytes a connection may have queued for its socket (default
    /// [`SendBuffer::default`]: stop reading it above 1 MiB, read again at 256 KiB, close it
    /// when a transmit would pass 1 MiB plus the largest frame the wire limits allow, or when
    /// its queued bytes see no write progress for 30 s). A peer that sends requests and does
    /// not read the answers is pushed back through TCP, then closed; it cannot grow the
    /// node's memory past the hard cap.
    #[must_use]
    pub fn send_buffer(mut self, buffer: SendBuffer) -> Self {
        self.settings.set_send_buffer(buffer);
        self
    }

    /// How long [`Handle::stop`] waits for the node to finish what is in progress before it
    /// closes everything (default 10 s).
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.settings.set_stop_timeout(timeout);
        self
    }

    /// The most worker threads calling data sources (and looking up peers named by host
    /// name) at once; started on demand, at least one (default [`DEFAULT_WORKERS`]). While
    /// every worker is busy, loads wait in line.
    #[must_use]
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = count.max(1);
        self
    }

    /// The stack reserved for each worker thread, in bytes (default
    /// [`DEFAULT_WORKER_STACK`], 2 MiB, Rust's default for a spawned thread). Your
    /// [`DataSource::fetch`] runs on it: a call chain deeper than the stack aborts the whole
    /// process (a stack overflow cannot be caught), so lower it only for sources you know.
    /// It is address space; memory is taken only for the pages a call touches.
    #[must_use]
    pub fn worker_stack_size(mut self, bytes: usize) -> Self {
        self.worker_stack_size = bytes;
        self
    }

    /// Binds the listener, builds the node and starts its event-loop thread; returns once the
    /// node accepts connections.
    ///
    /// # Errors
    /// [`StartError::Bind`] when the address cannot be bound, [`StartError::DuplicateKeyspace`]
    /// when two keyspaces share a name, [`StartError::Config`] when the core refuses the
    /// configuration, [`StartError::Runtime`] when the poller or the thread cannot be made.
    pub fn start(self) -> Result<Handle, StartError> {
        let listener = TcpListener::bind(self.settings.listen_addr()).map_err(StartError::Bind)?;
        let local_addr = listener.local_addr().map_err(StartError::Bind)?;
        let poll = Poll::new().map_err(StartError::Runtime)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Runtime)?);
        let wake_driver: WakeDriver = {
            let waker = Arc::clone(&waker);
            Arc::new(move || {
                if let Err(error) = waker.wake() {
                    tracing::error!(%error, "cannot wake the event loop");
                }
            })
        };
        let node = self.settings.assemble(local_addr, wake_driver)?;
        let config = LoopConfig {
            connect_timeout: node.connect_timeout,
            idle_timeout: node.idle_timeout,
            send_limits: node.send_limits,
            workers: self.workers,
            worker_stack_size: self.worker_stack_size,
        };
        let shared = Arc::new(Shared::new(node.shared, waker));
        let event_loop = EventLoop::new(Arc::clone(&shared), poll, listener, config)
            .map_err(StartError::Runtime)?;
        let (ended, exited) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("herdcache-mio {}", shared.node.node_id()))
            .spawn(move || {
                // Dropped when the loop ends, however it ends: the handles see the channel
                // disconnect.
                let _ended = ended;
                event_loop.run();
            })
            .map_err(StartError::Runtime)?;
        tracing::info!(node = shared.node.node_id(), %local_addr, "node started");
        Ok(Handle::new(shared, LoopThread { thread, exited }, node.stop_timeout))
    }
}
