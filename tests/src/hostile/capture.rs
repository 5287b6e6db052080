//! What the nodes say while a hostile test runs: their warnings (a refusal is logged at warn
//! with its reason, on every runtime) and the panics of any thread of the process.
//!
//! Both are process-wide: [`install`] sets a global `tracing` subscriber that keeps every
//! warning and error as one line of `field=value` pairs, and a panic hook that counts panics
//! (then runs the default hook). The hostile tests run one at a time
//! ([`super::run`]), so a test reads what happened since its own [`Mark`].

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PANICS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Installs the subscriber and the panic hook, once per process.
pub fn install() {
    INSTALL.call_once(|| {
        // Another subscriber may already be the global one (then the log checks fail, loudly).
        let _ = tracing::subscriber::set_global_default(WarningsKept);
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default_hook(info);
        }));
    });
}

/// A point in the log and the panic count.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    lines: usize,
    panics: u64,
}

/// Now.
#[must_use]
pub fn mark() -> Mark {
    Mark {
        lines: LINES.lock().unwrap_or_else(PoisonError::into_inner).len(),
        panics: PANICS.load(Ordering::SeqCst),
    }
}

impl Mark {
    /// The warnings logged since the mark.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        LINES.lock().unwrap_or_else(PoisonError::into_inner)[self.lines..].to_vec()
    }

    /// The warnings since the mark that contain every one of `parts`.
    #[must_use]
    pub fn warnings_with(&self, parts: &[&str]) -> Vec<String> {
        self.warnings()
            .into_iter()
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .collect()
    }

    /// Panics in any thread since the mark.
    #[must_use]
    pub fn panics(&self) -> u64 {
        PANICS.load(Ordering::SeqCst) - self.panics
    }
}

/// Keeps warnings and errors; every other level is off at the callsite.
struct WarningsKept;

fn kept(metadata: &Metadata<'_>) -> bool {
    // In tracing's order more verbose levels are greater.
    *metadata.level() <= Level::WARN
}

impl Subscriber for WarningsKept {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if kept(metadata) { Interest::always() } else { Interest::never() }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        kept(metadata)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line(format!("{} ", event.metadata().level()));
        event.record(&mut line);
        LINES.lock().unwrap_or_else(PoisonError::into_inner).push(line.0);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}
