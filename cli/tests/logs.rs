//! `herdcache node` logs what the runtime refuses on stderr, so an operator sees it: an
//! impostor on the peer port (a hello in a member's name without the cluster secret's proof)
//! is refused with the reason, and a plaintext client on a TLS peer port is logged as a failed
//! handshake. The ready line stays alone on stdout (the processes are started by parsing it).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use herdcache_proto::{Message, PROTOCOL_VERSION, WireLimits};
use herdcache_tests::certs::TestPki;
use herdcache_tests::drive;
use herdcache_tokio::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::*;

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herdcache-logs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// A native hello claiming `claimed`'s id, with a nonce (as a node with a cluster secret
/// sends it), followed by a proof that is not a proof of anything.
fn impostor_hello(claimed: SocketAddr) -> Vec<u8> {
    let limits = WireLimits::default();
    let mut bytes = Vec::new();
    let hello = Message::Hello {
        protocol_version: u16::from(PROTOCOL_VERSION),
        cluster: Bytes::from_static(b"herdcache"),
        node_id: Bytes::from(claimed.to_string()),
        nonce: Some([7; 16]),
    };
    hello.encode(0, &mut bytes, &limits).expect("a hello fits");
    Message::HelloProof { mac: [0; 32] }.encode(0, &mut bytes, &limits).expect("a proof fits");
    bytes
}

/// Sends `bytes` to `addr` and reads until the node closes the connection.
fn send_and_wait_for_close(addr: SocketAddr, bytes: &[u8]) {
    drive(async {
        let mut stream = TcpStream::connect(addr).await.expect("the peer port accepts");
        stream.write_all(bytes).await.expect("sent");
        let (_, ended) = read_to_close(&mut stream, Duration::from_secs(10)).await;
        assert_ne!(ended, Ended::Open, "the node kept the connection open");
    });
}

/// The first line of `node`'s stderr that holds `needle`, once it is there.
fn logged_line(node: &NodeProcess, needle: &str) -> String {
    node.wait_for_stderr(needle);
    let said = node.stderr.text();
    said.lines().find(|line| line.contains(needle)).unwrap_or_default().to_owned()
}

#[test]
fn an_impostor_on_the_peer_port_is_logged_with_the_refusal_reason() {
    let dir = temp_dir("impostor");
    let secret = dir.join("secret");
    std::fs::write(&secret, "a secret of the cluster members\n").expect("a secret");
    let secret = secret.display().to_string();
    let (listen, member) = (free_addr(), free_addr());
    let node = NodeProcess::start(
        listen,
        &[listen, member],
        &["--keyspace", "ks", "--source", "echo:v-", "--cluster-secret-file", &secret],
    );
    send_and_wait_for_close(listen, &impostor_hello(member));
    let line = logged_line(&node, "connection refused");
    assert!(line.contains("WARN") && line.contains("Unauthenticated"), "{line}");
    drive(async {
        let stats = node.stats().await;
        assert_eq!(stats["security"]["refused_unauthenticated"], 1, "{stats:#}");
    });
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn a_plaintext_client_on_a_tls_peer_port_is_logged_as_a_failed_handshake() {
    let dir = temp_dir("plaintext");
    let pki = TestPki::new();
    let listen = free_addr();
    let files = pki.node_for_id(&listen.to_string()).write_to(&pki, &dir, "n").expect("files");
    let paths = [&files.cert, &files.key, &files.ca].map(|path| path.display().to_string());
    let node = NodeProcess::start(
        listen,
        &[],
        &[
            "--keyspace",
            "ks",
            "--source",
            "echo:v-",
            "--tls-cert",
            &paths[0],
            "--tls-key",
            &paths[1],
            "--tls-ca",
            &paths[2],
        ],
    );
    // The same plaintext hello a node without TLS would send.
    send_and_wait_for_close(listen, &impostor_hello(free_addr()));
    let line = logged_line(&node, "TLS handshake failed");
    assert!(line.contains("WARN") && line.contains("error="), "{line}");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn a_log_level_flag_that_is_not_a_level_or_a_filter_is_a_usage_error() {
    let (code, stderr) = start_refused(&["--log-level=herdcache=loud"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--log-level"), "{stderr}");
}
