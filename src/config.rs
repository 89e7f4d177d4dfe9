//! Server configuration: command-line flags, each also read from an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "huddle",
    version,
    about = "Huddle: a multiplayer room for a coding agent"
)]
pub struct Config {
    /// Address to serve on. Defaults to the site address in Cargo.toml (127.0.0.1:3000).
    #[arg(long, env = "HUDDLE_ADDR")]
    pub addr: Option<SocketAddr>,

    /// The address people use to reach Huddle (such as `https://huddle.example.com`): requests
    /// for any other host name are refused (DNS rebinding). Default: the serve address (and
    /// `localhost` for a loopback one).
    #[arg(long, env = "HUDDLE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Where the other Huddle nodes on the same database reach this one (such as
    /// `http://10.0.0.7:3000`): they forward actions for the rooms it owns there. Default: the
    /// serve address (127.0.0.1 for an unspecified one).
    #[arg(long, env = "HUDDLE_NODE_URL")]
    pub node_url: Option<String>,

    /// The load balancers in front of Huddle (comma-separated IP addresses): for a request from
    /// one of them, the client's address is the last one it added to `X-Forwarded-For` (what
    /// the per-address limits count). Default: none (the TCP peer is the client).
    #[arg(long, env = "HUDDLE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Postgres to use. When unset, Huddle runs its own private cluster in `<data-dir>/postgres`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where Huddle keeps its own state (the embedded Postgres cluster, logs).
    #[arg(long, env = "HUDDLE_DATA_DIR", default_value = ".huddle")]
    pub data_dir: PathBuf,

    /// Directory of the Postgres server binaries (initdb, pg_ctl) for the embedded cluster.
    /// Found under /usr/lib/postgresql/*/bin or on PATH when unset.
    #[arg(long, env = "HUDDLE_PG_BIN")]
    pub pg_bin: Option<PathBuf>,

    /// How workspaces' agents run on this machine: `bubblewrap` (the default: a sandbox per
    /// workspace), `none` (not sandboxed: only for agents and members you trust), or `remote`
    /// (not on this machine: on the sandbox hosts only).
    #[arg(long, env = "HUDDLE_SANDBOX", default_value = "bubblewrap")]
    pub sandbox: SandboxMode,

    /// The bubblewrap binary (default: /usr/bin/bwrap, as Debian's `bubblewrap` installs it).
    #[arg(long, env = "HUDDLE_BWRAP")]
    pub bwrap: Option<PathBuf>,

    /// Sandbox hosts to place workspaces on: comma-separated `URL#TOKEN` of sandbox-agent servers.
    #[arg(long, env = "HUDDLE_SANDBOX_HOSTS", hide_env_values = true)]
    pub sandbox_hosts: Option<String>,

    /// The environment variables a sandbox gets from Huddle's (besides PATH, HOME, LANG, TERM),
    /// comma-separated. `HUDDLE_*`, `SANDBOX_AGENT_*`, `PG*` and `DATABASE_URL` are never passed.
    #[arg(long, env = "HUDDLE_AGENT_ENV", default_value = crate::sandbox::local::DEFAULT_AGENT_ENV)]
    pub agent_env: String,

    /// Memory each local sandbox may use, in MiB (where the host has control groups).
    #[arg(long, env = "HUDDLE_SANDBOX_MEMORY_MB", default_value_t = 4096)]
    pub sandbox_memory_mb: u64,

    /// Processes each local sandbox may run at once (where the host has control groups).
    #[arg(long, env = "HUDDLE_SANDBOX_PIDS", default_value_t = 1024)]
    pub sandbox_pids: u64,

    /// A running sandbox-agent server to run every workspace's agent on (a sandbox host, and then
    /// no agent runs on this machine). Prefer HUDDLE_SANDBOX_HOSTS.
    #[arg(long, env = "SANDBOX_AGENT_URL")]
    pub sandbox_agent_url: Option<String>,

    /// Bearer token of the sandbox-agent server at SANDBOX_AGENT_URL. Never sent to browsers.
    #[arg(long, env = "SANDBOX_AGENT_TOKEN", hide_env_values = true)]
    pub sandbox_agent_token: Option<String>,

    /// The sandbox-agent binary for local sandboxes (default: the one scripts/setup.sh installs).
    #[arg(long, env = "SANDBOX_AGENT_BIN")]
    pub sandbox_agent_bin: Option<PathBuf>,

    /// Prompts one person may send per minute (across workspaces).
    #[arg(long, env = "HUDDLE_PROMPTS_PER_MINUTE", default_value_t = 30)]
    pub prompts_per_minute: u32,

    /// Prompts that may wait behind a running turn in one workspace.
    #[arg(long, env = "HUDDLE_MAX_QUEUE", default_value_t = 20)]
    pub max_queue: usize,

    /// Live room streams one IP address may hold open.
    #[arg(long, env = "HUDDLE_MAX_STREAMS_PER_IP", default_value_t = 64)]
    pub max_streams_per_ip: usize,

    /// Live room streams one person may hold open.
    #[arg(long, env = "HUDDLE_MAX_STREAMS_PER_PERSON", default_value_t = 16)]
    pub max_streams_per_person: usize,

    /// Seconds a workspace with nobody connected and nothing running stays awake.
    #[arg(long, env = "HUDDLE_IDLE_SLEEP_SECS", default_value_t = 3600)]
    pub idle_sleep_secs: u64,

    /// A bearer token with the instance owner's rights, for deployments and scripts.
    #[arg(long, env = "HUDDLE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Where workspace owners may pick an existing directory for the agent (unset: nowhere).
    #[arg(long, env = "HUDDLE_PROJECTS_ROOT")]
    pub projects_root: Option<PathBuf>,

    /// Take push subscriptions whose endpoint is plain `http://` (a local push service under
    /// test); real push services are all `https://`.
    #[arg(long, env = "HUDDLE_PUSH_ALLOW_HTTP", default_value_t = false)]
    pub push_allow_http: bool,

    /// Let webhook posts and pushes go to loopback, private and link-local addresses (a receiver
    /// on this machine or an intranet); otherwise only public ones.
    #[arg(long, env = "HUDDLE_OUTBOUND_ALLOW_PRIVATE", default_value_t = false)]
    pub outbound_allow_private: bool,
}

/// `HUDDLE_SANDBOX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    Bubblewrap,
    None,
    Remote,
}

impl Config {
    /// Parses flags and environment, exiting with a usage message on error.
    pub fn from_args() -> Self {
        Self::parse()
    }
}
