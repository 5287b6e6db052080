//! herdcache-mio nodes: each runs its own event-loop thread; the harness's futures run the
//! blocking calls on threads of their own.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use herdcache_mio::{DataSource, Handle, Node, StartError};
use herdcache_proto::{Error, KeyspaceConfig, KeyspaceStats, Value};

use crate::harness::{BoxFuture, CLUSTER, KEYSPACE, KEYSPACE_BYTES, NodeSpec, Runtime, TestNode};
use crate::source::Source;

/// The mio runtime crate: a node is an event-loop thread and its workers; every call blocks,
/// so the harness makes each one a future by running it on a short-lived thread.
#[derive(Debug, Clone, Copy)]
pub struct Mio;

/// The [`Mio`] runtime, as a cluster spec names it.
pub static MIO: Mio = Mio;

/// Stack of a thread that runs one blocking call (it only waits for the node's answer).
const CALL_STACK: usize = 256 * 1024;

/// Runs `call` on a thread of its own at once; the future answers what it returned.
fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> BoxFuture<T> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let spawned = thread::Builder::new()
        .name("mio-call".into())
        .stack_size(CALL_STACK)
        .spawn(move || drop(answer.send(call())));
    Box::pin(async move {
        spawned.expect("a thread for a blocking call");
        answered.await.expect("the blocking call answers (it panicked otherwise)")
    })
}

/// [`Source`] as a herdcache-mio data source, sleeping on the worker thread it runs on.
struct MioSource(Arc<Source>);

impl DataSource for MioSource {
    type Error = Infallible;

    fn fetch(&self, key: Bytes) -> Result<Bytes, Infallible> {
        let delay = self.0.begin_load(&key);
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        Ok(self.0.finish_load(&key))
    }
}

impl Runtime for Mio {
    fn name(&self) -> &'static str {
        "mio"
    }

    fn start(&self, spec: NodeSpec) -> BoxFuture<io::Result<Arc<dyn TestNode>>> {
        blocking(move || {
            let started = Node::builder()
                .cluster(CLUSTER)
                .listen(spec.listen)
                .peers(spec.peers)
                .keyspace(KeyspaceConfig::new(KEYSPACE, KEYSPACE_BYTES), MioSource(spec.source))
                .config(spec.tune)
                .send_buffer(spec.send_buffer)
                .start();
            match started {
                Ok(handle) => Ok(Arc::new(MioNode { handle }) as Arc<dyn TestNode>),
                Err(StartError::Bind(error)) => Err(error),
                Err(error) => Err(io::Error::other(error.to_string())),
            }
        })
    }
}

/// A herdcache-mio [`Handle`].
struct MioNode {
    handle: Handle,
}

impl TestNode for MioNode {
    fn id(&self) -> String {
        self.handle.node_id().to_owned()
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn get(&self, key: &str) -> BoxFuture<Result<Value, Error>> {
        let (handle, key) = (self.handle.clone(), key.to_owned());
        blocking(move || handle.get_value(KEYSPACE, key))
    }

    fn put(&self, key: &str, value: Bytes) -> BoxFuture<Result<(), Error>> {
        let (handle, key) = (self.handle.clone(), key.to_owned());
        blocking(move || handle.put(KEYSPACE, key, value))
    }

    fn delete(&self, key: &str) -> BoxFuture<Result<(), Error>> {
        let (handle, key) = (self.handle.clone(), key.to_owned());
        blocking(move || handle.delete(KEYSPACE, key))
    }

    fn set_peers(&self, peers: &[String]) {
        self.handle.set_peers(peers.iter().cloned());
    }

    fn stats(&self) -> Option<KeyspaceStats> {
        self.handle.keyspace_stats(KEYSPACE)
    }

    fn stop(&self) -> BoxFuture<()> {
        let handle = self.handle.clone();
        blocking(move || handle.stop())
    }

    fn kill(&self) {
        // Returns once the event loop has dropped its sockets (at its next turn).
        self.handle.kill();
    }
}
