//! gopherdiscovery's survey protocol, spoken natively (feature `survey`): the node-side
//! provider ([`SurveyDiscovery`], `--discovery survey://HOST:PORT?publish=HOST:PORT`) and the
//! survey server ([`SurveyServer`], `herdcache discovery`).
//!
//! Both speak nanomsg's scalability protocols over TCP through the sans-IO codec in
//! [`herdcache_proto::sp`]; this module only moves bytes and reads the clock. They interoperate
//! with any SP implementation: gopherdiscovery's (mangos), nanomsg's (`nanocat`) and nng's.
//!
//! - The **server** listens on two addresses: a SURVEYOR socket that surveys every respondent
//!   every poll time and collects answers (member ids) until the survey time has passed, and a
//!   PUB socket that publishes the member list (ids joined by `|`) when a survey's answers
//!   differ from the last list. Unlike gopherdiscovery, a new subscriber is sent the current
//!   list at once. Bounded: respondents and subscribers (a cap each; a connection past it is
//!   closed at once), message sizes ([`SpLimits`](herdcache_proto::sp::SpLimits)), members
//!   per survey, and a stalled subscriber (a write that does not finish within the write
//!   timeout drops it).
//! - The **provider** dials the server's SURVEYOR address as a RESPONDENT and answers every
//!   survey with the node's id, and dials its PUB address as a SUB and reports every list it
//!   receives. Each connection reconnects with a backoff (100 ms doubling to 5 s); while
//!   either is down the provider is unhealthy and the node keeps the last list. gopherdiscovery
//!   has no leave: a node that stops is dropped by the first survey it misses.
//!
//! Both run on tokio: the server on the caller's runtime (it spawns a task per connection),
//! the provider on a current-thread runtime on its own thread (the node's may be any).

mod conn;
mod provider;
mod server;

pub use provider::SurveyDiscovery;
pub use server::{SurveyServer, SurveyServerConfig};
