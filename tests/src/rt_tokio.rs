//! herdcache-tokio nodes, each on a tokio runtime of its own.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use herdcache_proto::KeyspaceConfig;
use herdcache_tokio::{DataSource, Node, StartError};

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

    fn start(&self, spec: NodeSpec) -> BoxFuture<io::Result<Arc<TestNode>>> {
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
            Ok(Arc::new(TestNode::on_tokio(handle, runtime)))
        })
    }
}
