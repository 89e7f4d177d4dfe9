//! The agent processes a local sandbox-agent server starts, known by the connection that started
//! each one, so that closing a connection ends its agent.
//!
//! sandbox-agent 0.4.2's DELETE kills the agent only after taking a lock that the task waiting for
//! the agent's exit holds while the agent lives: the DELETE hangs and the agent (with its
//! children: Claude Code under its adapter) runs until the server stops. A room that reopens its
//! session after every Stop would collect one such agent per Stop. So when a connection closes,
//! whatever is left of the processes its first POST started is signalled here; that also lets the
//! server's DELETE finish.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long an agent gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// The agent processes of one local sandbox-agent server (its pid).
#[derive(Debug)]
pub struct AgentProcesses {
    server: i32,
    /// Agents are started one at a time, so each new child belongs to the POST that made it.
    starting: tokio::sync::Mutex<()>,
}

impl AgentProcesses {
    pub fn new(server_pid: i32) -> Self {
        Self {
            server: server_pid,
            starting: tokio::sync::Mutex::new(()),
        }
    }

    /// The server's running children: one agent (adapter) process per open connection.
    pub fn agents(&self) -> HashSet<i32> {
        children(self.server)
            .into_iter()
            .filter(|&pid| alive(pid))
            .collect()
    }

    /// Runs a connection's first POST (which starts its agent) and returns the processes it
    /// started. Agents start one at a time, but only until the new one shows: a first POST whose
    /// agent is slow to answer does not hold the others back.
    pub(crate) async fn starting<T>(&self, first_post: impl Future<Output = T>) -> (T, Vec<i32>) {
        let mut one_at_a_time = Some(self.starting.lock().await);
        let before = children(self.server);
        let started = || -> Vec<i32> {
            children(self.server)
                .into_iter()
                .filter(|pid| !before.contains(pid))
                .collect()
        };
        tokio::pin!(first_post);
        let mut found = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let out = loop {
            tokio::select! {
                out = &mut first_post => break out,
                _ = tick.tick(), if one_at_a_time.is_some() => {
                    found = started();
                    if !found.is_empty() {
                        one_at_a_time = None;
                    }
                }
            }
        };
        if one_at_a_time.is_some() {
            found = started();
        }
        (out, found)
    }

    /// Ends what is left of these agents and every process under them: SIGTERM, then SIGKILL after
    /// a grace period. A pid that is no longer the server's child is not ours any more.
    pub(crate) async fn end(&self, agents: Vec<i32>) {
        let ours = children(self.server);
        let mut tree: Vec<i32> = Vec::new();
        for pid in agents.into_iter().filter(|p| ours.contains(p)) {
            tree.push(pid);
            descendants(pid, &mut tree);
        }
        tree.retain(|&pid| alive(pid));
        if tree.is_empty() {
            return;
        }
        tracing::debug!(pids = ?tree, "ending the agent of a closed connection");
        signal(&tree, Signal::SIGTERM);
        wait_gone(&tree).await;
        let stubborn: Vec<i32> = tree.into_iter().filter(|&pid| alive(pid)).collect();
        if stubborn.is_empty() {
            return;
        }
        tracing::warn!(pids = ?stubborn, "an agent ignored SIGTERM; killing it");
        signal(&stubborn, Signal::SIGKILL);
        // A killed process is gone a moment later; callers may count on it.
        wait_gone(&stubborn).await;
    }
}

/// Waits until none of these runs, for [`GRACE`] at most.
async fn wait_gone(pids: &[i32]) {
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && pids.iter().any(|&pid| alive(pid)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pids: &[i32], sig: Signal) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Children of a process, over all its threads (the kernel lists a child under the thread that
/// forked it).
pub(crate) fn children_of(pid: i32) -> HashSet<i32> {
    children(pid)
}

fn children(pid: i32) -> HashSet<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashSet::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

fn descendants(pid: i32, out: &mut Vec<i32>) {
    for child in children(pid) {
        out.push(child);
        descendants(child, out);
    }
}

/// Running (a zombie waits only for its parent to reap it).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold anything.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_connections_agent_and_its_children_end() {
        // A stand-in server: a shell whose child ignores SIGTERM and has a child of its own.
        let mut server = tokio::process::Command::new("sh")
            .args(["-c", "sleep 60"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let agents = AgentProcesses::new(me);
        let server_pid = server.id().unwrap() as i32;
        let ((), started) = agents
            .starting(async {
                // Started "by the POST": this test process is the server here.
            })
            .await;
        // What was running before is not "started" (other tests of this binary may start
        // processes meanwhile: only ours is asserted on).
        assert!(!started.contains(&server_pid), "{started:?}");
        assert!(agents.agents().contains(&server_pid));
        let mut stubborn = tokio::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 60 & wait"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stubborn_pid = stubborn.id().unwrap() as i32;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut tree = Vec::new();
        descendants(stubborn_pid, &mut tree);
        assert_eq!(tree.len(), 1, "the stubborn shell has its sleep");
        agents.end(vec![stubborn_pid, server_pid]).await;
        let _ = stubborn.wait().await;
        let _ = server.wait().await;
        assert!(!alive(stubborn_pid), "the agent ended");
        assert!(
            !alive(tree[0]),
            "its child ended: {:?}",
            std::fs::read_to_string(format!("/proc/{}/stat", tree[0]))
        );
        // Not a child of the server: left alone.
        agents.end(vec![1]).await;
        assert!(alive(1));
    }
}
