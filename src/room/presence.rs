//! Who is in the room: ephemeral state of the actor, derived from live connections. Nothing is
//! written per connection; the timeline gets a "joined" row when a person arrives and a "left" row
//! only once they have been gone for [`LEAVE_GRACE`], so a reload or a flaky network shows nothing.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{Member, RoomEvent};

/// How long a person may be gone before the room says they left.
pub(super) const LEAVE_GRACE: Duration = Duration::from_secs(30);
/// Changes to who is online are sent at most this often.
pub(super) const COALESCE: Duration = Duration::from_millis(200);

struct Person {
    member: Member,
    connections: usize,
    gone_since: Option<Instant>,
}

/// How long another node's connection counts without that node saying it is still there.
pub(super) const REMOTE_TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Presence {
    /// Connections to other nodes that follow this room, by their token: the local connection
    /// standing for each, and when its node last said it is still there.
    remote: HashMap<String, (u64, Instant)>,
    connections: HashMap<u64, Option<String>>,
    people: HashMap<String, Person>,
    next_conn: u64,
    /// When to send the online list next (a change is pending).
    flush_at: Option<Instant>,
}

impl Presence {
    /// A new connection; returns its id and the "joined" row to write, if the person just arrived.
    pub(super) fn connect(&mut self, member: Option<Member>) -> (u64, Option<RoomEvent>) {
        self.next_conn += 1;
        let conn = self.next_conn;
        let Some(member) = member else {
            self.connections.insert(conn, None);
            return (conn, None);
        };
        self.connections.insert(conn, Some(member.user_id.clone()));
        self.changed();
        let person = self
            .people
            .entry(member.user_id.clone())
            .or_insert_with(|| Person {
                member: member.clone(),
                connections: 0,
                gone_since: None,
            });
        let arrived = person.connections == 0 && person.gone_since.is_none();
        person.connections += 1;
        person.gone_since = None;
        person.member.display_name = member.display_name.clone();
        let joined = arrived.then(|| RoomEvent::Presence {
            user_id: member.user_id,
            display_name: member.display_name,
            online: true,
        });
        (conn, joined)
    }

    pub(super) fn disconnect(&mut self, conn: u64) {
        let Some(Some(user)) = self.connections.remove(&conn) else {
            return;
        };
        if let Some(p) = self.people.get_mut(&user) {
            p.connections = p.connections.saturating_sub(1);
            if p.connections == 0 {
                p.gone_since = Some(Instant::now());
                self.changed();
            }
        }
    }

    /// A person connected to another node that follows the room (again: it is still there).
    pub(super) fn join_remote(&mut self, token: String, member: Member) -> Option<RoomEvent> {
        if let Some((_, seen)) = self.remote.get_mut(&token) {
            *seen = Instant::now();
            return None;
        }
        let (conn, joined) = self.connect(Some(member));
        self.remote.insert(token, (conn, Instant::now()));
        joined
    }

    pub(super) fn leave_remote(&mut self, token: &str) {
        if let Some((conn, _)) = self.remote.remove(token) {
            self.disconnect(conn);
        }
    }

    /// Other nodes' connections not confirmed within [`REMOTE_TTL`] (their node died) leave.
    pub(super) fn expire_remote(&mut self) {
        let now = Instant::now();
        let stale: Vec<String> = self
            .remote
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) >= REMOTE_TTL)
            .map(|(t, _)| t.clone())
            .collect();
        for token in stale {
            self.leave_remote(&token);
        }
    }

    /// When the next remote connection expires.
    pub(super) fn next_remote_expiry(&self) -> Option<Instant> {
        self.remote
            .values()
            .map(|(_, seen)| *seen + REMOTE_TTL)
            .min()
    }

    /// Someone changed their name: the online list says so.
    pub(super) fn renamed(&mut self, user_id: &str, name: &str) {
        if let Some(p) = self.people.get_mut(user_id)
            && p.member.display_name != name
        {
            p.member.display_name = name.to_string();
            if p.connections > 0 {
                self.changed();
            }
        }
    }

    fn changed(&mut self) {
        if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + COALESCE);
        }
    }

    /// When the online list is due to be sent.
    pub(super) fn flush_at(&self) -> Option<Instant> {
        self.flush_at
    }

    /// The online list, now due; clears the pending change.
    pub(super) fn flush(&mut self) -> Vec<Member> {
        self.flush_at = None;
        self.online()
    }

    /// People with at least one connection, by name.
    pub(super) fn online(&self) -> Vec<Member> {
        let mut online: Vec<Member> = self
            .people
            .values()
            .filter(|p| p.connections > 0)
            .map(|p| p.member.clone())
            .collect();
        online.sort_by(|a, b| {
            a.display_name
                .to_lowercase()
                .cmp(&b.display_name.to_lowercase())
        });
        online
    }

    /// "Left" rows for people gone longer than the grace (all who are gone, with `all`).
    pub(super) fn sweep(&mut self, all: bool) -> Vec<RoomEvent> {
        let now = Instant::now();
        let left: Vec<String> = self
            .people
            .iter()
            .filter(|(_, p)| {
                p.gone_since
                    .is_some_and(|t| all || now.duration_since(t) >= LEAVE_GRACE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        left.into_iter()
            .filter_map(|k| self.people.remove(&k))
            .map(|p| RoomEvent::Presence {
                user_id: p.member.user_id,
                display_name: p.member.display_name,
                online: false,
            })
            .collect()
    }

    /// When the next "left" row is due.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        self.people
            .values()
            .filter_map(|p| p.gone_since)
            .min()
            .map(|t| t + LEAVE_GRACE)
    }

    /// No connection at all, named or not.
    pub(super) fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ada() -> Option<Member> {
        Some(Member {
            user_id: "ada".into(),
            display_name: "Ada".into(),
            role: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn people_not_connections() {
        let mut p = Presence::default();
        let (a, joined) = p.connect(ada());
        assert!(joined.is_some());
        let (b, again) = p.connect(ada());
        assert!(again.is_none(), "a second tab is the same person");
        let (anon, none) = p.connect(None);
        assert!(none.is_none());
        assert_eq!(p.online().len(), 1);
        p.disconnect(a);
        p.disconnect(b);
        p.disconnect(anon);
        assert!(p.online().is_empty());
        assert!(p.sweep(false).is_empty(), "not gone long enough");
        // Back within the grace: nothing to say.
        let (c, back) = p.connect(ada());
        assert!(back.is_none());
        p.disconnect(c);
        tokio::time::advance(LEAVE_GRACE).await;
        assert_eq!(p.sweep(false).len(), 1);
        assert!(p.is_empty());
        assert!(p.next_sweep().is_none());
    }
}
