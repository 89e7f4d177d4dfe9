//! The JSON actions of "needs you", as the API offers them: who may do what, then one call into
//! the service.

use crate::auth::{Auth, Caller, Need};
use crate::error::ApiError;
use crate::model::{Inbox, Mention, Mentionable, NotifyLevel, NotifySettings};
use crate::state::AppState;

/// `@here` in a message: everyone present in the thread.
pub const HERE: &str = "here";
/// The most people one message mentions.
const MAX_MENTIONS: usize = 50;

impl AppState {
    pub async fn inbox(&self, caller: &Caller) -> Result<Inbox, ApiError> {
        let person = Auth::person(caller)?;
        self.needs_you().inbox(&person.id).await
    }

    /// Marks an inbox item (a row of a thread) read for the caller.
    pub async fn inbox_read(
        &self,
        caller: &Caller,
        workspace_id: &str,
        thread_id: &str,
        seq: i64,
    ) -> Result<(), ApiError> {
        let grant = self
            .auth()
            .require(caller, workspace_id, Need::View)
            .await?;
        // The thread must be the workspace's.
        let key = self.room_key(workspace_id, Some(thread_id)).await?;
        self.needs_you()
            .mark_read(&grant.member.user_id, workspace_id, &key.thread, seq)
            .await
    }

    pub async fn notify_settings(&self, caller: &Caller) -> Result<NotifySettings, ApiError> {
        let person = Auth::person(caller)?;
        self.needs_you().settings(&person.id).await
    }

    pub async fn set_notify_level(
        &self,
        caller: &Caller,
        level: &str,
    ) -> Result<NotifySettings, ApiError> {
        let person = Auth::person(caller)?;
        let level = NotifyLevel::parse(level).ok_or_else(|| {
            ApiError::bad_request("`level` must be `all`, `important` or `none`.")
        })?;
        self.needs_you().set_level(&person.id, level).await?;
        self.needs_you().settings(&person.id).await
    }

    pub async fn mute_workspace(
        &self,
        caller: &Caller,
        workspace_id: &str,
        muted: bool,
    ) -> Result<NotifySettings, ApiError> {
        let grant = self
            .auth()
            .require(caller, workspace_id, Need::View)
            .await?;
        let person = &grant.member.user_id;
        self.needs_you()
            .set_muted(person, workspace_id, muted)
            .await?;
        self.needs_you().settings(person).await
    }

    pub async fn push_subscribe(
        &self,
        caller: &Caller,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<NotifySettings, ApiError> {
        let person = Auth::person(caller)?;
        self.needs_you()
            .subscribe(&person.id, endpoint, p256dh, auth)
            .await?;
        self.needs_you().settings(&person.id).await
    }

    pub async fn push_unsubscribe(
        &self,
        caller: &Caller,
        endpoint: &str,
    ) -> Result<NotifySettings, ApiError> {
        let person = Auth::person(caller)?;
        self.needs_you().unsubscribe(&person.id, endpoint).await?;
        self.needs_you().settings(&person.id).await
    }

    /// Sets a workspace's team webhook (owners); the new secret is shown this once.
    pub async fn set_webhook(
        &self,
        caller: &Caller,
        workspace_id: &str,
        url: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        self.auth().require(caller, workspace_id, Need::Own).await?;
        self.needs_you().set_webhook(workspace_id, url).await
    }

    /// Who a message in a workspace can mention.
    pub async fn mentionable(
        &self,
        caller: &Caller,
        workspace_id: &str,
    ) -> Result<Vec<Mentionable>, ApiError> {
        self.auth()
            .require(caller, workspace_id, Need::View)
            .await?;
        self.needs_you().mentionable(workspace_id).await
    }

    /// The people a message mentions, from the ids the composer sent: people of the workspace
    /// only, and `here` as everyone present in the thread (but the author).
    pub(crate) async fn resolve_mentions(
        &self,
        key: &crate::room::RoomKey,
        author: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Mention>, ApiError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let people = self.needs_you().mentionable(&key.workspace).await?;
        let mut wanted: Vec<String> = ids.into_iter().take(MAX_MENTIONS).collect();
        if wanted.iter().any(|id| id == HERE)
            && let Ok(info) = self.registry().info(key).await
        {
            wanted.extend(info.online.into_iter().map(|m| m.user_id));
        }
        let mut out: Vec<Mention> = Vec::new();
        for id in wanted {
            if id == author || out.iter().any(|m| m.person_id == id) {
                continue;
            }
            let Some(p) = people.iter().find(|p| p.person_id == id) else {
                return Err(ApiError::bad_request(
                    "`mentions` names someone who is not in this workspace.",
                ));
            };
            out.push(Mention {
                person_id: p.person_id.clone(),
                display_name: p.display_name.clone(),
            });
        }
        Ok(out)
    }
}
