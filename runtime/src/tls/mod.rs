//! Mutual TLS between peers, written once for every runtime: the configuration
//! ([`TlsConfig`]: a certificate, its key, the cluster's CA; reloaded without a restart) and
//! one sans-IO session type ([`TlsSession`]: ciphertext in, plaintext out and back) that the
//! shared async connection loop and herdcache-mio's event loop drive over their sockets.
//! rustls with the `ring` provider; TLS 1.3 and 1.2.
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
//!   second after the last look also compares the files' modification times and lengths and
//!   reloads on a change, so a rotated certificate or CA is used without a restart or a
//!   signal. A file that does not load keeps the old configuration (and is logged). Open
//!   connections keep their session; new ones use the new certificate, key and CA.
//! - No session resumption (tickets or ids): every connection verifies the current chain.

mod san;
mod session;
mod verify;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use herdcache_proto::{PeerIdentity, PeerName};
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
    /// The key does not match the certificate, or rustls refused the configuration.
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::Invalid { input, reason } => write!(f, "{input}: {reason}"),
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
            .field("files", &self.shared.files)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Where the PEM files are.
#[derive(Clone, Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// What a file looked like when it was last loaded (modification time and length).
type Stamp = Option<(SystemTime, u64)>;

struct Shared {
    provider: Arc<CryptoProvider>,
    files: Option<Files>,
    loaded: RwLock<Arc<Loaded>>,
    /// When the files were last compared, and their stamps then.
    checked: Mutex<(Instant, [Stamp; 3])>,
}

/// One loaded configuration: what connections starting now use.
pub(crate) struct Loaded {
    /// For accepted peer connections: client certificates required.
    pub(crate) server: Arc<ServerConfig>,
    /// For dialled peer connections: our certificate, the CA-only server verifier.
    pub(crate) client: Arc<ClientConfig>,
    /// The certificate and key (for the HTTP front's resolver).
    certified: Arc<CertifiedKey>,
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
        let files = Files {
            cert: cert.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
            ca: ca.as_ref().to_path_buf(),
        };
        let provider = ring_provider();
        let stamps = files.stamps();
        let loaded = files.load(&provider)?;
        Ok(TlsConfig::new(provider, Some(files), loaded, stamps))
    }

    /// The same from PEM bytes (nothing to reload).
    ///
    /// # Errors
    /// As [`TlsConfig::from_files`], naming `certificate PEM`, `key PEM` or `CA PEM`.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<TlsConfig, TlsError> {
        let provider = ring_provider();
        let inputs = [
            ("certificate PEM".to_owned(), cert.to_vec()),
            ("key PEM".to_owned(), key.to_vec()),
            ("CA PEM".to_owned(), ca.to_vec()),
        ];
        let loaded = Loaded::from_pem(&provider, inputs)?;
        Ok(TlsConfig::new(provider, None, loaded, [None; 3]))
    }

    fn new(
        provider: Arc<CryptoProvider>,
        files: Option<Files>,
        loaded: Loaded,
        stamps: [Stamp; 3],
    ) -> TlsConfig {
        let shared = Shared {
            provider,
            files,
            loaded: RwLock::new(Arc::new(loaded)),
            checked: Mutex::new((Instant::now(), stamps)),
        };
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
        let Some(files) = &self.shared.files else { return Ok(false) };
        let stamps = files.stamps();
        let loaded = files.load(&self.shared.provider)?;
        let mut checked = self.shared.checked.lock().unwrap_or_else(PoisonError::into_inner);
        *checked = (Instant::now(), stamps);
        let mut current = self.shared.loaded.write().unwrap_or_else(PoisonError::into_inner);
        if current.pem == loaded.pem {
            return Ok(false);
        }
        *current = Arc::new(loaded);
        Ok(true)
    }

    /// A rustls server configuration for an HTTP front end: this node's certificate (it
    /// follows reloads), no client certificates asked.
    #[must_use]
    pub fn http_server_config(&self) -> Arc<ServerConfig> {
        let resolver = Arc::new(ReloadingCert(self.clone()));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&self.shared.provider))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions");
        let mut config = builder.with_no_client_auth().with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// What a connection starting now uses: the loaded configuration, after a look at the
    /// files when the last one is [`FILE_CHECK_INTERVAL`] old (a change reloads them).
    pub(crate) fn current(&self) -> Arc<Loaded> {
        if let Some(files) = &self.shared.files {
            let changed = {
                let mut checked =
                    self.shared.checked.lock().unwrap_or_else(PoisonError::into_inner);
                if checked.0.elapsed() < FILE_CHECK_INTERVAL {
                    false
                } else {
                    let stamps = files.stamps();
                    checked.0 = Instant::now();
                    stamps != checked.1
                }
            };
            if changed {
                match self.reload() {
                    Ok(true) => tracing::info!("TLS certificate, key or CA reloaded"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "TLS files changed but do not load: kept the old");
                    }
                }
            }
        }
        Arc::clone(&self.shared.loaded.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Files {
    fn stamps(&self) -> [Stamp; 3] {
        [&self.cert, &self.key, &self.ca].map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
    }

    fn load(&self, provider: &Arc<CryptoProvider>) -> Result<Loaded, TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|error| TlsError::Read { path: path.clone(), error })
        };
        let inputs = [
            (self.cert.display().to_string(), read(&self.cert)?),
            (self.key.display().to_string(), read(&self.key)?),
            (self.ca.display().to_string(), read(&self.ca)?),
        ];
        Loaded::from_pem(provider, inputs)
    }
}

/// rustls' ring provider (the project's choice: aws-lc's build is heavy on 2-core CI). rustls
/// 0.23.48 deprecates it for want of post-quantum key exchange, which only aws-lc has.
#[allow(deprecated, reason = "ring is the chosen provider; it lacks only post-quantum kx")]
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(input: &str, reason: impl fmt::Display) -> TlsError {
    TlsError::Invalid { input: input.to_owned(), reason: reason.to_string() }
}

impl Loaded {
    /// `[(name, bytes)]` of the certificate chain, the key and the CA.
    fn from_pem(
        provider: &Arc<CryptoProvider>,
        inputs: [(String, Vec<u8>); 3],
    ) -> Result<Loaded, TlsError> {
        let [(cert_name, cert), (key_name, key), (ca_name, ca)] = inputs;
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid(&cert_name, error))?;
        if chain.is_empty() {
            return Err(invalid(&cert_name, "no CERTIFICATE section"));
        }
        let private_key =
            PrivateKeyDer::from_pem_slice(&key).map_err(|error| invalid(&key_name, error))?;
        let mut roots = RootCertStore::empty();
        for ca_cert in CertificateDer::pem_slice_iter(&ca) {
            let ca_cert = ca_cert.map_err(|error| invalid(&ca_name, error))?;
            roots.add(ca_cert).map_err(|error| invalid(&ca_name, error))?;
        }
        if roots.is_empty() {
            return Err(invalid(&ca_name, "no CERTIFICATE section"));
        }
        let certified = CertifiedKey::from_der(chain, private_key, provider).map_err(|error| {
            TlsError::Config { reason: format!("{key_name} does not fit {cert_name}: {error}") }
        })?;
        let certified = Arc::new(certified);
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
            certified,
            pem: [cert, key, ca],
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

/// The certificate in force (after a look at the files), for the HTTP front's server
/// configuration.
struct ReloadingCert(TlsConfig);

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadingCert")
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().certified))
    }
}

#[cfg(test)]
pub(crate) mod tests;
