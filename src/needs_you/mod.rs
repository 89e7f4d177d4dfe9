//! Needs you: what waits on whom. The inbox rows and the outbox are written with the room-log
//! entries they come from (`store::inbox`); this service reads them for the person asking, tells
//! their open pages when their workspaces' inboxes change (Postgres `NOTIFY`, so every node
//! hears it), keeps notification settings and push subscriptions, and runs the sender of webhook
//! posts and pushes (`sender`).

mod actions;
pub mod outbound;
mod sender;
mod stream;

pub use stream::inbox_events;

pub use actions::HERE;
pub use sender::signature;

use std::sync::Arc;

use base64::Engine;
use sqlx::PgPool;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256KeyPair};

use crate::cluster::counts::{Counted, NodeCounts};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Inbox, Mentionable, NotifyLevel, NotifySettings};
use crate::store::StoreError;
use crate::store::inbox;

/// The most items an inbox shows.
const MAX_ITEMS: i64 = 200;
/// The most push subscriptions one person keeps (their browsers and devices).
const MAX_SUBSCRIPTIONS: i64 = 20;

#[derive(Clone)]
pub struct NeedsYou(Arc<Inner>);

struct Inner {
    pool: PgPool,
    /// Workspaces whose inbox rows changed (from any node).
    changes: broadcast::Sender<String>,
    /// Wakes the sender: new outbox rows.
    outbox: Notify,
    /// The VAPID key pair and its public key (base64url), read or made on first use.
    vapid: tokio::sync::OnceCell<(ES256KeyPair, String)>,
    /// Where links in pushes and webhook posts point.
    base_url: String,
    /// Where posts and pushes may go.
    outbound: Outbound,
    /// Open inbox streams per person on every node: a person with a tab open gets no push.
    counts: NodeCounts,
    http: reqwest::Client,
}

/// Where webhook posts and pushes may go (`HUDDLE_PUSH_ALLOW_HTTP`,
/// `HUDDLE_OUTBOUND_ALLOW_PRIVATE`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Outbound {
    /// Push endpoints may be plain http (a local push service under test).
    pub push_allow_http: bool,
    /// Posts and pushes may go to loopback and private addresses.
    pub allow_private: bool,
}

/// A person's open inbox stream: counted while it lives.
pub type Tab = Option<crate::cluster::counts::Counting>;

impl NeedsYou {
    /// Listens for inbox changes and runs the sender until `shutdown`.
    pub fn start(
        pool: PgPool,
        base_url: String,
        outbound: Outbound,
        counts: NodeCounts,
        shutdown: CancellationToken,
    ) -> Self {
        let mut http = reqwest::Client::builder()
            .timeout(sender::SEND_TIMEOUT)
            .connect_timeout(sender::SEND_TIMEOUT)
            // A receiver's redirect could point anywhere: not followed.
            .redirect(reqwest::redirect::Policy::none());
        if !outbound.allow_private {
            http = http.dns_resolver(Arc::new(outbound::PublicOnly));
        }
        let http = http.build().expect("an HTTP client");
        let service = Self(Arc::new(Inner {
            pool,
            changes: broadcast::channel(1024).0,
            outbox: Notify::new(),
            vapid: tokio::sync::OnceCell::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            outbound,
            counts,
            http,
        }));
        // The VAPID key pair is made on the first start (and read on every later one).
        let first = service.clone();
        tokio::spawn(async move {
            if let Err(e) = first.vapid().await {
                tracing::warn!(error = %e, "cannot read or make the VAPID key; pushes wait for it");
            }
        });
        tokio::spawn(service.clone().listen(shutdown.clone()));
        tokio::spawn(sender::run(service.clone(), shutdown));
        service
    }

    /// The instance's VAPID key pair and its public key.
    pub(crate) async fn vapid(&self) -> Result<&(ES256KeyPair, String), StoreError> {
        self.0
            .vapid
            .get_or_try_init(|| async {
                let key = vapid_key(self.pool()).await?;
                let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(key.public_key().public_key().to_bytes_uncompressed());
                Ok((key, public))
            })
            .await
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    /// Relays `NOTIFY`s of inbox changes to this node's streams and wakes the sender. The
    /// listener reconnects by itself after losing Postgres; a change missed meanwhile is caught up
    /// by the pages (they fetch the inbox when their stream opens again) and by the sender's poll.
    async fn listen(self, shutdown: CancellationToken) {
        loop {
            let mut listener = loop {
                match sqlx::postgres::PgListener::connect_with(self.pool()).await {
                    Ok(mut l) => match l.listen(inbox::CHANNEL).await {
                        Ok(()) => break l,
                        Err(e) => tracing::warn!(error = %e, "cannot listen for inbox changes"),
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot listen for inbox changes"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                }
            };
            loop {
                let note = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match note {
                    Ok(Some(n)) => {
                        let _ = self.0.changes.send(n.payload().to_string());
                        self.0.outbox.notify_one();
                    }
                    // The connection was lost: tell every page to fetch again once it is back.
                    Ok(None) => {
                        let _ = self.0.changes.send(String::new());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "inbox listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    /// Changes of workspaces' inboxes (workspace ids; empty: maybe any).
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.0.changes.subscribe()
    }

    /// Counts a person's open page until the returned guard drops.
    pub async fn open_tab(&self, person: &str) -> Tab {
        self.0
            .counts
            .open(Counted::TabsOfPerson, person, usize::MAX)
            .await
    }

    /// Whether the person has a Huddle tab open, at any node.
    pub(crate) async fn has_tab(&self, person: &str) -> bool {
        self.0.counts.total(Counted::TabsOfPerson, person).await > 0
    }

    pub async fn inbox(&self, person: &str) -> Result<Inbox, ApiError> {
        Ok(Inbox {
            items: inbox::items(self.pool(), person, MAX_ITEMS).await?,
        })
    }

    /// Marks an item read: a mention or ended turn by moving the person's read mark of the
    /// thread, a permission request by taking it off this person's inbox (others still see it).
    pub async fn mark_read(
        &self,
        person: &str,
        workspace_id: &str,
        thread_id: &str,
        seq: i64,
    ) -> Result<(), ApiError> {
        inbox::dismiss(self.pool(), person, thread_id, seq).await?;
        crate::store::threads::mark_read(self.pool(), thread_id, person, seq).await?;
        inbox::seen(self.pool(), person, thread_id, seq).await?;
        self.changed(workspace_id).await;
        Ok(())
    }

    /// Tells every node's streams that a workspace's inbox rows changed outside a log write.
    pub(crate) async fn changed(&self, workspace_id: &str) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(inbox::CHANNEL)
            .bind(workspace_id)
            .execute(self.pool())
            .await
        {
            tracing::warn!(error = %e, "could not announce an inbox change");
        }
    }

    pub async fn settings(&self, person: &str) -> Result<NotifySettings, ApiError> {
        let level: Option<String> =
            sqlx::query_scalar("SELECT level FROM notify_settings WHERE person_id = $1")
                .bind(person)
                .fetch_optional(self.pool())
                .await
                .map_err(StoreError::from)?;
        let muted: Vec<String> = sqlx::query_scalar(
            "SELECT workspace_id FROM notify_mutes WHERE person_id = $1 ORDER BY workspace_id",
        )
        .bind(person)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::from)?;
        let subscriptions: i64 =
            sqlx::query_scalar("SELECT count(*) FROM push_subscriptions WHERE person_id = $1")
                .bind(person)
                .fetch_one(self.pool())
                .await
                .map_err(StoreError::from)?;
        Ok(NotifySettings {
            level: level
                .as_deref()
                .and_then(NotifyLevel::parse)
                .unwrap_or_default(),
            muted,
            vapid_public_key: self.vapid().await?.1.clone(),
            subscriptions: subscriptions as usize,
        })
    }

    pub async fn set_level(&self, person: &str, level: NotifyLevel) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO notify_settings (person_id, level) VALUES ($1, $2) \
             ON CONFLICT (person_id) DO UPDATE SET level = EXCLUDED.level",
        )
        .bind(person)
        .bind(level.as_str())
        .execute(self.pool())
        .await
        .map_err(StoreError::from)?;
        Ok(())
    }

    /// Mutes or unmutes a workspace for a person (they must be in it).
    pub async fn set_muted(
        &self,
        person: &str,
        workspace_id: &str,
        muted: bool,
    ) -> Result<(), ApiError> {
        let sql = if muted {
            "INSERT INTO notify_mutes (person_id, workspace_id) \
             SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM memberships WHERE person_id = $1 AND workspace_id = $2) \
             ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM notify_mutes WHERE person_id = $1 AND workspace_id = $2"
        };
        sqlx::query(sql)
            .bind(person)
            .bind(workspace_id)
            .execute(self.pool())
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    /// Keeps a browser's push subscription for a person (the same endpoint again replaces it).
    pub async fn subscribe(
        &self,
        person: &str,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<(), ApiError> {
        let url = url::Url::parse(endpoint)
            .map_err(|_| ApiError::bad_request("`endpoint` must be a URL."))?;
        // Push services are https: anything else would let a person make Huddle post to
        // whatever plain-http service it can reach.
        let scheme_ok =
            url.scheme() == "https" || (self.0.outbound.push_allow_http && url.scheme() == "http");
        if !scheme_ok || endpoint.len() > 2048 {
            return Err(ApiError::bad_request(
                "`endpoint` must be a push service's https URL of at most 2,048 characters.",
            ));
        }
        if let Some(why) = outbound::refused_literal(&url, self.0.outbound.allow_private) {
            return Err(ApiError::bad_request(format!("`endpoint`: {why}.")));
        }
        sender::subscription_keys(p256dh, auth).map_err(|_| {
            ApiError::bad_request(
                "`keys.p256dh` must be a P-256 public key and `keys.auth` 16 bytes, both base64url.",
            )
        })?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM push_subscriptions WHERE person_id = $1 AND endpoint <> $2",
        )
        .bind(person)
        .bind(endpoint)
        .fetch_one(self.pool())
        .await
        .map_err(StoreError::from)?;
        if count >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("At most {MAX_SUBSCRIPTIONS} browsers get pushes; turn one off first."),
            ));
        }
        sqlx::query(
            "INSERT INTO push_subscriptions (endpoint, person_id, p256dh, auth) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (endpoint) DO UPDATE SET person_id = EXCLUDED.person_id, \
               p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth",
        )
        .bind(endpoint)
        .bind(person)
        .bind(p256dh)
        .bind(auth)
        .execute(self.pool())
        .await
        .map_err(StoreError::from)?;
        Ok(())
    }

    pub async fn unsubscribe(&self, person: &str, endpoint: &str) -> Result<(), ApiError> {
        sqlx::query("DELETE FROM push_subscriptions WHERE person_id = $1 AND endpoint = $2")
            .bind(person)
            .bind(endpoint)
            .execute(self.pool())
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    /// Sets (or with no URL removes) a workspace's team webhook; returns its new signing secret.
    pub async fn set_webhook(
        &self,
        workspace_id: &str,
        url: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            sqlx::query(
                "UPDATE workspaces SET webhook_url = NULL, webhook_secret = NULL WHERE id = $1",
            )
            .bind(workspace_id)
            .execute(self.pool())
            .await
            .map_err(StoreError::from)?;
            return Ok(None);
        };
        let parsed =
            url::Url::parse(url).map_err(|_| ApiError::bad_request("`url` must be a URL."))?;
        if !matches!(parsed.scheme(), "https" | "http") || url.len() > 2048 {
            return Err(ApiError::bad_request(
                "`url` must be an http(s) URL of at most 2,048 characters.",
            ));
        }
        if let Some(why) = outbound::refused_literal(&parsed, self.0.outbound.allow_private) {
            return Err(ApiError::bad_request(format!("`url`: {why}.")));
        }
        let secret = crate::auth::new_secret(32);
        sqlx::query("UPDATE workspaces SET webhook_url = $2, webhook_secret = $3 WHERE id = $1")
            .bind(workspace_id)
            .bind(url)
            .bind(&secret)
            .execute(self.pool())
            .await
            .map_err(StoreError::from)?;
        Ok(Some(secret))
    }

    /// The people of a workspace a message can mention.
    pub async fn mentionable(&self, workspace_id: &str) -> Result<Vec<Mentionable>, ApiError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT p.id, p.display_name FROM memberships m JOIN people p ON p.id = m.person_id \
             WHERE m.workspace_id = $1 ORDER BY lower(p.display_name)",
        )
        .bind(workspace_id)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::from)?;
        Ok(rows
            .into_iter()
            .map(|(person_id, display_name)| Mentionable {
                person_id,
                display_name,
            })
            .collect())
    }
}

/// The instance's VAPID key pair: made on first start, kept in Postgres (every node signs with
/// the same key, and subscriptions outlive restarts).
async fn vapid_key(pool: &PgPool) -> Result<ES256KeyPair, StoreError> {
    let made =
        base64::engine::general_purpose::STANDARD.encode(ES256KeyPair::generate().to_bytes());
    // The first node to start wins; every other reads what it stored.
    sqlx::query(
        "INSERT INTO instance_keys (name, value) VALUES ('vapid', $1) ON CONFLICT DO NOTHING",
    )
    .bind(&made)
    .execute(pool)
    .await?;
    let stored: String = sqlx::query_scalar("SELECT value FROM instance_keys WHERE name = 'vapid'")
        .fetch_one(pool)
        .await?;
    base64::engine::general_purpose::STANDARD
        .decode(stored)
        .ok()
        .and_then(|b| ES256KeyPair::from_bytes(&b).ok())
        .ok_or_else(|| StoreError::Corrupt("the stored VAPID key is not a P-256 key".into()))
}
