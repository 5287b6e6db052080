//! `herdcache node` processes that find each other through SRV records served by a real
//! dnsmasq (`--discovery srv:… --dns-server …`): they form the cluster, follow a changed SRV
//! set within the TTL, and serve a get through the ring. Prints a short log with timings
//! (`--nocapture`).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herdcache_tests::{Dnsmasq, LOCAL_TTL, SrvTarget, dnsmasq_available, drive};
use hyper::StatusCode;
use serde_json::Value as Json;

use support::*;

const ZONE: &str = "herdcache.test";
const SRV_NAME: &str = "_herdcache._tcp.herdcache.test";
/// Beyond the TTL: a dnsmasq restart (SRV records change only so) costs a failed query and the
/// provider's first backoff (1 s), then a query and a ring rebuild on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

fn log(start: Instant, what: &str) {
    println!("[dns-node {:>6.2} s] {what}", start.elapsed().as_secs_f64());
}

/// What a node's provider reported last, and the ids on its member list, from its
/// `/v1/members`.
fn view(members: &Json) -> (BTreeSet<String>, BTreeSet<String>) {
    let strings = |value: &Json, field: Option<&str>| -> BTreeSet<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| match field {
                        Some(field) => item[field].as_str(),
                        None => item.as_str(),
                    })
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let reported = strings(&members["discovery"]["members"], None);
    let listed = strings(&members["members"], Some("id"));
    (reported, listed)
}

/// Waits until every node's provider reports `expected` and each node in it lists exactly
/// `expected`; the time it took.
async fn until_all_follow(
    nodes: &[NodeProcess],
    expected: &BTreeSet<String>,
    limit: Duration,
    what: &str,
) -> Duration {
    let nodes: Vec<&NodeProcess> = nodes.iter().collect();
    until_all(&nodes, limit, what, |node, members| {
        let (reported, listed) = view(members);
        reported == *expected && (!expected.contains(&node.id) || listed == *expected)
    })
    .await
}

fn start_node(port: u16, dns: SocketAddr) -> Result<NodeProcess, String> {
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let flags = [
        "--advertise".to_owned(),
        format!("localhost:{port}"),
        "--discovery".to_owned(),
        format!("srv:{SRV_NAME}"),
        "--dns-server".to_owned(),
        dns.to_string(),
        "--keyspace".to_owned(),
        "ks:8MiB".to_owned(),
        "--source".to_owned(),
        "echo:v-".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    NodeProcess::try_start(&node_flags(listen, &[], &flags))
}

/// Three nodes on fresh ports (again on new ones when a port was taken meanwhile).
fn start_nodes(dns: SocketAddr) -> Vec<NodeProcess> {
    for _ in 0..BIND_ATTEMPTS {
        let ports: Vec<u16> = (0..3).map(|_| free_addr().port()).collect();
        let started: Result<Vec<_>, String> =
            ports.iter().map(|port| start_node(*port, dns)).collect();
        match started {
            Ok(nodes) => return nodes,
            Err(stderr) if stderr.contains(LOST_PORT) => continue,
            Err(stderr) => panic!("no ready line within {READY_TIMEOUT:?}; stderr:\n{stderr}"),
        }
    }
    panic!("no free ports after {BIND_ATTEMPTS} attempts");
}

fn port_of(node: &NodeProcess) -> u16 {
    node.id.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("id is host:port")
}

#[test]
fn node_processes_found_by_srv_records_follow_a_changed_srv_set() {
    if !dnsmasq_available() {
        return;
    }
    drive(async {
        let start = Instant::now();
        let mut dns = Dnsmasq::start(ZONE).expect("dnsmasq starts");
        let nodes = start_nodes(dns.addr());
        let ids: Vec<String> = nodes.iter().map(|node| node.id.clone()).collect();
        assert!(ids.iter().all(|id| id.starts_with("localhost:")), "{ids:?}");
        let targets = |indexes: &[usize]| -> Vec<SrvTarget> {
            indexes.iter().map(|i| SrvTarget::new("localhost", port_of(&nodes[*i]))).collect()
        };
        let set = |indexes: &[usize]| -> BTreeSet<String> {
            indexes.iter().map(|i| ids[*i].clone()).collect()
        };
        dns.set_srv(SRV_NAME, &targets(&[0, 1])).expect("dnsmasq restarts");
        log(
            start,
            &format!(
                "dnsmasq on {}; 3 herdcache node processes {ids:?}; SRV {SRV_NAME} -> nodes 0, 1; TTL {LOCAL_TTL} s",
                dns.addr()
            ),
        );
        let limit = Duration::from_secs(LOCAL_TTL.into()) + SLACK;
        let took = until_all_follow(&nodes, &set(&[0, 1]), limit, "formed").await;
        log(
            start,
            &format!("formed: every node follows nodes 0, 1 in {:.2} s", took.as_secs_f64()),
        );

        dns.set_srv(SRV_NAME, &targets(&[0, 1, 2])).expect("dnsmasq restarts");
        log(start, "SRV set changed: +node 2 (dnsmasq restarted with the new records)");
        let took = until_all_follow(&nodes, &set(&[0, 1, 2]), limit, "node 2 added").await;
        log(
            start,
            &format!(
                "every node follows nodes 0-2 in {:.2} s (bound {:.1} s)",
                took.as_secs_f64(),
                limit.as_secs_f64()
            ),
        );

        dns.set_srv(SRV_NAME, &targets(&[0, 2])).expect("dnsmasq restarts");
        log(start, "SRV set changed: -node 1");
        let took = until_all_follow(&nodes, &set(&[0, 2]), limit, "node 1 removed").await;
        log(
            start,
            &format!(
                "every node follows nodes 0, 2 in {:.2} s (bound {:.1} s)",
                took.as_secs_f64(),
                limit.as_secs_f64()
            ),
        );

        // The ring works through the names DNS gave: every key answers on both members.
        for key in ["a", "b", "c", "d", "e", "f"] {
            for node in [&nodes[0], &nodes[2]] {
                let answer = node.get("ks", key.as_bytes()).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                assert_eq!(answer.body, format!("v-{key}").as_bytes());
            }
        }
        // Dialled by the names DNS gave: some keys came from the other member, none failed.
        let mut peer_loads = 0;
        for node in [&nodes[0], &nodes[2]] {
            let stats = node.stats().await;
            peer_loads += counter(&stats, "ks", "peer_loads");
            assert_eq!(counter(&stats, "ks", "peer_errors"), 0, "{stats:#}");
        }
        assert!(peer_loads > 0, "no key came from the other member");
        let members = nodes[0].members().await;
        assert_eq!(members["discovery"]["kind"], "dns");
        assert_eq!(members["discovery"]["healthy"], true);
        log(
            start,
            &format!(
                "gets answered on nodes 0 and 2, {peer_loads} from the other member by its DNS name; discovery healthy"
            ),
        );
        for node in nodes {
            let (status, _) = node.signal_and_wait("TERM");
            assert!(status.success(), "{status}");
        }
        log(start, "every node stopped on SIGTERM");
    });
}
