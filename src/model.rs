//! Types shared by the server and the browser: what the UI and the JSON API speak.

use serde::{Deserialize, Serialize};

/// Longest prompt a teammate may send, in characters.
pub const MAX_PROMPT_CHARS: usize = 16_000;
/// Images one prompt may carry, and the size of each (decoded).
pub const MAX_IMAGES: usize = 4;
pub const MAX_IMAGE_BYTES: usize = 1_000_000;
/// The image types a prompt may carry.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// An image as the API takes it: its type and its bytes in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpload {
    pub mime_type: String,
    pub data: String,
}

/// An image in the room: kept by Huddle, served at [`image_url`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    pub id: String,
    pub mime_type: String,
}

/// Where an image of a workspace is served (to its members).
pub fn image_url(workspace_id: &str, image_id: &str) -> String {
    format!("/api/workspace/{workspace_id}/images/{image_id}")
}
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest agent id accepted when creating a workspace.
pub const MAX_AGENT_CHARS: usize = 64;
/// The agent a workspace gets when none is asked for: needs no credentials.
pub const DEFAULT_AGENT: &str = "mock";

/// A workspace as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSummary {
    pub workspace_id: String,
    pub name: String,
    pub agent: String,
    pub sandbox_id: String,
    /// Where its agent runs (never a token).
    pub sandbox: SandboxSummary,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// How a workspace's agent is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SandboxProvider {
    /// A bubblewrap sandbox on Huddle's machine.
    #[default]
    Local,
    /// On Huddle's machine, not sandboxed (`HUDDLE_SANDBOX=none`).
    None,
    /// On a sandbox host the instance owner registered.
    Remote,
}

impl SandboxProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::None => "none",
            Self::Remote => "remote",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Self::Local),
            "none" => Some(Self::None),
            "remote" => Some(Self::Remote),
            _ => None,
        }
    }
}

/// A workspace's sandbox as people see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSummary {
    pub id: String,
    pub provider: SandboxProvider,
    /// The host it runs on: `local` for Huddle's own machine.
    pub host: String,
}

/// A registered sandbox host, as the instance owner sees it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxHostInfo {
    pub id: String,
    pub url: String,
    pub cwd_root: String,
    pub healthy: bool,
    /// Workspaces placed on it.
    pub workspaces: i64,
}

/// Answer of `POST /api/workspace/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWorkspace {
    pub workspace_id: String,
    pub url: String,
}

/// Workspace ids are 32 lowercase hex digits of a random (v4) UUID: 122 random bits, URL-safe.
pub fn is_valid_workspace_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The page of a workspace.
pub fn workspace_url(id: &str) -> String {
    format!("/w/{id}")
}

/// Agent ids are short slugs such as `mock`, `claude` or `codex`.
pub fn is_valid_agent_id(agent: &str) -> bool {
    !agent.is_empty()
        && agent.len() <= MAX_AGENT_CHARS
        && agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Who sent an ACP envelope: `client` (Huddle) or `agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    Client,
    Agent,
}

impl Sender {
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Client => "client",
            Sender::Agent => "agent",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client" => Some(Sender::Client),
            "agent" => Some(Sender::Agent),
            _ => None,
        }
    }
}

/// The Sandbox Agent SDK's SessionEvent: one JSON-RPC envelope in either direction, in gap-free
/// per-session order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEvent {
    pub id: String,
    pub event_index: i64,
    pub session_id: String,
    pub created_at: i64,
    pub connection_id: String,
    pub sender: Sender,
    pub payload: serde_json::Value,
}

/// Someone in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: String,
    pub display_name: String,
    /// Their role in the workspace (shown with presence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// What someone may do in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Created it (or was made owner): everything, and managing people, invites and tokens.
    Owner,
    /// Chat, prompt, stop, answer permission requests.
    Member,
    /// Sees everything live, can do nothing.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// May prompt, stop and (unless approvers are chosen) answer permission requests.
    pub fn can_act(self) -> bool {
        matches!(self, Role::Owner | Role::Member)
    }
}

/// Who the visitor of a page is (`/api/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub person_id: String,
    pub display_name: String,
    /// Signed in with the operator's link (or the admin token).
    pub instance_owner: bool,
    /// May create workspaces.
    pub may_create: bool,
    /// Goes with the no-JS forms, which cannot send a JSON content type.
    pub csrf: String,
}

impl Me {
    /// Someone who has only looked so far: no identity is kept for them until they act.
    pub fn guest() -> Self {
        Me {
            person_id: String::new(),
            display_name: "Guest".into(),
            instance_owner: false,
            may_create: false,
            csrf: String::new(),
        }
    }
}

/// What the visitor of a workspace page may do there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    pub role: Role,
    pub may_approve: bool,
}

/// An invite link, as its workspace's owner lists it (the secret is shown only when made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteView {
    pub id: String,
    /// `member`, `viewer`, or `creator` (an instance invite: may create workspaces).
    pub role: String,
    pub created_at: i64,
    pub uses: i32,
    pub revoked: bool,
}

/// Answer of `POST /api/workspace/invite` (and of rotating one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedInvite {
    pub id: String,
    /// The link to hand out: opening it joins.
    pub url: String,
}

/// Someone with a membership, as the owner manages them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonView {
    pub person_id: String,
    pub display_name: String,
    pub role: Role,
    pub approver: bool,
    pub is_bot: bool,
}

/// An API token, as its workspace's owner lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub revoked: bool,
}

/// Answer of `POST /api/workspace/tokens/create`: the token is shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    pub id: String,
    pub person_id: String,
    pub token: String,
}

/// Everything a workspace's owner manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    pub people: Vec<PersonView>,
    pub invites: Vec<InviteView>,
    pub tokens: Vec<TokenView>,
    /// Only owners and chosen approvers answer permission requests.
    pub approvers_only: bool,
}

/// A person a message mentions: stored by id, so that a rename or a namesake changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mention {
    pub person_id: String,
    pub display_name: String,
}

/// A prompt waiting for the running turn to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedPrompt {
    /// The room-log seq of the prompt's `chat.user` entry.
    pub seq: i64,
    pub user_id: String,
    pub display_name: String,
    pub text: String,
    /// Images that go to the agent with the text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRef>,
}

/// What is in the room log: everything the room shows, in one gap-free sequence per workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data")]
pub enum RoomEvent {
    #[serde(rename = "chat.user", rename_all = "camelCase")]
    ChatUser {
        user_id: String,
        display_name: String,
        text: String,
        created_at: i64,
        /// For the team only: not a prompt; the agent gets it as context with the next one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        team_only: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<ImageRef>,
        /// The people the message mentions, by person id (their name as it was then).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<Mention>,
    },
    #[serde(rename = "session.event")]
    SessionEvent(SessionEvent),
    #[serde(rename = "prompt.queued", rename_all = "camelCase")]
    PromptQueued {
        prompt_seq: i64,
        user_id: String,
        display_name: String,
        position: usize,
    },
    #[serde(rename = "turn.started", rename_all = "camelCase")]
    TurnStarted {
        prompt_seq: i64,
        user_id: String,
        display_name: String,
    },
    /// Someone stopped the turn and dropped the prompts that waited behind it.
    #[serde(rename = "queue.cleared", rename_all = "camelCase")]
    QueueCleared {
        user_id: String,
        display_name: String,
        prompt_seqs: Vec<i64>,
    },
    /// The owner or its author took a waiting prompt off the queue.
    #[serde(rename = "prompt.removed", rename_all = "camelCase")]
    PromptRemoved {
        prompt_seq: i64,
        user_id: String,
        display_name: String,
    },
    #[serde(rename = "turn.cancelling", rename_all = "camelCase")]
    TurnCancelling {
        user_id: String,
        display_name: String,
    },
    #[serde(rename = "turn.ended", rename_all = "camelCase")]
    TurnEnded {
        prompt_seq: i64,
        stop_reason: Option<String>,
        error: Option<String>,
    },
    #[serde(rename = "permission.requested", rename_all = "camelCase")]
    PermissionRequested {
        request_id: String,
        request: serde_json::Value,
    },
    #[serde(rename = "permission.answered", rename_all = "camelCase")]
    PermissionAnswered {
        request_id: String,
        option_id: String,
        user_id: String,
        display_name: String,
    },
    #[serde(rename = "permission.cancelled", rename_all = "camelCase")]
    PermissionCancelled { request_ids: Vec<String> },
    #[serde(rename = "session.restored", rename_all = "camelCase")]
    SessionRestored {
        replayed_events: usize,
        /// The agent reopened its own session: it remembers the whole conversation.
        #[serde(default)]
        full_memory: bool,
    },
    #[serde(rename = "presence", rename_all = "camelCase")]
    Presence {
        user_id: String,
        display_name: String,
        online: bool,
    },
    #[serde(rename = "notice", rename_all = "camelCase")]
    Notice { level: NoticeLevel, message: String },
    /// The owner gave the workspace a new name.
    #[serde(rename = "workspace.renamed", rename_all = "camelCase")]
    WorkspaceRenamed {
        user_id: String,
        display_name: String,
        name: String,
    },
    /// The first entry of a forked thread: where its conversation came from, and how its agent
    /// got it.
    #[serde(rename = "thread.forked", rename_all = "camelCase")]
    ThreadForked {
        user_id: String,
        display_name: String,
        from_thread_id: String,
        from_title: String,
        seq: i64,
        method: ForkMethod,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeLevel {
    Info,
    Warning,
    Error,
}

/// Every SSE event name of a room-log entry (typing signals come as `typing`).
pub const ROOM_EVENT_KINDS: &[&str] = &[
    "thread.forked",
    "chat.user",
    "session.event",
    "prompt.queued",
    "turn.started",
    "turn.cancelling",
    "queue.cleared",
    "prompt.removed",
    "turn.ended",
    "permission.requested",
    "permission.answered",
    "permission.cancelled",
    "session.restored",
    "presence",
    "notice",
    "workspace.renamed",
];

impl RoomEvent {
    /// The SSE event name of the entry.
    pub fn kind(&self) -> &'static str {
        match self {
            RoomEvent::ChatUser { .. } => "chat.user",
            RoomEvent::SessionEvent(_) => "session.event",
            RoomEvent::PromptQueued { .. } => "prompt.queued",
            RoomEvent::TurnStarted { .. } => "turn.started",
            RoomEvent::TurnCancelling { .. } => "turn.cancelling",
            RoomEvent::QueueCleared { .. } => "queue.cleared",
            RoomEvent::PromptRemoved { .. } => "prompt.removed",
            RoomEvent::TurnEnded { .. } => "turn.ended",
            RoomEvent::PermissionRequested { .. } => "permission.requested",
            RoomEvent::PermissionAnswered { .. } => "permission.answered",
            RoomEvent::PermissionCancelled { .. } => "permission.cancelled",
            RoomEvent::SessionRestored { .. } => "session.restored",
            RoomEvent::Presence { .. } => "presence",
            RoomEvent::Notice { .. } => "notice",
            RoomEvent::WorkspaceRenamed { .. } => "workspace.renamed",
            RoomEvent::ThreadForked { .. } => "thread.forked",
        }
    }
}

/// One entry of the room log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomEntry {
    pub seq: i64,
    pub created_at: i64,
    #[serde(flatten)]
    pub event: RoomEvent,
}

impl RoomEntry {
    /// The entry as viewers get it: without paths on the machine. Paths in the working directory
    /// `dir` become relative, and the `cwd` of the requests that open the agent's session is
    /// hidden. `None` when there is nothing to hide.
    pub fn without_paths(&self, dir: &str) -> Option<RoomEntry> {
        let mut entry = self.clone();
        let changed = match &mut entry.event {
            RoomEvent::SessionEvent(ev) => {
                let method = ev.payload.get("method").and_then(|m| m.as_str());
                let opening = ev.sender == Sender::Client
                    && matches!(method, Some("session/new" | "session/load"))
                    && ev.payload.pointer("/params/cwd").is_some();
                let changed = crate::paths::relative_json(&mut ev.payload, dir);
                if opening {
                    ev.payload["params"]["cwd"] = serde_json::Value::String("(hidden)".into());
                }
                changed || opening
            }
            RoomEvent::PermissionRequested { request, .. } => {
                crate::paths::relative_json(request, dir)
            }
            _ => false,
        };
        changed.then_some(entry)
    }
}

/// Answer of `POST /api/workspace/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceInfo {
    pub workspace_id: String,
    /// The thread these facts are of (its agent, session, status, queue and head).
    #[serde(default)]
    pub thread_id: String,
    #[serde(default)]
    pub name: String,
    pub sandbox_id: String,
    pub sandbox: SandboxSummary,
    pub agent: String,
    /// The directory the agent works in.
    #[serde(default)]
    pub working_dir: String,
    pub session_id: Option<String>,
    /// `idle`, `working`, `connecting` or `error`.
    pub status: String,
    pub online: Vec<Member>,
    pub queue: Vec<QueuedPrompt>,
    /// The newest room-log seq.
    pub head: i64,
}

/// What the page of a workspace needs to render: its state and its whole room log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSnapshot {
    pub info: WorkspaceInfo,
    pub entries: Vec<RoomEntry>,
    /// Finished agent messages rendered to sanitised HTML, by timeline item key.
    pub rendered: Vec<(String, String)>,
}

/// A workspace the caller is in, for the home page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MyWorkspace {
    pub workspace_id: String,
    pub name: String,
    pub agent: String,
    pub role: Role,
    pub created_at: i64,
    /// `working`, `idle`, `connecting`, `error` while the room is awake; `asleep` otherwise.
    pub status: String,
    /// When the room last logged something, in milliseconds since the Unix epoch.
    pub last_activity: i64,
}

/// What the home page needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HomeView {
    pub me: Me,
    pub workspaces: Vec<MyWorkspace>,
    pub agents: Vec<AgentChoice>,
    /// Whether the owner may pick an existing directory (HUDDLE_PROJECTS_ROOT is set).
    pub projects_root: bool,
}

/// An agent to choose when creating a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentChoice {
    pub id: String,
    pub installed: bool,
    pub credentials_available: bool,
}

impl AgentChoice {
    /// Installed, with what it needs to start (the builtin mock needs no credentials).
    pub fn ready(&self) -> bool {
        self.installed && (self.credentials_available || self.id == "mock")
    }
}

/// The agent a new workspace gets by default: the first real agent that is ready, else `mock`.
pub fn default_agent(agents: &[AgentChoice]) -> &str {
    agents
        .iter()
        .find(|a| a.ready() && a.id != "mock")
        .map_or("mock", |a| a.id.as_str())
}

/// Longest workspace name.
pub const MAX_WORKSPACE_NAME_CHARS: usize = 80;

/// A workspace name as given, trimmed; None when it is empty, too long or holds a control
/// character.
pub fn valid_workspace_name(name: &str) -> Option<&str> {
    let name = name.trim();
    (!name.is_empty()
        && name.chars().count() <= MAX_WORKSPACE_NAME_CHARS
        && !name.chars().any(char::is_control))
    .then_some(name)
}

/// Thread ids are made like workspace ids.
pub fn is_valid_thread_id(id: &str) -> bool {
    is_valid_workspace_id(id)
}

/// The page of one thread of a workspace.
pub fn thread_url(workspace_id: &str, thread_id: &str) -> String {
    format!("/w/{workspace_id}/t/{thread_id}")
}

/// A row of a thread: the inbox and notifications link here.
pub fn row_url(workspace_id: &str, thread_id: &str, seq: i64) -> String {
    format!("{}#seq-{seq}", thread_url(workspace_id, thread_id))
}

/// Why something is in a person's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxKind {
    /// The agent asks a permission this person may give.
    Permission,
    /// A turn this person started has ended.
    TurnEnded,
    /// A message mentions this person.
    Mention,
}

impl InboxKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "permission" => Some(Self::Permission),
            "turn_ended" => Some(Self::TurnEnded),
            "mention" => Some(Self::Mention),
            _ => None,
        }
    }
}

/// One thing that needs a person now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxItem {
    pub kind: InboxKind,
    pub workspace_id: String,
    pub workspace_name: String,
    pub thread_id: String,
    pub thread_title: String,
    pub seq: i64,
    pub created_at: i64,
    /// The permission request to answer (`kind: permission`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The tool asking, how the turn ended, or the message's start.
    pub summary: String,
    /// Who mentioned this person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The question and its choices (`kind: permission`), to answer from the inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<crate::timeline::PermissionView>,
    /// The row in its thread.
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbox {
    pub items: Vec<InboxItem>,
}

/// When Huddle pushes to a person's devices with no tab open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyLevel {
    /// Permission requests, mentions and ended turns.
    #[default]
    All,
    /// Permission requests and mentions only.
    Important,
    /// Nothing.
    None,
}

impl NotifyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Important => "important",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Self::All),
            "important" => Some(Self::Important),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// Whether an item of this kind is pushed at this level.
    pub fn pushes(self, kind: InboxKind) -> bool {
        match self {
            Self::All => true,
            Self::Important => kind != InboxKind::TurnEnded,
            Self::None => false,
        }
    }
}

/// A person's notification settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifySettings {
    pub level: NotifyLevel,
    /// Workspaces that push nothing.
    pub muted: Vec<String>,
    /// The instance's VAPID public key (base64url), for `pushManager.subscribe`.
    pub vapid_public_key: String,
    /// How many browsers of this person get pushes.
    pub subscriptions: usize,
}

/// A person of a workspace that a message can mention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mentionable {
    pub person_id: String,
    pub display_name: String,
}

/// The people a message can mention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MentionablePeople {
    pub people: Vec<Mentionable>,
}

/// A browser's push keys, as `PushSubscription.toJSON()` gives them (base64url).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushKeys {
    pub p256dh: String,
    pub auth: String,
}

/// A team webhook's signing secret (none once removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    pub secret: Option<String>,
}

/// Longest thread name.
pub const MAX_THREAD_NAME_CHARS: usize = 120;

/// What a thread is doing, for the thread list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadStatus {
    #[default]
    Idle,
    Working,
    /// The agent asked a permission nobody has answered.
    NeedsAnswer,
    /// The agent could not be started, or its last turn failed.
    Failed,
}

impl ThreadStatus {
    pub fn label(self) -> &'static str {
        match self {
            ThreadStatus::Idle => "idle",
            ThreadStatus::Working => "working",
            ThreadStatus::NeedsAnswer => "needs an answer",
            ThreadStatus::Failed => "failed",
        }
    }
}

/// How a forked thread's agent got the conversation it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForkMethod {
    /// The agent forked its own session (ACP `session/fork`).
    Session,
    /// The transcript up to the row went with the first prompt, as context.
    Transcript,
}

/// Where a thread was forked from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForkedFrom {
    pub thread_id: String,
    pub seq: i64,
    pub method: ForkMethod,
}

/// A thread in the thread list, as one person sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadSummary {
    pub thread_id: String,
    /// The name someone gave it, else the agent's title for the session, else "New thread".
    pub title: String,
    pub agent: String,
    pub status: ThreadStatus,
    /// Who started the running turn (with `working`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Messages, ended turns and questions since this person last read it (at most 100).
    pub unread: i64,
    /// When it last logged something, in milliseconds since the Unix epoch.
    pub last_activity: i64,
    pub archived: bool,
    /// The newest room-log seq.
    pub head: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkedFrom>,
}

/// Answer of `POST /api/workspace/threads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadList {
    pub threads: Vec<ThreadSummary>,
    /// The agents a new thread may have (for people who may make one).
    #[serde(default)]
    pub agents: Vec<AgentChoice>,
}

/// Answer of `POST /api/workspace/threads/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedThread {
    pub thread_id: String,
    pub url: String,
}

/// `forkFrom` of `POST /api/workspace/threads/create`: the conversation up to this row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForkFrom {
    pub thread_id: String,
    pub seq: i64,
}

/// A thread's status changed, or the list did (made, renamed, archived): on every stream of the
/// workspace, so thread lists update live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadPulse {
    pub thread_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ThreadStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

/// Checks a prompt's text: neither empty nor too long.
pub fn check_prompt(text: String) -> Result<String, crate::error::ApiError> {
    use crate::error::ApiError;
    let text = text.trim_end().to_string();
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("The message is empty."));
    }
    let chars = text.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(ApiError::bad_request(format!(
            "The message is {chars} characters long; the limit is {MAX_PROMPT_CHARS}."
        )));
    }
    Ok(text)
}

/// Answer of `POST /api/workspace/prompt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptAccepted {
    pub seq: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids_are_strict() {
        assert!(is_valid_workspace_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_valid_workspace_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_valid_workspace_id("0123456789abcdef"));
        assert!(!is_valid_workspace_id("../../etc/passwd"));
        assert!(!is_valid_workspace_id(""));
    }

    #[test]
    fn room_entries_have_a_stable_wire_shape() {
        let entry = RoomEntry {
            seq: 3,
            created_at: 9,
            event: RoomEvent::ChatUser {
                user_id: "u".into(),
                display_name: "Ada".into(),
                text: "hi".into(),
                created_at: 9,
                team_only: false,
                images: Vec::new(),
                mentions: Vec::new(),
            },
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 3, "createdAt": 9, "kind": "chat.user",
                "data": {"userId": "u", "displayName": "Ada", "text": "hi", "createdAt": 9}})
        );
        assert_eq!(serde_json::from_value::<RoomEntry>(json).unwrap(), entry);
        assert_eq!(entry.event.kind(), "chat.user");
        assert!(ROOM_EVENT_KINDS.contains(&entry.event.kind()));
    }

    #[test]
    fn agent_ids_are_slugs() {
        assert!(is_valid_agent_id("mock"));
        assert!(is_valid_agent_id("claude-code"));
        assert!(!is_valid_agent_id(""));
        assert!(!is_valid_agent_id("a b"));
        assert!(!is_valid_agent_id(&"x".repeat(65)));
    }
}
