//! Limits on what one person or one address can take: prompts per minute (a `governor` keyed
//! rate limiter) and live streams (counted while they are open).

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The limits, configurable (see the README for the defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    pub prompts_per_minute: u32,
    pub max_queue: usize,
    pub max_streams_per_ip: usize,
    pub max_streams_per_person: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            prompts_per_minute: 30,
            max_queue: 20,
            max_streams_per_ip: 64,
            max_streams_per_person: 16,
        }
    }
}

/// Prompts per person per minute.
pub struct PromptRate(DefaultKeyedRateLimiter<String>);

impl PromptRate {
    pub fn new(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least 1"));
        Self(RateLimiter::keyed(quota))
    }

    /// Ok, or the seconds until this person may prompt again.
    pub fn check(&self, person: &str) -> Result<(), u64> {
        use governor::clock::{Clock, DefaultClock};
        if self.0.len() > 10_000 {
            self.0.retain_recent();
        }
        self.0.check_key(&person.to_string()).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }
}

/// Open streams per key, each counted until its guard is dropped.
pub struct StreamCounts<K: Eq + Hash + Clone> {
    max: usize,
    open: Arc<Mutex<HashMap<K, usize>>>,
}

/// Counts one open stream until dropped.
pub struct StreamGuard<K: Eq + Hash + Clone> {
    key: K,
    open: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Clone> StreamCounts<K> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A guard for one more stream of `key`, unless it has as many as allowed.
    pub fn open(&self, key: K) -> Option<StreamGuard<K>> {
        let mut open = self.open.lock().expect("stream counts lock");
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(StreamGuard {
            key,
            open: self.open.clone(),
        })
    }
}

impl<K: Eq + Hash + Clone> Drop for StreamGuard<K> {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("stream counts lock");
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_while_open() {
        let counts = StreamCounts::new(2);
        let a = counts.open("ip");
        let b = counts.open("ip");
        assert!(a.is_some() && b.is_some());
        assert!(counts.open("ip").is_none());
        assert!(counts.open("other").is_some());
        drop(a);
        assert!(counts.open("ip").is_some());
    }

    #[test]
    fn prompts_are_limited_per_person() {
        let rate = PromptRate::new(3);
        for _ in 0..3 {
            assert!(rate.check("ada").is_ok());
        }
        assert!(rate.check("ada").is_err());
        assert!(rate.check("bob").is_ok());
    }
}
