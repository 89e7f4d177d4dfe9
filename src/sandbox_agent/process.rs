//! The embedded `sandbox-agent server`: started on a free loopback port with a random token when
//! no external server is configured, and stopped on shutdown.
//!
//! It runs in a process group of its own, and is stopped as a group: sandbox-agent 0.4.2 exits on
//! SIGTERM without stopping its agents (which then live on, reparented), so every process under it
//! is signalled, and killed after a grace period. With a pid file, a Huddle that was killed leaves
//! a trace of the server it ran (group, port, token; readable by its owner only), and the next one
//! adopts that server, so the agents and connections on it live on, or stops it (and its agents)
//! when it cannot be adopted. There is never a second one beside it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::process::{Child, Command};

use super::agents::AgentProcesses;
use super::transport::Endpoint;

/// Where `scripts/setup.sh` installs the pinned binary, relative to the project.
pub const BUNDLED_BIN: &str = "tools/node_modules/@sandbox-agent/cli-linux-x64/bin/sandbox-agent";

/// Where `scripts/setup.sh` installs the pinned agents and adapters (`claude`,
/// `claude-agent-acp`): the embedded server looks there first.
pub const ADAPTERS_DIR: &str = "tools/node_modules/.bin";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "the sandbox-agent binary was not found at {0}. Run scripts/setup.sh, set SANDBOX_AGENT_BIN, or set \
         SANDBOX_AGENT_URL to use a running server."
    )]
    NotFound(PathBuf),
    #[error("could not start sandbox-agent: {0}")]
    Spawn(std::io::Error),
    #[error("`sandbox-agent install-agent {agent}` failed: {detail}")]
    Install { agent: String, detail: String },
    #[error("sandbox-agent did not become healthy within {0:?}")]
    Unhealthy(Duration),
    #[error("cannot write the sandbox-agent pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How long the processes of a stopped server get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// The binary; [`BUNDLED_BIN`] or `sandbox-agent` on PATH when unset.
    pub bin: Option<PathBuf>,
    /// A fixed port (tests restart a server on the same one); a free port when unset.
    pub port: Option<u16>,
    /// A fixed token; a random one when unset.
    pub token: Option<String>,
    /// Directories put in front of PATH for the server (where agent adapters are looked up).
    pub extra_path: Vec<PathBuf>,
    /// A file for the server's output; discarded when unset.
    pub log: Option<PathBuf>,
    /// A file that holds the server's process group while it runs: a server a crashed process
    /// left behind is found there and stopped before a new one starts.
    pub pid_file: Option<PathBuf>,
    /// More environment for the server (and so for the agents it runs).
    pub env: Vec<(String, String)>,
    /// Start with no environment but `env` (a sandbox gets an allowlist, never Huddle's own).
    pub clear_env: bool,
    /// A command the server is run under (a sandbox: `bwrap …`), its arguments before the
    /// server's own.
    pub wrapper: Vec<std::ffi::OsString>,
}

/// What the pid file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Trace {
    pgid: i32,
    port: u16,
    token: String,
    /// The server itself, when it runs under a wrapper (the group leader otherwise).
    #[serde(default)]
    server: Option<i32>,
    /// The server's own process group, when the wrapper made a new session for it (bubblewrap's
    /// `--new-session`): it is stopped with the leader's.
    #[serde(default)]
    inner: Option<i32>,
}

pub struct SandboxAgentProcess {
    /// None for a server adopted from a previous process.
    child: Option<Child>,
    endpoint: Endpoint,
    port: u16,
    /// The process group (the server's pid).
    pgid: Option<i32>,
    /// The server's own group under a wrapper that made a new session.
    inner: Option<i32>,
    pid_file: Option<PathBuf>,
}

impl SandboxAgentProcess {
    /// Finds the binary: explicit, then the bundled one, then PATH.
    pub fn resolve_bin(explicit: Option<&Path>) -> Result<PathBuf, ProcessError> {
        if let Some(p) = explicit {
            return if p.is_file() {
                Ok(p.to_path_buf())
            } else {
                Err(ProcessError::NotFound(p.to_path_buf()))
            };
        }
        let bundled = PathBuf::from(BUNDLED_BIN);
        if bundled.is_file() {
            return Ok(bundled);
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("sandbox-agent"))
            .find(|p| p.is_file())
            .ok_or(ProcessError::NotFound(bundled))
    }

    /// Installs an agent (offline for the builtin `mock`).
    pub async fn install_agent(bin: &Path, agent: &str) -> Result<(), ProcessError> {
        let out = Command::new(bin)
            .args(["install-agent", agent])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(ProcessError::Spawn)?;
        if out.status.success() {
            return Ok(());
        }
        Err(ProcessError::Install {
            agent: agent.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().into(),
        })
    }

    /// The server a previous process left running, when it is still a healthy sandbox-agent.
    async fn adopt(pid_file: &Path) -> Option<Self> {
        let trace: Trace =
            serde_json::from_str(&tokio::fs::read_to_string(pid_file).await.ok()?).ok()?;
        let leader = std::fs::read(format!("/proc/{}/cmdline", trace.pgid)).ok()?;
        if !String::from_utf8_lossy(&leader).contains("sandbox-agent") {
            return None;
        }
        let process = Self {
            child: None,
            endpoint: Endpoint {
                base_url: format!("http://127.0.0.1:{}", trace.port),
                token: Some(trace.token),
                agents: Some(Arc::new(AgentProcesses::new(
                    trace.server.unwrap_or(trace.pgid),
                ))),
            },
            port: trace.port,
            pgid: Some(trace.pgid),
            inner: trace.inner,
            pid_file: Some(pid_file.to_path_buf()),
        };
        process.wait_healthy(Duration::from_secs(3)).await.ok()?;
        tracing::info!(
            pgid = trace.pgid,
            "adopted the sandbox-agent a previous Huddle left running"
        );
        Some(process)
    }

    /// Stops a server a previous process left running (its group is in the pid file), with every
    /// agent under it. Only a group whose leader is still a sandbox-agent, or gone, is signalled.
    async fn stop_leftover(pid_file: &Path) {
        let Ok(text) = tokio::fs::read_to_string(pid_file).await else {
            return;
        };
        let _ = tokio::fs::remove_file(pid_file).await;
        let Ok(Trace { pgid, inner, .. }) = serde_json::from_str(&text) else {
            return;
        };
        // The sandbox's own session outlives a leader that was killed alone.
        if let Some(inner) = inner
            && group_alive(inner)
            && std::fs::read(format!("/proc/{inner}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sandbox-agent"))
        {
            stop_group(inner, None).await;
        }
        if !group_alive(pgid) {
            return;
        }
        // The leader's pid may have been reused by something else: signal the group only when its
        // leader is still a sandbox-agent, or gone (then what is left are its agents). A zombie
        // leader (killed, not yet reaped: its command line reads empty) is gone too, and its pid
        // cannot have been reused while it is one.
        let leader = std::fs::read(format!("/proc/{pgid}/cmdline"));
        if leader
            .is_ok_and(|c| !c.is_empty() && !String::from_utf8_lossy(&c).contains("sandbox-agent"))
        {
            return;
        }
        tracing::warn!(
            pgid,
            "stopping the sandbox-agent (and its agents) a previous Huddle left running"
        );
        stop_group(pgid, None).await;
    }

    /// Stops the server (and its agents) a previous process left behind with this pid file.
    pub async fn stop_left_behind(pid_file: &Path) {
        Self::stop_leftover(pid_file).await;
    }

    /// Starts the server and waits for `/v1/health`.
    pub async fn start(opts: ProcessOptions) -> Result<Self, ProcessError> {
        if let Some(pid_file) = &opts.pid_file {
            if let Some(adopted) = Self::adopt(pid_file).await {
                return Ok(adopted);
            }
            Self::stop_leftover(pid_file).await;
        }
        let bin = Self::resolve_bin(opts.bin.as_deref())?;
        let port = match opts.port {
            Some(p) => p,
            None => std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(ProcessError::Spawn)?
                .port(),
        };
        let token = opts.token.unwrap_or_else(|| {
            rand::rng()
                .sample_iter(&Alphanumeric)
                .take(40)
                .map(char::from)
                .collect()
        });
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&bin);
                cmd
            }
            None => Command::new(&bin),
        };
        if opts.clear_env {
            cmd.env_clear();
        }
        cmd.args([
            "server",
            "--no-telemetry",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--token",
            &token,
        ]);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        if !opts.extra_path.is_empty() {
            let mut paths = opts.extra_path.clone();
            paths.extend(
                std::env::var_os("PATH")
                    .iter()
                    .flat_map(std::env::split_paths),
            );
            cmd.env(
                "PATH",
                std::env::join_paths(paths)
                    .map_err(|e| ProcessError::Spawn(std::io::Error::other(e)))?,
            );
        }
        let (out, err) = match &opts.log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(ProcessError::Spawn)?;
                (
                    Stdio::from(f.try_clone().map_err(ProcessError::Spawn)?),
                    Stdio::from(f),
                )
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(ProcessError::Spawn)?;
        let pgid = child.id().map(|p| p as i32);
        // Under a wrapper the server is a descendant of the leader, not the leader itself.
        let server = match (pgid, opts.wrapper.is_empty()) {
            (Some(leader), false) => server_under(leader).await,
            (pid, _) => pid,
        };
        let inner = server
            .and_then(|pid| nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok())
            .map(|g| g.as_raw())
            .filter(|g| Some(*g) != pgid);
        if let (Some(path), Some(pgid)) = (&opts.pid_file, pgid) {
            let trace = Trace {
                pgid,
                port,
                token: token.clone(),
                server,
                inner,
            };
            write_private(path, &serde_json::to_string(&trace).unwrap_or_default()).map_err(
                |source| ProcessError::PidFile {
                    path: path.clone(),
                    source,
                },
            )?;
        }
        let endpoint = Endpoint {
            base_url: format!("http://127.0.0.1:{port}"),
            token: Some(token),
            agents: server.map(|pid| Arc::new(AgentProcesses::new(pid))),
        };
        let process = Self {
            child: Some(child),
            endpoint,
            port,
            pgid,
            inner,
            pid_file: opts.pid_file.clone(),
        };
        process.wait_healthy(Duration::from_secs(30)).await?;
        Ok(process)
    }

    async fn wait_healthy(&self, limit: Duration) -> Result<(), ProcessError> {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/health", self.endpoint.base_url);
        let token = self.endpoint.token.clone().unwrap_or_default();
        let started = Instant::now();
        let mut delay = Duration::from_millis(25);
        while started.elapsed() < limit {
            if let Ok(res) = http
                .get(&url)
                .bearer_auth(&token)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && res.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        Err(ProcessError::Unhealthy(limit))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process group the server and everything it started run in.
    pub fn pgid(&self) -> Option<i32> {
        self.pgid
    }

    /// Whether the server is still running (a process killed for its memory is not).
    pub fn running(&self) -> bool {
        self.pgid.is_some_and(|pgid| {
            std::fs::read_to_string(format!("/proc/{pgid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
            })
        })
    }

    /// Stops the server and every process under it: SIGTERM to the group, then SIGKILL to what is
    /// left after a grace period.
    pub async fn stop(mut self) {
        if let Some(inner) = self.inner {
            // SIGTERM reaches both groups at once; the leader's wait below covers them.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(inner),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if let Some(pgid) = self.pgid {
            stop_group(pgid, self.child.as_mut()).await;
        }
        if let Some(inner) = self.inner {
            stop_group(inner, None).await;
        }
        if self.pgid.is_none()
            && let Some(child) = &mut self.child
        {
            let _ = child.kill().await;
        }
        if let Some(path) = &self.pid_file {
            let _ = std::fs::remove_file(path);
        }
        self.child = None;
    }

    /// Kills the server at once, as a crash would (tests): its agents live on, as they would.
    pub async fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }
}

/// A server we started and nobody stopped (a panic unwinding past it) goes with every agent
/// under it, not only its leader.
impl Drop for SandboxAgentProcess {
    fn drop(&mut self) {
        if let (Some(_), Some(pgid)) = (&self.child, self.pgid) {
            for group in [Some(pgid), self.inner].into_iter().flatten() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(group),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The sandbox-agent process under a wrapper's leader (bwrap forks twice before it runs the
/// server), waited for briefly: it appears a few milliseconds after the leader.
async fn server_under(leader: i32) -> Option<i32> {
    fn find(pid: i32, depth: u8) -> Option<i32> {
        if std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "sandbox-agent")
        {
            return Some(pid);
        }
        if depth == 0 {
            return None;
        }
        super::agents::children_of(pid)
            .into_iter()
            .find_map(|c| find(c, depth - 1))
    }
    for _ in 0..200 {
        if let Some(pid) = find(leader, 4) {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(
        leader,
        "the sandbox-agent under the sandbox was not found; its agents are ended with it"
    );
    None
}

/// Writes a file only its owner can read (it holds the server's token).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn group_alive(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

/// SIGTERM to a process group, SIGKILL to whatever is left of it after [`STOP_GRACE`]; reaps the
/// leader when it is our child.
async fn stop_group(pgid: i32, mut leader: Option<&mut Child>) {
    use nix::sys::signal::{Signal, killpg};
    let group = nix::unistd::Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Some(child) = leader.as_deref_mut() {
            let _ = child.try_wait();
        }
        if !group_alive(pgid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if group_alive(pgid) {
        tracing::warn!(
            pgid,
            "sandbox-agent's processes ignored SIGTERM; killing them"
        );
        let _ = killpg(group, Signal::SIGKILL);
    }
    if let Some(child) = leader {
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Huddle and the server's leader killed at once, and Huddle started again before the leader
    /// was reaped: its agents still go.
    #[tokio::test]
    async fn a_leftover_group_whose_leader_is_a_zombie_is_stopped() {
        use std::os::unix::process::CommandExt;
        // A leader in a group of its own that leaves an "agent" behind and exits; never reaped
        // here, so it stays a zombie.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 60 >/dev/null 2>&1 & echo $!; exit 0"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id() as i32;
        let mut out = String::new();
        std::io::Read::read_to_string(leader.stdout.as_mut().unwrap(), &mut out).unwrap();
        let agent: i32 = out.trim().parse().unwrap();
        let zombie = || {
            std::fs::read_to_string(format!("/proc/{pgid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        };
        let t = Instant::now();
        while !zombie() {
            assert!(t.elapsed() < Duration::from_secs(10), "the leader exits");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let dir = std::env::temp_dir().join(format!("huddle-leftover-{pgid}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("sandbox-agent.pid");
        let trace = Trace {
            pgid,
            port: 9,
            token: "t".into(),
            server: None,
            inner: None,
        };
        std::fs::write(&pid_file, serde_json::to_string(&trace).unwrap()).unwrap();
        SandboxAgentProcess::stop_leftover(&pid_file).await;
        let gone = !std::fs::read_to_string(format!("/proc/{agent}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        });
        let _ = leader.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            gone,
            "the agent of a group whose leader is a zombie was stopped"
        );
    }
}
