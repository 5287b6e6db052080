//! The etcd provider (feature `etcd`): the node registers itself under a lease, lists the
//! cluster's prefix, and watches it.
//!
//! Contract, in addition to the [module's](super):
//! - **Registration**: the key `PREFIX/<node id>` holds the node id, under a lease of
//!   [`lease_ttl`](EtcdDiscovery::lease_ttl) (default 5 s) kept alive every third of it. A
//!   node that dies without a word (kill -9) disappears from etcd when its lease expires, at
//!   most the TTL later; a graceful stop ([`StopKind::Leave`]) revokes the lease, which
//!   deletes the key at once.
//! - **Members** are the *values* under `PREFIX/` (the node ids as each node registered
//!   itself), so any id works, whatever characters it holds. The provider lists the prefix,
//!   reports the list, and watches the prefix from the list's revision + 1; every change the
//!   watch brings reports the complete updated list.
//! - **Compaction**: a watch that etcd cancels because its start revision was compacted makes
//!   the provider list again and watch from the new list's revision. A watch that breaks for
//!   another reason resumes from the last revision it saw (so no change is missed), falling
//!   back to a new list when that revision is gone.
//! - **Unreachable etcd**: the node keeps its last list (nothing is reported), the provider
//!   is unhealthy with the error, and it retries with a backoff from 100 ms doubling to 2 s
//!   ([`retry_backoff`](EtcdDiscovery::retry_backoff)). A keep-alive that gets no answer
//!   within the call timeout counts as unreachable too. When the lease was lost meanwhile
//!   (etcd answers the keep-alive with TTL 0, or does not know the lease), the provider grants
//!   a new one and registers the key again.
//! - **Bounded**: the connection and every call are bounded by
//!   [`call_timeout`](EtcdDiscovery::call_timeout) (default 2 s), and a stop interrupts
//!   whatever is in progress: an abort returns at once, a leave revokes the lease within one
//!   call timeout (under the node's 3 s grace) and returns.
//!
//! `etcd-client` needs tokio: the provider runs a current-thread tokio runtime on its own
//! thread, so a node on any runtime (async-std, smol, mio) can use it.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    WatchOptions, WatchStream,
};
use tokio::time::Instant;

use super::{Discovery, DiscoveryContext, StopKind};

/// The default lease TTL. See [`EtcdDiscovery::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// The default bound on connecting and on each call. See [`EtcdDiscovery::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The default first retry delay after a failure. See [`EtcdDiscovery::retry_backoff`].
pub const DEFAULT_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The default longest retry delay. See [`EtcdDiscovery::retry_backoff`].
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(2);

/// The etcd discovery provider. See the module docs for what it does.
///
/// ```no_run
/// # use herdcache_runtime::discovery::EtcdDiscovery;
/// # use core::time::Duration;
/// let provider = EtcdDiscovery::new(["127.0.0.1:2379"], "/herdcache/prod")
///     .lease_ttl(Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
pub struct EtcdDiscovery {
    endpoints: Vec<String>,
    prefix: String,
    lease_ttl: Duration,
    call_timeout: Duration,
    retry_first: Duration,
    retry_max: Duration,
}

impl EtcdDiscovery {
    /// A provider for the cluster under `prefix` (a trailing `/` is ignored; members are the
    /// keys `prefix/…`) on the etcd cluster at `endpoints` (`host:port` or `http://host:port`).
    pub fn new<I, S>(endpoints: I, prefix: impl Into<String>) -> EtcdDiscovery
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let prefix: String = prefix.into();
        EtcdDiscovery {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.trim_end_matches('/').to_string(),
            lease_ttl: DEFAULT_LEASE_TTL,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            retry_first: DEFAULT_RETRY_FIRST,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }

    /// The TTL of this node's lease (default 5 s; etcd counts whole seconds, so it is rounded
    /// up, at least 1 s, and etcd itself raises it to its minimum, about 2 s by default). A
    /// node killed without a word leaves the others' lists at most this long after its last
    /// keep-alive. The keep-alive runs every third of it, so one lost or late keep-alive does
    /// not expire the lease. 5 s: short enough that a dead node's registration goes soon
    /// (liveness in the core takes it off the ring sooner still, within ~3 s), long enough
    /// to ride out an etcd leader election (1 s by default) and a stalled process.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> EtcdDiscovery {
        self.lease_ttl = ttl;
        self
    }

    /// The bound on connecting to etcd and on each call (default 2 s), which is also how long
    /// a keep-alive may go unanswered before etcd counts as unreachable. Keep it below the
    /// node's 3 s graceful-leave grace, so that the lease is revoked within it.
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> EtcdDiscovery {
        self.call_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The delays between attempts while etcd is unreachable: `first`, doubling up to `max`
    /// (default 100 ms to 2 s); back to `first` once etcd answers.
    #[must_use]
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> EtcdDiscovery {
        self.retry_first = first.max(Duration::from_millis(1));
        self.retry_max = max.max(self.retry_first);
        self
    }

    /// The lease TTL in etcd's whole seconds, rounded up.
    fn ttl_seconds(&self) -> i64 {
        let seconds = self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0);
        i64::try_from(seconds.max(1)).unwrap_or(i64::MAX)
    }

    fn keep_alive_interval(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.ttl_seconds()).unwrap_or(u64::MAX)) / 3
    }

    /// `PREFIX/`, the range every member's key is in.
    fn range(&self) -> String {
        format!("{}/", self.prefix)
    }
}

impl Discovery for EtcdDiscovery {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn run(self: Box<Self>, context: DiscoveryContext) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match runtime {
            Ok(runtime) => runtime.block_on(Driver::new(*self, &context).run()),
            Err(error) => {
                context
                    .unhealthy(format!("etcd discovery cannot start its tokio runtime: {error}"));
                while context.wait_stop(Duration::from_secs(3600)).is_none() {}
            }
        }
    }
}

/// Why the provider gave up on its current connection (it then retries after a backoff).
#[derive(Debug)]
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<etcd_client::Error> for Failure {
    fn from(error: etcd_client::Error) -> Failure {
        Failure(error.to_string())
    }
}

/// How following the watch ended, short of a stop and a failure.
enum FollowEnd {
    /// The watch's start revision was compacted: list again.
    Compacted,
    /// The lease is gone: grant a new one and register again.
    LeaseLost,
}

/// The lease is gone (etcd answered a keep-alive with TTL 0).
struct LeaseLost;

/// The provider's state across connections.
struct Driver<'a> {
    config: EtcdDiscovery,
    context: &'a DiscoveryContext,
    /// The key this node registers, `PREFIX/<node id>`.
    own_key: Vec<u8>,
    /// The last connection, kept for the revoke of a graceful stop.
    client: Option<Client>,
    /// This node's lease, once granted (it may have expired since).
    lease: Option<i64>,
    /// The members as last seen: key → node id.
    view: BTreeMap<Vec<u8>, String>,
    /// The revision `view` is current at; `None`: list before watching.
    revision: Option<i64>,
    /// The delay before the next attempt.
    backoff: Duration,
}

impl<'a> Driver<'a> {
    fn new(config: EtcdDiscovery, context: &'a DiscoveryContext) -> Driver<'a> {
        let own_key = format!("{}{}", config.range(), context.node_id()).into_bytes();
        let backoff = config.retry_first;
        Driver {
            config,
            context,
            own_key,
            client: None,
            lease: None,
            view: BTreeMap::new(),
            revision: None,
            backoff,
        }
    }

    async fn run(mut self) {
        let context = self.context;
        let stop = loop {
            let failure = tokio::select! {
                biased;
                kind = context.stopped() => break kind,
                failure = self.connected() => failure,
            };
            let endpoints = self.config.endpoints.join(",");
            context.unhealthy(format!("etcd {endpoints}: {failure}"));
            tokio::select! {
                biased;
                kind = context.stopped() => break kind,
                () = tokio::time::sleep(self.backoff) => {}
            }
            self.backoff = (self.backoff * 2).min(self.config.retry_max);
        };
        if stop == StopKind::Leave {
            self.withdraw().await;
        }
    }

    /// Revokes the lease (etcd deletes the key with it), bounded by one call timeout.
    async fn withdraw(&mut self) {
        let Some(lease) = self.lease else { return };
        let client = self.client.take();
        let revoked = async {
            let mut client = match client {
                Some(client) => client,
                None => self.connect().await?,
            };
            client.lease_revoke(lease).await.map_err(Failure::from)
        };
        match tokio::time::timeout(self.config.call_timeout, revoked).await {
            Ok(Ok(_)) => tracing::info!(node = %self.context.node_id(), "etcd: lease revoked"),
            Ok(Err(error)) => {
                tracing::warn!(node = %self.context.node_id(), %error, "etcd: revoke failed");
            }
            Err(_) => tracing::warn!(node = %self.context.node_id(), "etcd: revoke timed out"),
        }
    }

    /// `call` bounded by the call timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.config.call_timeout, call).await {
            Ok(result) => result.map_err(|error| Failure(format!("{what}: {error}"))),
            Err(_) => Failure::timed_out(what, self.config.call_timeout),
        }
    }

    async fn connect(&self) -> Result<Client, Failure> {
        let options = ConnectOptions::new().with_connect_timeout(self.config.call_timeout);
        self.bounded("connect", Client::connect(&self.config.endpoints, Some(options))).await
    }

    /// One connection: register, list (or resume), watch, keep the lease alive; returns only
    /// on a failure (the caller backs off and comes back).
    async fn connected(&mut self) -> Failure {
        match self.serve().await {
            Ok(never) => match never {},
            Err(failure) => failure,
        }
    }

    async fn serve(&mut self) -> Result<core::convert::Infallible, Failure> {
        let client = self.connect().await?;
        self.client = Some(client.clone());
        loop {
            let (keeper, keep_alive) = self.register(&client).await?;
            let LeaseLost = self.list_and_watch(&client, keeper, keep_alive).await?;
            tracing::info!(node = %self.context.node_id(), "etcd: lease lost, registering again");
            self.lease = None;
        }
    }

    /// Keeps the lease this node holds alive, or grants a new one when it has none or etcd
    /// lost it; then puts this node's key under it.
    async fn register(
        &mut self,
        client: &Client,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), Failure> {
        let mut client = client.clone();
        let mut kept = None;
        if let Some(lease) = self.lease {
            let keep =
                tokio::time::timeout(self.config.call_timeout, client.lease_keep_alive(lease));
            match keep.await {
                Ok(Ok(pair)) => kept = Some(pair),
                // etcd-client's answer when etcd says TTL 0: the lease expired or was revoked.
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(error)))
                    if error.contains("not found") =>
                {
                    self.lease = None;
                }
                Ok(Err(error)) => return Err(Failure(format!("keep-alive: {error}"))),
                Err(_) => return Failure::timed_out("keep-alive", self.config.call_timeout),
            }
        }
        let (keeper, keep_alive) = match kept {
            Some(pair) => pair,
            None => {
                let ttl = self.config.ttl_seconds();
                let granted = self.bounded("lease grant", client.lease_grant(ttl, None)).await?;
                self.lease = Some(granted.id());
                tracing::info!(node = %self.context.node_id(), lease = granted.id(), ttl = granted.ttl(), "etcd: lease granted");
                self.bounded("keep-alive", client.lease_keep_alive(granted.id())).await?
            }
        };
        self.put_own_key(&mut client, keeper.id()).await?;
        Ok((keeper, keep_alive))
    }

    async fn put_own_key(&self, client: &mut Client, lease: i64) -> Result<(), Failure> {
        let put = client.put(
            self.own_key.clone(),
            self.context.node_id(),
            Some(PutOptions::new().with_lease(lease)),
        );
        self.bounded("put", put).await.map(drop)
    }

    /// Lists when needed, then watches from the view's revision + 1 and follows; lists again
    /// after a compaction. Returns when the lease is lost.
    async fn list_and_watch(
        &mut self,
        client: &Client,
        mut keeper: LeaseKeeper,
        mut keep_alive: LeaseKeepAliveStream,
    ) -> Result<LeaseLost, Failure> {
        let mut client = client.clone();
        loop {
            // Resuming a watch that broke needs no list: the view is as current as before.
            let revision = match self.revision {
                Some(revision) => revision,
                None => self.list(&mut client).await?,
            };
            let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
            let watch = self.bounded("watch", client.watch(self.config.range(), Some(options)));
            let mut watch = watch.await?;
            self.context.healthy();
            self.backoff = self.config.retry_first;
            match self.follow(&mut client, &mut watch, &mut keeper, &mut keep_alive).await? {
                FollowEnd::Compacted => {
                    tracing::info!(node = %self.context.node_id(), revision, "etcd: watch revision compacted, listing again");
                    self.revision = None;
                }
                FollowEnd::LeaseLost => return Ok(LeaseLost),
            }
        }
    }

    /// Lists `PREFIX/`, reports the members, and returns the list's revision.
    async fn list(&mut self, client: &mut Client) -> Result<i64, Failure> {
        let listed = client.get(self.config.range(), Some(GetOptions::new().with_prefix()));
        let listed = self.bounded("list", listed).await?;
        let revision = listed
            .header()
            .map(etcd_client::ResponseHeader::revision)
            .ok_or_else(|| Failure("list: the answer has no header".into()))?;
        self.view = listed
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key().to_vec(), member_id(kv.value())?)))
            .collect();
        self.revision = Some(revision);
        self.report();
        Ok(revision)
    }

    fn report(&self) {
        self.context.set_members(self.view.values().cloned());
    }

    /// Follows the watch and keeps the lease alive until the watch is compacted away, the
    /// lease is lost, or something fails.
    async fn follow(
        &mut self,
        client: &mut Client,
        watch: &mut WatchStream,
        keeper: &mut LeaseKeeper,
        keep_alive: &mut LeaseKeepAliveStream,
    ) -> Result<FollowEnd, Failure> {
        let interval = self.config.keep_alive_interval();
        let mut next_keep_alive = Instant::now() + interval;
        // When the keep-alive sent last must have been answered by.
        let mut answer_due: Option<Instant> = None;
        loop {
            let wake = answer_due.map_or(next_keep_alive, |due| due.min(next_keep_alive));
            tokio::select! {
                message = watch.message() => {
                    let Some(response) = message? else {
                        return Err(Failure("the watch stream ended".into()));
                    };
                    if response.canceled() {
                        if response.compact_revision() > 0 {
                            return Ok(FollowEnd::Compacted);
                        }
                        return Err(Failure(format!("watch canceled: {}", response.cancel_reason())));
                    }
                    if self.apply(response.events()) {
                        // Someone deleted this node's key while its lease lives: put it back.
                        // (When the lease expired, the put fails and the next attempt grants
                        // a new one.)
                        self.put_own_key(client, keeper.id()).await?;
                    }
                }
                answer = keep_alive.message() => match answer? {
                    Some(answer) if answer.ttl() > 0 => answer_due = None,
                    Some(_) => return Ok(FollowEnd::LeaseLost),
                    None => return Err(Failure("the keep-alive stream ended".into())),
                },
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if answer_due.is_some_and(|due| now >= due) {
                        return Failure::timed_out("keep-alive", self.config.call_timeout);
                    }
                    if now >= next_keep_alive {
                        self.bounded("keep-alive", keeper.keep_alive()).await?;
                        next_keep_alive = now + interval;
                        answer_due.get_or_insert(now + self.config.call_timeout);
                    }
                }
            }
        }
    }

    /// Applies watch events to the view and reports the new list; returns whether this
    /// node's own key was deleted.
    fn apply(&mut self, events: &[etcd_client::Event]) -> bool {
        if events.is_empty() {
            return false; // the watch's creation, or a progress note
        }
        let mut own_key_deleted = false;
        for kv in events.iter().filter_map(etcd_client::Event::kv) {
            self.revision = self.revision.max(Some(kv.mod_revision()));
            // A deleted key comes with version 0 (a put's is at least 1); reading the version
            // rather than `Event::event_type`, which panics on a type it does not know.
            let member = if kv.version() == 0 { None } else { member_id(kv.value()) };
            match member {
                Some(id) => {
                    self.view.insert(kv.key().to_vec(), id);
                }
                None => {
                    self.view.remove(kv.key());
                    own_key_deleted |= kv.key() == self.own_key.as_slice();
                }
            }
        }
        self.report();
        own_key_deleted
    }
}

impl Failure {
    fn timed_out<T>(what: &str, after: Duration) -> Result<T, Failure> {
        Err(Failure(format!("{what}: no answer within {after:?}")))
    }
}

/// The node id a member's value holds: non-empty UTF-8, else not a member.
fn member_id(value: &[u8]) -> Option<String> {
    match core::str::from_utf8(value) {
        Ok(id) if !id.is_empty() => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_to_what_etcd_takes() {
        let provider = EtcdDiscovery::new(["127.0.0.1:2379"], "/herdcache/test/");
        assert_eq!(provider.range(), "/herdcache/test/");
        assert_eq!(provider.ttl_seconds(), 5);
        assert_eq!(provider.keep_alive_interval(), Duration::from_secs(5) / 3);
        let provider = provider.lease_ttl(Duration::from_millis(1500));
        assert_eq!(provider.ttl_seconds(), 2);
        assert_eq!(provider.lease_ttl(Duration::ZERO).ttl_seconds(), 1);
    }

    #[test]
    fn only_non_empty_utf8_values_are_members() {
        assert_eq!(member_id(b"127.0.0.1:7001").as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(member_id(b""), None);
        assert_eq!(member_id(&[0xff, 0xfe]), None);
    }
}
