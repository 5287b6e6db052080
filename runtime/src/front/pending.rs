//! The answer to a request that went to the node: a one-shot slot and the [`Pending`] that
//! waits on it, as a future or by blocking the thread.
//!
//! Contract: the front completes a slot exactly once (with the node's reply, or an error when
//! the front closes); completing wakes the one waiter registered last. A waiter that registers
//! after completion finds the answer, so no wake-up is lost. Dropping a [`Pending`] abandons its
//! slot: a later completion drops the answer and wakes nobody.

use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use super::sync::{Arc, Mutex, unpoison};
use herdcache_proto::{Error, Reply, Value};

/// What a slot receives: the node's reply, or why there will be none.
pub(crate) type Outcome = Result<Reply, Error>;

enum SlotState {
    Waiting(Option<Waker>),
    Done(Outcome),
    Taken,
    Abandoned,
}

/// The one-shot cell between the front (which completes it) and a [`Pending`].
pub(crate) struct Slot {
    state: Mutex<SlotState>,
}

impl Slot {
    pub(crate) fn new() -> Arc<Slot> {
        Arc::new(Slot { state: Mutex::new(SlotState::Waiting(None)) })
    }

    /// Stores the outcome and wakes the waiter, unless the [`Pending`] was dropped.
    pub(crate) fn complete(&self, outcome: Outcome) {
        let mut state = unpoison(self.state.lock());
        let waker = match &mut *state {
            SlotState::Waiting(waker) => waker.take(),
            SlotState::Done(_) | SlotState::Taken | SlotState::Abandoned => return,
        };
        *state = SlotState::Done(outcome);
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll(&self, waker: Option<&Waker>) -> Option<Outcome> {
        let mut state = unpoison(self.state.lock());
        match &mut *state {
            SlotState::Waiting(registered) => {
                if let Some(waker) = waker {
                    match registered {
                        Some(old) if old.will_wake(waker) => {}
                        _ => *registered = Some(waker.clone()),
                    }
                }
                None
            }
            SlotState::Done(_) => match core::mem::replace(&mut *state, SlotState::Taken) {
                SlotState::Done(outcome) => Some(outcome),
                _ => None,
            },
            SlotState::Taken | SlotState::Abandoned => None,
        }
    }

    fn abandon(&self) {
        *unpoison(self.state.lock()) = SlotState::Abandoned;
    }
}

/// The answer types a [`Pending`] can resolve to: one per kind of request. Sealed.
pub trait Answer: Sized + sealed::Sealed {
    /// The answer from the node's reply, or an error for every part of the request.
    #[doc(hidden)]
    fn from_outcome(outcome: Outcome, parts: usize) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for Result<herdcache_proto::Value, herdcache_proto::Error> {}
    impl Sealed for Result<(), herdcache_proto::Error> {}
    impl Sealed for alloc::vec::Vec<Result<herdcache_proto::Value, herdcache_proto::Error>> {}
    impl Sealed for alloc::vec::Vec<Result<(), herdcache_proto::Error>> {}
}

impl Answer for Result<Value, Error> {
    fn from_outcome(outcome: Outcome, _parts: usize) -> Self {
        match outcome? {
            Reply::Get(result) => result,
            _ => Err(Error::BadRequest),
        }
    }
}

impl Answer for Result<(), Error> {
    fn from_outcome(outcome: Outcome, _parts: usize) -> Self {
        match outcome? {
            Reply::Write(result) => result,
            _ => Err(Error::BadRequest),
        }
    }
}

impl Answer for Vec<Result<Value, Error>> {
    fn from_outcome(outcome: Outcome, parts: usize) -> Self {
        match outcome {
            Ok(Reply::GetMany(results)) => results,
            Ok(_) => vec![Err(Error::BadRequest); parts],
            Err(error) => vec![Err(error); parts],
        }
    }
}

impl Answer for Vec<Result<(), Error>> {
    fn from_outcome(outcome: Outcome, parts: usize) -> Self {
        match outcome {
            Ok(Reply::WriteMany(results)) => results,
            Ok(_) => vec![Err(Error::BadRequest); parts],
            Err(error) => vec![Err(error); parts],
        }
    }
}

/// The answer to a request, now or later: a [`Future`], or wait for it with
/// [`Pending::wait`]. A cache hit is ready at once and allocates nothing. Dropping it
/// abandons the answer (the request itself goes on, bounded by its timeout).
#[must_use = "a Pending does nothing unless awaited, waited on or taken"]
pub struct Pending<T: Answer> {
    state: State<T>,
}

enum State<T> {
    Ready(Option<T>),
    Waiting { slot: Arc<Slot>, parts: usize },
}

impl<T: Answer> Pending<T> {
    pub(crate) fn ready(answer: T) -> Pending<T> {
        Pending { state: State::Ready(Some(answer)) }
    }

    pub(crate) fn failed(error: Error, parts: usize) -> Pending<T> {
        Pending::ready(T::from_outcome(Err(error), parts))
    }

    pub(crate) fn waiting(slot: Arc<Slot>, parts: usize) -> Pending<T> {
        Pending { state: State::Waiting { slot, parts } }
    }

    /// The answer if it is there already (then it is taken: later calls give `None`).
    pub fn try_take(&mut self) -> Option<T> {
        self.poll_with(None)
    }

    /// Whether the answer was there when the request returned (a cache hit, or an error found
    /// without the node's help).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready(Some(_)))
    }

    fn poll_with(&mut self, waker: Option<&Waker>) -> Option<T> {
        match &mut self.state {
            State::Ready(answer) => answer.take(),
            State::Waiting { slot, parts } => {
                slot.poll(waker).map(|outcome| T::from_outcome(outcome, *parts))
            }
        }
    }

    /// Blocks this thread until the answer is there. The node answers every request within
    /// its timeout while its driver runs.
    #[cfg(not(herdcache_loom))]
    pub fn wait(mut self) -> T {
        let waker = thread_waker();
        loop {
            if let Some(answer) = self.poll_with(Some(&waker)) {
                return answer;
            }
            std::thread::park();
        }
    }

    /// Blocks until the answer is there or `deadline` passes; then gives `self` back.
    #[cfg(not(herdcache_loom))]
    pub fn wait_until(mut self, deadline: std::time::Instant) -> Result<T, Pending<T>> {
        let waker = thread_waker();
        loop {
            if let Some(answer) = self.poll_with(Some(&waker)) {
                return Ok(answer);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(self);
            }
            std::thread::park_timeout(deadline - now);
        }
    }
}

/// A waker that unparks the current thread.
#[cfg(not(herdcache_loom))]
fn thread_waker() -> Waker {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    Waker::from(std::sync::Arc::new(Unpark(std::thread::current())))
}

impl<T: Answer> Unpin for Pending<T> {}

impl<T: Answer> Future for Pending<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut().poll_with(Some(cx.waker())) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        }
    }
}

impl<T: Answer> Drop for Pending<T> {
    fn drop(&mut self) {
        if let State::Waiting { slot, .. } = &self.state {
            slot.abandon();
        }
    }
}

impl<T: Answer> core::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match &self.state {
            State::Ready(Some(_)) => "ready",
            State::Ready(None) => "taken",
            State::Waiting { .. } => "waiting",
        };
        f.debug_struct("Pending").field("state", &state).finish()
    }
}
