//! `herdcache demo`: a cluster of herdcache nodes in this process, on loopback, in front of a
//! slow data source, under a Zipf load; then one node leaves while the load goes on.
//!
//! The nodes run on herdcache-tokio by default; `--runtimes` spreads them over every runtime
//! crate the build has (node `i` on the list's entry `i % len`), through the small interface
//! of [`runtimes`]. Clients of async runtimes are tokio tasks; clients of a blocking runtime
//! are OS threads of their own. Both tally the same way and one report merges them.

mod runtimes;

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use herdcache_tokio::{Bytes, Error, Path, Value};
use herdcache_workload::{Rng, Zipf, key};
use tokio::task::JoinSet;

use self::runtimes::{DemoNode, Runtime, RuntimeList, parse_runtimes};

use crate::histogram::Histogram;
use crate::source::{LoadCounts, LoadMap, SlowSource, looks_right};
use crate::table::{Table, micros, percent, thousands, wrap};

/// Prints a paragraph wrapped for a terminal (and still a markdown paragraph).
macro_rules! say {
    ($($arg:tt)*) => {
        print!("{}", wrap(&format!($($arg)*), 96))
    };
}

/// The keyspace every demo node serves.
const KEYSPACE: &str = "demo";

/// The flags of `herdcache demo`.
#[derive(Args, Debug, Clone)]
pub(crate) struct DemoArgs {
    /// Nodes in the cluster, each on its own loopback port, on the runtimes `--runtimes` names.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=32))]
    pub(crate) nodes: u32,

    /// The runtime of each node, comma-separated: node i runs on entry i % len (e.g.
    /// `tokio,async-std,mio`); `all` is every runtime this build has (tokio, async-std, mio).
    #[arg(long, value_name = "LIST", default_value = "tokio", value_parser = parse_runtimes)]
    pub(crate) runtimes: RuntimeList,

    /// Distinct keys the load draws from.
    #[arg(long, value_name = "K", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) keys: u32,

    /// Zipf exponent of the key popularity: 0 is uniform, 1 the classic web skew, higher is
    /// hotter.
    #[arg(long, value_name = "S", default_value_t = 1.0, value_parser = parse_skew)]
    pub(crate) skew: f64,

    /// Seconds of load on the whole cluster (phase 1).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_seconds)]
    pub(crate) duration: f64,

    /// Seconds of load after one node left (phase 2); 0 skips the phase.
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = parse_seconds_or_zero)]
    pub(crate) failover_duration: f64,

    /// Concurrent clients, spread evenly over the nodes: tokio tasks, or OS threads for the
    /// nodes of a runtime with a blocking API.
    #[arg(long, value_name = "C", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) concurrency: u32,

    /// Milliseconds the built-in data source sleeps per fetch (⅔ to 4⁄3 of it, by key).
    #[arg(long, value_name = "D", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub(crate) source_delay_ms: u64,
}

fn parse_skew(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=10.0).contains(&s) => Ok(s),
        Ok(_) => Err("the skew must be between 0 and 10".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

fn parse_seconds_or_zero(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=3600.0).contains(&secs) => Ok(secs),
        Ok(_) => Err("expected seconds between 0 and 3600".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match parse_seconds_or_zero(text)? {
        secs if secs > 0.0 => Ok(secs),
        _ => Err("expected more than 0 seconds".to_owned()),
    }
}

/// What went wrong in a way that ends the demo early.
#[derive(Debug)]
pub(crate) enum DemoError {
    /// A node on this runtime did not start.
    Start(Runtime, Box<dyn std::error::Error + Send + Sync>),
    /// A node has no demo keyspace (cannot happen: each is built with it).
    NoKeyspace,
    /// A get answered with bytes that are not the key's value.
    WrongValues(u64),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Start(runtime, error) => {
                write!(f, "a herdcache-{} node did not start: {error}", runtime.name())
            }
            DemoError::NoKeyspace => write!(f, "a node has no {KEYSPACE:?} keyspace"),
            DemoError::WrongValues(n) => write!(f, "{n} gets answered a wrong value"),
        }
    }
}

impl std::error::Error for DemoError {}

/// The paths a value can take, in report order.
const PATHS: [(Path, &str); 5] = [
    (Path::LocalHit, "LocalHit (own main cache)"),
    (Path::HotHit, "HotHit (mirrored hot key)"),
    (Path::PeerFetch, "PeerFetch (from the owner)"),
    (Path::Load, "Load (data source, via a flight)"),
    (Path::PreviousOwner, "PreviousOwner (peeked after a ring change)"),
];

fn path_index(path: Path) -> usize {
    match path {
        Path::LocalHit => 0,
        Path::HotHit => 1,
        Path::PeerFetch => 2,
        Path::Load => 3,
        Path::PreviousOwner => 4,
    }
}

fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::NotFound => "NotFound",
        Error::DataSource(_) => "DataSource",
        Error::TimedOut => "TimedOut",
        Error::RateLimited => "RateLimited",
        Error::CircuitOpen => "CircuitOpen",
        Error::TooLarge => "TooLarge",
        Error::UnknownKeyspace => "UnknownKeyspace",
        Error::ShuttingDown => "ShuttingDown",
        Error::Overloaded => "Overloaded",
        Error::Unavailable => "Unavailable",
        Error::BadRequest => "BadRequest",
        Error::Unauthorized => "Unauthorized",
    }
}

/// One client task's tally.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    by_path: [Histogram; PATHS.len()],
    errors: BTreeMap<&'static str, u64>,
    failed: Histogram,
    wrong_values: u64,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        for (mine, theirs) in self.by_path.iter_mut().zip(&other.by_path) {
            mine.merge(theirs);
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind).or_insert(0) += n;
        }
        self.failed.merge(&other.failed);
        self.wrong_values += other.wrong_values;
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn all(&self) -> Histogram {
        let mut all = self.failed.clone();
        for histogram in &self.by_path {
            all.merge(histogram);
        }
        all
    }
}

/// A counter on a cache line of its own: each client task writes only its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// What the progress line reads while a phase runs.
#[derive(Debug)]
struct Live {
    requests: Box<[Slot]>,
    stop: AtomicBool,
}

impl Live {
    fn requests(&self) -> u64 {
        self.requests.iter().map(|slot| slot.0.load(Ordering::Relaxed)).sum()
    }
}

/// Everything a phase's tasks share.
#[derive(Clone)]
struct Workload {
    keys: Arc<[Bytes]>,
    zipf: Arc<Zipf>,
    counts: Arc<LoadCounts>,
}

/// One phase's results.
#[derive(Debug)]
struct PhaseResult {
    elapsed: Duration,
    tally: Tally,
    /// Data-source calls during the phase, per node and key.
    loads: LoadMap,
    distinct_requested: usize,
}

/// Data-source calls per key, over some of the nodes.
#[derive(Debug, Default)]
struct PerKey {
    total: u64,
    keys: usize,
    max: u32,
    /// Keys loaded more than once.
    repeated: usize,
}

impl PerKey {
    fn mean(&self) -> f64 {
        if self.keys == 0 { 0.0 } else { self.total as f64 / self.keys as f64 }
    }
}

impl PhaseResult {
    fn loads_total(&self) -> u64 {
        self.loads.values().map(|&n| u64::from(n)).sum()
    }

    /// The calls made by the nodes `which` picks, added up per key.
    fn per_key(&self, which: impl Fn(usize) -> bool) -> PerKey {
        let mut by_key: HashMap<&Bytes, u32> = HashMap::new();
        for ((node, key), &n) in &self.loads {
            if which(*node) {
                *by_key.entry(key).or_insert(0) += n;
            }
        }
        PerKey {
            total: by_key.values().map(|&n| u64::from(n)).sum(),
            keys: by_key.len(),
            max: by_key.values().copied().max().unwrap_or(0),
            repeated: by_key.values().filter(|&&n| n > 1).count(),
        }
    }

    fn rate(&self) -> f64 {
        self.tally.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the demo; prints to stdout (results) and stderr (progress).
pub(crate) async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let nodes = args.nodes as usize;
    let delay = Duration::from_millis(args.source_delay_ms);
    let phase1 = Duration::from_secs_f64(args.duration);
    let phase2 = Duration::from_secs_f64(args.failover_duration);

    println!("# herdcache demo");
    println!();
    let then = if nodes > 1 && !phase2.is_zero() {
        format!(
            " Then one node leaves gracefully while the load goes on over the others for \
             {:.1} s: every get must still be answered.",
            phase2.as_secs_f64()
        )
    } else {
        String::new()
    };
    let runtimes: Vec<Runtime> = (0..nodes).map(|node| args.runtimes.of_node(node)).collect();
    let blocking: Vec<String> = Runtime::ALL
        .into_iter()
        .filter(|runtime| runtime.blocks() && runtimes.contains(runtime))
        .map(|runtime| format!("herdcache-{}", runtime.name()))
        .collect();
    let clients = if blocking.is_empty() {
        "client tasks".to_owned()
    } else {
        format!(
            "clients (tokio tasks; OS threads calling the blocking API for the {} nodes)",
            blocking.join(" and ")
        )
    };
    say!(
        "{} in this process, on loopback TCP, share one keyspace of {} keys over a \
         consistent-hash ring. Behind them a deliberately slow data source sleeps about {} ms \
         per fetch and counts every fetch per key. {} {clients}, spread over the nodes, request \
         keys drawn from a Zipf distribution (s = {}) for {:.1} s. A miss is loaded once in the \
         whole cluster (by the key's owner) and every other caller waits for that load; hot \
         keys are mirrored to the nodes that ask for them.{then}",
        describe_nodes(&runtimes),
        thousands(u64::from(args.keys)),
        args.source_delay_ms,
        args.concurrency,
        args.skew,
        phase1.as_secs_f64(),
    );
    println!();

    // The cluster.
    let counts = Arc::new(LoadCounts::default());
    // Room for every value on every node (main and hot copies), so that nothing is evicted
    // and "one load per key" is the cache's doing, not luck.
    let budget = (u64::from(args.keys) * 1100).max(16 << 20);
    let mut cluster: Vec<DemoNode> = Vec::with_capacity(nodes);
    for (node, runtime) in runtimes.iter().enumerate() {
        let source = SlowSource::new(node, delay, Arc::clone(&counts));
        cluster.push(runtime.start(budget, source).await?);
    }
    let members: Vec<String> = cluster.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &cluster {
        node.set_peers(&members);
    }
    let list: Vec<String> = cluster
        .iter()
        .map(|node| format!("{} ({})", node.node_id(), node.runtime().name()))
        .collect();
    println!("Nodes: {}", list.join(", "));
    println!();

    let workload = Workload {
        keys: (0..args.keys as usize).map(|rank| Bytes::from(key(rank))).collect(),
        zipf: Arc::new(Zipf::new(args.keys as usize, args.skew)),
        counts: Arc::clone(&counts),
    };

    // Phase 1: the whole cluster.
    let first = run_phase("phase 1", &workload, &cluster, args.concurrency, phase1, 1).await;
    println!("## Phase 1: {nodes} node(s), {:.1} s", first.elapsed.as_secs_f64());
    println!();
    let per_key = first.per_key(|_| true);
    let mut table = summary_table(&first);
    table.row(["distinct keys requested".to_owned(), thousands(first.distinct_requested as u64)]);
    table.row(["distinct keys loaded".to_owned(), thousands(per_key.keys as u64)]);
    table.row([
        "loads per key (max / mean)".to_owned(),
        format!("{} / {:.2}", per_key.max, per_key.mean()),
    ]);
    print!("{}", table.render());
    println!();
    println!(
        "loads per key: max {}, mean {:.2}  (1 = each key loaded once in the whole cluster)",
        per_key.max,
        per_key.mean()
    );
    println!();
    println!("### Latency by path (as seen by the caller)");
    println!();
    print!("{}", latency_table(&first.tally).render());
    println!();
    let threads_too = if !blocking.is_empty() {
        " (and by client threads that share the cores with them)"
    } else {
        ""
    };
    say!(
        "Latency is timed around each get by client tasks that share the runtime's worker \
         threads with the nodes{threads_too}, so the tail includes time a task or thread waited \
         to run."
    );
    println!();
    println!("### Per node (keyspace stats)");
    println!();
    print!("{}", node_table(&cluster).render());
    println!();
    let mut wrong = first.tally.wrong_values;

    // Phase 2: one node leaves while the others serve.
    let leaving = if nodes > 1 && !phase2.is_zero() { cluster.pop() } else { None };
    if let Some(leaving) = leaving {
        let leaving_id = leaving.node_id().to_owned();
        let leaving_runtime = leaving.runtime().name();
        let stop = async move {
            // Let the load get going first, so that the leave happens under it.
            tokio::time::sleep(Duration::from_millis(200).min(phase2 / 4)).await;
            let started = Instant::now();
            leaving.leave().await;
            started.elapsed()
        };
        let peer_errors_before = peer_errors(&cluster);
        let (second, stop_took) = tokio::join!(
            run_phase("phase 2", &workload, &cluster, args.concurrency, phase2, 2),
            stop
        );
        println!(
            "## Phase 2: node {leaving_id} ({leaving_runtime}) left gracefully; {} node(s) kept \
             serving for {:.1} s",
            cluster.len(),
            second.elapsed.as_secs_f64()
        );
        println!();
        let leaving_index = cluster.len();
        let by_leaver = second.per_key(|node| node == leaving_index);
        let by_survivors = second.per_key(|node| node != leaving_index);
        let mut table = summary_table(&second);
        table.row(["… by the leaving node, before it left".to_owned(), thousands(by_leaver.total)]);
        table.row(["… by the survivors".to_owned(), thousands(by_survivors.total)]);
        table.row([
            "distinct keys loaded by the survivors".to_owned(),
            thousands(by_survivors.keys as u64),
        ]);
        table.row([
            "survivors' loads per key (max / mean)".to_owned(),
            format!("{} / {:.2}", by_survivors.max, by_survivors.mean()),
        ]);
        table.row(["graceful stop took".to_owned(), micros(nanos(stop_took))]);
        print!("{}", table.render());
        println!();
        let errors = second.tally.error_count();
        if errors == 0 && second.tally.wrong_values == 0 {
            println!(
                "every get was answered: 0 errors in {} requests.",
                thousands(second.tally.requests)
            );
        } else {
            println!(
                "{errors} error(s) in {} requests: {}.",
                thousands(second.tally.requests),
                error_list(&second.tally)
            );
        }
        println!();
        say!(
            "phase 2 loads per key by the survivors: max {}, mean {:.2}  (the keys the leaving \
             node owned move to the survivors, which load each once; one the leaving node \
             loaded just before it left is loaded again by its new owner)",
            by_survivors.max,
            by_survivors.mean()
        );
        if by_survivors.max > 1 {
            println!();
            let twice = by_survivors.repeated;
            let fell_back = peer_errors(&cluster).saturating_sub(peer_errors_before);
            say!(
                "{twice} key(s) were loaded more than once by the survivors. During the leave, \
                 {fell_back} fetch(es) from a survivor to the leaving node failed (peer_errors: \
                 refused or cut off before the survivor heard of the leave) and were loaded \
                 locally instead, as groupcache does, while the key's new owner loaded it too."
            );
        }
        println!();
        println!("### Latency by path");
        println!();
        print!("{}", latency_table(&second.tally).render());
        println!();
        println!("### Per node, the survivors (counters since the start)");
        println!();
        print!("{}", node_table(&cluster).render());
        println!();
        wrong += second.tally.wrong_values;
    }

    for node in cluster {
        node.leave().await;
    }
    if wrong > 0 {
        return Err(DemoError::WrongValues(wrong));
    }
    Ok(())
}

/// Drives the load over `nodes` for `duration` with `concurrency` clients, showing progress.
async fn run_phase(
    label: &'static str,
    workload: &Workload,
    nodes: &[DemoNode],
    concurrency: u32,
    duration: Duration,
    seed: u64,
) -> PhaseResult {
    let loads_before = workload.counts.snapshot();
    let fetches_before = workload.counts.total();
    let live = Arc::new(Live {
        requests: (0..concurrency).map(|_| Slot::default()).collect(),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..concurrency as usize {
        let node = &nodes[task % nodes.len()];
        let client = Client {
            task,
            workload: workload.clone(),
            live: Arc::clone(&live),
            seed: seed.wrapping_mul(1_000_003).wrapping_add(task as u64),
        };
        if let Err(error) = node.spawn_client(client, &mut tasks) {
            eprintln!("client {task} of node {} did not start: {error}", node.node_id());
        }
    }
    let progress = tokio::spawn(progress(
        label,
        Arc::clone(&live),
        Arc::clone(&workload.counts),
        fetches_before,
        started,
        duration,
    ));

    tokio::time::sleep(duration).await;
    live.stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    let mut requested = vec![false; workload.keys.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Some(one)) => {
                tally.merge(&one.tally);
                for (mark, &seen) in requested.iter_mut().zip(&one.requested) {
                    *mark |= seen;
                }
            }
            Ok(None) => eprintln!("a client thread panicked"),
            Err(error) => eprintln!("a client task failed: {error}"),
        }
    }
    let elapsed = started.elapsed();
    if let Err(error) = progress.await {
        eprintln!("the progress task failed: {error}");
    }

    let mut loads = workload.counts.snapshot();
    for (key, n) in &mut loads {
        *n -= loads_before.get(key).copied().unwrap_or(0);
    }
    loads.retain(|_, n| *n > 0);
    let distinct_requested = requested.iter().filter(|&&seen| seen).count();
    PhaseResult { elapsed, tally, loads, distinct_requested }
}

/// One client: draws keys from the workload and gets them through one node's keyspace
/// handle until the phase says stop. Client `task` writes only its own progress slot.
pub(crate) struct Client {
    task: usize,
    workload: Workload,
    live: Arc<Live>,
    seed: u64,
}

/// What one client saw: its tally and which keys it asked for.
#[derive(Debug)]
pub(crate) struct ClientTally {
    tally: Tally,
    requested: Vec<bool>,
}

impl Client {
    /// Runs on a tokio task, awaiting an async runtime's gets.
    async fn run_async(self, keyspace: &herdcache_runtime::KeyspaceHandle) -> ClientTally {
        let mut seen = self.tally();
        let mut rng = Rng::new(self.seed);
        while !self.live.stop.load(Ordering::Relaxed) {
            let key = self.draw(&mut rng, &mut seen);
            let started = Instant::now();
            let result = keyspace.get_value(key).await;
            self.record(&mut seen, key, result, started.elapsed());
            // A hit completes without ever waiting: give the node drivers and timers their turn.
            tokio::task::coop::consume_budget().await;
        }
        seen
    }

    /// Runs on a thread of its own, calling a blocking runtime's gets.
    fn run_blocking(self, get: impl Fn(&[u8]) -> Result<Value, Error>) -> ClientTally {
        let mut seen = self.tally();
        let mut rng = Rng::new(self.seed);
        while !self.live.stop.load(Ordering::Relaxed) {
            let key = self.draw(&mut rng, &mut seen);
            let started = Instant::now();
            let result = get(key);
            self.record(&mut seen, key, result, started.elapsed());
        }
        seen
    }

    fn tally(&self) -> ClientTally {
        ClientTally { tally: Tally::default(), requested: vec![false; self.workload.keys.len()] }
    }

    /// The next key to get, by popularity.
    fn draw(&self, rng: &mut Rng, seen: &mut ClientTally) -> &Bytes {
        let rank = self.workload.zipf.sample(rng);
        seen.requested[rank] = true;
        &self.workload.keys[rank]
    }

    /// Counts a get of `key` that took `elapsed`, by path or error.
    fn record(
        &self,
        seen: &mut ClientTally,
        key: &Bytes,
        result: Result<Value, Error>,
        elapsed: Duration,
    ) {
        let tally = &mut seen.tally;
        match result {
            Ok(value) if looks_right(key, &value.bytes) => {
                tally.by_path[path_index(value.path)].record_duration(elapsed);
            }
            Ok(_) => tally.wrong_values += 1,
            Err(error) => {
                *tally.errors.entry(error_kind(&error)).or_insert(0) += 1;
                tally.failed.record_duration(elapsed);
            }
        }
        tally.requests += 1;
        self.live.requests[self.task].0.store(tally.requests, Ordering::Relaxed);
    }
}

/// The progress line on stderr: redrawn in place on a terminal, a line a second otherwise.
async fn progress(
    label: &'static str,
    live: Arc<Live>,
    counts: Arc<LoadCounts>,
    fetches_before: u64,
    started: Instant,
    duration: Duration,
) {
    let terminal = std::io::stderr().is_terminal();
    let tick = if terminal { Duration::from_millis(250) } else { Duration::from_secs(1) };
    let mut last = (started, 0u64);
    loop {
        let done = live.stop.load(Ordering::Relaxed);
        if !done {
            tokio::time::sleep(tick.min(duration.saturating_sub(started.elapsed()))).await;
        }
        let done = done || live.stop.load(Ordering::Relaxed);
        let now = Instant::now();
        let requests = live.requests();
        let fetches = counts.total().saturating_sub(fetches_before);
        let elapsed = now.duration_since(started);
        let rate = if done {
            requests as f64 / elapsed.as_secs_f64().max(1e-9)
        } else {
            (requests - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9)
        };
        last = (now, requests);
        let fraction = (elapsed.as_secs_f64() / duration.as_secs_f64()).clamp(0.0, 1.0);
        let filled = (fraction * 24.0).round() as usize;
        let hits = requests.saturating_sub(fetches);
        let line = format!(
            "{label} [{}{}] {:>5.1}/{} s  {:>11} requests  {:>9} req/s  hit {:>8}",
            "#".repeat(filled),
            ".".repeat(24 - filled),
            elapsed.as_secs_f64().min(duration.as_secs_f64()),
            duration.as_secs_f64(),
            thousands(requests),
            thousands(rate as u64),
            percent(hits, requests),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = if terminal {
            write!(stderr, "\r{line}{}", if done { "\n" } else { "" })
        } else if done || elapsed < duration {
            writeln!(stderr, "{line}")
        } else {
            Ok(())
        };
        let _ = stderr.flush();
        if done {
            return;
        }
    }
}

/// "3 herdcache-tokio node(s)", or for mixed runtimes "4 nodes (herdcache-tokio × 2,
/// herdcache-mio × 2)".
fn describe_nodes(runtimes: &[Runtime]) -> String {
    let counts: Vec<(Runtime, usize)> = Runtime::ALL
        .into_iter()
        .map(|runtime| (runtime, runtimes.iter().filter(|&&r| r == runtime).count()))
        .filter(|&(_, n)| n > 0)
        .collect();
    match counts.as_slice() {
        [(runtime, n)] => format!("{n} herdcache-{} node(s)", runtime.name()),
        _ => {
            let parts: Vec<String> = counts
                .iter()
                .map(|(runtime, n)| format!("herdcache-{} × {n}", runtime.name()))
                .collect();
            format!("{} nodes ({})", runtimes.len(), parts.join(", "))
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The failed peer fetches of these nodes, summed.
fn peer_errors(nodes: &[DemoNode]) -> u64 {
    nodes.iter().filter_map(|node| node.stats()).map(|s| s.peer_errors).sum()
}

fn error_list(tally: &Tally) -> String {
    let mut parts: Vec<String> =
        tally.errors.iter().map(|(kind, n)| format!("{kind} × {}", thousands(*n))).collect();
    if tally.wrong_values > 0 {
        parts.push(format!("wrong value × {}", thousands(tally.wrong_values)));
    }
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}

fn summary_table(phase: &PhaseResult) -> Table {
    let tally = &phase.tally;
    let local_hits = tally.by_path[0].count() + tally.by_path[1].count();
    let loads = phase.loads_total();
    let mut table = Table::new(["metric", "value"]);
    table.row(["requests".to_owned(), thousands(tally.requests)]);
    table.row(["requests/s".to_owned(), thousands(phase.rate() as u64)]);
    table.row(["errors".to_owned(), error_list(tally)]);
    table.row([
        "hit ratio (answered without a data-source call)".to_owned(),
        percent(tally.requests.saturating_sub(loads), tally.requests),
    ]);
    table.row([
        "local hit ratio (LocalHit + HotHit on the node asked)".to_owned(),
        percent(local_hits, tally.requests),
    ]);
    table.row(["data-source loads".to_owned(), thousands(loads)]);
    table
}

fn latency_table(tally: &Tally) -> Table {
    let mut table = Table::new(["path", "gets", "share", "p50", "p99", "max"]);
    let total = tally.requests;
    let mut row = |name: &str, histogram: &Histogram| {
        table.row([
            name.to_owned(),
            thousands(histogram.count()),
            percent(histogram.count(), total),
            micros(histogram.quantile(0.50)),
            micros(histogram.quantile(0.99)),
            micros(histogram.max()),
        ]);
    };
    for ((_, name), histogram) in PATHS.iter().zip(&tally.by_path) {
        row(name, histogram);
    }
    if tally.failed.count() > 0 {
        row("errors", &tally.failed);
    }
    row("all", &tally.all());
    table
}

fn node_table(nodes: &[DemoNode]) -> Table {
    let mut table = Table::new([
        "node",
        "runtime",
        "gets",
        "cache_hits",
        "hot_hits",
        "peer_loads",
        "peer_errors",
        "loads",
        "local_loads",
        "server_requests",
    ]);
    for node in nodes {
        let Some(stats) = node.stats() else { continue };
        table.row([
            node.node_id().to_owned(),
            node.runtime().name().to_owned(),
            thousands(stats.gets),
            thousands(stats.cache_hits),
            thousands(stats.hot_hits),
            thousands(stats.peer_loads),
            thousands(stats.peer_errors),
            thousands(stats.loads),
            thousands(stats.local_loads),
            thousands(stats.server_requests),
        ]);
    }
    table
}
