//! TLS for `herdcache node`'s HTTP front end (`--http-tls-cert`, `--http-tls-key`), and the
//! watcher that notices when certificate files change.
//!
//! [`FrontCert`] holds the front end's current certificate chain and key. It is rustls'
//! certificate resolver, so each handshake takes whatever is current then: a reload swaps the
//! pair for new handshakes, and connections already open keep the session they made. A reload
//! that cannot read or parse the files, or finds a key that does not match the certificate,
//! changes nothing: the old pair stays and the caller logs why.
//!
//! [`FileWatch`] remembers each file's size, modification time and inode, so that a poll can
//! tell that one was rewritten or replaced (a rename over it, as `mv` and Kubernetes' secret
//! volumes do).
//!
//! Only the `ring` crypto provider is built (rustls without default features): aws-lc's build
//! is heavy on the small machines this runs on.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a certificate and key could not be (re)loaded; each names the file at fault.
#[derive(Debug)]
pub(crate) enum CertError {
    /// A file cannot be read.
    Read(PathBuf, io::Error),
    /// The certificate file holds no PEM certificate, or a malformed one.
    Certificate(PathBuf, String),
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1), or a malformed one.
    Key(PathBuf, String),
    /// The key is not the certificate's.
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    Config(rustls::Error),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read(path, error) => {
                write!(f, "{}: cannot read it: {error}", path.display())
            }
            CertError::Certificate(path, why) => {
                write!(f, "{}: no usable PEM certificate: {why}", path.display())
            }
            CertError::Key(path, why) => {
                write!(f, "{}: no usable PEM private key: {why}", path.display())
            }
            CertError::Mismatch { cert, key } => write!(
                f,
                "{} is not the key of the certificate in {}",
                key.display(),
                cert.display()
            ),
            CertError::Config(error) => write!(f, "TLS configuration: {error}"),
        }
    }
}

impl std::error::Error for CertError {}

/// The crypto provider every TLS configuration here uses. rustls 0.23.48 deprecates ring's
/// for want of post-quantum key exchange; ring is kept all the same, for its light build.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The front end's certificate and key, reloadable from their files.
#[derive(Debug)]
pub(crate) struct FrontCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl FrontCert {
    /// Loads the certificate chain in `cert` and the key in `key` (PEM).
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<FrontCert, CertError> {
        let current = RwLock::new(Arc::new(certified_key(cert, key)?));
        Ok(FrontCert { cert: cert.to_path_buf(), key: key.to_path_buf(), current })
    }

    /// Re-reads both files and, when they hold a good pair, serves it from the next handshake
    /// on; else keeps the current pair.
    pub(crate) fn reload(&self) -> Result<(), CertError> {
        let fresh = Arc::new(certified_key(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The files it is loaded from.
    pub(crate) fn files(&self) -> [&Path; 2] {
        [&self.cert, &self.key]
    }

    /// A server configuration (HTTP/1.1, no client certificates) that presents the current
    /// pair of `cert` at each handshake.
    pub(crate) fn server_config(cert: &Arc<FrontCert>) -> Result<Arc<ServerConfig>, CertError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(CertError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(cert) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for FrontCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner)))
    }
}

fn pem_error(error: pem::Error) -> String {
    match error {
        pem::Error::NoItemsFound => "none found".to_owned(),
        other => other.to_string(),
    }
}

/// The chain in `cert` with the key in `key`, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let cert_pem =
        std::fs::read(cert).map_err(|error| CertError::Read(cert.to_path_buf(), error))?;
    let key_pem = std::fs::read(key).map_err(|error| CertError::Read(key.to_path_buf(), error))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertError::Certificate(cert.to_path_buf(), pem_error(error)))?;
    if chain.is_empty() {
        return Err(CertError::Certificate(cert.to_path_buf(), "none found".to_owned()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| CertError::Key(key.to_path_buf(), pem_error(error)))?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => {
            CertError::Mismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }
        }
        other => CertError::Key(key.to_path_buf(), other.to_string()),
    })
}

/// What a poll compares to tell that a file changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

/// A set of files and what they looked like at the last look.
#[derive(Debug)]
pub(crate) struct FileWatch {
    files: Vec<(PathBuf, Option<Stamp>)>,
}

impl FileWatch {
    /// Watches `files` from how they are now.
    pub(crate) fn new<'a>(files: impl IntoIterator<Item = &'a Path>) -> FileWatch {
        let files = files.into_iter().map(|path| (path.to_path_buf(), stamp(path))).collect();
        FileWatch { files }
    }

    /// Whether any file changed (or appeared, or went away) since the last look.
    pub(crate) fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, last) in &mut self.files {
            let now = stamp(path);
            if now != *last {
                *last = now;
                changed = true;
            }
        }
        changed
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
        device: metadata.dev(),
    })
}

#[cfg(test)]
mod tests {
    use herdcache_tests::certs::TestPki;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("herdcache-cli-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir
    }

    #[test]
    fn a_bad_file_is_named_and_a_failed_reload_keeps_the_old_pair() {
        let dir = temp_dir("reload");
        let pki = TestPki::new();
        let files =
            pki.node_with_names(&["127.0.0.1"]).write_to(&pki, &dir, "front").expect("written");
        let front = FrontCert::load(&files.cert, &files.key).expect("a good pair");
        let first = front.current.read().expect("unpoisoned").cert.clone();

        // Another certificate with the old key: refused, the old pair stays.
        let other = pki.node_with_names(&["localhost"]);
        std::fs::write(&files.cert, &other.cert_pem).expect("rewritten");
        let refused = front.reload().expect_err("a key of another certificate");
        assert!(matches!(refused, CertError::Mismatch { .. }), "{refused}");
        assert_eq!(front.current.read().expect("unpoisoned").cert, first);

        // Its key too: taken.
        std::fs::write(&files.key, &other.key_pem).expect("rewritten");
        front.reload().expect("a good pair");
        assert_ne!(front.current.read().expect("unpoisoned").cert, first);

        std::fs::write(&files.key, "not a key").expect("rewritten");
        let refused = front.reload().expect_err("no key");
        assert!(matches!(&refused, CertError::Key(path, _) if *path == files.key), "{refused}");
        assert!(refused.to_string().contains("front.key"), "{refused}");
        let missing = dir.join("missing.crt");
        let refused = FrontCert::load(&missing, &files.key).expect_err("no file");
        assert!(refused.to_string().contains("missing.crt: cannot read it"), "{refused}");
        std::fs::write(&files.cert, "").expect("emptied");
        let refused = FrontCert::load(&files.cert, &files.key).expect_err("no certificate");
        assert!(matches!(refused, CertError::Certificate(..)), "{refused}");
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }

    #[test]
    fn a_watch_sees_a_rewrite_and_a_rename_over_the_file() {
        let dir = temp_dir("watch");
        let path = dir.join("watched");
        std::fs::write(&path, "one").expect("written");
        let mut watch = FileWatch::new([path.as_path()]);
        assert!(!watch.changed());
        std::fs::write(&path, "longer").expect("rewritten");
        assert!(watch.changed());
        assert!(!watch.changed(), "seen once");
        let replacement = dir.join("replacement");
        std::fs::write(&replacement, "longer").expect("written");
        std::fs::rename(&replacement, &path).expect("renamed over");
        assert!(watch.changed(), "a new inode");
        std::fs::remove_file(&path).expect("removed");
        assert!(watch.changed(), "gone");
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
