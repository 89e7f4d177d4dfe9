//! The rules: who may see and do what in a workspace, and the owner's tools (invites, people,
//! roles, approvers, API tokens). Every refusal is a JSON error meant for people.

use std::sync::Arc;

use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, broadcast};
use tower_sessions::Session;

use super::{CSRF_KEY, Caller, OPERATOR_ID, PERSON_KEY, Person, hash_secret, new_secret, store};
use crate::error::{ApiError, ErrorCode};
use crate::model::{
    CreatedInvite, CreatedToken, MAX_NAME_CHARS, Me, Member, Members, Role, is_valid_workspace_id,
};

/// What an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// See the room live: any role.
    View,
    /// Prompt, stop, type: owner or member.
    Act,
    /// Answer a permission request: owner, or member unless the owner chose approvers.
    Approve,
    /// Manage people, invites and tokens.
    Own,
}

/// A caller's standing in one workspace.
#[derive(Debug, Clone)]
pub struct Grant {
    pub member: Member,
    pub role: Role,
    pub may_approve: bool,
}

/// Someone's access changed: their live streams end (after telling the page to reload).
#[derive(Debug, Clone)]
pub struct Kick {
    pub workspace_id: String,
    pub person_id: String,
}

pub struct AuthOptions {
    /// `HUDDLE_ADMIN_TOKEN`: a bearer token with the instance owner's rights.
    pub admin_token: Option<String>,
    /// The secret of this run's sign-in link.
    pub sign_in_secret: Option<String>,
    /// Where people reach Huddle (`http://host:port`), for the links it hands out.
    pub base_url: String,
}

#[derive(Clone)]
pub struct Auth(Arc<Inner>);

struct Inner {
    pool: PgPool,
    admin_hash: Option<String>,
    sign_in_hash: Option<String>,
    base_url: String,
    operator_ready: OnceCell<()>,
    kicks: broadcast::Sender<Kick>,
}

fn session_down(e: tower_sessions::session::Error) -> ApiError {
    tracing::error!(error = %e, "session store error");
    ApiError::new(
        ErrorCode::Unavailable,
        "The database is unavailable; try again shortly.",
    )
}

fn not_in(ws: &str) -> ApiError {
    ApiError::not_found(format!(
        "There is no workspace {}.",
        crate::error::quoted(ws)
    ))
}

/// Friendly names for new identities, until people pick their own.
fn guest_name() -> String {
    const ADJ: &[&str] = &[
        "Amber", "Brisk", "Calm", "Deft", "Eager", "Fair", "Gentle", "Hazel", "Ivory", "Jolly",
        "Keen", "Lucid", "Mellow", "Nimble", "Olive", "Plucky", "Quiet", "Rosy", "Sunny", "Teal",
    ];
    const ANIMAL: &[&str] = &[
        "Otter", "Heron", "Lynx", "Wren", "Badger", "Falcon", "Ibex", "Koala", "Marten", "Newt",
        "Owl", "Puffin", "Quokka", "Robin", "Seal", "Tapir", "Vole", "Yak", "Zebu", "Finch",
    ];
    use rand::seq::IndexedRandom;
    let mut rng = rand::rng();
    format!(
        "{} {}",
        ADJ.choose(&mut rng).unwrap_or(&"Guest"),
        ANIMAL.choose(&mut rng).unwrap_or(&"Guest")
    )
}

/// Checks a display name: 1 to 64 characters, no control characters.
pub fn check_name(name: &str, what: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to {MAX_NAME_CHARS} characters."
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} cannot contain control characters (such as NUL or a line break)."
        )));
    }
    Ok(name.to_string())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Auth {
    pub fn new(pool: PgPool, options: AuthOptions) -> Self {
        Auth(Arc::new(Inner {
            pool,
            admin_hash: options.admin_token.as_deref().map(hash_secret),
            sign_in_hash: options.sign_in_secret.as_deref().map(hash_secret),
            base_url: options.base_url.trim_end_matches('/').to_string(),
            operator_ready: OnceCell::new(),
            kicks: broadcast::channel(256).0,
        }))
    }

    /// Where people reach Huddle.
    pub fn base_url(&self) -> &str {
        &self.0.base_url
    }

    fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    /// Access changes, for live streams to end on.
    pub fn kicks(&self) -> broadcast::Receiver<Kick> {
        self.0.kicks.subscribe()
    }

    fn kick(&self, workspace_id: &str, person_id: &str) {
        let _ = self.0.kicks.send(Kick {
            workspace_id: workspace_id.into(),
            person_id: person_id.into(),
        });
    }

    /// The caller a bearer token stands for.
    pub async fn by_token(&self, token: &str) -> Result<Caller, ApiError> {
        let hash = hash_secret(token);
        if let Some(admin) = &self.0.admin_hash
            && bool::from(hash.as_bytes().ct_eq(admin.as_bytes()))
        {
            self.0
                .operator_ready
                .get_or_try_init(|| async {
                    store::ensure_operator(self.pool(), OPERATOR_ID).await
                })
                .await?;
            return Ok(Caller::Person(Person {
                id: OPERATOR_ID.into(),
                display_name: "Operator".into(),
                instance_owner: true,
                may_create: true,
                csrf: None,
            }));
        }
        match store::token_person(self.pool(), &hash).await? {
            Some(row) => Ok(Caller::Person(Person::from_row(row, None))),
            None => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "This API token is not valid: mistyped, or revoked by the workspace's owner.",
            )),
        }
    }

    /// The person a browser session names; with `create`, a first visit gets a new identity.
    /// The caller as a person, making them one (kept in Postgres, with a session) when they are
    /// nobody yet: for those who do something that needs an identity (open a valid link, name
    /// themselves), never for a page they only look at.
    pub async fn person_or_new(
        &self,
        caller: &Caller,
        session: Option<&Session>,
    ) -> Result<Person, ApiError> {
        match (caller, session) {
            (Caller::Person(p), _) => Ok(p.clone()),
            (Caller::Nobody, Some(session)) => match self.by_session(session, true).await? {
                Caller::Person(p) => Ok(p),
                Caller::Nobody => Err(Self::person(caller).unwrap_err()),
            },
            (Caller::Nobody, None) => Self::person(caller).cloned(),
        }
    }

    pub async fn by_session(&self, session: &Session, create: bool) -> Result<Caller, ApiError> {
        let id: Option<String> = session.get(PERSON_KEY).await.map_err(session_down)?;
        if let Some(id) = id
            && let Some(row) = store::person(self.pool(), &id).await?
        {
            let csrf: Option<String> = session.get(CSRF_KEY).await.map_err(session_down)?;
            return Ok(Caller::Person(Person::from_row(row, csrf)));
        }
        if !create {
            return Ok(Caller::Nobody);
        }
        let id = new_id();
        let name = guest_name();
        store::insert_person(self.pool(), &id, &name).await?;
        let csrf = new_secret(24);
        session
            .insert(PERSON_KEY, &id)
            .await
            .map_err(session_down)?;
        session
            .insert(CSRF_KEY, &csrf)
            .await
            .map_err(session_down)?;
        tracing::info!(person = %id, "new identity");
        Ok(Caller::Person(Person {
            id,
            display_name: name,
            instance_owner: false,
            may_create: false,
            csrf: Some(csrf),
        }))
    }

    /// The caller as a person, or 401.
    pub fn person(caller: &Caller) -> Result<&Person, ApiError> {
        match caller {
            Caller::Person(p) => Ok(p),
            Caller::Nobody => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "You have no identity here yet: open the invite link you were given (or the \
                 operator's sign-in link), or send an API token.",
            )),
        }
    }

    /// What the caller may do in a workspace, or why not.
    pub async fn require(&self, caller: &Caller, ws: &str, need: Need) -> Result<Grant, ApiError> {
        if !is_valid_workspace_id(ws) {
            return Err(not_in(ws));
        }
        // Someone with no identity yet hears that a workspace is not there as anyone would.
        if matches!(caller, Caller::Nobody) && store::access(self.pool(), ws, "").await?.is_none() {
            return Err(not_in(ws));
        }
        let person = Self::person(caller)?;
        let row = store::access(self.pool(), ws, &person.id)
            .await?
            .ok_or_else(|| not_in(ws))?;
        let role = if person.instance_owner {
            Some(Role::Owner)
        } else {
            row.role.as_deref().and_then(Role::parse)
        };
        let Some(role) = role else {
            return Err(ApiError::forbidden(
                "You are not in this workspace. Ask its owner for an invite link.",
            ));
        };
        let may_approve = match role {
            Role::Owner => true,
            Role::Member => !row.approvers_only || row.approver == Some(true),
            Role::Viewer => false,
        };
        let refusal = match need {
            Need::View => None,
            Need::Act if !role.can_act() => {
                Some("Viewers watch but cannot act here; ask the owner to make you a member.")
            }
            Need::Approve if !role.can_act() => {
                Some("Viewers watch but cannot act here; ask the owner to make you a member.")
            }
            Need::Approve if !may_approve => Some(
                "Only the approvers the owner chose may answer the agent's permission requests.",
            ),
            Need::Own if role != Role::Owner => Some("Only the workspace's owner may do this."),
            _ => None,
        };
        if let Some(message) = refusal {
            return Err(ApiError::forbidden(message));
        }
        Ok(Grant {
            member: Member {
                user_id: person.id.clone(),
                display_name: person.display_name.clone(),
                role: Some(role),
            },
            role,
            may_approve,
        })
    }

    pub fn me(&self, caller: &Caller) -> Result<Me, ApiError> {
        let p = Self::person(caller)?;
        Ok(Me {
            person_id: p.id.clone(),
            display_name: p.display_name.clone(),
            instance_owner: p.instance_owner,
            may_create: p.may_create,
            csrf: p.csrf.clone().unwrap_or_default(),
        })
    }

    /// Changes the caller's display name; messages already sent keep the name they had.
    pub async fn rename(&self, caller: &Caller, name: &str) -> Result<Me, ApiError> {
        let p = Self::person(caller)?;
        if p.id == OPERATOR_ID {
            return Err(ApiError::bad_request("The operator's name is fixed."));
        }
        let name = check_name(name, "displayName")?;
        store::rename(self.pool(), &p.id, &name).await?;
        let mut me = self.me(caller)?;
        me.display_name = name;
        Ok(me)
    }

    /// The caller, if they may create workspaces.
    pub fn creator<'a>(&self, caller: &'a Caller) -> Result<&'a Person, ApiError> {
        let p = Self::person(caller)?;
        if !p.may_create {
            return Err(ApiError::forbidden(
                "You may not create workspaces here: ask the operator for an invite that allows it.",
            ));
        }
        Ok(p)
    }

    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.0.base_url)
    }

    /// The workspace's first owner: its creator.
    pub async fn insert_workspace(
        &self,
        owner: &Person,
        row: &crate::store::NewWorkspace<'_>,
    ) -> Result<crate::store::WorkspaceRow, ApiError> {
        Ok(store::insert_workspace_with_owner(self.pool(), row, &owner.id).await?)
    }

    /// A new invite link for a role in a workspace (`member` or `viewer`).
    pub async fn invite(
        &self,
        caller: &Caller,
        ws: &str,
        role: &str,
    ) -> Result<CreatedInvite, ApiError> {
        let grant = self.require(caller, ws, Need::Own).await?;
        if !matches!(role, "member" | "viewer") {
            return Err(ApiError::bad_request(
                "role must be `member` or `viewer` (owners are made by changing a role).",
            ));
        }
        self.new_invite(Some(ws), role, &grant.member.user_id).await
    }

    /// An instance invite: whoever opens it may create workspaces.
    pub async fn creator_invite(&self, caller: &Caller) -> Result<CreatedInvite, ApiError> {
        let p = Self::person(caller)?;
        if !p.instance_owner {
            return Err(ApiError::forbidden(
                "Only the instance owner may invite people to create workspaces.",
            ));
        }
        self.new_invite(None, "creator", &p.id).await
    }

    async fn new_invite(
        &self,
        ws: Option<&str>,
        role: &str,
        by: &str,
    ) -> Result<CreatedInvite, ApiError> {
        let id = new_id();
        let secret = new_secret(24);
        store::insert_invite(self.pool(), &id, &hash_secret(&secret), ws, role, by).await?;
        tracing::info!(invite = %id, workspace = ?ws, role, "invite created");
        Ok(CreatedInvite {
            id,
            url: self.link(&format!("/join/{secret}")),
        })
    }

    /// Revokes an invite of a workspace (`ws` `None`: an instance invite).
    pub async fn revoke_invite(
        &self,
        caller: &Caller,
        ws: Option<&str>,
        invite_id: &str,
    ) -> Result<(), ApiError> {
        self.may_manage_invites(caller, ws).await?;
        if !store::revoke_invite(self.pool(), ws, invite_id).await? {
            return Err(ApiError::not_found("There is no such invite."));
        }
        Ok(())
    }

    /// Revokes an invite and makes a new one for the same role.
    pub async fn rotate_invite(
        &self,
        caller: &Caller,
        ws: Option<&str>,
        invite_id: &str,
    ) -> Result<CreatedInvite, ApiError> {
        let by = self.may_manage_invites(caller, ws).await?;
        let invite = store::invite(self.pool(), ws, invite_id)
            .await?
            .ok_or_else(|| ApiError::not_found("There is no such invite."))?;
        store::revoke_invite(self.pool(), ws, invite_id).await?;
        self.new_invite(ws, &invite.role, &by).await
    }

    async fn may_manage_invites(
        &self,
        caller: &Caller,
        ws: Option<&str>,
    ) -> Result<String, ApiError> {
        match ws {
            Some(ws) => Ok(self.require(caller, ws, Need::Own).await?.member.user_id),
            None => {
                let p = Self::person(caller)?;
                if !p.instance_owner {
                    return Err(ApiError::forbidden("Only the instance owner may do this."));
                }
                Ok(p.id.clone())
            }
        }
    }

    /// Who is in a workspace, its invites and tokens.
    pub async fn members(&self, caller: &Caller, ws: &str) -> Result<Members, ApiError> {
        self.require(caller, ws, Need::Own).await?;
        let pool = self.pool();
        let approvers_only = store::approvers_only(pool, ws).await?;
        Ok(Members {
            people: store::people(pool, ws).await?,
            invites: store::invites(pool, Some(ws)).await?,
            tokens: store::tokens(pool, ws).await?,
            approvers_only,
        })
    }

    /// Refuses leaving a workspace without an owner.
    async fn keep_an_owner(&self, ws: &str, person_id: &str) -> Result<(), ApiError> {
        let row = store::access(self.pool(), ws, person_id).await?;
        let is_owner = row.and_then(|r| r.role).as_deref() == Some("owner");
        if is_owner && store::owners(self.pool(), ws).await? <= 1 {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "A workspace needs an owner: make someone else owner first.",
            ));
        }
        Ok(())
    }

    pub async fn set_role(
        &self,
        caller: &Caller,
        ws: &str,
        person_id: &str,
        role: &str,
    ) -> Result<(), ApiError> {
        self.require(caller, ws, Need::Own).await?;
        let role = Role::parse(role)
            .ok_or_else(|| ApiError::bad_request("role must be `owner`, `member` or `viewer`."))?;
        if role != Role::Owner {
            self.keep_an_owner(ws, person_id).await?;
        }
        if !store::set_role(self.pool(), ws, person_id, role).await? {
            return Err(ApiError::not_found("That person is not in this workspace."));
        }
        tracing::info!(workspace = %ws, person = %person_id, role = role.as_str(), "role changed");
        self.kick(ws, person_id);
        Ok(())
    }

    pub async fn remove(&self, caller: &Caller, ws: &str, person_id: &str) -> Result<(), ApiError> {
        self.require(caller, ws, Need::Own).await?;
        self.keep_an_owner(ws, person_id).await?;
        if !store::remove(self.pool(), ws, person_id).await? {
            return Err(ApiError::not_found("That person is not in this workspace."));
        }
        tracing::info!(workspace = %ws, person = %person_id, "removed from the workspace");
        self.kick(ws, person_id);
        Ok(())
    }

    pub async fn set_approver(
        &self,
        caller: &Caller,
        ws: &str,
        person_id: &str,
        approver: bool,
    ) -> Result<(), ApiError> {
        self.require(caller, ws, Need::Own).await?;
        if !store::set_approver(self.pool(), ws, person_id, approver).await? {
            return Err(ApiError::not_found("That person is not in this workspace."));
        }
        self.kick(ws, person_id);
        Ok(())
    }

    pub async fn set_approvers_only(
        &self,
        caller: &Caller,
        ws: &str,
        on: bool,
    ) -> Result<(), ApiError> {
        self.require(caller, ws, Need::Own).await?;
        store::set_approvers_only(self.pool(), ws, on).await?;
        // Everyone's buttons change: pages reload.
        for p in store::people(self.pool(), ws).await? {
            if p.role == Role::Member {
                self.kick(ws, &p.person_id);
            }
        }
        Ok(())
    }

    /// A token for a script or bot: a new bot person with a role in this workspace.
    pub async fn create_token(
        &self,
        caller: &Caller,
        ws: &str,
        name: &str,
        role: Option<&str>,
    ) -> Result<CreatedToken, ApiError> {
        let grant = self.require(caller, ws, Need::Own).await?;
        let name = check_name(name, "name")?;
        let role = match role.unwrap_or("member") {
            "member" => Role::Member,
            "viewer" => Role::Viewer,
            _ => return Err(ApiError::bad_request("role must be `member` or `viewer`.")),
        };
        let id = new_id();
        let person_id = new_id();
        let token = format!("hud_{}", new_secret(32));
        store::insert_token(
            self.pool(),
            &id,
            &hash_secret(&token),
            ws,
            &person_id,
            &name,
            role,
            &grant.member.user_id,
        )
        .await?;
        tracing::info!(workspace = %ws, token = %id, "API token created");
        Ok(CreatedToken {
            id,
            person_id,
            token,
        })
    }

    pub async fn revoke_token(
        &self,
        caller: &Caller,
        ws: &str,
        token_id: &str,
    ) -> Result<(), ApiError> {
        self.require(caller, ws, Need::Own).await?;
        match store::revoke_token(self.pool(), ws, token_id).await? {
            Some(person) => {
                tracing::info!(workspace = %ws, token = %token_id, "API token revoked");
                self.kick(ws, &person);
                Ok(())
            }
            None => Err(ApiError::not_found("There is no such token.")),
        }
    }

    /// Opens an invite link: where the browser goes next.
    pub async fn join(
        &self,
        caller: &Caller,
        session: Option<&Session>,
        secret: &str,
    ) -> Result<String, ApiError> {
        let invite = store::invite_by_secret(self.pool(), &hash_secret(secret)).await?;
        let Some(invite) = invite.filter(|i| !i.revoked) else {
            return Err(ApiError::forbidden(
                "This invite link is not valid any more. Ask the owner for a new one.",
            ));
        };
        // Only now, with a link that works, does the browser get an identity.
        let p = &self.person_or_new(caller, session).await?;
        match (&invite.workspace_id, invite.role.as_str()) {
            (None, _) => {
                sqlx::query("UPDATE people SET may_create = true WHERE id = $1")
                    .bind(&p.id)
                    .execute(self.pool())
                    .await
                    .map_err(crate::store::StoreError::from)?;
                tracing::info!(person = %p.id, invite = %invite.id, "may create workspaces");
                Ok("/".into())
            }
            (Some(ws), role) => {
                let role = Role::parse(role).unwrap_or(Role::Viewer);
                store::join(self.pool(), ws, &p.id, role).await?;
                tracing::info!(person = %p.id, workspace = %ws, invite = %invite.id, "joined");
                Ok(crate::model::workspace_url(ws))
            }
        }
    }

    /// Opens the operator's sign-in link: this browser becomes the instance owner.
    pub async fn sign_in(
        &self,
        caller: &Caller,
        session: Option<&Session>,
        secret: &str,
    ) -> Result<(), ApiError> {
        let hash = hash_secret(secret);
        let here = self
            .0
            .sign_in_hash
            .as_ref()
            .is_some_and(|h| bool::from(hash.as_bytes().ct_eq(h.as_bytes())));
        // Another running node's link (several nodes behind one address).
        let valid = here || store::sign_in_link_live(self.pool(), &hash).await?;
        if !valid {
            return Err(ApiError::forbidden(
                "This sign-in link is not valid: Huddle prints a new one each time it starts.",
            ));
        }
        let p = &self.person_or_new(caller, session).await?;
        store::make_instance_owner(self.pool(), &p.id).await?;
        // A new session id on a change of rights (no session fixation).
        if let Some(session) = session {
            session.cycle_id().await.map_err(session_down)?;
        }
        tracing::info!(person = %p.id, "signed in as the instance owner");
        Ok(())
    }

    /// Keeps this node's sign-in link valid on every node until `stop` (then it ends).
    pub fn spawn_sign_in_link(&self, stop: tokio_util::sync::CancellationToken) {
        let Some(hash) = self.0.sign_in_hash.clone() else {
            return;
        };
        let pool = self.pool().clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = store::renew_sign_in_link(&pool, &hash).await {
                    tracing::debug!(error = %e, "could not renew the sign-in link");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                }
            }
            let _ = store::end_sign_in_link(&pool, &hash).await;
        });
    }

    /// Checks the token a no-JS form carries.
    pub fn check_csrf(caller: &Caller, token: &str) -> Result<(), ApiError> {
        let expected = match caller {
            Caller::Person(Person {
                csrf: Some(csrf), ..
            }) => csrf,
            _ => {
                return Err(ApiError::forbidden(
                    "This form has expired; reload the page.",
                ));
            }
        };
        if bool::from(expected.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "This form has expired; reload the page.",
            ))
        }
    }
}
