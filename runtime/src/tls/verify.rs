//! The verifier of a dialled peer's certificate: the chain must lead to the configured CA
//! (webpki, server-auth usage, validity at the handshake's time); the name is not looked at
//! here, because a peer's name is a node id that the core binds (the dialled id must be
//! admitted by the certificate's names: [`PeerIdentity`](herdcache_proto::PeerIdentity)).
//! Signatures of the handshake are checked with the provider's algorithms, as rustls' own
//! verifier does.

use alloc::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ChainVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ChainVerifier {
    pub(crate) fn new(roots: Arc<RootCertStore>, provider: &CryptoProvider) -> Self {
        ChainVerifier { roots, algorithms: provider.signature_verification_algorithms }
    }
}

/// webpki's verdict as rustls reports certificate errors.
pub(crate) fn certificate_error(error: webpki::Error) -> Error {
    let kind = match error {
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    Error::InvalidCertificate(kind)
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(certificate_error)?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(certificate_error)?;
        Ok(ServerCertVerified::assertion())
    }

    // The TLS 1.2 and 1.3 checks look alike but call rustls' two functions, one per version
    // (TLS 1.3 restricts the schemes further): both are required by the trait.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> alloc::vec::Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
