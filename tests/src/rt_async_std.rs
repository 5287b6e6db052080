//! herdcache-async-std nodes: each runs on its own thread and executor, whatever executor the
//! test drives it from.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use herdcache_async_std::{DataSource, Node, StartError};
use herdcache_proto::KeyspaceConfig;

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
    fn start(&self, spec: NodeSpec) -> BoxFuture<io::Result<Arc<TestNode>>> {
        let builder = Node::builder()
            .cluster(CLUSTER)
            .listen(spec.listen)
            .peers(spec.peers)
            .keyspace(KeyspaceConfig::new(KEYSPACE, KEYSPACE_BYTES), AsyncIoSource(spec.source))
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
        Box::pin(async move {
            match builder.start().await {
                Ok(handle) => Ok(Arc::new(TestNode::new(handle))),
                Err(StartError::Bind(error)) => Err(error),
                Err(error) => Err(io::Error::other(error.to_string())),
            }
        })
    }
}
