//! Retry delays: exponential backoff with jitter (from `backon`), capped, never giving up by itself;
//! callers bound their retries by a deadline or by shutdown.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

pub const MIN_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Delays of 100 ms doubling up to 5 s, each with jitter.
pub fn delays() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The next delay of a series from [`delays`].
pub fn next(delays: &mut (impl Iterator<Item = Duration> + Send)) -> Duration {
    delays.next().unwrap_or(MAX_DELAY)
}
