//! The concurrent front of a [`Node`](crate::Node): many threads, one node (feature `std`).
//!
//! (API skeleton: bodies land in the next commit.)

#![allow(missing_docs, unused)]

extern crate std;

use alloc::sync::Arc;
use alloc::vec::Vec;
use bytes::Bytes;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::node::{
    ConfigError, ConnId, Entry, Error, Event, Input, InputError, KeyspaceConfig, KeyspaceStats,
    LoadId, NodeConfig, Value,
};
use crate::time::Instant;

/// Work for the driver: every [`Output`](crate::Output) except replies, which the front
/// delivers itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Load { load: LoadId, keyspace: Bytes, key: Bytes },
    Transmit { conn: ConnId, data: Vec<u8> },
    Connect { peer: Bytes },
    Close { conn: ConnId },
    Event(Event),
}

/// How the front wakes its driver when actions are queued from a user thread.
pub type WakeDriver = Arc<dyn Fn() + Send + Sync>;

/// The clock the front reads: the core's `Instant`.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

#[derive(Clone)]
pub struct Front {}

#[derive(Clone)]
pub struct KeyspaceFront {}

pub struct Pending<T> {
    _t: core::marker::PhantomData<T>,
}

impl<T> Unpin for Pending<T> {}

impl<T> Future for Pending<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        todo!()
    }
}

impl<T> Pending<T> {
    /// Blocks this thread until the answer is there.
    pub fn wait(self) -> T {
        todo!()
    }
    /// Blocks until the answer is there or `deadline` passes (then gives `self` back).
    pub fn wait_until(self, _deadline: std::time::Instant) -> Result<T, Self> {
        todo!()
    }
    /// The answer if it is there already.
    pub fn try_take(&mut self) -> Option<T> {
        todo!()
    }
}

impl KeyspaceFront {
    pub fn name(&self) -> &Bytes {
        todo!()
    }
    pub fn get(&self, _key: &[u8]) -> Pending<Result<Value, Error>> {
        todo!()
    }
    /// A hit without touching the value's reference count: `read` sees the bytes in place.
    pub fn peek_with<R>(&self, _key: &[u8], _read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        todo!()
    }
}

impl Front {
    pub fn new(_config: NodeConfig, _wake: WakeDriver) -> Result<Front, ConfigError> {
        todo!()
    }
    pub fn with_clock(
        _config: NodeConfig,
        _wake: WakeDriver,
        _clock: Clock,
    ) -> Result<Front, ConfigError> {
        todo!()
    }
    pub fn node_id(&self) -> Bytes {
        todo!()
    }
    pub fn now(&self) -> Instant {
        todo!()
    }
    pub fn keyspace(&self, _name: &[u8]) -> Option<KeyspaceFront> {
        todo!()
    }
    pub fn get(&self, _keyspace: &[u8], _key: &[u8]) -> Pending<Result<Value, Error>> {
        todo!()
    }
    pub fn get_many(
        &self,
        _keyspace: &[u8],
        _keys: Vec<Bytes>,
    ) -> Pending<Vec<Result<Value, Error>>> {
        todo!()
    }
    pub fn put(&self, _keyspace: &[u8], _entry: Entry) -> Pending<Result<(), Error>> {
        todo!()
    }
    pub fn put_many(
        &self,
        _keyspace: &[u8],
        _entries: Vec<Entry>,
    ) -> Pending<Vec<Result<(), Error>>> {
        todo!()
    }
    pub fn delete(&self, _keyspace: &[u8], _key: Bytes) -> Pending<Result<(), Error>> {
        todo!()
    }
    pub fn delete_many(
        &self,
        _keyspace: &[u8],
        _keys: Vec<Bytes>,
    ) -> Pending<Vec<Result<(), Error>>> {
        todo!()
    }
    pub fn delete_keyspace(&self, _keyspace: &[u8]) -> Pending<Result<(), Error>> {
        todo!()
    }
    pub fn create_keyspace(&self, _config: KeyspaceConfig) -> Result<(), ConfigError> {
        todo!()
    }
    pub fn update_keyspace(&self, _config: KeyspaceConfig) -> Result<(), ConfigError> {
        todo!()
    }
    pub fn remove_keyspace(&self, _name: &[u8]) -> Result<(), ConfigError> {
        todo!()
    }
    pub fn keyspaces(&self) -> Vec<KeyspaceConfig> {
        todo!()
    }
    pub fn stats(&self, _keyspace: &[u8]) -> Option<KeyspaceStats> {
        todo!()
    }
    pub fn set_peers(&self, _peers: Vec<Bytes>) {
        todo!()
    }
    pub fn leave(&self) {
        todo!()
    }
    pub fn close(&self) {
        todo!()
    }
    pub fn handle_input(&self, _input: Input<'_>) -> Result<(), InputError> {
        todo!()
    }
    pub fn handle_timeout(&self) {
        todo!()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    pub fn poll_timeout_in(&self) -> Option<core::time::Duration> {
        todo!()
    }
    pub fn drain_actions(&self, _out: &mut Vec<Action>) {
        todo!()
    }
}
