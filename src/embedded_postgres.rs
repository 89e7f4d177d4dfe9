//! Huddle's own private Postgres cluster, used when no `DATABASE_URL` is given.
//!
//! The cluster lives in `<data-dir>/postgres` and keeps its data across restarts. It listens on a free
//! loopback port with a password kept beside it, and is stopped on shutdown. Postgres refuses to run
//! as root, so under root the server runs as the `postgres` system user.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::process::Command;

const DATABASE: &str = "huddle";
const SUPERUSER: &str = "huddle";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPostgresError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found in {searched}. Install them \
         (Debian: `apt-get install postgresql`), point HUDDLE_PG_BIN at their directory, or set \
         DATABASE_URL to use a Postgres server that is already running."
    )]
    BinariesNotFound { searched: String },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error(
        "the embedded Postgres password file {0} is missing; remove the data directory to start afresh"
    )]
    MissingPassword(PathBuf),
    #[error("embedded Postgres: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "embedded Postgres: cannot run `{program}`: {source}. It must be installed and on PATH \
         (or set DATABASE_URL to use a Postgres server that is already running)."
    )]
    Program {
        program: String,
        source: std::io::Error,
    },
}

/// A running private cluster. Call [`EmbeddedPostgres::stop`] on shutdown; dropping it stops it too.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin: PathBuf,
    data: PathBuf,
    run_as_postgres: bool,
    url: String,
    stopped: AtomicBool,
}

impl EmbeddedPostgres {
    /// Starts (initialising on first use) the cluster under `data_dir` on a free loopback port.
    pub async fn start(
        data_dir: &Path,
        pg_bin: Option<&Path>,
    ) -> Result<Self, EmbeddedPostgresError> {
        Self::start_on(data_dir, pg_bin, None).await
    }

    /// Like [`EmbeddedPostgres::start`], on the given port (tests restart a server where it was).
    pub async fn start_on(
        data_dir: &Path,
        pg_bin: Option<&Path>,
        port: Option<u16>,
    ) -> Result<Self, EmbeddedPostgresError> {
        let bin = find_binaries(pg_bin)?;
        tokio::fs::create_dir_all(data_dir).await?;
        let data_dir = tokio::fs::canonicalize(data_dir).await?;
        let password_file = data_dir.join("postgres.password");
        let run_as_postgres = is_root().await;
        let data = cluster_dir(&data_dir, run_as_postgres).await?;
        let mut pg = Self {
            bin,
            data,
            run_as_postgres,
            url: String::new(),
            stopped: AtomicBool::new(false),
        };

        let password = if pg.data.join("PG_VERSION").exists() {
            tokio::fs::read_to_string(&password_file)
                .await
                .map_err(|_| EmbeddedPostgresError::MissingPassword(password_file.clone()))?
        } else {
            pg.init(&password_file).await?
        };

        // A server left running by a crashed Huddle holds the data directory: stop it first.
        if pg.pg_ctl(&["status"]).await.is_ok() {
            tracing::warn!(data = %pg.data.display(), "stopping a Postgres left running by an earlier run");
            pg.pg_ctl(&["stop", "-m", "fast", "-w"]).await?;
        }

        let mut last_error = None;
        for _ in 0..if port.is_some() { 1 } else { 3 } {
            let port = match port {
                Some(p) => p,
                None => free_port()?,
            };
            let opts =
                format!("-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''");
            let log = pg.data.join("server.log");
            let log = log.to_string_lossy();
            match pg
                .pg_ctl(&["start", "-w", "-t", "60", "-l", &log, "-o", &opts])
                .await
            {
                Ok(()) => {
                    pg.url = format!(
                        "postgres://{SUPERUSER}:{}@127.0.0.1:{port}/{DATABASE}",
                        password.trim()
                    );
                    return Ok(pg);
                }
                // Another process may have taken the port between probing and binding: try another.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("three attempts were made"))
    }

    /// The port the server listens on.
    pub fn port(&self) -> Option<u16> {
        self.url.rsplit_once(':')?.1.split('/').next()?.parse().ok()
    }

    /// Connection URL of the running cluster (contains its password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stops the server (fast shutdown: open sessions are ended, data is safe).
    pub async fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        match self.pg_ctl(&["stop", "-m", "fast", "-w"]).await {
            Ok(()) => tracing::info!("embedded Postgres stopped"),
            // Ctrl-C in a terminal reaches Postgres too, and it may have stopped on its own already.
            Err(_) if self.pg_ctl(&["status"]).await.is_err() => {
                tracing::info!("embedded Postgres stopped")
            }
            Err(e) => tracing::error!(error = %e, "could not stop embedded Postgres"),
        }
    }

    async fn init(&self, password_file: &Path) -> Result<String, EmbeddedPostgresError> {
        tracing::info!(data = %self.data.display(), "initialising the embedded Postgres cluster");
        // No PG_VERSION means an earlier initdb did not finish: nothing in there is worth keeping.
        if self.data.exists() {
            tokio::fs::remove_dir_all(&self.data).await?;
        }
        tokio::fs::create_dir_all(&self.data).await?;
        let password: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        write_private(password_file, &password).await?;
        // initdb reads the password from a file only its user can read, so it never shows in a
        // process list.
        let pwfile = self.data.with_extension("initpw");
        write_private(&pwfile, &password).await?;
        if self.run_as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.data)
                .arg(&pwfile))
            .await?;
        }
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.data)
            .arg(format!("--pwfile={}", pwfile.display()));
        cmd.args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8"]);
        let initialised = run(&mut cmd).await;
        let _ = tokio::fs::remove_file(&pwfile).await;
        initialised?;

        // Create the application database on a short-lived private port.
        let port = free_port()?;
        let opts = format!("-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''");
        let log = self.data.join("server.log");
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            &log.to_string_lossy(),
            "-o",
            &opts,
        ])
        .await?;
        let mut psql = self.command("psql");
        psql.env("PGPASSWORD", &password).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("CREATE DATABASE {DATABASE}"),
        ]);
        let created = run(&mut psql).await;
        self.pg_ctl(&["stop", "-m", "fast", "-w"]).await?;
        created?;
        Ok(password)
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<(), EmbeddedPostgresError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).args(args);
        run(&mut cmd).await
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // Run from a directory the postgres user can read, whatever ours is.
        cmd.current_dir("/");
        cmd
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.url.is_empty() || self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if self.run_as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            std::process::Command::new(pg_ctl)
        };
        let _ = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "fast", "-w"])
            .current_dir("/")
            .output();
    }
}

/// Where the cluster lives: `<data-dir>/postgres`, unless the `postgres` user (under root) cannot
/// reach it (a checkout under a private home, say); then a stable directory of its own in /var/tmp.
async fn cluster_dir(
    data_dir: &Path,
    run_as_postgres: bool,
) -> Result<PathBuf, EmbeddedPostgresError> {
    let inside = data_dir.join("postgres");
    if !run_as_postgres || inside.exists() {
        return Ok(inside);
    }
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(data_dir)
        .current_dir("/")
        .status()
        .await
        .is_ok_and(|s| s.success());
    if reachable {
        return Ok(inside);
    }
    let name: String = data_dir
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let outside = PathBuf::from("/var/tmp/huddle-postgres").join(name);
    tokio::fs::create_dir_all(outside.parent().expect("has a parent")).await?;
    tracing::info!(
        data = %outside.display(),
        "the postgres user cannot reach {}; keeping the cluster outside it",
        data_dir.display()
    );
    Ok(outside)
}

/// Looks for `pg_ctl` in the given directory, then the newest /usr/lib/postgresql/*/bin, then PATH.
fn find_binaries(explicit: Option<&Path>) -> Result<PathBuf, EmbeddedPostgresError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = explicit {
        candidates.push(dir.to_path_buf());
    } else {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        versions.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        candidates.extend(versions.into_iter().rev());
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path));
        }
    }
    candidates
        .iter()
        .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file())
        .cloned()
        .ok_or_else(|| EmbeddedPostgresError::BinariesNotFound {
            searched: if explicit.is_some() {
                candidates[0].display().to_string()
            } else {
                "/usr/lib/postgresql/*/bin and PATH".to_string()
            },
        })
}

async fn is_root() -> bool {
    match Command::new("id").arg("-u").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "0",
        Err(_) => false,
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(0o600);
    let path = path.to_path_buf();
    let contents = contents.to_string();
    tokio::task::spawn_blocking(move || {
        std::io::Write::write_all(&mut opts.open(path)?, contents.as_bytes())
    })
    .await
    .map_err(std::io::Error::other)?
}

fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    let args: Vec<_> = std
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", std.get_program().to_string_lossy(), args.join(" "))
}

async fn run(cmd: &mut Command) -> Result<(), EmbeddedPostgresError> {
    let out = cmd.stdin(Stdio::null()).output().await.map_err(|source| {
        EmbeddedPostgresError::Program {
            program: cmd.as_std().get_program().to_string_lossy().into_owned(),
            source,
        }
    })?;
    check(cmd, out)
}

fn check(cmd: &Command, out: std::process::Output) -> Result<(), EmbeddedPostgresError> {
    if out.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    if detail.is_empty() {
        detail = out.status.to_string();
    }
    Err(EmbeddedPostgresError::Command {
        command: describe(cmd),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_how_to_get_them() {
        let err = find_binaries(Some(Path::new("/nonexistent/pg/bin"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/pg/bin"), "{msg}");
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("DATABASE_URL"), "{msg}");
    }
}
