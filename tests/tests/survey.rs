//! gopherdiscovery's survey protocol against an SP implementation not written here,
//! nanomsg's `nanocat` (Debian's nanomsg-utils), and among herdcache nodes:
//!
//! - nanocat as a RESPONDENT answers our server's surveys: its id is on the list our server
//!   publishes (read by a nanocat SUB);
//! - nanocat as a SUB is sent our server's current list at once when it connects;
//! - nanocat as a SURVEYOR surveys our provider: the node answers with its id;
//! - nanocat as a PUB feeds our provider a list: the node follows it;
//! - 3 tokio nodes and our server find each other; a killed node drops from the list once a
//!   survey misses it.
//!
//! Skipped (with a message) where nanocat is not installed; never skipped in CI.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::sp::{SpLimits, SpProtocol, SurveyorConfig, encode_handshake};
use herdcache_proto::{KeyspaceConfig, MemberState};
use herdcache_runtime::discovery::{SurveyDiscovery, SurveyServer, SurveyServerConfig};
use herdcache_tests::etcd::{Timeline, wait_until};
use herdcache_tests::nanocat::{Nanocat, nanocat_available};
use herdcache_tests::{drive, within};
use herdcache_tokio::{Handle, Node, source_fn};

const KEYSPACE: &str = "survey-test";
const CONVERGE: Duration = Duration::from_secs(15);

/// A loopback port free a moment ago (for nanocat, which binds it itself).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Our survey server on free loopback ports, polling fast; it stops when the test's runtime
/// ends. Returns the SURVEYOR and PUB addresses.
async fn start_server() -> (SocketAddr, SocketAddr) {
    start_server_with(SurveyServerConfig::default()).await
}

async fn start_server_with(config: SurveyServerConfig) -> (SocketAddr, SocketAddr) {
    let config = SurveyServerConfig {
        surveyor: SurveyorConfig {
            poll_time: Duration::from_millis(500),
            survey_time: Duration::from_millis(300),
            ..config.surveyor
        },
        ..config
    };
    let server = SurveyServer::bind(loopback(0), loopback(0), config).await.expect("binds");
    let addresses = (server.survey_addr().expect("bound"), server.publish_addr().expect("bound"));
    tokio::spawn(server.run(std::future::pending()));
    addresses
}

/// A tokio node on a one-worker runtime of its own, with survey discovery.
struct SurveyNode {
    handle: Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SurveyNode {
    async fn start(survey: SocketAddr, publish: SocketAddr) -> SurveyNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("node-tokio")
            .enable_all()
            .build()
            .expect("a tokio runtime for a node");
        let source = source_fn(|key: Bytes| async move {
            Ok::<_, io::Error>(Bytes::from([b"loaded:".as_slice(), &key].concat()))
        });
        let builder = Node::builder()
            .cluster("survey-test")
            .discovery(SurveyDiscovery::new(survey.to_string(), publish.to_string()))
            .keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20), source);
        let handle =
            runtime.spawn(builder.start()).await.expect("the start task").expect("the node starts");
        SurveyNode { handle, runtime: Some(runtime) }
    }

    fn id(&self) -> String {
        self.handle.node_id().to_owned()
    }

    /// The list the provider reported last.
    fn discovered(&self) -> Vec<String> {
        self.handle.discovery().map(|status| status.members).unwrap_or_default()
    }

    fn lists_alive(&self, ids: &[String]) -> bool {
        let members = self.handle.members();
        members.members.len() == ids.len()
            && ids.iter().all(|id| members.get(id).is_some_and(|m| m.state == MemberState::Alive))
    }

    fn kill(mut self) {
        self.handle.kill();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for SurveyNode {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            self.handle.kill();
            runtime.shutdown_background();
        }
    }
}

fn quote(what: &str, nanocat: &Nanocat) {
    let lines = nanocat.lines();
    let shown: Vec<&String> = lines.iter().take(5).collect();
    eprintln!("[{what}] `{}` printed {} lines, first: {shown:?}", nanocat.command(), lines.len());
}

#[test]
fn nanocat_respondent_answers_our_server_and_joins_the_published_list() {
    if !nanocat_available() {
        return;
    }
    drive(async {
        let log = Timeline::new("nanocat respondent");
        let (survey, publish) = start_server().await;
        let respondent = Nanocat::start(&[
            "--respondent",
            "--connect",
            &format!("tcp://{survey}"),
            "--data",
            "nanocat-respondent:1",
        ]);
        let subscriber = Nanocat::start(&["--sub", "--connect", &format!("tcp://{publish}")]);
        let took = wait_until(CONVERGE, "nanocat's id on our published list", || {
            subscriber.lines().iter().any(|line| line == "nanocat-respondent:1")
        })
        .await;
        log.note(format!("our server published nanocat's id after {took:?}"));
        quote("nanocat SUB reading our PUB", &subscriber);
        drop(respondent);
        let took = wait_until(CONVERGE, "nanocat dropped from the list", || {
            subscriber.lines().last().is_some_and(String::is_empty)
        })
        .await;
        log.note(format!("nanocat stopped: an empty list published {took:?} later"));
        quote("nanocat SUB after the respondent stopped", &subscriber);
    });
}

#[test]
fn nanocat_subscriber_is_sent_the_current_list_at_once() {
    if !nanocat_available() {
        return;
    }
    drive(async {
        let log = Timeline::new("nanocat subscriber");
        let (survey, publish) = start_server().await;
        let node = SurveyNode::start(survey, publish).await;
        let id = node.id();
        wait_until(CONVERGE, "the node on its own list", || node.discovered() == [id.clone()])
            .await;
        log.note(format!("our server published [{id}]"));
        // The list is stable now: it is published again only to new subscribers.
        let subscriber = Nanocat::start(&["--sub", "--connect", &format!("tcp://{publish}")]);
        let took = wait_until(Duration::from_secs(5), "the current list at once", || {
            subscriber.lines().first() == Some(&id)
        })
        .await;
        log.note(format!("nanocat SUB got the current list {took:?} after it started"));
        quote("nanocat SUB", &subscriber);
    });
}

#[test]
fn nanocat_surveyor_surveys_our_provider_and_the_node_answers_its_id() {
    if !nanocat_available() {
        return;
    }
    drive(async {
        let log = Timeline::new("nanocat surveyor");
        let survey = loopback(free_port());
        let nowhere = loopback(free_port());
        let surveyor = Nanocat::start(&[
            "--surveyor",
            "--bind",
            &format!("tcp://{survey}"),
            "--interval",
            "1",
            "--data",
            "who is there",
        ]);
        let node = SurveyNode::start(survey, nowhere).await;
        let id = node.id();
        let took =
            wait_until(CONVERGE, "the node's answer", || surveyor.lines().contains(&id)).await;
        log.note(format!("nanocat SURVEYOR got our node's id {id} after {took:?}"));
        quote("nanocat SURVEYOR", &surveyor);
        let status = node.handle.discovery().expect("a provider");
        assert!(!status.healthy, "no PUB to follow: unhealthy ({status:?})");
    });
}

#[test]
fn nanocat_publisher_feeds_our_provider_a_list() {
    if !nanocat_available() {
        return;
    }
    drive(async {
        let log = Timeline::new("nanocat publisher");
        let survey = loopback(free_port());
        let publish = loopback(free_port());
        let publisher = Nanocat::start(&[
            "--pub",
            "--bind",
            &format!("tcp://{publish}"),
            "--interval",
            "1",
            "--data",
            "127.0.0.1:1|127.0.0.1:2",
        ]);
        // A surveyor too, so that both of the provider's connections are up (healthy).
        let _surveyor = Nanocat::start(&[
            "--surveyor",
            "--bind",
            &format!("tcp://{survey}"),
            "--interval",
            "1",
            "--data",
            "",
        ]);
        let node = SurveyNode::start(survey, publish).await;
        let took = wait_until(CONVERGE, "the published list, healthy", || {
            node.discovered() == ["127.0.0.1:1", "127.0.0.1:2"]
                && node.handle.discovery().is_some_and(|status| status.healthy)
        })
        .await;
        log.note(format!(
            "our node follows nanocat's list after {took:?}: {:?}",
            node.discovered()
        ));
        drop(publisher);
        let took = wait_until(CONVERGE, "unhealthy without its publisher", || {
            node.handle.discovery().is_some_and(|status| !status.healthy)
        })
        .await;
        assert_eq!(node.discovered(), ["127.0.0.1:1", "127.0.0.1:2"], "the last list stays");
        log.note(format!("publisher gone: the last list stays, unhealthy after {took:?}"));
    });
}

#[test]
fn three_nodes_and_our_server_find_each_other_and_a_killed_node_drops() {
    // Runs without nanocat: all of it is ours.
    drive(async {
        let log = Timeline::new("3 nodes");
        let (survey, publish) = start_server().await;
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(SurveyNode::start(survey, publish).await);
        }
        let mut ids: Vec<String> = nodes.iter().map(SurveyNode::id).collect();
        ids.sort();
        let took = wait_until(CONVERGE, "3 nodes list each other", || {
            nodes.iter().all(|node| node.lists_alive(&ids))
        })
        .await;
        log.note(format!("3 nodes list each other, all alive, after {took:?}"));
        let key = "k";
        let value = Bytes::from_static(b"v");
        within(Duration::from_secs(5), "a put", nodes[0].handle.put(KEYSPACE, key, value))
            .await
            .expect("a put");
        for node in &nodes {
            let got = within(Duration::from_secs(5), "a get", node.handle.get_value(KEYSPACE, key))
                .await
                .expect("a get");
            assert_eq!(got.bytes, "v");
        }
        let killed = nodes.pop().expect("3 nodes");
        let killed_id = killed.id();
        killed.kill();
        let rest: Vec<String> = ids.iter().filter(|id| **id != killed_id).cloned().collect();
        let took = wait_until(CONVERGE, "the killed node dropped from the list", || {
            nodes.iter().all(|node| node.discovered() == rest)
        })
        .await;
        log.note(format!("killed {killed_id}: dropped from the published list after {took:?}"));
    });
}

/// Reads until the server closes the connection (or `limit` passes: a failure); what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = [0u8; 256];
    within(limit, "the server closes the connection", async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    received
}

#[test]
fn the_server_closes_a_subscriber_past_its_cap_and_a_peer_that_breaks_the_limits() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    drive(async {
        let config = SurveyServerConfig {
            surveyor: SurveyorConfig {
                limits: SpLimits { max_message: 1024 },
                ..SurveyorConfig::default()
            },
            max_subscribers: 1,
            ..SurveyServerConfig::default()
        };
        let (survey, publish) = start_server_with(config).await;
        // The first subscriber is served (its handshake is answered and it stays open)...
        let mut first = TcpStream::connect(publish).await.expect("connects");
        first.write_all(&encode_handshake(SpProtocol::SUB)).await.expect("handshake");
        let mut handshake = [0u8; 8];
        within(Duration::from_secs(5), "the PUB handshake", async {
            use tokio::io::AsyncReadExt;
            first.read_exact(&mut handshake).await.expect("the server's handshake");
        })
        .await;
        assert_eq!(handshake, encode_handshake(SpProtocol::PUB));
        // ...the second is over the cap: closed at once, without a handshake.
        let mut second = TcpStream::connect(publish).await.expect("connects");
        assert_eq!(read_until_closed(&mut second, Duration::from_secs(5)).await, b"");

        // A respondent announcing a message over the limit is closed.
        let mut flood = TcpStream::connect(survey).await.expect("connects");
        flood.write_all(&encode_handshake(SpProtocol::RESPONDENT)).await.expect("handshake");
        flood.write_all(&u64::MAX.to_be_bytes()).await.expect("a huge length");
        let received = read_until_closed(&mut flood, Duration::from_secs(5)).await;
        assert!(received.starts_with(&encode_handshake(SpProtocol::SURVEYOR)), "{received:?}");

        // A peer of the wrong protocol (a SUB dialing the SURVEYOR) is closed too.
        let mut wrong = TcpStream::connect(survey).await.expect("connects");
        wrong.write_all(&encode_handshake(SpProtocol::SUB)).await.expect("handshake");
        let received = read_until_closed(&mut wrong, Duration::from_secs(5)).await;
        assert!(received.starts_with(&encode_handshake(SpProtocol::SURVEYOR)), "{received:?}");
    });
}
