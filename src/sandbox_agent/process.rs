//! The embedded `sandbox-agent server`: started on a free loopback port with a random token when
//! no external server is configured, and stopped on shutdown.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::process::{Child, Command};

use super::transport::Endpoint;

/// Where `scripts/setup.sh` installs the pinned binary, relative to the project.
pub const BUNDLED_BIN: &str = "tools/node_modules/@sandbox-agent/cli-linux-x64/bin/sandbox-agent";

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
}

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
}

pub struct SandboxAgentProcess {
    child: Child,
    endpoint: Endpoint,
    port: u16,
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

    /// Starts the server and waits for `/v1/health`.
    pub async fn start(opts: ProcessOptions) -> Result<Self, ProcessError> {
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
        let mut cmd = Command::new(&bin);
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
            .kill_on_drop(true)
            .spawn()
            .map_err(ProcessError::Spawn)?;
        let endpoint = Endpoint {
            base_url: format!("http://127.0.0.1:{port}"),
            token: Some(token),
        };
        let process = Self {
            child,
            endpoint,
            port,
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

    /// Stops the server: SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// Kills the server at once, as a crash would (tests).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}
