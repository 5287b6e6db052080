//! The names of a certificate, read from its subjectAltName extension by a small DER walker:
//! URI names `herdcache://ID`, DNS names and IP addresses (see
//! [`PeerIdentity`](herdcache_proto::PeerIdentity) for what each admits).
//!
//! Why a walker of its own rather than an X.509 crate: the only field needed is one extension
//! of the end-entity certificate, and only after webpki verified the chain (so the bytes are
//! a certificate a trusted CA signed). The walker is bounded (it only narrows slices, no
//! recursion, no allocation but the names it returns) and cannot panic (every index is a
//! checked `get`); a proptest feeds it random bytes. It reads single-byte tags and definite
//! lengths of up to four bytes, which is all DER allows for a certificate's structure.

use alloc::vec::Vec;
use core::net::IpAddr;

use bytes::Bytes;
use herdcache_proto::{ID_URI_SCHEME, PeerName};

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` in a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// GeneralName choices (implicit, context-specific, primitive).
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;
const IP_ADDRESS: u8 = 0x87;

/// A DER reader over a slice: each read takes one element off the front.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and contents; `None` when the bytes do not hold one.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let tag = *self.0.first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tags: not in a certificate's structure
        }
        let first = *self.0.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None; // indefinite or absurd lengths
            }
            let bytes = self.0.get(2..2 + count)?;
            let len = bytes.iter().fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
            (len, 2 + count)
        };
        let end = header.checked_add(len)?;
        let contents = self.0.get(header..end)?;
        self.0 = self.0.get(end..)?;
        Some((tag, contents))
    }

    /// The contents of the next element, which must have `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.next().filter(|(found, _)| *found == tag).map(|(_, contents)| contents)
    }
}

/// The names in `cert`'s subjectAltName extension (DER), in order; empty when it has none;
/// `None` when the bytes are not a certificate as far as the walk goes.
#[must_use]
pub(crate) fn subject_alt_names(cert: &[u8]) -> Option<Vec<PeerName>> {
    let certificate = Der(cert).expect(SEQUENCE)?;
    let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
    let mut names = Vec::new();
    while let Some((tag, contents)) = tbs.next() {
        if tag != EXTENSIONS {
            continue;
        }
        let mut extensions = Der(Der(contents).expect(SEQUENCE)?);
        while let Some(extension) = extensions.expect(SEQUENCE) {
            let mut extension = Der(extension);
            if extension.expect(OID)? != SUBJECT_ALT_NAME {
                continue;
            }
            let mut value = extension.next()?;
            if value.0 == BOOLEAN {
                value = extension.next()?; // `critical`
            }
            if value.0 != OCTET_STRING {
                return None;
            }
            let mut general_names = Der(Der(value.1).expect(SEQUENCE)?);
            while let Some((tag, name)) = general_names.next() {
                if let Some(name) = peer_name(tag, name) {
                    names.push(name);
                }
            }
        }
    }
    Some(names)
}

/// A GeneralName herdcache understands; `None` for the others (email, directory names, URIs
/// of other schemes, malformed addresses).
fn peer_name(tag: u8, name: &[u8]) -> Option<PeerName> {
    match tag {
        DNS_NAME if name.is_ascii() && !name.is_empty() => {
            Some(PeerName::Dns(Bytes::copy_from_slice(name)))
        }
        URI => {
            let id = name.strip_prefix(ID_URI_SCHEME.as_bytes())?;
            (!id.is_empty()).then(|| PeerName::Id(Bytes::copy_from_slice(id)))
        }
        IP_ADDRESS => match name.len() {
            4 => <[u8; 4]>::try_from(name).ok().map(|v4| PeerName::Ip(IpAddr::from(v4))),
            16 => <[u8; 16]>::try_from(name).ok().map(|v6| PeerName::Ip(IpAddr::from(v6))),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    /// A DER element.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            len @ 0..0x80 => out.push(len as u8),
            len @ 0x80..=0xff => out.extend([0x81, len as u8]),
            len => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    /// A certificate-shaped DER with `general_names` in a SAN extension (after another
    /// extension), `critical` or not.
    fn certificate(general_names: &[Vec<u8>], critical: bool) -> Vec<u8> {
        let names = tlv(SEQUENCE, &general_names.concat());
        let mut san = tlv(OID, SUBJECT_ALT_NAME);
        if critical {
            san.extend(tlv(BOOLEAN, &[0xff]));
        }
        san.extend(tlv(OCTET_STRING, &names));
        let basic_constraints =
            [tlv(OID, &[0x55, 0x1d, 0x13]), tlv(OCTET_STRING, &tlv(SEQUENCE, &[]))].concat();
        let extensions =
            tlv(SEQUENCE, &[tlv(SEQUENCE, &basic_constraints), tlv(SEQUENCE, &san)].concat());
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])), // version
            tlv(0x02, &[1; 20]),         // serial
            tlv(SEQUENCE, &[0; 150]),    // algorithm, issuer, ... (long form lengths too)
            tlv(EXTENSIONS, &extensions),
        ]
        .concat();
        tlv(SEQUENCE, &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[1; 8]), tlv(0x03, &[0; 65])].concat())
    }

    #[test]
    fn reads_uri_dns_and_ip_names_and_skips_the_rest() {
        let names = [
            tlv(URI, b"herdcache://127.0.0.1:7001"),
            tlv(URI, b"https://example.com"),
            tlv(DNS_NAME, b"cache-0.cache"),
            tlv(IP_ADDRESS, &[10, 0, 0, 5]),
            tlv(IP_ADDRESS, &[0; 16]),
            tlv(IP_ADDRESS, &[1, 2, 3]),
            tlv(0x81, b"ops@example.com"),
        ];
        for critical in [false, true] {
            let found = subject_alt_names(&certificate(&names, critical)).expect("parsed");
            assert_eq!(
                found,
                vec![
                    PeerName::Id(Bytes::from_static(b"127.0.0.1:7001")),
                    PeerName::Dns(Bytes::from_static(b"cache-0.cache")),
                    PeerName::Ip(IpAddr::from([10, 0, 0, 5])),
                    PeerName::Ip(IpAddr::from([0u8; 16])),
                ]
            );
        }
    }

    #[test]
    fn truncated_or_empty_input_is_refused_without_a_panic() {
        let der = certificate(&[tlv(DNS_NAME, b"a")], false);
        for cut in 0..der.len() {
            let _ = subject_alt_names(&der[..cut]);
        }
        assert_eq!(subject_alt_names(&[]), None);
        assert_eq!(subject_alt_names(&[SEQUENCE, 0x80]), None, "indefinite length");
        assert_eq!(subject_alt_names(&[SEQUENCE, 0x85, 1, 1, 1, 1, 1]), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = subject_alt_names(&bytes);
        }

        #[test]
        fn random_names_inside_a_certificate_never_panic(
            names in proptest::collection::vec(
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
            flip in any::<usize>(),
            value in any::<u8>(),
        ) {
            let names: Vec<Vec<u8>> = names.iter().map(|(tag, body)| tlv(*tag, body)).collect();
            let mut der = certificate(&names, false);
            let at = flip % der.len();
            der[at] = value;
            let _ = subject_alt_names(&der);
        }
    }
}
