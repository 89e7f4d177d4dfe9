//! `GET /api/inbox/events`: tells a person's open page that their inbox changed (`event: inbox`,
//! data `{"workspaceId": …}`), once on opening and then whenever one of their workspaces' inbox
//! rows changes on any node. The page fetches `/api/inbox` again: the stream carries ids only.
//! While it is open the person counts as having a tab open (no push to their devices).

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::{Auth, Caller};
use crate::state::AppState;

/// How often the person's workspaces are read again (they join and leave workspaces).
const REFRESH: Duration = Duration::from_secs(30);

pub async fn inbox_events(
    State(state): State<AppState>,
    ConnectInfo(crate::listener::Peer(peer)): ConnectInfo<crate::listener::Peer>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> Response {
    let person = match Auth::person(&caller) {
        Ok(p) => p.id.clone(),
        Err(e) => return e.into_response(),
    };
    let ip = state.client_ip(peer.ip(), &headers);
    let guards = match state.open_stream(ip, Some(person.as_str())).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let service = state.needs_you().clone();
    let mut changes = service.changes();
    let tab = service.open_tab(&person).await;
    let shutdown = state.shutdown().clone();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        let _held = (guards, tab);
        let event = |ws: &str| {
            Ok(Event::default()
                .event("inbox")
                .data(serde_json::json!({ "workspaceId": ws }).to_string()))
        };
        if tx.send(event("")).await.is_err() {
            return;
        }
        let mut mine = Vec::new();
        let mut read_at: Option<tokio::time::Instant> = None;
        loop {
            if read_at.is_none_or(|t| t.elapsed() > REFRESH) {
                match crate::store::inbox::workspaces_of(service.pool(), &person).await {
                    Ok(ws) => mine = ws,
                    Err(e) => tracing::warn!(error = %e, "cannot read a person's workspaces"),
                }
                read_at = Some(tokio::time::Instant::now());
            }
            let ws = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                c = changes.recv() => match c {
                    Ok(ws) => ws,
                    // Missed some: whatever changed, the page fetches again.
                    Err(broadcast::error::RecvError::Lagged(_)) => String::new(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            // A workspace joined since the last read is not in `mine` yet: read again first.
            if !ws.is_empty() && !mine.contains(&ws) {
                match crate::store::inbox::workspaces_of(service.pool(), &person).await {
                    Ok(list) => mine = list,
                    Err(e) => tracing::warn!(error = %e, "cannot read a person's workspaces"),
                }
                read_at = Some(tokio::time::Instant::now());
                if !mine.contains(&ws) {
                    continue;
                }
            }
            if tx.send(event(&ws)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
