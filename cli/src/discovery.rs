//! `herdcache discovery`: a survey server speaking gopherdiscovery's protocol (nanomsg SP over
//! TCP). It surveys every poll time on its SURVEYOR address, collects the answers (member ids)
//! until the survey time has passed, and publishes the list (ids joined by `|`) on its PUB
//! address when it changed; a new subscriber is sent the current list at once. Nodes join it
//! with `herdcache node --discovery survey://HOST:PORT?publish=HOST:PORT`; gopherdiscovery
//! clients (and any SP RESPONDENT/SUB) work too. Runs until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use herdcache_proto::sp::{SpLimits, SurveyorConfig};
use herdcache_runtime::discovery::{SurveyServer, SurveyServerConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::units::{parse_positive_duration, parse_size};

/// `herdcache discovery` flags.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  herdcache discovery --survey tcp://127.0.0.1:40007 \
                        --publish tcp://127.0.0.1:40008\n  herdcache node --listen 127.0.0.1:7001 \
                        --discovery 'survey://127.0.0.1:40007?publish=127.0.0.1:40008' ...")]
pub(crate) struct DiscoveryArgs {
    /// The SURVEYOR address respondents (nodes) dial: tcp://HOST:PORT.
    #[arg(long, value_parser = parse_tcp_addr)]
    survey: SocketAddr,
    /// The PUB address subscribers dial: tcp://HOST:PORT.
    #[arg(long, value_parser = parse_tcp_addr)]
    publish: SocketAddr,
    /// Time from one survey's start to the next's (at least the survey time).
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    poll_time: Duration,
    /// How long a survey collects answers.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    survey_time: Duration,
    /// The most respondents connected at once.
    #[arg(long, default_value_t = 1024)]
    max_respondents: usize,
    /// The most subscribers connected at once.
    #[arg(long, default_value_t = 1024)]
    max_subscribers: usize,
    /// The most members one survey collects.
    #[arg(long, default_value_t = 1024)]
    max_members: usize,
    /// The largest SP message, sent or received (the published list included).
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    max_message: u64,
}

/// `tcp://HOST:PORT` (or `HOST:PORT`) as a socket address.
fn parse_tcp_addr(text: &str) -> Result<SocketAddr, String> {
    let address = text.strip_prefix("tcp://").unwrap_or(text);
    address.parse().map_err(|error| format!("{text:?} is not tcp://IP:PORT: {error}"))
}

pub(crate) async fn run(args: DiscoveryArgs) -> Result<(), String> {
    let max_message = usize::try_from(args.max_message).map_err(|error| error.to_string())?;
    let config = SurveyServerConfig {
        surveyor: SurveyorConfig {
            poll_time: args.poll_time,
            survey_time: args.survey_time,
            max_members: args.max_members,
            limits: SpLimits { max_message },
            // A restarted server does not start from the ids of the one before.
            first_survey: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.subsec_nanos()),
            ..SurveyorConfig::default()
        },
        max_respondents: args.max_respondents,
        max_subscribers: args.max_subscribers,
        ..SurveyServerConfig::default()
    };
    let server = SurveyServer::bind(args.survey, args.publish, config)
        .await
        .map_err(|error| format!("cannot listen on {} and {}: {error}", args.survey, args.publish))?
        .on_publish(|members| eprintln!("herdcache discovery: members [{}]", members.join(", ")));
    let survey = server.survey_addr().map_err(|error| error.to_string())?;
    let publish = server.publish_addr().map_err(|error| error.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|error| error.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|error| error.to_string())?;
    eprintln!(
        "herdcache discovery: surveying on tcp://{survey} every {:?} for {:?}, publishing on \
         tcp://{publish}",
        args.poll_time, args.survey_time
    );
    server
        .run(async {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
        .await;
    eprintln!("herdcache discovery: stopped");
    Ok(())
}
