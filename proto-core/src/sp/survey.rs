//! The survey header and the survey server's decisions (gopherdiscovery's server).

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;

use super::{MAX_HOPS, SpError, SpLimits, encode_member_list, encode_message, is_valid_member_id};
use crate::time::{Instant, Monotonic};

/// A survey's id: a `u32` with its high bit set, the last hop of a backtrace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SurveyId(u32);

impl SurveyId {
    /// The high bit that ends a backtrace.
    pub const END_OF_BACKTRACE: u32 = 0x8000_0000;

    /// The id from a counter: the low 31 bits, with the high bit set.
    #[must_use]
    pub const fn from_counter(counter: u32) -> SurveyId {
        SurveyId(counter | SurveyId::END_OF_BACKTRACE)
    }

    /// Its value on the wire (high bit set).
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Splits an answer a surveyor received into the survey id it names and the body. The
    /// surveyor is the end of the backtrace: exactly one hop, with the high bit set.
    ///
    /// # Errors
    /// [`SpError::MissingSurveyHeader`] when the message is shorter than 4 bytes or its first
    /// word lacks the high bit.
    pub fn split_answer(message: &[u8]) -> Result<(SurveyId, &[u8]), SpError> {
        let (word, body) = message.split_first_chunk::<4>().ok_or(SpError::MissingSurveyHeader)?;
        let id = u32::from_be_bytes(*word);
        if id & SurveyId::END_OF_BACKTRACE == 0 {
            return Err(SpError::MissingSurveyHeader);
        }
        Ok((SurveyId(id), body))
    }
}

/// A survey's backtrace as a respondent received it: every hop up to and including the one
/// with the high bit set (the survey id), at most [`MAX_HOPS`]. A respondent echoes it in
/// front of its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backtrace {
    bytes: [u8; MAX_HOPS * 4],
    len: usize,
}

impl Backtrace {
    /// Splits a survey a respondent received into its backtrace and its body.
    ///
    /// # Errors
    /// [`SpError::MissingSurveyHeader`] when the message ends before a hop with the high bit;
    /// [`SpError::TooManyHops`] when there are more than [`MAX_HOPS`].
    pub fn split_survey(message: &[u8]) -> Result<(Backtrace, &[u8]), SpError> {
        let mut bytes = [0u8; MAX_HOPS * 4];
        let mut rest = message;
        for hop in 0..MAX_HOPS {
            let (word, tail) = rest.split_first_chunk::<4>().ok_or(SpError::MissingSurveyHeader)?;
            bytes[hop * 4..hop * 4 + 4].copy_from_slice(word);
            rest = tail;
            if u32::from_be_bytes(*word) & SurveyId::END_OF_BACKTRACE != 0 {
                return Ok((Backtrace { bytes, len: (hop + 1) * 4 }, rest));
            }
        }
        if rest.len() < 4 { Err(SpError::MissingSurveyHeader) } else { Err(SpError::TooManyHops) }
    }

    /// The backtrace's bytes, as they go back in front of the answer.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The survey id: the last hop.
    #[must_use]
    pub fn survey_id(&self) -> SurveyId {
        let last = &self.bytes[self.len - 4..self.len];
        SurveyId(u32::from_be_bytes([last[0], last[1], last[2], last[3]]))
    }

    /// Appends the framed answer to this survey: the backtrace, then `body`.
    ///
    /// # Errors
    /// [`SpError::MessageTooLarge`] when the answer is over `limits`; nothing is written.
    pub fn encode_answer(
        &self,
        body: &[u8],
        limits: &SpLimits,
        out: &mut Vec<u8>,
    ) -> Result<(), SpError> {
        encode_message(&[self.as_bytes(), body], limits, out)
    }
}

/// The survey server's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SurveyorConfig {
    /// Time from the start of one survey to the start of the next (gopherdiscovery's
    /// `PollTime`). A survey never starts before the previous one ended.
    pub poll_time: Duration,
    /// How long a survey collects answers (gopherdiscovery's `SurveyTime`).
    pub survey_time: Duration,
    /// The most distinct members one survey collects; answers past it are ignored.
    pub max_members: usize,
    /// The longest member id, in bytes.
    pub max_id: usize,
    /// The largest message, for the published list (ids that would push the list over it
    /// are left out, and counted in [`Surveyor::dropped_answers`]).
    pub limits: SpLimits,
    /// The first survey's counter (survey ids are this, then +1 each survey): a seed, so
    /// that a restarted server does not reuse the ids of the one before at once.
    pub first_survey: u32,
}

impl Default for SurveyorConfig {
    /// Poll every 2 s, collect for 1 s, up to 1024 members of up to 255 bytes.
    fn default() -> SurveyorConfig {
        SurveyorConfig {
            poll_time: Duration::from_secs(2),
            survey_time: Duration::from_secs(1),
            max_members: 1024,
            max_id: 255,
            limits: SpLimits::default(),
            first_survey: 0,
        }
    }
}

/// What the survey server's driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SurveyorOutput {
    /// Send this framed survey to every respondent connected now.
    Survey(Bytes),
    /// The member list changed: send this framed message to every subscriber (and to each new
    /// one at once, as [`Surveyor::current_list`] gives it).
    Publish(Bytes),
}

/// The survey server: surveys every poll time, accepts answers to the current survey until
/// its deadline, and publishes the member list when a survey's answers differ from the last
/// list. Time is an argument; drain [`Surveyor::poll_output`] after every `handle_*`.
#[derive(Debug)]
pub struct Surveyor {
    config: SurveyorConfig,
    now: Monotonic,
    counter: u32,
    /// The survey under way: its id, its deadline, and the ids it collected.
    current: Option<(SurveyId, Instant, BTreeSet<String>)>,
    next_survey: Instant,
    members: BTreeSet<String>,
    published: Option<Bytes>,
    outputs: VecDeque<SurveyorOutput>,
    dropped: u64,
}

impl Surveyor {
    /// A server whose first survey starts at `now`.
    #[must_use]
    pub fn new(config: SurveyorConfig, now: Instant) -> Surveyor {
        Surveyor {
            config,
            now: Monotonic::new(now),
            counter: config.first_survey,
            current: None,
            next_survey: now,
            members: BTreeSet::new(),
            published: None,
            outputs: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Starts a survey when one is due and ends the one whose deadline passed. Early or
    /// repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.now.observe(now);
        if let Some((_, deadline, _)) = &self.current
            && now >= *deadline
        {
            let (_, _, answers) = self.current.take().expect("checked just above");
            self.finish(answers);
        }
        if self.current.is_none() && now >= self.next_survey {
            let id = SurveyId::from_counter(self.counter);
            self.counter = self.counter.wrapping_add(1) & !SurveyId::END_OF_BACKTRACE;
            let deadline = now.saturating_add(self.config.survey_time);
            self.next_survey =
                now.saturating_add(self.config.poll_time.max(self.config.survey_time));
            self.current = Some((id, deadline, BTreeSet::new()));
            let mut message = Vec::new();
            encode_message(&[&id.get().to_be_bytes()], &self.config.limits, &mut message)
                .expect("a 4-byte survey fits any limit");
            self.outputs.push_back(SurveyorOutput::Survey(Bytes::from(message)));
        }
    }

    /// An answer from a respondent (the message, header included). Returns whether it
    /// counted: an answer to another survey, after the deadline, with a malformed header or
    /// id, or past the member cap does not (and changes nothing).
    pub fn handle_answer(&mut self, now: Instant, message: &[u8]) -> bool {
        let now = self.now.observe(now);
        let Ok((id, body)) = SurveyId::split_answer(message) else { return false };
        let Some((current, deadline, answers)) = &mut self.current else { return false };
        if id != *current || now >= *deadline || !is_valid_member_id(body, self.config.max_id) {
            return false;
        }
        let Ok(member) = core::str::from_utf8(body) else { return false };
        if answers.contains(member) {
            return true;
        }
        if answers.len() >= self.config.max_members {
            self.dropped += 1;
            return false;
        }
        answers.insert(String::from(member));
        true
    }

    fn finish(&mut self, mut answers: BTreeSet<String>) {
        // Keep the list within one message: the ids past the limit wait for a larger one.
        let limit = self.config.limits.max_message;
        let mut len = 0usize;
        answers.retain(|id| {
            let grown = len + id.len() + usize::from(len > 0);
            if grown > limit {
                self.dropped += 1;
                false
            } else {
                len = grown;
                true
            }
        });
        if answers == self.members && self.published.is_some() {
            return;
        }
        self.members = answers;
        let ids: Vec<&str> = self.members.iter().map(String::as_str).collect();
        let mut message = Vec::new();
        encode_message(&[&encode_member_list(&ids)], &self.config.limits, &mut message)
            .expect("the list was cut to the limit");
        let message = Bytes::from(message);
        self.published = Some(message.clone());
        self.outputs.push_back(SurveyorOutput::Publish(message));
    }

    /// The next thing to send.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<SurveyorOutput> {
        self.outputs.pop_front()
    }

    /// When [`Surveyor::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match &self.current {
            Some((_, deadline, _)) => *deadline,
            None => self.next_survey,
        })
    }

    /// The survey under way, if one is.
    #[must_use]
    pub fn current_survey(&self) -> Option<SurveyId> {
        self.current.as_ref().map(|(id, _, _)| *id)
    }

    /// The members of the last published list.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(String::as_str)
    }

    /// The last published list as a framed message, for a new subscriber; `None` before the
    /// first survey ended.
    #[must_use]
    pub fn current_list(&self) -> Option<Bytes> {
        self.published.clone()
    }

    /// Answers left out because a survey reached its member cap or the list its size limit.
    #[must_use]
    pub const fn dropped_answers(&self) -> u64 {
        self.dropped
    }
}
