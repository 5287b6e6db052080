//! The hostile-network suite: attacks on a 3-node cluster (cluster secret on; mutual TLS
//! instead for the TLS attacks, [`Transport`]) while it serves a steady stream of gets, with
//! **one body per attack**, run on every runtime crate by
//! [`hostile_tests!`](crate::hostile_tests) (`tests/hostile_{tokio,async_std,mio}.rs`).
//! The attacks on the peer protocol are in `attacks.rs`, those on TLS and on the inbound
//! connection cap in `tls.rs`.
//!
//! # What every attack checks
//! - **The others are served**: background callers get keys from every member all through
//!   the attack; the share answered with the right value within [`GET_DEADLINE`] is measured
//!   and asserted (the threshold is stated per attack: every get when only a path between
//!   two members is slowed, at least [`OFF_PATH_SHARE`] otherwise).
//! - **Memory stays bounded**: the process's resident set (`VmRSS`; the nodes run in the
//!   test's process) after the attack is at most [`RSS_BOUND`] above the one before (the
//!   peak is measured and printed too).
//! - **No panic** in any thread ([`capture`]), and every member answers every key afterwards.
//! - **The offender is cut off**: its connection is closed within a stated bound (the
//!   attacker sees EOF or a reset), with the reason logged (a warning with the reason, read
//!   back by [`capture`]) and counted where the node counts it
//!   ([`SecurityStats`](herdcache_proto::SecurityStats)).
//! - **No value is lost or wrong**: every answer is checked against the source
//!   ([`value_of`]); values written by members before the attack read back
//!   intact; where the attack is off every member's path, no key is loaded a second time.
//!
//! # The table
//! Each test prints one line to stderr: attack, runtime, outcome, gets answered, RSS delta.
//! To collect it (the tests of a binary run one at a time, whatever the test threads):
//!
//! ```text
//! cargo test -p herdcache-tests --test hostile_tokio --test hostile_async_std \
//!     --test hostile_mio -- --nocapture 2>&1 | grep '^hostile |'
//! ```
//!
//! # What an attack on the peer port cannot show
//! A connection closed by the hello timeout (slowloris, held connections) is neither counted
//! nor logged by the nodes today: those tests assert the close and its timing only.
//!
//! # How it runs
//! The test body runs on a tokio runtime of its own ([`drive`](crate::drive)) whatever the
//! nodes' runtime: the nodes run on their own executors and threads, the [`proxy`] and the
//! attackers on the test's. The tests of one binary take a lock, so that one attack's
//! sockets, threads and memory are not another's measurement.

mod attacks;
pub mod capture;
pub mod proxy;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herdcache_proto::{MemberState, NodeConfig, Ring, RingScheme};
use herdcache_runtime::SendBuffer;

pub use attacks::*;
pub use tls::*;

use crate::certs::TestPki;
use crate::harness::{NodeSpec, Runtime, TestNode, default_tune, within};
use crate::source::{Source, value_of};
use herdcache_runtime::tls::TlsConfig;
use proxy::{Fault, Proxy, ProxyListener};

/// The members' cluster secret.
pub const SECRET: &[u8] = b"hostile suite: the members' shared secret";

/// Members of every attacked cluster.
pub const MEMBERS: usize = 3;

/// Keys the background callers get over and over (spread over every owner).
const BACKGROUND_KEYS: usize = 60;

/// Keys written before an attack (values that exist nowhere but in the cluster), per owner.
const KEPT_PER_MEMBER: usize = 4;

/// Background callers per member.
const CALLERS_PER_MEMBER: usize = 2;

/// The pause between two gets of one background caller: a steady stream (a few hundred gets
/// a second in all), not a benchmark competing with the attack for the 2 cores of CI.
const CALLER_PAUSE: Duration = Duration::from_millis(3);

/// How long the background stream runs before and after an attack.
const TRAFFIC_MARGIN: Duration = Duration::from_millis(250);

/// The shortest background stream around an attack.
const MIN_TRAFFIC: Duration = Duration::from_secs(1);

/// How long a background get may take to count as answered: the nodes' request timeout (5 s,
/// within which a get whose owner cannot be reached is loaded locally) and a second.
pub const GET_DEADLINE: Duration = Duration::from_secs(6);

/// The share of background gets an attack off the path between two serving members must
/// leave answered. Such an attack costs CPU on a 2-core machine and nothing else: the
/// measured share is 100 %; the threshold leaves room for a stalled scheduler, not for a
/// failed request (a wrong value fails every attack whatever the share).
pub const OFF_PATH_SHARE: f64 = 0.99;

/// How much the resident set may grow over an attack.
pub const RSS_BOUND: u64 = 64 << 20;

/// The nodes' hello timeout (their connect timeout, the default): a connection that has not
/// completed its handshake by then is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after the hello timeout an offender's connection must be closed: the node's
/// timer, its driver and the attacker's read on a loaded 2-core machine.
pub const CLOSE_SLACK: Duration = Duration::from_secs(3);

/// The configuration of the attacked nodes: the suite's defaults with the cluster secret,
/// and no hot mirroring, so that a member keeps fetching its peers' keys over the wire all
/// through an attack.
pub fn secured(config: &mut NodeConfig) {
    unmirrored(config);
    config.cluster_secret = Some(Bytes::from_static(SECRET));
}

/// The suite's defaults without hot mirroring (and without a secret: TLS binds the ids).
pub fn unmirrored(config: &mut NodeConfig) {
    default_tune(config);
    config.hot_threshold_per_second = 1e12;
}

/// How the members of a [`Fixture`] authenticate each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP and the cluster secret.
    Secret,
    /// Mutual TLS, each certificate naming its member's id exactly (`herdcache://ID`), the
    /// handshake timeout [`HELLO_TIMEOUT`]; no cluster secret.
    Tls,
    /// Plain TCP and the cluster secret, with this inbound connection cap on every member.
    Capped(usize),
}

/// The process's resident set, in bytes (`VmRSS` of `/proc/self/status`).
#[must_use]
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("a VmRSS line in kB");
    kib << 10
}

/// The open file descriptors of the process.
#[must_use]
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(Iterator::count).unwrap_or(0)
}

/// The process's soft limit of open file descriptors.
#[must_use]
pub fn fd_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}

/// One member: its node, its source and the proxy that stands at its id.
struct Member {
    node: Arc<TestNode>,
    source: Arc<Source>,
    proxy: Proxy,
}

/// Three members with the cluster secret, each behind its own [`proxy`] (its id is the
/// proxy's address), serving 60 source keys and 4 written ones per member.
pub struct Fixture {
    runtime: &'static dyn Runtime,
    members: Vec<Member>,
    ids: Vec<String>,
    background: Arc<Vec<String>>,
    kept: Vec<(String, Bytes)>,
    pki: TestPki,
    /// Each member's member-view version once warm: a change since means some member saw
    /// another suspect or down.
    warm_views: Vec<u64>,
}

impl Fixture {
    /// Starts the members, gives each the member list, and warms them: every background key
    /// loaded once (by its owner) and every kept key written.
    pub async fn start(runtime: &'static dyn Runtime) -> Fixture {
        Fixture::start_with(runtime, Transport::Secret).await
    }

    /// [`Fixture::start`] with members that authenticate each other as `transport` says.
    pub async fn start_with(runtime: &'static dyn Runtime, transport: Transport) -> Fixture {
        let pki = TestPki::new();
        let version = Arc::new(AtomicU64::new(0));
        let mut members = Vec::new();
        for _ in 0..MEMBERS {
            let listener = ProxyListener::bind().await.expect("a proxy port");
            let source = Source::new(Duration::ZERO, Arc::clone(&version));
            let id = listener.addr().to_string();
            let tls = (transport == Transport::Tls).then(|| {
                let cert = pki.node_for_id(&id);
                let (cert, key) = (cert.cert_pem.as_bytes(), cert.key_pem.as_bytes());
                TlsConfig::from_pem(cert, key, pki.ca_pem().as_bytes())
                    .expect("a member's TLS configuration")
                    .handshake_timeout(HELLO_TIMEOUT)
            });
            let max_inbound = match transport {
                Transport::Capped(cap) => Some(cap),
                Transport::Secret | Transport::Tls => None,
            };
            let spec = NodeSpec {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                advertise: Some(id),
                peers: Vec::new(),
                source: Arc::clone(&source),
                tune: if transport == Transport::Tls { unmirrored } else { secured },
                send_buffer: SendBuffer::default(),
                tls,
                max_inbound,
            };
            let node = within(Duration::from_secs(10), "start", runtime.start(spec))
                .await
                .unwrap_or_else(|error| panic!("{} node starts: {error}", runtime.name()));
            let proxy = listener.forward_to(node.addr());
            members.push(Member { node, source, proxy });
        }
        let ids: Vec<String> = members.iter().map(|member| member.node.id()).collect();
        for member in &members {
            member.node.set_peers(&ids);
        }
        let background = Arc::new((0..BACKGROUND_KEYS).map(|i| format!("bg-{i}")).collect());
        let mut fixture = Fixture {
            runtime,
            members,
            ids,
            background,
            kept: Vec::new(),
            pki,
            warm_views: Vec::new(),
        };
        // The same number owned by every member.
        let mut owned = [0; MEMBERS];
        for n in 0.. {
            let key = format!("kept-{n}");
            let owner = fixture.owner(&key);
            if owned[owner] < KEPT_PER_MEMBER {
                owned[owner] += 1;
                fixture.kept.push((key, Bytes::from(format!("written by a member: {n}"))));
            }
            if owned.iter().all(|&n| n == KEPT_PER_MEMBER) {
                break;
            }
        }
        fixture.warm().await;
        fixture.warm_views = fixture.views();
        fixture
    }

    /// Each member's member-view version now.
    fn views(&self) -> Vec<u64> {
        self.members.iter().map(|member| member.node.handle().members().version).collect()
    }

    /// Whether no member's view of the members changed since the warm-up.
    #[must_use]
    pub fn views_unchanged(&self) -> bool {
        self.views() == self.warm_views
    }

    async fn warm(&self) {
        for (key, value) in &self.kept {
            // Written through another member than the owner: the write crosses the wire.
            let node = &self.members[(self.owner(key) + 1) % MEMBERS].node;
            within(GET_DEADLINE, "put", node.put(key, value.clone()))
                .await
                .unwrap_or_else(|error| panic!("put {key}: {error:?}"));
        }
        for key in self.background.iter() {
            for member in &self.members {
                let value = within(GET_DEADLINE, "warm-up get", member.node.get(key)).await;
                assert_eq!(value.map(|v| v.bytes), Ok(value_of(key, 0)), "warm-up get of {key}");
            }
        }
        for key in self.background.iter() {
            assert_eq!(self.loads_of(key), 1, "{key} loaded once, by its owner, in warm-up");
        }
    }

    /// The authority that issued the members' certificates (used with [`Transport::Tls`]).
    #[must_use]
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The runtime the members run on.
    #[must_use]
    pub fn runtime_name(&self) -> &'static str {
        self.runtime.name()
    }

    /// Member `i`'s node.
    #[must_use]
    pub fn node(&self, i: usize) -> &Arc<TestNode> {
        &self.members[i].node
    }

    /// The address member `i` really listens on (its id is its proxy's).
    #[must_use]
    pub fn listen_addr(&self, i: usize) -> SocketAddr {
        self.members[i].node.addr()
    }

    /// Member `i`'s id.
    #[must_use]
    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// The proxy at member `i`'s id.
    #[must_use]
    pub fn proxy(&self, i: usize) -> &Proxy {
        &self.members[i].proxy
    }

    /// The member that owns `key` on the full ring.
    #[must_use]
    pub fn owner(&self, key: &str) -> usize {
        let ring = Ring::with_peers(RingScheme::BALANCED, self.ids.iter().map(String::as_bytes))
            .expect("distinct node ids");
        let owner = ring.owner(key.as_bytes()).expect("a ring with members");
        self.ids.iter().position(|id| id.as_bytes() == *owner).expect("the owner is a member")
    }

    /// A kept key that member `i` owns.
    #[must_use]
    pub fn kept_key_of(&self, i: usize) -> &str {
        let (key, _) = self.kept.iter().find(|(key, _)| self.owner(key) == i).expect("kept keys");
        key
    }

    /// Loads of `key` so far, all members.
    #[must_use]
    pub fn loads_of(&self, key: &str) -> usize {
        self.members.iter().map(|member| member.source.loads_of(key)).sum()
    }

    /// Loads of every background key so far.
    #[must_use]
    pub fn background_loads(&self) -> HashMap<String, usize> {
        self.background.iter().map(|key| (key.clone(), self.loads_of(key))).collect()
    }

    /// Applies `fault` to every connection between members `a` and `b`, whichever dialled
    /// (`to_node` is towards the member that accepted).
    pub fn fault_between(&self, a: usize, b: usize, fault: Fault) {
        self.proxy(b).set_fault(self.id(a), fault);
        self.proxy(a).set_fault(self.id(b), fault);
    }

    /// Lifts every proxy fault.
    pub fn heal(&self) {
        for member in &self.members {
            member.proxy.clear_faults();
        }
    }

    /// Waits until every member sees every member alive on its ring (at most `limit`).
    pub async fn until_all_alive(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let views: Vec<_> = self.members.iter().map(|m| m.node.handle().members()).collect();
            let all_alive = views.iter().all(|view| {
                view.members.len() == MEMBERS
                    && view
                        .members
                        .iter()
                        .all(|m| m.state == MemberState::Alive && m.ring_share > 0.0)
            });
            if all_alive {
                return;
            }
            assert!(started.elapsed() < limit, "members not all alive after {limit:?}: {views:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every member answers every background key with its source value.
    pub async fn check_background(&self) {
        for key in self.background.iter() {
            for (i, member) in self.members.iter().enumerate() {
                let value =
                    within(GET_DEADLINE, "get after the attack", member.node.get(key)).await;
                assert_eq!(value.map(|v| v.bytes), Ok(value_of(key, 0)), "{key} from member {i}");
            }
        }
    }

    /// Every member reads every kept key whose owner is in `owners` as it was written.
    pub async fn check_kept(&self, owners: &[usize]) {
        let mut checked = 0;
        for (key, written) in &self.kept {
            if !owners.contains(&self.owner(key)) {
                continue;
            }
            for (i, member) in self.members.iter().enumerate() {
                let value = within(GET_DEADLINE, "get of a kept key", member.node.get(key)).await;
                assert_eq!(value.map(|v| v.bytes), Ok(written.clone()), "{key} from member {i}");
            }
            checked += 1;
        }
        assert_eq!(checked, owners.len() * KEPT_PER_MEMBER, "kept keys owned by {owners:?}");
    }

    /// Every member still has every member alive and on its ring, and the offender's refusals
    /// took nothing from anyone.
    pub fn members_intact(&self) {
        for (i, member) in self.members.iter().enumerate() {
            let view = member.node.handle().members();
            assert_eq!(view.members.len(), MEMBERS, "member {i}'s list: {view:?}");
            for id in &self.ids {
                let seen = view.get(id).unwrap_or_else(|| panic!("{id} on member {i}: {view:?}"));
                assert!(seen.ring_share > 0.0, "{id} still on member {i}'s ring: {view:?}");
            }
        }
    }

    /// Stops every member.
    pub async fn shutdown(self) {
        let stops: Vec<_> = self.members.iter().map(|member| member.node.stop()).collect();
        for stop in stops {
            within(Duration::from_secs(15), "shutdown", stop).await;
        }
    }
}

/// What the background callers saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Gets started.
    pub sent: u64,
    /// Gets answered with the right value within [`GET_DEADLINE`].
    pub correct: u64,
    /// Answers with another value (never acceptable).
    pub wrong: Vec<String>,
    /// Errors and gets past the deadline (the first few).
    pub failed: Vec<String>,
    /// Gets that failed or were late, all of them.
    pub failures: u64,
    /// The slowest answer.
    pub slowest: Duration,
}

impl Tally {
    /// The share of gets answered correctly.
    #[must_use]
    pub fn share(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { self.correct as f64 / self.sent as f64 }
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.correct += other.correct;
        self.failures += other.failures;
        self.wrong.extend(other.wrong);
        self.failed.extend(other.failed.into_iter().take(5));
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// Background callers on every member, each getting the background keys in turn.
struct Traffic {
    stop: Arc<AtomicBool>,
    callers: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Traffic {
    fn start(fixture: &Fixture) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut callers = Vec::new();
        for (i, member) in fixture.members.iter().enumerate() {
            for c in 0..CALLERS_PER_MEMBER {
                let (node, keys, stop) =
                    (Arc::clone(&member.node), Arc::clone(&fixture.background), Arc::clone(&stop));
                let offset = (i * CALLERS_PER_MEMBER + c) * 7;
                callers.push(tokio::spawn(caller(node, keys, offset, stop)));
            }
        }
        Traffic { stop, callers }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut tally = Tally::default();
        for caller in self.callers {
            tally.merge(caller.await.expect("a background caller"));
        }
        tally
    }
}

async fn caller(
    node: Arc<TestNode>,
    keys: Arc<Vec<String>>,
    offset: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut n = offset;
    while !stop.load(Ordering::SeqCst) {
        let key = &keys[n % keys.len()];
        n += 1;
        tally.sent += 1;
        let started = Instant::now();
        match tokio::time::timeout(GET_DEADLINE, node.get(key)).await {
            Ok(Ok(value)) if value.bytes == value_of(key, 0) => {
                tally.correct += 1;
                tally.slowest = tally.slowest.max(started.elapsed());
            }
            Ok(Ok(value)) => tally.wrong.push(format!("{key}: {:?}", value.bytes)),
            Ok(Err(error)) => {
                tally.failures += 1;
                if tally.failed.len() < 5 {
                    tally.failed.push(format!("{key}: {error:?}"));
                }
            }
            Err(_) => {
                tally.failures += 1;
                if tally.failed.len() < 5 {
                    tally.failed.push(format!("{key}: no answer within {GET_DEADLINE:?}"));
                }
            }
        }
        tokio::time::sleep(CALLER_PAUSE).await;
    }
    tally
}

/// What an attack left behind.
#[derive(Debug)]
pub struct Observed {
    /// The background gets during the attack.
    pub gets: Tally,
    /// Resident set before the attack.
    pub rss_before: u64,
    /// Resident set after it.
    pub rss_after: u64,
    /// The highest resident set sampled during it.
    pub rss_peak: u64,
    /// The attack's own account of how it ended.
    pub outcome: String,
    /// Panics in any thread during the attack and the checks after it.
    pub mark: capture::Mark,
}

impl Observed {
    /// The growth of the resident set over the attack (0 if it shrank).
    #[must_use]
    pub fn rss_delta(&self) -> u64 {
        self.rss_after.saturating_sub(self.rss_before)
    }

    /// Asserts the share of answered gets, no wrong value, no panic and the memory bound,
    /// then prints the attack's line of the table.
    pub fn assert_and_report(&self, fixture: &Fixture, attack: &str, min_share: f64) {
        self.assert_and_report_within(fixture, attack, min_share, RSS_BOUND);
    }

    /// [`Observed::assert_and_report`] with a memory bound of the attack's own.
    pub fn assert_and_report_within(
        &self,
        fixture: &Fixture,
        attack: &str,
        min_share: f64,
        rss_bound: u64,
    ) {
        let line = format!(
            "hostile | {:<9} | {attack:<58} | {} | gets {}/{} = {:.2} % (slowest {} ms) | RSS {:+.1} MiB (peak {:+.1} MiB)",
            fixture.runtime_name(),
            self.outcome,
            self.gets.correct,
            self.gets.sent,
            self.gets.share() * 100.0,
            self.gets.slowest.as_millis(),
            mib(self.rss_after, self.rss_before),
            mib(self.rss_peak, self.rss_before),
        );
        eprintln!("{line}");
        assert!(self.gets.wrong.is_empty(), "{attack}: wrong values {:?}", self.gets.wrong);
        assert!(self.gets.sent >= 100, "{attack}: a steady stream of gets ran: {line}");
        assert!(
            self.gets.share() >= min_share,
            "{attack}: at least {:.2} % of the gets answered: {line}; failures {:?}",
            min_share * 100.0,
            self.gets.failed
        );
        assert_eq!(self.mark.panics(), 0, "{attack}: no panic in any thread");
        assert!(
            self.rss_delta() <= rss_bound,
            "{attack}: resident set grew by at most {} MiB: {line}",
            rss_bound >> 20
        );
    }
}

fn mib(after: u64, before: u64) -> f64 {
    (after as f64 - before as f64) / f64::from(1 << 20)
}

/// Runs `attack` while the background callers get keys from every member; samples the
/// resident set meanwhile. The attack's future returns its outcome for the table; whatever
/// it holds (sockets, tasks) is dropped before the resident set is measured again.
pub async fn under_attack(fixture: &Fixture, attack: impl Future<Output = String>) -> Observed {
    let mark = capture::mark();
    let rss_before = rss();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let traffic = Traffic::start(fixture);
    let started = Instant::now();
    // The stream runs before, during and after the attack, at least MIN_TRAFFIC in all.
    tokio::time::sleep(TRAFFIC_MARGIN).await;
    let outcome = attack.await;
    tokio::time::sleep(TRAFFIC_MARGIN.max(MIN_TRAFFIC.saturating_sub(started.elapsed()))).await;
    let gets = traffic.finish().await;
    sampling.abort();
    let rss_after = rss();
    Observed {
        gets,
        rss_before,
        rss_after,
        rss_peak: peak.load(Ordering::Relaxed).max(rss_after),
        outcome,
        mark,
    }
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs one hostile test: alone in its binary, with the nodes' warnings and the process's
/// panics captured, on a test driver of its own.
pub fn run<F: Future<Output = ()>>(body: F) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    capture::install();
    crate::drive(body);
}

/// Every hostile test as a `#[test]` on nodes of `$runtime` (a `&'static dyn Runtime`).
#[macro_export]
macro_rules! hostile_tests {
    ($runtime:expr) => {
        $crate::hostile_tests!(@each $runtime;
            delayed_path_between_two_members,
            sliced_path_between_two_members,
            reset_path_between_two_members,
            blackholed_path_between_two_members,
            slowloris_on_the_peer_port,
            ten_thousand_connections_opened_and_closed,
            connections_opened_and_held,
            garbage_before_the_hello,
            garbage_after_the_handshake,
            an_impostor_claiming_a_members_id,
            a_forged_leaving,
            slowloris_on_the_tls_handshake,
            garbage_and_plaintext_before_the_tls_handshake,
            garbage_after_the_tls_handshake,
            a_certificate_for_another_id,
            connections_over_the_inbound_cap,
            largest_frames_before_the_hello,
        );
        /// Fails today: a TLS session counts every byte of the read that completes the
        /// server's handshake as a handshake byte, so a client's burst right after its
        /// Finished is refused as "more than 65536 bytes before the handshake completed".
        #[test]
        #[ignore = "fails until the TLS session stops counting bytes after the handshake"]
        fn a_burst_right_after_the_tls_handshake() {
            $crate::hostile::run($crate::hostile::a_burst_right_after_the_tls_handshake($runtime));
        }
    };
    (@each $runtime:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::hostile::run($crate::hostile::$name($runtime));
            }
        )*
    };
}
