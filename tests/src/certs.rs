//! Certificates for the TLS tests: a throwaway certificate authority ([`TestPki`]) that issues
//! node certificates the way an operator would (docs: README, "Securing a cluster").
//!
//! - [`TestPki::node_for_id`] binds one node id exactly: a URI SAN `herdcache://ID`.
//! - [`TestPki::node_with_names`] names hosts (DNS names, IP addresses), which bind every id
//!   `HOST:PORT` on them.
//! - [`TestPki::expired_node_for_id`] is one whose validity ended in 2001.
//!
//! Every authority is fresh (its own key), so a certificate from another `TestPki` is one
//! from an untrusted CA. Keys are ECDSA P-256 (rcgen's default), certificates and keys PEM.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The URI scheme of a SAN that names one node id exactly.
pub const ID_URI_SCHEME: &str = "herdcache://";

/// A certificate authority for one test.
pub struct TestPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A node's certificate (its chain: the leaf alone) and private key, both PEM.
#[derive(Clone, Debug)]
pub struct NodeCert {
    /// The leaf certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// Where [`NodeCert::write_to`] put a certificate, its key and the CA.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// The CA file.
    pub ca: PathBuf,
}

impl TestPki {
    /// A new authority with a key of its own.
    ///
    /// # Panics
    /// If rcgen cannot make a key or sign (never with its defaults).
    #[must_use]
    pub fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.distinguished_name.push(DnType::CommonName, "herdcache test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let ca = params.self_signed(&key).expect("a self-signed CA");
        TestPki { ca_pem: ca.pem(), issuer: Issuer::new(params, key) }
    }

    /// The authority's certificate, PEM: what every node trusts.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A certificate that names exactly the node id `id` (a URI SAN `herdcache://ID`).
    #[must_use]
    pub fn node_for_id(&self, id: &str) -> NodeCert {
        self.issue(vec![uri_san(id)], Validity::Current)
    }

    /// A certificate naming hosts: each of `names` becomes an IP SAN when it parses as an
    /// address, else a DNS SAN. It binds every id `NAME:PORT`.
    #[must_use]
    pub fn node_with_names(&self, names: &[&str]) -> NodeCert {
        let sans = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("a DNS name")),
            })
            .collect();
        self.issue(sans, Validity::Current)
    }

    /// Like [`TestPki::node_for_id`], but valid only from 2000 to 2001.
    #[must_use]
    pub fn expired_node_for_id(&self, id: &str) -> NodeCert {
        self.issue(vec![uri_san(id)], Validity::Expired)
    }

    fn issue(&self, sans: Vec<SanType>, validity: Validity) -> NodeCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.distinguished_name.push(DnType::CommonName, "herdcache test node");
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Peers are both: a node accepts (server) and dials (client) with the same certificate.
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("a node key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed by the CA");
        NodeCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

impl NodeCert {
    /// Writes the certificate, the key and `pki`'s CA into `dir` as `NAME.crt`, `NAME.key`
    /// and `ca.crt` (overwriting: a rotation rewrites them in place).
    ///
    /// # Errors
    /// As the file system reports it.
    pub fn write_to(&self, pki: &TestPki, dir: &Path, name: &str) -> io::Result<CertFiles> {
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.crt"),
        };
        fs::write(&files.cert, &self.cert_pem)?;
        fs::write(&files.key, &self.key_pem)?;
        fs::write(&files.ca, pki.ca_pem())?;
        Ok(files)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Validity {
    /// rcgen's default: 1975 to 4096.
    Current,
    Expired,
}

fn uri_san(id: &str) -> SanType {
    SanType::URI(format!("{ID_URI_SCHEME}{id}").as_str().try_into().expect("an IA5 URI"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_issues_distinct_pem_certificates_and_keys() {
        let pki = TestPki::new();
        let a = pki.node_for_id("127.0.0.1:7001");
        let b = pki.node_with_names(&["127.0.0.1", "cache-0.internal"]);
        let expired = pki.expired_node_for_id("127.0.0.1:7001");
        for cert in [&a, &b, &expired] {
            assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        assert_ne!(a.cert_pem, b.cert_pem);
        assert_ne!(a.key_pem, b.key_pem);
        assert_ne!(pki.ca_pem(), TestPki::new().ca_pem(), "each authority is fresh");
    }
}
