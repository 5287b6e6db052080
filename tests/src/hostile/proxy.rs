//! A fault-injecting TCP proxy in front of one node, on the test's tokio runtime.
//!
//! # Where it sits
//! A node's id is the address its peers dial (`Builder::advertise`), so the proxy takes the
//! node's place: the proxy binds a free loopback port first, the node starts with that
//! address as its id (it listens elsewhere, on a port of its own), and the proxy forwards
//! every connection it accepts to the node's real port. Every member of a
//! [`Fixture`](super::Fixture) sits behind a proxy of its own, so every connection between
//! two members crosses exactly one proxy: the acceptor's.
//!
//! A member uses a connection in both directions whichever side dialled it (the acceptor
//! adopts an inbound connection as its link to the dialler when it has none), so a fault
//! "between members A and B" must catch both A's connections to B and B's to A. The proxy
//! therefore reads the dialler's id from the hello it sends first (the dialler always speaks
//! first; the hello is plaintext even with a cluster secret) and applies the [`Fault`] set
//! for that dialler; a connection whose first bytes are no hello gets no fault.
//!
//! # Behaviours, per direction
//! - [`Behaviour::Pass`]: bytes are forwarded as they come.
//! - [`Behaviour::Delay`]: each chunk is forwarded that long after it arrived (a latency, not
//!   a throughput cap: chunks do not wait for each other's delays), in order.
//! - [`Behaviour::Slice`]: each byte is written on its own (`TCP_NODELAY`: one segment each).
//! - [`Behaviour::Blackhole`]: bytes are read and dropped, and the connection is never
//!   closed by the proxy, not even when a side closes its end.
//! - [`Behaviour::Reset`] (either direction): the connection is reset at once — `SO_LINGER`
//!   0 on both sockets, then closed, so both ends see an RST — and so is every new
//!   connection of that dialler as soon as its hello arrives.
//!
//! A new fault applies to the connections already open as well as to new ones; a chunk
//! already queued by a delay is written under the behaviour in force when it falls due.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::{FrameDecoder, Message, WireLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// What the proxy does to the bytes of one direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Forward as they come.
    Pass,
    /// Forward each chunk this long after it arrived.
    Delay(Duration),
    /// Reset the connection.
    Reset,
    /// Read and drop; never close.
    Blackhole,
    /// Write one byte per write.
    Slice,
}

/// The behaviours of both directions of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Bytes from the dialler to the node behind the proxy.
    pub to_node: Behaviour,
    /// Bytes from the node back to the dialler.
    pub to_dialler: Behaviour,
}

impl Fault {
    /// No fault.
    pub const PASS: Fault = Fault::both(Behaviour::Pass);

    /// `behaviour` in both directions.
    #[must_use]
    pub const fn both(behaviour: Behaviour) -> Fault {
        Fault { to_node: behaviour, to_dialler: behaviour }
    }

    fn resets(self) -> bool {
        self.to_node == Behaviour::Reset || self.to_dialler == Behaviour::Reset
    }

    fn of(self, direction: usize) -> Behaviour {
        if direction == TO_NODE { self.to_node } else { self.to_dialler }
    }
}

/// What a proxy did, for a test to check that its fault was on the path.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections reset.
    pub resets: AtomicU64,
    /// Chunks written after a delay.
    pub delayed_chunks: AtomicU64,
    /// One-byte writes.
    pub sliced_writes: AtomicU64,
    /// Bytes dropped by a blackhole.
    pub blackholed_bytes: AtomicU64,
}

impl ProxyStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter`.
    #[must_use]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The index of the dialler-to-node direction.
const TO_NODE: usize = 0;
/// The index of the node-to-dialler direction.
const TO_DIALLER: usize = 1;

/// The most bytes read before the dialler's hello is looked for in vain.
const SNIFF_LIMIT: usize = 4096;

/// One connection, as the proxy's control sees it.
struct ConnControl {
    dialler: OnceLock<Option<String>>,
    changed: Notify,
}

struct Shared {
    target: SocketAddr,
    faults: Mutex<HashMap<String, Fault>>,
    conns: Mutex<Vec<Weak<ConnControl>>>,
    tasks: Mutex<Vec<AbortHandle>>,
    stats: ProxyStats,
}

impl Shared {
    fn fault_for(&self, dialler: Option<&str>) -> Fault {
        let faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        dialler.and_then(|id| faults.get(id).copied()).unwrap_or(Fault::PASS)
    }
}

/// A proxy's bound port, before it knows where to forward.
pub struct ProxyListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl ProxyListener {
    /// Binds a free loopback port.
    pub async fn bind() -> io::Result<ProxyListener> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        Ok(ProxyListener { listener, addr })
    }

    /// The address the proxy listens on: the node's id.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts forwarding every connection to `target` (the node's real port), on the current
    /// tokio runtime.
    #[must_use]
    pub fn forward_to(self, target: SocketAddr) -> Proxy {
        let shared = Arc::new(Shared {
            target,
            faults: Mutex::new(HashMap::new()),
            conns: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            stats: ProxyStats::default(),
        });
        let accepting = tokio::spawn(accept_loop(self.listener, Arc::clone(&shared)));
        shared.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(accepting.abort_handle());
        Proxy { addr: self.addr, shared }
    }
}

/// A running proxy; dropping it closes everything it holds.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it did so far.
    #[must_use]
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Applies `fault` to the connections dialled by the node `dialler`, open and new.
    pub fn set_fault(&self, dialler: &str, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dialler.to_owned(), fault);
        self.wake_connections();
    }

    /// Lifts every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.wake_connections();
    }

    /// Makes every open connection look at its fault again.
    fn wake_connections(&self) {
        let mut conns = self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|conn| match conn.upgrade() {
            Some(conn) => {
                conn.changed.notify_one();
                true
            }
            None => false,
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, most likely: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        ProxyStats::add(&shared.stats.connections, 1);
        let control = Arc::new(ConnControl { dialler: OnceLock::new(), changed: Notify::new() });
        shared.conns.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::downgrade(&control));
        let task = tokio::spawn(serve(client, Arc::clone(&shared), control));
        let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|task| !task.is_finished());
        tasks.push(task.abort_handle());
    }
}

/// The dialler's id if `sniffed` starts with a hello; `None` while more bytes may make one.
fn sniff_dialler(sniffed: &[u8]) -> Option<Option<String>> {
    let mut decoder = FrameDecoder::new(WireLimits::default());
    if decoder.push(sniffed).is_err() {
        return Some(None);
    }
    match decoder.next_frame() {
        Ok(Some((_, Message::Hello { node_id, .. }))) => {
            Some(Some(String::from_utf8_lossy(&node_id).into_owned()))
        }
        Ok(None) if sniffed.len() < SNIFF_LIMIT => None,
        Ok(_) | Err(_) => Some(None),
    }
}

/// One direction's bytes waiting to be written, each with the time it falls due.
#[derive(Default)]
struct Pending {
    chunks: VecDeque<(Instant, Bytes)>,
    /// The reading side closed: close the writing side once the chunks are out.
    eof: bool,
    /// The writing side was shut down.
    shut: bool,
}

/// Forwards one connection until both directions are done, an error, or a reset.
async fn serve(mut client: TcpStream, shared: Arc<Shared>, control: Arc<ConnControl>) {
    let Ok(mut node) = TcpStream::connect(shared.target).await else { return };
    let _ = client.set_nodelay(true);
    let _ = node.set_nodelay(true);
    let mut sniffed = Vec::new();
    let mut pending = [Pending::default(), Pending::default()];
    let mut reading = [true, true];
    let (mut from_client, mut from_node) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    loop {
        let dialler = control.dialler.get().map(Option::as_deref);
        let fault = dialler.map_or(Fault::PASS, |dialler| shared.fault_for(dialler));
        if fault.resets() {
            let _ = client.set_zero_linger();
            let _ = node.set_zero_linger();
            ProxyStats::add(&shared.stats.resets, 1);
            return;
        }
        if write_due(&mut pending, fault, &mut client, &mut node, &shared.stats).await.is_err() {
            return;
        }
        let done = pending.iter().all(|p| p.shut) && !reading.iter().any(|&r| r);
        if done {
            return;
        }
        let next_due = pending.iter().filter_map(|p| p.chunks.front().map(|(due, _)| *due)).min();
        let (read, direction) = tokio::select! {
            read = client.read(&mut from_client), if reading[TO_NODE] => (read, TO_NODE),
            read = node.read(&mut from_node), if reading[TO_DIALLER] => (read, TO_DIALLER),
            () = sleep_until(next_due), if next_due.is_some() => continue,
            () = control.changed.notified() => continue,
        };
        let chunk = match read {
            Ok(0) | Err(_) => {
                reading[direction] = false;
                pending[direction].eof = true;
                continue;
            }
            Ok(n) => {
                let buffer = if direction == TO_NODE { &from_client } else { &from_node };
                Bytes::copy_from_slice(&buffer[..n])
            }
        };
        let chunk = if direction == TO_NODE && control.dialler.get().is_none() {
            sniffed.extend_from_slice(&chunk);
            match sniff_dialler(&sniffed) {
                None => continue,
                Some(dialler) => {
                    let _ = control.dialler.set(dialler);
                    Bytes::from(std::mem::take(&mut sniffed))
                }
            }
        } else {
            chunk
        };
        let dialler = control.dialler.get().map(Option::as_deref);
        let behaviour = dialler.map_or(Fault::PASS, |d| shared.fault_for(d)).of(direction);
        let now = Instant::now();
        let due = match behaviour {
            Behaviour::Delay(delay) => now + delay,
            _ => now,
        };
        // Never before a chunk queued earlier: order is kept when a delay is lifted.
        let due = pending[direction].chunks.back().map_or(due, |(last, _)| due.max(*last));
        pending[direction].chunks.push_back((due, chunk));
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// Writes every chunk that fell due, each direction under its behaviour now; shuts a
/// direction down once its reader closed and its chunks are out (never under a blackhole).
async fn write_due(
    pending: &mut [Pending; 2],
    fault: Fault,
    client: &mut TcpStream,
    node: &mut TcpStream,
    stats: &ProxyStats,
) -> io::Result<()> {
    let now = Instant::now();
    for direction in [TO_NODE, TO_DIALLER] {
        let behaviour = fault.of(direction);
        let out = if direction == TO_NODE { &mut *node } else { &mut *client };
        let queue = &mut pending[direction];
        while queue.chunks.front().is_some_and(|(due, _)| *due <= now) {
            let (_, chunk) = queue.chunks.pop_front().expect("a chunk is due");
            match behaviour {
                Behaviour::Blackhole => {
                    ProxyStats::add(&stats.blackholed_bytes, chunk.len() as u64);
                }
                Behaviour::Slice => {
                    for byte in chunk.iter() {
                        out.write_all(std::slice::from_ref(byte)).await?;
                    }
                    ProxyStats::add(&stats.sliced_writes, chunk.len() as u64);
                }
                Behaviour::Delay(_) => {
                    out.write_all(&chunk).await?;
                    ProxyStats::add(&stats.delayed_chunks, 1);
                }
                Behaviour::Pass | Behaviour::Reset => out.write_all(&chunk).await?,
            }
        }
        if queue.eof && queue.chunks.is_empty() && !queue.shut && behaviour != Behaviour::Blackhole
        {
            queue.shut = true;
            let _ = out.shutdown().await;
        }
    }
    Ok(())
}
