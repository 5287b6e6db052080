//! One TLS connection, sans-IO: the driver hands it the bytes its socket read
//! ([`TlsSession::receive`], which yields plaintext) and asks it for the bytes to write
//! ([`TlsSession::send`] encrypts, [`TlsSession::pending_ciphertext`] takes handshake
//! messages, alerts and key updates). No socket, no clock: the async connection loop and
//! herdcache-mio's event loop drive it over theirs, and the tests over in-memory pipes.

use alloc::vec::Vec;
use core::fmt;
use std::io::{self, BufRead, Read, Write};

use bytes::BytesMut;
use herdcache_proto::{PeerIdentity, authority};
use rustls::Connection;
use rustls_pki_types::ServerName;

use super::{MAX_HANDSHAKE_BYTES, TlsConfig, san};

/// Why a TLS session failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// rustls refused what the peer sent (not TLS, a bad or untrusted certificate, an
    /// alert, ...).
    Tls(rustls::Error),
    /// The peer sent more than [`MAX_HANDSHAKE_BYTES`] before the handshake completed.
    HandshakeTooLarge,
    /// The handshake did not complete within the handshake timeout.
    HandshakeTimeout,
    /// The peer closed the connection before the handshake completed.
    Closed,
    /// The socket failed.
    Io(io::Error),
    /// The peer's certificate names nothing herdcache can bind to an id.
    NoIdentity,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Tls(error) => write!(f, "TLS: {error}"),
            SessionError::HandshakeTooLarge => {
                write!(f, "more than {MAX_HANDSHAKE_BYTES} bytes before the handshake completed")
            }
            SessionError::HandshakeTimeout => f.write_str("handshake timed out"),
            SessionError::Closed => f.write_str("closed during the handshake"),
            SessionError::Io(error) => write!(f, "socket: {error}"),
            SessionError::NoIdentity => f.write_str("the certificate carries no usable name"),
        }
    }
}

impl core::error::Error for SessionError {}

/// One TLS connection (see the module docs).
pub struct TlsSession {
    conn: Connection,
    /// Ciphertext bytes received before the handshake completed.
    handshake_bytes: usize,
    /// The peer sent close_notify.
    peer_closed: bool,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// The server side of an accepted connection, with the configuration in force.
    ///
    /// # Errors
    /// When rustls refuses the configuration (it does not for one [`TlsConfig`] made).
    pub fn accept(config: &TlsConfig) -> Result<TlsSession, SessionError> {
        let server = rustls::ServerConnection::new(config.current().server.clone())
            .map_err(SessionError::Tls)?;
        Ok(TlsSession::new(Connection::Server(server)))
    }

    /// The client side of a connection dialled to `peer` (a node id `host:port`, or a base
    /// URL). The host is sent as SNI when it is a DNS name; the certificate's names are
    /// checked against `peer` by the core, not here.
    ///
    /// # Errors
    /// As [`TlsSession::accept`].
    pub fn connect(config: &TlsConfig, peer: &[u8]) -> Result<TlsSession, SessionError> {
        let client = rustls::ClientConnection::new(config.current().client.clone(), sni(peer))
            .map_err(SessionError::Tls)?;
        Ok(TlsSession::new(Connection::Client(client)))
    }

    pub(crate) fn new(conn: Connection) -> TlsSession {
        TlsSession { conn, handshake_bytes: 0, peer_closed: false }
    }

    /// Whether the handshake is still under way.
    #[must_use]
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the peer closed the session (close_notify): nothing more will come.
    #[must_use]
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Takes `ciphertext` the socket read (any split), appending what it decrypts to
    /// `plaintext`. Afterwards [`TlsSession::wants_write`] may be true (handshake messages,
    /// an alert, a key update): write [`TlsSession::pending_ciphertext`].
    ///
    /// # Errors
    /// Bytes that are not TLS, a certificate the verifiers refuse, an alert, or more than
    /// [`MAX_HANDSHAKE_BYTES`] before the handshake completed. The session is over then;
    /// an alert for the peer may still be pending.
    pub fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut BytesMut,
    ) -> Result<(), SessionError> {
        while !ciphertext.is_empty() {
            // Only what rustls takes while the handshake is under way counts against its
            // budget: a peer's frames right behind its Finished, in the same read, are not
            // handshake bytes (a dialler flushing the calls it queued while connecting).
            // rustls takes at most one buffer's worth per call, so the budget still bounds
            // what is held before the handshake completes.
            let handshaking = self.conn.is_handshaking();
            let taken = self.conn.read_tls(&mut ciphertext).map_err(SessionError::Io)?;
            if handshaking {
                self.handshake_bytes = self.handshake_bytes.saturating_add(taken);
                if self.handshake_bytes > MAX_HANDSHAKE_BYTES {
                    return Err(SessionError::HandshakeTooLarge);
                }
            }
            let state = self.conn.process_new_packets().map_err(SessionError::Tls)?;
            self.drain_plaintext(plaintext)?;
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
            if taken == 0 {
                // rustls takes nothing more only once the peer closed.
                break;
            }
        }
        Ok(())
    }

    fn drain_plaintext(&mut self, plaintext: &mut BytesMut) -> Result<(), SessionError> {
        let mut reader = self.conn.reader();
        loop {
            match reader.fill_buf() {
                Ok([]) => {
                    self.peer_closed = true;
                    return Ok(());
                }
                Ok(available) => {
                    let len = available.len();
                    plaintext.extend_from_slice(available);
                    reader.consume(len);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // An EOF without close_notify: the stream ends either way.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    self.peer_closed = true;
                    return Ok(());
                }
                Err(error) => return Err(SessionError::Io(error)),
            }
        }
    }

    /// Whether there are bytes to write ([`TlsSession::pending_ciphertext`]).
    #[must_use]
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Appends every byte rustls has to write to `out`.
    pub fn pending_ciphertext(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail, and always takes something.
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Encrypts `plaintext` (buffered until the handshake completes), appending what is to
    /// be written to `out`.
    pub fn send(&mut self, mut plaintext: &[u8], out: &mut Vec<u8>) {
        while !plaintext.is_empty() {
            match self.conn.writer().write(plaintext) {
                Ok(0) | Err(_) => {
                    // rustls' buffer is full: make room by taking what it holds.
                    let before = out.len();
                    self.pending_ciphertext(out);
                    if out.len() == before {
                        break; // nothing moves: the session is closed for writing
                    }
                }
                Ok(taken) => plaintext = plaintext.get(taken..).unwrap_or_default(),
            }
        }
        self.pending_ciphertext(out);
    }

    /// Ends the session: a close_notify for the peer, appended to `out`.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        self.conn.send_close_notify();
        self.pending_ciphertext(out);
    }

    /// The names of the peer's verified certificate, once the handshake completed.
    ///
    /// # Errors
    /// [`SessionError::NoIdentity`] when the peer presented no certificate (never, with a
    /// [`TlsConfig`]: both sides require one) or one whose names cannot be read.
    pub fn peer_identity(&self) -> Result<PeerIdentity, SessionError> {
        let end_entity = self
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or(SessionError::NoIdentity)?;
        let names = san::subject_alt_names(end_entity).ok_or(SessionError::NoIdentity)?;
        Ok(PeerIdentity::new(names))
    }

    /// Reads plaintext already decrypted (for callers that use `std::io::Read`).
    ///
    /// # Errors
    /// As `rustls::Reader::read`.
    pub fn read_plaintext(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.conn.reader().read(buffer)
    }
}

/// The server name a dial to `peer` sends: its host when that is a DNS name or an address,
/// else a fixed name (the verifier does not look at it).
pub(crate) fn sni(peer: &[u8]) -> ServerName<'static> {
    let authority = authority(peer);
    let host = if let Some(bracketed) = authority.strip_prefix(b"[") {
        let end = bracketed.iter().position(|&byte| byte == b']').unwrap_or(bracketed.len());
        bracketed.get(..end).unwrap_or_default()
    } else {
        let end = authority.iter().rposition(|&byte| byte == b':').unwrap_or(authority.len());
        authority.get(..end).unwrap_or_default()
    };
    core::str::from_utf8(host)
        .ok()
        .and_then(|host| ServerName::try_from(host.to_owned()).ok())
        .unwrap_or_else(|| ServerName::try_from("herdcache.invalid").expect("a valid DNS name"))
}
