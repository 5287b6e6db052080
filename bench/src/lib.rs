//! Side-by-side benchmarks of herdcache's concurrent front, and of the runtime crates' handles
//! on it, against moka and quick_cache.
//!
//! One run measures every contender, interleaved, for several trials and reports the median
//! (docs/ARCHITECTURE.md, "Measuring": absolute figures swing 2–3× between runs on these
//! machines, so only the ratios within one run mean anything). See [`run`] and the `hits`
//! binary and bench.

use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herdcache_proto::{ENTRY_OVERHEAD, Input, KeyspaceConfig, LoadResult, NodeConfig, Output};
use herdcache_runtime::front::{Front, KeyspaceFront};

mod handles;

use handles::RuntimeNode;

/// The keyspace every herdcache contender uses.
pub(crate) const KEYSPACE: &[u8] = b"bench";
/// The size of every value.
pub const VALUE_LEN: usize = 100;
/// What every value holds.
pub(crate) const VALUE: [u8; VALUE_LEN] = [b'v'; VALUE_LEN];
/// The Zipf exponent of the hit stream.
pub const ZIPF_S: f64 = 1.0;
/// Length of the precomputed key-index stream (a power of two: walked with a mask).
const STREAM_LEN: usize = 1 << 20;
/// Operations between two looks at the stop flag.
const BATCH: u64 = 256;
/// The herdcache contenders of the hit run.
const HERD_HITS: [&str; 3] = [
    "herdcache `KeyspaceFront::get`",
    "herdcache `KeyspaceFront::peek_with`",
    "herdcache `Front::get`",
];
/// The hit path through each runtime crate's `KeyspaceHandle::get` (a real node, a ring of
/// one): async-std/smol, tokio.
const HANDLE_HITS: [&str; 2] =
    ["herdcache-async-std `KeyspaceHandle::get`", "herdcache-tokio `KeyspaceHandle::get`"];
/// The hit path through herdcache-mio's blocking handle (a real node: listener, event loop).
const MIO_HIT: &str = "herdcache-mio `KeyspaceHandle::get`";
/// Entries per `put_many` when filling a runtime node.
pub(crate) const FILL_BATCH: usize = 512;
/// The herdcache contenders of the miss run.
const HERD_MISSES: [&str; 2] =
    ["herdcache `get` + load, inline driver", "herdcache `get` + load, driver thread"];
/// herdcache's byte budget over the bytes the key set needs, on the hit run.
const HIT_BUDGET_FACTOR: u64 = 2;

/// What one run measures, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Distinct keys of the hit run (and the capacity, in entries, of moka and quick_cache).
    pub keys: usize,
    /// Seconds per contender per trial.
    pub secs: f64,
    /// Trials per contender (the median is reported).
    pub trials: usize,
    /// Thread counts to measure.
    pub threads: Vec<usize>,
    /// Run the miss-heavy comparison too.
    pub misses: bool,
    /// Only the contenders whose name contains one of these comma-separated parts (e.g. for a
    /// profiler).
    pub only: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keys: 100_000,
            secs: 1.0,
            trials: 5,
            threads: vec![1, 2],
            misses: true,
            only: None,
        }
    }
}

impl Options {
    /// Parses `--keys N --secs S --trials T --threads 1,2 --quick --no-miss`; ignores the
    /// `--bench` that `cargo bench` passes. `Err` carries the usage text.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        const USAGE: &str = "usage: hits [--keys N] [--secs S] [--trials T] [--threads 1,2] \
                             [--quick] [--no-miss] [--only NAME,…]";
        let mut opts = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
            let bad = |name: &str| format!("bad value for {name}\n{USAGE}");
            match arg.as_str() {
                "--keys" => opts.keys = value("--keys")?.parse().map_err(|_| bad("--keys"))?,
                "--secs" => opts.secs = value("--secs")?.parse().map_err(|_| bad("--secs"))?,
                "--trials" => {
                    opts.trials = value("--trials")?.parse().map_err(|_| bad("--trials"))?;
                }
                "--threads" => {
                    opts.threads = value("--threads")?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(|_| bad("--threads"))?;
                }
                "--quick" => {
                    opts.secs = 0.2;
                    opts.trials = 1;
                }
                "--no-miss" => opts.misses = false,
                "--only" => opts.only = Some(value("--only")?),
                "--bench" => {}
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if opts.keys == 0
            || opts.trials == 0
            || opts.secs.is_nan()
            || opts.secs <= 0.0
            || opts.threads.is_empty()
        {
            return Err(format!("keys, trials, secs and threads must be positive\n{USAGE}"));
        }
        if opts.threads.contains(&0) {
            return Err(format!("thread counts must be positive\n{USAGE}"));
        }
        Ok(opts)
    }
}

/// Runs every comparison `opts` asks for, printing progress to stderr, and returns the report
/// (markdown).
pub fn run(opts: &Options) -> String {
    let mut report = String::new();
    let keys: Vec<Bytes> =
        (0..opts.keys).map(|i| Bytes::from(herdcache_workload::key(i))).collect();
    let key_bytes: usize = keys.iter().map(Bytes::len).sum();
    let entry_bytes = key_bytes as u64 + opts.keys as u64 * (VALUE_LEN as u64 + ENTRY_OVERHEAD);

    let _ = writeln!(
        report,
        "herdcache-bench hits: {} keys, {VALUE_LEN}-byte values, Zipf s = {ZIPF_S}, {} trial(s) \
         × {} s per contender, interleaved (order rotated each trial); median ops/s (min–max over trials); ratios are \
         medians of the per-trial ratios. Load average before: {}.",
        opts.keys,
        opts.trials,
        opts.secs,
        load_average()
    );
    let _ = writeln!(
        report,
        "Capacity, hit run: big enough for every key in all three, {HIT_BUDGET_FACTOR}× the key set \
         (moka `max_capacity({n2})` and quick_cache `Cache::new({n2})` count entries; herdcache \
         `max_bytes` = {HIT_BUDGET_FACTOR} × Σ(key + value + ENTRY_OVERHEAD {ENTRY_OVERHEAD}) = {} \
         bytes). Miss run: 1× (moka and quick_cache {n} entries, herdcache {entry_bytes} bytes), \
         filled before timing, so every insert evicts. Default hashers (moka SipHash, quick_cache \
         ahash, herdcache foldhash).",
        entry_bytes * HIT_BUDGET_FACTOR,
        n = opts.keys,
        n2 = opts.keys as u64 * HIT_BUDGET_FACTOR,
    );

    // The hit run.
    let stream = herdcache_workload::zipf_stream(opts.keys, ZIPF_S, STREAM_LEN, 0x5eed_0001);
    let want = |name: &str| {
        opts.only.as_ref().is_none_or(|only| only.split(',').any(|part| name.contains(part)))
    };
    let herd = HERD_HITS
        .iter()
        .any(|name| want(name))
        .then(|| Herd::new(entry_bytes * HIT_BUDGET_FACTOR, true));
    let mio = want(MIO_HIT).then(|| MioNode::new(entry_bytes * HIT_BUDGET_FACTOR, &keys));
    let capacity = opts.keys * HIT_BUDGET_FACTOR as usize;
    let moka = moka::sync::Cache::<Bytes, Bytes>::builder().max_capacity(capacity as u64).build();
    let quick = quick_cache::sync::Cache::<Bytes, Bytes>::new(capacity);
    let hits = |name: &str, found: usize| {
        assert_eq!(found, keys.len(), "{name}: not every key is cached after warm-up");
    };
    eprintln!("warming {} keys…", opts.keys);
    let budget = entry_bytes * HIT_BUDGET_FACTOR;
    let async_std_node = want(HANDLE_HITS[0]).then(|| RuntimeNode::async_std(budget, &keys));
    let tokio_node = want(HANDLE_HITS[1]).then(|| RuntimeNode::tokio(budget, &keys));
    for node in async_std_node.iter().chain(&tokio_node) {
        hits(
            "herdcache handle",
            keys.iter().filter(|k| node.ks.peek_with(k, |_| ()).is_some()).count(),
        );
    }
    if let Some(herd) = &herd {
        herd.warm(&keys);
        hits("herdcache", keys.iter().filter(|k| herd.ks.get(k).try_take().is_some()).count());
    }
    for key in &keys {
        moka.insert(fresh(key), fresh(&VALUE));
        quick.insert(fresh(key), fresh(&VALUE));
    }
    moka.run_pending_tasks();
    // A get per key also gives each value its shared reference count before timing (a
    // `Bytes` made from a `Vec` allocates that on its first clone).
    hits("moka", keys.iter().filter(|k| moka.get(*k).is_some()).count());
    hits("quick_cache", keys.iter().filter(|k| quick.get(*k).is_some()).count());
    if let Some(mio) = &mio {
        hits(MIO_HIT, keys.iter().filter(|k| mio.ks.peek_with(k, <[u8]>::len).is_some()).count());
    }

    let mut hit_ops: Vec<Contender<'_>> = vec![
        (
            HERD_HITS[0],
            Box::new(|threads, secs| {
                let ks = &herd.as_ref().expect("built when selected").ks;
                measure_hits(threads, secs, &stream, &keys, |k| {
                    ks.get(k).try_take().map_or(0, |r| r.map_or(0, |v| v.bytes.len()))
                })
            }),
        ),
        (
            HERD_HITS[1],
            Box::new(|threads, secs| {
                let ks = &herd.as_ref().expect("built when selected").ks;
                measure_hits(threads, secs, &stream, &keys, |k| {
                    ks.peek_with(k, <[u8]>::len).unwrap_or(0)
                })
            }),
        ),
        (
            HERD_HITS[2],
            Box::new(|threads, secs| {
                let front = &herd.as_ref().expect("built when selected").front;
                measure_hits(threads, secs, &stream, &keys, |k| {
                    front.get(KEYSPACE, k).try_take().map_or(0, |r| r.map_or(0, |v| v.bytes.len()))
                })
            }),
        ),
        (
            HANDLE_HITS[0],
            Box::new(|threads, secs| {
                let node = async_std_node.as_ref().expect("started when selected");
                measure_hits(threads, secs, &stream, &keys, |k| node.get(k))
            }),
        ),
        (
            HANDLE_HITS[1],
            Box::new(|threads, secs| {
                let node = tokio_node.as_ref().expect("started when selected");
                measure_hits(threads, secs, &stream, &keys, |k| node.get(k))
            }),
        ),
        (
            MIO_HIT,
            Box::new(|threads, secs| {
                let ks = &mio.as_ref().expect("built when selected").ks;
                measure_hits(threads, secs, &stream, &keys, |k| ks.get(k).map_or(0, |v| v.len()))
            }),
        ),
        (
            "quick_cache `get`",
            Box::new(|threads, secs| {
                measure_hits(threads, secs, &stream, &keys, |k| quick.get(k).map_or(0, |v| v.len()))
            }),
        ),
        (
            "moka `get`",
            Box::new(|threads, secs| {
                measure_hits(threads, secs, &stream, &keys, |k| moka.get(k).map_or(0, |v| v.len()))
            }),
        ),
    ];
    hit_ops.retain(|(name, _)| want(name));
    let _ = writeln!(report, "\n### Hits (100 % after warm-up)\n");
    let results = compare(opts, &hit_ops);
    table(
        &mut report,
        opts,
        &hit_ops,
        &results,
        &[
            ("herdcache `KeyspaceFront::get`", "quick_cache"),
            ("herdcache `KeyspaceFront::get`", "moka"),
            ("herdcache `KeyspaceFront::peek_with`", "quick_cache"),
            ("herdcache `KeyspaceFront::peek_with`", "moka"),
            ("herdcache `Front::get`", "quick_cache"),
            (HANDLE_HITS[0], "herdcache `KeyspaceFront::get`"),
            (HANDLE_HITS[0], "quick_cache"),
            (HANDLE_HITS[1], "herdcache `KeyspaceFront::get`"),
            (HANDLE_HITS[1], "quick_cache"),
            (MIO_HIT, "quick_cache"),
            (MIO_HIT, "herdcache `KeyspaceFront::get`"),
        ],
    );
    drop(hit_ops);
    drop(herd);
    drop((async_std_node, tokio_node));
    drop(mio);

    if opts.misses {
        let herd_inline = want(HERD_MISSES[0]).then(|| Herd::new(entry_bytes, false));
        let herd_driven = want(HERD_MISSES[1]).then(|| Herd::new(entry_bytes, true));
        let moka =
            moka::sync::Cache::<Bytes, Bytes>::builder().max_capacity(opts.keys as u64).build();
        let quick = quick_cache::sync::Cache::<Bytes, Bytes>::new(opts.keys);
        eprintln!("filling the miss-run caches…");
        for herd in herd_inline.iter().chain(&herd_driven) {
            herd.warm(&keys);
        }
        for key in &keys {
            moka.insert(fresh(key), fresh(&VALUE));
            quick.insert(fresh(key), fresh(&VALUE));
        }
        moka.run_pending_tasks();
        let (moka, quick) = (&moka, &quick);
        let mut miss_ops: Vec<Contender<'_>> = vec![
            (
                HERD_MISSES[0],
                Box::new(|threads, secs| {
                    let h = herd_inline.as_ref().expect("built when selected");
                    measure_misses(threads, secs, |t| {
                        let mut key = MissKey::new(t);
                        move || {
                            let mut pending = h.ks.get(key.next());
                            match pending.try_take() {
                                Some(r) => r.map_or(0, |v| v.bytes.len()),
                                None => {
                                    h.serve();
                                    pending.wait().map_or(0, |v| v.bytes.len())
                                }
                            }
                        }
                    })
                }),
            ),
            (
                HERD_MISSES[1],
                Box::new(|threads, secs| {
                    let h = herd_driven.as_ref().expect("built when selected");
                    measure_misses(threads, secs, |t| {
                        let mut key = MissKey::new(t);
                        move || h.ks.get(key.next()).wait().map_or(0, |v| v.bytes.len())
                    })
                }),
            ),
            (
                "quick_cache `get_or_insert_with`",
                Box::new(|threads, secs| {
                    measure_misses(threads, secs, |t| {
                        let mut key = MissKey::new(t);
                        move || {
                            let key = Bytes::copy_from_slice(key.next());
                            quick
                                .get_or_insert_with(&key, || Ok::<_, ()>(fresh(&VALUE)))
                                .map_or(0, |v| v.len())
                        }
                    })
                }),
            ),
            (
                "moka `get_with`",
                Box::new(|threads, secs| {
                    measure_misses(threads, secs, |t| {
                        let mut key = MissKey::new(t);
                        move || {
                            let key = Bytes::copy_from_slice(key.next());
                            moka.get_with(key, || fresh(&VALUE)).len()
                        }
                    })
                }),
            ),
        ];
        let _ = writeln!(
            report,
            "\n### Misses (every get a fresh key; instant data source; caches full from the start)\n"
        );
        miss_ops.retain(|(name, _)| want(name));
        let results = compare(opts, &miss_ops);
        table(
            &mut report,
            opts,
            &miss_ops,
            &results,
            &[
                ("herdcache `get` + load, inline", "quick_cache"),
                ("herdcache `get` + load, inline", "moka"),
                ("herdcache `get` + load, driver", "quick_cache"),
            ],
        );
    }
    let _ = writeln!(report, "\nLoad average after: {}.", load_average());
    report
}

/// The machine's load averages (1, 5, 15 minutes), where the OS tells them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_string(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// One contender: a name and a measurement `(threads, secs) -> ops/s`.
type Contender<'a> = (&'a str, Box<dyn Fn(usize, f64) -> f64 + Sync + 'a>);

/// Runs every contender `opts.trials` times per thread count, interleaved (the order rotates
/// each trial); `[threads][contender]` → the ops/s of each trial.
fn compare(opts: &Options, contenders: &[Contender<'_>]) -> Vec<Vec<Vec<f64>>> {
    let mut results = vec![vec![Vec::new(); contenders.len()]; opts.threads.len()];
    for (ti, &threads) in opts.threads.iter().enumerate() {
        for trial in 0..opts.trials {
            for i in 0..contenders.len() {
                let c = (i + trial) % contenders.len();
                let (name, measure) = &contenders[c];
                let ops = measure(threads, opts.secs);
                eprintln!(
                    "  {threads} thread(s), trial {}/{}: {name}: {:.2} M ops/s",
                    trial + 1,
                    opts.trials,
                    ops / 1e6
                );
                results[ti][c].push(ops);
            }
        }
    }
    results
}

/// The median of `xs` (sorted in place).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

/// Ops/s in a compact unit.
fn fmt_ops(ops: f64) -> String {
    if ops >= 1e6 { format!("{:.2} M", ops / 1e6) } else { format!("{:.1} k", ops / 1e3) }
}

/// Appends a markdown table: one row per contender, one column per thread count, then the
/// ratios `(numerator, denominator)`, each the first contender whose name starts with it
/// (skipped when either is not there): the median over trials of the ratio within a trial, so
/// that a burst of load from elsewhere, which hits one trial, skews no ratio.
fn table(
    report: &mut String,
    opts: &Options,
    contenders: &[Contender<'_>],
    results: &[Vec<Vec<f64>>],
    ratios: &[(&str, &str)],
) {
    let _ = write!(report, "| ops/s |");
    for t in &opts.threads {
        let _ = write!(report, " {t} thread{} |", if *t == 1 { "" } else { "s" });
    }
    let _ = write!(report, "\n|---|");
    for _ in &opts.threads {
        let _ = write!(report, "---:|");
    }
    let _ = writeln!(report);
    for (c, (name, _)) in contenders.iter().enumerate() {
        let _ = write!(report, "| {name} |");
        for per_thread in results {
            let mut xs = per_thread[c].clone();
            let m = median(&mut xs);
            let (lo, hi) = (xs[0], xs[xs.len() - 1]);
            if xs.len() > 1 {
                let _ = write!(report, " {} ({}–{}) |", fmt_ops(m), fmt_ops(lo), fmt_ops(hi));
            } else {
                let _ = write!(report, " {} |", fmt_ops(m));
            }
        }
        let _ = writeln!(report);
    }
    for &(a, b) in ratios {
        let find = |prefix: &str| contenders.iter().position(|(name, _)| name.starts_with(prefix));
        let (Some(a), Some(b)) = (find(a), find(b)) else { continue };
        let _ = write!(report, "| ratio {} / {} |", contenders[a].0, contenders[b].0);
        for per_thread in results {
            let mut pairs: Vec<f64> =
                per_thread[a].iter().zip(&per_thread[b]).map(|(x, y)| x / y).collect();
            let _ = write!(report, " **{:.2}×** |", median(&mut pairs));
        }
        let _ = writeln!(report);
    }
}

/// Runs `threads` threads for `secs`, thread `t` calling the op `make(t)` builds until told to
/// stop; returns the total ops per second.
fn measure<M, W>(threads: usize, secs: f64, make: M) -> f64
where
    M: Fn(usize) -> W + Sync,
    W: FnMut() -> usize,
{
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier, make) = (&stop, &barrier, &make);
                s.spawn(move || {
                    let mut op = make(t);
                    let mut ops = 0u64;
                    let mut acc = 0usize;
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..BATCH {
                            acc = acc.wrapping_add(op());
                        }
                        ops += BATCH;
                    }
                    black_box(acc);
                    ops
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        let ops: u64 = workers.into_iter().map(|w| w.join().expect("a worker panicked")).sum();
        ops as f64 / start.elapsed().as_secs_f64()
    })
}

/// [`measure`] over the precomputed key stream: thread `t` starts at its own offset.
fn measure_hits<F>(threads: usize, secs: f64, stream: &[u32], keys: &[Bytes], op: F) -> f64
where
    F: Fn(&Bytes) -> usize + Sync,
{
    debug_assert!(stream.len().is_power_of_two());
    let mask = stream.len() - 1;
    measure(threads, secs, |t| {
        let mut i = t * stream.len() / threads;
        let op = &op;
        move || {
            let key = &keys[stream[i & mask] as usize];
            i = i.wrapping_add(1);
            op(key)
        }
    })
}

/// [`measure`] for the miss run (each op makes its own fresh key with [`MissKey`]).
fn measure_misses<M, W>(threads: usize, secs: f64, make: M) -> f64
where
    M: Fn(usize) -> W + Sync,
    W: FnMut() -> usize,
{
    measure(threads, secs, make)
}

/// Fresh keys, never seen before by any cache: `m:` + run epoch + thread + counter.
struct MissKey {
    buf: [u8; 18],
    n: u64,
}

impl MissKey {
    fn new(thread: usize) -> MissKey {
        static EPOCH: AtomicU32 = AtomicU32::new(0);
        let mut buf = [0u8; 18];
        buf[..2].copy_from_slice(b"m:");
        buf[2..6].copy_from_slice(&EPOCH.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        buf[6..10].copy_from_slice(&(thread as u32).to_be_bytes());
        MissKey { buf, n: 0 }
    }

    fn next(&mut self) -> &[u8] {
        self.n += 1;
        self.buf[10..].copy_from_slice(&self.n.to_be_bytes());
        &self.buf
    }
}

/// A single-node herdcache front with its in-process driver.
struct Herd {
    front: Front,
    ks: KeyspaceFront,
    stop: Arc<AtomicBool>,
    driver: Option<thread::JoinHandle<()>>,
}

impl Herd {
    /// A front with one keyspace of `max_bytes`. A driver thread serves loads (from an
    /// instant data source) and timeouts; if `wake` is false, the front's wake-ups do not
    /// reach it (it then only ticks every 10 ms) and callers serve their own loads inline.
    fn new(max_bytes: u64, wake: bool) -> Herd {
        let driver_thread: Arc<OnceLock<thread::Thread>> = Arc::new(OnceLock::new());
        let waker = {
            let driver_thread = Arc::clone(&driver_thread);
            Arc::new(move || {
                if wake {
                    if let Some(t) = driver_thread.get() {
                        t.unpark();
                    }
                }
            })
        };
        let config = NodeConfig::new("bench", "bench")
            .with_keyspace(KeyspaceConfig::new(Bytes::from_static(KEYSPACE), max_bytes));
        let front = Front::new(config, waker).expect("a valid front config");
        let ks = front.keyspace(KEYSPACE).expect("the keyspace exists");
        let stop = Arc::new(AtomicBool::new(false));
        let driver = {
            let (front, stop) = (front.clone(), Arc::clone(&stop));
            thread::Builder::new()
                .name("herd-driver".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        serve(&front);
                        front.handle_timeout();
                        thread::park_timeout(Duration::from_millis(10));
                    }
                })
                .expect("spawn the driver")
        };
        driver_thread.set(driver.thread().clone()).expect("set once");
        Herd { front, ks, stop, driver: Some(driver) }
    }

    /// Loads every key through the read-through path (get, load, loaded), inline.
    fn warm(&self, keys: &[Bytes]) {
        for key in keys {
            let mut pending = self.ks.get(key);
            if pending.try_take().is_none() {
                self.serve();
                pending.wait().expect("a warm-up load");
            }
        }
    }

    /// Serves the queued loads, on this thread.
    fn serve(&self) {
        serve(&self.front);
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(driver) = self.driver.take() {
            driver.thread().unpark();
            let _ = driver.join();
        }
    }
}

/// A one-member herdcache-mio node on loopback serving the bench keyspace, filled with
/// `put_many` (each value its own allocation, as [`fresh`] says).
struct MioNode {
    node: herdcache_mio::Handle,
    ks: herdcache_mio::KeyspaceHandle,
}

impl MioNode {
    fn new(max_bytes: u64, keys: &[Bytes]) -> MioNode {
        let source = herdcache_mio::source_fn(|_key: Bytes| Ok::<_, String>(fresh(&VALUE)));
        let node = herdcache_mio::Node::builder()
            .cluster("bench")
            .keyspace(KeyspaceConfig::new(Bytes::from_static(KEYSPACE), max_bytes), source)
            .start()
            .expect("a herdcache-mio node starts on loopback");
        for batch in keys.chunks(FILL_BATCH) {
            let entries = batch.iter().map(|key| herdcache_proto::Entry {
                key: fresh(key),
                value: fresh(&VALUE),
                expires_at: None,
            });
            for stored in node.put_many(KEYSPACE, entries) {
                stored.expect("a put on a one-member node");
            }
        }
        let ks = node.keyspace(KEYSPACE).expect("the keyspace exists");
        MioNode { node, ks }
    }
}

impl Drop for MioNode {
    fn drop(&mut self) {
        self.node.kill();
    }
}

/// Polls `future` once, on this thread, with a no-op waker: a hit is ready on its first poll,
/// so the hit path is measured without any executor around it. A future still pending (a
/// miss; none in the hit run) is handed to `finish`, which runs it to completion on its
/// runtime (the node's, e.g. `Runtime::block_on`). For the async runtimes' handles, whose
/// futures are executor-neutral.
pub(crate) fn ready_or<F: Future>(
    future: F,
    finish: impl FnOnce(std::pin::Pin<&mut F>) -> F::Output,
) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => finish(future),
    }
}

/// A new allocation holding `bytes`. Every cache stores keys and values of its own, as they
/// would be in a server: a stored key never shares memory with the caller's query key (which
/// would save a cache miss per lookup), and no two entries share a value (whose reference
/// count every hit bumps: one shared count would be one cache line all threads write).
pub(crate) fn fresh(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// Drains `front`'s outputs and answers every load at once with a fresh value (the instant data
/// source); everything else needs peers and is ignored.
fn serve(front: &Front) {
    while let Some(output) = front.poll_output() {
        if let Output::Load { load, .. } = output {
            let result = LoadResult::Value { bytes: fresh(&VALUE), expires_at: None };
            // An error here means the load was already answered or timed out: nothing to do.
            let _ = front.handle_input(Input::Loaded { load, result });
        }
    }
}
