//! Real Go groupcache peers (the project's `gcpeer`) in one ring on loopback, loading from the
//! in-test origin: proves the Go harness, and that herdcache's groupcache ring
//! ([`RingScheme::GROUPCACHE`]) names the same owner for every key as Go does.
//!
//! Skipped (with a message) where Go is not installed; never skipped in CI.

use std::sync::Arc;
use std::time::Duration;

use herdcache_proto::{Ring, RingScheme};
use herdcache_tests::{
    GoGetError, GoPeer, GoPeerSpec, Origin, drive, go_peers_available, origin_value, within,
};
use hyper::StatusCode;
use tokio::task::JoinSet;

/// Starts `n` Go peers loading from `origin` (peer `i` tagged `go{i}`) and joins them into one
/// ring, in that order.
async fn go_ring(origin: &Origin, n: usize) -> Vec<Arc<GoPeer>> {
    let mut peers = Vec::new();
    for i in 0..n {
        let spec = GoPeerSpec::new(origin.template(&format!("go{i}")));
        peers.push(Arc::new(GoPeer::start(&spec).await.expect("a Go peer starts")));
    }
    let ring: Vec<String> = peers.iter().map(|peer| peer.base_url().to_owned()).collect();
    for peer in &peers {
        peer.set_peers(&ring).await.expect("the Go peer takes the ring");
    }
    peers
}

/// The tag of the peer that owns `key` on the groupcache ring over `peers`, by herdcache's ring.
fn owner_tag(peers: &[Arc<GoPeer>], key: &[u8]) -> String {
    let urls: Vec<&str> = peers.iter().map(|peer| peer.base_url()).collect();
    let ring = Ring::with_peers(RingScheme::GROUPCACHE, urls.iter().copied()).expect("a ring");
    let owner = ring.owner(key).expect("a non-empty ring");
    let index = urls.iter().position(|url| url == owner).expect("the owner is a peer");
    format!("go{index}")
}

/// Asks every peer for every key, `batch` keys at a time (all peers and keys of a batch
/// concurrently), and checks each answer is the origin's value.
async fn every_peer_answers_every_key(peers: &[Arc<GoPeer>], keys: &[Vec<u8>], batch: usize) {
    for chunk in keys.chunks(batch) {
        let mut gets = JoinSet::new();
        for key in chunk {
            for peer in peers {
                let (peer, key) = (Arc::clone(peer), key.clone());
                gets.spawn(async move {
                    let answer = peer.get(&key).await;
                    (key, peer, answer)
                });
            }
        }
        while let Some(joined) = gets.join_next().await {
            let (key, peer, answer) = joined.expect("a get task");
            let shown = String::from_utf8_lossy(&key);
            let value =
                answer.unwrap_or_else(|error| panic!("{} get {shown:?}: {error}", peer.base_url()));
            assert_eq!(value, origin_value(&key), "{}, key {shown:?}", peer.base_url());
        }
    }
}

#[test]
fn go_ring_loads_each_key_once_and_agrees_with_herdcache_ring() {
    if !go_peers_available() {
        return;
    }
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        // Slow enough that concurrent gets of one key overlap at the owner.
        origin.set_delay(Duration::from_millis(20));
        let peers = go_ring(&origin, 3).await;
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("key-{i}").into_bytes()).collect();

        within(Duration::from_secs(120), "200 keys from 3 Go peers", async {
            every_peer_answers_every_key(&peers, &keys, 25).await;
        })
        .await;

        assert_eq!(origin.loads(), keys.len(), "one origin load per key in the ring");
        for key in &keys {
            assert_eq!(
                origin.loaders_of(key),
                vec![owner_tag(&peers, key)],
                "key {:?} is loaded by its owner on the groupcache ring",
                String::from_utf8_lossy(key)
            );
        }
        let mut local_loads = 0;
        let mut server_requests = 0;
        for peer in &peers {
            let stats = peer.stats().await.expect("stats");
            assert_eq!(stats.self_url, peer.base_url());
            assert_eq!(stats.local_load_errs, 0, "{stats:?}");
            assert!(stats.peer_loads > 0, "every peer fetched from the others: {stats:?}");
            local_loads += stats.local_loads;
            server_requests += stats.server_requests;
        }
        assert_eq!(local_loads, 200);
        assert!(server_requests >= 2 * 200, "each key fetched from its owner by two peers");
    });
}

#[test]
fn go_ring_handles_keys_that_need_escaping() {
    if !go_peers_available() {
        return;
    }
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        let peers = go_ring(&origin, 3).await;
        let keys: Vec<Vec<u8>> =
            ["a+b", "100%", "50%25", "x/y/z", "?q=1&r=2#frag", "ключ✓ü", "", "~._-", "\u{0}\t"]
                .iter()
                .map(|key| key.as_bytes().to_vec())
                .collect();

        within(Duration::from_secs(60), "awkward keys from 3 Go peers", async {
            every_peer_answers_every_key(&peers, &keys, keys.len()).await;
        })
        .await;
        for key in &keys {
            assert_eq!(
                origin.loaders_of(key),
                vec![owner_tag(&peers, key)],
                "key {:?}: one load, by its owner",
                String::from_utf8_lossy(key)
            );
        }
    });
}

/// golang/groupcache's client escapes the key with `url.QueryEscape` (space → `+`) while its
/// server decodes the path (`+` stays `+`): a key with a space asked of a non-owner reaches
/// its owner as another key. Measured here so that interop code knows what real Go peers do.
#[test]
fn go_groupcache_turns_a_space_into_a_plus_between_peers() {
    if !go_peers_available() {
        return;
    }
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        let peers = go_ring(&origin, 3).await;
        let owner = owner_tag(&peers, b"a b");
        for (i, peer) in peers.iter().enumerate() {
            let value = peer.get("a b").await.expect("an answer");
            if format!("go{i}") == owner {
                assert_eq!(value, origin_value(b"a b"), "the owner loads the key itself");
            } else {
                assert_eq!(value, origin_value(b"a+b"), "through a peer, the key became a+b");
            }
        }
        assert_eq!(origin.loaders_of("a b"), vec![owner], "only the owner saw the real key");
        assert_eq!(origin.loads_of("a+b"), 1, "the mangled key is loaded once");
    });
}

#[test]
fn go_peer_reports_an_origin_error_and_dies_with_its_handle() {
    if !go_peers_available() {
        return;
    }
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        origin.respond_with("gone", StatusCode::NOT_FOUND);
        let mut peer =
            GoPeer::start(&GoPeerSpec::new(origin.template("go0"))).await.expect("a Go peer");
        match peer.get("gone").await {
            Err(GoGetError::Status { status, message }) => {
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                assert!(message.contains("404"), "{message}");
            }
            other => panic!("expected a 500 from the Go peer, got {other:?}"),
        }
        assert_eq!(peer.stats().await.expect("stats").local_load_errs, 1);

        let url = peer.base_url().to_owned();
        let status = peer.kill().await.expect("killed");
        assert!(!status.success());
        assert!(herdcache_tests::http::get(&format!("{url}/stats")).await.is_err(), "gone");
    });
}
