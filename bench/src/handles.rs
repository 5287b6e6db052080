//! Real nodes of the async runtime crates, for the hit path through each runtime's
//! `KeyspaceHandle::get`: each get's future is polled once with a no-op waker ([`ready_or`]);
//! a hit is ready on its first poll. Their drivers sit idle while hits are measured.

use bytes::Bytes;
use futures_lite::future::block_on;
use herdcache_proto::{Entry, KeyspaceConfig};
use herdcache_runtime::{DataSource, Handle, KeyspaceHandle, Start, Starting};

use crate::{FILL_BATCH, KEYSPACE, VALUE, fresh, ready_or};

/// A running node (a ring of one) and the handle on its bench keyspace, warmed with every key.
pub(crate) struct RuntimeNode {
    pub(crate) ks: KeyspaceHandle,
    handle: Handle,
    /// The tokio runtime a tokio node's driver runs on.
    _tokio: Option<tokio::runtime::Runtime>,
}

/// The source behind the bench keyspace: never called on the hit run (every key is put).
fn source() -> impl DataSource {
    herdcache_runtime::source_fn(|_key: Bytes| async { Ok::<_, String>(fresh(&VALUE)) })
}

fn builder<R: Start<Started = Starting>>(max_bytes: u64) -> herdcache_runtime::Builder<R> {
    herdcache_runtime::Builder::new()
        .cluster("bench")
        .keyspace(KeyspaceConfig::new(KEYSPACE, max_bytes), source())
}

impl RuntimeNode {
    /// A herdcache-async-std node.
    pub(crate) fn async_std(max_bytes: u64, keys: &[Bytes]) -> RuntimeNode {
        let start = builder::<herdcache_async_std::AsyncStd>(max_bytes).start();
        let handle = block_on(start).expect("an async-std node starts");
        RuntimeNode::warmed(handle, keys, None)
    }

    /// A herdcache-tokio node, its driver on a one-worker tokio runtime.
    pub(crate) fn tokio(max_bytes: u64, keys: &[Bytes]) -> RuntimeNode {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let handle = tokio
            .block_on(builder::<herdcache_tokio::Tokio>(max_bytes).start())
            .expect("a tokio node starts");
        RuntimeNode::warmed(handle, keys, Some(tokio))
    }

    fn warmed(handle: Handle, keys: &[Bytes], tokio: Option<tokio::runtime::Runtime>) -> Self {
        for batch in keys.chunks(FILL_BATCH) {
            let entries = batch.iter().map(|key| Entry {
                key: fresh(key),
                value: fresh(&VALUE),
                expires_at: None,
            });
            let stored = block_on(handle.put_many(KEYSPACE, entries));
            assert!(stored.iter().all(Result::is_ok), "warm-up puts stored");
        }
        let ks = handle.keyspace(KEYSPACE).expect("the bench keyspace");
        RuntimeNode { ks, handle, _tokio: tokio }
    }

    /// A get through the handle: the value's length (0 for an error). A miss (none in the
    /// hit run) is waited for on this thread: the handle's futures complete on any executor.
    pub(crate) fn get(&self, key: &[u8]) -> usize {
        ready_or(self.ks.get(key), |pending| block_on(pending)).map_or(0, |value| value.len())
    }
}

impl Drop for RuntimeNode {
    fn drop(&mut self) {
        self.handle.kill();
    }
}
