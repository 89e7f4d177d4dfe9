//! The JSON API: Leptos server functions with fixed endpoints, callable from the UI, scripts and bots.
//! Each one is thin: it validates input and hands the work to the server through context.

use leptos::prelude::*;
use server_fn::codec::Json;

pub use crate::error::{ApiError, ErrorCode};

use crate::model::{CreatedWorkspace, WorkspaceSummary};

/// Creates a workspace with the given agent (`mock` when none is given); the caller owns it.
/// `directory` picks an existing directory under HUDDLE_PROJECTS_ROOT instead of a new one.
#[server(prefix = "/api", endpoint = "workspace/create", input = Json, output = Json)]
pub async fn create_workspace(
    #[server(default)] agent: Option<String>,
    #[server(default)] directory: Option<String>,
    #[server(default)] name: Option<String>,
) -> Result<CreatedWorkspace, ApiError> {
    let (state, caller) = service()?;
    state
        .create_workspace(
            &caller,
            agent.as_deref(),
            directory.as_deref(),
            name.as_deref(),
        )
        .await
}

/// Gives a workspace a new name (its owner only).
#[server(prefix = "/api", endpoint = "workspace/rename", input = Json, output = Json)]
pub async fn rename_workspace(
    #[server(rename = "workspaceId")] workspace_id: String,
    name: String,
) -> Result<WorkspaceSummary, ApiError> {
    let (state, caller) = service()?;
    state.rename_workspace(&caller, &workspace_id, &name).await
}

/// A workspace as recorded in the database.
#[server(prefix = "/api", endpoint = "workspace/get", input = Json, output = Json)]
pub async fn get_workspace(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<WorkspaceSummary, ApiError> {
    let (state, caller) = service()?;
    state.workspace(&caller, &workspace_id).await
}

/// Deletes a workspace for good (its owner only): its log, images, invites, tokens, sandbox and
/// working directory go.
#[server(prefix = "/api", endpoint = "workspace/delete", input = Json, output = Json)]
pub async fn delete_workspace(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state.delete_workspace(&caller, &workspace_id).await
}

/// Moves a workspace's sandbox to another sandbox host (the instance owner only).
#[server(prefix = "/api", endpoint = "workspace/move", input = Json, output = Json)]
pub async fn move_workspace(
    #[server(rename = "workspaceId")] workspace_id: String,
    host: String,
) -> Result<WorkspaceSummary, ApiError> {
    let (state, caller) = service()?;
    state.move_workspace(&caller, &workspace_id, &host).await
}

/// The registered sandbox hosts, with their health and load (the instance owner only).
#[server(prefix = "/api", endpoint = "sandbox-hosts", input = Json, output = Json)]
pub async fn sandbox_hosts() -> Result<Vec<crate::model::SandboxHostInfo>, ApiError> {
    let (state, caller) = service()?;
    state.sandbox_hosts(&caller).await
}

/// Registers a sandbox-agent server as a sandbox host (the instance owner only).
#[server(prefix = "/api", endpoint = "sandbox-hosts/add", input = Json, output = Json)]
pub async fn add_sandbox_host(
    url: String,
    #[server(default)] token: Option<String>,
    #[server(default)]
    #[server(rename = "cwdRoot")]
    cwd_root: Option<String>,
) -> Result<crate::model::SandboxHostInfo, ApiError> {
    let (state, caller) = service()?;
    state.add_sandbox_host(&caller, &url, token, cwd_root).await
}

/// The workspace's session and who is in the room.
#[server(prefix = "/api", endpoint = "workspace/info", input = Json, output = Json)]
pub async fn workspace_info(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
) -> Result<crate::model::WorkspaceInfo, ApiError> {
    let (state, caller) = service()?;
    state
        .info(&caller, &workspace_id, thread_id.as_deref())
        .await
}

/// Posts the caller's message to the room and prompts the agent with it (queued while a turn
/// runs); with `teamOnly` it is for the team, and the agent gets it as context with the next
/// prompt. The author is whoever the session or token says, never the body.
#[server(prefix = "/api", endpoint = "workspace/prompt", input = Json, output = Json)]
pub async fn prompt(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
    text: String,
    #[server(default)]
    #[server(rename = "teamOnly")]
    team_only: bool,
    #[server(default)] images: Vec<crate::model::ImageUpload>,
    #[server(default)] mentions: Vec<String>,
) -> Result<crate::model::PromptAccepted, ApiError> {
    let (state, caller) = service()?;
    let seq = state
        .prompt(
            &caller,
            &workspace_id,
            thread_id.as_deref(),
            crate::state::NewMessage {
                text,
                team_only,
                images,
                mentions,
            },
        )
        .await?;
    Ok(crate::model::PromptAccepted { seq })
}

/// Stops the running turn (and, with `clearQueue`, drops the prompts waiting behind it); the
/// session lives on.
#[server(prefix = "/api", endpoint = "workspace/cancel", input = Json, output = Json)]
pub async fn cancel(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
    #[server(default)]
    #[server(rename = "clearQueue")]
    clear_queue: bool,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .cancel(&caller, &workspace_id, thread_id.as_deref(), clear_queue)
        .await
}

/// Takes a waiting prompt off the queue (the owner any, others their own).
#[server(prefix = "/api", endpoint = "workspace/queue/remove", input = Json, output = Json)]
pub async fn remove_queued(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
    seq: i64,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .remove_queued(&caller, &workspace_id, thread_id.as_deref(), seq)
        .await
}

/// Changes an option of the agent's session for everyone (its mode, its model): `configId` as the
/// agent names it (`_mode` for an agent's legacy mode list), `value` one of its choices.
#[server(prefix = "/api", endpoint = "workspace/option", input = Json, output = Json)]
pub async fn set_option(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
    #[server(rename = "configId")] config_id: String,
    value: String,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .set_option(
            &caller,
            &workspace_id,
            thread_id.as_deref(),
            config_id,
            value,
        )
        .await
}

/// Answers a permission request of the agent; the first answer wins.
#[server(prefix = "/api", endpoint = "workspace/permission", input = Json, output = Json)]
pub async fn answer_permission(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
    #[server(rename = "requestId")] request_id: String,
    #[server(rename = "optionId")] option_id: String,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .answer_permission(
            &caller,
            &workspace_id,
            thread_id.as_deref(),
            request_id,
            option_id,
        )
        .await
}

/// Tells the room the caller is typing (not kept in the log).
#[server(prefix = "/api", endpoint = "workspace/typing", input = Json, output = Json)]
pub async fn typing(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .typing(&caller, &workspace_id, thread_id.as_deref())
        .await
}

/// The room's state and its whole log.
#[server(prefix = "/api", endpoint = "workspace/snapshot", input = Json, output = Json)]
pub async fn room_snapshot(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
) -> Result<crate::model::RoomSnapshot, ApiError> {
    let (state, caller) = service()?;
    state
        .room_snapshot(&caller, &workspace_id, thread_id.as_deref())
        .await
}

/// Everything the page of a workspace renders: who is looking, their access, and the room.
#[server(prefix = "/api", endpoint = "workspace/page", input = Json, output = Json)]
pub async fn room_page(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
    /// With no `threadId`: the most recently active thread instead of the first.
    #[server(default)]
    latest: bool,
) -> Result<crate::timeline::RoomPage, ApiError> {
    let (state, caller) = service()?;
    state
        .room_page(&caller, &workspace_id, thread_id.as_deref(), latest)
        .await
}

/// Older rows of the room's timeline, before row `before` (a keyset page).
#[server(prefix = "/api", endpoint = "workspace/history", input = Json, output = Json)]
pub async fn history(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
    before: usize,
) -> Result<crate::timeline::HistoryPage, ApiError> {
    let (state, caller) = service()?;
    state
        .history(&caller, &workspace_id, thread_id.as_deref(), before)
        .await
}

/// The workspace's threads for the caller: title, agent, live status, unread count, last
/// activity; most recently active first.
#[server(prefix = "/api", endpoint = "workspace/threads", input = Json, output = Json)]
pub async fn threads(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<crate::model::ThreadList, ApiError> {
    let (state, caller) = service()?;
    state.threads(&caller, &workspace_id).await
}

/// A new thread (members), with its own agent (the workspace's when absent); with `forkFrom`
/// it continues another thread's conversation up to one of its rows.
#[server(prefix = "/api", endpoint = "workspace/threads/create", input = Json, output = Json)]
pub async fn create_thread(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)] agent: Option<String>,
    #[server(default)] title: Option<String>,
    #[server(default)]
    #[server(rename = "forkFrom")]
    fork_from: Option<crate::model::ForkFrom>,
) -> Result<crate::model::CreatedThread, ApiError> {
    let (state, caller) = service()?;
    state
        .create_thread(
            &caller,
            &workspace_id,
            agent.as_deref(),
            title.as_deref(),
            fork_from,
        )
        .await
}

/// Names a thread (members); an empty title goes back to the agent's.
#[server(prefix = "/api", endpoint = "workspace/threads/rename", input = Json, output = Json)]
pub async fn rename_thread(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "threadId")] thread_id: String,
    title: String,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .rename_thread(&caller, &workspace_id, &thread_id, &title)
        .await
}

/// Archives a thread, or with `archived: false` brings it back (members).
#[server(prefix = "/api", endpoint = "workspace/threads/archive", input = Json, output = Json)]
pub async fn archive_thread(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "threadId")] thread_id: String,
    archived: bool,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .archive_thread(&caller, &workspace_id, &thread_id, archived)
        .await
}

/// The caller has read a thread up to `seq` (kept per person, across browsers).
#[server(prefix = "/api", endpoint = "workspace/threads/read", input = Json, output = Json)]
pub async fn mark_read(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)]
    #[server(rename = "threadId")]
    thread_id: Option<String>,
    seq: i64,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .mark_read(&caller, &workspace_id, thread_id.as_deref(), seq)
        .await
}

/// What the home page shows the caller.
#[server(prefix = "/api", endpoint = "home", input = Json, output = Json)]
pub async fn home() -> Result<crate::model::HomeView, ApiError> {
    let (state, caller) = service()?;
    state.home(&caller).await
}

/// Who the caller is.
#[server(prefix = "/api", endpoint = "me", input = Json, output = Json)]
pub async fn me() -> Result<crate::model::Me, ApiError> {
    let (state, caller) = service()?;
    state.auth().me(&caller)
}

/// Changes the caller's display name (kept on the server).
#[server(prefix = "/api", endpoint = "me/name", input = Json, output = Json)]
pub async fn rename(
    #[server(rename = "displayName")] display_name: String,
) -> Result<crate::model::Me, ApiError> {
    let (state, caller) = service()?;
    state.rename(&caller, &display_name).await
}

/// A new invite link for `member` or `viewer` (owners only).
#[server(prefix = "/api", endpoint = "workspace/invite", input = Json, output = Json)]
pub async fn invite(
    #[server(rename = "workspaceId")] workspace_id: String,
    role: String,
) -> Result<crate::model::CreatedInvite, ApiError> {
    let (state, caller) = service()?;
    state.auth().invite(&caller, &workspace_id, &role).await
}

/// A link that lets whoever opens it create workspaces (the instance owner only).
#[server(prefix = "/api", endpoint = "instance/invite", input = Json, output = Json)]
pub async fn creator_invite() -> Result<crate::model::CreatedInvite, ApiError> {
    let (state, caller) = service()?;
    state.auth().creator_invite(&caller).await
}

/// Revokes an invite link: it admits nobody new (`workspaceId` absent: an instance invite).
#[server(prefix = "/api", endpoint = "workspace/invites/revoke", input = Json, output = Json)]
pub async fn revoke_invite(
    #[server(default)]
    #[server(rename = "workspaceId")]
    workspace_id: Option<String>,
    #[server(rename = "inviteId")] invite_id: String,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .auth()
        .revoke_invite(&caller, workspace_id.as_deref(), &invite_id)
        .await
}

/// Revokes an invite link and makes a new one for the same role.
#[server(prefix = "/api", endpoint = "workspace/invites/rotate", input = Json, output = Json)]
pub async fn rotate_invite(
    #[server(default)]
    #[server(rename = "workspaceId")]
    workspace_id: Option<String>,
    #[server(rename = "inviteId")] invite_id: String,
) -> Result<crate::model::CreatedInvite, ApiError> {
    let (state, caller) = service()?;
    state
        .auth()
        .rotate_invite(&caller, workspace_id.as_deref(), &invite_id)
        .await
}

/// Who is in the workspace, its invites and tokens (owners only).
#[server(prefix = "/api", endpoint = "workspace/members", input = Json, output = Json)]
pub async fn members(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<crate::model::Members, ApiError> {
    let (state, caller) = service()?;
    state.auth().members(&caller, &workspace_id).await
}

/// Changes someone's role (`owner`, `member`, `viewer`); a workspace keeps at least one owner.
#[server(prefix = "/api", endpoint = "workspace/members/role", input = Json, output = Json)]
pub async fn set_role(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "personId")] person_id: String,
    role: String,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .auth()
        .set_role(&caller, &workspace_id, &person_id, &role)
        .await
}

/// Removes someone from the workspace (a bot's token is revoked with it).
#[server(prefix = "/api", endpoint = "workspace/members/remove", input = Json, output = Json)]
pub async fn remove_member(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "personId")] person_id: String,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .auth()
        .remove(&caller, &workspace_id, &person_id)
        .await
}

/// Makes someone an approver, or not.
#[server(prefix = "/api", endpoint = "workspace/members/approver", input = Json, output = Json)]
pub async fn set_approver(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "personId")] person_id: String,
    approver: bool,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .auth()
        .set_approver(&caller, &workspace_id, &person_id, approver)
        .await
}

/// With `enabled`, only owners and the chosen approvers answer permission requests.
#[server(prefix = "/api", endpoint = "workspace/approvers-only", input = Json, output = Json)]
pub async fn set_approvers_only(
    #[server(rename = "workspaceId")] workspace_id: String,
    enabled: bool,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .auth()
        .set_approvers_only(&caller, &workspace_id, enabled)
        .await
}

/// A new API token for a script or bot (`member` by default, or `viewer`); shown this once.
#[server(prefix = "/api", endpoint = "workspace/tokens/create", input = Json, output = Json)]
pub async fn create_token(
    #[server(rename = "workspaceId")] workspace_id: String,
    name: String,
    #[server(default)] role: Option<String>,
) -> Result<crate::model::CreatedToken, ApiError> {
    let (state, caller) = service()?;
    state
        .auth()
        .create_token(&caller, &workspace_id, &name, role.as_deref())
        .await
}

/// Revokes an API token: its next request gets 401.
#[server(prefix = "/api", endpoint = "workspace/tokens/revoke", input = Json, output = Json)]
pub async fn revoke_token(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "tokenId")] token_id: String,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .auth()
        .revoke_token(&caller, &workspace_id, &token_id)
        .await
}

/// Renders an agent message's markdown to sanitised HTML.
#[server(prefix = "/api", endpoint = "markdown", input = Json, output = Json)]
pub async fn render_markdown(text: String) -> Result<String, ApiError> {
    // For the people of Huddle's rooms, not a free renderer for anyone.
    let (state, caller) = service()?;
    state.auth().me(&caller)?;
    Ok(crate::markdown::render(&text))
}

/// The agents sandbox-agent offers, with whether each is installed and has credentials.
#[server(prefix = "/api", endpoint = "agents", input = Json, output = Json)]
pub async fn list_agents() -> Result<Vec<crate::model::AgentChoice>, ApiError> {
    let (state, caller) = service()?;
    state.auth().creator(&caller)?;
    Ok(state.agents().await)
}

/// What needs the caller now, across their workspaces: permission requests they may answer,
/// turns they started that ended since they last looked, messages that mention them.
#[server(prefix = "/api", endpoint = "inbox", input = Json, output = Json)]
pub async fn inbox() -> Result<crate::model::Inbox, ApiError> {
    let (state, caller) = service()?;
    state.inbox(&caller).await
}

/// Marks an inbox item read (the caller's read mark of the thread moves past it; a permission
/// request leaves only the caller's inbox).
#[server(prefix = "/api", endpoint = "inbox/read", input = Json, output = Json)]
pub async fn inbox_read(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(rename = "threadId")] thread_id: String,
    seq: i64,
) -> Result<(), ApiError> {
    let (state, caller) = service()?;
    state
        .inbox_read(&caller, &workspace_id, &thread_id, seq)
        .await
}

/// The caller's notification settings (and the instance's VAPID public key).
#[server(prefix = "/api", endpoint = "notify/settings", input = Json, output = Json)]
pub async fn notify_settings() -> Result<crate::model::NotifySettings, ApiError> {
    let (state, caller) = service()?;
    state.notify_settings(&caller).await
}

/// What is pushed to the caller's browsers: `all`, `important` (permission requests and
/// mentions) or `none`.
#[server(prefix = "/api", endpoint = "notify/level", input = Json, output = Json)]
pub async fn set_notify_level(level: String) -> Result<crate::model::NotifySettings, ApiError> {
    let (state, caller) = service()?;
    state.set_notify_level(&caller, &level).await
}

/// Mutes (or unmutes) pushes from one workspace for the caller.
#[server(prefix = "/api", endpoint = "notify/mute", input = Json, output = Json)]
pub async fn mute_workspace(
    #[server(rename = "workspaceId")] workspace_id: String,
    muted: bool,
) -> Result<crate::model::NotifySettings, ApiError> {
    let (state, caller) = service()?;
    state.mute_workspace(&caller, &workspace_id, muted).await
}

/// A browser's push subscription (`PushSubscription.toJSON()`'s endpoint and keys).
#[server(prefix = "/api", endpoint = "push/subscribe", input = Json, output = Json)]
pub async fn push_subscribe(
    endpoint: String,
    keys: crate::model::PushKeys,
) -> Result<crate::model::NotifySettings, ApiError> {
    let (state, caller) = service()?;
    state
        .push_subscribe(&caller, &endpoint, &keys.p256dh, &keys.auth)
        .await
}

#[server(prefix = "/api", endpoint = "push/unsubscribe", input = Json, output = Json)]
pub async fn push_unsubscribe(endpoint: String) -> Result<crate::model::NotifySettings, ApiError> {
    let (state, caller) = service()?;
    state.push_unsubscribe(&caller, &endpoint).await
}

/// Sets the workspace's team webhook (owners); an empty `url` removes it. The signing secret is
/// answered this once.
#[server(prefix = "/api", endpoint = "workspace/webhook", input = Json, output = Json)]
pub async fn set_webhook(
    #[server(rename = "workspaceId")] workspace_id: String,
    #[server(default)] url: Option<String>,
) -> Result<crate::model::WebhookSecret, ApiError> {
    let (state, caller) = service()?;
    let secret = state
        .set_webhook(&caller, &workspace_id, url.as_deref())
        .await?;
    Ok(crate::model::WebhookSecret { secret })
}

/// The people of a workspace a message can mention.
#[server(prefix = "/api", endpoint = "workspace/people", input = Json, output = Json)]
pub async fn workspace_people(
    #[server(rename = "workspaceId")] workspace_id: String,
) -> Result<crate::model::MentionablePeople, ApiError> {
    let (state, caller) = service()?;
    Ok(crate::model::MentionablePeople {
        people: state.mentionable(&caller, &workspace_id).await?,
    })
}

/// The server's state and who is calling, from the context every server function runs in.
#[cfg(feature = "ssr")]
fn service() -> Result<(crate::state::AppState, crate::auth::Caller), ApiError> {
    Ok((crate::state::state()?, crate::auth::caller()))
}
