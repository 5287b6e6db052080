//! The pieces every TLS configuration here is made of, written once: the crypto provider, the
//! PEM readers (each error names its input and what is wrong), a certificate chain checked
//! against its key, and the watch that tells whether the files changed on disk.
//!
//! A file's stamp is its modification time, length, inode and device: a rename over the file
//! (`mv`, Kubernetes' secret volumes swapping a symlinked directory) changes the inode even
//! when time and length look the same.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{FILE_CHECK_INTERVAL, TlsError};

/// rustls' ring provider (the project's choice: aws-lc's build is heavy on 2-core CI). rustls
/// 0.23.48 deprecates it for want of post-quantum key exchange, which only aws-lc has.
#[allow(deprecated, reason = "ring is the chosen provider; it lacks only post-quantum kx")]
pub(crate) fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A named input: a file's path as shown, or `certificate PEM` and the like for bytes.
pub(crate) struct Input {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
}

impl Input {
    /// Bytes given by the caller, named for errors.
    pub(crate) fn bytes(name: &str, bytes: &[u8]) -> Input {
        Input { name: name.to_owned(), bytes: bytes.to_vec() }
    }

    /// The contents of `path`.
    pub(crate) fn read(path: &Path) -> Result<Input, TlsError> {
        let bytes = std::fs::read(path)
            .map_err(|error| TlsError::Read { path: path.to_path_buf(), error })?;
        Ok(Input { name: path.display().to_string(), bytes })
    }

    fn invalid(&self, reason: impl fmt::Display) -> TlsError {
        TlsError::Invalid { input: self.name.clone(), reason: reason.to_string() }
    }

    /// The PEM certificates in it, at least one.
    fn certificates(&self, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs =
            CertificateDer::pem_slice_iter(&self.bytes).collect::<Result<Vec<_>, _>>().map_err(
                |error| self.invalid(format!("no usable PEM {what}: {}", pem_reason(error))),
            )?;
        if certs.is_empty() {
            return Err(self.invalid(format!("no usable PEM {what}: none found")));
        }
        Ok(certs)
    }

    /// The CA certificates in it, as webpki's trust anchors.
    pub(crate) fn ca_roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates("CA certificate")? {
            roots.add(cert).map_err(|error| self.invalid(format!("unusable CA: {error}")))?;
        }
        Ok(roots)
    }
}

fn pem_reason(error: pem::Error) -> String {
    match error {
        pem::Error::NoItemsFound => "none found".to_owned(),
        other => other.to_string(),
    }
}

/// The certificate chain in `cert` (end entity first) with the private key in `key` (PKCS#8,
/// PKCS#1 or SEC1), checked to belong together.
pub(crate) fn certified_key(
    provider: &CryptoProvider,
    cert: &Input,
    key: &Input,
) -> Result<CertifiedKey, TlsError> {
    let chain = cert.certificates("certificate")?;
    let private = PrivateKeyDer::from_pem_slice(&key.bytes).map_err(|error| {
        key.invalid(format!("no usable PEM private key: {}", pem_reason(error)))
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::Mismatch { cert: cert.name.clone(), key: key.name.clone() }
        }
        other => key.invalid(format!("no usable private key: {other}")),
    })
}

/// What a look at a file compares with the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl FileStamp {
    /// How `path` looks now; `None` when it cannot be seen (a look after it appears differs).
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let (inode, device) = {
            use std::os::unix::fs::MetadataExt;
            (metadata.ino(), metadata.dev())
        };
        #[cfg(not(unix))]
        let (inode, device) = (0, 0);
        Some(FileStamp { modified: metadata.modified().ok(), len: metadata.len(), inode, device })
    }
}

/// A set of files and what they looked like at the last look, shared by the threads that
/// start connections.
#[derive(Debug)]
pub(crate) struct FileWatch {
    paths: Vec<PathBuf>,
    /// When the files were last looked at, and their stamps then.
    seen: Mutex<(Instant, Vec<Option<FileStamp>>)>,
}

impl FileWatch {
    /// Watches `paths` from how they look now (call it before reading them, so that a change
    /// during the read is seen at the next look).
    pub(crate) fn new(paths: Vec<PathBuf>) -> FileWatch {
        let stamps = FileWatch::stamps(&paths);
        FileWatch { paths, seen: Mutex::new((Instant::now(), stamps)) }
    }

    fn stamps(paths: &[PathBuf]) -> Vec<Option<FileStamp>> {
        paths.iter().map(|path| FileStamp::of(path)).collect()
    }

    /// The files watched.
    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Whether a file changed (or appeared, or went away) since the last look; the look is
    /// remembered, so a change is reported once. With `rate_limited`, looks only when the
    /// last look is [`FILE_CHECK_INTERVAL`] old (else `false`).
    pub(crate) fn changed(&self, rate_limited: bool) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if rate_limited && seen.0.elapsed() < FILE_CHECK_INTERVAL {
            return false;
        }
        let stamps = FileWatch::stamps(&self.paths);
        seen.0 = Instant::now();
        if stamps == seen.1 {
            return false;
        }
        seen.1 = stamps;
        true
    }

    /// Records how the files look now (before a reload reads them).
    pub(crate) fn look(&self) {
        let stamps = FileWatch::stamps(&self.paths);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), stamps);
    }
}
