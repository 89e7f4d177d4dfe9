//! Sends the outbox: team webhook posts (signed with the workspace's secret) and Web Push
//! messages (RFC 8291 payload encryption and a VAPID signature, by `web-push-native`, sent with
//! reqwest). Rows are claimed for a while before they are sent, marked sent after, and retried
//! with backoff when the receiver fails; a slow receiver holds only its own rows.

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use web_push_native::WebPushBuilder;

use super::NeedsYou;
use crate::model::{InboxKind, NotifyLevel};
use crate::store::StoreError;

/// A receiver gets this long to answer.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows sent at once: a hanging receiver takes a slot, not the sender.
const PARALLEL: usize = 16;
const BATCH: i64 = 64;
/// After this many failed tries a row is given up on (and the reason kept).
const MAX_ATTEMPTS: i32 = 8;
/// How often due rows are looked for when no notification came (retries, a missed NOTIFY).
const POLL: Duration = Duration::from_secs(2);

#[derive(sqlx::FromRow)]
struct Due {
    id: i64,
    kind: String,
    workspace_id: String,
    thread_id: String,
    seq: i64,
    person_id: String,
    attempts: i32,
}

enum Sent {
    Done,
    /// Nothing to send after all (a setting, a mute, an open tab, an item already seen).
    Skipped,
    Retry(String),
}

pub(super) async fn run(service: NeedsYou, shutdown: CancellationToken) {
    loop {
        let due = match claim(&service).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox; trying again");
                Vec::new()
            }
        };
        let full = due.len() as i64 == BATCH;
        futures::stream::iter(due)
            .for_each_concurrent(PARALLEL, |row| {
                let service = service.clone();
                async move { deliver(&service, row).await }
            })
            .await;
        if full {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = service.0.outbox.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Claims due rows: they are not due again for a minute, so another sender (another node) leaves
/// them alone while this one sends.
async fn claim(service: &NeedsYou) -> Result<Vec<Due>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE outbox SET next_at = now() + interval '1 minute', attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND failed IS NULL AND next_at <= now() \
                      ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, kind, workspace_id, thread_id, seq, person_id, attempts",
    )
    .bind(BATCH)
    .fetch_all(service.pool())
    .await?)
}

async fn deliver(service: &NeedsYou, row: Due) {
    let sent = match row.kind.as_str() {
        "webhook" => webhook(service, &row).await,
        _ => push(service, &row).await,
    };
    let outcome = match sent {
        Ok(Sent::Done | Sent::Skipped) => {
            sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = $1")
                .bind(row.id)
                .execute(service.pool())
                .await
        }
        Ok(Sent::Retry(why)) | Err(SendError(why)) if row.attempts >= MAX_ATTEMPTS => {
            tracing::warn!(kind = %row.kind, workspace = %row.workspace_id, reason = %why, "giving up on an outbox row");
            sqlx::query("UPDATE outbox SET failed = $2 WHERE id = $1")
                .bind(row.id)
                .bind(why)
                .execute(service.pool())
                .await
        }
        Ok(Sent::Retry(why)) | Err(SendError(why)) => {
            tracing::info!(kind = %row.kind, workspace = %row.workspace_id, reason = %why, attempt = row.attempts, "outbox row will be sent again");
            // 2, 4, 8 … seconds, at most five minutes.
            let wait = 2f64.powi(row.attempts).min(300.0);
            sqlx::query(
                "UPDATE outbox SET next_at = now() + make_interval(secs => $2) WHERE id = $1",
            )
            .bind(row.id)
            .bind(wait)
            .execute(service.pool())
            .await
        }
    };
    if let Err(e) = outcome {
        // The claim runs out and the row is tried again.
        tracing::warn!(error = %e, "cannot mark an outbox row");
    }
}

struct SendError(String);

impl From<StoreError> for SendError {
    fn from(e: StoreError) -> Self {
        SendError(format!("database: {e}"))
    }
}

impl From<sqlx::Error> for SendError {
    fn from(e: sqlx::Error) -> Self {
        SendError(format!("database: {e}"))
    }
}

/// What an entry says, for people: a title, a line and the row's address.
struct About {
    event: &'static str,
    title: String,
    text: String,
    fields: serde_json::Value,
    url: String,
}

async fn about(service: &NeedsYou, row: &Due) -> Result<Option<About>, SendError> {
    let found: Option<(String, serde_json::Value, i64, String, String)> = sqlx::query_as(
        "SELECT r.kind, r.data, r.created_at, w.name, COALESCE(t.name, t.agent_title, '') \
         FROM room_log r JOIN workspaces w ON w.id = r.workspace_id JOIN threads t ON t.id = r.thread_id \
         WHERE r.thread_id = $1 AND r.seq = $2",
    )
    .bind(&row.thread_id)
    .bind(row.seq)
    .fetch_optional(service.pool())
    .await?;
    let Some((kind, data, created_at, workspace_name, thread_title)) = found else {
        return Ok(None);
    };
    let url = format!(
        "{}{}",
        service.0.base_url,
        crate::model::row_url(&row.workspace_id, &row.thread_id, row.seq)
    );
    let place = if thread_title.is_empty() {
        workspace_name.clone()
    } else {
        format!("{workspace_name} · {thread_title}")
    };
    let mut fields = json!({
        "workspaceId": row.workspace_id,
        "workspaceName": workspace_name,
        "threadId": row.thread_id,
        "threadTitle": thread_title,
        "seq": row.seq,
        "createdAt": created_at,
        "url": url,
    });
    let (event, title, text) = match kind.as_str() {
        "permission.requested" => {
            let tool = data
                .pointer("/request/toolCall/title")
                .and_then(|t| t.as_str())
                .unwrap_or("a tool")
                .to_string();
            fields["requestId"] = data["requestId"].clone();
            fields["tool"] = json!(tool);
            (
                "permission_requested",
                format!("The agent asks permission · {place}"),
                format!("The agent asks permission: {tool}"),
            )
        }
        "turn.ended" => {
            let prompt_seq = data["promptSeq"].as_i64().unwrap_or(0);
            let by: Option<String> = sqlx::query_scalar(
                "SELECT data->>'displayName' FROM room_log WHERE thread_id = $1 AND seq = $2",
            )
            .bind(&row.thread_id)
            .bind(prompt_seq)
            .fetch_optional(service.pool())
            .await?
            .flatten();
            let how = match (data["stopReason"].as_str(), data["error"].as_str()) {
                (Some("end_turn"), _) => "finished".to_string(),
                (Some("cancelled"), _) => "was stopped".to_string(),
                (Some(r), _) => format!("ended ({r})"),
                (None, Some(e)) => format!("failed: {e}"),
                (None, None) => "ended".to_string(),
            };
            fields["promptSeq"] = json!(prompt_seq);
            fields["stopReason"] = data["stopReason"].clone();
            fields["error"] = data["error"].clone();
            fields["promptedBy"] = json!(by);
            let whose = by
                .map(|b| format!("{b}'s turn"))
                .unwrap_or("The turn".into());
            (
                "turn_ended",
                format!("Turn {how} · {place}"),
                format!("{whose} {how}"),
            )
        }
        "chat.user" => {
            let by = data["displayName"]
                .as_str()
                .unwrap_or("Someone")
                .to_string();
            let said: String = data["text"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            ("mention", format!("{by} mentioned you · {place}"), said)
        }
        _ => return Ok(None),
    };
    fields["event"] = json!(event);
    Ok(Some(About {
        event,
        title,
        text,
        fields,
        url,
    }))
}

type HmacSha256 = Hmac<Sha256>;

/// `sha256=<hex>` of the body with the secret, as `X-Huddle-Signature-256` carries it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn webhook(service: &NeedsYou, row: &Due) -> Result<Sent, SendError> {
    let target: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT webhook_url, webhook_secret FROM workspaces WHERE id = $1")
            .bind(&row.workspace_id)
            .fetch_optional(service.pool())
            .await?;
    let Some((Some(url), Some(secret))) = target else {
        return Ok(Sent::Skipped);
    };
    if let Some(why) = url::Url::parse(&url)
        .ok()
        .and_then(|u| super::outbound::refused_literal(&u, service.0.outbound.allow_private))
    {
        return Err(SendError(format!("the webhook is not posted to: {why}")));
    }
    let Some(about) = about(service, row).await? else {
        return Ok(Sent::Skipped);
    };
    let mut body = about.fields;
    // Slack (and its look-alikes) show `text`; everything else reads the fields.
    body["text"] = json!(format!("{} — <{}|open>", about.title, about.url));
    body["id"] = json!(format!("{}:{}", row.thread_id, row.seq));
    let body = serde_json::to_vec(&body).expect("json");
    let res = service
        .0
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("x-huddle-event", about.event)
        .header(
            "x-huddle-delivery",
            format!("{}:{}", row.thread_id, row.seq),
        )
        .header("x-huddle-signature-256", signature(&secret, &body))
        .body(body)
        .send()
        .await;
    Ok(match res {
        Ok(r) if r.status().is_success() => Sent::Done,
        Ok(r) => Sent::Retry(format!("the webhook answered {}", r.status())),
        Err(e) => Sent::Retry(format!("the webhook did not answer: {e}")),
    })
}

/// The browser's keys of a subscription, as `pushManager.subscribe` gives them (base64url).
pub(super) fn subscription_keys(
    p256dh: &str,
    auth: &str,
) -> Result<(web_push_native::p256::PublicKey, web_push_native::Auth), ()> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = b64
        .decode(p256dh.trim_end_matches('='))
        .ok()
        .and_then(|k| web_push_native::p256::PublicKey::from_sec1_bytes(&k).ok())
        .ok_or(())?;
    let auth = b64.decode(auth.trim_end_matches('=')).map_err(|_| ())?;
    if auth.len() != 16 {
        return Err(());
    }
    Ok((key, web_push_native::Auth::clone_from_slice(&auth)))
}

async fn push(service: &NeedsYou, row: &Due) -> Result<Sent, SendError> {
    let person = &row.person_id;
    // Still needed? Read, answered, or the person has a Huddle tab open: nothing to push.
    let item: Option<(String, bool, i64)> = sqlx::query_as(
        "SELECT i.kind, i.done, COALESCE(tr.seq, 0) FROM inbox i \
         LEFT JOIN thread_reads tr ON tr.thread_id = i.thread_id AND tr.person_id = i.person_id \
         WHERE i.person_id = $1 AND i.thread_id = $2 AND i.seq = $3",
    )
    .bind(person)
    .bind(&row.thread_id)
    .bind(row.seq)
    .fetch_optional(service.pool())
    .await?;
    let Some((kind, done, read)) = item else {
        return Ok(Sent::Skipped);
    };
    let Some(kind) = InboxKind::parse(&kind) else {
        return Ok(Sent::Skipped);
    };
    if done || (kind != InboxKind::Permission && read >= row.seq) || service.has_tab(person).await {
        return Ok(Sent::Skipped);
    }
    let settings: (Option<String>, bool) = sqlx::query_as(
        "SELECT (SELECT level FROM notify_settings WHERE person_id = $1), \
                EXISTS (SELECT 1 FROM notify_mutes WHERE person_id = $1 AND workspace_id = $2)",
    )
    .bind(person)
    .bind(&row.workspace_id)
    .fetch_one(service.pool())
    .await?;
    let level = settings
        .0
        .as_deref()
        .and_then(NotifyLevel::parse)
        .unwrap_or_default();
    if settings.1 || !level.pushes(kind) {
        return Ok(Sent::Skipped);
    }
    let Some(about) = about(service, row).await? else {
        return Ok(Sent::Skipped);
    };
    let payload = serde_json::to_vec(&json!({
        "title": about.title,
        "body": about.text,
        "url": about.url,
        // One notification per thread on the device: a newer one replaces it.
        "tag": row.thread_id,
        "kind": kind,
        "workspaceId": row.workspace_id,
        "threadId": row.thread_id,
        "seq": row.seq,
    }))
    .expect("json");
    let subs: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE person_id = $1",
    )
    .bind(person)
    .fetch_all(service.pool())
    .await?;
    let mut retry = None;
    for (endpoint, p256dh, auth) in subs {
        match push_one(service, &endpoint, &p256dh, &auth, &payload).await {
            PushOutcome::Sent => {}
            PushOutcome::Gone => {
                tracing::info!("a push subscription is gone; dropped");
                sqlx::query("DELETE FROM push_subscriptions WHERE endpoint = $1")
                    .bind(&endpoint)
                    .execute(service.pool())
                    .await?;
            }
            // Tried again later for every subscription: a browser may show it twice then,
            // under the same tag (one notification).
            PushOutcome::Failed(why) => retry = Some(why),
        }
    }
    Ok(retry.map_or(Sent::Done, Sent::Retry))
}

enum PushOutcome {
    Sent,
    /// 404 or 410: the subscription expired or was withdrawn.
    Gone,
    Failed(String),
}

async fn push_one(
    service: &NeedsYou,
    endpoint: &str,
    p256dh: &str,
    auth: &str,
    payload: &[u8],
) -> PushOutcome {
    let Ok((key, auth)) = subscription_keys(p256dh, auth) else {
        return PushOutcome::Gone;
    };
    let Ok(uri) = endpoint.parse() else {
        return PushOutcome::Gone;
    };
    if url::Url::parse(endpoint)
        .ok()
        .and_then(|u| super::outbound::refused_literal(&u, service.0.outbound.allow_private))
        .is_some()
    {
        return PushOutcome::Gone;
    }
    let vapid = match service.vapid().await {
        Ok((key, _)) => key,
        Err(e) => return PushOutcome::Failed(format!("no VAPID key: {e}")),
    };
    let contact = format!("{}/", service.0.base_url);
    let request = WebPushBuilder::new(uri, key, auth)
        .with_valid_duration(Duration::from_secs(12 * 3600))
        .with_vapid(vapid, &contact)
        .build(payload.to_vec());
    let request = match request {
        Ok(r) => r,
        Err(e) => return PushOutcome::Failed(format!("cannot build the push: {e}")),
    };
    let (parts, body) = request.into_parts();
    let mut send = service.0.http.post(endpoint).body(body);
    for (name, value) in &parts.headers {
        send = send.header(name.as_str(), value.as_bytes());
    }
    match send.send().await {
        Ok(r) if r.status().is_success() => PushOutcome::Sent,
        Ok(r) if matches!(r.status().as_u16(), 404 | 410) => PushOutcome::Gone,
        Ok(r) => PushOutcome::Failed(format!("the push service answered {}", r.status())),
        Err(e) => PushOutcome::Failed(format!("the push service did not answer: {e}")),
    }
}
