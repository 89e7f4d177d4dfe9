//! Limits on what one sandbox may take (processes, memory), as control groups where the host lets
//! Huddle make them: cgroup v1 `pids` and `memory` hierarchies, or a cgroup v2 tree with both
//! controllers. A group per sandbox also tells what happened: how often its process limit was
//! hit, and how many of its processes the kernel killed for memory.

use std::path::{Path, PathBuf};

/// The limits each sandbox gets.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    /// Processes (and threads) at once.
    pub pids: u64,
    /// Memory in bytes.
    pub memory: u64,
}

/// How this host takes limits: found once at start.
#[derive(Debug, Clone)]
pub enum CgroupSupport {
    V1 { pids: PathBuf, memory: PathBuf },
    V2 { root: PathBuf },
    Unavailable(String),
}

const ROOT: &str = "/sys/fs/cgroup";
/// The group Huddle's sandboxes live under.
const PARENT: &str = "huddle-sandboxes";

impl CgroupSupport {
    /// What this host allows: a writable v2 tree with the memory and pids controllers, or
    /// writable v1 `pids` and `memory` hierarchies.
    pub fn detect() -> Self {
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").is_file() {
            let parent = root.join(PARENT);
            let made = std::fs::create_dir_all(&parent).and_then(|()| {
                std::fs::write(root.join("cgroup.subtree_control"), "+memory +pids")?;
                std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids")
            });
            return match made {
                Ok(()) => Self::V2 { root: parent },
                Err(e) => Self::Unavailable(format!("cgroup v2 is not writable here ({e})")),
            };
        }
        let pids = root.join("pids").join(PARENT);
        let memory = root.join("memory").join(PARENT);
        match std::fs::create_dir_all(&pids).and_then(|()| std::fs::create_dir_all(&memory)) {
            Ok(()) => Self::V1 { pids, memory },
            Err(e) => Self::Unavailable(format!(
                "the cgroup v1 pids and memory hierarchies are not writable here ({e})"
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::V1 { .. } => "cgroup v1 (pids, memory)".into(),
            Self::V2 { .. } => "cgroup v2 (pids, memory)".into(),
            Self::Unavailable(why) => why.clone(),
        }
    }

    /// Makes (or finds) the groups of one sandbox with its limits.
    pub fn group(&self, id: &str, limits: SandboxLimits) -> std::io::Result<Option<Cgroup>> {
        let group = match self {
            Self::V1 { pids, memory } => {
                let g = Cgroup {
                    pids: pids.join(id),
                    memory: memory.join(id),
                };
                std::fs::create_dir_all(&g.pids)?;
                std::fs::create_dir_all(&g.memory)?;
                std::fs::write(g.pids.join("pids.max"), limits.pids.to_string())?;
                std::fs::write(
                    g.memory.join("memory.limit_in_bytes"),
                    limits.memory.to_string(),
                )?;
                g
            }
            Self::V2 { root } => {
                let dir = root.join(id);
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("pids.max"), limits.pids.to_string())?;
                std::fs::write(dir.join("memory.max"), limits.memory.to_string())?;
                Cgroup {
                    pids: dir.clone(),
                    memory: dir,
                }
            }
            Self::Unavailable(_) => return Ok(None),
        };
        Ok(Some(group))
    }
}

/// The groups of one sandbox (one directory for both on cgroup v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    pids: PathBuf,
    memory: PathBuf,
}

/// What the kernel did to a sandbox, as counters that only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// Times a process could not start because of the process limit.
    pub pids_refused: u64,
    /// Processes killed for memory.
    pub oom_kills: u64,
}

impl Cgroup {
    /// The files a process writes its pid to, to join the groups.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.pids.join("cgroup.procs")];
        if self.memory != self.pids {
            files.push(self.memory.join("cgroup.procs"));
        }
        files
    }

    pub fn pressure(&self) -> Pressure {
        let counter = |file: PathBuf, key: &str| -> u64 {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| {
                    text.lines().find_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        (k == key).then(|| v.trim().parse().ok()).flatten()
                    })
                })
                .unwrap_or(0)
        };
        let oom_file = if self.memory == self.pids {
            self.memory.join("memory.events")
        } else {
            self.memory.join("memory.oom_control")
        };
        Pressure {
            pids_refused: counter(self.pids.join("pids.events"), "max"),
            oom_kills: counter(oom_file, "oom_kill"),
        }
    }

    /// Processes still in the group.
    pub fn processes(&self) -> Vec<i32> {
        std::fs::read_to_string(self.pids.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills whatever is left in the group (what left the sandbox's process group too) and
    /// removes it.
    pub async fn kill_and_remove(&self) {
        self.kill_all().await;
        let _ = std::fs::remove_dir(&self.pids);
        if self.memory != self.pids {
            let _ = std::fs::remove_dir(&self.memory);
        }
    }

    /// Kills every process in the group (a fork bomb's too: new ones are refused at the limit).
    pub async fn kill_all(&self) {
        for _ in 0..50 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
