//! The DNS discovery provider against a real dnsmasq: tokio nodes find each other through A
//! records (one port, an address each: 127.0.0.1–4) and through SRV records (one host,
//! `localhost`, a port each), follow changes of the record set within the TTL, keep their
//! last list when the answer is empty or the server is down, and stop promptly whatever DNS
//! does. Each test prints a short log of what happened and how long it took (`--nocapture`).
//!
//! dnsmasq serves every record with TTL 1 s ([`LOCAL_TTL`]); the provider re-resolves at the
//! TTL clamped to its bounds, so a change is followed within about a second plus a query.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use herdcache_runtime::discovery::{
    DEFAULT_QUERY_TIMEOUT, DiscoveryOptions, DiscoverySpec, DiscoveryStatus, DnsDiscovery,
};
use herdcache_tests::{Dnsmasq, LOCAL_TTL, SrvTarget, dnsmasq_available, drive};
use herdcache_tokio::{Bytes, Handle, KeyspaceConfig, Node, StartError, source_fn};

const ZONE: &str = "herdcache.test";
const NAME: &str = "cache.herdcache.test";
const SRV_NAME: &str = "_herdcache._tcp.herdcache.test";
/// What a change may take beyond the TTL: a query, a ring rebuild, a loaded machine.
const SLACK: Duration = Duration::from_secs(2);
/// How many times a set of nodes is started on fresh ports when one was taken meanwhile.
const BIND_ATTEMPTS: usize = 5;

fn ttl() -> Duration {
    Duration::from_secs(LOCAL_TTL.into())
}

/// A line of the test's log, with the time since the test began.
fn log(start: Instant, what: &str) {
    println!("[dns {:>6.2} s] {what}", start.elapsed().as_secs_f64());
}

/// A running node and the id it advertises.
struct DnsNode {
    id: String,
    handle: Handle,
}

impl DnsNode {
    fn discovery(&self) -> DiscoveryStatus {
        self.handle.discovery().expect("the node was built with a discovery provider")
    }

    /// The ids on this node's member list.
    fn member_ids(&self) -> BTreeSet<String> {
        self.handle.members().members.into_iter().map(|member| member.id).collect()
    }
}

async fn start_node(listen: SocketAddr, id: &str, provider: DnsDiscovery) -> io::Result<DnsNode> {
    let source = source_fn(|key: Bytes| async move { Ok::<_, io::Error>(key) });
    let started = Node::builder()
        .cluster("dns-test")
        .listen(listen)
        .advertise(id)
        .discovery(provider)
        .keyspace(KeyspaceConfig::new("k", 1 << 20), source)
        .start()
        .await;
    match started {
        Ok(handle) => Ok(DnsNode { id: id.to_owned(), handle }),
        Err(StartError::Bind(error)) => Err(error),
        Err(error) => panic!("node {id} did not start: {error}"),
    }
}

/// Starts one node per `(listen, id)` that `layout` gives (fresh ports at each call), again
/// until all bind (another test may take a port between its release and the bind).
async fn start_nodes(
    mut layout: impl FnMut() -> Vec<(SocketAddr, String)>,
    provider: impl Fn() -> DnsDiscovery,
) -> Vec<DnsNode> {
    'attempt: for _ in 0..BIND_ATTEMPTS {
        let mut nodes = Vec::new();
        for (listen, id) in layout() {
            match start_node(listen, &id, provider()).await {
                Ok(node) => nodes.push(node),
                Err(_) => {
                    for node in nodes {
                        node.handle.kill();
                    }
                    continue 'attempt;
                }
            }
        }
        return nodes;
    }
    panic!("no free ports for the nodes after {BIND_ATTEMPTS} attempts");
}

/// One port free on 127.0.0.1 to 127.0.0.`count` (released: a start retries if one is taken).
fn port_free_on_loopbacks(count: u8) -> u16 {
    loop {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
        let port = first.local_addr().expect("its address").port();
        let others: Vec<_> = (2..=count)
            .map(|last| TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port)))
            .collect();
        if others.iter().all(Result::is_ok) {
            return port;
        }
    }
}

/// One node on a fresh port of 127.0.0.1.
fn one_node_layout() -> Vec<(SocketAddr, String)> {
    let port = free_ports(1)[0];
    vec![(SocketAddr::from(([127, 0, 0, 1], port)), format!("127.0.0.1:{port}"))]
}

fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("its address").port()).collect()
}

/// Polls `done` every 20 ms for up to `limit`; how long it took, or `None`.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// Whether every node's provider reports `expected`, and every node in it lists exactly
/// `expected` as members.
fn all_follow(nodes: &[DnsNode], expected: &BTreeSet<String>) -> bool {
    nodes.iter().all(|node| {
        let reported: BTreeSet<String> = node.discovery().members.into_iter().collect();
        reported == *expected && (!expected.contains(&node.id) || node.member_ids() == *expected)
    })
}

async fn wait_follow(
    start: Instant,
    nodes: &[DnsNode],
    expected: &BTreeSet<String>,
    limit: Duration,
    what: &str,
) {
    let took = wait_until(limit, || all_follow(nodes, expected)).await;
    let Some(took) = took else {
        let seen: Vec<_> =
            nodes.iter().map(|n| (n.id.clone(), n.discovery(), n.member_ids())).collect();
        panic!("{what}: nodes did not follow {expected:?} within {limit:?}: {seen:#?}");
    };
    log(
        start,
        &format!(
            "{what}: all {} nodes follow {expected:?} in {:.2} s (bound {:.1} s)",
            nodes.len(),
            took.as_secs_f64(),
            limit.as_secs_f64()
        ),
    );
}

async fn stop_all(start: Instant, nodes: Vec<DnsNode>) {
    let began = Instant::now();
    for node in nodes {
        node.handle.stop().await;
    }
    log(start, &format!("stopped every node in {:.2} s", began.elapsed().as_secs_f64()));
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

#[test]
fn a_records_form_the_cluster_and_nodes_follow_a_changed_record_set() {
    if !dnsmasq_available() {
        return;
    }
    drive(async {
        let start = Instant::now();
        let mut dns = Dnsmasq::start(ZONE).expect("dnsmasq starts");
        let port = port_free_on_loopbacks(4);
        let id = |last: u8| format!("127.0.0.{last}:{port}");
        dns.set_hosts(&[(ip("127.0.0.1"), NAME), (ip("127.0.0.2"), NAME), (ip("127.0.0.3"), NAME)])
            .expect("hosts");
        log(start, &format!("dnsmasq on {}, {NAME} A 127.0.0.1-3, TTL {LOCAL_TTL} s", dns.addr()));
        let server = dns.addr();
        let nodes = start_nodes(
            || {
                (1..=4)
                    .map(|last| (SocketAddr::from(([127, 0, 0, last], port)), id(last)))
                    .collect()
            },
            || DnsDiscovery::a(NAME, port).nameserver(server),
        )
        .await;
        log(
            start,
            &format!("started 4 nodes on 127.0.0.1-4:{port} with discovery dns:{NAME}:{port}"),
        );
        let first = set(&[&id(1), &id(2), &id(3)]);
        wait_follow(start, &nodes, &first, ttl() + SLACK, "formed").await;

        dns.set_hosts(&[(ip("127.0.0.1"), NAME), (ip("127.0.0.2"), NAME), (ip("127.0.0.4"), NAME)])
            .expect("hosts");
        log(start, "records changed: -127.0.0.3 +127.0.0.4 (hosts file rewritten, SIGHUP)");
        let second = set(&[&id(1), &id(2), &id(4)]);
        wait_follow(start, &nodes, &second, ttl() + SLACK, "after the change").await;
        for node in &nodes {
            assert!(node.discovery().healthy, "{}: {:?}", node.id, node.discovery());
        }
        stop_all(start, nodes).await;
    });
}

#[test]
fn a_and_aaaa_records_both_name_members_ipv6_bracketed() {
    if !dnsmasq_available() {
        return;
    }
    drive(async {
        let start = Instant::now();
        let mut dns = Dnsmasq::start(ZONE).expect("dnsmasq starts");
        dns.set_hosts(&[(ip("127.0.0.9"), NAME), (ip("fd00::9"), NAME)]).expect("hosts");
        let server = dns.addr();
        let nodes =
            start_nodes(one_node_layout, || DnsDiscovery::a(NAME, 7001).nameserver(server)).await;
        let expected = vec!["127.0.0.9:7001".to_owned(), "[fd00::9]:7001".to_owned()];
        let took = wait_until(ttl() + SLACK, || nodes[0].discovery().members == expected).await;
        let status = nodes[0].discovery();
        assert!(took.is_some(), "expected {expected:?}, got {status:?}");
        log(start, &format!("A + AAAA give {:?}", status.members));
        stop_all(start, nodes).await;
    });
}

#[test]
fn srv_records_form_the_cluster_and_nodes_follow_a_changed_srv_set() {
    if !dnsmasq_available() {
        return;
    }
    drive(async {
        let start = Instant::now();
        let mut dns = Dnsmasq::start(ZONE).expect("dnsmasq starts");
        let mut ports = Vec::new();
        let server = dns.addr();
        let nodes = start_nodes(
            || {
                let fresh = free_ports(4);
                ports.clone_from(&fresh);
                fresh
                    .iter()
                    .map(|port| {
                        (SocketAddr::from(([127, 0, 0, 1], *port)), format!("localhost:{port}"))
                    })
                    .collect()
            },
            || DnsDiscovery::srv(SRV_NAME).nameserver(server),
        )
        .await;
        let id = |index: usize| format!("localhost:{}", ports[index]);
        let targets = |indexes: &[usize]| -> Vec<SrvTarget> {
            indexes.iter().map(|index| SrvTarget::new("localhost", ports[*index])).collect()
        };
        dns.set_srv(SRV_NAME, &targets(&[0, 1, 2])).expect("dnsmasq restarts with SRV records");
        log(
            start,
            &format!(
                "dnsmasq on {}, 4 nodes on localhost:{ports:?}, SRV {SRV_NAME} -> nodes 0-2",
                dns.addr()
            ),
        );
        let first = set(&[&id(0), &id(1), &id(2)]);
        // The restart is an outage: a query in it fails and is retried after the backoff's
        // minimum (1 s).
        wait_follow(start, &nodes, &first, ttl() * 2 + SLACK, "formed").await;

        dns.set_srv(SRV_NAME, &targets(&[0, 1, 3])).expect("dnsmasq restarts with SRV records");
        log(
            start,
            "SRV set changed: -node 2 +node 3 (config rewritten, dnsmasq restarted on its port)",
        );
        let second = set(&[&id(0), &id(1), &id(3)]);
        wait_follow(start, &nodes, &second, ttl() * 2 + SLACK, "after the change").await;
        stop_all(start, nodes).await;
    });
}

#[test]
fn an_empty_answer_keeps_the_last_list_and_marks_discovery_unhealthy() {
    if !dnsmasq_available() {
        return;
    }
    drive(async {
        let start = Instant::now();
        let mut dns = Dnsmasq::start(ZONE).expect("dnsmasq starts");
        let port = port_free_on_loopbacks(2);
        let id = |last: u8| format!("127.0.0.{last}:{port}");
        dns.set_hosts(&[(ip("127.0.0.1"), NAME), (ip("127.0.0.2"), NAME)]).expect("hosts");
        let server = dns.addr();
        let nodes = start_nodes(
            || {
                (1..=2)
                    .map(|last| (SocketAddr::from(([127, 0, 0, last], port)), id(last)))
                    .collect()
            },
            || DnsDiscovery::a(NAME, port).nameserver(server),
        )
        .await;
        let both = set(&[&id(1), &id(2)]);
        wait_follow(start, &nodes, &both, ttl() + SLACK, "formed").await;

        dns.set_hosts(&[]).expect("hosts");
        log(start, &format!("records removed: {NAME} is NXDOMAIN"));
        let took =
            wait_until(ttl() + SLACK, || nodes.iter().all(|node| !node.discovery().healthy)).await;
        assert!(took.is_some(), "discovery stayed healthy: {:?}", nodes[0].discovery());
        let status = nodes[0].discovery();
        log(
            start,
            &format!(
                "every node unhealthy after {:.2} s: {:?}",
                took.unwrap_or_default().as_secs_f64(),
                status.last_error
            ),
        );
        assert!(
            status.last_error.as_deref().is_some_and(|e| e.contains("no records")),
            "{status:?}"
        );
        // Several re-resolutions later the last list still stands.
        tokio::time::sleep(ttl() * 2).await;
        assert!(all_follow(&nodes, &both), "an empty answer changed the list");
        log(start, "two TTLs later every node still lists both members");

        dns.set_hosts(&[(ip("127.0.0.1"), NAME), (ip("127.0.0.2"), NAME)]).expect("hosts");
        let took =
            wait_until(ttl() * 2 + SLACK, || nodes.iter().all(|node| node.discovery().healthy))
                .await;
        assert!(took.is_some(), "discovery did not recover: {:?}", nodes[0].discovery());
        log(
            start,
            &format!(
                "records back: healthy again in {:.2} s",
                took.unwrap_or_default().as_secs_f64()
            ),
        );
        assert!(all_follow(&nodes, &both));
        stop_all(start, nodes).await;
    });
}

#[test]
fn a_stopped_dns_server_keeps_the_last_list_and_nodes_recover_when_it_returns() {
    if !dnsmasq_available() {
        return;
    }
    drive(async {
        let start = Instant::now();
        let mut dns = Dnsmasq::start(ZONE).expect("dnsmasq starts");
        let port = port_free_on_loopbacks(3);
        let id = |last: u8| format!("127.0.0.{last}:{port}");
        dns.set_hosts(&[(ip("127.0.0.1"), NAME), (ip("127.0.0.2"), NAME)]).expect("hosts");
        let server = dns.addr();
        // Bounds 1–2 s: the retry backoff tops out at 2 s, so recovery is quick.
        let nodes = start_nodes(
            || {
                (1..=3)
                    .map(|last| (SocketAddr::from(([127, 0, 0, last], port)), id(last)))
                    .collect()
            },
            || {
                DnsDiscovery::a(NAME, port)
                    .nameserver(server)
                    .ttl_bounds(Duration::from_secs(1), Duration::from_secs(2))
            },
        )
        .await;
        let two = set(&[&id(1), &id(2)]);
        wait_follow(start, &nodes, &two, ttl() + SLACK, "formed").await;

        dns.stop();
        log(start, "dnsmasq stopped");
        // The next query (after the TTL) goes unanswered: UDP to a closed port is only known
        // as such when the query times out.
        let took = wait_until(ttl() + DEFAULT_QUERY_TIMEOUT + SLACK, || {
            nodes.iter().all(|node| !node.discovery().healthy)
        })
        .await;
        assert!(took.is_some(), "discovery stayed healthy: {:?}", nodes[0].discovery());
        log(
            start,
            &format!(
                "every node unhealthy after {:.2} s: {:?}",
                took.unwrap_or_default().as_secs_f64(),
                nodes[0].discovery().last_error
            ),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(all_follow(&nodes, &two), "the outage changed the list");
        log(start, "3 s into the outage every node still has its last list");

        dns.set_hosts(&[(ip("127.0.0.1"), NAME), (ip("127.0.0.2"), NAME), (ip("127.0.0.3"), NAME)])
            .expect("hosts");
        dns.start_again().expect("dnsmasq starts again on its port");
        log(start, "dnsmasq back on its port, now with 127.0.0.3 too");
        let three = set(&[&id(1), &id(2), &id(3)]);
        // A query in flight times out, then the backoff (at most 2 s), then a query.
        let bound = DEFAULT_QUERY_TIMEOUT + Duration::from_secs(2) + SLACK;
        wait_follow(start, &nodes, &three, bound, "after the outage").await;
        assert!(nodes.iter().all(|node| node.discovery().healthy));
        stop_all(start, nodes).await;
    });
}

#[test]
fn a_node_stops_promptly_while_its_dns_query_hangs() {
    drive(async {
        let start = Instant::now();
        // A name server that never answers: queries time out (2 s by default).
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a udp socket");
        let server = silent.local_addr().expect("its address");
        let nodes =
            start_nodes(one_node_layout, || DnsDiscovery::srv(SRV_NAME).nameserver(server)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = Instant::now();
        stop_all(start, nodes).await;
        let took = began.elapsed();
        assert!(took < Duration::from_secs(1), "stop waited {took:?} behind a DNS query");

        // Killed (an abort) the same way.
        let nodes =
            start_nodes(one_node_layout, || DnsDiscovery::srv(SRV_NAME).nameserver(server)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = Instant::now();
        nodes[0].handle.kill();
        assert!(began.elapsed() < Duration::from_secs(1));
        log(start, &format!("killed in {:.3} s", began.elapsed().as_secs_f64()));
    });
}

#[test]
fn the_discovery_spec_builds_the_dns_provider_with_the_named_server() {
    let options =
        DiscoveryOptions { dns_server: Some("127.0.0.1:5353".parse().expect("an address")) };
    for spec in ["dns:cache.herdcache.test:7001", "srv:_herdcache._tcp.herdcache.test"] {
        let spec: DiscoverySpec = spec.parse().expect("a valid spec");
        assert_eq!(spec.provider().expect("built with dns").kind(), "dns");
        assert_eq!(spec.provider_with(&options).expect("built with dns").kind(), "dns");
    }
}
