//! A node and its callers inside an async-std program and inside a smol program: callers are
//! tasks spawned on the program's executor (on its threads), the data source sleeps on that
//! executor's timer, and the last handle is dropped from a task. One body, run under each.
//!
//! The whole API, on clusters, under both executors: `herdcache-tests`' `api` tests
//! (`tests/tests/async_std.rs`).

use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herdcache_async_std::{Bytes, Error, Handle, KeyspaceConfig, Node, Path, source_fn};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A caller's task: a get's answer.
type Caller = BoxFuture<Result<Bytes, Error>>;

/// What the body needs of an executor: spawn a task and get its output back, sleep.
struct Executor {
    spawn: fn(Caller) -> Caller,
    sleep: fn(Duration) -> BoxFuture<()>,
}

async fn start(executor: &Executor, loads: &Arc<AtomicUsize>) -> Handle {
    let (loads, sleep) = (Arc::clone(loads), executor.sleep);
    let source = source_fn(move |key: Bytes| {
        let loads = Arc::clone(&loads);
        async move {
            loads.fetch_add(1, Ordering::SeqCst);
            // The program's own timer, inside the node's data source.
            sleep(Duration::from_millis(20)).await;
            Ok::<_, String>(key)
        }
    });
    Node::builder()
        .keyspace(KeyspaceConfig::new("ks", 1 << 20), source)
        .start()
        .await
        .expect("starts")
}

async fn node_serves_the_programs_tasks(executor: Executor) {
    let loads = Arc::new(AtomicUsize::new(0));
    let (a, b) = (start(&executor, &loads).await, start(&executor, &loads).await);
    let ids = [a.node_id().to_owned(), b.node_id().to_owned()];
    a.set_peers(ids.clone());
    b.set_peers(ids);

    // 100 callers on the program's executor, half on each node: one load in the cluster.
    let callers: Vec<_> = (0..100)
        .map(|i| {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            (executor.spawn)(Box::pin(async move { node.get("ks", "shared").await }))
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await, Ok(Bytes::from_static(b"shared")));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for 100 callers on two nodes");
    let hit = a.get_value("ks", "shared").await.expect("cached");
    assert!(matches!(hit.path, Path::LocalHit | Path::HotHit), "{:?}", hit.path);

    // A graceful stop from a task of the program; the other node then loads alone.
    let stopping = a.clone();
    (executor.spawn)(Box::pin(async move {
        stopping.stop().await;
        Ok(Bytes::new())
    }))
    .await
    .expect("stopped");
    assert_eq!(a.get("ks", "x").await, Err(Error::ShuttingDown));
    assert_eq!(b.get("ks", "after").await, Ok(Bytes::from_static(b"after")));

    // The last handle dropped inside a task kills the node: its port closes.
    let addr = b.local_addr();
    (executor.spawn)(Box::pin(async move {
        drop(b);
        Ok(Bytes::new())
    }))
    .await
    .expect("dropped");
    // Rebinding the port succeeds once the node's listener is closed (the kill closes it on
    // the node's own task, so it may take a moment: retry while the port is still in use).
    let deadline = Instant::now() + Duration::from_secs(20);
    let rebound = loop {
        match async_net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(error) if error.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                (executor.sleep)(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("the listener of a dropped node is closed: {error}"),
        }
    };
    assert_eq!(rebound.local_addr().expect("bound"), addr);
}

#[test]
fn under_async_std() {
    let executor = Executor {
        spawn: |task| Box::pin(async_std::task::spawn(task)),
        sleep: |duration| Box::pin(async_std::task::sleep(duration)),
    };
    async_std::task::block_on(node_serves_the_programs_tasks(executor));
}

#[test]
fn under_smol() {
    let executor = Executor {
        spawn: |task| Box::pin(smol::spawn(task)),
        sleep: |duration| {
            Box::pin(async move {
                smol::Timer::after(duration).await;
            })
        },
    };
    smol::block_on(node_serves_the_programs_tasks(executor));
}
