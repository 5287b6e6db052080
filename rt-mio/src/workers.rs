//! The bounded pool of worker threads that runs everything that may block: data-source
//! fetches and name lookups of peers whose node id is not an IP address.
//!
//! Contract: at most `max` threads, started on demand (a node that never loads has none);
//! tasks queue in submission order while every worker is busy — the queue holds no more than
//! the core allows to be in progress (its limits on pending requests and peer requests bound
//! the loads it asks for). A finished task's result is queued for the event loop, which is
//! woken. A panic in a task fails that task (a load answers "data source panicked"); the
//! worker goes on. After [`Workers::close`] the queue is dropped and each worker exits once
//! its current task returns (a task that never returns keeps its thread: no one waits for it).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use bytes::Bytes;
use herdcache_proto::{LoadId, LoadResult};

use herdcache_runtime::SharedSource;

/// Stack reserved for a worker thread unless [`Mio::worker_stack_size`] says: Rust's own
/// default for spawned threads, so that a source that runs on an ordinary thread runs here
/// too (a stack overflow aborts the process and cannot be caught). It is reserved address
/// space; only the pages a call touches take memory.
///
/// [`Mio::worker_stack_size`]: crate::Mio::worker_stack_size
pub const DEFAULT_WORKER_STACK: usize = 2 << 20;

/// Work for a worker.
pub(crate) enum Task {
    /// Call a data source.
    Load { load: LoadId, source: SharedSource, key: Bytes },
    /// Look up `address` (`host:port` with a host name) to dial `peer`.
    Resolve { peer: Bytes, address: Bytes },
}

/// A finished task (or what the event loop answers itself when no task could run).
pub(crate) enum Done {
    Loaded {
        load: LoadId,
        result: LoadResult,
    },
    Resolved {
        peer: Bytes,
        address: Option<SocketAddr>,
    },
    /// The event loop's own: a connect that failed at once.
    ConnectFailed {
        peer: Bytes,
    },
}

/// How workers tell the event loop that results are waiting.
pub(crate) type Notify = Arc<dyn Fn() + Send + Sync>;

struct State {
    tasks: VecDeque<Task>,
    /// Workers started so far.
    started: usize,
    /// Workers waiting for a task.
    idle: usize,
    closed: bool,
}

struct Pool {
    state: Mutex<State>,
    task_ready: Condvar,
    done: Mutex<Vec<Done>>,
    notify: Notify,
    max: usize,
    stack_size: usize,
    name: String,
}

/// The pool's handle, owned by the event loop. Dropping it closes the pool.
pub(crate) struct Workers {
    pool: Arc<Pool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Workers {
    /// A pool of at most `max` (at least one) threads named `name` with `stack_size` bytes of
    /// stack each, calling `notify` when a result is queued.
    pub(crate) fn new(max: usize, stack_size: usize, name: String, notify: Notify) -> Workers {
        let state = State { tasks: VecDeque::new(), started: 0, idle: 0, closed: false };
        let pool = Pool {
            state: Mutex::new(state),
            task_ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
            notify,
            max: max.max(1),
            stack_size,
            name,
        };
        Workers { pool: Arc::new(pool) }
    }

    /// Queues `task`, starting a worker when the queued tasks (this one included) outnumber
    /// the idle workers and the pool has room. Idle counts a worker already woken for a task
    /// that has not taken it yet, so "no idle worker" alone would leave a burst to one thread.
    ///
    /// # Errors
    /// When no worker runs and none can be started (the OS refused a thread); the task is not
    /// queued then.
    pub(crate) fn submit(&self, task: Task) -> io::Result<()> {
        let mut state = lock(&self.pool.state);
        if state.tasks.len() >= state.idle && state.started < self.pool.max {
            let pool = Arc::clone(&self.pool);
            let spawned = thread::Builder::new()
                .name(self.pool.name.clone())
                .stack_size(self.pool.stack_size)
                .spawn(move || pool.work());
            match spawned {
                Ok(_detached) => state.started += 1,
                Err(error) if state.started == 0 => return Err(error),
                Err(error) => tracing::warn!(%error, "cannot start another worker"),
            }
        }
        state.tasks.push_back(task);
        drop(state);
        self.pool.task_ready.notify_one();
        Ok(())
    }

    /// Moves every finished task's result to `out`.
    pub(crate) fn take_done(&self, out: &mut Vec<Done>) {
        out.append(&mut lock(&self.pool.done));
    }

    /// Drops the queued tasks and lets every worker exit after its current task.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.pool.state);
        state.closed = true;
        state.tasks.clear();
        drop(state);
        self.pool.task_ready.notify_all();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.close();
    }
}

impl Pool {
    /// A worker's life: take a task, run it, queue its result, until the pool closes.
    fn work(&self) {
        loop {
            let mut state = lock(&self.state);
            let task = loop {
                if state.closed {
                    return;
                }
                if let Some(task) = state.tasks.pop_front() {
                    break task;
                }
                state.idle += 1;
                state = self.task_ready.wait(state).unwrap_or_else(PoisonError::into_inner);
                state.idle -= 1;
            };
            drop(state);
            let done = run(task);
            lock(&self.done).push(done);
            (self.notify)();
        }
    }
}

fn run(task: Task) -> Done {
    match task {
        // A panic of the source fails its load (`load_blocking` catches it).
        Task::Load { load, source, key } => {
            Done::Loaded { load, result: source.load_blocking(key) }
        }
        Task::Resolve { peer, address } => {
            let address = std::str::from_utf8(&address)
                .ok()
                .and_then(|name| name.to_socket_addrs().ok())
                .and_then(|mut addresses| addresses.next());
            Done::Resolved { peer, address }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use herdcache_runtime::blocking::source_fn;
    use herdcache_runtime::{PANICKED, erase};

    fn panicked() -> LoadResult {
        LoadResult::Failed(Bytes::from_static(PANICKED))
    }

    fn wait_for(workers: &Workers, count: usize) -> Vec<Done> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done = Vec::new();
        while done.len() < count {
            assert!(Instant::now() < deadline, "only {} of {count} tasks done", done.len());
            workers.take_done(&mut done);
            thread::sleep(Duration::from_millis(1));
        }
        done
    }

    #[test]
    fn a_panicking_source_fails_its_load_and_the_worker_goes_on() {
        let notified = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&notified);
        let workers = Workers::new(
            1,
            DEFAULT_WORKER_STACK,
            "test-worker".into(),
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let source = erase(source_fn(|key: Bytes| {
            assert!(key.as_ref() != b"boom", "the source panics on boom");
            Ok::<_, String>(key)
        }));
        for (id, key) in [(1, "boom"), (2, "fine")] {
            let task =
                Task::Load { load: LoadId(id), source: Arc::clone(&source), key: key.into() };
            workers.submit(task).expect("a worker");
        }
        let done = wait_for(&workers, 2);
        let results: Vec<(u64, LoadResult)> = done
            .into_iter()
            .map(|done| match done {
                Done::Loaded { load, result } => (load.0, result),
                Done::Resolved { .. } | Done::ConnectFailed { .. } => {
                    panic!("no lookup was asked for")
                }
            })
            .collect();
        assert_eq!(results[0], (1, panicked()));
        assert_eq!(results[1], (2, LoadResult::Value { bytes: "fine".into(), expires_at: None }));
        assert_eq!(notified.load(Ordering::SeqCst), 2, "the loop is woken per result");
        assert_eq!(lock(&workers.pool.state).started, 1, "one worker served both");
    }

    #[test]
    fn the_pool_never_grows_past_its_bound() {
        let workers = Workers::new(2, DEFAULT_WORKER_STACK, "test-worker".into(), Arc::new(|| {}));
        let source = erase(source_fn(|key: Bytes| {
            thread::sleep(Duration::from_millis(20));
            Ok::<_, String>(key)
        }));
        for id in 0..6 {
            let task =
                Task::Load { load: LoadId(id), source: Arc::clone(&source), key: "k".into() };
            workers.submit(task).expect("a worker");
        }
        assert_eq!(wait_for(&workers, 6).len(), 6);
        assert_eq!(lock(&workers.pool.state).started, 2);
    }

    /// Four loads that each wait for all four to have started: they all finish only when
    /// they run at once (a pool that grew only when no worker was idle ran them one after
    /// another, and each gave up waiting).
    #[test]
    fn a_burst_gets_a_worker_per_task_up_to_the_bound() {
        let arrived = Arc::new((Mutex::new(0_usize), Condvar::new()));
        let source = erase(source_fn(move |key: Bytes| {
            let (count, all_there) = &*arrived;
            let mut count = lock(count);
            *count += 1;
            all_there.notify_all();
            let (count, waited) = all_there
                .wait_timeout_while(count, Duration::from_secs(30), |count| *count < 4)
                .unwrap_or_else(PoisonError::into_inner);
            if waited.timed_out() {
                Err(format!("ran with {} others", *count - 1))
            } else {
                Ok(key)
            }
        }));
        let workers = Workers::new(4, DEFAULT_WORKER_STACK, "test-worker".into(), Arc::new(|| {}));
        for id in 0..4 {
            let task =
                Task::Load { load: LoadId(id), source: Arc::clone(&source), key: "k".into() };
            workers.submit(task).expect("a worker");
        }
        for done in wait_for(&workers, 4) {
            let Done::Loaded { result, .. } = done else { panic!("only loads were asked for") };
            assert_eq!(result, LoadResult::Value { bytes: "k".into(), expires_at: None });
        }
        assert_eq!(lock(&workers.pool.state).started, 4);
    }

    #[test]
    fn a_source_with_a_deep_call_chain_fits_the_default_stack() {
        /// Uses about `depth` × 16 KiB of stack.
        fn deep(depth: u32) -> u8 {
            let frame = std::hint::black_box([depth as u8; 16 << 10]);
            if depth == 0 { frame[0] } else { deep(depth - 1).wrapping_add(frame[100]) }
        }
        let workers = Workers::new(1, DEFAULT_WORKER_STACK, "test-worker".into(), Arc::new(|| {}));
        // About 640 KiB of frames (more unoptimized): past the old 512 KiB worker stack.
        let source = erase(source_fn(|_key: Bytes| Ok::<_, String>(Bytes::from(vec![deep(40)]))));
        let task = Task::Load { load: LoadId(1), source, key: "k".into() };
        workers.submit(task).expect("a worker");
        assert_eq!(wait_for(&workers, 1).len(), 1);
    }

    #[test]
    fn host_names_are_resolved_and_nonsense_is_not() {
        let workers = Workers::new(1, DEFAULT_WORKER_STACK, "test-worker".into(), Arc::new(|| {}));
        workers
            .submit(Task::Resolve { peer: "a".into(), address: "localhost:7000".into() })
            .expect("a worker");
        workers
            .submit(Task::Resolve { peer: "b".into(), address: "not an address".into() })
            .expect("a worker");
        let done = wait_for(&workers, 2);
        let addresses: Vec<Option<u16>> = done
            .into_iter()
            .map(|done| match done {
                Done::Resolved { address, .. } => address.map(|a| a.port()),
                Done::Loaded { .. } | Done::ConnectFailed { .. } => {
                    panic!("no load was asked for")
                }
            })
            .collect();
        assert_eq!(addresses, vec![Some(7000), None]);
    }
}
