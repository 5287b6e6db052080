//! The attacks on mutual TLS between peers, and on the inbound connection cap: the same
//! cluster (each member behind its proxy, its certificate naming its id exactly:
//! `herdcache://ID`, from one test CA), no cluster secret — TLS alone binds the ids.
//!
//! Member 2 is the target; the attacker's TLS client is the runtime's own sans-IO
//! [`TlsSession`] over a tokio socket, with certificates from the same test CA (a valid
//! certificate for an id that is not the one it claims) or from another CA.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use herdcache_proto::{ErrorCode, FrameDecoder, Message, WireLimits};
use herdcache_runtime::tls::{TlsConfig, TlsSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::attacks::{HELLO_BOUND, REFUSAL_BOUND, STRANGER, TARGET, garbage_cases, slowloris};
use super::{Fixture, OFF_PATH_SHARE, RSS_BOUND, Transport, open_fds, under_attack};
use crate::certs::TestPki;
use crate::harness::{CLUSTER, Runtime};
use crate::peer_wire::{self, Watched, encode, hello};

/// How long a TLS client waits after its own handshake ended for the node to end its own.
const SERVER_FINISHES: Duration = Duration::from_millis(200);

/// A TLS client that completed its handshake with a node: it speaks the native protocol
/// inside the session.
struct TlsDialler {
    stream: TcpStream,
    session: TlsSession,
    plaintext: BytesMut,
}

impl TlsDialler {
    /// Dials `addr` (the node `node_id`) with `config`'s certificate and completes the TLS
    /// handshake.
    async fn connect(addr: SocketAddr, config: &TlsConfig, node_id: &str) -> Result<Self, String> {
        TlsDialler::connect_then(addr, config, node_id, &[]).await
    }

    /// [`TlsDialler::connect`], sending `first` in the same write as the client's last
    /// handshake flight (its Finished), as a dialler with calls queued does.
    async fn connect_then(
        addr: SocketAddr,
        config: &TlsConfig,
        node_id: &str,
        first: &[u8],
    ) -> Result<Self, String> {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut session =
            TlsSession::connect(config, node_id.as_bytes()).map_err(|e| e.to_string())?;
        let mut plaintext = BytesMut::new();
        let mut out = Vec::new();
        let mut buffer = vec![0u8; 16 << 10];
        loop {
            session.pending_ciphertext(&mut out);
            if !session.is_handshaking() && !first.is_empty() {
                session.send(first, &mut out);
            }
            if !out.is_empty() {
                stream.write_all(&out).await.map_err(|e| e.to_string())?;
                out.clear();
            }
            if !session.is_handshaking() {
                return Ok(TlsDialler { stream, session, plaintext });
            }
            let n = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during the TLS handshake".to_owned());
            }
            session.receive(&buffer[..n], &mut plaintext).map_err(|e| e.to_string())?;
        }
    }

    /// Sends `plaintext` inside the session.
    async fn send(&mut self, plaintext: &[u8]) {
        let mut out = Vec::new();
        self.session.send(plaintext, &mut out);
        let _ = self.stream.write_all(&out).await;
    }

    /// Reads until the node closes the connection (EOF, a reset, a close_notify, or a
    /// session error) or `limit` after `started`; the frames it sent inside the session.
    async fn watch_close(&mut self, started: Instant, limit: Duration) -> Watched {
        let mut decoder = FrameDecoder::new(WireLimits::default());
        let mut frames = Vec::new();
        let mut buffer = vec![0u8; 16 << 10];
        let closed_after = loop {
            decoder.push(&self.plaintext.split()).expect("the node's frames decode");
            while let Ok(Some((_, message))) = decoder.next_frame() {
                frames.push(message);
            }
            if self.session.peer_closed() {
                break Some(started.elapsed());
            }
            let Some(left) = limit.checked_sub(started.elapsed()) else { break None };
            match tokio::time::timeout(left, self.stream.read(&mut buffer)).await {
                Err(_) => break None,
                Ok(Ok(0) | Err(_)) => break Some(started.elapsed()),
                Ok(Ok(n)) => {
                    if self.session.receive(&buffer[..n], &mut self.plaintext).is_err() {
                        break Some(started.elapsed());
                    }
                }
            }
        };
        Watched { frames, closed_after }
    }
}

/// The certificate of a process that is no member: valid (from the cluster's CA), for an id
/// no member has.
fn stranger_config(pki: &TestPki) -> TlsConfig {
    let cert = pki.node_for_id(STRANGER);
    TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes(), pki.ca_pem().as_bytes())
        .expect("a stranger's TLS configuration")
}

fn handshake_failures(fixture: &Fixture) -> u64 {
    fixture.node(TARGET).handle().transport_stats().tls_handshake_failures
}

/// Connections that start a TLS handshake one byte a second (the first bytes of a real
/// ClientHello), or say nothing: each is closed by the handshake timeout, counted.
pub async fn slowloris_on_the_tls_handshake(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start_with(runtime, Transport::Tls).await;
    let target = fixture.listen_addr(TARGET);
    let connections = 100;
    let client_hello = {
        let config = stranger_config(fixture.pki());
        let mut session =
            TlsSession::connect(&config, fixture.id(TARGET).as_bytes()).expect("a TLS session");
        let mut hello = Vec::new();
        session.pending_ciphertext(&mut hello);
        hello
    };
    let failures_before = handshake_failures(&fixture);
    let observed = under_attack(&fixture, async {
        let attackers: Vec<_> = (0..connections)
            .map(|i| {
                let drip = if i % 2 == 0 { client_hello.clone() } else { Vec::new() };
                tokio::spawn(slowloris(target, drip, HELLO_BOUND))
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for (i, attacker) in attackers.into_iter().enumerate() {
            let closed = attacker.await.expect("an attacker task");
            slowest = slowest.max(closed.unwrap_or_else(|why| panic!("slowloris {i}: {why}")));
        }
        format!(
            "{connections} slow ClientHellos / silent: closed by the handshake timeout, slowest {} ms",
            slowest.as_millis()
        )
    })
    .await;
    let failures = handshake_failures(&fixture) - failures_before;
    assert!(failures >= connections as u64, "each stalled handshake counted: {failures}");
    observed.assert_and_report(&fixture, "TLS: slowloris on the handshake", OFF_PATH_SHARE);
    super::attacks::unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// Garbage instead of a ClientHello, and a plaintext hello on the TLS port: each handshake
/// fails at the first bytes, the connection is closed at once and counted.
pub async fn garbage_and_plaintext_before_the_tls_handshake(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start_with(runtime, Transport::Tls).await;
    let target = fixture.listen_addr(TARGET);
    let mut cases = garbage_cases();
    let plaintext = encode(&[(0, hello(CLUSTER, fixture.id(1), None))]);
    cases.push(("a plaintext hello (a plaintext client)", plaintext));
    let failures_before = handshake_failures(&fixture);
    let observed = under_attack(&fixture, async {
        let mut watched = Vec::new();
        for (case, bytes) in &cases {
            watched.push((*case, peer_wire::send_raw(target, bytes, REFUSAL_BOUND).await));
        }
        let slowest = super::attacks::cut_off(&watched, REFUSAL_BOUND, false);
        format!(
            "{} kinds: handshake failed, closed, slowest {} ms",
            watched.len(),
            slowest.as_millis()
        )
    })
    .await;
    let failures = handshake_failures(&fixture) - failures_before;
    assert!(failures >= cases.len() as u64, "each failed handshake counted: {failures}");
    let logged = observed.mark.warnings();
    assert!(!logged.is_empty(), "the failed handshakes were logged");
    observed.assert_and_report(
        &fixture,
        "TLS: garbage / plaintext before the handshake",
        OFF_PATH_SHARE,
    );
    super::attacks::unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// After a completed TLS handshake with a valid certificate (of a non-member): garbage inside
/// the session (refused by the node, logged with the reason), and garbage outside it (bytes
/// that are no TLS record): each connection closed at once.
pub async fn garbage_after_the_tls_handshake(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start_with(runtime, Transport::Tls).await;
    let target = fixture.listen_addr(TARGET);
    let config = stranger_config(fixture.pki());
    let cases = garbage_cases();
    let observed = under_attack(&fixture, async {
        let mut inside = Vec::new();
        let mut outside = Vec::new();
        for (case, bytes) in &cases {
            let mut dialler = TlsDialler::connect(target, &config, fixture.id(TARGET))
                .await
                .unwrap_or_else(|error| panic!("the TLS handshake completes: {error}"));
            // The client's handshake ends before the server's (TLS 1.3): let the node finish
            // its own, so that the garbage is taken as frames, not as handshake bytes (see
            // `a_burst_right_after_the_tls_handshake`).
            tokio::time::sleep(SERVER_FINISHES).await;
            let started = Instant::now();
            dialler.send(bytes).await;
            inside.push((*case, dialler.watch_close(started, REFUSAL_BOUND).await));
            let mut dialler = TlsDialler::connect(target, &config, fixture.id(TARGET))
                .await
                .unwrap_or_else(|error| panic!("the TLS handshake completes: {error}"));
            let started = Instant::now();
            let _ = dialler.stream.write_all(bytes).await;
            outside.push((*case, dialler.watch_close(started, REFUSAL_BOUND).await));
        }
        // The node's error frame may be lost inside the session: it closes with the rest of
        // the garbage unread, and the reset that sends can discard what the attacker had not
        // read yet. The refusal's log line is asserted instead.
        let slowest = super::attacks::cut_off(&inside, REFUSAL_BOUND, false)
            .max(super::attacks::cut_off(&outside, REFUSAL_BOUND, false));
        let codes: Vec<_> = inside.iter().flat_map(|(_, w)| w.error_codes()).collect();
        format!(
            "{} kinds inside the session refused ({codes:?}), outside it closed, slowest {} ms",
            cases.len(),
            slowest.as_millis()
        )
    })
    .await;
    let logged = observed.mark.warnings_with(&["connection refused"]);
    assert!(logged.len() >= cases.len(), "a refusal logged per offender inside: {logged:?}");
    observed.assert_and_report(&fixture, "TLS: garbage after the handshake", OFF_PATH_SHARE);
    super::attacks::unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// Valid certificates for other ids claiming member 1's id in the hello (a non-member's, and
/// member 0's own), with a forged put and a goodbye behind: refused at the hello
/// (Unauthenticated, counted, logged, closed); a certificate from another CA fails the
/// handshake.
pub async fn a_certificate_for_another_id(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start_with(runtime, Transport::Tls).await;
    let target = fixture.listen_addr(TARGET);
    let claimed = fixture.id(1).to_owned();
    let member_0 = {
        let cert = fixture.pki().node_for_id(fixture.id(0));
        TlsConfig::from_pem(
            cert.cert_pem.as_bytes(),
            cert.key_pem.as_bytes(),
            fixture.pki().ca_pem().as_bytes(),
        )
        .expect("member 0's certificate")
    };
    // Its own certificate from another CA; it trusts the cluster's, so that the refusal is
    // the node's.
    let other_ca = {
        let cert = TestPki::new().node_for_id(&claimed);
        let ca = fixture.pki().ca_pem().as_bytes();
        TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes(), ca)
            .expect("a certificate from another CA")
    };
    let stranger = stranger_config(fixture.pki());
    let refused_before = fixture.node(TARGET).handle().security_stats().refused_unauthenticated;
    let failures_before = handshake_failures(&fixture);
    let put = super::attacks::forged_put(&fixture);
    let observed = under_attack(&fixture, async {
        let frames = encode(&[(0, hello(CLUSTER, &claimed, None)), (1, put.clone()), (2, Message::Leaving)]);
        let mut watched = Vec::new();
        for (case, config) in [("a non-member's certificate", &stranger), ("member 0's certificate", &member_0)] {
            let mut dialler = TlsDialler::connect(target, config, fixture.id(TARGET))
                .await
                .unwrap_or_else(|error| panic!("{case}: the TLS handshake completes: {error}"));
            let started = Instant::now();
            dialler.send(&frames).await;
            let seen = dialler.watch_close(started, REFUSAL_BOUND).await;
            assert!(
                seen.error_codes() == [ErrorCode::Unauthenticated],
                "{case}: refused as unauthenticated, nothing answered: {seen:?}"
            );
            watched.push((case, seen));
        }
        let slowest = super::attacks::cut_off(&watched, REFUSAL_BOUND, true);
        // The server may only find the client's certificate bad after the client's last
        // handshake flight: either way the connection ends without a hello answered.
        let mut other = TlsDialler::connect(target, &other_ca, fixture.id(TARGET)).await;
        if let Ok(dialler) = other.as_mut() {
            let started = Instant::now();
            dialler.send(&frames).await;
            let seen = dialler.watch_close(started, REFUSAL_BOUND).await;
            assert!(seen.closed_after.is_some() && seen.frames.is_empty(), "another CA: {seen:?}");
        }
        format!(
            "claims with 2 valid certificates for other ids refused Unauthenticated, another CA's failed the handshake; slowest {} ms",
            slowest.as_millis()
        )
    })
    .await;
    let refused = fixture.node(TARGET).handle().security_stats().refused_unauthenticated;
    assert_eq!(refused - refused_before, 2, "each claim counted");
    assert!(handshake_failures(&fixture) > failures_before, "another CA's certificate counted");
    let logged = observed.mark.warnings_with(&["connection refused", "Unauthenticated"]);
    assert!(logged.len() >= 2, "each claim logged with its reason: {logged:?}");
    observed.assert_and_report(&fixture, "TLS: a valid certificate for another id", OFF_PATH_SHARE);
    super::attacks::unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// The inbound connection cap: with room for 256, 1,000 connections held open (one byte
/// each): never more than the cap open at once (sampled), those over it closed at once and
/// counted, the rest by the hello timeout; memory is that of the cap, not of the attack.
pub async fn connections_over_the_inbound_cap(runtime: &'static dyn Runtime) {
    let cap = 256;
    let fixture = Fixture::start_with(runtime, Transport::Capped(cap)).await;
    let target = fixture.listen_addr(TARGET);
    let held = 1_000;
    let fds_before = open_fds();
    let refused_before = fixture.node(TARGET).handle().transport_stats().inbound_refused;
    let node = std::sync::Arc::clone(fixture.node(TARGET));
    let most_open = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = {
        let most_open = std::sync::Arc::clone(&most_open);
        tokio::spawn(async move {
            loop {
                let open = node.handle().transport_stats().inbound_open;
                most_open.fetch_max(open, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let observed = under_attack(&fixture, async {
        let attackers: Vec<_> = (0..held)
            .map(|_| tokio::spawn(slowloris(target, vec![0], super::attacks::HELD_BOUND)))
            .collect();
        let mut closes = Vec::new();
        for (i, attacker) in attackers.into_iter().enumerate() {
            let closed = attacker.await.expect("an attacker task");
            closes.push(closed.unwrap_or_else(|why| panic!("held connection {i}: {why}")));
        }
        closes.sort();
        let at_once = closes.iter().filter(|closed| **closed < REFUSAL_BOUND).count();
        format!(
            "{held} held over a cap of {cap}: {at_once} closed at once, slowest {} ms",
            closes.last().map_or(0, Duration::as_millis)
        )
    })
    .await;
    sampling.abort();
    let most_open = most_open.load(std::sync::atomic::Ordering::Relaxed);
    assert!(most_open <= cap as u64, "at most the cap open at once: {most_open}");
    // Those admitted close by the hello timeout and make room for later ones: at least the
    // connections over the cap while the first ones were open were refused.
    let refused = fixture.node(TARGET).handle().transport_stats().inbound_refused - refused_before;
    assert!(refused >= (held / 2) as u64, "the connections over the cap counted: {refused}");
    observed.assert_and_report(&fixture, "inbound cap 256: 1,000 connections held", OFF_PATH_SHARE);
    assert!(observed.rss_peak - observed.rss_before <= RSS_BOUND, "memory of the cap only");
    super::attacks::until_fds_back(fds_before).await;
    super::attacks::unharmed(&fixture).await;
    fixture.shutdown().await;
}

/// A TLS client that sends more than the handshake byte limit (64 KiB) right after its own
/// handshake ended — as a dialling member does when it flushes the calls it queued while
/// connecting (a put of a large value) — is served, not refused as a handshake too large:
/// the bytes after the client's Finished are frames, not handshake bytes.
pub async fn a_burst_right_after_the_tls_handshake(runtime: &'static dyn Runtime) {
    let fixture = Fixture::start_with(runtime, Transport::Tls).await;
    let target = fixture.listen_addr(TARGET);
    let config = stranger_config(fixture.pki());
    let failures_before = handshake_failures(&fixture);
    let observed = under_attack(&fixture, async {
        // A hello, then 20 gets of 8 KiB keys (160 KiB) at once, with the client's Finished.
        let mut frames = vec![(0, hello(CLUSTER, STRANGER, None))];
        for i in 0..20u64 {
            let mut key = format!("burst-{i}-").into_bytes();
            key.resize(8 << 10, b'k');
            frames.push((
                i + 1,
                Message::Get {
                    keyspace: bytes::Bytes::from_static(crate::harness::KEYSPACE.as_bytes()),
                    key: key.into(),
                    timeout_ms: 5_000,
                },
            ));
        }
        let started = Instant::now();
        let mut dialler =
            TlsDialler::connect_then(target, &config, fixture.id(TARGET), &encode(&frames))
                .await
                .unwrap_or_else(|error| panic!("the TLS handshake completes: {error}"));
        let seen = dialler.watch_close(started, REFUSAL_BOUND).await;
        let answered =
            seen.frames.iter().filter(|frame| matches!(frame, Message::GetReply(_))).count();
        assert!(seen.closed_after.is_none(), "the connection stays open: {:?}", seen.closed_after);
        assert_eq!(answered, 20, "every get answered");
        "160 KiB right after the handshake: served".to_owned()
    })
    .await;
    assert_eq!(handshake_failures(&fixture), failures_before, "no handshake failed");
    observed.assert_and_report(&fixture, "TLS: a burst right after the handshake", OFF_PATH_SHARE);
    fixture.shutdown().await;
}
