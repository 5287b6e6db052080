//! `herdcache node` with TLS, as real processes on loopback: the HTTP front end over TLS
//! (`--http-tls-cert`, `--http-tls-key`): served to a rustls client, plain HTTP answered 400
//! and closed, connections in handshake bounded by the cap and the client timeout, the
//! certificate reloaded on SIGHUP and when its files change (a bad file keeps the old one),
//! bad files and flags stopping the node with the reason.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herdcache_tests::certs::{CertFiles, TestPki};
use herdcache_tests::drive;
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

        // Plain HTTP: told to use https, and closed rather than left hanging.
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
    // way one reload at least).
    new_ca.node_with_names(&["127.0.0.1"]).write_to(&new_ca, &dir, "front").expect("rewritten");
    node.signal("HUP");
    wait_for_count(&node, &format!("SIGHUP: {reloaded}"), 1);
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
        let output = run_to_exit(&[
            "node",
            "--listen=127.0.0.1:0",
            "--http=127.0.0.1:0",
            "--keyspace=ks",
            "--source=echo:",
            "--http-tls-cert",
            &cert,
            "--http-tls-key",
            &key,
        ]);
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
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
    let cert = path_str(&files.cert);
    let output = run_to_exit(&[
        "node",
        "--listen=127.0.0.1:0",
        "--keyspace=ks",
        "--source=echo:",
        "--http-tls-cert",
        &cert,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--http-tls-key"), "{stderr}");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}
