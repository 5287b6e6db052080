//! The DNS provider (feature `dns`): the members are what a name's A/AAAA records or SRV
//! records say, re-resolved at the records' TTL — how a Kubernetes headless service is
//! discovered.
//!
//! # What a member is called
//! Every node must name each member exactly as that member names itself (its `--advertise`,
//! [`Builder::advertise`](crate::Builder::advertise)): the id is the address peers dial and
//! the name the hello carries. So the rule of each mode is the rule for `--advertise`:
//!
//! - **A/AAAA** ([`DnsDiscovery::a`], `dns:NAME:PORT`): one member per address of `NAME`,
//!   `IP:PORT` (`10.0.0.7:7001`, an IPv6 address bracketed: `[fd00::7]:7001`). Both
//!   families are asked for. A node advertises its own address and the shared port
//!   (Kubernetes: the pod IP from the downward API).
//! - **SRV** ([`DnsDiscovery::srv`], `srv:_service._proto.NAME`): one member per SRV record,
//!   `TARGET:PORT`, the target host name as DNS gives it without its trailing dot
//!   (`cache-0.cache.prod.svc.cluster.local:7001`). A node advertises its own host name and
//!   port. Targets are not resolved to addresses here: one record is then exactly one member
//!   (a target with an A and an AAAA record would otherwise be two ids for one node), the id
//!   of a StatefulSet pod stays the same across restarts (its keys stay where they are), and
//!   the name is resolved when a peer dials it, by the node's runtime. Priority and weight
//!   are ignored: every target is a member (but `.`, "no such service", names none).
//!
//! # When it resolves
//! At start, then again when the answer's smallest TTL has passed, clamped to
//! [`ttl_bounds`](DnsDiscovery::ttl_bounds) (default 1 s to 30 s: a record with TTL 0 is not
//! asked for in a loop, a record with a TTL of hours still follows a scale-up within 30 s).
//! Every resolution asks the name server: the resolver's own cache is emptied before each
//! one (and bounded by the same maximum), so a list is never older than its TTL bound.
//! The hosts file is never consulted: the members are what DNS says.
//!
//! # When DNS gives no list
//! - **An empty answer or NXDOMAIN** keeps the last list: the node does not drop every peer
//!   because one answer was empty (a rolling update, a DNS server restarting with an empty
//!   zone, a headless service between its endpoints). The provider marks itself unhealthy
//!   (`"… has no records"`, see [`Handle::discovery`](crate::Handle::discovery)) and asks
//!   again with the backoff below. A cluster that really has no members has no node left to
//!   care; a node removed from DNS is dropped as soon as a non-empty answer lacks it.
//! - **No answer** (the server is down or unreachable, a timeout, a malformed reply) keeps
//!   the last list too, marks the provider unhealthy with the error, and retries with a
//!   backoff that starts at the TTL bounds' minimum and doubles up to their maximum; the
//!   first answer with records makes it healthy again and reports the list.
//!
//! Each query gives up after [`query_timeout`](DnsDiscovery::query_timeout) (default 2 s,
//! one attempt; the provider's own retry loop does the rest), so the provider never hangs on
//! a server that does not answer.
//!
//! # Name server
//! By default the system's (`/etc/resolv.conf` on Unix, its search domains and `ndots`
//! included; read again while it cannot be read). [`DnsDiscovery::nameserver`] names one
//! instead, asked over UDP and, for a truncated answer, TCP (`herdcache node --dns-server`).
//!
//! # Stopping
//! DNS holds no registration: on [`StopKind::Leave`](super::StopKind::Leave) and
//! [`StopKind::Abort`](super::StopKind::Abort) alike the provider returns at once, a query
//! in flight included (it is dropped). A node that leaves gracefully is dropped by the others
//! when DNS stops listing it (its endpoint removed) and, before that, by liveness.
//!
//! # Threads
//! hickory-resolver needs tokio, so the provider runs a current-thread tokio runtime on its
//! own thread (the node's runtime may be any: tokio, async-std, smol or mio).

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use super::{Discovery, DiscoveryContext};

/// The default bounds of the re-resolution interval (the records' TTL clamped to them).
pub const DEFAULT_TTL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(30));

/// The default time one query may take before it counts as unanswered.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Members from DNS: the A/AAAA records of a name at a fixed port, or the SRV records of a
/// service. See the module docs for the naming rule, the timing and the failure policy.
#[derive(Clone, Debug)]
pub struct DnsDiscovery {
    lookup: Lookup,
    nameserver: Option<SocketAddr>,
    ttl_bounds: (Duration, Duration),
    query_timeout: Duration,
}

/// What is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lookup {
    /// The A and AAAA records of `name`, each address at `port`.
    Addresses { name: String, port: u16 },
    /// The SRV records of `name`: `target:port` each.
    Srv { name: String },
}

impl DnsDiscovery {
    /// Members are `IP:PORT` for every A and AAAA record of `name` (`dns:NAME:PORT`).
    #[must_use]
    pub fn a(name: impl Into<String>, port: u16) -> DnsDiscovery {
        DnsDiscovery::new(Lookup::Addresses { name: name.into(), port })
    }

    /// Members are `TARGET:PORT` for every SRV record of `name`, `_service._proto.NAME`
    /// (`srv:_service._proto.NAME`); the target without its trailing dot.
    #[must_use]
    pub fn srv(name: impl Into<String>) -> DnsDiscovery {
        DnsDiscovery::new(Lookup::Srv { name: name.into() })
    }

    fn new(lookup: Lookup) -> DnsDiscovery {
        DnsDiscovery {
            lookup,
            nameserver: None,
            ttl_bounds: DEFAULT_TTL_BOUNDS,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }

    /// Asks this name server (UDP, and TCP for a truncated answer) instead of the system's.
    #[must_use]
    pub fn nameserver(mut self, address: SocketAddr) -> DnsDiscovery {
        self.nameserver = Some(address);
        self
    }

    /// Re-resolves at the records' smallest TTL clamped to `min..=max` (default 1 s..=30 s);
    /// also the bounds of the retry backoff. `min` is raised to 100 ms at least, `max` to
    /// `min` at least.
    #[must_use]
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> DnsDiscovery {
        let min = min.max(Duration::from_millis(100));
        self.ttl_bounds = (min, max.max(min));
        self
    }

    /// How long one query may take before it counts as unanswered (default 2 s; at least
    /// 100 ms).
    #[must_use]
    pub fn query_timeout(mut self, timeout: Duration) -> DnsDiscovery {
        self.query_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// The name this provider resolves.
    #[must_use]
    pub fn name(&self) -> &str {
        match &self.lookup {
            Lookup::Addresses { name, .. } | Lookup::Srv { name } => name,
        }
    }

    /// A resolver that asks the name server each time (its cache is emptied before each
    /// lookup and holds nothing past the maximum bound anyway).
    fn resolver(&self) -> Result<TokioResolver, NetError> {
        let mut builder = match self.nameserver {
            Some(address) => {
                let mut server = NameServerConfig::udp_and_tcp(address.ip());
                for connection in &mut server.connections {
                    connection.port = address.port();
                }
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(alloc::vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()?,
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = self.query_timeout;
        // hickory counts retries: none (the provider's own loop retries, with its backoff).
        options.attempts = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Never;
        options.positive_max_ttl = Some(self.ttl_bounds.1);
        options.negative_max_ttl = Some(self.ttl_bounds.0);
        builder.build()
    }

    /// One resolution: the members and the smallest TTL among their records.
    async fn resolve(&self, resolver: &TokioResolver) -> Result<Answer, ResolveError> {
        resolver.clear_cache();
        let result = match &self.lookup {
            Lookup::Addresses { name, port } => resolver.lookup_ip(name.as_str()).await.map(|ip| {
                let records = ip.as_lookup().answers();
                let ttl = records
                    .iter()
                    .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                    .map(|r| r.ttl)
                    .min();
                let members = ip.iter().map(|ip| socket_addr_id(ip, *port)).collect();
                Answer { members, ttl }
            }),
            Lookup::Srv { name } => resolver.srv_lookup(name.as_str()).await.map(|lookup| {
                let mut ttl = None::<u32>;
                let mut members = Vec::new();
                for record in lookup.answers() {
                    if let RData::SRV(srv) = &record.data {
                        ttl = Some(ttl.map_or(record.ttl, |ttl| ttl.min(record.ttl)));
                        let target = srv.target.to_ascii();
                        let target = target.trim_end_matches('.');
                        if !target.is_empty() {
                            members.push(alloc::format!("{target}:{}", srv.port));
                        }
                    }
                }
                Answer { members, ttl }
            }),
        };
        match result {
            Ok(answer) if answer.members.is_empty() => Err(ResolveError::NoRecords),
            Ok(answer) => Ok(answer),
            Err(error) if error.is_no_records_found() => Err(ResolveError::NoRecords),
            Err(error) => Err(ResolveError::Failed(error.to_string())),
        }
    }

    /// The provider's loop, on its thread's tokio runtime.
    async fn run_async(&self, context: &DiscoveryContext) {
        let (min, max) = self.ttl_bounds;
        let mut resolver = None;
        let mut backoff = min;
        loop {
            // A resolver is built (and the system configuration read) until one works.
            if resolver.is_none() {
                match self.resolver() {
                    Ok(built) => resolver = Some(built),
                    Err(error) => context.unhealthy(alloc::format!(
                        "dns {}: no resolver: {error}; keeping the last member list",
                        self.name()
                    )),
                }
            }
            let wait = match &resolver {
                None => next_backoff(&mut backoff, max),
                Some(resolver) => {
                    // hickory's own deadline is the query timeout (A and AAAA go in parallel);
                    // this one only guards against a lookup that overruns it.
                    let deadline = self.query_timeout + Duration::from_millis(500);
                    let outcome = futures_lite::future::or(
                        async {
                            Some(tokio::time::timeout(deadline, self.resolve(resolver)).await)
                        },
                        async {
                            let _ = context.stopped().await;
                            None
                        },
                    )
                    .await;
                    match outcome {
                        None => return,
                        Some(Ok(Ok(answer))) => {
                            context.set_members(answer.members);
                            backoff = min;
                            answer
                                .ttl
                                .map_or(min, |ttl| Duration::from_secs(ttl.into()))
                                .clamp(min, max)
                        }
                        Some(Ok(Err(error))) => {
                            context.unhealthy(alloc::format!(
                                "dns {}: {error}; keeping the last member list",
                                self.name()
                            ));
                            next_backoff(&mut backoff, max)
                        }
                        Some(Err(_elapsed)) => {
                            context.unhealthy(alloc::format!(
                                "dns {}: no answer within {deadline:?}; keeping the last member list",
                                self.name()
                            ));
                            next_backoff(&mut backoff, max)
                        }
                    }
                }
            };
            let stopped = futures_lite::future::or(
                async {
                    tokio::time::sleep(wait).await;
                    false
                },
                async {
                    let _ = context.stopped().await;
                    true
                },
            )
            .await;
            if stopped {
                return;
            }
        }
    }
}

/// The wait before the next attempt after a failure: the current backoff, which doubles up
/// to `max` for the one after.
fn next_backoff(backoff: &mut Duration, max: Duration) -> Duration {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(max);
    wait
}

/// `IP:PORT` as a node advertises it (IPv6 bracketed, no scope id).
fn socket_addr_id(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(ip) => SocketAddrV4::new(ip, port).to_string(),
        std::net::IpAddr::V6(ip) => SocketAddrV6::new(ip, port, 0, 0).to_string(),
    }
}

/// A resolution that gave members.
struct Answer {
    members: Vec<String>,
    /// The smallest TTL of the records read (`None`: none carried one).
    ttl: Option<u32>,
}

/// Why a resolution gave no members.
#[derive(Debug)]
enum ResolveError {
    /// The server answered: NXDOMAIN, or no record of the asked type.
    NoRecords,
    /// The server did not answer usably.
    Failed(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NoRecords => f.write_str("the name has no records (NXDOMAIN or empty)"),
            ResolveError::Failed(error) => write!(f, "lookup failed: {error}"),
        }
    }
}

impl Discovery for DnsDiscovery {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn run(self: Box<Self>, context: DiscoveryContext) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                // Without a runtime nothing can be asked: keep the list, say why, and wait.
                context.unhealthy(alloc::format!("dns {}: no tokio runtime: {error}", self.name()));
                while context.wait_stop(Duration::from_secs(3600)).is_none() {}
                return;
            }
        };
        runtime.block_on(self.run_async(&context));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_named_as_nodes_advertise_them() {
        assert_eq!(socket_addr_id("10.0.0.7".parse().expect("an address"), 7001), "10.0.0.7:7001");
        assert_eq!(socket_addr_id("fd00::7".parse().expect("an address"), 7001), "[fd00::7]:7001");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_bound() {
        let max = Duration::from_secs(5);
        let mut backoff = Duration::from_secs(1);
        let waits: Vec<u64> = (0..5).map(|_| next_backoff(&mut backoff, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn ttl_bounds_are_kept_sane() {
        let dns = DnsDiscovery::a("cache", 7001).ttl_bounds(Duration::ZERO, Duration::ZERO);
        assert_eq!(dns.ttl_bounds, (Duration::from_millis(100), Duration::from_millis(100)));
        let dns = DnsDiscovery::srv("_c._tcp.x")
            .ttl_bounds(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(dns.ttl_bounds, (Duration::from_secs(2), Duration::from_secs(2)));
        assert_eq!(dns.name(), "_c._tcp.x");
    }
}
