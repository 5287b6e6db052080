//! The attacks, one body each (see the [module docs](super) for what every one checks).
//!
//! Member 2 is the target of the attacks on the peer port; members 0 and 1 are the two
//! members whose path the proxy attacks degrade.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herdcache_proto::{ErrorCode, FrameKind, Message, PROTOCOL_VERSION, PutEntry, WireLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proxy::{Behaviour, Fault, ProxyStats};
use super::{
    CLOSE_SLACK, Fixture, HELLO_TIMEOUT, OFF_PATH_SHARE, Observed, RSS_BOUND, SECRET, fd_limit,
    open_fds, under_attack,
};
use crate::harness::{CLUSTER, KEYSPACE, Runtime};
use crate::peer_wire::{self, HalfHandshake, SecretDialler, Watched, encode, hello};

/// How long the proxy attacks last.
const PATH_ATTACK: Duration = Duration::from_secs(3);

/// The member the peer-port attacks aim at.
pub(super) const TARGET: usize = 2;

/// An id no member has.
pub(super) const STRANGER: &str = "127.0.0.1:1";

/// How long an offender that sent something the node refuses may keep its connection: the
/// refusal is immediate (measured: under 50 ms); this is the slack of a loaded machine, and
/// half the hello timeout, so that a refusal is not mistaken for the hello timeout's close.
pub(super) const REFUSAL_BOUND: Duration = Duration::from_secs(1);

/// How long an offender that never completes its hello may keep its connection.
pub(super) const HELLO_BOUND: Duration =
    Duration::from_secs(HELLO_TIMEOUT.as_secs() + CLOSE_SLACK.as_secs());

/// How long a held connection may stay open: the hello timeout after the node accepted it,
/// the node accepting 2,000 at once, and the kernel retrying what its full listen queue dropped.
pub(super) const HELD_BOUND: Duration = Duration::from_secs(10);

/// How long a flood connection waits to connect: a SYN the full listen queue dropped is
/// retried by the kernel after a second; the flood moves on instead.
const FLOOD_CONNECT: Duration = Duration::from_millis(100);

/// The resident memory a held connection may cost beyond [`RSS_BOUND`]: measured at up to
/// 53 KiB (herdcache-async-std; tokio 10 KiB, mio 4 KiB).
const HELD_CONNECTION_COST: u64 = 64 << 10;

/// A deterministic generator of garbage (xorshift64*), so that a failure replays.
struct Garbage(u64);

impl Garbage {
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }
}

/// A frame header declaring `len` bytes after the length prefix, with the protocol's
/// version and the hello's kind, and nothing after it.
fn length_prefix(len: u32) -> Vec<u8> {
    let mut header = len.to_be_bytes().to_vec();
    header.extend_from_slice(&[PROTOCOL_VERSION, FrameKind::Hello.as_u8()]);
    header.extend_from_slice(&[0; 8]);
    header
}

/// The garbage every garbage attack sends, each on a connection of its own: random bytes,
/// length prefixes past the frame limit, a header of an unknown version.
pub(super) fn garbage_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut garbage = Garbage(0x9e37_79b9_7f4a_7c15);
    let max_frame = WireLimits::default().max_frame;
    let mut bad_version = 10u32.to_be_bytes().to_vec();
    bad_version.extend_from_slice(&[99, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    vec![
        ("4 KiB of random bytes", garbage.bytes(4096)),
        ("64 KiB of random bytes", garbage.bytes(64 << 10)),
        ("a length prefix of 4 GiB", length_prefix(u32::MAX)),
        ("a length prefix one past the frame limit", length_prefix(max_frame + 1)),
        ("a frame of protocol version 99", bad_version),
    ]
}

/// Checks that every watched offender was cut off within `bound` and, when `refused`, told
/// why with an error frame; returns the slowest close.
pub(super) fn cut_off(watched: &[(&str, Watched)], bound: Duration, refused: bool) -> Duration {
    let mut slowest = Duration::ZERO;
    for (case, watched) in watched {
        let closed = watched
            .closed_after
            .unwrap_or_else(|| panic!("{case}: connection closed within {bound:?}: {watched:?}"));
        slowest = slowest.max(closed);
        if refused {
            assert!(!watched.error_codes().is_empty(), "{case}: an error frame: {watched:?}");
        }
    }
    slowest
}

/// After an attack off every member's path: nobody reloaded a key, every member answers
/// every key, every written value is intact, every member is on every ring.
pub(super) async fn unharmed(fixture: &Fixture) {
    // A member stalled for the liveness timeout by an overloaded machine (2 cores shared
    // with other jobs) is found down by the others, and its keys reload: only then are
    // reloads no failure. The attacks whose harm is a ring change (impostors, goodbyes)
    // assert the members, the refusals and their counters too.
    if fixture.views_unchanged() {
        for (key, loads) in fixture.background_loads() {
            assert_eq!(loads, 1, "{key}: still loaded once, the ring never changed");
        }
    } else {
        eprintln!(
            "hostile | note: a member's view of the members changed (a stall); reloads allowed"
        );
    }
    fixture.members_intact();
    fixture.check_background().await;
    fixture.check_kept(&[0, 1, 2]).await;
}

/// After a proxy attack on the path between members 0 and 1, healed: every member sees every
/// member again, answers every key right, and values written to the member off the path
/// (whose keys never moved) are intact; with `kept_everywhere`, all written values are (the
/// ring never changed).
async fn recovered(fixture: &Fixture, kept_everywhere: bool) {
    fixture.until_all_alive(Duration::from_secs(15)).await;
    fixture.check_background().await;
    let owners: &[usize] = if kept_everywhere { &[0, 1, 2] } else { &[2] };
    fixture.check_kept(owners).await;
}

/// Runs a proxy fault on both directions of the path between members 0 and 1 for
/// [`PATH_ATTACK`], then heals it.
async fn path_attack(fixture: &Fixture, behaviour: Behaviour) -> Observed {
    under_attack(fixture, async {
        fixture.fault_between(0, 1, Fault::both(behaviour));
        tokio::time::sleep(PATH_ATTACK).await;
        fixture.heal();
        format!("{behaviour:?} for {PATH_ATTACK:?}, healed")
    })
    .await
}

fn proxy_count(
    fixture: &Fixture,
    counter: fn(&ProxyStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    (0..2).map(|i| ProxyStats::get(counter(fixture.proxy(i).stats()))).sum()
}

/// 200 ms on every chunk both ways between two members: every get is answered right within
/// the deadline, the ones that cross the path take the delay twice.
pub async fn delayed_path_between_two_members(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let delay = Duration::from_millis(200);
    let observed = path_attack(&fixture, Behaviour::Delay(delay)).await;
    assert!(proxy_count(&fixture, |s| &s.delayed_chunks) > 0, "the path carried delayed chunks");
    assert!(observed.gets.slowest >= 2 * delay, "gets crossed the delayed path: {observed:?}");
    observed.assert_and_report(&fixture, "proxy: 200 ms per chunk between two members", 1.0);
    recovered(&fixture, true).await;
    fixture.shutdown().await;
}

/// Every byte on its own segment both ways between two members: every get is answered right.
pub async fn sliced_path_between_two_members(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let observed = path_attack(&fixture, Behaviour::Slice).await;
    let sliced = proxy_count(&fixture, |s| &s.sliced_writes);
    assert!(sliced > 1000, "the path carried sliced bytes: {sliced}");
    observed.assert_and_report(&fixture, "proxy: 1-byte writes between two members", 1.0);
    if fixture.views_unchanged() {
        for (key, loads) in fixture.background_loads() {
            assert_eq!(loads, 1, "{key}: still loaded once, slicing changes nothing");
        }
    }
    recovered(&fixture, true).await;
    fixture.shutdown().await;
}

/// Every connection between two members reset, again and again: the gets that would cross
/// the path are loaded locally instead; all three serve on and find each other once healed.
pub async fn reset_path_between_two_members(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let observed = path_attack(&fixture, Behaviour::Reset).await;
    assert!(proxy_count(&fixture, |s| &s.resets) > 0, "connections on the path were reset");
    observed.assert_and_report(
        &fixture,
        "proxy: every connection between two members reset",
        OFF_PATH_SHARE,
    );
    recovered(&fixture, false).await;
    fixture.shutdown().await;
}

/// The path between two members swallows every byte and never closes: the calls across it
/// time out and are loaded locally, the members find each other down, then up once healed.
pub async fn blackholed_path_between_two_members(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let observed = path_attack(&fixture, Behaviour::Blackhole).await;
    assert!(proxy_count(&fixture, |s| &s.blackholed_bytes) > 0, "the path swallowed bytes");
    observed.assert_and_report(&fixture, "proxy: blackhole between two members", OFF_PATH_SHARE);
    recovered(&fixture, false).await;
    fixture.shutdown().await;
}

/// One slowloris connection: it sends `drip` one byte a second from the first (nothing when
/// empty) until the
/// node closes it; how long after it connected that took, or why it could not tell within
/// `bound`.
pub(super) async fn slowloris(
    addr: SocketAddr,
    drip: Vec<u8>,
    bound: Duration,
) -> Result<Duration, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|error| format!("connect: {error}"))?;
    let started = Instant::now();
    let mut next = 0;
    if let Some(first) = drip.first() {
        stream.write_all(std::slice::from_ref(first)).await.map_err(|e| format!("write: {e}"))?;
        next = 1;
    }
    let mut buffer = [0u8; 1024];
    loop {
        let left = bound
            .checked_sub(started.elapsed())
            .ok_or_else(|| format!("still open after {bound:?} ({next} bytes sent)"))?;
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return Ok(started.elapsed()),
                Ok(_) => {}
            },
            () = tokio::time::sleep(left.min(Duration::from_secs(1))) => {
                if next < drip.len() {
                    if stream.write_all(&drip[next..=next]).await.is_err() {
                        return Ok(started.elapsed());
                    }
                    next += 1;
                }
            }
        }
    }
}

/// 200 connections on a member's peer port, half sending a hello one byte a second, half
/// silent: each is closed by the hello timeout; the cluster serves on.
pub async fn slowloris_on_the_peer_port(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let target = fixture.listen_addr(TARGET);
    let connections = 200;
    let drip = encode(&[(0, hello(CLUSTER, STRANGER, Some([1; 16])))]);
    let observed = under_attack(&fixture, async {
        let attackers: Vec<_> = (0..connections)
            .map(|i| {
                let drip = if i % 2 == 0 { drip.clone() } else { Vec::new() };
                tokio::spawn(slowloris(target, drip, HELLO_BOUND))
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for (i, attacker) in attackers.into_iter().enumerate() {
            let closed = attacker.await.expect("an attacker task");
            let closed = closed.unwrap_or_else(|why| panic!("slowloris {i}: {why}"));
            slowest = slowest.max(closed);
        }
        format!(
            "{connections} slow hellos / silent: all closed by the hello timeout, slowest {} ms",
            slowest.as_millis()
        )
    })
    .await;
    observed.assert_and_report(
        &fixture,
        "slowloris on the peer port (1 byte/s, silent)",
        OFF_PATH_SHARE,
    );
    unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// 10,000 connections opened and closed at once on a member's peer port (half with a FIN,
/// half with a reset), 64 at a time: the cluster serves on and the node holds no socket of
/// theirs afterwards.
pub async fn ten_thousand_connections_opened_and_closed(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let target = fixture.listen_addr(TARGET);
    let attempts = 10_000;
    let parallel = 64;
    let fds_before = open_fds();
    let observed = under_attack(&fixture, async {
        let started = Instant::now();
        let workers: Vec<_> = (0..parallel)
            .map(|w| {
                tokio::spawn(async move {
                    let mut failed = 0;
                    for n in (w..attempts).step_by(parallel) {
                        match tokio::time::timeout(FLOOD_CONNECT, TcpStream::connect(target)).await
                        {
                            Ok(Ok(stream)) if n % 2 == 1 => {
                                let _ = stream.set_zero_linger();
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(_)) | Err(_) => failed += 1,
                        }
                    }
                    failed
                })
            })
            .collect();
        let mut failed = 0;
        for worker in workers {
            failed += worker.await.expect("a flood worker");
        }
        format!(
            "{attempts} connect+close in {} ms, {failed} not connected within {FLOOD_CONNECT:?}",
            started.elapsed().as_millis()
        )
    })
    .await;
    observed.assert_and_report(&fixture, "10,000 connections opened and closed", OFF_PATH_SHARE);
    until_fds_back(fds_before).await;
    unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// Waits until the process holds at most a few more descriptors than `before` (the node
/// closed the attackers' connections); fails after a few seconds.
pub(super) async fn until_fds_back(before: usize) {
    let started = Instant::now();
    loop {
        let now = open_fds();
        if now <= before + 16 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the nodes closed the attackers' sockets: {now} descriptors open, {before} before"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// As many silent connections held open on a member's peer port as the descriptor limit
/// allows (each costs the process two: the attacker's and the node's), at most 2,000: each
/// is closed by the hello timeout, and the cluster serves on meanwhile.
pub async fn connections_opened_and_held(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let target = fixture.listen_addr(TARGET);
    let fds_before = open_fds();
    // A quarter of what is left: the attacker's and the node's ends, and room for the rest.
    let held = ((fd_limit().saturating_sub(fds_before)) / 4).min(2_000);
    assert!(held >= 100, "room for at least 100 held connections (limit {})", fd_limit());
    let observed = under_attack(&fixture, async {
        // One byte each (of a hello): a connection whose handshake the full listen queue
        // dropped looks open to a silent client forever, though the node never saw it; a
        // byte makes the kernel retry until the node has it.
        let attackers: Vec<_> =
            (0..held).map(|_| tokio::spawn(slowloris(target, vec![0], HELD_BOUND))).collect();
        let mut slowest = Duration::ZERO;
        for (i, attacker) in attackers.into_iter().enumerate() {
            let closed = attacker.await.expect("an attacker task");
            let closed = closed.unwrap_or_else(|why| panic!("held connection {i}: {why}"));
            slowest = slowest.max(closed);
        }
        format!("{held} held: all closed by the hello timeout, slowest {} ms", slowest.as_millis())
    })
    .await;
    // Each connection a node accepts costs memory before any handshake (its read buffer:
    // herdcache-async-std allocates 64 KiB per connection at once); what stays resident
    // afterwards is the allocator keeping it.
    let bound = RSS_BOUND + held as u64 * HELD_CONNECTION_COST;
    let attack = "connections opened and held (fd-limit aware)";
    observed.assert_and_report_within(&fixture, attack, OFF_PATH_SHARE, bound);
    until_fds_back(fds_before).await;
    unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// Garbage instead of a hello, each kind on a connection of its own: each refused at once
/// with an error frame and a logged reason; the cluster serves on.
pub async fn garbage_before_the_hello(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let target = fixture.listen_addr(TARGET);
    let cases = garbage_cases();
    let observed = under_attack(&fixture, async {
        let mut watched = Vec::new();
        for (case, bytes) in &cases {
            watched.push((*case, peer_wire::send_raw(target, bytes, REFUSAL_BOUND).await));
        }
        let slowest = cut_off(&watched, REFUSAL_BOUND, true);
        let codes: Vec<_> = watched.iter().flat_map(|(_, w)| w.error_codes()).collect();
        format!("{} kinds refused ({codes:?}), slowest {} ms", watched.len(), slowest.as_millis())
    })
    .await;
    let logged = observed.mark.warnings_with(&["connection refused"]);
    assert!(logged.len() >= cases.len(), "a refusal logged per offender: {logged:?}");
    observed.assert_and_report(&fixture, "garbage before the hello", OFF_PATH_SHARE);
    unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// Garbage after a completed handshake (by a process that holds the secret but is no
/// member): each connection refused at once with an error frame and a logged reason.
pub async fn garbage_after_the_handshake(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let target = fixture.listen_addr(TARGET);
    let cases = garbage_cases();
    let observed = under_attack(&fixture, async {
        let mut watched = Vec::new();
        for (case, bytes) in &cases {
            let dialler = SecretDialler::connect(target, CLUSTER, STRANGER, SECRET)
                .await
                .unwrap_or_else(|error| panic!("the handshake completes: {error}"));
            watched.push((*case, dialler.send_raw(bytes, REFUSAL_BOUND).await));
        }
        let slowest = cut_off(&watched, REFUSAL_BOUND, true);
        let codes: Vec<_> = watched.iter().flat_map(|(_, w)| w.error_codes()).collect();
        format!("{} kinds refused ({codes:?}), slowest {} ms", watched.len(), slowest.as_millis())
    })
    .await;
    let logged = observed.mark.warnings_with(&["connection refused"]);
    assert!(logged.len() >= cases.len(), "a refusal logged per offender: {logged:?}");
    observed.assert_and_report(&fixture, "garbage after the handshake", OFF_PATH_SHARE);
    unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// A put of a kept key of the target's with a forged value.
pub(super) fn forged_put(fixture: &Fixture) -> Message {
    Message::Put {
        keyspace: Bytes::from_static(KEYSPACE.as_bytes()),
        entry: PutEntry {
            key: Bytes::copy_from_slice(fixture.kept_key_of(TARGET).as_bytes()),
            value: Bytes::from_static(b"forged"),
            expires_at: None,
        },
    }
}

/// Processes that claim member 1's id to member 2 — without a nonce, with a nonce and no
/// proof, with a proof made with a wrong secret — each pipelining a forged put and a goodbye:
/// each refused at the hello (counted, logged, closed), nothing they sent is honoured.
pub async fn an_impostor_claiming_a_members_id(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let target = fixture.listen_addr(TARGET);
    let claimed = fixture.id(1).to_owned();
    let refused_before = fixture.node(TARGET).handle().security_stats().refused_unauthenticated;
    let put = forged_put(&fixture);
    let observed = under_attack(&fixture, async {
        let behind = [(1, put.clone()), (2, Message::Leaving)];
        let mut answers = Vec::new();
        let mut no_nonce = vec![(0, hello(CLUSTER, &claimed, None))];
        no_nonce.extend_from_slice(&behind);
        answers.push(("no nonce", peer_wire::raw_exchange(target, &no_nonce).await));
        let mut no_proof = vec![
            (0, hello(CLUSTER, &claimed, Some([7; 16]))),
            (0, Message::HelloProof { mac: [0; 32] }),
        ];
        no_proof.extend_from_slice(&behind);
        answers.push(("a zero proof", peer_wire::raw_exchange(target, &no_proof).await));
        let half = HalfHandshake::open(target, CLUSTER, &claimed).await.expect("the node's hello");
        let wrong = b"not the members' secret, but long enough";
        assert!(!half.node_proved(wrong), "a wrong secret does not check the node's proof");
        answers.push(("a wrong secret", half.prove_then(wrong, &behind).await));
        for (case, (frames, closed)) in &answers {
            assert!(closed, "{case}: the impostor's connection closed: {frames:?}");
            let refused = frames.iter().any(|(_, message)| {
                matches!(message, Message::Error(error) if error.code == ErrorCode::Unauthenticated)
            });
            assert!(refused, "{case}: refused as unauthenticated: {frames:?}");
            assert!(frames.iter().all(|(id, _)| *id == 0), "{case}: nothing answered: {frames:?}");
        }
        format!("{} impostors refused Unauthenticated, closed", answers.len())
    })
    .await;
    let refused = fixture.node(TARGET).handle().security_stats().refused_unauthenticated;
    assert_eq!(refused - refused_before, 3, "each impostor counted");
    let logged = observed.mark.warnings_with(&["connection refused", "Unauthenticated"]);
    assert!(logged.len() >= 3, "each impostor logged with its reason: {logged:?}");
    observed.assert_and_report(
        &fixture,
        "impostor claiming a member's id (no/wrong secret)",
        OFF_PATH_SHARE,
    );
    unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// Goodbyes no member said: from a process that holds the secret under an id no member has
/// (with a put and a clear: all refused `Unauthorized`, counted, logged), and in member 1's
/// name from a process without the secret (refused at the hello). Nobody leaves any ring.
pub async fn a_forged_leaving(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let target = fixture.listen_addr(TARGET);
    let claimed = fixture.id(1).to_owned();
    let before = fixture.node(TARGET).handle().security_stats();
    let put = forged_put(&fixture);
    let observed = under_attack(&fixture, async {
        let mut stranger = SecretDialler::connect(target, CLUSTER, STRANGER, SECRET)
            .await
            .unwrap_or_else(|error| panic!("the handshake completes: {error}"));
        let clear = Message::ClearKeyspace { keyspace: Bytes::from_static(KEYSPACE.as_bytes()) };
        let (frames, closed) =
            stranger.exchange(&[(0, Message::Leaving), (1, put.clone()), (2, clear)]).await;
        for id in 1..=2 {
            let refused = frames.iter().any(|(got, message)| {
                *got == id
                    && matches!(message, Message::Ack(Err(error)) if error.code == ErrorCode::Unauthorized)
            });
            assert!(refused, "request {id} refused as unauthorized: {frames:?}");
        }
        assert!(!closed, "an authenticated non-member keeps its connection (its gets are served)");
        let in_name = [(0, hello(CLUSTER, &claimed, None)), (0, Message::Leaving)];
        let (frames, closed) = peer_wire::raw_exchange(target, &in_name).await;
        assert!(closed, "the goodbye in a member's name: connection closed: {frames:?}");
        let refused = frames.iter().any(|(_, message)| {
            matches!(message, Message::Error(error) if error.code == ErrorCode::Unauthenticated)
        });
        assert!(refused, "the goodbye in a member's name refused at the hello: {frames:?}");
        // Long enough for a goodbye that was honoured to take the member off the rings.
        tokio::time::sleep(Duration::from_millis(500)).await;
        "non-member goodbye Unauthorized (connection kept), goodbye in a member's name Unauthenticated (closed)".to_owned()
    })
    .await;
    let after = fixture.node(TARGET).handle().security_stats();
    assert_eq!(
        after.refused_unauthorized - before.refused_unauthorized,
        3,
        "goodbye, put, clear counted"
    );
    assert_eq!(
        after.refused_unauthenticated - before.refused_unauthenticated,
        1,
        "the claim counted"
    );
    let logged = observed.mark.warnings_with(&["peer request refused", "Unauthorized"]);
    assert!(logged.len() >= 3, "each refused request logged with its reason: {logged:?}");
    observed.assert_and_report(
        &fixture,
        "forged Leaving (non-member; in a member's name)",
        OFF_PATH_SHARE,
    );
    unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// Frames of the largest size the limits allow (64 MiB), declared and sent in full before any
/// hello, on a few connections at once: the node must not buffer a whole frame for a peer
/// that has not even said who it is (before the handshake only a handshake's frame size is
/// accepted): each is refused at once. The peak of the resident set is what is bounded here:
/// a buffer of the frame limit is returned to the system when it is freed.
pub async fn largest_frames_before_the_hello(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start(runtime).await;
    let target = fixture.listen_addr(TARGET);
    let connections = 4;
    let max_frame = WireLimits::default().max_frame;
    let observed = under_attack(&fixture, async {
        let senders: Vec<_> = (0..connections)
            .map(|_| {
                tokio::spawn(async move {
                    let mut stream = TcpStream::connect(target).await.expect("connects");
                    let started = Instant::now();
                    // The attacker's own memory stays small: one chunk, written over and over.
                    let header = length_prefix(max_frame);
                    let chunk = vec![0xa5; 64 << 10];
                    let mut sent = stream.write_all(&header).await;
                    let mut left = max_frame as usize + 4 - header.len();
                    while sent.is_ok() && left > 0 {
                        let n = left.min(chunk.len());
                        sent = stream.write_all(&chunk[..n]).await;
                        left -= n;
                    }
                    let mut buffer = [0u8; 1024];
                    loop {
                        let left = REFUSAL_BOUND.checked_sub(started.elapsed())?;
                        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
                            Ok(Ok(0) | Err(_)) => return Some((started.elapsed(), sent.is_ok())),
                            Ok(Ok(_)) => {}
                            Err(_) => return None,
                        }
                    }
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for sender in senders {
            let (closed, _) = sender.await.expect("a sender").expect("closed within the bound");
            slowest = slowest.max(closed);
        }
        format!(
            "{connections} × {} MiB frames before a hello: closed, slowest {} ms",
            max_frame >> 20,
            slowest.as_millis()
        )
    })
    .await;
    let peak = observed.rss_peak.saturating_sub(observed.rss_before);
    observed.assert_and_report(
        &fixture,
        "largest frames before the hello (4 × 64 MiB)",
        OFF_PATH_SHARE,
    );
    assert!(peak <= RSS_BOUND, "the resident set peaked {} MiB higher", peak >> 20);
    unharmed(&fixture).await;
    fixture.shutdown().await;
}
