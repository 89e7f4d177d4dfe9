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
}

impl Config {
    /// Parses flags and environment, exiting with a usage message on error.
    pub fn from_args() -> Self {
        Self::parse()
    }
}
