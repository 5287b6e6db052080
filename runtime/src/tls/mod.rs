//! Mutual TLS between peers, written once for every runtime: the configuration
//! ([`TlsConfig`]: a certificate, its key, the cluster's CA; reloaded without a restart) and
//! one sans-IO session type ([`TlsSession`]: ciphertext in, plaintext out and back) that the
//! shared async connection loop and herdcache-mio's event loop drive over their sockets.
//! Also [`ServerCert`]: a certificate and key without a CA, for an HTTPS front end (such as
//! `herdcache node`'s), loaded and reloaded by the same code. rustls with the `ring`
//! provider; TLS 1.3 and 1.2.
//!
//! Contract:
//! - **Both sides authenticate.** An accepted peer must present a client certificate that
//!   chains to the configured CA (webpki's client verifier; no certificate, another CA, an
//!   expired one: the handshake fails). A dialled peer's certificate must chain to the CA too
//!   (a verifier of our own that checks the chain with webpki and leaves the *name* alone).
//! - **Names are bound in the core.** Once the chain verified, the end entity's
//!   subjectAltNames become a [`PeerIdentity`] handed to the core with
//!   `Input::Accepted`/`Input::Connected`: the core closes a dialled connection whose identity
//!   does not admit the id dialled, and refuses a hello whose id it does not admit (see
//!   [`PeerIdentity`] for the rule: `herdcache://ID` URI names, DNS names, IP addresses).
//!   groupcache-compat peers send no hello: a dialled one must be admitted by its base URL's
//!   authority; an accepted one is served once its certificate chained to the CA.
//! - **Bounded before it is authenticated.** The handshake runs before the core hears of the
//!   connection, within [`TlsConfig::handshake_timeout`] (default
//!   [`DEFAULT_HANDSHAKE_TIMEOUT`]), reading at most [`MAX_HANDSHAKE_BYTES`]; the node's
//!   inbound connection cap (`Builder::max_inbound_connections`) counts connections in
//!   their handshake. A plaintext client fails at its first bytes (not a TLS record). A failed
//!   handshake closes the socket, is logged (at most once a second) and counted
//!   ([`TransportStats::tls_handshake_failures`](crate::TransportStats)).
//! - **Reload.** [`TlsConfig::reload`] re-reads the files; a connection starting at least a
//!   second after the last look also compares the files' modification times, lengths, inodes
//!   and devices (a rename over a file, as Kubernetes' secret volumes do, changes the inode)
//!   and reloads on a change, so a rotated certificate or CA is used without a restart or a
//!   signal; [`TlsConfig::reload_if_changed`] does the same look at once. A file that does
//!   not load keeps the old configuration (and is logged). Open connections keep their
//!   session; new ones use the new certificate, key and CA.
//! - No session resumption (tickets or ids): every connection verifies the current chain.

mod files;
mod san;
mod server_cert;
mod session;
mod verify;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};

use files::{FileWatch, Input, certified_key, ring_provider};

pub use herdcache_proto::{PeerIdentity, PeerName};
pub use server_cert::ServerCert;
#[cfg(test)]
use session::sni;
pub use session::{SessionError, TlsSession};

/// Default [`TlsConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes a peer may send before its handshake completes (a certificate chain fits
/// many times over); more fails the handshake.
pub const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;
/// How often, at most, a starting connection compares the files with what was loaded.
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why a TLS configuration could not be made: which input, and what is wrong with it.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// An input holds no usable item of the kind it should (no certificate, no key, a PEM
    /// section that does not parse, a CA certificate webpki refuses).
    Invalid {
        /// The file, or `certificate PEM` / `key PEM` / `CA PEM` for bytes.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    Mismatch {
        /// The certificate's file, or `certificate PEM`.
        cert: String,
        /// The key's file, or `key PEM`.
        key: String,
    },
    /// rustls refused the configuration.
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => {
                write!(f, "{}: cannot read it: {error}", path.display())
            }
            TlsError::Invalid { input, reason } => write!(f, "{input}: {reason}"),
            TlsError::Mismatch { cert, key } => {
                write!(f, "{key} is not the key of the certificate in {cert}")
            }
            TlsError::Config { reason } => write!(f, "TLS configuration: {reason}"),
        }
    }
}

impl core::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            TlsError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A node's TLS between peers: its certificate and key, and the CA its peers' certificates
/// must chain to (see the module docs). Cheap to clone: clones share the loaded
/// configuration, and a reload through one is seen by all.
#[derive(Clone)]
pub struct TlsConfig {
    shared: Arc<Shared>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("files", &self.shared.watch.as_ref().map(FileWatch::paths))
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

struct Shared {
    provider: Arc<CryptoProvider>,
    /// The certificate, key and CA files (none for PEM bytes).
    watch: Option<FileWatch>,
    loaded: RwLock<Arc<Loaded>>,
}

/// One loaded configuration: what connections starting now use.
pub(crate) struct Loaded {
    /// For accepted peer connections: client certificates required.
    pub(crate) server: Arc<ServerConfig>,
    /// For dialled peer connections: our certificate, the CA-only server verifier.
    pub(crate) client: Arc<ClientConfig>,
    /// The PEM bytes, to tell whether a reload changed anything.
    pem: [Vec<u8>; 3],
}

impl TlsConfig {
    /// Reads the certificate chain (`cert`, PEM, end entity first), its private key (`key`,
    /// PEM: PKCS#8, PKCS#1 or SEC1) and the CA certificates peers must chain to (`ca`, PEM)
    /// now, and remembers the paths for [`TlsConfig::reload`] and the check on change.
    ///
    /// # Errors
    /// A file that cannot be read or holds nothing usable, or a key that does not match the
    /// certificate: the error names the file and what is wrong.
    pub fn from_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let paths = [cert.as_ref(), key.as_ref(), ca.as_ref()].map(Path::to_path_buf);
        let provider = ring_provider();
        let watch = FileWatch::new(paths.into());
        let loaded = Loaded::from_files(&provider, &watch)?;
        Ok(TlsConfig::new(provider, Some(watch), loaded))
    }

    /// The same from PEM bytes (nothing to reload).
    ///
    /// # Errors
    /// As [`TlsConfig::from_files`], naming `certificate PEM`, `key PEM` or `CA PEM`.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<TlsConfig, TlsError> {
        let provider = ring_provider();
        let inputs = [
            Input::bytes("certificate PEM", cert),
            Input::bytes("key PEM", key),
            Input::bytes("CA PEM", ca),
        ];
        let loaded = Loaded::from_pem(&provider, inputs)?;
        Ok(TlsConfig::new(provider, None, loaded))
    }

    fn new(provider: Arc<CryptoProvider>, watch: Option<FileWatch>, loaded: Loaded) -> TlsConfig {
        let shared = Shared { provider, watch, loaded: RwLock::new(Arc::new(loaded)) };
        TlsConfig { shared: Arc::new(shared), handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT }
    }

    /// How long a handshake may take, from the accept or the connect
    /// ([`DEFAULT_HANDSHAKE_TIMEOUT`] unless set).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshake timeout in force.
    #[must_use]
    pub fn handshake_timeout_value(&self) -> Duration {
        self.handshake_timeout
    }

    /// Re-reads the files: `Ok(true)` when they changed (new connections use them),
    /// `Ok(false)` when they did not (or the configuration came from PEM bytes).
    ///
    /// # Errors
    /// As [`TlsConfig::from_files`]; the configuration in force stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some(watch) = &self.shared.watch else { return Ok(false) };
        watch.look();
        let loaded = Loaded::from_files(&self.shared.provider, watch)?;
        let mut current = self.shared.loaded.write().unwrap_or_else(PoisonError::into_inner);
        if current.pem == loaded.pem {
            return Ok(false);
        }
        *current = Arc::new(loaded);
        Ok(true)
    }

    /// Looks at the files now and reloads them if one changed since the last look (by this
    /// call or by a connection that started): `Ok(false)` when none did, or they hold the
    /// configuration in force. Files that do not load are tried again when they change again
    /// (or on [`TlsConfig::reload`]).
    ///
    /// # Errors
    /// As [`TlsConfig::reload`].
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        match &self.shared.watch {
            Some(watch) if watch.changed(false) => self.reload(),
            _ => Ok(false),
        }
    }

    /// What a connection starting now uses: the loaded configuration, after a look at the
    /// files when the last one is [`FILE_CHECK_INTERVAL`] old (a change reloads them).
    pub(crate) fn current(&self) -> Arc<Loaded> {
        if let Some(watch) = &self.shared.watch
            && watch.changed(true)
        {
            match self.reload() {
                Ok(true) => tracing::info!("TLS certificate, key or CA reloaded"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "TLS files changed but do not load: kept the old");
                }
            }
        }
        Arc::clone(&self.shared.loaded.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Loaded {
    /// The certificate chain, key and CA of `watch`'s files.
    fn from_files(provider: &Arc<CryptoProvider>, watch: &FileWatch) -> Result<Loaded, TlsError> {
        let [cert, key, ca] = watch.paths() else { unreachable!("three files are watched") };
        Loaded::from_pem(provider, [Input::read(cert)?, Input::read(key)?, Input::read(ca)?])
    }

    /// From the certificate chain, the key and the CA.
    fn from_pem(provider: &Arc<CryptoProvider>, inputs: [Input; 3]) -> Result<Loaded, TlsError> {
        let [cert, key, ca] = inputs;
        let certified = Arc::new(certified_key(provider, &cert, &key)?);
        let roots = ca.ca_roots()?;
        let roots = Arc::new(roots);
        let config_error = |error: rustls::Error| TlsError::Config { reason: error.to_string() };

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider))
                .build()
                .map_err(|error| TlsError::Config { reason: error.to_string() })?;
        let mut server = ServerConfig::builder_with_provider(Arc::clone(provider))
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(FixedCert(Arc::clone(&certified))));
        // No resumption: every connection verifies the chain against the CA in force.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});

        let server_verifier = Arc::new(verify::ChainVerifier::new(roots, provider));
        let mut client = ClientConfig::builder_with_provider(Arc::clone(provider))
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_cert_resolver(Arc::new(FixedCert(Arc::clone(&certified))));
        client.resumption = rustls::client::Resumption::disabled();

        Ok(Loaded {
            server: Arc::new(server),
            client: Arc::new(client),
            pem: [cert.bytes, key.bytes, ca.bytes],
        })
    }
}

/// This node's certificate, on either side of a handshake.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

impl rustls::client::ResolvesClientCert for FixedCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
pub(crate) mod tests;
