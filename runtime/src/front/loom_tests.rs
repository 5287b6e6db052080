//! loom models of the front: every interleaving of two or three threads (preemption-bounded).
//! Run with `RUSTFLAGS="--cfg herdcache_loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! herdcache-runtime --release --lib front::loom_tests` (see `.ci/run`).
//!
//! The driver in these models waits on a condition variable that only the front's
//! [`WakeDriver`] signals, so a wake-up the front forgets is a deadlock loom reports.

use alloc::sync::Arc as StdArc;
use alloc::vec::Vec;
use bytes::Bytes;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::*;
use herdcache_proto::{CacheConfig, Store, Tier};
use herdcache_proto::{LoadResult, NodeConfig};

/// The driver's doorbell: set by the front's wake-up, waited on by the driver.
struct Doorbell {
    rung: Mutex<(bool, bool)>,
    condvar: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        self.rung.lock().expect("unpoisoned").0 = true;
        self.condvar.notify_one();
    }

    fn stop(&self) {
        self.rung.lock().expect("unpoisoned").1 = true;
        self.condvar.notify_one();
    }

    /// Waits for a ring (consumed) or the stop; returns false on stop.
    fn wait(&self) -> bool {
        let mut state = self.rung.lock().expect("unpoisoned");
        loop {
            if state.0 {
                state.0 = false;
                return true;
            }
            if state.1 {
                return false;
            }
            state = self.condvar.wait(state).expect("unpoisoned");
        }
    }
}

fn front(doorbell: &Arc<Doorbell>) -> Front {
    let bell = doorbell.clone();
    let config = NodeConfig::new("n1", "loom").with_keyspace(KeyspaceConfig::new("ks", 1 << 20));
    Front::with_clock(
        config,
        StdArc::new(move || bell.ring()),
        StdArc::new(|| Instant::from_secs(1)),
    )
    .expect("valid config")
}

/// Drains the front's outputs and executes them until stopped; loads answer with `source()`
/// and are counted.
fn drive(
    front: &Front,
    doorbell: &Doorbell,
    loads: &AtomicUsize,
    source: impl Fn() -> &'static [u8],
) {
    loop {
        while let Some(output) = front.poll_output() {
            if let Output::Load { load, .. } = output {
                loads.fetch_add(1, Ordering::SeqCst);
                let result =
                    LoadResult::Value { bytes: Bytes::from_static(source()), expires_at: None };
                front.handle_input(Input::Loaded { load, result }).expect("load in progress");
            }
        }
        if !doorbell.wait() {
            // One last drain: a wake-up may have raced the stop.
            let left = front.poll_output();
            assert!(left.is_none(), "outputs left undone: {left:?}");
            return;
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn a_hit_racing_an_insert_of_the_same_key_sees_the_old_or_the_new_value() {
    model(|| {
        let mut writer = StoreWriter::new(CacheConfig::with_max_bytes(1 << 20));
        let now = Instant::from_secs(1);
        writer
            .insert(now, Tier::Main, Bytes::from_static(b"k"), Bytes::from_static(b"old"), None)
            .expect("fits");
        let shared = writer.shared();
        let reader = thread::spawn(move || {
            shared.read(b"k", || now, |_, value, _| value.clone()).expect("present throughout")
        });
        writer
            .insert(now, Tier::Main, Bytes::from_static(b"k"), Bytes::from_static(b"new"), None)
            .expect("fits");
        let seen = reader.join().expect("no panic");
        assert!(seen == "old" || seen == "new", "torn read: {seen:?}");
        assert_eq!(writer.get(now, b"k").expect("present").value, "new");
    });
}

#[test]
fn two_misses_of_one_key_make_one_load_and_both_are_answered() {
    model(|| {
        let doorbell =
            Arc::new(Doorbell { rung: Mutex::new((false, false)), condvar: Condvar::new() });
        let front = front(&doorbell);
        let loads = Arc::new(AtomicUsize::new(0));
        let driver = {
            let (front, doorbell, loads) = (front.clone(), doorbell.clone(), loads.clone());
            thread::spawn(move || drive(&front, &doorbell, &loads, || b"v"))
        };
        let other = {
            let front = front.clone();
            thread::spawn(move || loom::future::block_on(front.get(b"ks", b"k")))
        };
        let mine = loom::future::block_on(front.get(b"ks", b"k"));
        let theirs = other.join().expect("no panic");
        doorbell.stop();
        driver.join().expect("no panic");
        assert_eq!(mine.expect("loaded").bytes, "v");
        assert_eq!(theirs.expect("loaded").bytes, "v");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_waiter_dropped_while_its_load_completes_leaves_the_value_cached() {
    model(|| {
        let doorbell =
            Arc::new(Doorbell { rung: Mutex::new((false, false)), condvar: Condvar::new() });
        let front = front(&doorbell);
        let loads = Arc::new(AtomicUsize::new(0));
        let pending = front.get(b"ks", b"k");
        let driver = {
            let (front, doorbell, loads) = (front.clone(), doorbell.clone(), loads.clone());
            thread::spawn(move || drive(&front, &doorbell, &loads, || b"v"))
        };
        drop(pending);
        // A second caller waits for the value; the dropped one must not have broken the flight.
        let value = loom::future::block_on(front.get(b"ks", b"k")).expect("loaded");
        doorbell.stop();
        driver.join().expect("no panic");
        assert_eq!(value.bytes, "v");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(front.get(b"ks", b"k").is_ready(), "cached");
    });
}

#[test]
fn a_delete_racing_a_load_keeps_the_stale_result_out_of_the_cache() {
    model(|| {
        let doorbell =
            Arc::new(Doorbell { rung: Mutex::new((false, false)), condvar: Condvar::new() });
        let front = front(&doorbell);
        let loads = Arc::new(AtomicUsize::new(0));
        // The data source: version 0 until the writer updates it, then version 1.
        let version = Arc::new(AtomicUsize::new(0));
        let driver = {
            let (front, doorbell, loads, version) =
                (front.clone(), doorbell.clone(), loads.clone(), version.clone());
            thread::spawn(move || {
                drive(&front, &doorbell, &loads, || {
                    if version.load(Ordering::SeqCst) == 0 { b"v0" } else { b"v1" }
                });
            })
        };
        let writer = {
            let (front, version) = (front.clone(), version.clone());
            thread::spawn(move || {
                version.store(1, Ordering::SeqCst);
                loom::future::block_on(front.delete(b"ks", Bytes::from_static(b"k")))
            })
        };
        let read = loom::future::block_on(front.get(b"ks", b"k"));
        writer.join().expect("no panic").expect("deleted");
        doorbell.stop();
        driver.join().expect("no panic");
        assert!(read.is_ok());
        // After the update and the delete, the cache may hold v1 or nothing, never v0.
        let ks = front.keyspace(b"ks").expect("exists");
        let cached = ks.peek_with(b"k", <[u8]>::to_vec);
        assert_ne!(cached.as_deref(), Some(&b"v0"[..]), "stale value cached after the delete");
    });
}
