//! The one-line form of a discovery provider, as `herdcache node --discovery` takes it:
//! `static:A,B` | `dns:NAME:PORT` | `srv:_service._proto.NAME` | `etcd://HOST:PORT[,HOST:PORT]/PREFIX`
//! | `survey://HOST:PORT?publish=HOST:PORT` | `nats://HOST:PORT/SUBJECT`.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use super::{Discovery, StaticList};

/// A parsed `--discovery` value. See the module docs for the forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoverySpec {
    /// `static:A,B`: a fixed list of advertised addresses.
    Static(Vec<String>),
    /// `dns:NAME:PORT`: the A/AAAA records of `NAME`, each at `PORT` (a Kubernetes headless
    /// service).
    Dns {
        /// The name to resolve.
        name: String,
        /// The port every member listens on.
        port: u16,
    },
    /// `srv:_service._proto.NAME`: the SRV records of the name (target and port of each).
    Srv {
        /// The SRV name, `_service._proto.NAME`.
        name: String,
    },
    /// `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`: register under `PREFIX/<node id>`, list and
    /// watch `PREFIX/`.
    Etcd {
        /// The etcd endpoints (`host:port`).
        endpoints: Vec<String>,
        /// The key prefix of this cluster (without a trailing `/`).
        prefix: String,
    },
    /// `survey://HOST:PORT?publish=HOST:PORT`: answer the surveys of a gopherdiscovery
    /// server's SURVEYOR socket at the first address, follow the list its PUB socket at the
    /// second publishes.
    Survey {
        /// The SURVEYOR address (`host:port`).
        survey: String,
        /// The PUB address (`host:port`).
        publish: String,
    },
    /// `nats://HOST:PORT/SUBJECT`: announce on `SUBJECT` through the NATS server, answer
    /// and send membership queries on `SUBJECT.members`.
    Nats {
        /// The NATS server (`host:port`).
        server: String,
        /// The announcement subject.
        subject: String,
    },
}

/// Why a `--discovery` value was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoverySpecError {
    /// It names no provider this parser knows.
    UnknownKind(String),
    /// The provider is known but the value is malformed; the text says what is expected.
    Malformed {
        /// The provider kind.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The provider needs a feature of herdcache-runtime this build lacks.
    NotBuilt(&'static str),
}

impl fmt::Display for DiscoverySpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoverySpecError::UnknownKind(value) => write!(
                f,
                "unknown discovery {value:?}: expected static:A,B | dns:NAME:PORT | \
                 srv:_service._proto.NAME | etcd://HOST:PORT/PREFIX | \
                 survey://HOST:PORT?publish=HOST:PORT | nats://HOST:PORT/SUBJECT"
            ),
            DiscoverySpecError::Malformed { kind, reason } => {
                write!(f, "discovery {kind}: {reason}")
            }
            DiscoverySpecError::NotBuilt(feature) => write!(
                f,
                "discovery {feature}: this build of herdcache-runtime lacks the `{feature}` feature"
            ),
        }
    }
}

impl std::error::Error for DiscoverySpecError {}

fn malformed(kind: &'static str, reason: impl Into<String>) -> DiscoverySpecError {
    DiscoverySpecError::Malformed { kind, reason: reason.into() }
}

/// `host:port` with a non-empty host and a port in range (a bracketed IPv6 host is allowed).
fn check_host_port(kind: &'static str, value: &str) -> Result<(), DiscoverySpecError> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| malformed(kind, alloc::format!("{value:?} is not HOST:PORT")))?;
    if host.is_empty() || host.contains('/') {
        return Err(malformed(kind, alloc::format!("{value:?} has no host")));
    }
    port.parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .map(|_| ())
        .ok_or_else(|| malformed(kind, alloc::format!("{value:?}: the port must be 1..=65535")))
}

impl FromStr for DiscoverySpec {
    type Err = DiscoverySpecError;

    fn from_str(value: &str) -> Result<DiscoverySpec, DiscoverySpecError> {
        if let Some(list) = value.strip_prefix("static:") {
            let members: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            if members.is_empty() {
                return Err(malformed("static", "the list is empty (static:HOST:PORT,HOST:PORT)"));
            }
            return Ok(DiscoverySpec::Static(members));
        }
        if let Some(rest) = value.strip_prefix("dns:") {
            let (name, port) =
                rest.rsplit_once(':').ok_or_else(|| malformed("dns", "expected dns:NAME:PORT"))?;
            let port = port.parse::<u16>().ok().filter(|port| *port != 0).ok_or_else(|| {
                malformed("dns", alloc::format!("{port:?} is not a port 1..=65535"))
            })?;
            if name.is_empty() {
                return Err(malformed("dns", "the name is empty (dns:NAME:PORT)"));
            }
            return Ok(DiscoverySpec::Dns { name: name.to_string(), port });
        }
        if let Some(name) = value.strip_prefix("srv:") {
            let mut labels = name.split('.');
            let well_formed = labels.next().is_some_and(|l| l.len() > 1 && l.starts_with('_'))
                && labels.next().is_some_and(|l| l.len() > 1 && l.starts_with('_'))
                && labels.next().is_some_and(|l| !l.is_empty());
            if !well_formed {
                return Err(malformed("srv", "expected srv:_service._proto.NAME"));
            }
            return Ok(DiscoverySpec::Srv { name: name.to_string() });
        }
        if let Some(rest) = value.strip_prefix("etcd://") {
            let (hosts, prefix) = rest
                .split_once('/')
                .ok_or_else(|| malformed("etcd", "expected etcd://HOST:PORT/PREFIX"))?;
            let prefix = prefix.trim_end_matches('/');
            if prefix.is_empty() {
                return Err(malformed("etcd", "the prefix is empty (etcd://HOST:PORT/PREFIX)"));
            }
            let endpoints: Vec<String> = hosts.split(',').map(String::from).collect();
            for endpoint in &endpoints {
                check_host_port("etcd", endpoint)?;
            }
            return Ok(DiscoverySpec::Etcd { endpoints, prefix: alloc::format!("/{prefix}") });
        }
        if let Some(rest) = value.strip_prefix("survey://") {
            let expected = "expected survey://HOST:PORT?publish=HOST:PORT";
            let (survey, query) =
                rest.split_once('?').ok_or_else(|| malformed("survey", expected))?;
            let publish = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("publish="))
                .ok_or_else(|| malformed("survey", expected))?;
            check_host_port("survey", survey)?;
            check_host_port("survey", publish)?;
            return Ok(DiscoverySpec::Survey {
                survey: survey.to_string(),
                publish: publish.to_string(),
            });
        }
        if let Some(rest) = value.strip_prefix("nats://") {
            let (server, subject) = rest
                .split_once('/')
                .ok_or_else(|| malformed("nats", "expected nats://HOST:PORT/SUBJECT"))?;
            check_host_port("nats", server)?;
            // A subject is dot-separated tokens without spaces or wildcards.
            let valid = !subject.is_empty()
                && subject.split('.').all(|token| {
                    !token.is_empty()
                        && !token.contains(['*', '>'])
                        && !token.chars().any(char::is_whitespace)
                });
            if !valid {
                return Err(malformed(
                    "nats",
                    alloc::format!(
                        "{subject:?} is not a NATS subject (tokens split by `.`, no wildcards or spaces)"
                    ),
                ));
            }
            return Ok(DiscoverySpec::Nats {
                server: server.to_string(),
                subject: subject.to_string(),
            });
        }
        Err(DiscoverySpecError::UnknownKind(value.to_string()))
    }
}

/// Settings a `--discovery` value does not carry, for the providers that use them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// The DNS server the `dns` and `srv` providers ask (`ip:port`); the system's resolver
    /// configuration when `None`.
    pub dns_server: Option<core::net::SocketAddr>,
}

impl DiscoverySpec {
    /// The provider this value names, with default options.
    ///
    /// # Errors
    /// [`DiscoverySpecError::NotBuilt`] when its feature is off in this build.
    pub fn provider(&self) -> Result<Box<dyn Discovery>, DiscoverySpecError> {
        self.provider_with(&DiscoveryOptions::default())
    }

    /// The provider this value names, with `options`.
    ///
    /// # Errors
    /// [`DiscoverySpecError::NotBuilt`] when its feature is off in this build.
    pub fn provider_with(
        &self,
        options: &DiscoveryOptions,
    ) -> Result<Box<dyn Discovery>, DiscoverySpecError> {
        let _ = options;
        match self {
            DiscoverySpec::Static(members) => Ok(Box::new(StaticList::new(members.clone()))),
            #[cfg(feature = "dns")]
            DiscoverySpec::Dns { name, port } => {
                Ok(Box::new(with_dns_options(super::DnsDiscovery::a(name, *port), options)))
            }
            #[cfg(feature = "dns")]
            DiscoverySpec::Srv { name } => {
                Ok(Box::new(with_dns_options(super::DnsDiscovery::srv(name), options)))
            }
            #[cfg(not(feature = "dns"))]
            DiscoverySpec::Dns { .. } | DiscoverySpec::Srv { .. } => {
                Err(DiscoverySpecError::NotBuilt("dns"))
            }
            #[cfg(feature = "etcd")]
            DiscoverySpec::Etcd { endpoints, prefix } => {
                Ok(Box::new(super::EtcdDiscovery::new(endpoints.clone(), prefix.clone())))
            }
            #[cfg(not(feature = "etcd"))]
            DiscoverySpec::Etcd { .. } => Err(DiscoverySpecError::NotBuilt("etcd")),
            #[cfg(feature = "survey")]
            DiscoverySpec::Survey { survey, publish } => {
                Ok(Box::new(super::SurveyDiscovery::new(survey, publish)))
            }
            #[cfg(not(feature = "survey"))]
            DiscoverySpec::Survey { .. } => Err(DiscoverySpecError::NotBuilt("survey")),
            #[cfg(feature = "nats")]
            DiscoverySpec::Nats { server, subject } => {
                Ok(Box::new(super::NatsDiscovery::new(server, subject)))
            }
            #[cfg(not(feature = "nats"))]
            DiscoverySpec::Nats { .. } => Err(DiscoverySpecError::NotBuilt("nats")),
        }
    }
}

#[cfg(feature = "dns")]
fn with_dns_options(
    provider: super::DnsDiscovery,
    options: &DiscoveryOptions,
) -> super::DnsDiscovery {
    match options.dns_server {
        Some(server) => provider.nameserver(server),
        None => provider,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        assert_eq!(
            "static:127.0.0.1:7001, 127.0.0.1:7002".parse(),
            Ok(DiscoverySpec::Static(vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()]))
        );
        assert_eq!(
            "dns:cache.default.svc.cluster.local:7001".parse(),
            Ok(DiscoverySpec::Dns { name: "cache.default.svc.cluster.local".into(), port: 7001 })
        );
        assert_eq!(
            "srv:_herdcache._tcp.example.test".parse(),
            Ok(DiscoverySpec::Srv { name: "_herdcache._tcp.example.test".into() })
        );
        assert_eq!(
            "etcd://127.0.0.1:2379,127.0.0.1:22379/herdcache/prod/".parse(),
            Ok(DiscoverySpec::Etcd {
                endpoints: vec!["127.0.0.1:2379".into(), "127.0.0.1:22379".into()],
                prefix: "/herdcache/prod".into(),
            })
        );
        assert_eq!(
            "survey://127.0.0.1:40007?publish=127.0.0.1:40008".parse(),
            Ok(DiscoverySpec::Survey {
                survey: "127.0.0.1:40007".into(),
                publish: "127.0.0.1:40008".into(),
            })
        );
    }

    #[cfg(feature = "survey")]
    #[test]
    fn a_survey_value_builds_the_survey_provider() {
        let spec: DiscoverySpec =
            "survey://127.0.0.1:40007?publish=127.0.0.1:40008".parse().expect("a spec");
        assert_eq!(spec.provider().expect("built with `survey`").kind(), "survey");
    }

    #[cfg(feature = "nats")]
    #[test]
    fn a_nats_value_builds_the_nats_provider() {
        let spec: DiscoverySpec = "nats://127.0.0.1:4222/herdcache.prod".parse().expect("a spec");
        assert_eq!(
            spec,
            DiscoverySpec::Nats {
                server: "127.0.0.1:4222".into(),
                subject: "herdcache.prod".into()
            }
        );
        assert_eq!(spec.provider().expect("built with `nats`").kind(), "nats");
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn an_etcd_value_builds_the_etcd_provider() {
        let spec: DiscoverySpec = "etcd://127.0.0.1:2379/herdcache".parse().expect("a spec");
        assert_eq!(spec.provider().expect("built with `etcd`").kind(), "etcd");
    }

    #[test]
    fn malformed_values_get_a_typed_error_that_says_what_is_expected() {
        for bad in [
            "static:",
            "dns:cache",
            "dns:cache:0",
            "dns::7001",
            "dns:cache:70000",
            "srv:herdcache.tcp.example",
            "srv:_herdcache._tcp",
            "etcd://127.0.0.1:2379",
            "etcd://127.0.0.1:2379/",
            "etcd://127.0.0.1/prefix",
            "etcd://:2379/prefix",
            "survey://127.0.0.1:40007",
            "survey://127.0.0.1:40007?pub=127.0.0.1:40008",
            "survey://127.0.0.1?publish=127.0.0.1:40008",
            "survey://127.0.0.1:40007?publish=127.0.0.1:0",
            "nats://127.0.0.1:4222",
            "nats://127.0.0.1:4222/",
            "nats://127.0.0.1/herdcache",
            "nats://127.0.0.1:4222/herd.*",
            "nats://127.0.0.1:4222/herd..cache",
            "nats://127.0.0.1:4222/herd cache",
        ] {
            let error = bad.parse::<DiscoverySpec>().unwrap_err();
            assert!(matches!(error, DiscoverySpecError::Malformed { .. }), "{bad}: {error:?}");
            assert!(!error.to_string().is_empty());
        }
        assert!(matches!(
            "consul://x".parse::<DiscoverySpec>(),
            Err(DiscoverySpecError::UnknownKind(_))
        ));
    }
}
