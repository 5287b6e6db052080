//! The NATS provider (feature `nats`): members announce themselves on a subject, answer
//! membership queries, and announce their leave (the protocol of distcache's NATS provider).
//!
//! Contract, in addition to the [module's](super):
//! - **Announcements**: every [`announce_interval`](NatsDiscovery::announce_interval)
//!   (default 1 s) the node publishes `join <id>` on `SUBJECT`, so a restarted server or a
//!   late joiner learns it; a graceful stop ([`StopKind::Leave`]) publishes `leave <id>` and
//!   flushes it, bounded by [`call_timeout`](NatsDiscovery::call_timeout), so the others drop
//!   it at once.
//! - **Queries**: the node answers every request on `SUBJECT.members` with its id; on start
//!   and after each reconnection it sends such a request (with a reply inbox of its own) and
//!   adds every answer to its list.
//! - **Members** are the ids heard from (joins and answers) within the liveness window,
//!   [`LIVENESS_PERIODS`] announcement periods, plus this node's own id. A member killed
//!   without a word drops out of the list when the window passes (checked every quarter
//!   period; liveness in the core takes it off the ring sooner).
//! - **Bounded**: an id longer than [`MAX_ID`] bytes, not UTF-8, or a message that is not
//!   `join ID` / `leave ID` is ignored with a logged reason; each subscription buffers at most
//!   [`SUBSCRIPTION_CAPACITY`] messages (the client drops the excess and reports a slow
//!   consumer); at most [`MAX_MEMBERS`] ids are tracked.
//! - **Unreachable server**: the provider is unhealthy, keeps its last list (no id expires
//!   while disconnected), and the client reconnects on its own; once connected again the
//!   node announces itself, queries the members at once, and every id gets a fresh window.
//!
//! `async-nats` needs tokio: the provider runs a current-thread tokio runtime on its own
//! thread, so a node on any runtime can use it.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use core::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Message, Subscriber};
use futures_lite::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Discovery, DiscoveryContext, StopKind};

/// The default period of the join announcements. See [`NatsDiscovery::announce_interval`].
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// The default bound on connecting, a flush, and the leave. See [`NatsDiscovery::call_timeout`].
pub const DEFAULT_NATS_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How many announcement periods an id stays listed without being heard from.
pub const LIVENESS_PERIODS: u32 = 3;
/// The longest id accepted, in bytes.
pub const MAX_ID: usize = 255;
/// The most ids tracked at once; joins of further ids are ignored (with a log).
pub const MAX_MEMBERS: usize = 4096;
/// The most messages each subscription buffers.
pub const SUBSCRIPTION_CAPACITY: usize = 1024;

/// The NATS discovery provider. See the module docs for what it does.
///
/// ```no_run
/// # use herdcache_runtime::discovery::NatsDiscovery;
/// let provider = NatsDiscovery::new("127.0.0.1:4222", "herdcache.prod");
/// ```
#[derive(Clone, Debug)]
pub struct NatsDiscovery {
    server: String,
    subject: String,
    announce_interval: Duration,
    call_timeout: Duration,
}

impl NatsDiscovery {
    /// A provider for the cluster announcing on `subject` through the NATS server at `server`
    /// (`host:port` or `nats://host:port`).
    #[must_use]
    pub fn new(server: impl Into<String>, subject: impl Into<String>) -> NatsDiscovery {
        NatsDiscovery {
            server: server.into(),
            subject: subject.into(),
            announce_interval: DEFAULT_ANNOUNCE_INTERVAL,
            call_timeout: DEFAULT_NATS_CALL_TIMEOUT,
        }
    }

    /// The period of the join announcements (default 1 s); an id not heard from for
    /// [`LIVENESS_PERIODS`] periods leaves the list.
    #[must_use]
    pub fn announce_interval(mut self, interval: Duration) -> NatsDiscovery {
        self.announce_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The bound on connecting, on a flush, and on a graceful stop's leave (default 2 s; keep
    /// it below the node's 3 s graceful-leave grace).
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> NatsDiscovery {
        self.call_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    fn liveness_window(&self) -> Duration {
        self.announce_interval * LIVENESS_PERIODS
    }

    fn query_subject(&self) -> String {
        format!("{}.members", self.subject)
    }

    fn address(&self) -> String {
        if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("nats://{}", self.server)
        }
    }
}

impl Discovery for NatsDiscovery {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn run(self: Box<Self>, context: DiscoveryContext) {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(run(*self, &context)),
            Err(error) => {
                context
                    .unhealthy(format!("nats discovery cannot start its tokio runtime: {error}"));
                while context.wait_stop(Duration::from_secs(3600)).is_none() {}
            }
        }
    }
}

/// A message on the announcement subject.
#[derive(Debug, PartialEq, Eq)]
enum Announcement<'a> {
    Join(&'a str),
    Leave(&'a str),
}

/// Parses `join ID` / `leave ID`; the error says why the message is ignored.
fn parse_announcement(payload: &[u8]) -> Result<Announcement<'_>, String> {
    let text = core::str::from_utf8(payload).map_err(|_| "not UTF-8".to_string())?;
    let (verb, id) =
        text.split_once(' ').ok_or_else(|| "expected `join ID` or `leave ID`".to_string())?;
    check_id(id)?;
    match verb {
        "join" => Ok(Announcement::Join(id)),
        "leave" => Ok(Announcement::Leave(id)),
        _ => Err(format!("unknown verb {verb:?}")),
    }
}

/// An id as a query answer carries it.
fn parse_id(payload: &[u8]) -> Result<&str, String> {
    let id = core::str::from_utf8(payload).map_err(|_| "not UTF-8".to_string())?;
    check_id(id)?;
    Ok(id)
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty id".into());
    }
    if id.len() > MAX_ID {
        return Err(format!("id of {} bytes (at most {MAX_ID})", id.len()));
    }
    Ok(())
}

/// The ids heard from, each with when it was heard last.
struct View {
    heard: BTreeMap<String, Instant>,
}

impl View {
    fn hear(&mut self, id: &str, now: Instant) -> bool {
        if let Some(last) = self.heard.get_mut(id) {
            *last = now;
            return false;
        }
        if self.heard.len() >= MAX_MEMBERS {
            tracing::warn!(id, "nats discovery: member limit reached, ignoring a join");
            return false;
        }
        self.heard.insert(id.to_string(), now);
        true
    }

    fn expire(&mut self, now: Instant, window: Duration) -> bool {
        let before = self.heard.len();
        self.heard.retain(|_, last| now.saturating_duration_since(*last) <= window);
        self.heard.len() != before
    }

    /// Gives every id a fresh window (after an outage, during which nobody could be heard).
    fn refresh(&mut self, now: Instant) {
        self.heard.values_mut().for_each(|last| *last = now);
    }
}

/// What the client's event callback passes on.
enum Connection {
    Up,
    Down(String),
}

async fn run(config: NatsDiscovery, context: &DiscoveryContext) {
    let (events, mut connection) = mpsc::channel::<Connection>(16);
    let options = ConnectOptions::new()
        .name(format!("herdcache {}", context.node_id()))
        .connection_timeout(config.call_timeout)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let note = match event {
                    Event::Connected => Connection::Up,
                    Event::Disconnected => Connection::Down("disconnected".into()),
                    Event::Closed => Connection::Down("connection closed".into()),
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(
                            sid,
                            "nats discovery: a subscription overflowed, messages dropped"
                        );
                        return;
                    }
                    other => {
                        tracing::info!(event = %other, "nats discovery: client event");
                        return;
                    }
                };
                // A full channel only loses a duplicate of a state change already queued.
                let _ = events.try_send(note);
            }
        });
    context.unhealthy(format!("nats {}: connecting", config.server));
    let connect = options.connect(config.address());
    let client = tokio::select! {
        biased;
        _ = context.stopped() => return,
        client = connect => match client {
            Ok(client) => client,
            Err(error) => {
                context.unhealthy(format!("nats {}: {error}", config.server));
                let _ = context.stopped().await;
                return;
            }
        },
    };
    let subscriptions = async {
        let announcements = client.subscribe(config.subject.clone()).await?;
        let queries = client.subscribe(config.query_subject()).await?;
        let inbox = client.new_inbox();
        let answers = client.subscribe(inbox.clone()).await?;
        Ok::<_, async_nats::SubscribeError>((announcements, queries, answers, inbox))
    };
    let (announcements, queries, answers, inbox) = tokio::select! {
        biased;
        _ = context.stopped() => return,
        subscribed = subscriptions => match subscribed {
            Ok(subscribed) => subscribed,
            Err(error) => {
                context.unhealthy(format!("nats {}: subscribe: {error}", config.server));
                let _ = context.stopped().await;
                return;
            }
        },
    };
    let mut member = Member {
        config: &config,
        context,
        client: &client,
        inbox,
        view: View { heard: BTreeMap::new() },
        connected: false,
    };
    let stop = member.serve(&mut connection, announcements, queries, answers).await;
    if stop == StopKind::Leave {
        member.leave().await;
    }
}

/// The provider's state once the client is set up.
struct Member<'a> {
    config: &'a NatsDiscovery,
    context: &'a DiscoveryContext,
    client: &'a Client,
    /// Where answers to this node's queries come.
    inbox: String,
    view: View,
    connected: bool,
}

impl Member<'_> {
    async fn serve(
        &mut self,
        connection: &mut mpsc::Receiver<Connection>,
        mut announcements: Subscriber,
        mut queries: Subscriber,
        mut answers: Subscriber,
    ) -> StopKind {
        let context = self.context;
        let mut tick = tokio::time::interval(self.config.announce_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(self.config.announce_interval / 4);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The client may have connected before the callback's first event was read.
        if self.client.connection_state() == async_nats::connection::State::Connected {
            self.on_connected().await;
        }
        loop {
            tokio::select! {
                biased;
                kind = context.stopped() => return kind,
                Some(note) = connection.recv() => match note {
                    Connection::Up => self.on_connected().await,
                    Connection::Down(why) => {
                        self.connected = false;
                        context.unhealthy(format!("nats {}: {why}; keeping the last member list", self.config.server));
                    }
                },
                Some(message) = announcements.next() => self.on_announcement(&message),
                Some(message) = queries.next() => self.on_query(&message).await,
                Some(message) = answers.next() => match parse_id(&message.payload) {
                    Ok(id) => {
                        if self.view.hear(id, Instant::now()) {
                            self.report();
                        }
                    }
                    Err(why) => tracing::warn!(%why, "nats discovery: ignoring a query answer"),
                },
                _ = tick.tick() => {
                    if self.connected {
                        self.announce().await;
                    }
                }
                // Expiry runs more often than announcements, so an id leaves the list at most
                // a quarter period after its window.
                _ = sweep.tick() => {
                    if self.connected && self.view.expire(Instant::now(), self.config.liveness_window()) {
                        self.report();
                    }
                }
            }
        }
    }

    async fn on_connected(&mut self) {
        if !self.connected {
            tracing::info!(node = %self.context.node_id(), server = %self.config.server, "nats discovery: connected");
        }
        self.connected = true;
        self.view.refresh(Instant::now());
        self.context.healthy();
        self.announce().await;
        let query = self.client.publish_with_reply(
            self.config.query_subject(),
            self.inbox.clone(),
            bytes::Bytes::new(),
        );
        if let Err(error) = query.await {
            tracing::warn!(%error, "nats discovery: the members query failed");
        }
        self.report();
    }

    fn on_announcement(&mut self, message: &Message) {
        match parse_announcement(&message.payload) {
            Ok(Announcement::Join(id)) => {
                if self.view.hear(id, Instant::now()) {
                    self.report();
                }
            }
            Ok(Announcement::Leave(id)) => {
                if id != self.context.node_id() && self.view.heard.remove(id).is_some() {
                    self.report();
                }
            }
            Err(why) => tracing::warn!(%why, "nats discovery: ignoring an announcement"),
        }
    }

    async fn on_query(&self, message: &Message) {
        let Some(reply) = message.reply.clone() else { return };
        let id = bytes::Bytes::copy_from_slice(self.context.node_id().as_bytes());
        if let Err(error) = self.client.publish(reply, id).await {
            tracing::warn!(%error, "nats discovery: answering a members query failed");
        }
    }

    async fn announce(&self) {
        let join = format!("join {}", self.context.node_id());
        if let Err(error) = self.client.publish(self.config.subject.clone(), join.into()).await {
            tracing::warn!(%error, "nats discovery: the join announcement failed");
        }
    }

    /// Publishes the leave and flushes it, bounded by the call timeout.
    async fn leave(&self) {
        let leave = format!("leave {}", self.context.node_id());
        let sent = async {
            self.client
                .publish(self.config.subject.clone(), leave.into())
                .await
                .map_err(|e| e.to_string())?;
            self.client.flush().await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.config.call_timeout, sent).await {
            Ok(Ok(())) => {
                tracing::info!(node = %self.context.node_id(), "nats discovery: leave announced")
            }
            Ok(Err(error)) => {
                tracing::warn!(node = %self.context.node_id(), %error, "nats discovery: the leave failed")
            }
            Err(_) => {
                tracing::warn!(node = %self.context.node_id(), "nats discovery: the leave timed out")
            }
        }
    }

    fn report(&self) {
        let own = self.context.node_id();
        let members = self.view.heard.keys().map(String::as_str).chain([own]);
        self.context.set_members(members.map(String::from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_announcement(b"join 127.0.0.1:7001"),
            Ok(Announcement::Join("127.0.0.1:7001"))
        );
        assert_eq!(parse_announcement(b"leave a b"), Ok(Announcement::Leave("a b")));
        assert!(parse_announcement(b"join ").is_err());
        assert!(parse_announcement(b"hello x").is_err());
        assert!(parse_announcement(b"join").is_err());
        assert!(parse_announcement(&[b'j', b'o', b'i', b'n', b' ', 0xff]).is_err());
        let long = format!("join {}", "x".repeat(MAX_ID + 1));
        assert!(parse_announcement(long.as_bytes()).is_err());
        let longest = format!("join {}", "x".repeat(MAX_ID));
        assert!(parse_announcement(longest.as_bytes()).is_ok());
        assert_eq!(parse_id(b"n1"), Ok("n1"));
        assert!(parse_id(b"").is_err());
    }

    #[test]
    fn ids_expire_after_the_window_and_an_outage_refreshes_them() {
        let start = Instant::now();
        let mut view = View { heard: BTreeMap::new() };
        assert!(view.hear("a", start));
        assert!(!view.hear("a", start));
        assert!(view.hear("b", start + Duration::from_secs(2)));
        assert!(!view.expire(start + Duration::from_secs(3), Duration::from_secs(3)));
        assert!(view.expire(start + Duration::from_secs(4), Duration::from_secs(3)));
        assert_eq!(view.heard.keys().collect::<alloc::vec::Vec<_>>(), ["b"]);
        view.refresh(start + Duration::from_secs(10));
        assert!(!view.expire(start + Duration::from_secs(12), Duration::from_secs(3)));
    }
}
