//! Real Go groupcache peers (the project's `gcpeer`) over mutual TLS: `HTTPPool` given a
//! transport with a client certificate and the CA, serving HTTPS that requires clients'
//! certificates. Proves the Go side that herdcache's groupcache-over-https tests run against
//! (`cli/tests/tls.rs`), and that such a Go peer refuses a client from another CA.
//!
//! Skipped (with a message) where Go is not installed; never skipped in CI.

use std::path::PathBuf;
use std::time::Duration;

use herdcache_tests::certs::TestPki;
use herdcache_tests::{
    GoPeer, GoPeerSpec, GoPeerTls, Origin, drive, go_peers_available, key_owned_by, origin_value,
    within,
};

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdcache-go-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// A Go peer loading from `origin` as `tag`, with `pki`'s certificate for 127.0.0.1.
async fn tls_peer(origin: &Origin, tag: &str, pki: &TestPki, dir: &std::path::Path) -> GoPeer {
    let files = pki.node_with_names(&["127.0.0.1"]).write_to(pki, dir, tag).expect("files");
    let mut spec = GoPeerSpec::new(origin.template(tag));
    spec.tls = Some(GoPeerTls::from(&files));
    spec.peer_timeout = Duration::from_secs(5);
    GoPeer::start(&spec).await.expect("a Go peer with TLS starts")
}

#[test]
fn go_peers_over_mutual_tls_fetch_from_each_other_and_refuse_another_cas_client() {
    if !go_peers_available() {
        return;
    }
    let dir = temp_dir("ring");
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        let pki = TestPki::new();
        let a = tls_peer(&origin, "a", &pki, &dir).await;
        let b = tls_peer(&origin, "b", &pki, &dir).await;
        assert!(a.base_url().starts_with("https://127.0.0.1:"), "{}", a.base_url());
        let ring = [a.base_url().to_owned(), b.base_url().to_owned()];
        a.set_peers(&ring).await.expect("the ring");
        b.set_peers(&ring).await.expect("the ring");
        let urls: Vec<&str> = ring.iter().map(String::as_str).collect();

        within(Duration::from_secs(30), "fetches both ways over TLS", async {
            let of_b = key_owned_by(&urls, b.base_url());
            let of_a = key_owned_by(&urls, a.base_url());
            assert_eq!(a.get(&of_b).await.expect("a value"), origin_value(of_b.as_bytes()));
            assert_eq!(b.get(&of_a).await.expect("a value"), origin_value(of_a.as_bytes()));
            assert_eq!(origin.loaders_of(&of_b), vec!["b".to_owned()], "loaded by its owner");
            assert_eq!(origin.loaders_of(&of_a), vec!["a".to_owned()], "loaded by its owner");
        })
        .await;
        for peer in [&a, &b] {
            let stats = peer.stats().await.expect("stats");
            assert_eq!((stats.peer_loads, stats.peer_errors, stats.server_requests), (1, 0, 1));
        }

        // A peer whose certificate comes from another CA: b refuses its client, so its fetch
        // of b's key fails and it loads the key itself.
        let stranger_pki = TestPki::new();
        let stranger = tls_peer(&origin, "stranger", &stranger_pki, &dir).await;
        let with_stranger = [stranger.base_url().to_owned(), b.base_url().to_owned()];
        stranger.set_peers(&with_stranger).await.expect("its ring");
        let urls: Vec<&str> = with_stranger.iter().map(String::as_str).collect();
        let of_b = key_owned_by(&urls, b.base_url());
        let value = within(Duration::from_secs(30), "the stranger's get", stranger.get(&of_b))
            .await
            .expect("loaded locally after the refusal");
        assert_eq!(value, origin_value(of_b.as_bytes()));
        let stats = stranger.stats().await.expect("stats");
        assert_eq!((stats.peer_loads, stats.peer_errors, stats.local_loads), (0, 1, 1));
        assert_eq!(b.stats().await.expect("stats").server_requests, 1, "nothing more served");
    });
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}
