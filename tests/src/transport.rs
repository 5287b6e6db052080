//! Transport limits every runtime must hold, one body each, run per runtime: a peer that asks
//! and never reads is pushed back and then closed, and a connect timeout too large to add to
//! a clock does not take a node down.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herdcache_proto::{Message, NodeConfig, PROTOCOL_VERSION, WireLimits};
use herdcache_runtime::SendBuffer;

use crate::harness::{CLUSTER, Cluster, ClusterSpec, KEYSPACE, default_tune, drive, within};
use crate::source::value_of;

/// The send buffer of the stalled-client scenario: small marks, so that a few replies pass
/// them; a stall timeout long enough to see the client's writes block first.
const STALL_BUFFER: SendBuffer = SendBuffer {
    high_water: 128 << 10,
    low_water: 32 << 10,
    hard_cap: None,
    write_stall: Duration::from_secs(3),
};
/// The cached value every get of the stalled client asks for.
const VALUE_LEN: usize = 32 << 10;
/// The stalled client's gets carry a key this long, so that they fill the node's receive
/// buffer quickly once it stops reading.
const KEY_LEN: usize = 8000;
/// Gets the client sends at most: far more than the kernel buffers hold, and answering them
/// all would queue `MAX_GETS × VALUE_LEN` (125 MiB) without the send-buffer bound.
const MAX_GETS: u32 = 4000;
/// How long a client write may block before the test takes it for the node's pushback.
const BLOCKED: Duration = Duration::from_millis(500);

/// A raw client of the native protocol that sends a hello and then pipelines gets of one
/// cached 32 KiB value, and never reads. The node must stop reading it (the client's writes
/// block: its queued bytes stay bounded, or it would read on), keep serving its peer, and
/// close the connection once its writes stall for the write-stall timeout.
pub fn a_client_that_never_reads_is_pushed_back_then_closed(spec: &ClusterSpec) {
    drive(async {
        let cluster = Cluster::start_with(spec, Duration::ZERO, default_tune, STALL_BUFFER).await;
        let target = cluster.node(0);
        let key = "k".repeat(KEY_LEN);
        let put = target.put(&key, Bytes::from(vec![7; VALUE_LEN]));
        within(Duration::from_secs(10), "put the large value", put).await.expect("put");

        let addr = target.addr();
        let client = tokio::task::spawn_blocking(move || pipeline_until_blocked(addr, &key));
        let (mut stream, sent) = within(Duration::from_secs(60), "client", client)
            .await
            .expect("the client does not panic")
            .expect("the node pushes back (the client's writes block) before it closes");
        eprintln!("the client's writes blocked after {sent} gets");
        assert!(sent < MAX_GETS, "the node stopped reading after {sent} gets");

        // The node serves the rest of the cluster meanwhile, over its peer connections too.
        let others: Vec<String> =
            (0..cluster.len()).flat_map(|owner| cluster.keys_owned_by(owner, "other", 2)).collect();
        for key in &others {
            for i in 0..cluster.len() {
                let got = within(Duration::from_secs(10), "get", cluster.node(i).get(key)).await;
                assert_eq!(got.expect("served").bytes, value_of(key, 0), "{key} from node {i}");
            }
        }

        // Then the stalled connection is closed after the write-stall timeout.
        let closed = tokio::task::spawn_blocking(move || {
            std::thread::sleep(STALL_BUFFER.write_stall + Duration::from_secs(1));
            drain_until_closed(&mut stream)
        });
        let outcome = within(Duration::from_secs(60), "close", closed).await.expect("no panic");
        let received = outcome.expect("the node closed the stalled connection");
        let answered = u64::from(sent) * VALUE_LEN as u64;
        assert!(
            (received as u64) < answered,
            "closed before answering every get: {received} bytes of {answered}"
        );
        let limits = STALL_BUFFER.limits(&NodeConfig::new("n", "c"));
        eprintln!("stalled client received {received} bytes; hard cap {}", limits.hard_cap);
        cluster.shutdown().await;
    });
}

/// Connects with small socket buffers, says hello and pipelines gets of `key` until a write
/// blocks for [`BLOCKED`]; returns the stream and how many gets were sent. `None` when the
/// node never pushed back (all [`MAX_GETS`] went through) — an error (a reset) is a panic.
fn pipeline_until_blocked(addr: SocketAddr, key: &str) -> Option<(std::net::TcpStream, u32)> {
    let limits = WireLimits::default();
    let mut stream = small_buffered_stream(addr);
    stream.set_write_timeout(Some(BLOCKED)).expect("a write timeout");
    let mut frame = Vec::new();
    let hello = Message::Hello {
        protocol_version: u16::from(PROTOCOL_VERSION),
        cluster: Bytes::from_static(CLUSTER.as_bytes()),
        node_id: Bytes::from_static(b"127.0.0.1:9"),
        nonce: None,
    };
    hello.encode(0, &mut frame, &limits).expect("a hello encodes");
    stream.write_all(&frame).expect("the hello is sent");
    for sent in 0..MAX_GETS {
        frame.clear();
        let get = Message::Get {
            keyspace: Bytes::from_static(KEYSPACE.as_bytes()),
            key: Bytes::copy_from_slice(key.as_bytes()),
            timeout_ms: 60_000,
        };
        get.encode(u64::from(sent) + 1, &mut frame, &limits).expect("a get encodes");
        match stream.write_all(&frame) {
            Ok(()) => {}
            Err(error)
                if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                return Some((stream, sent));
            }
            Err(error) => panic!("the node closed the connection before pushing back: {error}"),
        }
    }
    None
}

/// A blocking stream to `addr` with 64 KiB socket buffers, so that the kernel holds little
/// of what the node answers.
fn small_buffered_stream(addr: SocketAddr) -> std::net::TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime to connect with");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(64 << 10).expect("a receive buffer size");
        socket.set_send_buffer_size(64 << 10).expect("a send buffer size");
        socket.connect(addr).await.expect("connects")
    });
    let stream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// Reads what the node sent until the connection ends; the bytes read, or `None` when the
/// node keeps it open (a read waits 2 s for nothing).
fn drain_until_closed(stream: &mut std::net::TcpStream) -> Option<usize> {
    stream.set_read_timeout(Some(Duration::from_secs(2))).expect("a read timeout");
    let mut buffer = vec![0; 64 << 10];
    let mut received = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(received),
            Ok(read) => received += read,
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => return Some(received),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    None
}

/// A connect timeout of `Duration::MAX` (which the core accepts): nodes still dial each
/// other and serve through the peer connections.
pub fn a_huge_connect_timeout_still_connects(spec: &ClusterSpec) {
    fn tune(config: &mut NodeConfig) {
        default_tune(config);
        config.connect_timeout = Duration::MAX;
    }
    drive(async {
        let cluster = Cluster::start(spec, Duration::ZERO, tune).await;
        let keys: Vec<String> =
            (0..cluster.len()).flat_map(|owner| cluster.keys_owned_by(owner, "far", 2)).collect();
        for key in &keys {
            for i in 0..cluster.len() {
                let got = within(Duration::from_secs(10), "get", cluster.node(i).get(key)).await;
                assert_eq!(got.expect("served").bytes, value_of(key, 0), "{key} from node {i}");
            }
            assert_eq!(cluster.loads_of(key), 1, "{key}: loaded once, at its owner");
        }
        cluster.shutdown().await;
    });
}
