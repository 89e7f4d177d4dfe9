//! The local provider: each workspace's sandbox-agent runs on this machine inside a Linux
//! namespace sandbox made by bubblewrap. The agent and every command it runs see the system
//! read-only, their working directory read-write at its own path, a home of their own that
//! survives restarts, a private `/tmp`, their own processes only, and an allowlist of environment
//! variables: never Huddle's data directory, checkout, secrets or other workspaces.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::SandboxError;
use super::limits::{Cgroup, CgroupSupport, SandboxLimits};
use crate::sandbox_agent::process::{ProcessOptions, SandboxAgentProcess};

/// Where the sandbox's home is mounted inside it.
pub const HOME_INSIDE: &str = "/home/agent";

/// Environment variables a sandbox never gets, whatever `HUDDLE_AGENT_ENV` says.
fn forbidden(name: &str) -> bool {
    name.starts_with("HUDDLE_")
        || name.starts_with("SANDBOX_AGENT_")
        || name.starts_with("PG")
        || name == "DATABASE_URL"
}

/// The variables Claude Code and Codex read for their keys and endpoints (the default of
/// `HUDDLE_AGENT_ENV`).
pub const DEFAULT_AGENT_ENV: &str = "ANTHROPIC_API_KEY,ANTHROPIC_AUTH_TOKEN,ANTHROPIC_BASE_URL,\
ANTHROPIC_MODEL,ANTHROPIC_SMALL_FAST_MODEL,CLAUDE_CODE_OAUTH_TOKEN,CLAUDE_CODE_USE_BEDROCK,\
CLAUDE_CODE_USE_VERTEX,OPENAI_API_KEY,OPENAI_BASE_URL,OPENAI_ORG_ID,CODEX_API_KEY,IS_SANDBOX";

/// How the agent is kept in.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// bubblewrap at this path.
    Bubblewrap(PathBuf),
    /// No sandbox (`HUDDLE_SANDBOX=none`): the agent runs as Huddle's user, with the environment
    /// allowlist only.
    None,
}

impl Isolation {
    /// bubblewrap (`explicit`, or found in the usual places), when it is installed and can make
    /// namespaces here.
    pub async fn bubblewrap(explicit: Option<&Path>) -> Result<Self, SandboxError> {
        let candidates: Vec<PathBuf> = match explicit {
            Some(p) => vec![p.to_path_buf()],
            None => ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        };
        let bwrap = candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| {
                SandboxError::Unsupported(
                    "bubblewrap (bwrap) is not installed: install the `bubblewrap` package (scripts/setup.sh does)"
                        .into(),
                )
            })?;
        let mut probe = tokio::process::Command::new(&bwrap);
        probe
            .args(system_binds())
            .args(["--proc", "/proc", "--dev", "/dev"])
            .args(namespaces())
            .arg("/bin/true");
        let out = probe
            .output()
            .await
            .map_err(|e| SandboxError::Unsupported(format!("bubblewrap cannot run: {e}")))?;
        if !out.status.success() {
            return Err(SandboxError::Unsupported(format!(
                "bubblewrap cannot make a sandbox here (it needs PID, IPC and mount namespaces): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Self::Bubblewrap(bwrap))
    }
}

/// The namespaces and restrictions every sandbox gets.
fn namespaces() -> Vec<OsString> {
    [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        // No terminal ioctls into Huddle's session, no capabilities (Huddle may run as root).
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// The system, read-only: `/usr` (and the merged-/usr links), and of `/etc` only what programs
/// need to run, resolve names and trust certificates.
fn system_binds() -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--ro-bind".into(), "/usr".into(), "/usr".into()];
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64"] {
        match std::fs::read_link(dir) {
            Ok(target) => args.extend(["--symlink".into(), target.into(), dir.into()]),
            Err(_) if Path::new(dir).is_dir() => {
                args.extend(["--ro-bind".into(), dir.into(), dir.into()])
            }
            Err(_) => {}
        }
    }
    for etc in [
        "/etc/alternatives",
        "/etc/ca-certificates",
        "/etc/ca-certificates.conf",
        "/etc/group",
        "/etc/host.conf",
        "/etc/hosts",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        "/etc/nsswitch.conf",
        "/etc/os-release",
        "/etc/passwd",
        "/etc/pki",
        "/etc/resolv.conf",
        "/etc/ssl",
    ] {
        args.extend(["--ro-bind-try".into(), etc.into(), etc.into()]);
    }
    args
}

/// Everything the local provider needs to start a sandbox.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    pub isolation: Isolation,
    pub sandbox_agent_bin: PathBuf,
    /// Directories the agents are found in (put first on PATH, visible read-only).
    pub extra_path: Vec<PathBuf>,
    /// The allowlisted variables, with Huddle's values.
    pub agent_env: Vec<(String, String)>,
    /// `<data dir>/sandboxes`: a directory per sandbox, its home and its trace inside.
    pub dir: PathBuf,
    pub cgroups: CgroupSupport,
    pub limits: SandboxLimits,
}

/// A running local sandbox.
pub struct Running {
    pub process: SandboxAgentProcess,
    pub cgroup: Option<Cgroup>,
}

impl Running {
    /// Stops the server and everything in the sandbox.
    pub async fn stop(self) {
        self.process.stop().await;
        if let Some(group) = &self.cgroup {
            group.kill_and_remove().await;
        }
    }
}

impl LocalProvider {
    /// The values of the allowlisted names in this process's environment.
    pub fn agent_env_from(names: &str) -> Vec<(String, String)> {
        names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .filter(|n| {
                let refused = forbidden(n);
                if refused {
                    tracing::warn!(
                        name = n,
                        "HUDDLE_AGENT_ENV names a variable a sandbox never gets"
                    );
                }
                !refused
            })
            .filter_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v)))
            .collect()
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The home as stored on this machine.
    pub fn home(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("home")
    }

    fn pid_file(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("server.json")
    }

    /// Sandboxes a previous process left running (their trace is still there).
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("server.json").is_file())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn path_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.extra_path.clone();
        if let Some(dir) = self.sandbox_agent_bin.parent() {
            dirs.push(dir.to_path_buf());
        }
        dirs
    }

    fn env(&self, home: &Path) -> Vec<(String, String)> {
        let mut path: Vec<PathBuf> = self.path_dirs();
        path.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(PathBuf::from));
        let mut env = vec![
            (
                "PATH".to_string(),
                std::env::join_paths(path)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            ("HOME".into(), home.display().to_string()),
            (
                "LANG".into(),
                std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            ),
            (
                "TERM".into(),
                std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
            ),
            // sandbox-agent ends an ACP request after this; a prompt waits on people for longer.
            (
                "SANDBOX_AGENT_ACP_REQUEST_TIMEOUT_MS".into(),
                std::env::var("SANDBOX_AGENT_ACP_REQUEST_TIMEOUT_MS")
                    .unwrap_or_else(|_| (24 * 3600 * 1000).to_string()),
            ),
        ];
        if matches!(self.isolation, Isolation::Bubblewrap(_)) {
            // It is one: Claude Code starts as root only in a sandbox.
            env.push(("IS_SANDBOX".into(), "1".into()));
        }
        env.extend(
            self.agent_env
                .iter()
                .filter(|(k, _)| !env.iter().any(|(e, _)| e == k))
                .cloned()
                .collect::<Vec<_>>(),
        );
        env
    }

    /// The bubblewrap command line (before the server's own), for a working directory.
    fn bwrap_args(&self, bwrap: &Path, home: &Path, cwd: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![bwrap.into()];
        args.extend(namespaces());
        args.extend(system_binds());
        args.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(OsString::from));
        // The agents' install directories: a node_modules/.bin needs its node_modules.
        let mut seen: Vec<PathBuf> = Vec::new();
        for dir in self.path_dirs() {
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            let dir = match (dir.file_name(), dir.parent()) {
                (Some(n), Some(parent)) if n == ".bin" => parent.to_path_buf(),
                _ => dir,
            };
            let dir = match dir
                .ancestors()
                .find(|a| a.file_name().is_some_and(|n| n == "node_modules"))
            {
                Some(modules) => modules.to_path_buf(),
                None => dir,
            };
            if seen.iter().any(|s| dir.starts_with(s)) {
                continue;
            }
            seen.push(dir.clone());
            args.extend(["--ro-bind".into(), dir.clone().into(), dir.into()]);
        }
        args.extend([
            "--bind".into(),
            home.into(),
            HOME_INSIDE.into(),
            "--bind".into(),
            cwd.into(),
            cwd.into(),
            "--chdir".into(),
            cwd.into(),
            // What is not mounted above (the directories leading to them) is read-only too.
            "--remount-ro".into(),
            "/".into(),
        ]);
        args
    }

    /// Joins the sandbox's control groups before anything in it runs, then runs the rest.
    fn cgroup_prefix(group: &Cgroup) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "/bin/sh".into(),
            "-c".into(),
            r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@""#
                .into(),
            "sh".into(),
        ];
        args.extend(group.procs_files().into_iter().map(OsString::from));
        args.push("--".into());
        args
    }

    /// Starts (or adopts, after a crash) the sandbox's server for a working directory.
    pub async fn start(&self, id: &str, cwd: &Path) -> Result<Running, SandboxError> {
        let home = self.home(id);
        std::fs::create_dir_all(&home).map_err(SandboxError::Io)?;
        std::fs::create_dir_all(cwd).map_err(SandboxError::Io)?;
        let cgroup = self
            .cgroups
            .group(id, self.limits)
            .unwrap_or_else(|e| {
                tracing::warn!(sandbox = id, error = %e, "cannot make the sandbox's control groups; it runs without limits");
                None
            });
        let (wrapper, home_seen) = match &self.isolation {
            Isolation::Bubblewrap(bwrap) => {
                let mut wrapper = cgroup.as_ref().map(Self::cgroup_prefix).unwrap_or_default();
                wrapper.extend(self.bwrap_args(bwrap, &home, cwd));
                (wrapper, PathBuf::from(HOME_INSIDE))
            }
            Isolation::None => (
                cgroup.as_ref().map(Self::cgroup_prefix).unwrap_or_default(),
                home.clone(),
            ),
        };
        let env = self.env(&home_seen);
        self.install_mock(&wrapper, &env).await;
        let process = SandboxAgentProcess::start(ProcessOptions {
            bin: Some(self.sandbox_agent_bin.clone()),
            log: Some(self.sandbox_dir(id).join("sandbox-agent.log")),
            pid_file: Some(self.pid_file(id)),
            env,
            clear_env: true,
            wrapper,
            ..Default::default()
        })
        .await
        .map_err(SandboxError::Process)?;
        Ok(Running { process, cgroup })
    }

    /// The mock agent needs no credentials; sandbox-agent installs its launcher in the home.
    async fn install_mock(&self, wrapper: &[OsString], env: &[(String, String)]) {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args);
                cmd.arg(&self.sandbox_agent_bin);
                cmd
            }
            None => tokio::process::Command::new(&self.sandbox_agent_bin),
        };
        cmd.args(["install-agent", "mock"])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        match cmd.output().await {
            Ok(out) if out.status.success() => {}
            Ok(out) => tracing::warn!(
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "could not install the mock agent in a sandbox"
            ),
            Err(e) => tracing::warn!(error = %e, "could not install the mock agent in a sandbox"),
        }
    }

    /// Stops a sandbox a previous process left running, without adopting it.
    pub async fn stop_leftover(&self, id: &str) {
        SandboxAgentProcess::stop_left_behind(&self.pid_file(id)).await;
        if let Ok(Some(group)) = self.cgroups.group(id, self.limits) {
            group.kill_and_remove().await;
        }
    }

    /// Removes a sandbox for good: its home and trace (it is stopped first).
    pub async fn destroy(&self, id: &str) {
        self.stop_leftover(id).await;
        if let Err(e) = tokio::fs::remove_dir_all(self.sandbox_dir(id)).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(sandbox = id, error = %e, "could not remove the sandbox's directory");
        }
    }
}
