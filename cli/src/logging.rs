//! The log of `herdcache node`: the runtime's `tracing` records (refused connections with their
//! reason, failed TLS handshakes, the inbound connection cap, discovery trouble) as plain text
//! lines on stderr, beside the node's own lines. stdout stays for the ready line.
//!
//! What is logged: `--log-level`, else `RUST_LOG`, else [`DEFAULT_FILTER`]: warnings of
//! herdcache's crates (their targets all start with `herdcache`) and errors of the others.

use tracing_subscriber::EnvFilter;

/// The filter when neither `--log-level` nor `RUST_LOG` says otherwise.
pub(crate) const DEFAULT_FILTER: &str = "error,herdcache=warn";

/// The filter of a `--log-level` value: a level alone (`info`) is the level of herdcache's
/// crates, others staying at `error`; anything else is a `RUST_LOG`-style filter
/// (`herdcache_runtime=debug,warn`).
pub(crate) fn parse_log_level(text: &str) -> Result<String, String> {
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    let filter = if levels.contains(&text.to_ascii_lowercase().as_str()) {
        format!("error,herdcache={text}")
    } else {
        text.to_owned()
    };
    EnvFilter::builder().parse(&filter).map(|_| filter).map_err(|error| {
        format!("{text:?}: not a level (error, warn, info, debug, trace) or a filter: {error}")
    })
}

/// Sends `tracing` records to stderr, filtered by `level` (a [`parse_log_level`] filter),
/// else by `RUST_LOG`, else by [`DEFAULT_FILTER`]. A `RUST_LOG` that does not parse is said
/// on stderr, and the default is used.
pub(crate) fn init(level: Option<&str>) {
    let filter = match level {
        Some(filter) => EnvFilter::new(filter),
        None => match std::env::var("RUST_LOG") {
            Ok(text) if !text.trim().is_empty() => EnvFilter::builder().parse(&text).unwrap_or_else(|error| {
                eprintln!("herdcache: RUST_LOG={text:?} is not a filter ({error}): using {DEFAULT_FILTER:?}");
                EnvFilter::new(DEFAULT_FILTER)
            }),
            _ => EnvFilter::new(DEFAULT_FILTER),
        },
    };
    // Only fails when a subscriber is already installed, which nothing else here does.
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_alone_is_herdcaches_and_a_filter_is_taken_as_it_is() {
        assert_eq!(parse_log_level("info").as_deref(), Ok("error,herdcache=info"));
        assert_eq!(parse_log_level("DEBUG").as_deref(), Ok("error,herdcache=DEBUG"));
        assert_eq!(
            parse_log_level("herdcache_runtime=debug,warn").as_deref(),
            Ok("herdcache_runtime=debug,warn")
        );
        assert!(parse_log_level("herdcache=loud").is_err());
        assert!(EnvFilter::builder().parse(DEFAULT_FILTER).is_ok());
    }
}
