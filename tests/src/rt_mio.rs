//! herdcache-mio nodes: each runs its own event-loop thread and workers; the tests use the
//! node's async handle, whose futures complete on any executor.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use herdcache_mio::{DataSource, Node, StartError};
use herdcache_proto::KeyspaceConfig;

use crate::harness::{BoxFuture, CLUSTER, KEYSPACE, KEYSPACE_BYTES, NodeSpec, Runtime, TestNode};
use crate::source::Source;

/// The mio runtime crate: a node is an event-loop thread and its workers.
#[derive(Debug, Clone, Copy)]
pub struct Mio;

/// The [`Mio`] runtime, as a cluster spec names it.
pub static MIO: Mio = Mio;

/// Stack of the thread a node starts from (`start` waits for the event loop to run).
const START_STACK: usize = 256 * 1024;

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

    /// Starts on a short-lived thread of its own: herdcache-mio's `start` blocks until the
    /// event loop runs, which the test's executor must not wait for.
    fn start(&self, spec: NodeSpec) -> BoxFuture<io::Result<Arc<TestNode>>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let spawned = thread::Builder::new()
            .name("mio-start".into())
            .stack_size(START_STACK)
            .spawn(move || {
                let builder = Node::builder()
                    .cluster(CLUSTER)
                    .listen(spec.listen)
                    .peers(spec.peers)
                    .keyspace(KeyspaceConfig::new(KEYSPACE, KEYSPACE_BYTES), MioSource(spec.source))
                    .config(spec.tune)
                    .send_buffer(spec.send_buffer);
                let builder = match spec.advertise {
                    Some(advertise) => builder.advertise(advertise),
                    None => builder,
                };
                let builder = match spec.tls {
                    Some(tls) => builder.tls(tls),
                    None => builder,
                };
                let builder = match spec.max_inbound {
                    Some(max) => builder.max_inbound_connections(max),
                    None => builder,
                };
                let started = builder.start();
                drop(answer.send(started));
            });
        Box::pin(async move {
            spawned?;
            match answered.await.map_err(|_| io::Error::other("the start thread panicked"))? {
                Ok(handle) => Ok(Arc::new(TestNode::new(handle.into()))),
                Err(StartError::Bind(error)) => Err(error),
                Err(error) => Err(io::Error::other(error.to_string())),
            }
        })
    }
}
