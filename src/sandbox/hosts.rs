//! Sandbox hosts: sandbox-agent servers on other machines (or containers, VMs) that the instance
//! owner registered. Each is health-checked every second; rooms on a host watch its health.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::SandboxError;
use super::store::HostRow;
use crate::sandbox_agent::Endpoint;
use crate::sandbox_agent::agents::AgentProcesses;

/// How often each host is asked for its health, and how long it has to answer.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);
/// Failed checks in a row before a host counts as unreachable (one slow answer is not).
const FAILURES_TO_DOWN: u32 = 2;

/// A registered host.
pub struct Host {
    pub row: HostRow,
    pub endpoint: Endpoint,
    healthy: watch::Sender<bool>,
    /// Bumped when it is found healthy outside the monitor: a check that started before does
    /// not count against it.
    generation: std::sync::atomic::AtomicU64,
}

impl Host {
    pub fn healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// It answered again.
    pub fn mark_healthy(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !self.healthy() {
            tracing::info!(host = %self.row.id, "the sandbox host answers again");
            let _ = self.healthy.send(true);
        }
    }

    /// Changes of the host's health, from now on.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }
}

/// A host to register at start (`HUDDLE_SANDBOX_HOSTS`, tests).
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub url: String,
    pub token: Option<String>,
    pub cwd_root: Option<String>,
    /// Its processes, when it runs on this machine as our child (tests): closing a connection
    /// then ends its agent.
    pub agents: Option<Arc<AgentProcesses>>,
}

impl HostConfig {
    /// `URL#TOKEN` items, comma-separated.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, SandboxError> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (url, token) = match item.split_once('#') {
                    Some((u, t)) => (u, Some(t.to_string()).filter(|t| !t.is_empty())),
                    None => (item, None),
                };
                host_id(url)?;
                Ok(Self {
                    url: url.trim_end_matches('/').to_string(),
                    token,
                    cwd_root: None,
                    agents: None,
                })
            })
            .collect()
    }
}

/// The default working-directory root on a host.
pub const DEFAULT_CWD_ROOT: &str = "/tmp/huddle-workspaces";

/// A host's id: the host and port of its URL.
pub fn host_id(url: &str) -> Result<String, SandboxError> {
    let parsed = url::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            SandboxError::Invalid("A sandbox host's URL must be an http(s) URL.".into())
        })?;
    let host = parsed
        .host_str()
        .ok_or_else(|| SandboxError::Invalid("A sandbox host's URL needs a host.".into()))?;
    Ok(match parsed.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The registered hosts. Cheap to clone.
#[derive(Clone, Default)]
pub struct Hosts {
    hosts: Arc<RwLock<Vec<Arc<Host>>>>,
}

impl Hosts {
    pub fn get(&self, id: &str) -> Option<Arc<Host>> {
        self.read().iter().find(|h| h.row.id == id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Host>> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Host>>> {
        self.hosts.read().expect("hosts lock")
    }

    /// Adds (or replaces) a host; it starts healthy when `healthy`.
    pub fn add(&self, row: HostRow, agents: Option<Arc<AgentProcesses>>, healthy: bool) {
        let endpoint = Endpoint {
            base_url: row.url.clone(),
            token: row.token.clone(),
            agents,
        };
        let mut hosts = self.hosts.write().expect("hosts lock");
        // A host registered again keeps its watchers.
        let (tx, _) = watch::channel(healthy);
        let healthy_tx = match hosts.iter().find(|h| h.row.id == row.id) {
            Some(old) => {
                let _ = old.healthy.send(healthy);
                old.healthy.clone()
            }
            None => tx,
        };
        hosts.retain(|h| h.row.id != row.id);
        hosts.push(Arc::new(Host {
            row,
            endpoint,
            healthy: healthy_tx,
            generation: Default::default(),
        }));
    }

    /// Checks every host each second until `stop`.
    pub fn spawn_monitor(&self, stop: CancellationToken) {
        let hosts = self.clone();
        let http = reqwest::Client::builder()
            .connect_timeout(CHECK_TIMEOUT)
            .timeout(CHECK_TIMEOUT)
            .build()
            .expect("a default HTTP client builds");
        tokio::spawn(async move {
            let mut failures: std::collections::HashMap<String, u32> = Default::default();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                }
                let all = hosts.all();
                let generations: Vec<u64> = all
                    .iter()
                    .map(|h| h.generation.load(std::sync::atomic::Ordering::SeqCst))
                    .collect();
                let checks = all.iter().map(|h| check(&http, &h.endpoint));
                let results = futures::future::join_all(checks).await;
                for ((host, ok), generation) in all.iter().zip(results).zip(generations) {
                    let n = failures.entry(host.row.id.clone()).or_default();
                    let stale =
                        generation != host.generation.load(std::sync::atomic::Ordering::SeqCst);
                    *n = if ok || stale { 0 } else { *n + 1 };
                    let healthy = *n < FAILURES_TO_DOWN;
                    if host.healthy() != healthy {
                        if healthy {
                            tracing::info!(host = %host.row.id, "the sandbox host answers again");
                        } else {
                            tracing::warn!(host = %host.row.id, "the sandbox host is unreachable");
                        }
                        let _ = host.healthy.send(healthy);
                    }
                }
            }
        });
    }
}

/// Whether a sandbox-agent answers its health check (with this token).
pub async fn check(http: &reqwest::Client, endpoint: &Endpoint) -> bool {
    let url = format!("{}/v1/health", endpoint.base_url.trim_end_matches('/'));
    let mut req = http.get(url).timeout(CHECK_TIMEOUT);
    if let Some(t) = &endpoint.token {
        req = req.bearer_auth(t);
    }
    req.send().await.is_ok_and(|res| res.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_a_list_and_named_by_host_and_port() {
        let hosts =
            HostConfig::parse_list(" http://10.0.0.5:2468#tok1, https://sb.example/#, http://h2 ")
                .unwrap();
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[0].url, "http://10.0.0.5:2468");
        assert_eq!(hosts[0].token.as_deref(), Some("tok1"));
        assert_eq!(hosts[1].url, "https://sb.example");
        assert_eq!(hosts[1].token, None);
        assert_eq!(host_id(&hosts[1].url).unwrap(), "sb.example:443");
        assert_eq!(host_id(&hosts[2].url).unwrap(), "h2:80");
        for bad in ["10.0.0.5:2468", "ftp://h", "http://"] {
            assert!(HostConfig::parse_list(bad).is_err(), "{bad}");
        }
    }
}
