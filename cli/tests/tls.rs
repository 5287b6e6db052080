//! `herdcache node` with TLS, as real processes on loopback. The HTTP front end over TLS
//! (`--http-tls-cert`, `--http-tls-key`): served to a rustls client, plain HTTP answered 400
//! and closed, connections in handshake bounded by the cap and the client timeout, the
//! certificate reloaded on SIGHUP and when its files change (a bad file keeps the old one),
//! bad files and flags stopping the node with the reason. Mutual TLS between peers
//! (`--tls-cert`, `--tls-key`, `--tls-ca`): a ring of three (with a cluster secret too) loads
//! each key once and fetches from the owners; a node with another CA's certificate, or one
//! naming another id, never gets a member's view as alive; a rotation to a new CA on SIGHUP; bad
//! flags and files. The README's openssl commands, run as written, make certificates two
//! members accept. groupcache over https with the real Go peer: fetches both ways, and a Go
//! peer whose certificate does not name its URL's host:port is refused.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herdcache_tests::certs::{CertFiles, NodeCert, TestPki};
use herdcache_tests::{
    GoPeer, GoPeerSpec, GoPeerTls, Origin, drive, go_peers_available, key_owned_by, origin_value,
};
use herdcache_tokio::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use support::*;

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdcache-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// A rustls client configuration that trusts only `ca_pem`.
#[allow(deprecated)] // ring's provider, as the node's: rustls deprecates it for want of PQ.
fn client_trusting(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("a CA certificate")).expect("a usable CA");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// One request to the TLS front end at `addr` (`127.0.0.1:PORT`) by a client trusting `ca`:
/// its status and body, or why the handshake or the request failed.
async fn https(
    addr: &str,
    ca_pem: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(|error| error.to_string())?;
        let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
        let name = ServerName::try_from(ip.to_owned()).map_err(|error| error.to_string())?;
        let tls = TlsConnector::from(client_trusting(ca_pem))
            .connect(name, tcp)
            .await
            .map_err(|error| format!("handshake: {error}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let mut request =
            Request::builder().method(method).uri(path).header("host", addr.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from_static(body))).expect("a request");
        let answer = sender.send_request(request).await.map_err(|error| error.to_string())?;
        let status = answer.status();
        let body = answer.into_body().collect().await.map_err(|error| error.to_string())?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 20 s".to_owned()))
}

/// A node whose front end serves `files`' certificate and key.
fn tls_front_node(files: &CertFiles, extra: &[&str]) -> NodeProcess {
    let (cert, key) = (path_str(&files.cert), path_str(&files.key));
    let mut flags = vec!["--keyspace", "ks", "--source", "echo:v-"];
    flags.extend(["--http-tls-cert", cert.as_str(), "--http-tls-key", key.as_str()]);
    flags.extend_from_slice(extra);
    NodeProcess::start(free_addr(), &[], &flags)
}

#[test]
fn the_front_end_serves_https_and_answers_plain_http_with_400_and_a_close() {
    let dir = temp_dir("front");
    let pki = TestPki::new();
    let files = pki.node_with_names(&["127.0.0.1"]).write_to(&pki, &dir, "front").expect("files");
    let token = dir.join("token");
    std::fs::write(&token, "0123456789abcdef\n").expect("a token file");
    let node = tls_front_node(&files, &["--http-token-file", &path_str(&token)]);
    let addr = node.http_addr().to_owned();
    drive(async {
        let ca = pki.ca_pem();
        let (status, body) =
            https(&addr, ca, Method::GET, "/v1/ks/k", &[], b"").await.expect("an answer");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"v-k"[..]));
        // The token works over TLS as over plain HTTP.
        let put = https(&addr, ca, Method::PUT, "/v1/ks/k", &[], b"new").await.expect("answer");
        assert_eq!(put.0, StatusCode::UNAUTHORIZED);
        let bearer = [("authorization", "Bearer 0123456789abcdef")];
        let put = https(&addr, ca, Method::PUT, "/v1/ks/k", &bearer, b"new").await.expect("answer");
        assert_eq!(put.0, StatusCode::NO_CONTENT);
        let (_, body) = https(&addr, ca, Method::GET, "/v1/ks/k", &[], b"").await.expect("answer");
        assert_eq!(&body[..], b"new");

        // A client that trusts another CA does not get through.
        let stranger = TestPki::new();
        let refused = https(&addr, stranger.ca_pem(), Method::GET, "/v1/ks/k", &[], b"").await;
        assert!(refused.as_ref().is_err_and(|why| why.contains("handshake")), "{refused:?}");

        // Plain HTTP: told to use https, and closed rather than left hanging. (After a second:
        // failed handshakes are logged at most once a second.)
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut plain = node.connect().await;
        plain.write_all(b"GET /v1/ks/k HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("sent");
        let (answer, ended) = read_to_close(&mut plain, Duration::from_secs(5)).await;
        assert_ne!(ended, Ended::Open, "{:?}", String::from_utf8_lossy(&answer));
        if ended == Ended::Closed {
            assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request");
            assert!(String::from_utf8_lossy(&answer).contains("https://"));
        }
        // Bytes that are neither TLS nor HTTP: closed at once, without an answer.
        let mut garbage = node.connect().await;
        garbage.write_all(&[0_u8; 64]).await.expect("sent");
        let (answer, ended) = read_to_close(&mut garbage, Duration::from_secs(5)).await;
        assert!(answer.is_empty() && ended != Ended::Open, "{answer:?} {ended:?}");

        // Still serving.
        let (status, _) = https(&addr, ca, Method::GET, "/v1/ready", &[], b"").await.expect("ok");
        assert_eq!(status, StatusCode::OK);
    });
    let said = node.stderr.text();
    assert!(said.contains("plain HTTP on the TLS front end"), "{said}");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn connections_in_handshake_count_against_the_cap_and_are_closed_after_the_client_timeout() {
    let dir = temp_dir("handshake");
    let pki = TestPki::new();
    let files = pki.node_with_names(&["127.0.0.1"]).write_to(&pki, &dir, "front").expect("files");
    let node =
        tls_front_node(&files, &["--http-max-connections", "2", "--http-client-timeout", "1s"]);
    let addr = node.http_addr().to_owned();
    drive(async {
        // Two clients connect and never start a handshake: they hold both places.
        let mut silent = [node.connect().await, node.connect().await];
        // Wait until the node has accepted both (it counts them at the accept).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut third = node.connect().await;
        let (answer, ended) = read_to_close(&mut third, Duration::from_secs(5)).await;
        assert_eq!(status_line(&answer), "HTTP/1.1 503 Service Unavailable", "{ended:?}");
        // The silent ones are closed once the client timeout passes.
        for stream in &mut silent {
            let (_, ended) = read_to_close(stream, Duration::from_secs(5)).await;
            assert_ne!(ended, Ended::Open, "a silent handshake held past the timeout");
        }
        // Then there is room again.
        let (status, _) =
            https(&addr, pki.ca_pem(), Method::GET, "/v1/ks/k", &[], b"").await.expect("room");
        assert_eq!(status, StatusCode::OK);
    });
    let said = node.stderr.text();
    assert!(said.contains("took over 1s: closed"), "{said}");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

/// Waits until `node` logged `needle` `count` times.
fn wait_for_count(node: &NodeProcess, needle: &str, count: usize) {
    let said = node
        .stderr
        .wait_until(Duration::from_secs(10), |text| text.as_str().matches(needle).count() >= count);
    assert!(said, "not {count} × {needle:?} on stderr:\n{}", node.stderr.text());
}

#[test]
fn the_front_end_certificate_is_reloaded_on_sighup_and_on_change_and_a_bad_one_is_not() {
    let dir = temp_dir("rotate");
    let (old_ca, new_ca) = (TestPki::new(), TestPki::new());
    let files =
        old_ca.node_with_names(&["127.0.0.1"]).write_to(&old_ca, &dir, "front").expect("files");
    let node = tls_front_node(&files, &[]);
    let addr = node.http_addr().to_owned();
    let served_by = |ca: &TestPki| {
        let (addr, ca) = (addr.clone(), ca.ca_pem().to_owned());
        drive(async move { https(&addr, &ca, Method::GET, "/v1/ks/k", &[], b"").await })
    };
    assert!(served_by(&old_ca).is_ok());
    let reloaded = "reloaded the front end's certificate";

    // Rotated to another CA's certificate, then SIGHUP (the watch may see it first: either
    // way one reload at least, and the SIGHUP's says so or finds the new pair in force).
    new_ca.node_with_names(&["127.0.0.1"]).write_to(&new_ca, &dir, "front").expect("rewritten");
    node.signal("HUP");
    wait_for_count(&node, "SIGHUP: ", 1);
    wait_for_count(&node, reloaded, 1);
    let said = node.stderr.text();
    assert!(
        said.contains(&format!("SIGHUP: {reloaded}"))
            || said.contains("SIGHUP: the front end's certificate is unchanged (in force"),
        "{said}"
    );
    assert!(served_by(&new_ca).is_ok(), "{}", node.stderr.text());
    assert!(served_by(&old_ca).is_err(), "the old certificate is still served");

    // A bad key file: logged, and the current certificate stays.
    std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nbroken\n").expect("rewritten");
    node.signal("HUP");
    wait_for_count(&node, "SIGHUP: the front end's certificate was not reloaded", 1);
    assert!(served_by(&new_ca).is_ok(), "{}", node.stderr.text());

    // Back to the old CA's by writing the files, no signal: the watch reloads them.
    let before = node.stderr.text().matches(reloaded).count();
    old_ca.node_with_names(&["127.0.0.1"]).write_to(&old_ca, &dir, "front").expect("rewritten");
    wait_for_count(&node, &format!("a file changed: {reloaded}"), 1);
    wait_for_count(&node, reloaded, before + 1);
    assert!(served_by(&old_ca).is_ok(), "{}", node.stderr.text());
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn bad_front_end_tls_files_and_flags_stop_the_node_with_the_reason() {
    let dir = temp_dir("bad-front");
    let pki = TestPki::new();
    let files = pki.node_with_names(&["127.0.0.1"]).write_to(&pki, &dir, "front").expect("files");
    let other = pki.node_with_names(&["127.0.0.1"]).write_to(&pki, &dir, "other").expect("files");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").expect("written");
    let missing = dir.join("missing.pem");
    let run = |cert: &Path, key: &Path| {
        let (cert, key) = (path_str(cert), path_str(key));
        start_refused(&["--http-tls-cert", &cert, "--http-tls-key", &key])
    };
    for (cert, key, reason) in [
        (&missing, &files.key, "missing.pem: cannot read it"),
        (&garbage, &files.key, "garbage.pem: no usable PEM certificate"),
        (&files.cert, &garbage, "garbage.pem: no usable PEM private key"),
        (&files.cert, &other.key, "other.key is not the key of the certificate in"),
        // A key where the certificate goes.
        (&files.key, &files.key, "front.key: no usable PEM certificate"),
    ] {
        let (code, stderr) = run(cert, key);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("--http-tls-cert/--http-tls-key") && stderr.contains(reason));
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // One without the other: a usage error.
    let (code, stderr) = start_refused(&["--http-tls-cert", &path_str(&files.cert)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--http-tls-key"), "{stderr}");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

// ---- TLS between peers (--tls-cert, --tls-key, --tls-ca) ----

/// The flags of a member with TLS from `files` and `extra`, keyspace `ks` from `source`.
fn peer_tls_flags(files: &CertFiles, source: &str, extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = ["--keyspace", "ks", "--source", source].map(String::from).into();
    for (flag, path) in
        [("--tls-cert", &files.cert), ("--tls-key", &files.key), ("--tls-ca", &files.ca)]
    {
        flags.extend([flag.to_owned(), path_str(path)]);
    }
    flags.extend(extra.iter().map(|flag| (*flag).to_owned()));
    flags
}

/// Starts a member on `listen` with `peers` and TLS from `files`.
fn start_tls(
    listen: SocketAddr,
    peers: &[SocketAddr],
    files: &CertFiles,
    extra: &[&str],
) -> NodeProcess {
    let flags = peer_tls_flags(files, "echo:v-", extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    NodeProcess::start(listen, peers, &flags)
}

/// The state of `id` in `members`.
fn state_of<'a>(members: &'a serde_json::Value, id: &str) -> &'a str {
    members["members"]
        .as_array()
        .and_then(|list| list.iter().find(|m| m["id"] == id))
        .and_then(|m| m["state"].as_str())
        .unwrap_or("absent")
}

fn security(stats: &serde_json::Value, name: &str) -> u64 {
    stats["security"][name].as_u64().unwrap_or_else(|| panic!("no security.{name} in {stats:#}"))
}

#[test]
fn three_members_with_tls_and_a_secret_load_each_key_once_and_fetch_from_each_other() {
    let dir = temp_dir("ring");
    let pki = TestPki::new();
    let secret = dir.join("secret");
    std::fs::write(&secret, "a secret of the cluster members\n").expect("a secret");
    let secret = path_str(&secret);
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let nodes: Vec<NodeProcess> = addrs
        .iter()
        .map(|addr| {
            // Each certificate names its member's id exactly.
            let name = format!("node-{}", addr.port());
            let files =
                pki.node_for_id(&addr.to_string()).write_to(&pki, &dir, &name).expect("files");
            start_tls(*addr, &addrs, &files, &["--cluster-secret-file", &secret])
        })
        .collect();
    drive(async {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        until_all(&all, Duration::from_secs(20), "every member connected", |node, members| {
            nodes
                .iter()
                .filter(|other| other.id != node.id)
                .all(|other| connected(members, &other.id))
        })
        .await;
        let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("key-{i}").into_bytes()).collect();
        assert_echo_gets(&nodes, &keys).await;
        // One load per key in the ring; the others fetched from the owners over TLS.
        assert_eq!(stats_sum(&nodes, "local_loads").await, 30);
        assert_eq!(stats_sum(&nodes, "peer_errors").await, 0);
        assert!(stats_sum(&nodes, "peer_loads").await >= 30, "remote gets went to the owners");
        for node in &nodes {
            let stats = node.stats().await;
            assert!(counter(&stats, "ks", "peer_loads") > 0, "{stats:#}");
            assert!(counter(&stats, "ks", "server_requests") > 0, "{stats:#}");
            for name in
                ["tls_handshake_failures", "refused_unauthenticated", "refused_unauthorized"]
            {
                assert_eq!(security(&stats, name), 0, "{name}: {stats:#}");
            }
        }
        // Writes go over TLS too.
        let answer = nodes[0].put("ks", b"key-3", b"written").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
        for node in &nodes {
            assert_eq!(node.get("ks", b"key-3").await.body, "written");
        }
    });
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn a_node_with_another_cas_certificate_or_another_ids_is_never_connected() {
    let dir = temp_dir("intruders");
    let (pki, other_pki) = (TestPki::new(), TestPki::new());
    let (a, b) = (free_addr(), free_addr());
    let (stranger, impostor) = (free_addr(), free_addr());
    let member = |addr: SocketAddr| {
        let files =
            pki.node_with_names(&["127.0.0.1"]).write_to(&pki, &dir, &format!("m{}", addr.port()));
        start_tls(addr, &[a, b], &files.expect("files"), &[])
    };
    let (a_node, b_node) = (member(a), member(b));
    // A certificate for its own id, from another CA (and its CA file: a directory of its own,
    // since every node of a directory shares ca.crt).
    let other_dir = dir.join("other-ca");
    std::fs::create_dir_all(&other_dir).expect("a directory");
    let files =
        other_pki.node_for_id(&stranger.to_string()).write_to(&other_pki, &other_dir, "stranger");
    let stranger_node = start_tls(stranger, &[a, b, stranger], &files.expect("files"), &[]);
    // The cluster's CA, but a certificate that names member a's id, not its own.
    let files = pki.node_for_id(&a.to_string()).write_to(&pki, &dir, "impostor");
    let impostor_node = start_tls(impostor, &[a, b, impostor], &files.expect("files"), &[]);
    drive(async {
        until_connected(&a_node, &b_node).await;
        // The intruders keep dialling (every heartbeat); give them a few rounds.
        let started = std::time::Instant::now();
        while security(&a_node.stats().await, "tls_handshake_failures")
            + security(&b_node.stats().await, "tls_handshake_failures")
            == 0
        {
            assert!(started.elapsed() < Duration::from_secs(20), "no handshake failure counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        for intruder in [&stranger_node, &impostor_node] {
            // Past --down-after (2 s) without a word from them, the members are down to it.
            let members = intruder.members().await;
            for id in [&a_node.id, &b_node.id] {
                assert_ne!(state_of(&members, id), "alive", "{}: {members:#}", intruder.id);
            }
            // Its writes through its own front end reach no member.
            let _ = intruder.put("ks", b"key-1", b"intruder").await;
        }
        for node in [&a_node, &b_node] {
            assert_eq!(node.get("ks", b"key-1").await.body, "v-key-1");
            let members = node.members().await;
            let ids: Vec<&str> = members["members"]
                .as_array()
                .map(|list| list.iter().filter_map(|m| m["id"].as_str()).collect())
                .unwrap_or_default();
            assert!(
                !ids.contains(&stranger_node.id.as_str())
                    && !ids.contains(&impostor_node.id.as_str()),
                "{members:#}"
            );
        }
    });
    let said = stranger_node.stderr.text();
    assert!(!said.contains("panicked"), "{said}");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn members_rotated_to_a_new_ca_reload_on_sighup_and_a_member_restarted_with_only_it_joins() {
    let dir = temp_dir("rotate-peers");
    let (old_ca, new_ca) = (TestPki::new(), TestPki::new());
    let (a, b) = (free_addr(), free_addr());
    let files = |pki: &TestPki, addr: SocketAddr| {
        pki.node_for_id(&addr.to_string())
            .write_to(pki, &dir, &format!("n{}", addr.port()))
            .expect("files")
    };
    // Each member's files; the CA file is shared (ca.crt in one directory).
    let (a_files, b_files) = (files(&old_ca, a), files(&old_ca, b));
    let a_node = start_tls(a, &[a, b], &a_files, &[]);
    let b_node = start_tls(b, &[a, b], &b_files, &[]);
    drive(until_connected(&a_node, &b_node));

    // Every member's files move to the new CA; SIGHUP each.
    files(&new_ca, a);
    files(&new_ca, b);
    for node in [&a_node, &b_node] {
        node.signal("HUP");
        node.wait_for_stderr("SIGHUP: ");
        let said = node.stderr.text();
        assert!(
            said.contains("reloaded the peers' TLS certificate, key and CA")
                || said.contains("the peers' TLS files are unchanged (in force)"),
            "{said}"
        );
    }
    // b restarts: it knows only the new CA, so it joins only if a presents the new certificate
    // and takes b's.
    let (status, _) = b_node.signal_and_wait("TERM");
    assert!(status.success());
    let b_node = start_tls(b, &[a, b], &b_files, &[]);
    drive(until_connected(&a_node, &b_node));
    drive(async {
        let answer = b_node.get("ks", b"after").await;
        assert_eq!(answer.body, "v-after");
        assert_eq!(security(&a_node.stats().await, "tls_handshake_failures"), 0);
    });

    // A bad file: SIGHUP keeps the configuration in force and says why.
    std::fs::write(&a_files.key, "not a key").expect("rewritten");
    a_node.signal("HUP");
    a_node.wait_for_stderr("the peers' TLS files were not reloaded, the current ones stay");
    drive(async {
        assert_eq!(a_node.get("ks", b"still").await.body, "v-still");
    });
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn peer_tls_flags_that_do_not_fit_stop_the_node_with_the_reason() {
    let dir = temp_dir("bad-peer-flags");
    let pki = TestPki::new();
    let files = pki.node_with_names(&["127.0.0.1"]).write_to(&pki, &dir, "n").expect("files");
    let (cert, key, ca) = (path_str(&files.cert), path_str(&files.key), path_str(&files.ca));
    let missing = path_str(&dir.join("missing.pem"));
    for (extra, reason) in [
        (vec!["--tls-cert", &cert], "--tls-key and --tls-ca missing"),
        (vec!["--tls-cert", &cert, "--tls-key", &key], "--tls-ca missing"),
        (vec!["--tls-ca", &ca], "--tls-cert and --tls-key missing"),
        (vec!["--tls-cert", &missing, "--tls-key", &key, "--tls-ca", &ca], "missing.pem"),
        (vec!["--tls-cert", &cert, "--tls-key", &cert, "--tls-ca", &ca], "n.crt"),
        (vec!["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &key], "n.key"),
        (
            vec!["--groupcache-compat", "--peers", "https://127.0.0.1:1"],
            "https:// peers need --tls-cert, --tls-key and --tls-ca",
        ),
        (
            vec![
                "--groupcache-compat",
                "--peers",
                "http://127.0.0.1:1",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-ca",
                &ca,
            ],
            "with --tls-cert every peer is https://host:port",
        ),
    ] {
        let (code, stderr) = start_refused(&extra);
        assert_eq!(code, Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains(reason), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

// ---- The README's how-to ----

/// The `sh` blocks of the README's "Securing a cluster" that run openssl, in order.
fn readme_openssl_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("the README");
    let start = readme.find("## Securing a cluster\n").expect("the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    section
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block.to_owned()))
        .filter(|block| block.contains("openssl "))
        .collect()
}

/// Whether openssl runs here; in CI it must (`.ci/run` installs it).
fn openssl_available() -> bool {
    let runs = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success());
    let ci = std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "0" | "false"));
    assert!(runs || !ci, "openssl is required in CI (Debian package openssl)");
    if !runs {
        eprintln!("skipping the README's openssl commands: no openssl on the PATH");
    }
    runs
}

/// Runs `script` with `sh -eu` in `dir` with `env`; fails with its output if it fails.
fn run_sh(script: &str, dir: &Path, env: &[(&str, &str)]) {
    let output = std::process::Command::new("sh")
        .args(["-eu", "-c", script])
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "{script}\nfailed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_readmes_openssl_commands_make_certificates_that_two_members_accept() {
    if !openssl_available() {
        return;
    }
    let blocks = readme_openssl_blocks();
    assert_eq!(blocks.len(), 2, "the CA's block and a member's: {blocks:#?}");
    let dir = temp_dir("readme");
    run_sh(&blocks[0], &dir, &[]);
    let (a, b) = (free_addr(), free_addr());
    let files = |addr: SocketAddr, name: &str| {
        run_sh(
            &blocks[1],
            &dir,
            &[("ID", &addr.to_string()), ("HOST", "127.0.0.1"), ("NODE", name)],
        );
        CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.crt"),
        }
    };
    let (a_files, b_files) = (files(a, "cache-0"), files(b, "cache-1"));
    let a_node = start_tls(a, &[a, b], &a_files, &[]);
    let b_node = start_tls(b, &[a, b], &b_files, &[]);
    drive(async {
        until_connected(&a_node, &b_node).await;
        let keys: Vec<Vec<u8>> = (0..10).map(|i| format!("key-{i}").into_bytes()).collect();
        assert_echo_gets([&a_node, &b_node], &keys).await;
        let nodes = [a_node, b_node];
        assert_eq!(stats_sum(&nodes, "local_loads").await, 10);
        assert!(stats_sum(&nodes, "peer_loads").await > 0);
        for node in &nodes {
            assert_eq!(security(&node.stats().await, "tls_handshake_failures"), 0);
        }
    });
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

// ---- groupcache over https with the real Go peer ----

#[test]
fn a_node_and_a_go_peer_fetch_each_others_keys_over_https_and_a_misnamed_go_peer_is_refused() {
    if !go_peers_available() {
        return;
    }
    let dir = temp_dir("go");
    let pki = TestPki::new();
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        let go_peer = |name: &'static str, cert: NodeCert| {
            let files = cert.write_to(&pki, &dir, name).expect("files");
            let mut spec = GoPeerSpec::new(origin.template(name));
            spec.tls = Some(GoPeerTls::from(&files));
            spec.peer_timeout = Duration::from_secs(5);
            async move { GoPeer::start(&spec).await.expect("a Go peer with TLS") }
        };
        // A Go peer whose certificate names its host (127.0.0.1: every port on it), and one
        // whose certificate names another host:port only.
        let go = go_peer("go", pki.node_with_names(&["127.0.0.1"])).await;
        let misnamed = go_peer("misnamed", pki.node_for_id("127.0.0.1:1")).await;
        let listen = free_addr();
        let hc_url = format!("https://{listen}");
        let ring = [go.base_url().to_owned(), misnamed.base_url().to_owned(), hc_url.clone()];
        let files = pki.node_with_names(&["127.0.0.1"]).write_to(&pki, &dir, "hc").expect("files");
        let peers = ring.join(",");
        let extra = ["--groupcache-compat", "--peers", &peers];
        let flags = peer_tls_flags(&files, &origin.template("hc"), &extra);
        let node = tokio::task::spawn_blocking(move || {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            NodeProcess::start(listen, &[], &flags)
        })
        .await
        .expect("started");
        assert_eq!(node.id, hc_url);
        for peer in [&go, &misnamed] {
            peer.set_peers(&ring).await.expect("the ring");
        }
        let urls: Vec<&str> = ring.iter().map(String::as_str).collect();

        // Both ways over TLS: each key loaded once, by its owner.
        let of_go = key_owned_by(&urls, go.base_url());
        let of_hc = key_owned_by(&urls, &hc_url);
        let answer = node.get("ks", of_go.as_bytes()).await;
        assert_eq!(answer.body, origin_value(of_go.as_bytes()), "{}", answer.text());
        let value = go.get(&of_hc).await.expect("the Go peer's get");
        assert_eq!(value, origin_value(of_hc.as_bytes()));
        assert_eq!(origin.loaders_of(&of_go), vec!["go".to_owned()], "loaded by its owner");
        assert_eq!(origin.loaders_of(&of_hc), vec!["hc".to_owned()], "loaded by its owner");
        let go_stats = go.stats().await.expect("stats");
        assert_eq!((go_stats.peer_loads, go_stats.server_requests), (1, 1), "{go_stats:?}");
        let stats = node.stats().await;
        assert_eq!(counter(&stats, "ks", "peer_loads"), 1, "{stats:#}");
        assert_eq!(counter(&stats, "ks", "server_requests"), 1, "{stats:#}");

        // The misnamed peer's certificate does not name its URL's host:port: the node refuses
        // it and loads the key itself; the peer serves nothing.
        let of_misnamed = key_owned_by(&urls, misnamed.base_url());
        let answer = node.get("ks", of_misnamed.as_bytes()).await;
        assert_eq!(answer.body, origin_value(of_misnamed.as_bytes()), "{}", answer.text());
        assert_eq!(origin.loaders_of(&of_misnamed), vec!["hc".to_owned()]);
        assert_eq!(misnamed.stats().await.expect("stats").server_requests, 0);
        let stats = node.stats().await;
        assert_eq!(counter(&stats, "ks", "peer_errors"), 1, "{stats:#}");
        assert_eq!(counter(&stats, "ks", "peer_loads"), 1, "{stats:#}");
    });
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}
