//! Two real Go groupcache peers and one herdcache node in groupcache-compatibility mode, in one
//! ring on loopback, all loading from the in-test origin: the herdcache node is a peer like
//! the others — same owners, one load per key cluster-wide, fetches both ways.
//!
//! Skipped (with a message) where Go is not installed; never skipped in CI.

use std::sync::Arc;
use std::time::Duration;

use herdcache_proto::{Ring, RingScheme};
use herdcache_tests::http::{escape, get};
use herdcache_tests::{
    GoPeer, GoPeerSpec, KEYSPACE, KEYSPACE_BYTES, Origin, drive, go_peers_available, origin_value,
    within,
};
use herdcache_tokio::{Bytes, Handle, KeyspaceConfig, Node, source_fn};
use tokio::task::JoinSet;

/// The ring: `go0`, `go1` (Go) and `hc` (herdcache), each loading from `origin` under its tag.
struct MixedRing {
    go: Vec<Arc<GoPeer>>,
    herdcache: Handle,
    urls: Vec<String>,
}

impl MixedRing {
    async fn start(origin: &Origin) -> MixedRing {
        let mut go = Vec::new();
        for i in 0..2 {
            let spec = GoPeerSpec::new(origin.template(&format!("go{i}")));
            go.push(Arc::new(GoPeer::start(&spec).await.expect("a Go peer starts")));
        }
        let template = origin.template("hc");
        let source = source_fn(move |key: Bytes| {
            let url = template.replace("{key}", &escape(&key));
            async move {
                let answer = get(&url).await?;
                if answer.status.is_success() {
                    Ok(answer.body)
                } else {
                    Err(std::io::Error::other(format!("origin answered {}", answer.status)))
                }
            }
        });
        let herdcache = Node::builder()
            .groupcache_compat()
            .keyspace(KeyspaceConfig::new(KEYSPACE, KEYSPACE_BYTES), source)
            // One load per key holds while owners answer within the peer timeout.
            .config(|config| config.peer_timeout = Duration::from_secs(5))
            .start()
            .await
            .expect("the herdcache node starts");
        let mut urls: Vec<String> = go.iter().map(|peer| peer.base_url().to_owned()).collect();
        urls.push(herdcache.node_id().to_owned());
        for peer in &go {
            peer.set_peers(&urls).await.expect("the Go peer takes the ring");
        }
        herdcache.set_peers(urls.clone());
        MixedRing { go, herdcache, urls }
    }

    /// The tag of `key`'s owner on the groupcache ring.
    fn owner_tag(&self, key: &[u8]) -> String {
        let ring = Ring::with_peers(RingScheme::GROUPCACHE, self.urls.iter().map(String::as_str))
            .expect("a ring");
        let owner = ring.owner(key).expect("a non-empty ring");
        match self.urls.iter().position(|url| url == owner) {
            Some(2) => "hc".to_owned(),
            Some(index) => format!("go{index}"),
            None => unreachable!("the owner is a member"),
        }
    }

    /// `key` as answered by member `index` (0 and 1: Go, 2: herdcache).
    async fn get(&self, index: usize, key: Vec<u8>) -> Result<Bytes, String> {
        match index {
            2 => self.herdcache.get(KEYSPACE, key).await.map_err(|error| error.to_string()),
            i => self.go[i].get(&key).await.map_err(|error| error.to_string()),
        }
    }
}

/// Every member answers every key, `batch` keys at a time, all concurrently.
async fn every_member_answers(ring: &Arc<MixedRing>, keys: &[Vec<u8>], batch: usize) {
    for chunk in keys.chunks(batch) {
        let mut gets = JoinSet::new();
        for key in chunk {
            for member in 0..3 {
                let (ring, key) = (Arc::clone(ring), key.clone());
                gets.spawn(async move { (member, key.clone(), ring.get(member, key).await) });
            }
        }
        while let Some(joined) = gets.join_next().await {
            let (member, key, answer) = joined.expect("a get task");
            let shown = String::from_utf8_lossy(&key);
            let value =
                answer.unwrap_or_else(|error| panic!("member {member}, {shown:?}: {error}"));
            assert_eq!(value, origin_value(&key), "member {member}, key {shown:?}");
        }
    }
}

#[test]
fn mixed_ring_loads_each_of_1000_keys_once_and_everyone_answers_everything() {
    if !go_peers_available() {
        return;
    }
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        let ring = Arc::new(MixedRing::start(&origin).await);
        let keys: Vec<Vec<u8>> = (0..1_000).map(|i| format!("key-{i}").into_bytes()).collect();
        within(Duration::from_secs(240), "1000 keys from 3 members", async {
            every_member_answers(&ring, &keys, 50).await;
        })
        .await;
        assert_eq!(origin.loads(), keys.len(), "one origin load per key, summed over 3 processes");
        for key in &keys {
            assert_eq!(origin.loaders_of(key), vec![ring.owner_tag(key)], "loaded by its owner");
        }
        // The Go peers fetched keys from the herdcache node and took its answers.
        for peer in &ring.go {
            let stats = peer.stats().await.expect("stats");
            assert_eq!(stats.peer_errors, 0, "every fetch answered: {stats:?}");
            assert!(stats.peer_loads > 0, "{stats:?}");
        }
        let owned_by_herdcache = keys.iter().filter(|key| ring.owner_tag(key) == "hc").count();
        assert!(owned_by_herdcache > 0, "the herdcache node owns part of the ring");
        let by = |tag: &str| keys.iter().filter(|key| origin.loaders_of(key) == [tag]).count();
        let mut fetched = Vec::new();
        for peer in &ring.go {
            fetched.push(peer.stats().await.expect("stats").peer_loads);
        }
        eprintln!(
            "mixed ring, {} keys: origin loads {} (go0 {}, go1 {}, herdcache {}); Go peers' \
             fetches from their peers {fetched:?}",
            keys.len(),
            origin.loads(),
            by("go0"),
            by("go1"),
            by("hc"),
        );
    });
}

#[test]
fn a_cold_key_asked_30_times_across_the_ring_loads_once() {
    if !go_peers_available() {
        return;
    }
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        origin.set_delay(Duration::from_millis(200));
        let ring = Arc::new(MixedRing::start(&origin).await);
        // One cold key per possible owner, so that each kind of owner is stampeded.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for tag in ["go0", "go1", "hc"] {
            let key = (0..)
                .map(|i| format!("cold-{i}").into_bytes())
                .find(|key| ring.owner_tag(key) == tag)
                .expect("some key");
            keys.push(key);
        }
        for key in keys {
            let mut gets = JoinSet::new();
            for i in 0..30 {
                let (ring, key) = (Arc::clone(&ring), key.clone());
                gets.spawn(async move { ring.get(i % 3, key).await });
            }
            within(Duration::from_secs(30), "the stampede", async {
                while let Some(joined) = gets.join_next().await {
                    assert_eq!(joined.expect("a task"), Ok(origin_value(&key)));
                }
            })
            .await;
            assert_eq!(origin.loads_of(&key), 1, "{:?}", String::from_utf8_lossy(&key));
        }
    });
}

#[test]
fn awkward_keys_have_one_owner_and_one_value_everywhere() {
    if !go_peers_available() {
        return;
    }
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        let ring = Arc::new(MixedRing::start(&origin).await);
        let keys: Vec<Vec<u8>> = ["a+b", "x/y/z", "%2F", "100%", "ключ🔑ü", "", "~._-"]
            .iter()
            .map(|key| key.as_bytes().to_vec())
            .collect();
        within(Duration::from_secs(60), "awkward keys", async {
            every_member_answers(&ring, &keys, keys.len()).await;
        })
        .await;
        for key in &keys {
            let shown = String::from_utf8_lossy(key);
            assert_eq!(origin.loaders_of(key), vec![ring.owner_tag(key)], "{shown:?}");
        }

        // A space: herdcache's client writes `%20`, so it always gets the key's own value; Go's
        // client writes `+`, which every server (Go's and herdcache's) reads as a plus.
        let key = b"a b".to_vec();
        let owner = ring.owner_tag(&key);
        assert_eq!(ring.get(2, key.clone()).await, Ok(origin_value(&key)));
        for i in 0..2 {
            let expected = if owner == format!("go{i}") { &b"a b"[..] } else { &b"a+b"[..] };
            assert_eq!(ring.get(i, key.clone()).await, Ok(origin_value(expected)), "go{i}");
        }
    });
}

#[test]
fn a_killed_go_peer_leaves_the_others_answering_with_bounded_loads() {
    if !go_peers_available() {
        return;
    }
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        let ring = MixedRing::start(&origin).await;
        let survivor = Arc::clone(&ring.go[0]);
        let MixedRing { mut go, herdcache, urls } = ring;
        let victim = go.pop().expect("two Go peers");
        let mut victim = Arc::into_inner(victim).expect("not shared");
        victim.kill().await.expect("killed");
        let ring = Arc::new(MixedRing { go: vec![Arc::clone(&survivor)], herdcache, urls });

        let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("after-{i}").into_bytes()).collect();
        within(Duration::from_secs(120), "gets with a dead member", async {
            for key in &keys {
                // Members 0 (the surviving Go peer) and 2 (herdcache); the ring still names
                // the dead peer, whose keys each survivor loads itself.
                for member in [0, 2] {
                    let value = ring.get(member, key.clone()).await;
                    assert_eq!(value, Ok(origin_value(key)), "member {member}");
                }
            }
        })
        .await;
        for key in &keys {
            let loads = origin.loads_of(key);
            let bound = if ring.owner_tag(key) == "go1" { 2 } else { 1 };
            assert!(loads <= bound, "{:?}: {loads} loads", String::from_utf8_lossy(key));
        }
    });
}
