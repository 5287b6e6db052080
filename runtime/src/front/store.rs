//! The sharded store behind a front: many readers, one writer (the node).
//!
//! Contract:
//! - **Readers never write shared state they do not own.** A hit takes one shard's read lock,
//!   finds the key, checks its expiry, sets the entry's reference bit only when it is not set
//!   already, counts the hit in the shard's own counter (on the shard's cache line, which the
//!   read lock writes anyway) and clones or reads the value. Hits on keys of different shards
//!   touch no common cache line.
//! - **Every mutation comes from the node**, through [`StoreWriter`] (the [`Store`] the node
//!   owns), so the budget, the byte counts, the expiry heap and the eviction hand are the
//!   writer's plain fields; a shard's write lock is held only to change that shard.
//! - **Budget and victim rule as [`Cache`]'s**: one budget for the whole keyspace (not one per
//!   shard, so any entry up to the budget fits), groupcache's victim rule between the tiers.
//!   Within a tier the order is CLOCK (second chance), not exact LRU: an entry read since the
//!   hand last passed it survives one more round. The hand moves over the shards round-robin.
//! - **Expiry**: an expired entry is never returned; the writer's heap reclaims it when
//!   [`Store::poll_timeout`] says.
//! - When the writer is dropped (its keyspace removed) the store empties itself, so a reader
//!   still holding it only misses.

use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use bytes::Bytes;
use core::cmp::Reverse;
use hashbrown::HashTable;

use super::sync::{Arc, AtomicBool, AtomicU64, Ordering, RwLock, unpoison};
use herdcache_proto::{
    Cache, CacheConfig, CacheStats, InsertError, Store, StoreFactory, Stored, Tier, TierStats,
};
use herdcache_proto::{Instant, Monotonic};
use herdcache_proto::{KeyHashBuilder, hash_key, key_hash_builder};

/// Shards per store: enough that two to a few dozen threads rarely meet on one, few enough
/// that a small keyspace does not pay for many empty tables. The loom models use two.
#[cfg(not(herdcache_loom))]
const SHARDS: usize = 64;
#[cfg(herdcache_loom)]
const SHARDS: usize = 2;

/// The values readers share with the writer. See the module docs.
pub(crate) struct SharedStore {
    shards: Box<[ShardCell]>,
    hasher: KeyHashBuilder,
}

/// A shard and its hit counters, on cache lines of their own.
#[repr(align(128))]
struct ShardCell {
    lock: RwLock<Shard>,
    hits: [AtomicU64; 2],
}

/// One shard's entries: a slab, an index into it, and a CLOCK queue per tier.
struct Shard {
    index: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// `(slot, generation)` in insertion order; an entry whose slot has moved on is stale and
    /// skipped (removals do not search the queue).
    queues: [VecDeque<(u32, u32)>; 2],
    live: [usize; 2],
}

struct Slot {
    key: Bytes,
    value: Bytes,
    hash: u64,
    /// `Instant::MAX` for never.
    expires_at: Instant,
    /// Bumped when the slot is freed, so queue and heap references to it go stale.
    generation: u32,
    /// `None` while free.
    tier: Option<Tier>,
    /// CLOCK's reference bit: set by readers (only when clear), cleared by the hand.
    referenced: AtomicBool,
}

/// An entry that left a shard.
struct Removed {
    tier: Tier,
    charge: u64,
    expires: bool,
}

fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Main => 0,
        Tier::Hot => 1,
    }
}

fn finite(instant: Instant) -> Option<Instant> {
    (instant != Instant::MAX).then_some(instant)
}

impl SharedStore {
    fn new(hash_seed: u64) -> SharedStore {
        let shards = (0..SHARDS)
            .map(|_| ShardCell {
                lock: RwLock::new(Shard::new()),
                hits: [AtomicU64::new(0), AtomicU64::new(0)],
            })
            .collect();
        SharedStore { shards, hasher: key_hash_builder(hash_seed) }
    }

    fn shard_of(hash: u64) -> usize {
        // Bits the table does not use for its own bucket and tag choices.
        (hash >> 40) as usize % SHARDS
    }

    /// Reads `key` if it is present and not expired at `now()` (read only for entries that
    /// expire): marks it used, counts the hit, and hands the value to `read`.
    pub(crate) fn read<R>(
        &self,
        key: &[u8],
        now: impl FnOnce() -> Instant,
        read: impl FnOnce(Tier, &Bytes, Option<Instant>) -> R,
    ) -> Option<R> {
        let hash = hash_key(&self.hasher, key);
        let cell = &self.shards[SharedStore::shard_of(hash)];
        let shard = unpoison(cell.lock.read());
        let slot = shard.find(hash, key)?;
        if slot.expires_at != Instant::MAX && now() >= slot.expires_at {
            return None;
        }
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        let tier = slot.tier?;
        cell.hits[tier_index(tier)].fetch_add(1, Ordering::Relaxed);
        Some(read(tier, &slot.value, finite(slot.expires_at)))
    }

    fn contains(&self, now: Instant, key: &[u8]) -> bool {
        let hash = hash_key(&self.hasher, key);
        let shard = unpoison(self.shards[SharedStore::shard_of(hash)].lock.read());
        shard.find(hash, key).is_some_and(|slot| slot.expires_at > now)
    }

    fn hits(&self, tier: Tier) -> u64 {
        self.shards.iter().map(|cell| cell.hits[tier_index(tier)].load(Ordering::Relaxed)).sum()
    }
}

impl Shard {
    fn new() -> Shard {
        Shard {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            queues: [VecDeque::new(), VecDeque::new()],
            live: [0, 0],
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        let slots = &self.slots;
        let id = self.index.find(hash, |&id| slots[id as usize].key == key)?;
        Some(&slots[*id as usize])
    }

    fn is_live(&self, (id, generation): (u32, u32), tier: Tier) -> bool {
        self.slots
            .get(id as usize)
            .is_some_and(|slot| slot.generation == generation && slot.tier == Some(tier))
    }

    /// Stores a new entry (the key is not present); returns its slot and generation.
    fn insert(
        &mut self,
        hash: u64,
        tier: Tier,
        key: Bytes,
        value: Bytes,
        expires_at: Instant,
    ) -> (u32, u32) {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.slots.len()).expect("fewer than 2^32 entries a shard");
                self.slots.push(Slot {
                    key: Bytes::new(),
                    value: Bytes::new(),
                    hash: 0,
                    expires_at: Instant::MAX,
                    generation: 0,
                    tier: None,
                    referenced: AtomicBool::new(false),
                });
                id
            }
        };
        let slot = &mut self.slots[id as usize];
        slot.key = key;
        slot.value = value;
        slot.hash = hash;
        slot.expires_at = expires_at;
        slot.tier = Some(tier);
        slot.referenced.store(false, Ordering::Relaxed);
        let generation = slot.generation;
        let slots = &self.slots;
        self.index.insert_unique(hash, id, |&id| slots[id as usize].hash);
        let queue = &mut self.queues[tier_index(tier)];
        queue.push_back((id, generation));
        self.live[tier_index(tier)] += 1;
        if queue.len() > 2 * self.live[tier_index(tier)] + 16 {
            let slots = &self.slots;
            queue.retain(|&(id, generation)| {
                slots[id as usize].generation == generation && slots[id as usize].tier == Some(tier)
            });
        }
        (id, generation)
    }

    fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Removed> {
        let slots = &self.slots;
        let entry = self.index.find_entry(hash, |&id| slots[id as usize].key == key).ok()?;
        let (id, _) = entry.remove();
        Some(self.free_slot(id))
    }

    /// Frees a slot already unlinked from the index.
    fn free_slot(&mut self, id: u32) -> Removed {
        let slot = &mut self.slots[id as usize];
        let tier = slot.tier.take().expect("a linked slot is occupied");
        let charge = Cache::charge(&slot.key, &slot.value);
        let expires = slot.expires_at != Instant::MAX;
        slot.key = Bytes::new();
        slot.value = Bytes::new();
        slot.generation = slot.generation.wrapping_add(1);
        self.live[tier_index(tier)] -= 1;
        self.free.push(id);
        Removed { tier, charge, expires }
    }

    fn unlink_and_free(&mut self, id: u32) -> Removed {
        let hash = self.slots[id as usize].hash;
        if let Ok(entry) = self.index.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        self.free_slot(id)
    }

    /// CLOCK: the first entry of the tier's queue not read since the hand last passed it.
    fn evict(&mut self, tier: Tier) -> Option<Removed> {
        while let Some(reference) = self.queues[tier_index(tier)].pop_front() {
            if !self.is_live(reference, tier) {
                continue;
            }
            let slot = &self.slots[reference.0 as usize];
            if slot.referenced.load(Ordering::Relaxed) {
                slot.referenced.store(false, Ordering::Relaxed);
                self.queues[tier_index(tier)].push_back(reference);
                continue;
            }
            return Some(self.unlink_and_free(reference.0));
        }
        None
    }

    /// Frees the slot if it still holds the entry of that generation.
    fn remove_generation(&mut self, id: u32, generation: u32) -> Option<Removed> {
        let slot = self.slots.get(id as usize)?;
        if slot.generation != generation || slot.tier.is_none() {
            return None;
        }
        Some(self.unlink_and_free(id))
    }

    fn clear_tier(&mut self, tier: Tier) -> Vec<Removed> {
        let ids: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&id| self.slots[id as usize].tier == Some(tier))
            .collect();
        let removed = ids.into_iter().map(|id| self.unlink_and_free(id)).collect();
        self.queues[tier_index(tier)].clear();
        removed
    }
}

/// The sharded store as a [`StoreFactory`] of its own, without a front: what the runtimes
/// ship, for a [`Node`](herdcache_proto::Node) driven without one (the deterministic
/// simulation in herdcache-runtime's tests runs its properties on it). Each keyspace's store
/// is reachable only through the node.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardedStores;

impl StoreFactory for ShardedStores {
    fn create(&mut self, _name: &Bytes, config: CacheConfig) -> Box<dyn Store> {
        Box::new(StoreWriter::new(config))
    }
}

/// The node's side of a [`SharedStore`]: the only writer, keeping the budget. See the module
/// docs.
pub(crate) struct StoreWriter {
    shared: Arc<SharedStore>,
    max_bytes: u64,
    bytes: [u64; 2],
    items: [u64; 2],
    evictions: [u64; 2],
    expirations: [u64; 2],
    hand: usize,
    /// `(expiry, shard, slot, generation)`; stale pairs are skipped when popped.
    expiry: BinaryHeap<Reverse<(Instant, u32, u32, u32)>>,
    /// Live entries that expire (the heap holds at most twice as many pairs).
    expiring: usize,
    clock: Monotonic,
}

impl StoreWriter {
    /// A new store and its writer.
    pub(crate) fn new(config: CacheConfig) -> StoreWriter {
        StoreWriter {
            shared: Arc::new(SharedStore::new(config.hash_seed)),
            max_bytes: config.max_bytes,
            bytes: [0, 0],
            items: [0, 0],
            evictions: [0, 0],
            expirations: [0, 0],
            hand: 0,
            expiry: BinaryHeap::new(),
            expiring: 0,
            clock: Monotonic::default(),
        }
    }

    /// The readers' side.
    pub(crate) fn shared(&self) -> Arc<SharedStore> {
        self.shared.clone()
    }

    fn write(&self, shard: usize) -> super::sync::RwLockWriteGuard<'_, Shard> {
        unpoison(self.shared.shards[shard].lock.write())
    }

    fn account(&mut self, removed: &Removed) {
        let tier = tier_index(removed.tier);
        self.bytes[tier] -= removed.charge;
        self.items[tier] -= 1;
        if removed.expires {
            self.expiring -= 1;
        }
    }

    /// groupcache's victim rule between the tiers, CLOCK within one, shards round-robin.
    fn evict_to_budget(&mut self) -> usize {
        let mut evicted = 0;
        while self.bytes[0] + self.bytes[1] > self.max_bytes {
            let tier = if self.bytes[1] > self.bytes[0] / 8 { Tier::Hot } else { Tier::Main };
            let mut victim = None;
            for _ in 0..SHARDS {
                let shard = self.hand;
                self.hand = (self.hand + 1) % SHARDS;
                victim = self.write(shard).evict(tier);
                if victim.is_some() {
                    break;
                }
            }
            let Some(victim) = victim else {
                debug_assert!(false, "a tier holding the excess has an entry");
                break;
            };
            self.account(&victim);
            self.evictions[tier_index(tier)] += 1;
            evicted += 1;
        }
        evicted
    }

    /// Rebuilds the expiry heap from the live entries once stale pairs outnumber them.
    fn compact_expiry(&mut self) {
        if self.expiry.len() <= 2 * self.expiring + 64 {
            return;
        }
        let mut pairs = Vec::with_capacity(self.expiring);
        for (index, cell) in self.shared.shards.iter().enumerate() {
            let shard = unpoison(cell.lock.read());
            for (id, slot) in shard.slots.iter().enumerate() {
                if slot.tier.is_some() && slot.expires_at != Instant::MAX {
                    pairs.push(Reverse((
                        slot.expires_at,
                        index as u32,
                        id as u32,
                        slot.generation,
                    )));
                }
            }
        }
        self.expiry = BinaryHeap::from(pairs);
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        // Readers holding the store (a `KeyspaceFront` of a removed keyspace) only miss now.
        for shard in 0..SHARDS {
            let mut shard = self.write(shard);
            shard.clear_tier(Tier::Main);
            shard.clear_tier(Tier::Hot);
        }
    }
}

impl Store for StoreWriter {
    fn get(&mut self, now: Instant, key: &[u8]) -> Option<Stored> {
        let now = self.clock.observe(now);
        self.shared.read(
            key,
            || now,
            |tier, value, expires_at| Stored { tier, value: value.clone(), expires_at },
        )
    }

    fn contains(&self, now: Instant, key: &[u8]) -> bool {
        self.shared.contains(now.max(self.clock.latest()), key)
    }

    fn insert(
        &mut self,
        now: Instant,
        tier: Tier,
        key: Bytes,
        value: Bytes,
        expires_at: Option<Instant>,
    ) -> Result<usize, InsertError> {
        let now = self.clock.observe(now);
        let expires_at = expires_at.unwrap_or(Instant::MAX);
        let charge = Cache::charge(&key, &value);
        let hash = hash_key(&self.shared.hasher, &key);
        let index = SharedStore::shard_of(hash);
        let mut shard = self.write(index);
        // Replacing happens under one write lock: a reader sees the old value or the new one.
        let replaced = shard.remove(hash, &key);
        let result = if charge > self.max_bytes {
            Err(InsertError::TooLarge { charge, max_bytes: self.max_bytes })
        } else if expires_at <= now {
            Err(InsertError::AlreadyExpired)
        } else {
            Ok(shard.insert(hash, tier, key, value, expires_at))
        };
        drop(shard);
        if let Some(replaced) = replaced {
            self.account(&replaced);
        }
        let (id, generation) = result?;
        self.bytes[tier_index(tier)] += charge;
        self.items[tier_index(tier)] += 1;
        if expires_at != Instant::MAX {
            self.expiring += 1;
            self.expiry.push(Reverse((expires_at, index as u32, id, generation)));
            self.compact_expiry();
        }
        Ok(self.evict_to_budget())
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        let hash = hash_key(&self.shared.hasher, key);
        let removed = self.write(SharedStore::shard_of(hash)).remove(hash, key);
        match removed {
            Some(removed) => {
                self.account(&removed);
                true
            }
            None => false,
        }
    }

    fn clear_tier(&mut self, tier: Tier) {
        for shard in 0..SHARDS {
            let removed = self.write(shard).clear_tier(tier);
            for removed in &removed {
                self.account(removed);
            }
        }
    }

    fn clear(&mut self) {
        self.clear_tier(Tier::Main);
        self.clear_tier(Tier::Hot);
        self.expiry.clear();
    }

    fn set_max_bytes(&mut self, max_bytes: u64) -> usize {
        self.max_bytes = max_bytes;
        self.evict_to_budget()
    }

    fn handle_timeout(&mut self, now: Instant) -> usize {
        let now = self.clock.observe(now);
        let mut reclaimed = 0;
        while let Some(&Reverse((at, shard, id, generation))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            let removed = self.write(shard as usize).remove_generation(id, generation);
            if let Some(removed) = removed {
                self.account(&removed);
                self.expirations[tier_index(removed.tier)] += 1;
                reclaimed += 1;
            }
        }
        reclaimed
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // The earliest pair may be stale: then the wake-up only pops it.
        self.expiry.peek().map(|Reverse((at, ..))| *at)
    }

    fn keys(&self, tier: Tier) -> Vec<Bytes> {
        let mut keys = Vec::new();
        for cell in self.shared.shards.iter() {
            let shard = unpoison(cell.lock.read());
            keys.extend(
                shard.slots.iter().filter(|slot| slot.tier == Some(tier)).map(|s| s.key.clone()),
            );
        }
        keys
    }

    fn stats(&self) -> CacheStats {
        let tier = |tier: Tier| {
            let index = tier_index(tier);
            TierStats {
                items: self.items[index],
                bytes: self.bytes[index],
                hits: self.shared.hits(tier),
                evictions: self.evictions[index],
                expirations: self.expirations[index],
            }
        };
        CacheStats { main: tier(Tier::Main), hot: tier(Tier::Hot) }
    }
}
