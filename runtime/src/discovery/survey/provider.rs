//! The node-side provider: a RESPONDENT answering surveys with the node's id and a SUB
//! following the published member list.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::time::Duration;
use std::io;

use herdcache_proto::sp::{Backtrace, SpLimits, SpProtocol, parse_member_list};
use tokio::net::TcpStream;

use super::conn::{SpConnection, protocol_error, strip_tcp_scheme};
use crate::discovery::{Discovery, DiscoveryContext};

/// The first wait before a reconnection; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between reconnections.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a dial and its handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer's write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Members from a gopherdiscovery survey server (or `herdcache discovery`): answers each
/// survey with this node's id and follows the published list. See the module docs.
///
/// ```no_run
/// # use herdcache_runtime::discovery::SurveyDiscovery;
/// let provider = SurveyDiscovery::new("10.0.0.2:40007", "10.0.0.2:40008");
/// ```
#[derive(Clone, Debug)]
pub struct SurveyDiscovery {
    survey: String,
    publish: String,
    limits: SpLimits,
    max_members: usize,
    max_id: usize,
}

impl SurveyDiscovery {
    /// Dials `survey` (the server's SURVEYOR address) and `publish` (its PUB address), each
    /// `HOST:PORT` (a `tcp://` in front is accepted).
    #[must_use]
    pub fn new(survey: impl AsRef<str>, publish: impl AsRef<str>) -> SurveyDiscovery {
        SurveyDiscovery {
            survey: strip_tcp_scheme(survey.as_ref()),
            publish: strip_tcp_scheme(publish.as_ref()),
            limits: SpLimits::default(),
            max_members: 4096,
            max_id: 255,
        }
    }

    /// The largest message accepted (default 64 KiB): a longer list closes the connection.
    #[must_use]
    pub fn max_message(mut self, bytes: usize) -> SurveyDiscovery {
        self.limits = SpLimits { max_message: bytes };
        self
    }

    async fn connect(&self, address: &str, ours: SpProtocol) -> io::Result<SpConnection> {
        let dial = async {
            let stream = TcpStream::connect(address).await?;
            SpConnection::open(stream, ours, self.limits, CONNECT_TIMEOUT).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, dial).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    /// Answers surveys until the connection breaks.
    async fn answer_surveys(&self, context: &DiscoveryContext, up: &[Cell<bool>; 2]) -> io::Error {
        let mut connection = match self.connect(&self.survey, SpProtocol::RESPONDENT).await {
            Ok(connection) => connection,
            Err(error) => return error,
        };
        connected(context, up, 0);
        let id = context.node_id().as_bytes();
        let mut answer = Vec::new();
        loop {
            let survey = match connection.recv().await {
                Ok(survey) => survey,
                Err(error) => return error,
            };
            let backtrace = match Backtrace::split_survey(&survey) {
                Ok((backtrace, _body)) => backtrace,
                Err(error) => return protocol_error(error),
            };
            answer.clear();
            if let Err(error) = backtrace.encode_answer(id, &self.limits, &mut answer) {
                return protocol_error(error);
            }
            if let Err(error) = connection.send(&answer, WRITE_TIMEOUT).await {
                return error;
            }
        }
    }

    /// Reports every published list until the connection breaks.
    async fn follow_list(&self, context: &DiscoveryContext, up: &[Cell<bool>; 2]) -> io::Error {
        let mut connection = match self.connect(&self.publish, SpProtocol::SUB).await {
            Ok(connection) => connection,
            Err(error) => return error,
        };
        connected(context, up, 1);
        loop {
            let message = match connection.recv().await {
                Ok(message) => message,
                Err(error) => return error,
            };
            match parse_member_list(&message, self.max_members, self.max_id) {
                Ok(members) => context.set_members(members),
                Err(error) => return protocol_error(error),
            }
        }
    }

    /// One connection's loop: run `session` again and again with a backoff between.
    async fn keep_up<'a, F, Fut>(
        &'a self,
        context: &'a DiscoveryContext,
        what: &str,
        up: &'a Cell<bool>,
        session: F,
    ) where
        F: Fn() -> Fut,
        Fut: core::future::Future<Output = io::Error> + 'a,
    {
        let mut backoff = RETRY_FIRST;
        loop {
            let error = session().await;
            let was_up = up.replace(false);
            context
                .unhealthy(alloc::format!("survey {what}: {error}; keeping the last member list"));
            if was_up {
                backoff = RETRY_FIRST;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    async fn run_async(&self, context: &DiscoveryContext) {
        // Whether the respondent and the subscriber are connected.
        let up = [Cell::new(false), Cell::new(false)];
        let respond =
            self.keep_up(context, "respondent", &up[0], || self.answer_surveys(context, &up));
        let follow = self.keep_up(context, "subscriber", &up[1], || self.follow_list(context, &up));
        futures_lite::future::or(futures_lite::future::or(respond, follow), async {
            // gopherdiscovery has no leave: the next survey misses this node.
            let _ = context.stopped().await;
        })
        .await;
    }
}

/// Connection `which` (0: respondent, 1: subscriber) is up; the provider is healthy again
/// when both are.
fn connected(context: &DiscoveryContext, up: &[Cell<bool>; 2], which: usize) {
    up[which].set(true);
    if up.iter().all(Cell::get) {
        context.healthy();
    }
}

impl Discovery for SurveyDiscovery {
    fn kind(&self) -> &'static str {
        "survey"
    }

    fn run(self: Box<Self>, context: DiscoveryContext) {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(self.run_async(&context)),
            Err(error) => {
                context.unhealthy(alloc::format!("survey: no tokio runtime: {error}"));
                while context.wait_stop(Duration::from_secs(3600)).is_none() {}
            }
        }
    }
}
