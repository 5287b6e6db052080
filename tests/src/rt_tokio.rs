//! herdcache-tokio nodes, each on a tokio runtime of its own.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use herdcache_proto::{Error, KeyspaceConfig, KeyspaceStats, Value};
use herdcache_tokio::{DataSource, Handle, Node, StartError};

use crate::harness::{BoxFuture, CLUSTER, KEYSPACE, KEYSPACE_BYTES, NodeSpec, Runtime, TestNode};
use crate::source::Source;

/// The tokio runtime crate: every node gets a one-worker multi-thread tokio runtime of its
/// own, so that the nodes do not share the test driver's executor.
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

/// The [`Tokio`] runtime, as a cluster spec names it.
pub static TOKIO: Tokio = Tokio;

/// [`Source`] as a herdcache-tokio data source, sleeping on the node's tokio timer.
struct TokioSource(Arc<Source>);

impl DataSource for TokioSource {
    type Error = Infallible;

    async fn fetch(&self, key: Bytes) -> Result<Bytes, Infallible> {
        let delay = self.0.begin_load(&key);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(self.0.finish_load(&key))
    }
}

impl Runtime for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn start(&self, spec: NodeSpec) -> BoxFuture<io::Result<Arc<dyn TestNode>>> {
        Box::pin(async move {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("node-tokio")
                .enable_all()
                .build()?;
            let builder = Node::builder()
                .cluster(CLUSTER)
                .listen(spec.listen)
                .peers(spec.peers)
                .keyspace(KeyspaceConfig::new(KEYSPACE, KEYSPACE_BYTES), TokioSource(spec.source))
                .config(spec.tune)
                .send_buffer(spec.send_buffer);
            let started = runtime.spawn(builder.start()).await;
            let handle = match started {
                Ok(Ok(handle)) => handle,
                Ok(Err(StartError::Bind(error))) => {
                    runtime.shutdown_background();
                    return Err(error);
                }
                Ok(Err(error)) => {
                    runtime.shutdown_background();
                    return Err(io::Error::other(error.to_string()));
                }
                Err(join) => {
                    runtime.shutdown_background();
                    return Err(io::Error::other(format!("start task: {join}")));
                }
            };
            let node: Arc<dyn TestNode> =
                Arc::new(TokioNode { handle, runtime: Mutex::new(Some(runtime)) });
            Ok(node)
        })
    }
}

/// A herdcache-tokio [`Handle`] and the runtime its tasks run on.
struct TokioNode {
    handle: Handle,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl TokioNode {
    fn runtime(&self) -> tokio::runtime::Handle {
        let runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        runtime
            .as_ref()
            .expect("the node's runtime runs until the node is dropped")
            .handle()
            .clone()
    }
}

impl Drop for TokioNode {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a test driver's task must not; let it go instead.
        if let Some(runtime) = self.runtime.lock().unwrap_or_else(PoisonError::into_inner).take() {
            runtime.shutdown_background();
        }
    }
}

impl TestNode for TokioNode {
    fn id(&self) -> String {
        self.handle.node_id().to_owned()
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    // The cache calls run on the caller's executor: herdcache-tokio's futures need no tokio
    // context (the front wakes the caller's waker).
    fn get(&self, key: &str) -> BoxFuture<Result<Value, Error>> {
        let handle = self.handle.clone();
        let key = key.to_owned();
        Box::pin(async move { handle.get_value(KEYSPACE, key).await })
    }

    fn put(&self, key: &str, value: Bytes) -> BoxFuture<Result<(), Error>> {
        let handle = self.handle.clone();
        let key = key.to_owned();
        Box::pin(async move { handle.put(KEYSPACE, key, value).await })
    }

    fn delete(&self, key: &str) -> BoxFuture<Result<(), Error>> {
        let handle = self.handle.clone();
        let key = key.to_owned();
        Box::pin(async move { handle.delete(KEYSPACE, key).await })
    }

    fn set_peers(&self, peers: &[String]) {
        self.handle.set_peers(peers.iter().cloned());
    }

    fn stats(&self) -> Option<KeyspaceStats> {
        self.handle.keyspace_stats(KEYSPACE)
    }

    fn stop(&self) -> BoxFuture<()> {
        // `Handle::stop` waits on tokio timers: run it on the node's runtime.
        let stopping = self.runtime().spawn(self.handle.clone().stop());
        Box::pin(async move {
            let _ = stopping.await;
        })
    }

    fn kill(&self) {
        self.handle.kill();
    }
}
