//! Who a peer connection is, and what it may do: the proof of the cluster secret in the hello,
//! and the authorization of the requests that change other nodes' state.
//!
//! # Authentication
//! A connection's *identity* ([`Conn::identity`](super::links::Conn)) is the node id it
//! authenticated as, set once its handshake completed, never before:
//! - without a cluster secret, the hello's node id (anyone who reaches the peer port and says
//!   the cluster label can claim any id — the cluster label is no secret);
//! - with a [cluster secret](super::NodeConfig::cluster_secret), the hello's node id once the
//!   peer proved the secret. Each side's hello carries a fresh nonce (from the driver:
//!   [`Input::Accepted`](super::Input::Accepted) / [`Input::Connected`](super::Input::Connected)),
//!   and each side answers with a [`Message::HelloProof`](crate::Message::HelloProof): an
//!   HMAC-SHA256 keyed by the secret over a domain label, the sender's role (dialler or
//!   acceptor), the cluster label, both node ids and both nonces. The acceptor proves first
//!   (right after its hello), the dialler once it checked that proof; neither side takes any
//!   other frame before the peer's proof checked out. Binding both nonces makes a recorded
//!   proof useless on another connection (a replay), the role makes a proof useless in the
//!   other direction (a reflection), the ids keep a proof from standing for another node;
//!   tags are compared in constant time;
//! - with a transport that authenticates (TLS, later), the driver passes the peer's
//!   authenticated identity with the connection, and the hello's node id must equal it —
//!   checked in addition to the secret's proof when both are present.
//!
//! A refused hello is answered [`ErrorCode::Unauthenticated`](crate::ErrorCode), counted
//! ([`SecurityStats::refused_unauthenticated`](super::SecurityStats)) and reported
//! ([`Event::ConnectionRefused`](super::Event)); the connection is closed and nothing it sent
//! reaches the node's state.
//!
//! **What the secret does not do**: frames after the hello are not authenticated and nothing
//! is encrypted. Whoever can read or inject bytes on the path between two members can read
//! values and hijack an authenticated connection. On an untrusted network use TLS between
//! peers.
//!
//! # Authorization
//! `Put`, `PutMany`, `Delete`, `DeleteMany`, `DropHot`, `ClearKeyspace` and `Leaving` are
//! honoured only from a connection whose identity is on the member list *now*
//! ([`Input::SetPeers`](super::Input::SetPeers)): a member taken off the list loses these
//! rights on the connections it already has. `Leaving` has no id of its own: it always stands
//! for the connection's identity, so no connection can say goodbye for another node. A refusal
//! changes nothing, is answered [`ErrorCode::Unauthorized`](crate::ErrorCode) where the
//! message has an answer, counted ([`SecurityStats::refused_unauthorized`](super::SecurityStats))
//! and reported ([`Event::RequestRefused`](super::Event)); the connection stays open (its gets
//! are still served: a node between two member lists must not lose its reads).

use alloc::vec;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{ConnId, Event, Node, Output};
use crate::wire::{ErrorCode, Message, ReplyError};

/// A side of the handshake, bound into its proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The node that opened the connection.
    Dialler = 1,
    /// The node that accepted it.
    Acceptor = 2,
}

/// What both proofs of one connection cover.
pub(super) struct Transcript<'a> {
    pub(super) cluster: &'a [u8],
    pub(super) dialler: &'a [u8],
    pub(super) acceptor: &'a [u8],
    pub(super) dialler_nonce: &'a [u8; 16],
    pub(super) acceptor_nonce: &'a [u8; 16],
}

/// Separates these tags from any other use of the same secret.
const DOMAIN: &[u8] = b"herdcache hello proof v1";

impl Transcript<'_> {
    /// The HMAC state over the transcript for `role`'s proof.
    fn mac(&self, secret: &[u8], role: Role) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(DOMAIN);
        mac.update(&[role as u8]);
        // Length-prefixed, so that no two transcripts encode alike.
        for field in [self.cluster, self.dialler, self.acceptor] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            mac.update(&len.to_be_bytes());
            mac.update(field);
        }
        mac.update(self.dialler_nonce);
        mac.update(self.acceptor_nonce);
        mac
    }

    /// `role`'s proof.
    pub(super) fn prove(&self, secret: &[u8], role: Role) -> [u8; 32] {
        self.mac(secret, role).finalize().into_bytes().into()
    }

    /// Whether `tag` is `role`'s proof (compared in constant time).
    pub(super) fn verify(&self, secret: &[u8], role: Role, tag: &[u8; 32]) -> bool {
        self.mac(secret, role).verify_slice(tag).is_ok()
    }
}

impl Node {
    /// The identity `conn` authenticated as, if it is a current member (see the module docs).
    pub(super) fn member_identity(&self, conn: ConnId) -> Option<&Bytes> {
        let identity = self.links.get(conn)?.identity.as_ref()?;
        self.liveness.is_member(identity).then_some(identity)
    }

    /// Whether a write, drop, clear or goodbye from `conn` may be honoured; when not, the
    /// refusal is answered, counted and reported (see the module docs).
    pub(super) fn authorize(&mut self, conn: ConnId, request_id: u64, message: &Message) -> bool {
        if self.member_identity(conn).is_some() {
            return true;
        }
        let peer = self.links.get(conn).and_then(|state| state.identity.clone());
        self.security.refused_unauthorized += 1;
        let reason = ErrorCode::Unauthorized;
        self.outputs.push_back(Output::Event(Event::RequestRefused {
            conn,
            peer: peer.unwrap_or_default(),
            frame: message.kind(),
            reason,
        }));
        let error = ReplyError { code: reason, message: Bytes::new() };
        let reply = match message {
            Message::PutMany { entries, .. } => {
                Some(Message::AckMany(vec![Err(error); entries.len()]))
            }
            Message::DeleteMany { keys, .. } => {
                Some(Message::AckMany(vec![Err(error); keys.len()]))
            }
            Message::Leaving if request_id == 0 => None,
            _ => Some(Message::Ack(Err(error))),
        };
        if let Some(reply) = reply {
            self.send_reply(conn, request_id, reply);
        }
        false
    }

    /// Refuses a hello that could not be authenticated, and counts it.
    pub(super) fn refuse_unauthenticated(&mut self, conn: ConnId) {
        self.security.refused_unauthenticated += 1;
        self.refuse(conn, ErrorCode::Unauthenticated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(dn: &'a [u8; 16], an: &'a [u8; 16]) -> Transcript<'a> {
        Transcript {
            cluster: b"c",
            dialler: b"a",
            acceptor: b"b",
            dialler_nonce: dn,
            acceptor_nonce: an,
        }
    }

    #[test]
    fn a_proof_holds_for_its_secret_role_and_nonces_only() {
        let secret = b"0123456789abcdef";
        let t = transcript(&[1; 16], &[2; 16]);
        let tag = t.prove(secret, Role::Dialler);
        assert!(t.verify(secret, Role::Dialler, &tag));
        assert!(!t.verify(secret, Role::Acceptor, &tag), "a reflected proof fails");
        assert!(!t.verify(b"0123456789abcdeX", Role::Dialler, &tag), "another secret fails");
        assert!(
            !transcript(&[1; 16], &[3; 16]).verify(secret, Role::Dialler, &tag),
            "a replay fails"
        );
        let swapped = Transcript { dialler: b"b", acceptor: b"a", ..t };
        assert!(!swapped.verify(secret, Role::Dialler, &tag), "ids are bound");
    }
}
