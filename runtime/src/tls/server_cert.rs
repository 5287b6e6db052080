//! [`ServerCert`]: a server's certificate chain and key from files, without a CA (an HTTPS
//! front end's), reloaded without a restart.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;
use super::files::{FileWatch, Input, certified_key, ring_provider};

/// A server's certificate chain and private key, from PEM files, for TLS that asks clients for
/// no certificate (an HTTPS front end): the peers' CA plays no part. Cheap to clone: clones
/// share the loaded pair, and a reload through one is seen by all.
///
/// [`ServerCert::server_config`] presents the pair in force at each handshake. The pair
/// changes on [`ServerCert::reload`], on [`ServerCert::reload_if_changed`], and when a
/// handshake starts at least [`FILE_CHECK_INTERVAL`](super::FILE_CHECK_INTERVAL) after the
/// last look at the files and finds one changed (modification time, length, inode or device).
/// Files that do not load keep the pair in force. Open connections keep their session.
#[derive(Clone)]
pub struct ServerCert {
    shared: Arc<Shared>,
}

struct Shared {
    provider: Arc<CryptoProvider>,
    /// The certificate file, then the key file.
    watch: FileWatch,
    current: RwLock<Arc<Loaded>>,
}

/// The pair in force, and the PEM bytes it came from (to tell whether a reload changed it).
struct Loaded {
    certified: Arc<CertifiedKey>,
    pem: [Vec<u8>; 2],
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert").field("files", &self.shared.watch.paths()).finish()
    }
}

impl ServerCert {
    /// Reads the certificate chain (`cert`, PEM, end entity first) and its private key (`key`,
    /// PEM: PKCS#8, PKCS#1 or SEC1) now, and remembers the paths for reloads.
    ///
    /// # Errors
    /// A file that cannot be read or holds nothing usable, or a key that is not the
    /// certificate's: the error names the file and what is wrong.
    pub fn from_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerCert, TlsError> {
        let provider = ring_provider();
        let watch = FileWatch::new(vec![cert.as_ref().to_path_buf(), key.as_ref().to_path_buf()]);
        let loaded = load(&provider, watch.paths())?;
        let current = RwLock::new(Arc::new(loaded));
        Ok(ServerCert { shared: Arc::new(Shared { provider, watch, current }) })
    }

    /// The certificate file and the key file.
    #[must_use]
    pub fn files(&self) -> (&Path, &Path) {
        let paths = self.shared.watch.paths();
        (&paths[0], &paths[1])
    }

    /// Re-reads the files: `Ok(true)` when they hold a new good pair (served from the next
    /// handshake on), `Ok(false)` when they hold the pair in force.
    ///
    /// # Errors
    /// As [`ServerCert::from_files`]; the pair in force stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.shared.watch.look();
        let loaded = load(&self.shared.provider, self.shared.watch.paths())?;
        let mut current = self.shared.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.pem == loaded.pem {
            return Ok(false);
        }
        *current = Arc::new(loaded);
        Ok(true)
    }

    /// Looks at the files now and reloads them if one changed since the last look:
    /// `Ok(false)` when none did (or they hold the pair in force). A change is looked at
    /// once: files that do not load are tried again when they change again (or on
    /// [`ServerCert::reload`]).
    ///
    /// # Errors
    /// As [`ServerCert::reload`].
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if self.shared.watch.changed(false) { self.reload() } else { Ok(false) }
    }

    /// A rustls server configuration that presents the pair in force at each handshake:
    /// HTTP/1.1 by ALPN, no client certificate asked, the ring provider, TLS 1.3 and 1.2.
    #[must_use]
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.shared.provider))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The pair a handshake starting now presents, after a look at the files when the last
    /// one is old enough (a change reloads them; files that do not load are logged).
    fn current(&self) -> Arc<CertifiedKey> {
        if self.shared.watch.changed(true) {
            match self.reload() {
                Ok(true) => tracing::info!(files = ?self.files(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "TLS certificate files changed but do not load: kept the old");
                }
            }
        }
        let current = self.shared.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&current.certified)
    }
}

fn load(provider: &CryptoProvider, paths: &[PathBuf]) -> Result<Loaded, TlsError> {
    let [cert, key] = [&paths[0], &paths[1]].map(|path| Input::read(path));
    let (cert, key) = (cert?, key?);
    let certified = certified_key(provider, &cert, &key)?;
    Ok(Loaded { certified: Arc::new(certified), pem: [cert.bytes, key.bytes] })
}

/// rustls' view of a [`ServerCert`].
struct Resolver(ServerCert);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}
