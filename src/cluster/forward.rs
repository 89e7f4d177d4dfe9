//! Actions for a room another node owns are carried out there: `POST /internal/room` on the
//! owner's `HUDDLE_NODE_URL`, with the cluster secret. The owner answers as it would its own
//! caller (the same deadline, errors and outcome); a request that never reached it (the owner is
//! gone, or no longer owns the workspace) is tried again, here or at the new owner, while one
//! that may have been carried out is not (it is the caller's timeout).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

use crate::error::{ApiError, ErrorCode};
use crate::room::{Action, RoomError, RoomKey};
use crate::state::AppState;
use crate::store::{StoreError, leases};

/// The header the cluster secret goes in.
const SECRET_HEADER: &str = "x-huddle-node-secret";

/// What a node sends the owner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forwarded {
    pub workspace_id: String,
    pub thread_id: String,
    pub action: Action,
}

/// A node's way to the owners of the rooms it does not own. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    pool: PgPool,
    http: reqwest::Client,
    secret: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl Forwarder {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .build()
                .expect("an HTTP client"),
            secret: Default::default(),
        }
    }

    /// The secret the nodes share: made by the first node that needs it, kept in Postgres.
    pub async fn secret(&self) -> Result<&str, StoreError> {
        self.secret
            .get_or_try_init(|| cluster_secret(&self.pool))
            .await
            .map(String::as_str)
    }

    /// Carries the action out at the workspace's owner. [`RoomError::OwnedElsewhere`]: it did not
    /// reach an owner (none is live, the owner could not be reached, or it no longer owns the
    /// workspace) and nothing was done: try again.
    pub async fn send(
        &self,
        key: &RoomKey,
        action: &Action,
        deadline: Duration,
    ) -> Result<Value, RoomError> {
        let Some(url) = leases::owner_url(&self.pool, &key.workspace).await? else {
            return Err(RoomError::OwnedElsewhere);
        };
        let body = Forwarded {
            workspace_id: key.workspace.clone(),
            thread_id: key.thread.clone(),
            action: action.clone(),
        };
        let res = self
            .http
            .post(format!("{}/internal/room", url.trim_end_matches('/')))
            .header(SECRET_HEADER, self.secret().await?)
            .json(&body)
            .timeout(deadline)
            .send()
            .await;
        let res = match res {
            Ok(res) => res,
            // Never reached the owner: nothing was done.
            Err(e) if e.is_connect() => {
                tracing::debug!(owner = %url, error = %e, "the workspace's owner cannot be reached");
                return Err(RoomError::OwnedElsewhere);
            }
            Err(e) => {
                tracing::warn!(owner = %url, error = %e, "a forwarded action got no answer");
                return Err(RoomError::Timeout);
            }
        };
        let ok = res.status().is_success();
        let value: Value = res.json().await.map_err(|e| {
            tracing::warn!(owner = %url, error = %e, "a forwarded action's answer is not JSON");
            RoomError::Timeout
        })?;
        if ok {
            return Ok(value);
        }
        match serde_json::from_value::<ApiError>(value) {
            Ok(err) if err.code == ErrorCode::OwnedElsewhere => Err(RoomError::OwnedElsewhere),
            Ok(err) => Err(RoomError::Remote(err)),
            Err(_) => Err(RoomError::Timeout),
        }
    }
}

async fn cluster_secret(pool: &PgPool) -> Result<String, StoreError> {
    sqlx::query(
        "INSERT INTO instance_keys (name, value) VALUES ('cluster_secret', $1) ON CONFLICT DO NOTHING",
    )
    .bind(crate::auth::new_secret(32))
    .execute(pool)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT value FROM instance_keys WHERE name = 'cluster_secret'")
            .fetch_one(pool)
            .await?,
    )
}

/// `POST /internal/room`: an action another node forwarded, carried out here as for a caller of
/// this node (never forwarded on: a node that no longer owns the workspace says so).
pub async fn serve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(forwarded): Json<Forwarded>,
) -> Response {
    if let Err(refused) = from_a_node(&state, &headers).await {
        return refused;
    }
    let key = RoomKey {
        workspace: forwarded.workspace_id,
        thread: forwarded.thread_id,
    };
    match state.registry().act(&key, forwarded.action).await {
        Ok(value) => Json(value).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /internal/metrics` (with the cluster secret): this node's fan-out delays so far, in
/// microseconds; `?reset=1` starts over.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(refused) = from_a_node(&state, &headers).await {
        return refused;
    }
    let fan_out = &crate::cluster::metrics::FAN_OUT;
    let (count, q99) = fan_out.quantiles(&[0.5, 0.99, 1.0]);
    if q.contains_key("reset") {
        fan_out.reset();
    }
    Json(serde_json::json!({
        "fanOut": {"count": count, "p50Us": q99[0], "p99Us": q99[1], "maxUs": q99[2]},
    }))
    .into_response()
}

/// Whether a request carries the cluster secret (another node, or the operator's tools).
async fn from_a_node(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    use subtle::ConstantTimeEq;
    let secret = state
        .registry()
        .forwarder()
        .secret()
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    match bool::from(given.ct_eq(secret.as_bytes())) {
        true => Ok(()),
        false => Err(ApiError::new(ErrorCode::Unauthorized, "Not a Huddle node.").into_response()),
    }
}
