//! Discovery: where a node learns the cluster's member list, for every runtime.
//!
//! A [`Discovery`] provider runs on a thread of its own from the moment the node is set up
//! until it stops, and reports each member list it finds through its [`DiscoveryContext`];
//! the node replaces its member list with it (as [`Handle::set_peers`](crate::Handle::set_peers)
//! does) and rebuilds its ring. Discovery says who *should* be in the cluster; liveness (in
//! the core) says who answers: a listed member that is down stays off the ring until it
//! answers again, whatever the provider says.
//!
//! Providers:
//! - [`StaticList`]: a fixed list, replaceable at run time ([`StaticList::with_updates`]).
//! - `DnsDiscovery` (feature `dns`): A/AAAA records of a name with a fixed port, or SRV
//!   records, re-resolved at the records' TTL within bounds (a Kubernetes headless service).
//! - `EtcdDiscovery` (feature `etcd`): the node registers itself under a lease, lists the
//!   prefix, and watches it.
//! - `SurveyDiscovery` (feature `survey`): gopherdiscovery's survey protocol; the node answers
//!   a survey server's surveys with its id and follows the list it publishes. The server is
//!   `SurveyServer` (`herdcache discovery`).
//! - `NatsDiscovery` (feature `nats`): members announce themselves on a NATS subject, answer
//!   membership queries, and announce their leave (distcache's protocol).
//!
//! Contract of a provider's `run`:
//! - It reports complete lists ([`DiscoveryContext::set_members`]), never deltas; a list
//!   equal to the last one reported is not passed on. This node's own id may or may not be
//!   in it: the node is always on its own ring while it serves.
//! - When its source is unreachable it keeps the last list (it reports nothing), marks
//!   itself unhealthy ([`DiscoveryContext::unhealthy`]) and retries with a bounded backoff;
//!   the node keeps serving.
//! - It returns soon after [`DiscoveryContext::stopped`] fires: on [`StopKind::Leave`] (a
//!   graceful stop) it first withdraws this node from its source where it registered it, so
//!   that the others drop it at once; on [`StopKind::Abort`] (a kill) it returns without a
//!   word, as a crashed process would.
//! - It may block its thread, or run a small async runtime on it (the `dns`, `etcd`,
//!   `survey` and `nats` providers run a current-thread tokio runtime, because their client crates need tokio;
//!   the node's own runtime may be any).

#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "nats")]
mod nats;
mod spec;
mod static_list;
#[cfg(feature = "survey")]
mod survey;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::sync::{Condvar, Mutex, PoisonError};

use bytes::Bytes;

use crate::front::Front;

#[cfg(feature = "dns")]
pub use dns::{DEFAULT_QUERY_TIMEOUT, DEFAULT_TTL_BOUNDS, DnsDiscovery};
#[cfg(feature = "etcd")]
pub use etcd::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_LEASE_TTL, DEFAULT_RETRY_FIRST, DEFAULT_RETRY_MAX, EtcdDiscovery,
};
#[cfg(feature = "nats")]
pub use nats::{
    DEFAULT_ANNOUNCE_INTERVAL, DEFAULT_NATS_CALL_TIMEOUT, LIVENESS_PERIODS, MAX_ID, MAX_MEMBERS,
    NatsDiscovery, SUBSCRIPTION_CAPACITY,
};
pub use spec::{DiscoveryOptions, DiscoverySpec, DiscoverySpecError};
pub use static_list::{StaticList, StaticListUpdater};
#[cfg(feature = "survey")]
pub use survey::{SurveyDiscovery, SurveyServer, SurveyServerConfig};

/// A source of the cluster's member list. See the module docs for the contract of `run`.
pub trait Discovery: Send + 'static {
    /// A short name for logs and status (`"static"`, `"dns"`, `"etcd"`).
    fn kind(&self) -> &'static str;

    /// Runs the provider on its own thread until `context.stopped()` fires.
    fn run(self: Box<Self>, context: DiscoveryContext);
}

/// A provider chosen at run time (as [`DiscoverySpec::provider`] returns it).
impl Discovery for Box<dyn Discovery> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn run(self: Box<Self>, context: DiscoveryContext) {
        (*self).run(context);
    }
}

/// How a provider is told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// The node leaves gracefully: withdraw its registration, then return.
    Leave,
    /// The node was killed: return at once, withdrawing nothing.
    Abort,
}

/// What a provider reported last, for operators and tests
/// ([`Handle::discovery`](crate::Handle::discovery)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryStatus {
    /// The provider's kind.
    pub kind: &'static str,
    /// The last member list it reported (empty before the first).
    pub members: Vec<String>,
    /// How many distinct lists it reported.
    pub updates: u64,
    /// Whether its source answered at its last attempt.
    pub healthy: bool,
    /// Why its last attempt failed, while unhealthy.
    pub last_error: Option<String>,
}

/// A provider's side of the node: report lists, health, and learn when to stop.
pub struct DiscoveryContext {
    node_id: String,
    front: Front,
    status: Arc<Mutex<DiscoveryStatus>>,
    stop: Arc<StopSignal>,
}

/// The node's word to its provider: set once, read blocking (with a timeout) or async.
#[derive(Default)]
struct StopSignal {
    state: Mutex<StopState>,
    changed: Condvar,
}

#[derive(Default)]
struct StopState {
    kind: Option<StopKind>,
    waiting: Vec<Waker>,
}

impl StopSignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, StopState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the stop (the first one given wins) and wakes every waiter.
    fn set(&self, kind: StopKind) {
        let waiting = {
            let mut state = self.lock();
            state.kind.get_or_insert(kind);
            core::mem::take(&mut state.waiting)
        };
        self.changed.notify_all();
        waiting.into_iter().for_each(Waker::wake);
    }

    fn get(&self) -> Option<StopKind> {
        self.lock().kind
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<StopKind> {
        let mut state = self.lock();
        match state.kind {
            Some(kind) => Poll::Ready(kind),
            None => {
                if !state.waiting.iter().any(|waiting| waiting.will_wake(cx.waker())) {
                    state.waiting.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    fn wait(&self, timeout: Duration) -> Option<StopKind> {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |state| state.kind.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        state.kind
    }
}

impl fmt::Debug for DiscoveryContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryContext").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl DiscoveryContext {
    /// This node's id: what a provider that registers the node announces (its advertised
    /// address; a base URL in groupcache mode).
    #[must_use]
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Replaces the node's member list with `members` (sorted and deduplicated first; a list
    /// equal to the last one is ignored). Marks the provider healthy.
    pub fn set_members<I, S>(&self, members: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut members: Vec<String> = members.into_iter().map(Into::into).collect();
        members.sort_unstable();
        members.dedup();
        let changed = {
            let mut status = self.lock_status();
            status.healthy = true;
            status.last_error = None;
            if status.members == members && status.updates > 0 {
                false
            } else {
                status.members.clone_from(&members);
                status.updates += 1;
                true
            }
        };
        if changed {
            tracing::info!(node = %self.node_id, ?members, "discovery: member list");
            self.front.set_peers(members.into_iter().map(Bytes::from).collect());
        }
    }

    /// The source answered (without a new list): marks the provider healthy.
    pub fn healthy(&self) {
        let mut status = self.lock_status();
        status.healthy = true;
        status.last_error = None;
    }

    /// The source did not answer: the node keeps the last list. `error` is kept for
    /// [`DiscoveryStatus::last_error`].
    pub fn unhealthy(&self, error: impl fmt::Display) {
        let error = error.to_string();
        let mut status = self.lock_status();
        if status.last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(node = %self.node_id, %error, "discovery: keeping the last member list");
        }
        status.healthy = false;
        status.last_error = Some(error);
    }

    /// Whether the node has asked the provider to stop, and how.
    #[must_use]
    pub fn stop_requested(&self) -> Option<StopKind> {
        self.stop.get()
    }

    /// Resolves when the node asks the provider to stop (on any executor).
    pub async fn stopped(&self) -> StopKind {
        futures_lite::future::poll_fn(|cx| self.stop.poll(cx)).await
    }

    /// Blocks up to `timeout` for a stop; `None` when none came.
    #[must_use]
    pub fn wait_stop(&self, timeout: Duration) -> Option<StopKind> {
        self.stop.wait(timeout)
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, DiscoveryStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A timer that needs no runtime (the node's may be any): a thread sleeps until the deadline.
/// Used once per graceful stop.
async fn sleep_until(deadline: std::time::Instant) {
    let (done, wait) = async_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
        let _ = done.try_send(());
    });
    let _ = wait.recv().await;
}

/// The provider's thread as the node holds it: dropping it aborts the provider.
pub(crate) struct DiscoveryTask {
    stop: Arc<StopSignal>,
    done: async_channel::Receiver<()>,
    status: Arc<Mutex<DiscoveryStatus>>,
}

impl fmt::Debug for DiscoveryTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryTask").finish_non_exhaustive()
    }
}

impl DiscoveryTask {
    /// Starts `provider` on a thread of its own for the node behind `front`.
    pub(crate) fn start(
        provider: Box<dyn Discovery>,
        node_id: String,
        front: Front,
    ) -> std::io::Result<DiscoveryTask> {
        let stop = Arc::new(StopSignal::default());
        let (done_sender, done) = async_channel::bounded(1);
        let status = Arc::new(Mutex::new(DiscoveryStatus {
            kind: provider.kind(),
            ..DiscoveryStatus::default()
        }));
        let context =
            DiscoveryContext { node_id, front, status: status.clone(), stop: stop.clone() };
        std::thread::Builder::new()
            .name(alloc::format!("herdcache-discovery-{}", provider.kind()))
            .spawn(move || {
                provider.run(context);
                let _ = done_sender.try_send(());
            })?;
        Ok(DiscoveryTask { stop, done, status })
    }

    pub(crate) fn status(&self) -> DiscoveryStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Asks the provider to withdraw this node and waits up to `timeout` for it to finish.
    pub(crate) async fn leave(&self, timeout: Duration) {
        self.stop.set(StopKind::Leave);
        let deadline = std::time::Instant::now() + timeout;
        futures_lite::future::or(
            async {
                let _ = self.done.recv().await;
            },
            sleep_until(deadline),
        )
        .await;
    }

    /// Tells the provider to return without withdrawing anything; does not wait.
    pub(crate) fn abort(&self) {
        self.stop.set(StopKind::Abort);
    }
}

impl Drop for DiscoveryTask {
    fn drop(&mut self) {
        self.abort();
    }
}
