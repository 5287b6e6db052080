//! The TLS session over in-memory byte pipes: handshakes, data both ways in any split, and
//! every way a handshake must fail.

use super::*;
use alloc::vec;
use bytes::BytesMut;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};

pub(crate) struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A certificate and key (PEM) for `sans`; `expired`: valid in 2000 only.
    fn issue(&self, sans: Vec<SanType>, expired: bool) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2000, 12, 31);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub(crate) fn config_for_id(&self, id: &str) -> TlsConfig {
        let (cert, key) = self.issue(vec![uri(id)], false);
        TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), self.pem.as_bytes()).unwrap()
    }
}

fn uri(id: &str) -> SanType {
    SanType::URI(format!("herdcache://{id}").as_str().try_into().unwrap())
}

/// One side of a pipe: its session and the plaintext it received.
pub(crate) struct End {
    pub(crate) session: TlsSession,
    pub(crate) received: BytesMut,
    pub(crate) error: Option<SessionError>,
}

impl End {
    fn new(session: TlsSession) -> End {
        End { session, received: BytesMut::new(), error: None }
    }
}

/// Moves ciphertext both ways in slices of `step` bytes until nothing moves or a side fails.
pub(crate) fn pump(a: &mut End, b: &mut End, step: usize) {
    for _ in 0..10_000 {
        let moved = deliver(a, b, step) | deliver(b, a, step);
        if !moved {
            return;
        }
    }
    panic!("the sessions never settle");
}

/// Moves what `from` has to write to `to`; whether there was anything.
fn deliver(from: &mut End, to: &mut End, step: usize) -> bool {
    let mut out = Vec::new();
    from.session.pending_ciphertext(&mut out);
    if to.error.is_none() {
        for slice in out.chunks(step) {
            if let Err(error) = to.session.receive(slice, &mut to.received) {
                to.error = Some(error);
                break;
            }
        }
    }
    !out.is_empty()
}

pub(crate) fn pair(server: &TlsConfig, client: &TlsConfig, dialled: &str) -> (End, End) {
    let server = End::new(TlsSession::accept(server).unwrap());
    let client = End::new(TlsSession::connect(client, dialled.as_bytes()).unwrap());
    (server, client)
}

#[test]
fn a_handshake_binds_both_certificates_and_data_crosses_both_ways_in_one_byte_slices() {
    let ca = Ca::new();
    let (server_config, client_config) =
        (ca.config_for_id("127.0.0.1:7001"), ca.config_for_id("127.0.0.1:7002"));
    for step in [1, 7, 100_000] {
        let (mut server, mut client) = pair(&server_config, &client_config, "127.0.0.1:7001");
        pump(&mut server, &mut client, step);
        assert!(server.error.is_none() && client.error.is_none(), "step {step}");
        assert!(!server.session.is_handshaking() && !client.session.is_handshaking());
        let from_client = server.session.peer_identity().unwrap();
        assert!(from_client.admits(b"127.0.0.1:7002") && !from_client.admits(b"127.0.0.1:7001"));
        let from_server = client.session.peer_identity().unwrap();
        assert!(from_server.admits(b"127.0.0.1:7001"));

        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        client.session.send(b"hello", &mut out);
        client.session.send(&big, &mut out);
        assert!(out.len() > big.len(), "ciphertext is larger");
        for slice in out.chunks(step) {
            server.session.receive(slice, &mut server.received).unwrap();
        }
        assert_eq!(&server.received[..5], b"hello");
        assert_eq!(&server.received[5..], &big[..]);
        let mut out = Vec::new();
        server.session.send(b"world", &mut out);
        for slice in out.chunks(step) {
            client.session.receive(slice, &mut client.received).unwrap();
        }
        assert_eq!(&client.received[..], b"world");

        let mut out = Vec::new();
        client.session.close(&mut out);
        server.session.receive(&out, &mut server.received).unwrap();
        assert!(server.session.peer_closed());
    }
}

#[test]
fn plaintext_sent_before_the_handshake_completes_arrives_after_it() {
    let ca = Ca::new();
    let (mut server, mut client) = pair(&ca.config_for_id("a:1"), &ca.config_for_id("b:1"), "a:1");
    let mut early = Vec::new();
    client.session.send(b"early", &mut early);
    let mut hello = Vec::new();
    client.session.pending_ciphertext(&mut hello);
    early.extend(hello);
    server.session.receive(&early, &mut server.received).unwrap();
    pump(&mut server, &mut client, 3);
    assert_eq!(&server.received[..], b"early");
}

#[test]
fn garbage_and_a_plaintext_hello_fail_at_the_first_bytes() {
    let ca = Ca::new();
    let config = ca.config_for_id("a:1");
    let native_hello = [0, 0, 0, 20, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, b'h', b'e', b'r', b'd'];
    for bytes in [&b"GET / HTTP/1.1\r\n\r\n"[..], &native_hello, &[0xff; 64]] {
        let mut server = End::new(TlsSession::accept(&config).unwrap());
        let error = server.session.receive(bytes, &mut server.received).unwrap_err();
        assert!(matches!(error, SessionError::Tls(_)), "{error}");
        // The client side refuses garbage from a server the same way.
        let mut client = End::new(TlsSession::connect(&config, b"a:1").unwrap());
        client.session.pending_ciphertext(&mut Vec::new());
        assert!(client.session.receive(bytes, &mut client.received).is_err());
    }
}

#[test]
fn more_than_the_handshake_budget_before_it_completes_fails() {
    let ca = Ca::new();
    let mut server = End::new(TlsSession::accept(&ca.config_for_id("a:1")).unwrap());
    // Well-formed handshake records carrying one client hello of the largest size a
    // handshake message may announce (64 KiB), in 1000-byte fragments. Either bound ends it
    // before the budget is passed: rustls' own message buffer (which fills first for one
    // message) or the session's budget (which also counts every record of a flight).
    let mut failed = None;
    for record in 0..(MAX_HANDSHAKE_BYTES / 1000 + 2) {
        let mut bytes = vec![0x16, 0x03, 0x01, 0x03, 0xe8];
        let mut fragment = vec![0_u8; 1000];
        if record == 0 {
            fragment[..4].copy_from_slice(&[0x01, 0x00, 0xff, 0xff]);
        }
        bytes.extend(fragment);
        if let Err(error) = server.session.receive(&bytes, &mut server.received) {
            failed = Some(error);
            break;
        }
    }
    let bounded = match &failed {
        Some(SessionError::HandshakeTooLarge) => true,
        Some(SessionError::Io(error)) => error.to_string().contains("message buffer full"),
        _ => false,
    };
    assert!(bounded, "bounded before the handshake: {failed:?}");
}

#[test]
fn frames_right_behind_the_peers_finished_are_not_handshake_bytes() {
    let ca = Ca::new();
    let (mut server, mut client) = pair(&ca.config_for_id("a:1"), &ca.config_for_id("b:1"), "a:1");
    assert!(deliver(&mut client, &mut server, usize::MAX), "the client's hello");
    assert!(deliver(&mut server, &mut client, usize::MAX), "the server's flight");
    assert!(!client.session.is_handshaking() && server.session.is_handshaking());
    // The client's last flight and, in the same read, twice the handshake budget of data.
    let burst: Vec<u8> = (0..2 * MAX_HANDSHAKE_BYTES + 1).map(|i| i as u8).collect();
    let mut flight = Vec::new();
    client.session.send(&burst, &mut flight);
    server.session.receive(&flight, &mut server.received).expect("taken whole");
    assert!(!server.session.is_handshaking());
    assert_eq!(&server.received[..], &burst[..]);
}

#[test]
fn a_certificate_from_another_ca_fails_on_both_sides() {
    let (ca, other) = (Ca::new(), Ca::new());
    let trusted = ca.config_for_id("a:1");
    let stranger = other.config_for_id("b:1");
    // A stranger dials: the server refuses its client certificate.
    let (mut server, mut client) = pair(&trusted, &stranger, "a:1");
    pump(&mut server, &mut client, 1000);
    assert!(server.error.is_some() || client.error.is_some());
    assert!(
        matches!(
            (&server.error, &client.error),
            (Some(SessionError::Tls(rustls::Error::InvalidCertificate(_))), _)
                | (_, Some(SessionError::Tls(rustls::Error::InvalidCertificate(_))))
        ),
        "{:?} / {:?}",
        server.error,
        client.error
    );
    // Dialling a stranger: the client refuses the server's certificate.
    let (mut server, mut client) = pair(&stranger, &trusted, "b:1");
    pump(&mut server, &mut client, 1000);
    // UnknownIssuer, or BadSignature when the stranger's CA has the same name as ours.
    assert!(
        matches!(client.error, Some(SessionError::Tls(rustls::Error::InvalidCertificate(_)))),
        "{:?}",
        client.error
    );
    assert!(server.error.is_none() || client.error.is_some());
}

#[test]
fn an_expired_certificate_fails() {
    let ca = Ca::new();
    let (cert, key) = ca.issue(vec![uri("b:1")], true);
    let expired = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), ca.pem.as_bytes()).unwrap();
    let trusted = ca.config_for_id("a:1");
    let (mut server, mut client) = pair(&trusted, &expired, "a:1");
    pump(&mut server, &mut client, 1000);
    assert!(
        matches!(
            server.error,
            Some(SessionError::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
            )))
        ),
        "{:?}",
        server.error
    );
    let (mut server, mut client) = pair(&expired, &trusted, "b:1");
    pump(&mut server, &mut client, 1000);
    assert!(
        matches!(
            client.error,
            Some(SessionError::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired
            )))
        ),
        "{:?}",
        client.error
    );
}

#[test]
fn a_valid_certificate_for_another_id_completes_but_does_not_admit_the_dialled_id() {
    // The chain is good; binding the name is the core's (it closes the connection).
    let ca = Ca::new();
    let (mut server, mut client) =
        pair(&ca.config_for_id("127.0.0.1:9999"), &ca.config_for_id("b:1"), "127.0.0.1:7001");
    pump(&mut server, &mut client, 1000);
    assert!(server.error.is_none() && client.error.is_none());
    let identity = client.session.peer_identity().unwrap();
    assert!(!identity.admits(b"127.0.0.1:7001"));
    assert!(identity.admits(b"127.0.0.1:9999"));
}

#[test]
fn dns_and_ip_names_reach_the_identity() {
    let ca = Ca::new();
    let sans = vec![
        SanType::DnsName("cache-0.internal".try_into().unwrap()),
        SanType::IpAddress("10.0.0.5".parse().unwrap()),
    ];
    let (cert, key) = ca.issue(sans, false);
    let named = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), ca.pem.as_bytes()).unwrap();
    let (mut server, mut client) = pair(&named, &ca.config_for_id("b:1"), "cache-0.internal:7001");
    pump(&mut server, &mut client, 1000);
    let identity = client.session.peer_identity().unwrap();
    assert!(identity.admits(b"cache-0.internal:7001"));
    assert!(identity.admits(b"10.0.0.5:7001"));
    assert!(!identity.admits(b"10.0.0.6:7001"));
}

#[test]
fn bad_inputs_name_what_is_wrong() {
    let ca = Ca::new();
    let (cert, key) = ca.issue(vec![uri("a:1")], false);
    let (_, other_key) = ca.issue(vec![uri("a:1")], false);
    let error = TlsConfig::from_pem(b"", key.as_bytes(), ca.pem.as_bytes()).unwrap_err();
    assert!(error.to_string().contains("certificate PEM"), "{error}");
    let error = TlsConfig::from_pem(cert.as_bytes(), b"junk", ca.pem.as_bytes()).unwrap_err();
    assert!(error.to_string().contains("key PEM"), "{error}");
    let error = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), b"").unwrap_err();
    assert!(error.to_string().contains("CA PEM"), "{error}");
    let error =
        TlsConfig::from_pem(cert.as_bytes(), other_key.as_bytes(), ca.pem.as_bytes()).unwrap_err();
    assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
    let missing =
        TlsConfig::from_files("/nonexistent/a.crt", "/nonexistent/a.key", "/x").unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/a.crt"), "{missing}");
}

/// A node's certificate, key and CA files in a directory of the test's own, removed on drop.
struct NodeFiles {
    dir: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca: std::path::PathBuf,
}

impl NodeFiles {
    fn new(test: &str) -> NodeFiles {
        let dir = std::env::temp_dir().join(format!("herdcache-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key, ca) = (dir.join("n.crt"), dir.join("n.key"), dir.join("ca.crt"));
        NodeFiles { dir, cert, key, ca }
    }

    /// Writes a certificate for `id` issued by `ca`, its key, and `ca`'s certificate.
    fn write(&self, ca: &Ca, id: &str) {
        let (cert, key) = ca.issue(vec![uri(id)], false);
        std::fs::write(&self.cert, cert).unwrap();
        std::fs::write(&self.key, key).unwrap();
        std::fs::write(&self.ca, &ca.pem).unwrap();
    }

    fn config(&self) -> TlsConfig {
        TlsConfig::from_files(&self.cert, &self.key, &self.ca).unwrap()
    }
}

impl Drop for NodeFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_reload_takes_new_files_for_new_sessions_and_keeps_the_old_on_a_bad_file() {
    let files = NodeFiles::new("reload");
    let (old_ca, new_ca) = (Ca::new(), Ca::new());
    files.write(&old_ca, "a:1");
    let config = files.config();
    assert!(!config.reload().unwrap(), "nothing changed");
    let old_peer = old_ca.config_for_id("b:1");
    let new_peer = new_ca.config_for_id("b:1");
    let handshake = |server: &TlsConfig, client: &TlsConfig| {
        let (mut server, mut client) = pair(server, client, "a:1");
        pump(&mut server, &mut client, 1000);
        server.error.is_none() && client.error.is_none() && !server.session.is_handshaking()
    };
    assert!(handshake(&config, &old_peer));
    assert!(!handshake(&config, &new_peer));
    // An open session keeps working across the reload.
    let (mut open_server, mut open_client) = pair(&config, &old_peer, "a:1");
    pump(&mut open_server, &mut open_client, 1000);

    files.write(&new_ca, "a:1");
    assert!(config.reload().unwrap(), "the files changed");
    assert!(handshake(&config, &new_peer), "the new CA is in force");
    assert!(!handshake(&config, &old_peer), "the old CA is gone");
    let mut out = Vec::new();
    open_client.session.send(b"still here", &mut out);
    open_server.session.receive(&out, &mut open_server.received).unwrap();
    assert_eq!(&open_server.received[..], b"still here");

    std::fs::write(&files.key, b"not a key").unwrap();
    assert!(config.reload().is_err(), "a bad key is an error");
    assert!(handshake(&config, &new_peer), "and the old configuration stays");
}

#[test]
fn a_changed_file_is_picked_up_by_a_new_connection_without_a_reload_call() {
    let files = NodeFiles::new("watch");
    let (old_ca, new_ca) = (Ca::new(), Ca::new());
    files.write(&old_ca, "a:1");
    let config = files.config();
    files.write(&new_ca, "a:1");
    std::thread::sleep(FILE_CHECK_INTERVAL + Duration::from_millis(100));
    let new_peer = new_ca.config_for_id("b:1");
    let (mut server, mut client) = pair(&config, &new_peer, "a:1");
    pump(&mut server, &mut client, 1000);
    assert!(server.error.is_none() && client.error.is_none(), "{:?}", server.error);
}

#[test]
fn reload_if_changed_reloads_once_per_change_and_sees_a_rename_over_a_file() {
    let files = NodeFiles::new("if-changed");
    let (old_ca, new_ca) = (Ca::new(), Ca::new());
    files.write(&old_ca, "a:1");
    let config = files.config();
    assert!(!config.reload_if_changed().unwrap(), "nothing changed");
    files.write(&new_ca, "a:1");
    assert!(config.reload_if_changed().unwrap(), "the files changed");
    assert!(!config.reload_if_changed().unwrap(), "seen once");
    // The same bytes renamed over the CA file: a new inode, looked at, nothing new loaded.
    let replacement = files.dir.join("replacement");
    std::fs::write(&replacement, &new_ca.pem).unwrap();
    std::fs::rename(&replacement, &files.ca).unwrap();
    assert!(files_changed(&config), "the rename is seen");
    // A bad key: an error once, then nothing until it changes again.
    std::fs::write(&files.key, b"not a key").unwrap();
    assert!(config.reload_if_changed().is_err());
    assert!(!config.reload_if_changed().unwrap());
}

/// Whether `config`'s watch sees a change (and remembers the look).
fn files_changed(config: &TlsConfig) -> bool {
    config.shared.watch.as_ref().is_some_and(|watch| watch.changed(false))
}

/// Whether a client trusting `ca`, with no certificate of its own (an HTTP client), completes
/// a handshake with `server`.
fn http_handshake(server: &Arc<ServerConfig>, ca: &Ca) -> bool {
    let roots = files::Input::bytes("CA PEM", ca.pem.as_bytes()).ca_roots().unwrap();
    let provider = files::ring_provider();
    let verifier = verify::ChainVerifier::new(Arc::new(roots), &provider);
    let mut client = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = rustls::ClientConnection::new(Arc::new(client), sni(b"a:1")).unwrap();
    let server = rustls::ServerConnection::new(Arc::clone(server)).unwrap();
    let mut server = End::new(TlsSession::new(rustls::Connection::Server(server)));
    let mut client = End::new(TlsSession::new(rustls::Connection::Client(client)));
    pump(&mut server, &mut client, 1000);
    server.error.is_none() && client.error.is_none() && !server.session.is_handshaking()
}

#[test]
fn a_server_cert_serves_the_pair_in_force_without_asking_for_a_client_certificate() {
    let files = NodeFiles::new("server-cert");
    let (old_ca, new_ca) = (Ca::new(), Ca::new());
    files.write(&old_ca, "a:1");
    let cert = ServerCert::from_files(&files.cert, &files.key).unwrap();
    let http = cert.server_config();
    assert_eq!(http.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(http_handshake(&http, &old_ca), "no client certificate asked");
    files.write(&new_ca, "a:1");
    assert!(cert.reload().unwrap());
    assert!(!cert.reload().unwrap(), "the same pair again");
    assert!(http_handshake(&http, &new_ca), "the same config serves the new pair");
    assert!(!http_handshake(&http, &old_ca));

    // Another certificate with the old key: refused, the pair in force stays.
    let (other_cert, other_key) = old_ca.issue(vec![uri("a:1")], false);
    std::fs::write(&files.cert, &other_cert).unwrap();
    let refused = cert.reload().unwrap_err();
    assert!(matches!(refused, TlsError::Mismatch { .. }), "{refused}");
    assert!(refused.to_string().contains("n.key is not the key of the certificate in"));
    assert!(http_handshake(&http, &new_ca));
    // Its key too: taken, at the next handshake a second after the last look.
    std::fs::write(&files.key, &other_key).unwrap();
    std::thread::sleep(FILE_CHECK_INTERVAL + Duration::from_millis(100));
    assert!(http_handshake(&http, &old_ca), "the change was picked up");
    assert!(!cert.reload_if_changed().unwrap(), "already reloaded");

    std::fs::write(&files.key, "not a key").unwrap();
    let refused = cert.reload().unwrap_err();
    assert!(refused.to_string().contains("n.key: no usable PEM private key"), "{refused}");
    let missing = files.dir.join("missing.crt");
    let refused = ServerCert::from_files(&missing, &files.key).unwrap_err();
    assert!(refused.to_string().contains("missing.crt: cannot read it"), "{refused}");
    std::fs::write(&files.cert, "").unwrap();
    let refused = ServerCert::from_files(&files.cert, &files.key).unwrap_err();
    assert!(refused.to_string().contains("n.crt: no usable PEM certificate"), "{refused}");
    assert_eq!(cert.files(), (files.cert.as_path(), files.key.as_path()));
}
