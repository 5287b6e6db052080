//! `tls`: the cost of mutual TLS between peers: remote-get throughput of a two-node
//! herdcache-tokio cluster with TLS over the same cluster without, in one run, interleaved.
//!
//! `cargo run --release -p herdcache-bench --bin tls -- [--quick] [--trials N] [--secs S]
//! [--callers C]`
//!
//! Two nodes on loopback; node A owns a set of keys (loaded once, then cached there); node B
//! gets them with `C` concurrent callers for `S` seconds: every get is a remote fetch from A
//! over one multiplexed peer connection (hot-key mirroring is off, so nothing turns into a
//! local hit). Each trial runs plain TCP and TLS (rustls, ring, TLS 1.3, ECDSA P-256
//! certificates from a throwaway CA) back to back; the ratio is TLS over plain per trial,
//! and the median is printed last. `--quick` is one short trial (a smoke run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herdcache_proto::{KeyspaceConfig, Path};
use herdcache_runtime::tls::TlsConfig;
use herdcache_runtime::{Builder, Handle};
use herdcache_tokio::Tokio;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

const KEYSPACE: &str = "tls";
const KEYS: usize = 2_000;
/// How far a caller moves through the keys per get (a prime: callers spread out).
const STRIDE: usize = 7;

struct Settings {
    trials: usize,
    run_for: Duration,
    callers: usize,
}

fn main() {
    let mut settings = Settings { trials: 5, run_for: Duration::from_secs(2), callers: 64 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = || args.next().and_then(|value| value.parse::<f64>().ok());
        match arg.as_str() {
            "--quick" => {
                settings.trials = 1;
                settings.run_for = Duration::from_millis(300);
            }
            "--trials" => match number() {
                Some(n) if n >= 1.0 => settings.trials = n as usize,
                _ => usage(),
            },
            "--secs" => match number() {
                Some(s) if s > 0.0 => settings.run_for = Duration::from_secs_f64(s),
                _ => usage(),
            },
            "--callers" => match number() {
                Some(n) if n >= 1.0 => settings.callers = n as usize,
                _ => usage(),
            },
            _ => usage(),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pki = Pki::new();
    println!(
        "tls: 2 herdcache-tokio nodes, {} callers on B getting keys A owns, {:?} per run",
        settings.callers, settings.run_for
    );
    println!("{:<8} {:>14} {:>14} {:>8}", "trial", "plain gets/s", "TLS gets/s", "TLS/plain");
    let mut ratios = Vec::new();
    for trial in 1..=settings.trials {
        let plain = runtime.block_on(run(None, &settings));
        let tls = runtime.block_on(run(Some((pki.config(), pki.config())), &settings));
        let ratio = tls / plain;
        ratios.push(ratio);
        println!("{trial:<8} {plain:>14.0} {tls:>14.0} {ratio:>8.3}");
    }
    ratios.sort_by(f64::total_cmp);
    println!("median TLS/plain remote-get throughput: {:.3}", ratios[ratios.len() / 2]);
}

fn usage() -> ! {
    eprintln!("usage: tls [--quick] [--trials N] [--secs S] [--callers C]");
    std::process::exit(2);
}

/// A throwaway CA issuing node certificates for 127.0.0.1.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("a CA key");
        let ca = params.self_signed(&key).expect("a CA");
        Pki { ca_pem: ca.pem(), issuer: Issuer::new(params, key) }
    }

    fn config(&self) -> TlsConfig {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let key = KeyPair::generate().expect("a node key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        TlsConfig::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            self.ca_pem.as_bytes(),
        )
        .expect("a TLS configuration")
    }
}

async fn start_node(tls: Option<TlsConfig>) -> Handle {
    let source = herdcache_runtime::source_fn(|key: Bytes| async move {
        Ok::<_, std::io::Error>(Bytes::from([&b"value-"[..], &key[..]].concat()))
    });
    let mut builder = Builder::<Tokio>::new()
        .cluster("tls-bench")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 64 << 20), source)
        // Every get from B stays a remote fetch: no hot-key mirroring.
        .config(|config| config.hot_threshold_per_second = 1e12);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    builder.start().await.expect("a node starts")
}

/// One run: remote gets per second from B to A.
async fn run(tls: Option<(TlsConfig, TlsConfig)>, settings: &Settings) -> f64 {
    let (tls_a, tls_b) = tls.map_or((None, None), |(a, b)| (Some(a), Some(b)));
    let (a, b) = (start_node(tls_a).await, start_node(tls_b).await);
    let ids = [a.node_id().to_owned(), b.node_id().to_owned()];
    a.set_peers(ids.clone());
    b.set_peers(ids);
    // A's keys: those B fetches from A (and A loaded once).
    let mut owned_by_a = Vec::new();
    for i in 0..KEYS {
        let key = Bytes::from(format!("key-{i:05}"));
        let value = b.get_value(KEYSPACE, &key).await.expect("a value");
        if value.path == Path::PeerFetch {
            owned_by_a.push(key);
        }
    }
    assert!(owned_by_a.len() > KEYS / 4, "A owns a share of the keys");
    let owned_by_a = Arc::new(owned_by_a);
    let gets = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + settings.run_for;
    let mut callers = Vec::new();
    for caller in 0..settings.callers {
        let (b, keys, gets) = (b.clone(), Arc::clone(&owned_by_a), Arc::clone(&gets));
        callers.push(tokio::spawn(async move {
            let mut i = caller;
            while Instant::now() < deadline {
                let key = &keys[i % keys.len()];
                let value = b.get_value(KEYSPACE, key).await.expect("a value");
                assert_eq!(value.path, Path::PeerFetch, "every get is remote");
                gets.fetch_add(1, Ordering::Relaxed);
                i += STRIDE;
            }
        }));
    }
    let started = Instant::now();
    for caller in callers {
        caller.await.expect("a caller");
    }
    let rate = gets.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    a.stop().await;
    b.stop().await;
    rate
}
