//! Membership of `herdcache node` processes on loopback: members from `--discovery static:`,
//! `GET /v1/members`, a member killed with SIGKILL under load (found down, writes succeed
//! again, its keys loaded once by their new owners), and the same member restarted (it
//! rejoins and serves its keys).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herdcache_tests::http;
use hyper::StatusCode;
use serde_json::Value as Json;

use support::*;

/// How long a killed member may take to be found down with the default settings (the issue's
/// bound), plus slack for a loaded test machine.
const DETECTION_BOUND: Duration = Duration::from_secs(3);
const SLACK: Duration = Duration::from_secs(2);

/// The state `node` sees `id` in, and whether it is connected to it.
fn state_of(members: &Json, id: &str) -> Option<(String, bool)> {
    members["members"].as_array()?.iter().find(|member| member["id"] == id).map(|member| {
        (
            member["state"].as_str().unwrap_or_default().to_owned(),
            member["connected"].as_bool().unwrap_or_default(),
        )
    })
}

/// Polls `node`'s members every 20 ms until `done`, at most `limit`; the time it took.
async fn until_members(
    node: &NodeProcess,
    limit: Duration,
    what: &str,
    done: impl Fn(&Json) -> bool,
) -> Duration {
    until_all(&[node], limit, what, |_, members| done(members)).await
}

fn discovery_flags(addrs: &[SocketAddr]) -> Vec<String> {
    let list = addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    vec![
        "--discovery".into(),
        format!("static:{list}"),
        "--keyspace".into(),
        "ks:8MiB".into(),
        "--source".into(),
        "echo:v-".into(),
    ]
}

fn start(addr: SocketAddr, addrs: &[SocketAddr]) -> NodeProcess {
    let flags = discovery_flags(addrs);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    NodeProcess::start(addr, &[], &flags)
}

async fn local_loads(node: &NodeProcess) -> u64 {
    let stats = node.stats().await;
    stats["keyspaces"]["ks"]["local_loads"].as_u64().expect("local_loads")
}

#[test]
fn a_member_killed_under_load_is_found_down_and_rejoins_when_restarted() {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let survivors: Vec<NodeProcess> = addrs[..2].iter().map(|&addr| start(addr, &addrs)).collect();
    let mut victim = Some(start(addrs[2], &addrs));
    let ids: Vec<String> =
        survivors.iter().chain(victim.as_ref()).map(|node| node.id.clone()).collect();
    herdcache_tests::drive(async {
        fn all<'a>(
            survivors: &'a [NodeProcess],
            victim: &'a Option<NodeProcess>,
        ) -> Vec<&'a NodeProcess> {
            survivors.iter().chain(victim.as_ref()).collect()
        }
        let node = |i: usize| &survivors[i];
        for (i, member) in all(&survivors, &victim).into_iter().enumerate() {
            let node = |_: usize| member;
            until_members(node(i), Duration::from_secs(10), "all alive and connected", |m| {
                ids.iter().all(|id| state_of(m, id) == Some(("alive".into(), true)))
            })
            .await;
            let members = node(i).members().await;
            assert_eq!(members["quorate"], true);
            assert_eq!(members["discovery"]["kind"], "static");
        }

        // Warm keys, asked through the victim only: each loaded once in the cluster, by its
        // owner, and no survivor holds a copy of the victim's keys.
        let keys: Vec<Vec<u8>> = (0..60).map(|i| format!("warm-{i}").into_bytes()).collect();
        for key in &keys {
            let answer = victim.as_ref().expect("running").get("ks", key).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        }
        let mut before = Vec::new();
        for member in all(&survivors, &victim) {
            before.push(local_loads(member).await);
        }
        assert_eq!(before.iter().sum::<u64>(), keys.len() as u64, "one load per key");
        let victim_owned = before[2];
        assert!(victim_owned > 0, "the victim owns some of the keys");

        // Load on the survivors while the victim dies: every get is answered.
        let load = {
            let survivors: Vec<String> = (0..2).map(|i| node(i).http.clone()).collect::<Vec<_>>();
            tokio::spawn(async move {
                let mut answered = 0u64;
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(4) {
                    for (i, http) in survivors.iter().enumerate() {
                        let url = format!("{http}/v1/ks/load-{}", answered % 40);
                        let answer = http::get(&url).await.expect("the front end answers");
                        assert_eq!(answer.status, StatusCode::OK, "get via {i}: {}", answer.text());
                        answered += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                answered
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed_at = Instant::now();
        drop(victim.take()); // SIGKILL: no goodbye, sockets dropped by the kernel
        let mut found_down = Vec::new();
        for i in 0..2 {
            let took = until_members(node(i), DETECTION_BOUND + SLACK, "the victim down", |m| {
                state_of(m, &ids[2]).is_some_and(|(state, _)| state == "down")
            })
            .await;
            found_down.push(killed_at.elapsed().max(took));
        }
        // Writes through every survivor succeed again.
        for i in 0..2 {
            let answer = node(i).put("ks", b"after-kill", b"w").await;
            assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
        }
        let writable = killed_at.elapsed();
        eprintln!(
            "kill -9 of 1 of 3 herdcache node processes: found down by the survivors after \
             {:?} and {:?}; writes succeed through both after {writable:?}",
            found_down[0], found_down[1]
        );
        assert!(writable <= DETECTION_BOUND + SLACK, "writes waited {writable:?}");
        let answered = load.await.expect("the load ran");
        assert!(answered > 0);

        // The victim's keys: loaded once more in all, each by its new owner.
        let mut during = Vec::new();
        for i in 0..2 {
            during.push(local_loads(node(i)).await);
        }
        for key in &keys {
            for i in 0..2 {
                let answer = node(i).get("ks", key).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                assert_eq!(answer.body, [b"v-".as_slice(), key].concat());
            }
        }
        let mut after = 0;
        for (survivor, during) in survivors.iter().zip(&during) {
            after += local_loads(survivor).await - during;
        }
        assert_eq!(after, victim_owned, "each key the victim owned was loaded once");

        // The victim restarts on its address: it rejoins, the others see it alive, and it
        // serves its keys (from its heirs' copies or one load each).
        victim = Some(start(addrs[2], &addrs));
        let restarted_at = Instant::now();
        for i in 0..2 {
            until_members(node(i), Duration::from_secs(10), "the victim back", |m| {
                state_of(m, &ids[2]) == Some(("alive".into(), true))
            })
            .await;
        }
        eprintln!("restarted member alive on both survivors after {:?}", restarted_at.elapsed());
        for key in &keys {
            for member in all(&survivors, &victim) {
                let answer = member.get("ks", key).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                assert_eq!(answer.body, [b"v-".as_slice(), key].concat());
            }
        }
        let reloaded = local_loads(victim.as_ref().expect("restarted")).await;
        assert!(reloaded <= victim_owned, "the restarted member loaded {reloaded} keys");
    });
    for node in survivors.into_iter().chain(victim) {
        let (status, stderr) = node.signal_and_wait("TERM");
        assert!(status.success(), "{stderr}");
    }
}

#[test]
fn below_min_members_a_node_is_not_ready_and_refuses_writes_until_the_member_returns() {
    let addrs: Vec<SocketAddr> = (0..2).map(|_| free_addr()).collect();
    let start_guarded = |addr: SocketAddr| {
        let mut flags = discovery_flags(&addrs);
        flags.extend(["--min-members".into(), "2".into(), "--down-after".into(), "1s".into()]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        NodeProcess::start(addr, &[], &flags)
    };
    let survivor = start_guarded(addrs[0]);
    let mut other = Some(start_guarded(addrs[1]));
    let other_id = other.as_ref().expect("up").id.clone();
    herdcache_tests::drive(async {
        let ready = || async {
            let answer = http::get(&format!("{}/v1/ready", survivor.http)).await.expect("ready");
            (answer.status, answer.text())
        };
        until_members(&survivor, Duration::from_secs(10), "both alive", |m| {
            state_of(m, &other_id) == Some(("alive".into(), true))
        })
        .await;
        assert_eq!(ready().await.0, StatusCode::OK);
        let put = survivor.put("ks", b"k", b"v").await;
        assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());

        drop(other.take());
        until_members(&survivor, Duration::from_secs(5), "the other down", |m| {
            state_of(m, &other_id).is_some_and(|(state, _)| state == "down")
        })
        .await;
        let (status, reason) = ready().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reason}");
        assert!(reason.contains("1 members up"), "{reason}");
        assert_eq!(survivor.members().await["quorate"], false);
        assert_eq!(survivor.stats().await["quorate"], false);
        let put = survivor.put("ks", b"k", b"w").await;
        assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE, "{}", put.text());
        // Gets are still answered, from the data source.
        let get = survivor.get("ks", b"k2").await;
        assert_eq!((get.status, get.body.as_ref()), (StatusCode::OK, b"v-k2".as_slice()));

        other = Some(start_guarded(addrs[1]));
        until_members(&survivor, Duration::from_secs(10), "the other back", |m| {
            state_of(m, &other_id) == Some(("alive".into(), true))
        })
        .await;
        assert_eq!(ready().await.0, StatusCode::OK);
        let put = survivor.put("ks", b"k", b"x").await;
        assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());
    });
}
