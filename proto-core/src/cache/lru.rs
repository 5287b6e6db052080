//! One LRU tier: a slab of entries on an intrusive recency list, a hash index into the slab, and
//! an expiry heap.
//!
//! - get, insert, remove and pop-oldest are O(1) (plus O(log n) to push an expiry).
//! - The index stores only slab positions: the key is kept once, in the entry.
//! - The expiry heap holds `(expires_at, slot)` pairs and is lazy: removing or replacing an
//!   entry leaves its pair behind, and a pair is acted on only if its slot still holds an entry
//!   with exactly that expiry (the slot plus its expiry act as the generation). A pair that
//!   outlives its entry and finds a newer entry with the same expiry in the slot still expires
//!   the right thing. Stale pairs are dropped when popped, and the heap is compacted from its
//!   own pairs whenever it exceeds 1.5 times the expiring entries plus a slack of 64 (checked
//!   after every insert and removal), so it stays within that bound. Each compaction costs
//!   O(heap) and removes at least a third of it, so it is amortized O(1) per operation, however
//!   many entries never expire.

use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;

use bytes::Bytes;
use hashbrown::HashTable;

use crate::hash::{KeyHashBuilder, hash_key};
use crate::time::Instant;

/// No entry: the end of the recency list.
const NIL: u32 = u32::MAX;

/// The heap is rebuilt when it holds more than 1.5 times the expiring entries plus this slack.
const EXPIRY_HEAP_SLACK: usize = 64;

/// Grows a full vector by an eighth (at least 16) instead of doubling it: the slack of a
/// doubled vector would be up to half of the memory the byte account has to cover. Growth
/// stays geometric, so pushes stay amortized O(1).
fn reserve_gently<T>(vec: &mut Vec<T>) {
    if vec.len() == vec.capacity() {
        vec.reserve_exact((vec.capacity() / 8).max(16));
    }
}

/// Bytes of bookkeeping charged per cache entry on top of its key and value: measured, see
/// the cache module docs and `tests/cache_memory.rs`.
pub const ENTRY_OVERHEAD: u64 = 144;

/// What an entry costs against the byte budget.
pub(crate) fn entry_charge(key_len: usize, value_len: usize) -> u64 {
    (key_len as u64).saturating_add(value_len as u64).saturating_add(ENTRY_OVERHEAD)
}

pub(crate) struct Entry {
    pub(crate) key: Bytes,
    pub(crate) value: Bytes,
    /// [`Instant::MAX`] for an entry that never expires.
    pub(crate) expires_at: Instant,
    /// Toward the most recently used end.
    newer: u32,
    /// Toward the least recently used end.
    older: u32,
}

impl Entry {
    fn charge(&self) -> u64 {
        entry_charge(self.key.len(), self.value.len())
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at <= now
    }
}

pub(crate) struct Lru {
    hasher: KeyHashBuilder,
    slots: Vec<Option<Entry>>,
    free_slots: Vec<u32>,
    index: HashTable<u32>,
    newest: u32,
    oldest: u32,
    bytes: u64,
    expiry: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Live entries with a finite expiry (the heap holds at least one pair for each).
    expiring: usize,
}

impl Lru {
    pub(crate) fn new(hasher: KeyHashBuilder) -> Self {
        Lru {
            hasher,
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: HashTable::new(),
            newest: NIL,
            oldest: NIL,
            bytes: 0,
            expiry: BinaryHeap::new(),
            expiring: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn entry(&self, slot: u32) -> &Entry {
        self.slots[slot as usize].as_ref().expect("slots in the index or list are occupied")
    }

    fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        self.slots[slot as usize].as_mut().expect("slots in the index or list are occupied")
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = hash_key(&self.hasher, key);
        let slots = &self.slots;
        self.index
            .find(hash, |&slot| slots[slot as usize].as_ref().is_some_and(|e| e.key == key))
            .copied()
    }

    /// The entry for `key` without touching recency, if present (expired or not).
    pub(crate) fn peek(&self, key: &[u8]) -> Option<&Entry> {
        self.find(key).map(|slot| self.entry(slot))
    }

    /// The slot of `key`'s entry, made most recent, unless it is missing or expired; an expired
    /// entry is removed and returned as `Err`.
    pub(crate) fn get(&mut self, now: Instant, key: &[u8]) -> Option<Result<u32, Entry>> {
        let slot = self.find(key)?;
        if self.entry(slot).is_expired(now) {
            return Some(Err(self.remove_slot(slot)));
        }
        if self.newest != slot {
            self.unlink(slot);
            self.link_newest(slot);
        }
        Some(Ok(slot))
    }

    /// Stores `key` as the most recent entry, returning the entry it replaced.
    pub(crate) fn insert(
        &mut self,
        key: Bytes,
        value: Bytes,
        expires_at: Instant,
    ) -> Option<Entry> {
        let replaced = self.remove(&key);
        let hash = hash_key(&self.hasher, &key);
        let entry = Entry { key, value, expires_at, newer: NIL, older: NIL };
        self.bytes += entry.charge();
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&slot| slot != NIL)
                    .expect("the byte budget bounds entries far below 2^32");
                reserve_gently(&mut self.slots);
                self.slots.push(Some(entry));
                slot
            }
        };
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.index.insert_unique(hash, slot, |&slot| {
            let entry = slots[slot as usize].as_ref().expect("indexed slots are occupied");
            hash_key(hasher, &entry.key)
        });
        self.link_newest(slot);
        if expires_at != Instant::MAX {
            self.expiring += 1;
            if self.expiry.len() == self.expiry.capacity() {
                self.expiry.reserve_exact((self.expiry.capacity() / 8).max(16));
            }
            self.expiry.push(Reverse((expires_at, slot)));
            self.maybe_compact_expiry();
        }
        replaced
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        self.find(key).map(|slot| self.remove_slot(slot))
    }

    pub(crate) fn pop_oldest(&mut self) -> Option<Entry> {
        (self.oldest != NIL).then(|| self.remove_slot(self.oldest))
    }

    /// Removes and returns one entry whose expiry is at or before `now`, if any.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Entry> {
        while let Some(&Reverse((expires_at, slot))) = self.expiry.peek() {
            if expires_at > now {
                return None;
            }
            self.expiry.pop();
            let live = self.slots[slot as usize]
                .as_ref()
                .is_some_and(|entry| entry.expires_at == expires_at);
            if live {
                return Some(self.remove_slot(slot));
            }
        }
        None
    }

    /// The earliest pending expiry (possibly of an entry already gone: waking early is harmless).
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiry.peek().map(|Reverse((at, _))| *at)
    }

    /// Entries from the most to the least recently used.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        let mut cursor = self.newest;
        core::iter::from_fn(move || {
            if cursor == NIL {
                return None;
            }
            let entry = self.entry(cursor);
            cursor = entry.older;
            Some(entry)
        })
    }

    #[cfg(test)]
    pub(crate) fn expiry_len(&self) -> usize {
        self.expiry.len()
    }

    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.free_slots.clear();
        self.index.clear();
        self.expiry.clear();
        self.newest = NIL;
        self.oldest = NIL;
        self.bytes = 0;
        self.expiring = 0;
    }

    fn remove_slot(&mut self, slot: u32) -> Entry {
        self.unlink(slot);
        let entry = self.slots[slot as usize].take().expect("removed slots are occupied");
        let hash = hash_key(&self.hasher, &entry.key);
        self.index
            .find_entry(hash, |&candidate| candidate == slot)
            .expect("every occupied slot is indexed")
            .remove();
        reserve_gently(&mut self.free_slots);
        self.free_slots.push(slot);
        self.bytes -= entry.charge();
        if entry.expires_at != Instant::MAX {
            self.expiring -= 1;
        }
        self.maybe_compact_expiry();
        entry
    }

    /// Drops stale pairs once they outnumber the bound, working from the heap's own pairs (never
    /// the whole slab, which may hold many entries that do not expire).
    fn maybe_compact_expiry(&mut self) {
        if self.expiry.len() <= self.expiring + self.expiring / 2 + EXPIRY_HEAP_SLACK {
            return;
        }
        let mut pairs = core::mem::take(&mut self.expiry).into_vec();
        let slots = &self.slots;
        pairs.retain(|Reverse((expires_at, slot))| {
            slots[*slot as usize].as_ref().is_some_and(|entry| entry.expires_at == *expires_at)
        });
        // A slot reused with the same expiry can leave two live-looking pairs: keep one.
        pairs.sort_unstable();
        pairs.dedup();
        self.expiry = BinaryHeap::from(pairs);
    }

    fn unlink(&mut self, slot: u32) {
        let (newer, older) = {
            let entry = self.entry(slot);
            (entry.newer, entry.older)
        };
        match newer {
            NIL => self.newest = older,
            newer => self.entry_mut(newer).older = older,
        }
        match older {
            NIL => self.oldest = newer,
            older => self.entry_mut(older).newer = newer,
        }
        let entry = self.entry_mut(slot);
        entry.newer = NIL;
        entry.older = NIL;
    }

    fn link_newest(&mut self, slot: u32) {
        let previous_newest = self.newest;
        {
            let entry = self.entry_mut(slot);
            entry.newer = NIL;
            entry.older = previous_newest;
        }
        if previous_newest != NIL {
            self.entry_mut(previous_newest).newer = slot;
        } else {
            self.oldest = slot;
        }
        self.newest = slot;
    }
}
