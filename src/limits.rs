//! Limits on what one person or one address can take: prompts per minute (shared by every node
//! through Postgres, `store::rates`) and live streams (counted on every node,
//! `cluster::counts`).

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
