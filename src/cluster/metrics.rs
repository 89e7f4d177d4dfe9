//! What a node measures of its own fan-out, for the load generator (`benches/cluster.rs`): how
//! long each live entry waited between its broadcast (after its batch was committed, or read from
//! the log by a follower) and its stream taking it, over every delivery. Lock-free: buckets 5%
//! apart, so percentiles are within 5%.

use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: usize = 400;
/// Each bucket is 5% wider than the one before: bucket i holds delays up to 1.05^i µs.
const GROWTH: f64 = 1.05;

pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

/// Broadcast-to-stream delays of live entries on this node.
pub static FAN_OUT: Histogram = Histogram {
    buckets: [const { AtomicU64::new(0) }; BUCKETS],
};

impl Histogram {
    pub fn record(&self, delay: std::time::Duration) {
        let us = delay.as_micros().max(1) as f64;
        let i = (us.ln() / GROWTH.ln()).ceil() as usize;
        self.buckets[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// How many were recorded, and the `p` quantiles (0..1) in microseconds.
    pub fn quantiles(&self, ps: &[f64]) -> (u64, Vec<f64>) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |p: f64| {
            let want = (p * total as f64).ceil() as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= want.max(1) {
                    return GROWTH.powi(i as i32);
                }
            }
            f64::NAN
        };
        (total, ps.iter().map(|p| at(*p)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_width() {
        let h = Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        };
        for us in 1..=1000u64 {
            h.record(std::time::Duration::from_micros(us));
        }
        let (n, q) = h.quantiles(&[0.5, 0.99]);
        assert_eq!(n, 1000);
        assert!((q[0] / 500.0 - 1.0).abs() < 0.06, "{q:?}");
        assert!((q[1] / 990.0 - 1.0).abs() < 0.06, "{q:?}");
    }
}
