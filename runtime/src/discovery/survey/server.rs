//! The survey server (`herdcache discovery`): SURVEYOR and PUB sockets around the sans-IO
//! [`Surveyor`].

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use herdcache_proto::Instant;
use herdcache_proto::sp::{SpProtocol, Surveyor, SurveyorConfig, SurveyorOutput};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};

use super::conn::SpConnection;

/// How long the server waits after a failed accept before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The survey server's settings beyond the [`SurveyorConfig`].
#[derive(Clone, Copy, Debug)]
pub struct SurveyServerConfig {
    /// Poll time, survey time, member and message limits.
    pub surveyor: SurveyorConfig,
    /// The most respondents connected at once; a connection past it is closed at once.
    pub max_respondents: usize,
    /// The most subscribers connected at once; likewise.
    pub max_subscribers: usize,
    /// How long a connection's handshake, and any one write, may take.
    pub io_timeout: Duration,
}

impl Default for SurveyServerConfig {
    fn default() -> SurveyServerConfig {
        SurveyServerConfig {
            surveyor: SurveyorConfig::default(),
            max_respondents: 1024,
            max_subscribers: 1024,
            io_timeout: Duration::from_secs(5),
        }
    }
}

/// Called with the members each time the server publishes a new list.
type PublishHook = Box<dyn FnMut(&[&str]) + Send>;

/// A bound survey server; [`SurveyServer::run`] serves until its shutdown future resolves.
pub struct SurveyServer {
    config: SurveyServerConfig,
    survey: TcpListener,
    publish: TcpListener,
    on_publish: Option<PublishHook>,
}

impl core::fmt::Debug for SurveyServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SurveyServer")
            .field("config", &self.config)
            .field("survey", &self.survey)
            .field("publish", &self.publish)
            .finish_non_exhaustive()
    }
}

/// Counts a connection against a cap while it lives.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, cap: usize) -> Option<Slot> {
        let taken =
            count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1));
        taken.ok().map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SurveyServer {
    /// Binds the SURVEYOR address and the PUB address (port 0: any free port).
    ///
    /// # Errors
    /// When either cannot be bound.
    pub async fn bind(
        survey: SocketAddr,
        publish: SocketAddr,
        config: SurveyServerConfig,
    ) -> io::Result<SurveyServer> {
        Ok(SurveyServer {
            config,
            survey: TcpListener::bind(survey).await?,
            publish: TcpListener::bind(publish).await?,
            on_publish: None,
        })
    }

    /// Calls `hook` with the members each time a new list is published (for a log line).
    #[must_use]
    pub fn on_publish(mut self, hook: impl FnMut(&[&str]) + Send + 'static) -> SurveyServer {
        self.on_publish = Some(Box::new(hook));
        self
    }

    /// The SURVEYOR socket's address.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn survey_addr(&self) -> io::Result<SocketAddr> {
        self.survey.local_addr()
    }

    /// The PUB socket's address.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn publish_addr(&self) -> io::Result<SocketAddr> {
        self.publish.local_addr()
    }

    /// Serves on the caller's tokio runtime until `shutdown` resolves; connections' tasks end
    /// with it.
    pub async fn run(self, shutdown: impl core::future::Future<Output = ()>) {
        let SurveyServer { config, survey, publish, mut on_publish } = self;
        let epoch = std::time::Instant::now();
        let now = move || {
            Instant::from_micros(u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
        };
        let mut surveyor = Surveyor::new(config.surveyor, now());
        // Bounded: answers beyond the queue are dropped (a flood cannot grow memory).
        let (answers_in, mut answers) = mpsc::channel::<Bytes>(1024);
        let (surveys, _) = broadcast::channel::<Bytes>(4);
        let (list, _) = watch::channel::<Option<Bytes>>(None);
        let respondents = Arc::new(AtomicUsize::new(0));
        let subscribers = Arc::new(AtomicUsize::new(0));
        // Every connection task ends when this is dropped.
        let (stop, _) = watch::channel(());
        tokio::pin!(shutdown);
        loop {
            surveyor.handle_timeout(now());
            while let Some(output) = surveyor.poll_output() {
                match output {
                    SurveyorOutput::Survey(message) => {
                        let _ = surveys.send(message);
                    }
                    SurveyorOutput::Publish(message) => {
                        let members: Vec<&str> = surveyor.members().collect();
                        tracing::info!(?members, "survey server: publishing the member list");
                        if let Some(hook) = &mut on_publish {
                            hook(&members);
                        }
                        list.send_replace(Some(message));
                    }
                }
            }
            let wake = surveyor.poll_timeout().map_or(Duration::from_secs(3600), |at| {
                Duration::from_micros(at.as_micros().saturating_sub(now().as_micros()))
            });
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wake) => {}
                Some(answer) = answers.recv() => {
                    let _ = surveyor.handle_answer(now(), &answer);
                }
                accepted = survey.accept() => {
                    if accepted.is_err() {
                        // Out of descriptors, say: do not spin on the listener.
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    if let Ok((stream, _)) = accepted
                        && let Some(slot) = Slot::take(&respondents, config.max_respondents)
                    {
                        let task = respondent(stream, config, surveys.subscribe(), answers_in.clone());
                        let mut stop = stop.subscribe();
                        tokio::spawn(async move {
                            let _slot = slot;
                            tokio::select! { _ = task => {}, _ = stop.changed() => {} }
                        });
                    }
                }
                accepted = publish.accept() => {
                    if accepted.is_err() {
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    if let Ok((stream, _)) = accepted
                        && let Some(slot) = Slot::take(&subscribers, config.max_subscribers)
                    {
                        let task = subscriber(stream, config, list.subscribe());
                        let mut stop = stop.subscribe();
                        tokio::spawn(async move {
                            let _slot = slot;
                            tokio::select! { _ = task => {}, _ = stop.changed() => {} }
                        });
                    }
                }
            }
        }
    }
}

/// One respondent: each survey goes out, each answer comes in.
async fn respondent(
    stream: TcpStream,
    config: SurveyServerConfig,
    mut surveys: broadcast::Receiver<Bytes>,
    answers: mpsc::Sender<Bytes>,
) -> io::Result<()> {
    let limits = config.surveyor.limits;
    let mut connection =
        SpConnection::open(stream, SpProtocol::SURVEYOR, limits, config.io_timeout).await?;
    loop {
        tokio::select! {
            survey = surveys.recv() => match survey {
                Ok(survey) => connection.send(&survey, config.io_timeout).await?,
                // Missed surveys are over anyway; the next one counts.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            answer = connection.recv() => {
                let _ = answers.try_send(answer?);
            }
        }
    }
}

/// One subscriber: the current list at once, then every new one.
async fn subscriber(
    stream: TcpStream,
    config: SurveyServerConfig,
    mut list: watch::Receiver<Option<Bytes>>,
) -> io::Result<()> {
    let limits = config.surveyor.limits;
    let mut connection =
        SpConnection::open(stream, SpProtocol::PUB, limits, config.io_timeout).await?;
    loop {
        let current = list.borrow_and_update().clone();
        if let Some(message) = current {
            connection.send(&message, config.io_timeout).await?;
        }
        tokio::select! {
            changed = list.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            // A SUB sends nothing; this notices when it closes (and ends a peer that talks).
            message = connection.recv() => {
                message?;
                return Ok(());
            }
        }
    }
}
