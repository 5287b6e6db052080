//! herdcache-async-std nodes: each runs on its own thread and executor, whatever executor the
//! test drives it from.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use herdcache_async_std::{DataSource, Handle, Node, StartError};
use herdcache_proto::{Error, KeyspaceConfig, KeyspaceStats, Value};

use crate::harness::{BoxFuture, CLUSTER, KEYSPACE, KEYSPACE_BYTES, NodeSpec, Runtime, TestNode};
use crate::source::Source;

/// The async-std/smol runtime crate.
#[derive(Debug, Clone, Copy)]
pub struct AsyncStd;

/// The [`AsyncStd`] runtime, as a cluster spec names it.
pub static ASYNC_STD: AsyncStd = AsyncStd;

/// [`Source`] as a herdcache-async-std data source, sleeping on an async-io timer.
struct AsyncIoSource(Arc<Source>);

impl DataSource for AsyncIoSource {
    type Error = Infallible;

    async fn fetch(&self, key: Bytes) -> Result<Bytes, Infallible> {
        let delay = self.0.begin_load(&key);
        if !delay.is_zero() {
            async_io::Timer::after(delay).await;
        }
        Ok(self.0.finish_load(&key))
    }
}

impl Runtime for AsyncStd {
    fn name(&self) -> &'static str {
        "async-std"
    }

    // The node starts its own thread; its start future needs no particular executor.
    fn start(&self, spec: NodeSpec) -> BoxFuture<io::Result<Arc<dyn TestNode>>> {
        let builder = Node::builder()
            .cluster(CLUSTER)
            .listen(spec.listen)
            .peers(spec.peers)
            .keyspace(KeyspaceConfig::new(KEYSPACE, KEYSPACE_BYTES), AsyncIoSource(spec.source))
            .config(spec.tune)
            .send_buffer(spec.send_buffer);
        Box::pin(async move {
            match builder.start().await {
                Ok(handle) => Ok(Arc::new(AsyncStdNode(handle)) as Arc<dyn TestNode>),
                Err(StartError::Bind(error)) => Err(error),
                Err(error) => Err(io::Error::other(error.to_string())),
            }
        })
    }
}

/// A herdcache-async-std [`Handle`]; its futures complete on any executor.
struct AsyncStdNode(Handle);

impl TestNode for AsyncStdNode {
    fn id(&self) -> String {
        self.0.node_id().to_owned()
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    fn get(&self, key: &str) -> BoxFuture<Result<Value, Error>> {
        let (handle, key) = (self.0.clone(), key.to_owned());
        Box::pin(async move { handle.get_value(KEYSPACE, key).await })
    }

    fn put(&self, key: &str, value: Bytes) -> BoxFuture<Result<(), Error>> {
        let (handle, key) = (self.0.clone(), key.to_owned());
        Box::pin(async move { handle.put(KEYSPACE, key, value).await })
    }

    fn delete(&self, key: &str) -> BoxFuture<Result<(), Error>> {
        let (handle, key) = (self.0.clone(), key.to_owned());
        Box::pin(async move { handle.delete(KEYSPACE, key).await })
    }

    fn set_peers(&self, peers: &[String]) {
        self.0.set_peers(peers.iter().cloned());
    }

    fn stats(&self) -> Option<KeyspaceStats> {
        self.0.keyspace_stats(KEYSPACE)
    }

    fn stop(&self) -> BoxFuture<()> {
        Box::pin(self.0.clone().stop())
    }

    fn kill(&self) {
        self.0.kill();
    }
}
