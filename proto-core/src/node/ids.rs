//! The node's internal ids: one `Copy` newtype per table, so an id of one kind can never be
//! looked up in another table. All are drawn from one counter ([`Ids`]), so no two things the
//! node tracks ever share a number even in logs and on the wire.

/// A request in progress: a local caller's, or a peer's that arrived on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct PendingId(pub(super) u64);

/// A call this node made to a peer. Its number is the request id of the frame on the wire,
/// so the peer's reply names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct CallId(pub(super) u64);

/// One attempt to open a connection to a peer, so that its timeout can tell whether the
/// attempt is still the one in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct AttemptId(pub(super) u64);

/// The counter every internal id is drawn from. Ids start at 1: request id 0 on the wire
/// means "no reply expected".
pub(super) struct Ids {
    next: u64,
}

impl Ids {
    /// A counter whose first id is 1.
    pub(super) fn new() -> Ids {
        Ids { next: 1 }
    }

    /// The next number, never handed out before.
    fn next(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// A fresh request id.
    pub(super) fn pending(&mut self) -> PendingId {
        PendingId(self.next())
    }

    /// A fresh call id.
    pub(super) fn call(&mut self) -> CallId {
        CallId(self.next())
    }

    /// A fresh connection-attempt id.
    pub(super) fn attempt(&mut self) -> AttemptId {
        AttemptId(self.next())
    }

    /// A fresh load id.
    pub(super) fn load(&mut self) -> super::LoadId {
        super::LoadId(self.next())
    }
}
